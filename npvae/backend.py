"""The one switch between the two paths: ``"numpy"`` (the reference) or ``"numba"`` (the fast path).

``fit`` and the evaluation functions take ``backend=``; None means the
``NPVAE_BACKEND`` environment variable, else ``"numba"`` (a resumed run keeps the back end it
was on: ``fit(..., resume=)`` passes it as ``resumed``). Models, layers and
optimizers know nothing of it: they are the reference, and the fast path
(:mod:`npvae.fast`) reads them and writes back into them.
"""
import importlib.util
import os

from .errors import InputError

BACKENDS = ("numba", "numpy")
ENV_VAR = "NPVAE_BACKEND"


def resolve(backend=None, resumed=None, *, flag=None):
    """The back end to use: ``backend``; else ``resumed`` (the back end a resumed run was on: a
    resume keeps it unless told otherwise); else ``$NPVAE_BACKEND``; else ``"numba"``.
    ``flag``: the command-line option that sets it (``"--backend"``), for the messages."""
    spell = (lambda name: f"{flag} {name}") if flag else (lambda name: f"backend={name!r}")
    if backend is not None:
        name, chosen, source = backend, spell(backend), flag or "backend"
    elif resumed is not None:
        name, chosen, source = resumed, f"the resumed run's back end, {resumed},", "the resumed run's backend"
    elif ENV_VAR in os.environ:
        name, chosen, source = os.environ[ENV_VAR], f"${ENV_VAR}={os.environ[ENV_VAR]}", ENV_VAR
    else:
        name, chosen, source = "numba", "the default back end, numba,", "backend"
    if name not in BACKENDS:
        raise InputError(f"{source} must be one of {BACKENDS} (numpy: the plain reference; numba: the "
                         f"fast path), got {name!r}")
    if name == "numba" and importlib.util.find_spec("numba") is None:    # a checkout on sys.path, say
        raise InputError(f"{chosen} needs Numba, which this Python cannot import: install it (pip install "
                         f"numba), or use the plain reference, {spell('numpy')}"
                         + ("" if resumed is not None else f" (or {ENV_VAR}=numpy)"))
    return name
