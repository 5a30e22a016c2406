"""How much memory training a VAE takes, and how much this machine can give it.

A program checks the two before it builds the model, so that a size typed
with a few digits too many is refused with a sentence rather than a
``MemoryError`` (or the kernel's out-of-memory killer) minutes later.

The estimate counts what grows with the model and the batch, in the model's
float type: the parameters with their gradients and Adam's two moments (on the fast
path, its trainer's copy of them all too, and the copies it keeps to tell whether anything
else changed them), the activations and their gradients for one batch, and the largest evaluation
buffers (the importance-weighted NLL sends up to 1,024 rows through the
decoder at once). The data set is not counted: it is in memory already when
the check runs. It is an estimate, meant to catch sizes that cannot possibly
fit, not to cut close. :func:`evaluation_bytes` is the same for what one chunk of
the NLL adds once the model exists, which ``iw_nll`` checks before it starts.
:func:`check_model_fits` and :func:`check_rows_fit` are the checks ``VAE`` itself makes
(its parameters with their gradients; a batch of codes to decode).
"""
import os
import sys

import numpy as np

from .errors import InputError

__all__ = ["parameter_count", "training_bytes", "evaluation_bytes", "available_bytes", "peak_rss_bytes",
           "format_bytes"]

_NLL_ROWS = 1024      # npvae.evaluate.iw_nll's default chunk_rows


def _widths(input_dim, hidden_dims, latent_dim):
    hidden = [int(hidden_dims)] if np.ndim(hidden_dims) == 0 else [int(h) for h in hidden_dims]
    encoder = [input_dim, *hidden, 2 * latent_dim]
    decoder = [latent_dim, *hidden[::-1], input_dim]
    return encoder, decoder


