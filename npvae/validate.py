"""Argument checks shared by the public entry points.

Each check names the argument, says what was expected and what arrived, and
raises npvae's own errors (which are also ``ValueError``/``TypeError``).
"""
import contextlib
import contextvars
import numbers
import os
import reprlib
import tempfile
import warnings

import numpy as np

from .atomic import check_name_length, check_regular_file, check_replaceable
from .errors import InputError, InputTypeError, PixelScaleWarning, StateDictError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    """Return ``np.dtype(dtype)``; only float32 and float64 are supported."""
    if dtype is None:                   # np.dtype(None) is float64: say which
        raise InputTypeError(f"{name} must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputTypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise InputTypeError(f"{name} must be float32 or float64, got {describe_dtype(dt, 'pass np.{}')}")
    return dt


def describe_dtype(dt, fix="convert with .astype(np.{})"):
    """``dt`` as a message names it; a float32 or float64 in the other byte order says so, and
    ``fix`` (formatted with the native dtype's name) says what to do."""
    dt = np.dtype(dt)
    if dt.byteorder not in "=|" and dt.newbyteorder("=") in FLOAT_DTYPES:
        native = dt.newbyteorder("=")
        return f"{dt} ({native} in the other byte order: {fix.format(native)})"
    return str(dt)


def check_rng(rng, name="rng"):
    """Return a ``np.random.Generator``: ``rng`` itself, or a new one seeded by an int/None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        if rng is not None and rng < 0:
            raise InputError(f"{name} must be a numpy.random.Generator, a non-negative int seed or None, "
                             f"got {rng}")
        return np.random.default_rng(None if rng is None else int(rng))
    raise InputTypeError(f"{name} must be a numpy.random.Generator, an int seed or None, "
                         f"got {type(rng).__name__}")


def check_bool(value, name):
    """True or False (a NumPy bool too), not any truthy value."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_positive_int(value, name):
    """A positive int (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise InputError(f"{name} must be a positive int, got {value}")
    return int(value)


def check_widths(widths, name):
    """Layer widths: one positive int, or a non-empty sequence of them; a tuple of ints."""
    try:
        one = np.ndim(widths) == 0
    except ValueError:                          # ragged nesting: NumPy makes no array of it
        one = False
    if one:
        widths = (widths.item() if isinstance(widths, np.ndarray) else widths,)
    try:
        widths = tuple(widths)
    except TypeError:
        raise InputTypeError(f"{name} must be an int or a sequence of ints, got {widths!r}") from None
    if not widths:
        raise InputError(f"{name} needs at least one width, e.g. 400 or (400, 200)")
    return tuple(check_positive_int(w, name) for w in widths)


def check_indices(idx, name, n, most):
    """1 to ``most`` integer indices into ``n`` rows (negative ones count from the end, as in
    ``images[idx]``): an intp array of indices in [0, n)."""
    a = np.asarray(idx)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        if isinstance(idx, slice):
            got = f"{idx!r}: np.arange(start, stop, step) gives a slice's indices"
        elif a.ndim == 0:
            one = np.issubdtype(a.dtype, np.integer)
            got = reprlib.repr(idx) + (f": one index goes in a list, [{int(a)}]" if one else "")
        else:
            kind = "an array" if isinstance(idx, np.ndarray) else f"a {type(idx).__name__}"
            got = f"{kind} of {a.dtype} with shape {a.shape}"
        raise InputTypeError(f"{name} must be a 1-D sequence of integer indices, got {got}")
    if not 1 <= a.size <= most:
        raise InputError(f"{name} must hold 1 to {most} indices (the batch size), got {a.size}")
    low, high = int(a.min()), int(a.max())
    if low < -n or high >= n:
        bad = low if low < -n else high
        raise InputError(f"{name} holds index {bad}, out of range for {n} images")
    return a + n * (a < 0) if low < 0 else a


def is_number(value):
    """True for a real number, not a bool; a 0-d array counts as its number."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_float(value, name, allow_zero=False):
    """A finite real number > 0 (or >= 0 with ``allow_zero``); a 0-d array counts as its number."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not is_number(value):
        raise InputTypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value}")
    return value


def check_batch(x, name, n_features, dtype, unit_interval=False, c_order=True, pixels=True):
    """A finite 2-D float batch ``(B, n_features)`` with B >= 1, returned as ``dtype`` (in C
    order, as the reference takes it; with ``c_order=False`` row- or column-major as it came).

    Integer arrays are refused with a hint (``pixels``: images must be scaled to [0, 1]);
    float arrays of any other float dtype (float16, longdouble, the other of the two) are converted.
    """
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)):
            try:
                x = np.asarray(x)
            except ValueError:                  # rows of different lengths, say
                raise InputError(f"{name} is a list that is not a table of numbers (rows of one length); "
                                 f"pass a 2-D numpy array") from None
        else:
            raise InputTypeError(f"{name} must be a numpy array of shape (batch, {n_features}), "
                                 f"got {type(x).__name__}")
    refuse_masked(x, name)
    if x.dtype.kind in "iub":
        kind = "boolean" if x.dtype.kind == "b" else "integer"
        if pixels:
            raise InputTypeError(f"{name} has {kind} dtype {x.dtype}; the model takes floats in [0, 1]: "
                                 f"convert with {_to_float_hint(name, x, dtype)}")
        raise InputTypeError(f"{name} has {kind} dtype {x.dtype}; the model takes floats: convert with "
                             f"{name}.astype(np.{np.dtype(dtype)})")
    if x.dtype.kind != "f":
        raise InputTypeError(f"{name} must be a float array, got dtype {x.dtype}")
    check_shape(x, name, n_features, pixels)
    original = x
    with np.errstate(over="ignore"):        # 1e300 in float32: inf, reported below
        x = np.asarray(x, dtype=dtype)
    if not (x.flags.c_contiguous or (x.flags.f_contiguous and not c_order)):
        x = np.ascontiguousarray(x)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        beyond = np.isfinite(original[tuple(bad)]) if original.dtype != x.dtype else False
        what = f"a value beyond {np.dtype(dtype)}'s range" if beyond else "NaN or inf"
        raise InputError(f"{name} contains {what} (first at row {bad[0]}, column {bad[1]})")
    if unit_interval:       # as given: 1 + 1e-12 is 1 in float32, but fit and the evaluations see it
        check_unit_interval(original, name, "divide by 255")
    return x


def check_unit_interval(x, name, fix):
    """Values in [0, 1] (NaN is not), else an InputError; ``fix`` is the advice for what look
    like 0..255 pixels (None: values that are no pixels). An empty array passes."""
    if x.size == 0:
        return
    lo, hi = x.min(), x.max()                   # NaN if x holds one
    if not (lo >= 0 and hi <= 1):
        has_nan, nan_count = np.isnan(lo) or np.isnan(hi), ""
        if has_nan:                             # the range of the others, and how many are NaN
            n = int(np.isnan(x).sum())
            nan_count = f" ({n:,} of {x.size:,} NaN)"
            if n == x.size:
                raise InputError(f"{name} must lie in [0, 1] (pixel probabilities), got only NaN")
            lo, hi = np.nanmin(x), np.nanmax(x)
        hint = ""                               # (none for a NaN: no rounding or 0..255 scale makes one)
        if not has_nan and fix is not None and lo >= 0 and 2 < hi <= 255:
            hint = f"; for 0..255 pixels {fix}"
        elif not has_nan and float(lo) > -1e-3 and float(hi) < 1 + 1e-3:  # float(): in float16 1 + 1e-3 is 1's next
            variable = name.split(": ")[-1].split(" (")[0]      # "BCE.forward: probs", "x (after ...)"
            hint = f"; if these are rounding errors: np.clip({variable}, 0, 1)"
        elif not has_nan and fix is not None and lo < 0:    # standardized, or scaled to [-1, 1]
            variable = name.split(": ")[-1].split(" (")[0]
            hint = (f"; standardized or in [-1, 1]? npvae takes pixels in [0, 1], whatever the likelihood "
                    f"(its own BCE is a Bernoulli per pixel): give the pixels "
                    f"in [0, 1] (undo the standardization, {variable} * std + mean; from [-1, 1], "
                    f"({variable} + 1) / 2)")
        raise InputError(f"{name} must lie in [0, 1] (pixel probabilities), got values in "
                         f"[{_short(lo)}, {_short(hi)}]{nan_count}{hint}")


def _short(value):
    """``value`` in 4 digits, or all it needs where 4 would hide it (1.0000001 is not "1")."""
    text = f"{value:.4g}"
    hidden = (0 <= float(text) <= 1) != (0 <= value <= 1)      # rounding put it back inside
    return str(value) if hidden else text


def refuse_array_subclass(x, name, owner):
    """A ``numpy.matrix`` or a masked array ``x`` is refused (an InputTypeError that begins with
    ``owner``): npvae's arithmetic is ndarray's (a matrix's ``*`` is a matrix product)."""
    if isinstance(x, np.matrix):
        raise InputTypeError(f"{owner}: {name} is a numpy.matrix, whose * is a matrix product: "
                             f"pass np.asarray({name})")
    refuse_masked(x, name, owner)


def masked_array_problem(x, name):
    """What is wrong with ``x`` being a masked array, else "": its checks skip the masked
    values, which npvae's arithmetic (and a copy into a parameter) still reads."""
    if isinstance(x, np.ma.MaskedArray):
        return (f"{name} is a masked array, and npvae reads every value, masked or not: "
                f"pass {name}.filled(v) with the value the masked entries should have")
    return ""


def refuse_masked(x, name, owner=None):
    """A masked array ``x`` is refused (see :func:`masked_array_problem`)."""
    if problem := masked_array_problem(x, name):
        raise InputTypeError(f"{owner}: {problem}" if owner else problem)


def _to_float_hint(name, x, dtype=np.float32):
    """How to turn integer or boolean images ``x`` into floats of ``dtype`` in [0, 1]: 0..255
    pixels are divided by 255, images of only 0 and 1 are already probabilities."""
    cast = f"{name}.astype(np.{np.dtype(dtype)})"   # the model's dtype: float32 would round float64 pixels
    if x.dtype.kind == "b":
        return f"{cast} (True/False are already the probabilities 1/0)"
    if _only_zeros_and_ones(x):
        return f"{cast} (its values, 0 and 1, are already probabilities)"
    if x.size and (x.min() < 0 or x.max() > 255):     # 12- or 16-bit, or signed: not 0..255
        low, high = x.min(), x.max()
        values = f"its values are all {low}" if low == high else f"its values run from {low} to {high}"
        return (f"{cast} brought into [0, 1] by the range its pixels can take ({values}, not 0..255: e.g. "
                f"/ 4095 for 12-bit, / 65535 for 16-bit, (x - lowest) / (highest - lowest) for signed pixels)")
    return f"{cast} / 255"


def _fits_uint8(x):
    """Integer images of pixels 0..255 (as uint8 holds them), not of only 0 and 1."""
    return x.size > 0 and x.min() >= 0 and x.max() <= 255 and not _only_zeros_and_ones(x)


def _only_zeros_and_ones(x):
    """Integer images whose values are 0 and 1 (a 1 among them): probabilities, not 0..255 pixels."""
    return x.size > 0 and x.min() >= 0 and x.max() == 1


def layout_hint(x, name, n_features):
    """For a 2-D ``x`` of the wrong width: one image given as (height, width), or a set given
    one sample per column."""
    if x.ndim != 2 or x.shape[1] == n_features:
        return ""
    if x.size == n_features:
        return f"; for one image of shape {x.shape} use {name}.reshape(1, -1)"
    if x.shape[0] == n_features:
        return f"; for one sample per column use {name}.T"
    return ""


def check_shape(x, name, n_features, pixels=True):
    """``x`` is 2-D ``(N, n_features)`` with N >= 1; hints for the usual mistakes (``pixels``:
    ``x`` holds images)."""
    if x.ndim != 2:
        hint = ""
        if x.ndim == 1 and x.size == n_features:          # not for labels, say
            hint = f"; for one sample use {name}[None, :] or {name}.reshape(1, -1)"
        elif x.ndim >= 3 and np.prod(x.shape[1:]) == n_features:      # (N, 28, 28) or (N, 1, 28, 28)
            hint = f"; flatten images with {name}.reshape(len({name}), -1)"
        raise InputError(f"{name} must be 2-D (batch, {n_features}), got shape {x.shape}{hint}")
    if x.shape[1] != n_features:
        one = layout_hint(x, name, n_features) if pixels else ""
        raise InputError(f"{name} must have {n_features} features per row (shape (batch, {n_features})), "
                         f"got shape {x.shape}{one}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (shape {x.shape}); need at least one row")


def check_non_negative_int(value, name):
    """A non-negative int (not a bool): a seed, a count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be a non-negative int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise InputError(f"{name} must be a non-negative int, got {value}")
    return int(value)


check_seed = check_non_negative_int


# Set while a caller that has warned about its images already calls what checks them again. A
# context variable (each thread has its own), not warnings.catch_warnings, which swaps the one
# list of filters that every thread shares.
_PIXEL_SCALE_SAID = contextvars.ContextVar("npvae_pixel_scale_said", default=False)


@contextlib.contextmanager
def pixel_scale_said():
    """Within the block, :func:`check_images` does not warn about 0/1 uint8 pixels (in this thread)."""
    token = _PIXEL_SCALE_SAID.set(True)
    try:
        yield
    finally:
        _PIXEL_SCALE_SAID.reset(token)


def _array_hint(images, name):
    """How to make an array of what ``check_images`` was given instead, where that is clear."""
    if (isinstance(images, (tuple, list)) and len(images) == 2 and all(isinstance(a, np.ndarray) for a in images)
            and images[0].ndim >= 2 and images[1].ndim == 1):
        return f" (a pair, such as load_split's (images, labels)? pass its images: {name}, labels = ...)"
    if hasattr(images, "train_images") and hasattr(images, "test_images"):
        return " (a Dataset? pass its .train_images or .test_images)"
    if isinstance(images, (list, tuple)) and any(isinstance(a, np.ndarray) and a.ndim != 1 for a in images):
        return (" (several arrays: join sets of rows with np.concatenate, or np.stack images and "
                "reshape them to rows)")
    if isinstance(images, (list, tuple)) or (hasattr(images, "__array__") and not isinstance(images, np.generic)):
        return f" (np.asarray({name}) makes one, if every row has the same length)"   # rows as lists, a table
    return ""


def check_images(images, name, input_dim, stacklevel=3, dtype=np.float32):
    """Check a whole image set once; return it unchanged (no copy). (``stacklevel``: where
    a warning points, 3 at the caller of the function that calls this one; ``dtype``: the
    model's, for the advice on integer images.)

    Accepts ``uint8`` pixels (N, input_dim), the compact form that is
    converted batch by batch, or floats in [0, 1]. Every error names ``name``.
    """
    if not isinstance(images, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy array of shape (N, {input_dim}), "
                             f"got {type(images).__name__}{_array_hint(images, name)}")
    refuse_masked(images, name)
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        expected = f"{name} must be uint8 pixels (0..255) or floats in [0, 1], got dtype {images.dtype}"
        if images.dtype.kind == "O":                    # a pandas DataFrame's .values, say
            raise InputTypeError(f"{expected}; if it holds numbers, np.asarray({name}, dtype=np.{np.dtype(dtype)}) "
                                 f"converts it")
        if images.dtype.kind not in "biu":              # not numbers (strings, records, dates): no hint
            raise InputTypeError(expected)
        convert = _to_float_hint(name, images, dtype)
        if images.dtype.kind in "iu" and _fits_uint8(images):    # 0..255: uint8 too (not 4095 -> 255)
            convert = f"{name}.astype(np.uint8) or {convert}"
        raise InputTypeError(f"{expected}; convert with {convert}")
    if images.ndim == 2 and images.shape[1] != input_dim:
        raise InputError(f"{name} has {images.shape[1]} features per row, but model.input_dim is "
                         f"{input_dim} (shape {images.shape}){layout_hint(images, name, input_dim)}")
    check_shape(images, name, input_dim)
    if images.dtype == np.uint8 and not _PIXEL_SCALE_SAID.get() and _only_zeros_and_ones(images):
        warnings.warn(f"{name} are uint8 pixels of 0 and 1 only: uint8 pixels mean 0..255, so these "
                      f"are nearly black images; for 0/1 images pass {name}.astype(np.{np.dtype(dtype)})",
                      PixelScaleWarning, stacklevel=stacklevel)
    if images.dtype.kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise InputError(f"{name} contains NaN or inf (first at row {row}, column {col})")
        check_unit_interval(images, name, "pass uint8 or divide by 255")
    return images


def check_folder_path(folder, name):
    """A folder path (str or os.PathLike, ``~`` expanded) as a str; an npvae error for anything
    that is not a path. Whether the folder exists is left to the caller."""
    try:
        folder = os.fspath(folder)
    except TypeError:
        raise InputTypeError(f"{name} must be a folder path (str or os.PathLike), "
                             f"got {type(folder).__name__}") from None
    if isinstance(folder, bytes):
        folder = os.fsdecode(folder)
    if not folder or "\0" in folder:
        raise InputError(f"{name} must name a folder, got {folder!r}")
    return os.path.expanduser(folder)


def check_file_path(path, name):
    """``None``, or a path (str or os.PathLike, ``~`` expanded) that is not a folder; returned as str."""
    if path is None:
        return None
    try:
        path = os.fspath(path)
    except TypeError:
        raise InputTypeError(f"{name} must be a file path (str or os.PathLike), got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    path = os.path.expanduser(path)
    if "\0" in path:
        raise InputError(f"{name} must be a file path, got {path!r}, which holds a NUL character")
    if path.endswith((os.sep, "/")):
        raise InputError(f"{name} must be a file path, got {path!r}, which names a folder (it ends with a slash)")
    if not path or os.path.isdir(path):
        raise InputError(f"{name} must be a file path, got {path!r}, which is a folder" if path
                         else f"{name} must be a file path, got an empty string")
    return path


def nearest_existing(path):
    """``path`` made absolute, or its nearest parent that exists: where making it would start."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_output_path(path, name):
    """:func:`check_file_path`, and a file that can be written there: its nearest existing
    folder (the rest is made when it is written) is a folder, not a file, and writable."""
    path = check_file_path(path, name)
    if path is None:
        return None
    folder = nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(folder):
        raise InputError(f"{name}: cannot write {path!r}: {folder!r} is a file, not a folder")
    try:                                    # a file made there, not os.access: on Windows that says
        with tempfile.TemporaryFile(dir=folder):    # every folder is writable
            pass
    except OSError as e:
        raise InputError(f"{name}: cannot write {path!r}: no file can be made in {folder!r} "
                         f"({e.strerror or e})") from None
    try:
        check_name_length(path)             # with the temporary name it is first written under
        check_regular_file(path)            # not a pipe or a device: it would be replaced
    except InputError as e:
        raise InputError(f"{name}: {e}") from None
    try:
        check_replaceable(os.path.realpath(path))   # on Windows, not a read-only file
    except PermissionError as e:
        raise InputError(f"{name}: cannot write {path!r}: {e.strerror}") from None
    return path


def check_finite_parameters(model, consequence):
    """Every parameter of ``model`` is finite; else an InputError saying what would follow."""
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise InputError(f"model parameter {name} holds NaN or inf, so {consequence}; load a good "
                             f"checkpoint or build a new model")


def check_layer_dtypes(model):
    """Every layer of ``model`` that has a dtype has the model's: one made with another (a float64
    ``Dense`` put into a float32 VAE) refuses its input, an array the user never saw, and says
    not which layer it is."""
    for name, layer in model.named_modules():
        dtype = getattr(layer, "dtype", None)
        if dtype is not None and dtype != model.dtype:
            raise InputTypeError(f"model.{name} is {layer!r}, but the model computes in {model.dtype}: "
                                 f"make that layer with dtype=np.{model.dtype}")


def check_noise(eps, shape, dtype, owner):
    """``eps`` is a finite array of ``shape`` and ``dtype`` (the sampler's noise, given by hand)."""
    if not isinstance(eps, np.ndarray):
        raise InputTypeError(f"{owner}: eps must be a numpy array of shape {shape}, got {type(eps).__name__}")
    refuse_array_subclass(eps, "eps", owner)
    if eps.shape != shape:
        raise InputError(f"{owner}: eps must have shape {shape} (batch, latent_dim), got {eps.shape}")
    if eps.dtype != dtype:
        raise InputTypeError(f"{owner}: eps has dtype {eps.dtype}, the model's is {dtype}; "
                             f"convert with eps.astype(np.{dtype})")
    if not np.isfinite(eps).all():
        raise InputError(f"{owner}: eps contains NaN or inf")


def check_grad(grad_out, shape, dtype, owner):
    """``grad_out`` is an array of the forward output's ``shape`` and ``dtype``."""
    if not isinstance(grad_out, np.ndarray) or grad_out.shape != shape:
        got = grad_out.shape if isinstance(grad_out, np.ndarray) else type(grad_out).__name__
        raise InputError(f"{owner}: grad_out must have the forward output's shape {shape}, got {got}")
    refuse_array_subclass(grad_out, "grad_out", owner)
    if grad_out.dtype != dtype:
        raise InputTypeError(f"{owner}: grad_out has dtype {grad_out.dtype}, the forward output's is {dtype}; "
                             f"convert with grad_out.astype(np.{dtype})")


class Setting:
    """An attribute that checks every value it is given (an optimizer's hyper-parameters).

    Written in a class body as ``lr = Setting(check_non_negative_number)``, it makes
    ``optimizer.lr = value`` call ``check_non_negative_number(value, "lr")`` and keep what that
    returns: Python routes assignments to a class attribute that defines ``__set__`` through
    it. A check that depends on the object itself (Adam's ``eps`` against the parameters'
    dtype) is given as ``check_for(optimizer, value, name)``. So a bad value is refused where
    it is set: in the constructor, by ``load_state_dict``, or by a schedule that sets
    ``optimizer.lr`` between steps.
    """

    def __init__(self, check, check_for=None):
        self.check = check                          # check(value, name) -> the value to keep
        self.check_for = check_for                  # check_for(obj, value, name): what depends on obj

    def __set_name__(self, owner, name):
        self.name = name                            # the attribute's name, told by Python

    def __get__(self, obj, owner=None):
        if obj is None:                             # looked up on the class itself
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name} yet") from None

    def checked(self, obj, value):
        """``value`` as it would be kept on ``obj``, or the error setting it would raise."""
        value = self.check(value, self.name)
        if self.check_for is not None:
            self.check_for(obj, value, self.name)
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.name] = self.checked(obj, value)


def check_positive_number(value, name):
    """> 0 and finite (a number or a 0-d array)."""
    return check_positive_float(value, name)


def check_non_negative_number(value, name):
    """>= 0 and finite (a number or a 0-d array)."""
    return check_positive_float(value, name, allow_zero=True)


def check_decay_rates(value, name):
    """Adam's ``betas``: a pair of numbers in [0, 1), kept as a tuple of floats."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = None
    if pair is None or isinstance(value, (str, bytes, set, frozenset, dict)) or len(pair) != 2:   # ordered
        raise InputTypeError(f"{name} must be a pair (beta1, beta2), e.g. (0.9, 0.999), got {value!r}")
    pair = tuple(check_non_negative_number(b, f"{name}[{i}]") for i, b in enumerate(pair))
    for i, b in enumerate(pair):
        if b >= 1.0:
            raise InputError(f"{name}[{i}] must be in [0, 1), got {b}")
    return pair


def check_params_list(optimizer):
    """An InputTypeError unless ``optimizer.params`` is a list (or tuple), as the optimizer made it:
    set by hand afterwards to something else, every use of it would fail with a bare TypeError."""
    params = optimizer.params
    if not isinstance(params, (list, tuple)):
        raise InputTypeError(f"optimizer.params must be the list of the parameters it updates (as "
                             f"Adam(model.parameters()) makes it), got {type(params).__name__}")


def check_optimizer_params(optimizer, model, for_checkpoint=None):
    """For each of ``optimizer.params``, its index in ``model.parameters()``; InputError unless the
    optimizer holds exactly the model's parameters (in any order). ``for_checkpoint`` ("save" or
    "load"): the error says how to save or load with an optimizer of some parameters only,
    rather than how to train one."""
    index = {id(p): j for j, p in enumerate(model.parameters())}
    check_params_list(optimizer)
    params = optimizer.params
    held = {id(p) for p in params}
    if len(params) != len(index) or held != set(index):
        some = {
            "save": "a checkpoint holds one optimizer over all of them; with a frozen layer or two optimizers, "
                    "save_checkpoint(path, model) and np.savez(file, **optimizer.state_dict()) for each "
                    "optimizer (optimizer.load_state_dict(dict(np.load(file))) restores it)",
            "load": "a checkpoint holds one optimizer over all of them; for an optimizer of some, load the model "
                    "alone with load_checkpoint(path, model), then build the optimizer (or load its own state "
                    "dict into it)",
            None: "to train only some parameters, write your own loop: model.zero_grad, model.loss, model.backward, "
                  "optimizer.step",
        }[for_checkpoint]
        missing = [name for name, p in model.named_parameters() if id(p) not in held]
        lacks = f", lacking {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}" if missing else ""
        raise InputError(f"optimizer must hold exactly model.parameters() (in any order): it holds "
                         f"{len(params)} parameters, {sum(id(p) in index for p in params)} of them the "
                         f"model's {len(index)}{lacks}; build it with Adam(model.parameters(), lr) ({some})")
    return [index[id(p)] for p in params]


# -- what the core's modules share: state dicts, another library's weights, deprecations ----------
def check_state_entry(name, value, like, hint=""):
    """``value`` may replace ``like`` in a state dict: array, same shape and dtype, finite.

    ``hint`` is added to a shape mismatch (e.g. a transposed PyTorch weight).
    """
    if not isinstance(value, np.ndarray):
        raise StateDictError(f"state_dict[{name!r}] must be a numpy array, got {type(value).__name__} "
                             "(for a torch tensor use t.detach().cpu().numpy())")
    if problem := masked_array_problem(value, f"state_dict[{name!r}]"):
        raise StateDictError(problem)
    if value.shape != like.shape:
        raise StateDictError(f"state_dict[{name!r}] has shape {value.shape}, the model expects "
                             f"{like.shape}{hint}")
    if value.dtype != like.dtype:
        raise StateDictError(f"state_dict[{name!r}] has dtype {value.dtype}, the model expects "
                             f"{like.dtype} (convert with .astype(np.{like.dtype}))")
    if not np.isfinite(value).all():
        raise StateDictError(f"state_dict[{name!r}] contains NaN or inf")


def is_transposed(value, like):
    """``value`` has the shape of ``like`` (2-D, not square) turned around: a weight in the
    other library's orientation (PyTorch's Linear stores ``(out, in)``, npvae's Dense ``(in, out)``)."""
    return isinstance(value, np.ndarray) and value.ndim == 2 and value.shape == like.shape[::-1] != like.shape


