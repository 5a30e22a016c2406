"""Deprecated: moved to :mod:`npvae.data.download` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import download as _moved
from .data.download import *  # noqa: F401,F403  (the public names, for dir() and tab completion)

warnings.warn("npvae.download is deprecated: it moved to npvae.data.download (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)
__all__ = _moved.__all__


def __getattr__(name):          # the module's other names, e.g. for code that reached into it
    return getattr(_moved, name)
