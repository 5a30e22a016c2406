"""Deprecated: moved to :mod:`npvae.data.datasets` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import datasets as _moved
from .data.datasets import *  # noqa: F401,F403  (the public names, for dir() and tab completion)

warnings.warn("npvae.datasets is deprecated: it moved to npvae.data.datasets (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)
__all__ = _moved.__all__


def __getattr__(name):          # the module's other names, e.g. for code that reached into it
    return getattr(_moved, name)
