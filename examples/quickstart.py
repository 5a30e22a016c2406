"""Quickstart: train a VAE on MNIST digits for two epochs, sample, save.

    python examples/quickstart.py [DATA_DIR] [--out DIR]

Uses only the MNIST test split, 80% to train, 20% held out; it writes
quickstart.npz and quickstart_samples.png into --out (a rerun replaces them).
"""
import os
import sys

import numpy as np

try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npvae import VAE, cli
from npvae.checkpoint import load_model, save_checkpoint
from npvae.data import load_split, split
from npvae.plots import check_matplotlib, plot_samples
from npvae.progress import emit
from npvae.train import fit


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__, epilog=cli.EXIT_STATUS_NO_CHECKPOINT)
    p.add_argument("data_dir", nargs="?", type=cli.folder_path, metavar="DATA_DIR",
                   help="folder holding the MNIST test-set IDX files ($NPVAE_DATA_DIR, the cache, else download)")
    p.add_argument("--data-dir", dest="data_dir_option", type=cli.folder_path, metavar="DIR", help="the same as DATA_DIR")
    p.add_argument("--out", type=cli.user_path, metavar="DIR", default=os.path.join("runs", "quickstart"),
                   help="where the outputs go (default: runs/quickstart)")
    args = p.parse_args(argv)
    if len({os.path.abspath(d) for d in (args.data_dir, args.data_dir_option) if d}) > 1:    # DIR, DIR/: one
        p.error(f"DATA_DIR {args.data_dir} and --data-dir {args.data_dir_option} differ: give one of them")
    with cli.reading_input("DATA_DIR"):                     # a file it cannot read: status 2
        images, labels = load_split("mnist", "t10k", data_dir=args.data_dir_option or args.data_dir)  # uint8 (N, 784)
    (train, _), (test, _) = split(images, labels, int(0.8 * len(images)))
    names = ("quickstart.npz", "quickstart_samples.png")
    cli.check_output_folder(args.out, files=names)                           # before training, not after
    check_matplotlib()                                                       # a bad $MPLBACKEND too
    checkpoint, samples = (os.path.join(args.out, f) for f in names)
    if os.path.exists(checkpoint) or os.path.exists(samples):                # a rerun replaces them: say so
        emit(sys.stderr, f"note: this run replaces the earlier quickstart outputs in {args.out}\n")

    model = VAE(784, 400, 20, rng=0)                        # 784-400-20, as in the PyTorch example
    loss = fit(model, train, test, epochs=2, batch_size=128, lr=1e-3, rng=1)[-1]["test_loss"]    # the last epoch's
    emit(sys.stdout, f"test loss (negative ELBO) after 2 epochs: {loss:.1f} nats per image\n")   # | head stops nothing

    save_checkpoint(checkpoint, model)                      # atomic; reload with load_model
    plot_samples(model.sample(64, rng=np.random.default_rng(0)), samples,   # blurry after 2 epochs: say so
                 title=f"64 samples, z ~ N(0, I)\n"
                       f"after 2 epochs on {len(train):,} digits (train_mnist.py trains longer)")
    again = load_model(checkpoint)
    same = np.allclose(again.reconstruct(test[:5] / 255.0), model.reconstruct(test[:5] / 255.0))
    emit(sys.stdout, f"reloaded model reconstructs the same: {same}\n")


if __name__ == "__main__":
    cli.run(main, then_exit=True)                           # errors in one line, exit codes in --help
