"""Data for npvae: loading MNIST / Fashion-MNIST and cutting them into batches.

This module is the one to import; it re-exports the public names of
:mod:`npvae.data.idx` (the IDX file reader), :mod:`npvae.data.datasets` (finding and
loading the data sets) and :mod:`npvae.data.download` (fetching them), and adds
the batch helpers used by the training loop.

Loading
-------
>>> ds = load_dataset("fashion-mnist")          # doctest: +SKIP
>>> ds.train_images.shape, ds.train_images.dtype  # doctest: +SKIP
((60000, 784), dtype('uint8'))

Files are looked for in ``data_dir`` (if given, and only there), then
``$NPVAE_DATA_DIR/<name>`` and ``$NPVAE_DATA_DIR`` itself, then the user cache
(``$XDG_CACHE_HOME/npvae/<name>``, by default ``~/.cache/npvae/<name>``), then
system folders; if missing they are downloaded into the cache. See
:mod:`npvae.data.datasets` for the details.

Only one split
--------------
Where only the MNIST *test* set is at hand (10,000 digits, as on machines
without internet), load that split alone and cut it in two: the first 8,000
to train on, the last 2,000 held out::

    images, labels = load_split("mnist", "t10k", data_dir="/path/holding/mnist")
    (x_train, y_train), (x_held, y_held) = split(images, labels, 8000)

The held-out 2,000 are all from the test set's harder half (its last 5,000 digits, from
other writers: docs/data.md), so they score worse than the training images partly for that.

``load_idx_split(folder, "t10k")`` does the same from an explicit folder, and
:func:`read_images` / :func:`read_labels` read single files.

Batches
-------
Images stay ``uint8`` in memory (4x smaller than float32) and are turned into
floats one batch at a time::

    rng = np.random.default_rng(0)
    for batch in iterate_minibatches(x_train, 100, rng):   # uint8 (100, 784)
        x = to_float(batch)                                 # float32 in [0, 1]
        x = binarize(x, rng)                                # optional: 0/1 draws

Use :func:`iterate_indices` to get index arrays instead, e.g. to gather the
labels of each batch as well.
"""
import numpy as np

from ..errors import InputError, InputTypeError
from ..validate import (check_bool, check_dtype, check_non_negative_int, check_positive_int, check_unit_interval,
                        refuse_masked)
from .datasets import (ALIASES, DATASETS, ENV_VAR, SPLITS, SYSTEM_DIRS, Dataset, cache_dir,
                       canonical_name, load_dataset, load_idx_folder, load_idx_split, load_split,
                       locate, search_path, search_report)
from .download import MD5, MIRRORS, download_dataset, download_file
from .idx import read_idx, read_idx_header, read_images, read_labels
from .known import fingerprint

__all__ = [
    # files and data sets
    "read_idx", "read_idx_header", "read_images", "read_labels",
    "Dataset", "load_dataset", "load_split", "load_idx_folder", "load_idx_split",
    "canonical_name", "cache_dir", "search_path", "search_report", "locate",
    "DATASETS", "ALIASES", "SPLITS", "ENV_VAR", "SYSTEM_DIRS",
    "download_dataset", "download_file", "MIRRORS", "MD5",
    # batches
    "to_float", "binarize", "iterate_indices", "iterate_minibatches", "split",
    # identity
    "fingerprint",
]


def to_float(batch, dtype=np.float32, out=None):
    """Scale ``uint8`` pixels to floats in [0, 1] (``x / 255``).

    Parameters
    ----------
    batch : numpy.ndarray
        ``uint8`` array of any shape.
    dtype : {numpy.float32, numpy.float64}
        Type of the result (ignored when ``out`` is given: ``out.dtype`` wins). Give a float64
        model float64: float32 rounds the pixels (by up to 3e-8), and the model takes them so.
    out : numpy.ndarray, optional
        Preallocated float array of the same shape, to avoid a new allocation
        per batch in the training loop.

    Returns
    -------
    numpy.ndarray
        ``out`` if given, else a new array.
    """
    if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:
        got = (f"dtype {batch.dtype}" if isinstance(batch, np.ndarray) else
               f"a numpy scalar {batch!r}" if isinstance(batch, np.generic) else type(batch).__name__)
        hint = ""
        if isinstance(batch, np.ndarray) and batch.dtype.kind == "f":
            hint = ("; it already holds floats: use it as it is, or give the raw uint8 pixels "
                    "to scale (to_float divides by 255)")
        raise InputTypeError(f"batch must be a uint8 numpy array (raw pixels 0..255), got {got}{hint}")
    refuse_masked(batch, "batch")                   # its masked pixels would be scaled
    if out is None:
        out = np.empty(batch.shape, dtype=check_dtype(dtype))
    else:
        if not isinstance(out, np.ndarray):
            raise InputTypeError(f"out must be a numpy array, got {type(out).__name__}")
        check_dtype(out.dtype, "out.dtype")
        if not out.flags.writeable:
            raise InputError("out is read-only; give a writable array (or none, for a new one)")
        if out.shape != batch.shape:
            raise InputError(f"out must have the batch's shape {batch.shape}, got {out.shape}")
    # Dividing in the output dtype gives the exactly rounded x/255.
    np.divide(batch, 255, out=out, dtype=out.dtype)
    return out


