"""Deprecated: moved to :mod:`npvae.data.datasets` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import datasets as _moved

warnings.warn("npvae.datasets is deprecated: it moved to npvae.data.datasets (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
