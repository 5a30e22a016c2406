"""Deprecated: moved to :mod:`npvae.data.idx` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import idx as _moved
from .data.idx import *  # noqa: F401,F403  (the public names, for dir() and tab completion)

warnings.warn("npvae.idx is deprecated: it moved to npvae.data.idx (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)
__all__ = _moved.__all__


def __getattr__(name):          # the module's other names, e.g. for code that reached into it
    return getattr(_moved, name)
