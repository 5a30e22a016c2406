"""Deprecated: moved to :mod:`npvae.data.download` (``from npvae.data import ...`` works as before)."""
import warnings

from .data import download as _moved

warnings.warn("npvae.download is deprecated: it moved to npvae.data.download (or use from npvae.data import ...)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
