"""Kernel back ends: ``"numba"`` (the fast path) and ``"numpy"`` (the reference).

Both modules define the same functions with the same signatures; a layer asks
:func:`get` for one and calls through it. The choice, in order: the ``backend``
argument a layer or model was built with, else the ``NPVAE_BACKEND`` environment
variable, else ``"numba"``. Numba is imported only when first asked for, so
``import npvae`` stays quick and compiles nothing; the first time, a cold kernel
cache is filled by a child process (:mod:`npvae.kernels.precompile`).
"""
import importlib
import os

from ..errors import InputError

BACKENDS = ("numba", "numpy")
_loaded = {}


def resolve(backend=None):
    """The back end name to use: the argument, else $NPVAE_BACKEND, else 'numba'."""
    name = backend if backend is not None else os.environ.get("NPVAE_BACKEND", "numba")
    if name not in BACKENDS:
        source = "backend" if backend is not None else "NPVAE_BACKEND"
        raise InputError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name


def get(backend=None):
    """The kernel module for ``backend`` (see :func:`resolve`), imported on first use."""
    name = resolve(backend)
    if name not in _loaded:
        if name == "numba":
            from .startup import preload_cython_blas
            preload_cython_blas()  # before Numba starts: 0.2 s less (see npvae.kernels.startup)
        module = importlib.import_module(f".{name}_kernels", __name__)
        if name == "numba":
            from .precompile import ensure_compiled
            ensure_compiled()  # a cold kernel cache is filled by a child process
        _loaded[name] = module
    return _loaded[name]
