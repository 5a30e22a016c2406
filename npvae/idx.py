"""Deprecated: moved to :mod:`npvae.data.idx` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import idx as _moved

warnings.warn("npvae.idx is deprecated: it moved to npvae.data.idx (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