def check_not_a_checkpoint(state_dict):
    """Refuse the entries of an npvae checkpoint (``np.load`` of what ``save_checkpoint`` wrote)
    given as a state dict, and say how to read one."""
    if "__meta__" in state_dict:        # npvae.checkpoint.META_KEY (the core does not import it)
        raise StateDictError("state_dict holds an npvae checkpoint's entries ('__meta__', 'model/...'), not a "
                             "state dict: npvae.load_model(path) reads the checkpoint (a model with layers "
                             "of your own: npvae.load_checkpoint(path, model)); the model's .state_dict() "
                             "is npvae's, npvae.interop.to_torch_state_dict(model) PyTorch's")


def same_class(obj, kind):
    """``obj``'s class is ``kind``, or the class ``importlib.reload`` of its module made again
    from the same code (a notebook's autoreload), which ``type(obj) is kind`` would refuse."""
    return same_type(type(obj), kind)


def same_type(cls, kind):
    """``cls`` is ``kind``, or ``kind`` made again by ``importlib.reload`` (see :func:`same_class`)."""
    return (cls.__module__, cls.__qualname__) == (kind.__module__, kind.__qualname__)


def warn_backend_argument(where, value, stacklevel=3):
    """The warning for the ``backend=`` arguments that models and optimizers no longer take
    (``stacklevel``: 3 points at the caller of the function that calls this one). A ``value``
    no npvae ever took is refused: it is a mistake, not an old spelling."""
    if value is not None and not (isinstance(value, str) and value in ("numba", "numpy")):
        raise InputError(f"{where}: backend, deprecated and ignored, was once 'numba', 'numpy' or None, got "
                         f"{value!r}; leave it out")
    warnings.warn(f"{where}: the back end is no longer a property of models and optimizers; choose it "
                  "where the work is done, with fit(..., backend=...) and evaluate_elbo/iw_nll(..., "
                  "backend=...). This argument is ignored.", DeprecationWarning, stacklevel=stacklevel)


def check_writable(array, name):
    """Optimizers and backward passes write into a parameter's arrays in place."""
    if not array.flags.writeable:
        raise InputError(f"{name} must be a writable array (it is updated in place), got a read-only "
                         f"one: pass a copy (array.copy())")


def nothing_matches_message(module, names, given):
    """Why a non-strict load of ``given`` names into a module with parameter ``names`` is refused."""
    from_torch = any(k.startswith("fc") for k in given)     # the PyTorch example's fc1, fc21, ...
    return (f"no name in state_dict is a parameter of {module} (got {given[:4]}"
            f"{', ...' if len(given) > 4 else ''}; expected names such as {names[:2]})"
            + ("; a PyTorch VAE's state dict is converted by npvae.interop.from_torch_state_dict" if from_torch else ""))
