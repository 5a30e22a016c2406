"""Draw the KL term of one latent dimension against its variance V (least at 1).

For one latent coordinate with q = N(mu, V) and the prior p = N(0, 1),

    KL(q || p) = (V + mu^2 - 1 - log V) / 2,

so at mu = 0 it is half of V - log V - 1, which is 0 at V = 1 and positive everywhere
else: -log V grows without bound as the variance shrinks towards 0 (an encoder that pins
each image to one exact code), and V grows as it widens: the two balance at V = 1. A mean away
from 0 only lifts the curve by mu^2 / 2; the best variance stays 1. The KL's curves are npvae's
own KL (npvae/losses.py: KL.forward), checked against the formula; V - log V - 1 and its two
parts beside them are plain NumPy. Run from the repository root::

    python examples/kl_curve.py --out docs/figures/kl_curve.png
"""
import os
import sys

import numpy as np

try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npvae import KL, cli
from npvae.plots import new_figure, save_png

MUS = (0.0, 0.5, 1.0, 1.5)      # the family of curves in the right panel


def kl_per_dimension(mu, variance):
    """npvae's KL of N(mu, V) from N(0, 1), one latent, for each V: the batch mean over one row."""
    kl = KL()
    out = np.empty(len(variance))
    for i, v in enumerate(variance):
        h = np.array([[mu, np.log(v)]])        # h = [mu | logvar], (1, 2): one sample, d = 1
        out[i] = kl.forward(h)
    return out


def variance_grid(step=0.01, top=4.0):
    """V = step, 2 step, ..., top: a grid with V = 1 on it exactly."""
    return np.arange(1, round(top / step) + 1) / round(1 / step)


def draw(path):
    # V = 1 on the grid; below its first step, points down to 1e-6, where the curves leave the
    # top of the plot as they should (the KL grows without bound as V -> 0), not stop short
    V = np.concatenate([np.geomspace(1e-6, 0.01, 40, endpoint=False), variance_grid()])
    curves = {mu: kl_per_dimension(mu, V) for mu in MUS}
    for mu, kl in curves.items():                   # the library's numbers are the closed form's
        np.testing.assert_allclose(kl, 0.5 * (V + mu ** 2 - 1 - np.log(V)), rtol=1e-12, atol=1e-14)

    fig = new_figure(12, 4.8)
    left, right = fig.subplots(1, 2)
    left.plot(V, V - np.log(V) - 1, color="C0", lw=2.5, label=r"$V - \log V - 1$ (twice the KL)")
    left.plot(V, curves[0.0], color="C1", lw=2.5, label=r"KL $= \frac{1}{2}(V - \log V - 1)$, npvae's KL at $\mu = 0$")
    left.plot(V, V - 1, color="0.45", ls="--", lw=1.2, label=r"$V - 1$: grows as the variance widens")
    left.plot(V, -np.log(V), color="0.45", ls=":", lw=1.5, label=r"$-\log V$: grows without bound as $V \to 0$")
    left.plot([1], [0], "o", color="k", ms=7, zorder=5)
    left.annotate("minimum at V = 1: KL = 0", xy=(1, 0), xytext=(2.15, -0.6),
                  arrowprops=dict(arrowstyle="->", color="k"), fontsize=11)
    left.set_title(r"KL per latent dimension at $\mu = 0$: half of $V - \log V - 1$")
    left.set_ylim(-1.0, 3.0)

    colors = ("C1", "C2", "C3", "C4")
    for (mu, kl), color in zip(curves.items(), colors):
        right.plot(V, kl, color=color, lw=2.2, label=rf"$\mu = {mu:g}$: minimum $\mu^2/2 = {mu ** 2 / 2:g}$ at $V = 1$")
        right.plot([1], [mu ** 2 / 2], "o", color=color, ms=6)
    right.set_title(r"$\frac{1}{2}(V + \mu^2 - 1 - \log V)$: a mean away from 0 lifts the curve")
    right.set_ylim(-0.1, 2.5)
    for ax in (left, right):
        ax.axvline(1.0, color="k", lw=0.8, alpha=0.5)
        ax.axhline(0.0, color="k", lw=0.8, alpha=0.5)
        ax.set_xlim(-0.04, V[-1])      # a margin, so the climb as V -> 0 shows beside the axis
        ax.set_xlabel(r"variance $V = \exp(\mathrm{logvar})$ of $q(z \mid x)$ in one latent dimension")
        ax.set_ylabel("nats")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center" if ax is left else "upper right", fontsize=9)   # clear of the curves
    fig.suptitle("The KL term pulls every variance towards V = 1 (and every mean towards 0)", fontsize=13)
    save_png(fig, path, dpi=110)
    return V, curves


def main(argv=None):
    p = cli.ArgumentParser(description=(__doc__ or "").split("\n")[0])   # (-OO: no docstrings)
    p.add_argument("--out", type=cli.user_path, default=os.path.join("runs", "kl_curve.png"),
                   help="where to write the PNG (default: runs/kl_curve.png)")
    args = p.parse_args(argv)
    cli.check_output_file(args.out, "--out")
    V, curves = draw(args.out)
    step = np.diff(variance_grid())[0]
    print(f"KL at mu = 0 is smallest at V = {V[np.argmin(curves[0.0])]:.3f} "
          f"(on a grid of step {step:.2f}), where it is {curves[0.0].min():.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main, then_exit=True)     # a bad --out, Ctrl-C: one line and an exit status, no traceback
