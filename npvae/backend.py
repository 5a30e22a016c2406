"""The one switch between the two paths: ``"numpy"`` (the reference) or ``"numba"`` (the fast path).

``fit`` and the evaluation functions take ``backend=``; None means the
``NPVAE_BACKEND`` environment variable, else ``"numba"``. Models, layers and
optimizers know nothing of it: they are the reference, and the fast path
(:mod:`npvae.fast`) reads them and writes back into them.
"""
import importlib.util
import os

from .errors import InputError

BACKENDS = ("numba", "numpy")
ENV_VAR = "NPVAE_BACKEND"


def resolve(backend=None):
    """The back end to use: ``backend``, else ``$NPVAE_BACKEND``, else ``"numba"``."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "numba")
    if name not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise InputError(f"{source} must be one of {BACKENDS} (numpy: the plain reference; numba: the "
                         f"fast path), got {name!r}")
    if name == "numba" and importlib.util.find_spec("numba") is None:    # a checkout on sys.path, say
        chosen = (f"backend={name!r}" if backend is not None else f"${ENV_VAR}={name}"
                  if ENV_VAR in os.environ else "the default back end, numba,")
        raise InputError(f"{chosen} needs Numba, which this Python cannot import: install it (pip install "
                         "numba), or use the plain reference, backend='numpy' (or NPVAE_BACKEND=numpy)")
    return name