def parameter_count(input_dim, hidden_dims, latent_dim):
    """Weights and biases of ``VAE(input_dim, hidden_dims, latent_dim)``, as a Python int."""
    count = 0
    for sizes in _widths(input_dim, hidden_dims, latent_dim):
        count += sum(int(a) * int(b) + int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    return count


def training_bytes(input_dim, hidden_dims, latent_dim, batch_size, dtype=np.float32, optimizer_copies=2,
                   backend=None, nll_rows=_NLL_ROWS):
    """Bytes that training such a VAE on batches of ``batch_size`` needs, roughly (see the module docstring).

    ``optimizer_copies``: arrays the optimizer keeps per parameter (Adam: 2). ``backend``: ``"numba"``,
    whose trainer holds the parameters, their gradients and the optimizer's arrays again, and a copy
    of the parameters and the optimizer's arrays (two while it takes a new one), or ``"numpy"``,
    whose update makes temporaries of a parameter's size; None: the larger, the fast path's.
    ``nll_rows``: rows the NLL sends through the decoder at once (0: no NLL, as in ``fit``).
    Python ints throughout: absurd sizes give absurd numbers, never an overflow.
    """
    if backend not in (None, "numba", "numpy"):
        raise InputError(f"backend must be 'numba', 'numpy' or None, got {backend!r}")
    copies = 2 + optimizer_copies           # the model's values and gradients, the optimizer's arrays
    if backend != "numpy":                  # the trainer's block of them all, the copies it keeps of the
        copies += (2 + optimizer_copies) + 2 * (1 + optimizer_copies) + 1   # values and the optimizer's, dW
    else:
        copies += 2                         # the update's temporaries
    encoder, decoder = _widths(int(input_dim), hidden_dims, int(latent_dim))
    hidden = sum(encoder[1:-1]) + sum(decoder[1:-1])
    # one row through the model: every layer's input and output, hidden layers twice
    # (before and after the ReLU), the sampler's eps, std and z, the loss's per-pixel terms
    row = sum(encoder) + sum(decoder) + hidden + 3 * int(latent_dim) + int(input_dim)
    train = copies * parameter_count(input_dim, hidden_dims, latent_dim) \
        + 2 * int(batch_size) * row                                       # values and their gradients
    nll = evaluation_bytes(input_dim, hidden_dims, latent_dim, nll_rows, dtype) if nll_rows else 0
    return np.dtype(dtype).itemsize * train + nll


def evaluation_bytes(input_dim, hidden_dims, latent_dim, rows, dtype=np.float32):
    """Bytes that sending ``rows`` samples through such a VAE's decoder for their likelihood adds, roughly:
    every decoder layer's output (hidden ones twice: the reference keeps them before and after the
    ReLU), the rows' images five times (repeated, a copy in the fast path's layout, and the
    reference BCE's per-pixel terms, three at a time), the encoder's outputs repeated and the
    sampler's eps, std and z, and room for the encoder's layers, which the fast path's workspace
    holds too. The model itself is not counted: it exists."""
    encoder, decoder = _widths(int(input_dim), hidden_dims, int(latent_dim))
    row = sum(decoder[1:]) + sum(decoder[1:-1]) + 5 * int(input_dim) + 5 * int(latent_dim) + sum(encoder[1:])
    return np.dtype(dtype).itemsize * int(rows) * row


def _read_int(path):
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None


def _proc_bytes(path, key):
    """A "key: N kB" line of a /proc file (Linux), in bytes, or None."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room():
    """Memory left under this process's cgroup limit (v2, then v1), or None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < 1 << 60:     # "max" or a huge number: no limit
            return max(0, lim - used)
    return None


def _address_space_room():
    """Room left under ``ulimit -v`` (RLIMIT_AS), or None without a limit."""
    try:
        import resource
    except ImportError:       # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = _proc_bytes("/proc/self/status", "VmSize")
    return None if size is None else max(0, soft - size)


def available_bytes():
    """Memory this process can still get: the least of what the machine, its cgroup and
    ``ulimit -v`` allow; None where none of them can be read (Windows). Without Linux's
    ``/proc`` (macOS) the machine's part is all its memory, not what is free of it."""
    if os.name != "posix":
        return None
    known = [b for b in (_proc_bytes("/proc/meminfo", "MemAvailable"), _physical_bytes(), _cgroup_room(),
                         _address_space_room()) if b is not None]
    return min(known) if known else None


def _physical_bytes():
    """The machine's memory, free or not (``sysconf``: Linux, macOS), or None."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages * size if pages > 0 and size > 0 else None      # -1: not known


def peak_rss_bytes():
    """This process's peak resident memory, in bytes (None where it cannot be read).

    On Linux it is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` keeps
    the peak of the process before it ran this program, so a program started by a large
    one (a test run, an IDE) would report its parent's size.
    """
    peak = _proc_bytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:       # not on Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024     # macOS counts bytes, others kB


def format_bytes(n):
    """``"512 B"``, ``"3.1 MB"``, ``"2.5 TB"`` (powers of 1000); ``"3.3e+26 bytes"`` past petabytes."""
    size = n
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        text = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        if float(text.split()[0]) < 1000:       # as rounded: 999,960 bytes is 1.0 MB
            return text
        size /= 1000
    return f"{n:.1e} bytes"


# -- the checks VAE makes before it allocates -------------------------------------------
def check_model_fits(input_dim, hidden_dims, latent_dim, dtype):
    """Refuse a model whose parameters and gradients cannot fit in this machine's memory
    (rather than allocate until the operating system kills the process)."""
    n = parameter_count(input_dim, hidden_dims, latent_dim)
    need, room = 2 * n * dtype.itemsize, available_bytes()
    if need > (room if room is not None else np.iinfo(np.intp).max):
        raise InputError(f"VAE({input_dim}, hidden_dims={list(hidden_dims)}, latent_dim={latent_dim}) has "
                         f"{n:,} parameters, {format_bytes(need)} with their gradients, more than this "
                         f"machine can give ({'unknown' if room is None else format_bytes(room)}): "
                         f"choose smaller hidden_dims or latent_dim")


def check_rows_fit(model, rows, call):
    """Refuse to decode ``rows`` codes at once if this machine cannot hold what that takes."""
    widths = [model.latent_dim, *model.hidden_dims, model.input_dim]
    need = rows * np.dtype(model.dtype).itemsize * (widths[0] + 2 * sum(widths[1:]))   # z; each layer's out, twice
    room = available_bytes()
    if room is not None and need > room:
        raise InputError(f"{call} decodes {rows:,} codes at once, about {format_bytes(need)}, but "
                         f"{format_bytes(room)} is available: ask for fewer, in several calls")
