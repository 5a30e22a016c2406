"""Figures of a VAE: reconstructions, samples, interpolations, losses, the latent space.

matplotlib is imported here only (``import npvae`` never loads it), through its
object API: each function builds a ``matplotlib.figure.Figure`` with its own
Agg canvas, so no pyplot state and no global backend switch are involved, and
the code works in threads and on machines without a display. With ``path``,
the PNG is written atomically (:func:`npvae.atomic.atomic_write`). In a notebook a figure
shows as a cell's value, or with ``IPython.display.display(fig)`` (in a loop, or before a
cell's last line); ``plt.show()`` and ``fig.show()`` are pyplot's and show none of them.

Images are rows of pixel intensities in [0, 1] (``uint8`` is scaled by 1/255);
square images (784 = 28 x 28) are recognised, other shapes need ``image_shape``.
"""
import functools
import importlib
import io
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from .atomic import atomic_write
from .errors import InputError, InputTypeError
from .model import check_vae
from .validate import (check_non_negative_int, check_positive_float, check_positive_int, check_unit_interval,
                       is_number, refuse_masked)

__all__ = ["new_figure", "save_png", "tile_images", "plot_reconstructions", "plot_samples",
           "plot_interpolation", "plot_loss", "plot_latent", "latent_grid", "pca_2d", "check_matplotlib"]

_PAD = 2          # pixels between tiled images
_PAD_VALUE = 1.0  # white: cell borders visible against the black margins of every digit, and against grey
_MAX_SIDE = 16384  # pixels a side: beyond, Agg runs out of memory (or refuses, at 2**16)
_MAX_INCHES = 80   # a side of a grid's images, at most: 8,000 pixels at the default dpi


def check_matplotlib():
    """Import matplotlib now, for a program that trains first and draws after.

    ``import npvae`` does not load it, and the functions here load it at the first figure;
    an ``MPLBACKEND`` that matplotlib cannot start with is then found after the training.
    Called first, it is an ``InputError`` before any work is done.

    matplotlib checks that variable as it is imported: a backend it does not know fails the
    import with a ``ValueError``, even though npvae draws with Agg whatever the backend.

    Raises
    ------
    InputError
        If ``MPLBACKEND`` names a backend matplotlib does not know (the message says to unset it).
    """
    try:
        importlib.import_module("matplotlib")       # (once imported, a lookup in sys.modules)
    except ValueError as e:
        backend = os.environ.get("MPLBACKEND")
        if not backend or "backend" not in str(e):     # another cause: matplotlib's own words
            raise
        raise InputError(f"matplotlib cannot be imported with MPLBACKEND={backend!r}: {e}. npvae draws "
                         f"with Agg whatever the backend: unset MPLBACKEND or set it to agg") from None


