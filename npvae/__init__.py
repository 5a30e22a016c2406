"""npvae: a variational autoencoder in NumPy, every gradient derived and written by hand.

The reference (``module``, ``layers``, ``sampler``, ``losses``, ``model``, ``optim``) is
plain NumPy and defines what is correct; the fast path (:mod:`npvae.fast`) computes the
same with Numba and is chosen with ``fit(..., backend=)`` and the evaluation functions.
Importing npvae is cheap: Numba is loaded when the fast path is first used, matplotlib
only when a figure is drawn.
"""
import warnings as _warnings
from importlib import import_module as _import_module

from .errors import (CheckpointError, CheckpointNotFoundError, DataFileError, DatasetNotFoundError,
                     DivergenceError, DownloadError, InputError, InputTypeError, NpvaeError,
                     PixelScaleWarning, StateDictError, StateError)
from .layers import Dense, ReLU, Sequential, Sigmoid
from .losses import BCE, KL, BCEWithLogits
from .model import VAE, LossParts
from .module import Module, Parameter
from .optim import SGD, Adam
from .sampler import Sampler
from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from .evaluate import evaluate_elbo, iw_nll
from .train import History, TrainingInterrupted, fit
from . import interop  # npvae.interop: weights to and from PyTorch (no torch import)
from . import plots    # npvae.plots: the figures (matplotlib is imported when one is drawn)

__version__ = "0.1.0"


def __getattr__(name):
    """``npvae.fast`` after a plain ``import npvae``: imported on first use, as it loads Numba.
    ``npvae.datasets``, ``.idx``, ``.download`` (deprecated): moved to :mod:`npvae.data`."""
    if name == "fast":
        return _import_module(".fast", __name__)
    if name in ("datasets", "idx", "download"):    # an older npvae imported them with npvae
        _warnings.warn(f"npvae.{name} is deprecated: it moved to npvae.data.{name} (or use from npvae.data "
                       f"import ...)", DeprecationWarning, stacklevel=2)
        return _import_module(f".data.{name}", __name__)
    raise AttributeError(f"module 'npvae' has no attribute {name!r}")

__all__ = [
    "VAE", "LossParts", "Dense", "ReLU", "Sigmoid", "Sequential", "Sampler", "KL", "BCE", "BCEWithLogits",
    "Module", "Parameter", "Adam", "SGD", "fit", "History", "TrainingInterrupted", "evaluate_elbo", "iw_nll",
    "save_checkpoint", "load_checkpoint", "load_model", "Checkpoint", "interop", "plots",
    "NpvaeError", "InputError", "InputTypeError", "StateError", "StateDictError", "DataFileError",
    "DatasetNotFoundError", "DownloadError", "CheckpointError", "CheckpointNotFoundError", "DivergenceError",
    "PixelScaleWarning",
]
