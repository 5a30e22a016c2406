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


def _spell(name, flag):
    """How the user asks for back end ``name``: ``backend='numpy'``, or ``--backend numpy``."""
    return f"{flag} {name}" if flag else f"backend={name!r}"


def _choice(backend, resumed, flag):
    """``(name, chosen, source)``: the back end, how it was chosen (for messages) and what set it."""
    if backend is not None:
        return backend, _spell(backend, flag), flag or "backend"
    if resumed is not None:
        return resumed, f"the resumed run's back end, {resumed},", "the resumed run's backend"
    if ENV_VAR in os.environ:
        return os.environ[ENV_VAR], f"${ENV_VAR}={os.environ[ENV_VAR]}", ENV_VAR
    return "numba", "the default back end, numba,", "backend"


def resolve(backend=None, resumed=None, *, flag=None):
    """The back end to use: ``backend``; else ``resumed`` (the back end a resumed run was on: a
    resume keeps it unless told otherwise); else ``$NPVAE_BACKEND``; else ``"numba"``.
    ``flag``: the command-line option that sets it (``"--backend"``), for the messages."""
    name, chosen, source = _choice(backend, resumed, flag)
    if name not in BACKENDS:
        raise InputError(f"{source} must be one of {BACKENDS} (numpy: the plain reference; numba: the "
                         f"fast path), got {name!r}")
    if name == "numba" and importlib.util.find_spec("numba") is None:    # a checkout on sys.path, say
        raise InputError(f"{chosen} needs Numba, which this Python cannot import: install it (pip install "
                         f"numba), or use the plain reference, {_spell('numpy', flag)}"
                         + ("" if resumed is not None else f" (or {ENV_VAR}=numpy)"))
    return name


def describe(caller, backend=None, resumed=None):
    """``caller`` and how its back end was chosen, to begin a message: ``"fit(backend='numba')"``,
    ``"fit (on the default back end, numba)"``, ``"iw_nll (on $NPVAE_BACKEND=numba)"``."""
    if backend is not None:
        return f"{caller}(backend={backend!r})"
    return f"{caller} (on {_choice(None, resumed, None)[1].rstrip(',')})"