def new_figure(width, height, dpi=100):
    """A Figure with an Agg canvas and constrained layout (nothing clipped at the edges).

    In a notebook it shows as the cell's value or with ``IPython.display.display(fig)``, with
    or without ``%matplotlib inline``: it has IPython's ``_repr_png_``. (``fig.show()`` is
    pyplot's, which these figures do not use.)

    Parameters
    ----------
    width, height : float
        In inches.
    dpi : float
        Pixels per inch (not the user's rc's), of the picture a notebook shows and of the
        PNG :func:`save_png` writes by default; each side must come out 1 to 16,384 pixels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    width, height = check_positive_float(width, "width"), check_positive_float(height, "height")
    dpi = _check_dpi((width, height), dpi)
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    fig._repr_png_ = functools.partial(_png_bytes, fig)     # (a partial: the figure still pickles)
    return fig


def _png_bytes(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def save_png(fig, path, dpi=100):
    """Write ``fig`` to ``path`` as a PNG, atomically.

    A name ending in another image format's suffix (``.svg``, ``.pdf``, ...) is refused: the
    file would be a PNG under that name. For those, ``fig.savefig(name)`` on the figure.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
    dpi : float
        Pixels per inch; each side of the image must come out 1 to 16,384 pixels.

    Returns
    -------
    str or os.PathLike
        ``path``, as given.
    """
    if not hasattr(fig, "savefig") or not hasattr(fig, "get_size_inches"):
        raise InputTypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    suffix = os.path.splitext(os.fspath(path))[1][1:].lower() if isinstance(path, (str, os.PathLike)) else ""
    if suffix != "png" and suffix in fig.canvas.get_supported_filetypes():
        raise InputError(f"path {os.fspath(path)!r} names a .{suffix} file, but npvae writes its figures as "
                         f"PNG; give a .png path, or call .savefig({os.path.basename(os.fspath(path))!r}) on the "
                         f"figure returned")
    dpi = _check_dpi(fig.get_size_inches(), dpi)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path


def _check_dpi(size, dpi):
    """``dpi`` as a float, if it makes each side of a figure of ``size`` inches 1 to ``_MAX_SIDE`` pixels."""
    dpi = check_positive_float(dpi, "dpi")
    width, height = np.asarray(size, dtype=float) * dpi
    if min(width, height) < 1 or max(width, height) > _MAX_SIDE:
        raise InputError(f"dpi={dpi:g} makes this figure {_pixels(width)} x {_pixels(height)} pixels; give a "
                         f"dpi that keeps both sides from 1 to {_MAX_SIDE:,} pixels (the default, 100, gives "
                         f"{_pixels(width * 100 / dpi)} x {_pixels(height * 100 / dpi)})")
    return dpi


def _pixels(n):
    """``20000``, ``0.65``, ``0.9996``: a size in pixels as it is (rounded, one under 1 could read 1)."""
    text = f"{n:.2f}".rstrip("0").rstrip(".")
    return text if n >= 1 or float(text) < 1 else f"{n:.6f}".rstrip("0")


def _finish(fig, path):
    """``fig``, written to ``path`` at its own dpi if one is given."""
    if path is not None:
        save_png(fig, path, fig.dpi)
    return fig


def _as_images(images, image_shape, name="images"):
    """(N, H, W) floats in [0, 1] from rows (N, H*W) or images (N, H, W)."""
    if not isinstance(images, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy array, got {type(images).__name__}")
    refuse_masked(images, name)                             # its masked pixels would be drawn
    images = np.asarray(images)                             # a numpy.matrix is 2-D only
    if images.dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must hold numbers (floats in [0, 1] or uint8 pixels), got dtype {images.dtype}")
    a = images.astype(np.float32) / 255 if images.dtype == np.uint8 else np.asarray(images, np.float32)
    if a.ndim not in (2, 3):
        raise InputError(f"{name} must be (N, pixels) or (N, height, width), got shape {a.shape}")
    if len(a) == 0:
        raise InputError(f"{name} is empty: nothing to plot")
    check_unit_interval(a, name, "divide by 255")
    if a.ndim == 3:
        return a
    one = f" (if it is one {a.shape[0]} x {a.shape[1]} image, pass {name}[None]: a 2-D array is rows of images)"
    if image_shape is None:
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            raise InputError(f"{name} rows have {a.shape[1]} pixels, not a square: pass image_shape=(h, w){one}")
        image_shape = (side, side)
    h, w = _image_shape(image_shape)
    if h * w != a.shape[1]:
        raise InputError(f"image_shape {image_shape} holds {h * w} pixels, {name} rows have {a.shape[1]}{one}")
    return a.reshape(len(a), h, w)


def _image_shape(image_shape):
    try:
        h, w = image_shape
    except (TypeError, ValueError):
        raise InputError(f"image_shape must be (height, width), got {image_shape!r}") from None
    return check_positive_int(h, "image_shape[0]"), check_positive_int(w, "image_shape[1]")


def tile_images(images, nrows, ncols, image_shape=None, pad=_PAD, pad_value=_PAD_VALUE):
    """One 2-D array holding ``images`` on an ``nrows`` x ``ncols`` grid (row-major), padded.

    Parameters
    ----------
    images : ndarray (N, H*W) or (N, H, W)
        Floats in [0, 1], or ``uint8`` pixels (scaled by 1/255).
    nrows, ncols : int
        The grid, with ``nrows * ncols >= N``.
    image_shape : (int, int), optional
        ``(H, W)`` of rows (N, H*W); default: square.
    pad : int
        Pixels around and between the images.
    pad_value : float
        The padding's value (default 1.0, white), also that of unused cells.

    Returns
    -------
    ndarray (nrows * (H + pad) + pad, ncols * (W + pad) + pad), float32
    """
    imgs = _as_images(images, image_shape)
    nrows, ncols = check_positive_int(nrows, "nrows"), check_positive_int(ncols, "ncols")
    pad = check_non_negative_int(pad, "pad")
    if not (is_number(pad_value) and math.isfinite(pad_value)):
        raise InputTypeError(f"pad_value must be a number (a grey: 0 black, 1 white), got {pad_value!r}")
    n, h, w = imgs.shape
    if n > nrows * ncols:
        raise InputError(f"{n} images do not fit a {nrows} x {ncols} grid: pass nrows and ncols with "
                         f"nrows * ncols >= {n}")
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = imgs[i]
    return out


def _show(ax, grid, title=None):
    # nearest + "data" stage: same pixels as "rgba" for a grey map, a third of the memory
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", interpolation_stage="data")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, wrap=True)                  # a long title wraps at the figure's edge


def _grid_inches(nrows, ncols, images, cell):
    """(width, height) in inches of an ``nrows`` x ``ncols`` grid of ``images`` (N, H, W), each
    ``cell`` x ``cell`` square inches in area with its own aspect, shrunk to stay drawable."""
    aspect = images.shape[1] / images.shape[2]              # height / width
    width, height = cell * ncols / math.sqrt(aspect), cell * nrows * math.sqrt(aspect)
    scale = min(1.0, _MAX_INCHES / width, _MAX_INCHES / height)
    return scale * width, scale * height


def plot_reconstructions(originals, reconstructions, path=None, *, title="Reconstructions",
                         image_shape=None, dpi=100):
    """Two rows: the images above their reconstructions.

    Parameters
    ----------
    originals, reconstructions : ndarray (N, H*W) or (N, H, W)
        As many of each, as for :func:`tile_images`.
    path : str or os.PathLike, optional
        Also write the figure there, as :func:`save_png` does.
    title : str
    image_shape : (int, int), optional
        As for :func:`tile_images`.
    dpi : float
        Pixels per inch, of the PNG written to ``path`` and of the picture a notebook shows.

    Returns
    -------
    matplotlib.figure.Figure
    """
    pairs = [_as_images(images, image_shape, name) for images, name in
             ((originals, "originals"), (reconstructions, "reconstructions"))]
    n = len(pairs[0])
    if len(pairs[1]) != n:
        raise InputError(f"got {n} originals but {len(pairs[1])} reconstructions")
    width, height = _grid_inches(2, n, pairs[0], cell=1.0)
    fig = new_figure(max(4.0, width), height + 0.9, dpi)         # the two rows, and the title
    axes = fig.subplots(2, 1)
    for ax, images, label in ((axes[0], pairs[0], "input"), (axes[1], pairs[1], "reconstruction")):
        _show(ax, tile_images(images, 1, n))
        ax.set_ylabel(label)
    fig.suptitle(title, wrap=True)
    return _finish(fig, path)


def plot_samples(images, path=None, *, nrows=None, ncols=None, title="Samples, z ~ N(0, I)", image_shape=None,
                 dpi=100):
    """A grid of images, e.g. decoded from ``z ~ N(0, I)``.

    Parameters
    ----------
    images : ndarray (N, H*W) or (N, H, W)
        As for :func:`tile_images`.
    path : str or os.PathLike, optional
        As for :func:`plot_reconstructions`.
    nrows, ncols : int, optional
        The grid (default: the squarest grid that holds them, 8 x 8 for 64).
    title, image_shape, dpi
        As for :func:`plot_reconstructions`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images = _as_images(images, image_shape)      # (N, H, W), once
    n = len(images)
    nrows = None if nrows is None else check_positive_int(nrows, "nrows")
    ncols = None if ncols is None else check_positive_int(ncols, "ncols")
    if ncols is None:
        ncols = math.ceil(n / nrows) if nrows else math.ceil(math.sqrt(n))
    if nrows is None:
        nrows = math.ceil(n / ncols)
    width, height = _grid_inches(nrows, ncols, images, cell=0.8)
    fig = new_figure(width + 0.4, height + 0.8, dpi)
    _show(fig.subplots(), tile_images(images, nrows, ncols), title)
    return _finish(fig, path)


