"""Train one VAE with beta = 0 and one with beta = 1; draw their latent "bubbles".

The encoder maps each image to a Gaussian bubble q(z | x) = N(mu, diag(sigma^2)) in a
2-D latent space. Without the KL term (beta = 0) nothing holds the bubbles in place:
they drift apart and shrink (a tiny variance lets the decoder read z exactly), so much
of N(0, I), where new samples are drawn, lies between them, and its samples repeat a few
blurry shapes. With the KL term (beta = 1) they overlap near the origin, towards covering
N(0, I), and samples from it decode to a variety of digits. Both models start from the same
weights and see the same batches; only beta differs.

The figure shows, for each model, the held-out images' latent means with their
one-sigma ellipses (coloured by digit) and 64 images decoded from the same z ~ N(0, I);
the script prints each model's spread (mean |mu|, mean variance). Run from the repository root::

    python examples/latent_bubbles.py                         # the shipped 1,000-image sample
    python examples/latent_bubbles.py --data-dir /path/to/data --out docs/figures/latent_bubbles.png

--data-dir is a folder holding the MNIST test set's IDX files (or an mnist/ folder with
them); its first --train images train both models, the rest are drawn. Nothing is downloaded.
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)
from npvae import VAE, cli
from npvae.data import load_split, split
from npvae.errors import DatasetNotFoundError, InputError
from npvae.plots import check_matplotlib, new_figure, save_png, tile_images
from npvae.train import fit

SAMPLE = os.path.join(ROOT, "tests", "data", "mnist-sample")   # 1,000 MNIST test digits, shipped
BETAS = (0.0, 1.0)


def three_digits(value):
    """``5.98``, ``0.0120``, ``306``: three significant digits, zeros kept, no trailing point."""
    return f"{value:#.3g}".rstrip(".")


def parse_args(argv=None):
    p = cli.ArgumentParser(description=(__doc__ or "").split("\n")[0])   # (-OO: no docstrings)
    p.add_argument("--data-dir", type=cli.folder_path, default=None,
                   help="folder with the MNIST test set (t10k) IDX files (default: the shipped sample)")
    p.add_argument("--train", type=cli.whole_number(1), default=None,
                   help="images to train on, the rest are held out and drawn (default: 80%%)")
    p.add_argument("--epochs", type=cli.whole_number(1), default=50, help="(default: 50)")
    p.add_argument("--batch-size", type=cli.whole_number(1), default=128, help="(default: 128)")
    p.add_argument("--hidden-dim", type=cli.whole_number(1), default=400, help="(default: 400)")
    p.add_argument("--lr", type=cli.learning_rate, default=1e-3, help="(default: 0.001)")
    p.add_argument("--seed", type=cli.whole_number(0), default=0, help="(default: 0)")
    p.add_argument("--points", type=cli.whole_number(1), default=1000,
                   help="held-out images drawn, at most (default: 1000)")
    p.add_argument("--out", type=cli.user_path, default=os.path.join("runs", "latent_bubbles.png"),
                   help="where to write the PNG (default: runs/latent_bubbles.png)")
    args = p.parse_args(argv)
    cli.check_output_file(args.out, "--out")          # before the training, not after it
    return args


def spread(mu, logvar):
    """How far the bubbles sit from the origin and how big they are."""
    return {"mean |mu|": float(np.linalg.norm(mu, axis=1).mean()),   # distance from 0, per image
            "mean variance": float(np.exp(logvar).mean())}             # over images and both dimensions


def train_both(train, test, args):
    """The same model (same initial weights, same batches) trained with each beta."""
    results = {}
    for k, beta in enumerate(BETAS, 1):     # (the time left that fit shows is its own model's)
        print(f"training model {k} of {len(BETAS)}, with beta = {beta:g} ...", file=sys.stderr)
        model = VAE(784, args.hidden_dim, 2, rng=args.seed)
        history = fit(model, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      beta=beta, rng=np.random.default_rng(args.seed), progress=True)
        mu, logvar = model.encode(test.astype(np.float32) / 255)
        samples = model.sample(64, rng=np.random.default_rng(args.seed))     # the same z for both
        results[beta] = dict(mu=mu, logvar=logvar, samples=samples, last=history[-1],
                             **spread(mu, logvar))
    return results


def draw_bubbles(ax, mu, sigma, colors, alpha=0.18, dot=3):
    """Latent means (dots) and one-sigma ellipses: diagonal Gaussians, so axis-aligned."""
    from matplotlib.collections import EllipseCollection
    ax.add_collection(EllipseCollection(2 * sigma[:, 0], 2 * sigma[:, 1], np.zeros(len(mu)), units="xy",
                                        offsets=mu, offset_transform=ax.transData,
                                        facecolors=colors, edgecolors=colors, alpha=alpha, lw=0.6))
    ax.scatter(mu[:, 0], mu[:, 1], s=dot, c=colors, zorder=3)


def emptiest_corner(ax, mu, size):
    """Axes-fraction (x, y) of the corner box of side ``size`` holding the fewest means."""
    xy = ax.transLimits.transform(mu)               # data -> axes fraction
    corners = [(0.02, 0.02), (0.98 - size, 0.02), (0.02, 0.98 - size), (0.98 - size, 0.98 - size)]
    inside = [np.sum((xy[:, 0] > x) & (xy[:, 0] < x + size) & (xy[:, 1] > y) & (xy[:, 1] < y + size))
              for x, y in corners]
    return corners[int(np.argmin(inside))]


def zoom_in(ax, mu, sigma, colors):
    """An inset around the typical mean, where ellipses too small to see in the panel show."""
    size = 0.34
    x, y = emptiest_corner(ax, mu, size)
    inset = ax.inset_axes([x, y, size, size])
    size_of = np.sqrt(sigma.prod(axis=1))                    # each ellipse's geometric-mean radius
    typical = np.argmin(np.abs(np.log(size_of / np.median(size_of))))   # a digit of median size
    centre, half = mu[typical], 4 * sigma[typical].max()
    near = np.all(np.abs(mu - centre) < half + 3 * sigma, axis=1)
    draw_bubbles(inset, mu[near], sigma[near], colors[near], alpha=0.35, dot=1)
    inset.set_xlim(centre[0] - half, centre[0] + half)
    inset.set_ylim(centre[1] - half, centre[1] + half)
    inset.set_aspect("equal", adjustable="box")
    inset.set_xticks([])
    inset.set_yticks([])
    # the caption inside the inset: above it, it would run into the panel's title in a top corner
    inset.text(0.5, 0.97, f"zoomed in: a square\n{2 * half:.2g} wide, around a\ndigit of median sigma",
               transform=inset.transAxes, ha="center", va="top", fontsize=8.5)
    ax.indicate_inset_zoom(inset, edgecolor="k")


def draw(results, labels, path, n_points):
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    cmap = colormaps["tab10"]
    fig = new_figure(13, 13.2)
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.1, 1.0))
    for ax, (beta, r) in zip(top.subplots(1, len(results)), results.items()):
        mu, sigma = r["mu"][:n_points], np.exp(r["logvar"][:n_points] / 2)
        colors = cmap(labels[:n_points] % 10)
        draw_bubbles(ax, mu, sigma, colors)
        ax.add_patch(Circle((0, 0), 1.0, fill=False, ls="--", lw=1.6, color="k", zorder=4))
        lo = np.minimum((mu - sigma).min(axis=0), -1.2)          # keep N(0, I)'s circle in view
        hi = np.maximum((mu + sigma).max(axis=0), 1.2)
        half = 0.52 * (hi - lo).max()                              # square panels, alike: titles line up
        for set_lim, centre in zip((ax.set_xlim, ax.set_ylim), (lo + hi) / 2):
            set_lim(centre - half, centre + half)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        kind = "no KL term" if beta == 0 else "with the KL term"
        n_all = len(r["mu"])                       # spread() averages over every held-out image
        drawn = f"{len(mu)} of {n_all}" if len(mu) < n_all else f"all {n_all}"
        ax.set_title(f"beta = {beta:g} ({kind}): {drawn} held-out digits\n"
                     f"over all {n_all}: mean |mu| = {three_digits(r['mean |mu|'])},  "
                     f"mean variance = {three_digits(r['mean variance'])}")
        if np.median(sigma) < 0.005 * (hi - lo).max():        # ellipses too small to see: zoom in
            zoom_in(ax, mu, sigma, colors)
    handles = [Line2D([], [], ls="", marker="o", color=cmap(k), label=f"digit {k}") for k in range(10)]
    handles.append(Line2D([], [], ls="--", color="k", label="N(0, I), one sigma"))
    top.legend(handles=handles, loc="outside lower center", ncols=11, frameon=False, columnspacing=1.0,
               handletextpad=0.2)
    for ax, (beta, r) in zip(bottom.subplots(1, len(results)), results.items()):
        ax.imshow(tile_images(r["samples"], 8, 8), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"beta = {beta:g}: 64 images decoded from the same z ~ N(0, I)")
    top.suptitle("Latent bubbles: the same VAE trained without (left) and with (right) the KL term\n"
                 "dots: the means mu of q(z | x); shaded: their one-sigma ellipses", fontsize=13)
    save_png(fig, path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    data_dir = SAMPLE if args.data_dir is None else args.data_dir     # "" is refused, not the sample
    # errors (no data there, --lr 0, a run that diverged) go to cli.run: one line and the exit status
    try:
        with cli.reading_input("--data-dir"):
            images, labels = load_split("mnist", "t10k", data_dir=data_dir, download=False, progress=False)
    except DatasetNotFoundError as e:
        if args.data_dir is None:           # the script was copied out of its checkout
            raise InputError(f"the 1,000 MNIST test digits this script uses without --data-dir (tests/data/"
                             f"mnist-sample in a checkout) are not at {SAMPLE}: pass --data-dir, a folder "
                             f"holding the MNIST test set's files (nothing is downloaded)") from e
        raise InputError("\n".join([       # --data-dir was given: nothing is downloaded
            "--data-dir was given, but the MNIST test files are not there. Looked in:",
            *cli.places_searched(e),
            "To fix: point --data-dir at a folder holding them (or holding mnist/ with them), "
            "or leave it out to use the 1,000 digits shipped in tests/data/mnist-sample."])) from e
    n_train = int(0.8 * len(images)) if args.train is None else args.train
    if not 0 < n_train < len(images):
        where = ("the 1,000 digits shipped in tests/data/mnist-sample; --data-dir with the MNIST test set "
                 "has 10,000" if args.data_dir is None else f"{data_dir} holds {len(images):,} images")
        print(f"error: --train must be between 1 and {len(images) - 1} (the rest is held out: {where}), "
              f"got {n_train}", file=sys.stderr)
        return 2
    check_matplotlib()                  # a bad $MPLBACKEND: said now, not after a minute of training
    (train, _), (test, test_labels) = split(images, labels, n_train)
    print(f"{data_dir}: {len(train)} training images, {len(test)} held out", file=sys.stderr)
    results = train_both(train, test, args)
    draw(results, np.asarray(test_labels, dtype=int), args.out, args.points)
    print(f"spread of q(z | x) over the {len(test)} held-out images after {args.epochs} epoch{'s' * (args.epochs != 1)}:")
    print(f"{'':8}{'mean |mu|':>12}{'mean variance':>16}{'test recon':>12}{'test KL':>10}")
    for beta, r in results.items():
        print(f"{'beta = ' + format(beta, 'g'):8}{r['mean |mu|']:>12.3f}{r['mean variance']:>16.3e}"
              f"{r['last']['test_recon']:>12.1f}{r['last']['test_kl']:>10.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, then_exit=True)     # Ctrl-C, a full disk: one line and an exit status, no traceback
