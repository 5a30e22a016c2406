"""Train a variational autoencoder on MNIST (or Fashion-MNIST) and draw what it learned.

The defaults follow the classic PyTorch example: a 784-400-20 VAE, Adam with
lr 1e-3, batches of 128, 20 epochs, seed 0. Run from the repository root::

    python examples/train_mnist.py                              # MNIST (downloaded if missing)
    python examples/train_mnist.py --dataset fashion-mnist --data-dir /path/to/fashion-mnist
    python examples/train_mnist.py --dataset mnist-test-split   # only the MNIST test set on disk:
                                                                # 8,000 to train, 2,000 held out
    python examples/train_mnist.py --latent-dim 2               # adds the decoded 2-D manifold
    python examples/train_mnist.py --resume runs/<run>/checkpoint.npz   # after Ctrl-C

Everything goes into --out (default runs/<dataset>-<YYYYmmdd-HHMMSS>/):
metrics.jsonl (one line per epoch, then a summary with the importance-weighted
NLL), checkpoint.npz, run.json (these settings, reused by --resume),
reconstruction_before.png, reconstruction_after.png, samples.png,
interpolation.png, loss.png and latent.png.
"""
import argparse
import datetime
import json
import os
import resource
import shlex
import sys
import time

import numpy as np

try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import npvae  # noqa: F401
from npvae import VAE, plots
from npvae.atomic import append_line, atomic_write
from npvae.data import load_dataset, load_split, split
from npvae.errors import DataFileError, DatasetNotFoundError
from npvae.evaluate import evaluate_elbo, iw_nll
from npvae.train import TrainingInterrupted, fit

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
INTERPOLATE = {"mnist": (0, 6), "fashion-mnist": (0, 9)}   # from the first test image of class a to b
# Settings kept in run.json; --resume takes them as defaults.
SAVED = ("dataset", "data_dir", "split", "epochs", "batch_size", "latent_dim", "hidden_dim", "lr", "beta",
         "warmup", "seed", "backend", "nll_k", "nll_images", "binarize")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-test-split"], default="mnist",
                   help="mnist-test-split: train on the MNIST test set's first --split images, "
                        "hold out the rest (for machines with only the test set)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the IDX files (or a <dataset>/ folder with them); "
                        "default: $NPVAE_DATA_DIR, the cache, else download")
    p.add_argument("--split", type=int, default=8000, help="mnist-test-split: images to train on")
    p.add_argument("--epochs", type=int, default=20, help="total epochs (also when resuming)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden-dim", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (beta-VAE)")
    p.add_argument("--warmup", type=int, default=0, help="epochs of linear KL warm-up")
    p.add_argument("--binarize", action="store_true", help="dynamic binarization of the training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["numba", "numpy"], default=None,
                   help="kernels (default: $NPVAE_BACKEND, else numba)")
    p.add_argument("--nll-k", type=int, default=800,
                   help="importance samples per image for the final NLL estimate "
                        "(800 x 10,000 test images: about a minute on 2 cores)")
    p.add_argument("--nll-images", type=int, default=None, help="test images for the NLL (default: all)")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<time>/)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run; its folder's run.json supplies the settings not given here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.resume:
        # Settings of the interrupted run become the defaults; flags given now still win.
        out = args.out or os.path.dirname(os.path.abspath(args.resume))
        run_json = os.path.join(out, "run.json")
        if os.path.exists(run_json):
            with open(run_json, encoding="utf-8") as f:
                saved = json.load(f)
            p.set_defaults(**{k: v for k, v in saved.items() if k in SAVED})
            args = p.parse_args(argv)
        args.out = out
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join("runs", f"{args.dataset}-{stamp}")
    return args


def describe(model):
    return f"{model.input_dim}-{'-'.join(map(str, model.hidden_dims))}-{model.latent_dim}"


def load_data(args):
    """Return (train_images, test_images, test_labels, kind), kind naming the classes: mnist or fashion-mnist."""
    if args.dataset == "mnist-test-split":
        images, labels = load_split("mnist", "t10k", data_dir=args.data_dir)
        (train, _), (test, test_labels) = split(images, labels, args.split)
        return train, test, test_labels, "mnist"
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    return ds.train_images, ds.test_images, ds.test_labels, args.dataset


