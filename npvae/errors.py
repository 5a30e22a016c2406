"""npvae's own exceptions.

Every error npvae raises on purpose is an :class:`NpvaeError`, and also the
built-in type that fits (``ValueError`` for a wrong value or shape, ``TypeError``
for a wrong type or dtype, ``OSError`` for a download), so ``except ValueError``
keeps working in code that does not know npvae.
"""


class NpvaeError(Exception):
    """Base class of every error npvae raises on purpose."""


class InputError(NpvaeError, ValueError):
    """An argument has the wrong shape, size or value (names the argument)."""


class InputTypeError(NpvaeError, TypeError):
    """An argument has the wrong type or dtype (names the argument)."""


class NoGeneratorError(InputTypeError, AttributeError):
    """``model.rng`` of a model whose sampler keeps no ``np.random.Generator`` (one of your own):
    also an ``AttributeError``, so that ``hasattr(model, "rng")`` is False, as Python asks."""


class StateError(NpvaeError, RuntimeError):
    """An object is used out of order, e.g. ``backward`` before ``forward``."""


class StateDictError(NpvaeError, ValueError):
    """A state dict does not match the module or optimizer it is loaded into."""


class DataFileError(NpvaeError, ValueError):
    """A data file (IDX, gzip) is malformed; the message names the file."""


class DatasetNotFoundError(NpvaeError, FileNotFoundError):
    """A data set's files are nowhere to be found and cannot be downloaded.

    Besides the message, what was searched, for a program to word its own advice:
    ``dataset`` (the canonical name), ``files`` (file names without ``.gz``),
    ``places`` (``(folder, where it comes from)`` pairs, in search order),
    ``data_dir`` (the folder given, or None) and ``download_error`` (why a
    download failed, or None if none was tried).
    """

    def __init__(self, message, *, dataset=None, files=(), places=(), data_dir=None, download_error=None):
        super().__init__(message)
        self.dataset, self.files, self.places = dataset, tuple(files), tuple(places)
        self.data_dir, self.download_error = data_dir, download_error


class DownloadError(NpvaeError, OSError):
    """A download failed (every mirror tried) or did not match its checksum."""


class CheckpointError(NpvaeError, ValueError):
    """A checkpoint file is missing, truncated, foreign or does not fit."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the path given: also a ``FileNotFoundError``, so that
    ``except FileNotFoundError:`` (start afresh) catches it, as it catches a missing data set."""


class DivergenceError(NpvaeError, FloatingPointError):
    """NaN or inf from a model that diverged. Raised by ``fit`` (a loss, a parameter or the
    optimizer's state that is not finite), the message names the epoch (and step) and ``history``
    is a History of the epochs completed; raised by ``save_checkpoint`` (a parameter or a state that
    is not finite), by evaluation or by an inference call (``model.sample``, say: codes or logits
    that overflow from finite parameters), ``history`` is None."""

    history = None


class RunFolderInUseError(NpvaeError, RuntimeError):
    """Another running process holds the lock of the run folder (the message names it)."""


class PixelScaleWarning(UserWarning):
    """uint8 images that hold only 0 and 1: uint8 means 0..255, so they train as black images.

    A class of its own so that a program that means it can silence just this warning, and so
    that ``fit`` warns once for each array it is given, not again in the steps it calls.
    """
