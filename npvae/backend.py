"""The one switch between the two paths: ``"numpy"`` (the reference) or ``"numba"`` (the fast path).

``fit`` and the evaluation functions take ``backend=``; None means the
``NPVAE_BACKEND`` environment variable, else ``"numba"``. Models, layers and
optimizers know nothing of it: they are the reference, and the fast path
(:mod:`npvae.fast`) reads them and writes back into them.
"""
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
    return name