def plot_interpolation(images, path=None, *, title="Latent interpolation", image_shape=None, dpi=100):
    """A row of decoded images, captioned with the mixing weight ``t = i / (steps - 1)``.

    Parameters
    ----------
    images : ndarray (steps, H*W) or (steps, H, W)
        As for :func:`tile_images`, in order.
    path, title, image_shape, dpi
        As for :func:`plot_reconstructions`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    imgs = _as_images(images, image_shape)
    n = len(imgs)
    width = max(4.0, 1.1 * n)
    pixel_rows, pixel_cols = imgs.shape[1:]
    row = width / n * pixel_rows / pixel_cols                       # the images' height
    scale = min(1.0, _MAX_INCHES / width, (_MAX_INCHES - 0.6) / row)  # shrunk to stay drawable, as the grids
    fig = new_figure(max(4.0, scale * width), scale * row + 0.6, dpi)     # the images, captions, title
    axes = fig.subplots(1, n, squeeze=False)[0]
    fits = fig.get_figwidth() / 0.9                         # a caption needs about 0.9 inch
    every = math.ceil(n / fits)                             # 1 up to 88 frames; a caption every 2nd from 89
    captioned = set(range(0, n - every, every))             # stopping a step short of the last,
    captioned.add(n - 1)                                    # which is always captioned
    for i, ax in enumerate(axes):
        _show(ax, imgs[i])
        if i in captioned:
            ax.set_xlabel(f"t = {i}/{n - 1}" if 0 < i < n - 1 else f"t = {i // max(n - 1, 1)}")
    fig.suptitle(title, wrap=True)
    return _finish(fig, path)


def plot_loss(history, path=None, *, title="Training", dpi=100):
    """Panels over epochs: the loss, its reconstruction part and its KL part, train and test.

    ``history`` is a list of per-epoch dicts as returned by :func:`npvae.train.fit`; from a
    loop of your own, dicts with any of ``train_loss``, ``test_loss``, ``train_recon``,
    ``test_recon``, ``train_kl``, ``test_kl`` (and ``epoch``, else 1, 2, ...). A panel is
    drawn for each of loss, recon and kl that has train or test values in every record (an
    epoch whose value is NaN or inf is marked with a dotted red line; up to 40 epochs, each
    has a marker). ``fit``'s train values are means over the epoch's steps, while the model
    learned (so the first epoch's lies well above its test value); its test values are of
    the model at the epoch's end. When the records' KL weights (``beta_start``, ``beta``)
    change, as in a warm-up, the train loss's legend says so: the test loss weighs the KL in full.

    Parameters
    ----------
    history : list of dict
        As above.
    path, title, dpi
        As for :func:`plot_reconstructions`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise InputTypeError(f"history must be a list of per-epoch dicts (as fit returns), got "
                             f"{type(history).__name__}")
    if not history:
        raise InputError("history is empty: train at least one epoch first")
    if not all(isinstance(r, Mapping) for r in history):
        raise InputTypeError("history must be a list of per-epoch dicts (as fit returns)")
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    for i, r in enumerate(history):
        for key in ("epoch", *(f"{split}_{part}" for split in ("train", "test") for part in ("loss", "recon", "kl"))):
            value = epochs[i] if key == "epoch" else r.get(key)     # a value of None: not recorded
            if (key == "epoch" or value is not None) and not is_number(value):
                raise InputError(f"history[{i}][{key!r}] must be a number, got {value!r}")
    panels = [(key, name, unit) for key, name, unit in (
        ("loss", "Loss", "recon + beta * KL, nats per image"),
        ("recon", "Reconstruction", "BCE, nats per image"),
        ("kl", "KL(q(z|x) || p(z))", "nats per image"))
        if any(_series(history, split, key) for split in ("train", "test"))]
    if not panels:
        raise InputError("history has no values to plot: the records need train_loss or test_loss (or "
                         f"_recon, _kl), as fit's records have; got keys {sorted(history[0])}")
    # with warm-up an epoch's train loss weighs the KL by the ramp's weights, its test loss by the full one
    weights = [r[k] for r in history for k in ("beta_start", "beta") if is_number(r.get(k))]   # fit's, or none
    warmup = f" (KL weight {min(weights):.2g} to {max(weights):.2g}: warm-up)" if len(set(weights)) > 1 else ""
    fig = new_figure(4.4 * len(panels), 4, dpi)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    marked = len(epochs) <= 40                  # beyond that the markers merge into a band
    for ax, (key, name, unit) in zip(axes, panels):
        diverged = set()
        for split, style, colour in (("train", "o-", "C0"), ("test", "s--", "C1")):   # the same in every panel
            values = _series(history, split, key)
            if values:              # (matplotlib leaves NaN and inf out of the line, and says nothing)
                label = split + warmup if (key, split) == ("loss", "train") else split
                diverged.update(e for e, v in zip(epochs, values) if not np.isfinite(v))
                ax.plot(epochs, values, style if marked else style.strip("os"), label=label, markersize=4,
                        color=colour)
        for i, epoch in enumerate(sorted(diverged)):    # a gap in a line says nothing by itself
            ax.axvline(epoch, color="tab:red", linestyle=":", label="NaN or inf" if i == 0 else None)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 10:
            ax.set_xticks(epochs)
        else:  # integer ticks, few enough to stay readable
            ax.xaxis.get_major_locator().set_params(integer=True, nbins=8)
    fig.suptitle(title, wrap=True)
    return _finish(fig, path)


def _class_colours(classes):
    """A colour per class, told apart up to 20. Up to 10 classes, labels 0 to 9 keep their colour
    by value (7 is grey whichever of them are present, as in latent_bubbles.py); others go by rank."""
    check_matplotlib()
    from matplotlib import colormaps
    if len(classes) > 20:
        raise InputError(f"labels hold {len(classes)} classes; plot_latent tells at most 20 apart by colour: "
                         f"plot a subset of them, or group them")
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    by_value = classes.dtype.kind in "iu" and classes.min() >= 0 and classes.max() < palette.N
    return [palette(int(c) if by_value else k) for k, c in enumerate(classes)]


def _tick(value):
    """``-1.6`` with a true minus sign, as matplotlib writes its own ticks (0.0, not -0.0)."""
    text = f"{value:.1f}"
    return "0.0" if float(text) == 0 else text.replace("-", "\u2212")


def _model_image_shape(model, image_shape):
    """``(h, w)`` of the images ``model`` decodes: ``image_shape``, else the square of ``input_dim``."""
    check_vae(model)
    n = model.input_dim
    if image_shape is None:
        side = math.isqrt(n)
        if side * side != n:
            raise InputError(f"the model's images have {n} pixels, not a square: pass image_shape=(h, w)")
        return side, side
    h, w = _image_shape(image_shape)
    if h * w != n:
        raise InputError(f"image_shape {tuple(image_shape)} holds {h * w} pixels, the model's images have {n}")
    return h, w


def _series(history, split, key):
    """``[record["<split>_<key>"] ...]`` if every record has a value there, else []."""
    values = [r.get(f"{split}_{key}") for r in history]
    return values if all(v is not None for v in values) else []


def pca_2d(points):
    """Project (N, d) points on their first two principal axes (SVD of the centred data).

    An axis's sign is arbitrary in the SVD (LAPACK builds may differ), so each
    axis is turned to make its largest loading positive: the same points give
    the same picture everywhere, never a mirror image.

    Parameters
    ----------
    points : array_like (N, d)
        Finite, with N >= 2 and d >= 2.

    Returns
    -------
    projected : ndarray (N, 2), float64
    ratio : ndarray (2,), float64
        The explained variance ratio of the two axes; points that do not vary at all
        (a collapsed posterior: every mean the same) give ratios of 0.
    """
    refuse_masked(points, "points")
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] < 2:
        raise InputError(f"points must be (N, d) with N >= 2 rows and d >= 2 columns, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise InputError("points hold NaN or inf")
    if (points == points[0]).all():      # no spread; the mean's round-off would make some up
        return np.zeros((len(points), 2)), np.zeros(2)
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]                                           # (2, d)
    largest = axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)]
    axes = axes * np.where(largest < 0, -1.0, 1.0)[:, None]
    var = s ** 2
    return centred @ axes.T, var[:2] / var.sum()