def binarize(x, rng):
    """Dynamic binarization: draw each pixel as 1 with probability ``x``.

    Drawing fresh 0/1 images every epoch (rather than thresholding once)
    acts as data augmentation and makes the Bernoulli likelihood exact.

    Parameters
    ----------
    x : numpy.ndarray
        Floats in [0, 1]: the probabilities of a 1. NaN, inf or values outside
        [0, 1] raise an InputError.
    rng : numpy.random.Generator
        Source of randomness; pass the training loop's generator so runs
        are reproducible.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``, holding only 0.0 and 1.0.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        got = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InputTypeError(f"x must be a float numpy array in [0, 1] (see to_float), got {got}")
    refuse_masked(x, "x")                           # its checks would skip a masked NaN
    _check_generator(rng)
    if not np.isfinite(x).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"x must be probabilities in [0, 1], got {x[bad]} at index {bad}")
    check_unit_interval(x, "x", "divide by 255")
    # Generator.random only makes float32 and float64.
    draw_dtype = np.float32 if x.dtype.type is np.float32 else np.float64     # '>f4' too
    u = rng.random(x.shape, dtype=draw_dtype)
    return (u < x).astype(x.dtype)


def iterate_indices(n, batch_size, rng=None, shuffle=True, drop_last=False):
    """Yield arrays of row indices covering ``range(n)`` once: one epoch.

    Parameters
    ----------
    n : int
        Number of rows.
    batch_size : int
        Rows per batch; the last batch is smaller unless ``drop_last``.
    rng : numpy.random.Generator, optional
        Needed when ``shuffle`` is True: one permutation is drawn from it when
        this function is called, so the same seed gives the same order.
    shuffle : bool
        Visit the rows in random order (True) or in order 0..n-1 (False).
    drop_last : bool
        Skip the final batch if it has fewer than ``batch_size`` rows.

    Returns
    -------
    iterator of numpy.ndarray
        ``int64`` index arrays.
    """
    n = check_non_negative_int(n, "n")
    batch_size = check_positive_int(batch_size, "batch_size")
    shuffle, drop_last = check_bool(shuffle, "shuffle"), check_bool(drop_last, "drop_last")
    if shuffle:
        _check_generator(rng, " when shuffle=True; e.g. rng=np.random.default_rng(0)")
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    # Arguments are checked and the permutation drawn now, not at the first
    # next(): errors surface at the call and the rng advances predictably.
    stop = n - n % batch_size if drop_last else n
    return (order[i:i + batch_size] for i in range(0, stop, batch_size))


def iterate_minibatches(images, batch_size, rng=None, shuffle=True, drop_last=False):
    """Yield batches of rows of ``images`` (copies, same dtype): one epoch.

    Parameters
    ----------
    images : numpy.ndarray
        2-D array (N, features), typically ``uint8`` pixels.
    batch_size, rng, shuffle, drop_last
        As for :func:`iterate_indices`.

    Returns
    -------
    iterator of numpy.ndarray
        Arrays of shape (batch_size, features); the last may be shorter.
    """
    if not isinstance(images, np.ndarray):
        raise InputTypeError(f"images must be a numpy array (N, features), got {type(images).__name__}")
    if images.ndim != 2:
        raise InputError(f"images must be 2-D (N, features), got shape {images.shape}; "
                         f"flatten with images.reshape(len(images), -1)")
    indices = iterate_indices(len(images), batch_size, rng, shuffle, drop_last)
    return (images[idx] for idx in indices)


def split(images, labels, n_train):
    """Cut a data set in two, in order: first ``n_train`` rows, then the rest.

    Meant for training on the MNIST test set: ``split(x, y, 8000)`` gives the
    first 8,000 to train on and the last 2,000 held out. No shuffling, so the
    split is the same on every machine. Mind that the MNIST test set's last 5,000
    digits are harder than its first 5,000 (docs/data.md): the held-out 2,000 score
    worse than the training images partly for that, not only from overfitting.

    Parameters
    ----------
    images, labels : numpy.ndarray
        As many rows each, e.g. (N, 784) and (N,).
    n_train : int
        Rows in the first part, 0 to N.

    Returns
    -------
    (train_images, train_labels), (held_images, held_labels)
        Views into the inputs (no copy): the first ``n_train`` rows, and the other ``N - n_train``.
    """
    for arg, value in (("images", images), ("labels", labels)):
        if not isinstance(value, np.ndarray):
            raise InputTypeError(f"{arg} must be a numpy array, got {type(value).__name__}")
        if value.ndim == 0:
            raise InputError(f"{arg} must be an array of rows (at least 1-D), got a 0-d array")
    if len(images) != len(labels):
        raise InputError(f"images and labels must have the same length, got {len(images)} images "
                         f"and {len(labels)} labels")
    n_train = check_non_negative_int(n_train, "n_train")
    if n_train > len(images):
        raise InputError(f"n_train must be at most the number of rows, {len(images)}, got {n_train}")
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def _check_generator(rng, hint=""):
    # A seed is refused on purpose: re-seeding every epoch would repeat the
    # same shuffle (or the same binarization) each time.
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"rng must be a numpy.random.Generator{hint}, got {type(rng).__name__}")