def main(argv=None):
    # -- config ---------------------------------------------------------------------
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    def out(name):
        return os.path.join(args.out, name)

    with atomic_write(out("run.json"), "w") as f:
        json.dump({k: getattr(args, k) for k in SAVED}, f, indent=2)
    print(f"writing to {args.out}", file=sys.stderr)

    # -- data -----------------------------------------------------------------------
    try:
        train_images, test_images, test_labels, kind = load_data(args)
    except (DatasetNotFoundError, DataFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = CLASS_NAMES[kind]
    print(f"{args.dataset}: {len(train_images)} training images, {len(test_images)} test images",
          file=sys.stderr)

    # -- model ----------------------------------------------------------------------
    # One seed, two independent streams: initial weights (then the sampler's noise), and shuffling.
    model_seed, data_seed = np.random.SeedSequence(args.seed).spawn(2)
    model = VAE(train_images.shape[1], args.hidden_dim, args.latent_dim,
                rng=np.random.default_rng(model_seed), backend=args.backend)
    print(f"model: {describe(model)}, backend {model.backend}", file=sys.stderr)
    show = test_images[:10]
    x_show = show.astype(np.float32) / 255
    # Reconstructions of the untrained model now, drawn after training: matplotlib
    # (about 30 MB) is then loaded only once the training images are let go.
    before = None if args.resume else model.reconstruct(x_show)

    def draw_before():
        if before is not None:
            plots.plot_reconstructions(show, before, out("reconstruction_before.png"),
                                       title="Test images (top) and reconstructions by the untrained model")

    # -- training -------------------------------------------------------------------
    try:
        history = fit(model, train_images, test_images, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, beta=args.beta, warmup=args.warmup, binarize=args.binarize,
                      rng=np.random.default_rng(data_seed), checkpoint=out("checkpoint.npz"),
                      resume=args.resume, metrics_path=out("metrics.jsonl"), progress=args.progress)
    except TrainingInterrupted as e:
        draw_before()
        command = shlex.join([sys.executable, sys.argv[0], "--resume", out("checkpoint.npz")])
        print(f"stopped; to continue run:\n  {command}", file=sys.stderr)
        return 128 + e.signum
    del train_images  # not needed any more: keeps the peak memory of what follows down

    # -- figures --------------------------------------------------------------------
    draw_before()
    plots.plot_reconstructions(show, model.reconstruct(x_show), out("reconstruction_after.png"),
                               title=f"Test images (top) and reconstructions after {len(history)} epochs")
    plots.plot_samples(model.sample(64, rng=np.random.default_rng(args.seed)), out("samples.png"),
                       title=f"64 samples decoded from z ~ N(0, I) (d = {args.latent_dim})")
    a, b = INTERPOLATE[kind]
    if np.isin([a, b], test_labels).all():
        first_a, first_b = (np.flatnonzero(test_labels == c)[0] for c in (a, b))
        frames = model.interpolate(test_images[first_a] / 255.0, test_images[first_b] / 255.0, steps=9)
        plots.plot_interpolation(frames, out("interpolation.png"),
                                 title=f"Latent interpolation, test {names[a]} \u2192 {names[b]}: decode "
                                       f"z = t\u00b7z({names[b]}) + (1 \u2212 t)\u00b7z({names[a]})")
    plots.plot_loss(history, out("loss.png"), title=f"VAE {describe(model)} on {args.dataset}")
    mu = np.concatenate([model.encode(test_images[i:i + 1000].astype(np.float32) / 255)[0]
                         for i in range(0, len(test_images), 1000)])
    plots.plot_latent(mu, test_labels, out("latent.png"), class_names=names, model=model,
                      title=f"Test set latent means ({args.dataset})")

    # -- evaluation (last: the NLL takes a while) -----------------------------------
    test = evaluate_elbo(model, test_images, batch_size=args.batch_size, binarize=args.binarize)
    n_nll = min(args.nll_images or len(test_images), len(test_images))
    print(f"importance-weighted NLL: k={args.nll_k} samples on {n_nll} test images ...", file=sys.stderr)
    t0 = time.perf_counter()
    nll = iw_nll(model, test_images[:n_nll], k=args.nll_k, binarize=args.binarize)
    seconds = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    summary = dict(summary=True, epochs=len(history), test_loss=test.total, test_recon=test.recon,
                   test_kl=test.kl, iw_nll=nll, nll_k=args.nll_k, nll_images=n_nll, nll_seconds=seconds,
                   peak_rss_mb=round(peak_rss_mb, 1))
    append_line(out("metrics.jsonl"), json.dumps(summary))
    print(f"test loss (negative ELBO) {test.total:.2f} nats; IW NLL (k={args.nll_k}, {n_nll} images) "
          f"{nll:.2f} nats in {seconds:.0f}s", file=sys.stderr)
    print(f"done: figures, metrics and checkpoint in {args.out} (peak memory {peak_rss_mb:.0f} MB)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