def latent_grid(model, n=20, lo=0.05, hi=0.95):
    """Decode an ``n`` x ``n`` grid over a 2-D latent plane, spaced by N(0, 1) quantiles.

    Parameters
    ----------
    model : VAE
        With ``latent_dim == 2``.
    n : int
        Images a side.
    lo, hi : float
        The quantiles of the grid's first and last values, 0 < lo < hi < 1.

    Returns
    -------
    images : ndarray (n*n, input_dim)
        ``model.decode`` of the grid, row by row; row 0 of the grid is the largest
        ``z_2``, so the picture has ``z_2`` pointing up.
    values : ndarray (n,)
        The z values along each axis, ascending.
    """
    from scipy.special import ndtri     # N(0, 1)'s quantile function; scipy.stats takes 0.4 s more to import
    check_vae(model, "latent_grid: model")
    n = check_positive_int(n, "n")
    if not (is_number(lo) and is_number(hi) and 0 < lo < hi < 1):
        raise InputError(f"lo and hi must be quantiles with 0 < lo < hi < 1, got {lo!r} and {hi!r}")
    if model.latent_dim != 2:
        raise InputError(f"latent_grid needs a 2-D latent space, the model has latent_dim={model.latent_dim}")
    values = ndtri(np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2]))   # one image: the middle
    z1, z2 = np.meshgrid(values, values[::-1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(model.dtype)
    return model.decode(z), values


def plot_latent(mu, labels, path=None, *, class_names=None, title="Latent space (test set means)",
                model=None, grid=20, image_shape=None, dpi=100):
    """Scatter of latent means coloured by label; for a 2-D latent space and a model, also its manifold.

    With ``latent_dim > 2`` the means are projected on their first two principal axes; with
    ``latent_dim == 1`` each class gets a strip of its own. Up to 20 classes, each its own colour
    (labels 0 to 9 keep theirs whichever of them are present). The manifold's images are square
    (784 = 28 x 28) unless ``image_shape=(h, w)`` says otherwise.

    Parameters
    ----------
    mu : ndarray (N, d)
        The latent means, e.g. ``model.encode(x)[0]``.
    labels : ndarray (N,)
        One label per row of ``mu``.
    path : str or os.PathLike, optional
        As for :func:`plot_reconstructions`.
    class_names : sequence of str, optional
        Legend names of integer labels 0, 1, ...
    title : str
    model : VAE, optional
        With d == 2, its manifold (:func:`latent_grid`) is drawn beside the scatter, and a
        dashed square on the scatter shows where that grid lies among the points.
    grid : int
        Images a side of that manifold.
    image_shape : (int, int), optional
        Of the manifold's images (see above).
    dpi : float
        As for :func:`plot_reconstructions`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    refuse_masked(mu, "mu")                                 # its masked points would be drawn
    refuse_masked(labels, "labels")
    mu = np.asarray(mu, np.float64)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be 1-D (one per row of mu), got shape {labels.shape}")
    if mu.ndim != 2 or len(mu) == 0 or len(mu) != len(labels):
        raise InputError(f"mu must be (N, d) with one label per row, got {mu.shape} and {labels.shape}")
    if not np.isfinite(mu).all():
        raise InputError("mu holds NaN or inf: the model's means are not finite")
    if mu.shape[1] > 2 and len(mu) < 2:
        raise InputError(f"mu has {mu.shape[1]} dimensions: projecting them on two axes needs at least 2 rows")
    if class_names is not None and not (labels.dtype.kind in "iu" and 0 <= labels.min()
                                        and labels.max() < len(class_names)):
        raise InputError(f"class_names ({len(class_names)} names) needs integer labels from 0 to "
                         f"{len(class_names) - 1}, got {labels.dtype} labels {np.unique(labels)[:5]}")
    grid = check_positive_int(grid, "grid")
    if image_shape is not None:
        _image_shape(image_shape)                       # checked even where no manifold is drawn
    missing = np.array([v != v for v in labels.tolist()], bool)     # NaN, in a float or an object array
    if missing.any():                       # np.unique makes one class of them, and no point matches it
        raise InputError(f"labels hold NaN ({missing.sum()} of {len(labels)}): drop those rows from mu and "
                         f"labels, or give them a label of their own")
    try:
        classes = np.unique(labels)
    except TypeError:                       # an object array of strings and numbers: no order
        kinds = sorted({type(v).__name__ for v in labels})
        raise InputTypeError(f"labels must be of one kind (numbers, or strings), got {', '.join(kinds)}") from None
    names = [class_names[int(c)] if class_names is not None else str(c) for c in classes]
    colours = _class_colours(classes)
    manifold = model is not None and mu.shape[1] == 2
    if manifold:
        h, w = _model_image_shape(model, image_shape)
    fig = new_figure(14 if manifold else 8, 6.5, dpi)
    axes = fig.subplots(1, 2 if manifold else 1, squeeze=False)[0]
    ax = axes[0]
    if mu.shape[1] > 2:
        xy, ratio = pca_2d(mu)
        xlabel, ylabel = (f"PC{i + 1} of mu ({100 * r:.0f}% of variance)" for i, r in enumerate(ratio))
        ax.set_title(f"{title}\non the first two principal axes of the {mu.shape[1]}-D means", wrap=True)
    elif mu.shape[1] == 2:
        xy, xlabel, ylabel = mu, "z1 (mean)", "z2 (mean)"
        ax.set_title(title, wrap=True)
    else:       # 1-D: a strip per class, jittered up and down so the points do not hide each other
        rank = np.searchsorted(classes, labels)
        xy = np.column_stack([mu[:, 0], rank + np.random.default_rng(0).uniform(-0.3, 0.3, len(mu))])
        xlabel, ylabel = "z1 (mean)", "class"
        ax.set_yticks(np.arange(len(classes)), names)
        ax.set_title(title, wrap=True)
    for k, (label, name) in enumerate(zip(classes, names)):
        sel = labels == label
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, color=colours[k], label=name, rasterized=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(title="class", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    if manifold:
        images, values = latent_grid(model, grid)
        from matplotlib.patches import Rectangle   # where the manifold lies among the points (it has its own scale)
        side = values[-1] - values[0]
        limits = ax.get_xlim(), ax.get_ylim()       # the points' own: the square is cut at the edges if need be
        ax.add_patch(Rectangle((values[0], values[0]), side, side, fill=False, linestyle="--", color="0.25"))
        ax.annotate("decoded at right", (values[0], values[-1]), xytext=(2, 3), textcoords="offset points",
                    fontsize=8, color="0.25", bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=1))
        if all(lo < values[-1] and values[0] < hi for lo, hi in limits):
            ax.set_xlim(limits[0])
            ax.set_ylim(limits[1])
        else:       # out of the points' view altogether (an undertrained model's means, far off): show both
            ax.autoscale_view()
        axes[1].imshow(tile_images(images, grid, grid, (h, w), pad=0), cmap="gray", vmin=0, vmax=1,
                       interpolation="nearest")
        n_ticks = min(grid, 5 if grid % 2 else 4)          # both ends and, for an odd grid, the middle
        ticks = np.unique(np.round(np.linspace(0, grid - 1, n_ticks)).astype(int))
        axes[1].set_xticks(ticks * w + w / 2, [_tick(values[i]) for i in ticks])
        axes[1].set_yticks(ticks * h + h / 2, [_tick(values[::-1][i]) for i in ticks])
        axes[1].set_xlabel("z1")
        axes[1].set_ylabel("z2")
        axes[1].set_title(f"Decoded manifold, {grid} x {grid} grid of N(0, 1) quantiles")
    return _finish(fig, path)
