"""Finding and loading MNIST and Fashion-MNIST.

A data set is four IDX files, each gzip-compressed (``.gz``) or not::

    train-images-idx3-ubyte   train-labels-idx1-ubyte     (60,000 examples)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte      (10,000 examples)

Where the files are looked for, in this order (see :func:`search_path`):

1. ``data_dir``, if given: its subfolder ``<name>/``, then the folder itself.
   An explicit ``data_dir`` is a promise: if the files are not there, that is
   an error; no other place is searched and nothing is downloaded.
2. ``$NPVAE_DATA_DIR/<name>/``, then ``$NPVAE_DATA_DIR`` itself.
3. The user cache ``$XDG_CACHE_HOME/npvae/<name>`` (default
   ``~/.cache/npvae/<name>``). Downloads go here.
4. System folders from ``SYSTEM_DIRS``, e.g. Debian's package
   ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``.

A folder counts only if it holds all the files asked for. If none does and
``download=True``, the files are downloaded into the cache (see
:mod:`npvae.data.download`); otherwise :class:`~npvae.errors.DatasetNotFoundError`
lists what is missing, every place looked in, and where to put the files.
"""
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

from ..atomic import NO_ROOM_ERRNOS
from ..errors import DataFileError, DatasetNotFoundError, DownloadError, InputError, InputTypeError
from ..validate import check_folder_path, nearest_existing
from .download import TIMEOUT, check_timeout, download_dataset
from .idx import read_idx_header, read_images, read_labels
from .known import check_identity

__all__ = [
    "DATASETS", "ALIASES", "SPLITS", "ENV_VAR", "SYSTEM_DIRS", "IMAGE_SHAPE", "N_CLASSES", "Dataset",
    "canonical_name", "cache_dir", "search_path", "search_report", "locate",
    "load_idx_split", "load_idx_folder", "load_split", "load_dataset",
]

#: The data sets :func:`load_dataset` knows.
DATASETS = ("mnist", "fashion-mnist")

#: Accepted spellings -> canonical name (compared in lower case).
ALIASES = {"mnist": "mnist", "fashion-mnist": "fashion-mnist",
           "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist"}

#: Split name -> (images file, labels file), without the optional ``.gz``.
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Environment variable naming a folder that holds ``mnist/`` and ``fashion-mnist/``.
ENV_VAR = "NPVAE_DATA_DIR"

#: What a data set loaded by name holds: 28x28 images, labels 0..9 (checked on loading).
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

#: Folders installed by system packages, searched last (tests monkeypatch this).
SYSTEM_DIRS = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}


@dataclass(repr=False)
class Dataset:
    """A data set in memory: images stay ``uint8`` (N, 784), 4x smaller than float32.

    Attributes
    ----------
    name : str
        Canonical name, e.g. ``"mnist"``.
    train_images, test_images : numpy.ndarray
        ``uint8`` arrays of shape (N, rows*cols), one flattened image per row.
    train_labels, test_labels : numpy.ndarray
        ``uint8`` arrays of shape (N,).
    source : str
        The folder the files were read from.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __repr__(self):
        # The default repr would print the arrays; shapes are what one wants.
        return (f"Dataset(name={self.name!r}, train={self.train_images.shape}, "
                f"test={self.test_images.shape}, source={self.source!r})")


def canonical_name(name):
    """Return the canonical data set name for ``name`` or an alias of it.

    Raises
    ------
    InputTypeError
        If ``name`` is not a string.
    InputError
        If ``name`` is unknown; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise InputTypeError(f"name must be a string such as 'mnist', got {type(name).__name__}")
    key = name.strip().lower()
    if key == "mnist-test-split":       # train_mnist.py's --dataset, made of the MNIST test files
        raise InputError("'mnist-test-split' is train_mnist.py's split of the MNIST test set, not a data set "
                         "name; in Python: split(*load_split('mnist', 't10k', data_dir=DIR), 8000) from "
                         "npvae.data gives its ((train, labels), (test, labels))")
    if key not in ALIASES:
        raise InputError(f"unknown data set name {name!r}; expected one of: {', '.join(ALIASES)}")
    return ALIASES[key]


def cache_dir(name):
    """The user cache folder for data set ``name``: ``$XDG_CACHE_HOME/npvae/<name>``.

    Falls back to ``~/.cache`` when ``XDG_CACHE_HOME`` is unset or not an
    absolute path (the XDG spec says to ignore relative ones). A ``HOME`` that is empty
    or relative (a cron job's, a service's) is passed over for the user's home in the
    password database (else the temporary folder): the cache is never relative to the
    current folder, nor ``/.cache``. On Windows, without ``HOME`` (cmd.exe and PowerShell set
    none), ``~`` is ``%USERPROFILE%``, as ``os.path.expanduser`` has it.

    Parameters
    ----------
    name : str
        A data set name or an alias (:func:`canonical_name`).

    Returns
    -------
    str
        An absolute path, ending in the canonical name; the folder is not created.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(_home(), ".cache")
    return os.path.join(base, "npvae", canonical_name(name))


def _home():
    """The home folder, absolute: ``HOME`` if it is, else the password database's entry (on
    Windows ``%USERPROFILE%``), else (a container's user with neither) the temporary folder."""
    home = os.environ.get("HOME")
    if home is not None and os.path.isabs(home):
        return home
    if os.name == "nt":
        home = os.path.expanduser("~")      # USERPROFILE, else HOMEDRIVE and HOMEPATH
    else:
        try:
            import pwd          # only here: not on every platform, and rarely needed
            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):     # no such module, or no entry for this user
            home = None
    return home if home and os.path.isabs(home) else tempfile.gettempdir()


def search_path(name, data_dir=None):
    """The folders searched for data set ``name``, in order.

    Returns
    -------
    list of (str, str)
        ``(folder, where_it_comes_from)`` pairs. With ``data_dir`` only
        ``data_dir/<name>`` and ``data_dir`` are searched.
    """
    name = canonical_name(name)
    if data_dir is not None:
        data_dir = check_folder_path(data_dir, "data_dir")
        return [(os.path.join(data_dir, name), f"data_dir/{name}"), (data_dir, "data_dir")]
    places = []
    env = os.path.expanduser(os.environ.get(ENV_VAR, ""))
    if env:
        places.append((os.path.join(env, name), f"${ENV_VAR}/{name}"))
        places.append((env, f"${ENV_VAR}"))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    ignored = f"; $XDG_CACHE_HOME={xdg} ignored: not an absolute path" if xdg and not os.path.isabs(xdg) else ""
    places.append((cache_dir(name), "user cache" + ignored))
    places.extend((folder, "system folder") for folder in SYSTEM_DIRS.get(name, ()))
    return places


def _check_flag(value, name):
    if not isinstance(value, bool):
        raise InputTypeError(f"{name} must be True or False, got {value!r}")
    return value


def _find(folder, stem):
    """Path of ``stem.gz`` or ``stem`` in ``folder`` (the .gz wins), or None."""
    for file in (stem + ".gz", stem):
        path = os.path.join(folder, file)
        if os.path.isfile(path):
            return path
    return None


def _missing(folder, stems):
    return [s for s in stems if _find(folder, s) is None]


def _folder_problem(folder):
    """Why ``folder`` cannot be searched (what the system said), or None if it can."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return "a link to nothing" if os.path.islink(folder) else "folder does not exist"
    except OSError as e:            # permission denied on a parent, a link loop, a name too long
        return f"cannot look into it: {e.strerror}"
    except UnicodeEncodeError:      # e.g. a name recorded in a UTF-8 locale, read with PYTHONUTF8=0 LC_ALL=C
        return (f"its name cannot be spelled in this locale's encoding of file names "
                f"({sys.getfilesystemencoding()}): run in a UTF-8 locale")
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return "cannot look into it: permission denied"
    return None


def _what_is_there(path):
    """For a name that is not a readable file: what is there instead, or None if nothing."""
    if not os.path.lexists(path):
        return None
    if os.path.islink(path) and not os.path.exists(path):
        return "a link to nothing"
    return "a folder" if os.path.isdir(path) else "not a regular file"


def _missing_report(folder, stems, name=None):
    """``missing A[.gz], B[.gz]``, saying what stands in a file's place where something does,
    a file there under another spelling, or a subfolder that holds them all (not one named
    after a data set other than ``name``: MNIST and Fashion-MNIST share the file names)."""
    try:
        listing = sorted(os.listdir(folder))
    except OSError:
        listing = []
    parts = []
    missing = _missing(folder, stems)
    for stem in missing:
        found = [f"{file} is {what}" for file in (stem + ".gz", stem)
                 if (what := _what_is_there(os.path.join(folder, file)))]
        if not found:
            found = [f"{file} is there: rename it {stem}" + (".gz" if file.lower().endswith("gz") else "")
                     for file in listing if _spelled_otherwise(folder, file, stem)][:1]
        parts.append(stem + "[.gz]" + (f" ({'; '.join(found)})" if found else ""))
    below = [sub for sub in _subfolders(folder, listing, name) if not _missing(sub, stems)] \
        if len(missing) == len(stems) else []
    where = (f"; they are in {below[0]}: point there" if len(below) == 1 else
             f"; they are in {' and in '.join(below)}: point at the one you mean" if below else "")
    return "missing " + ", ".join(parts) + where


def _spelled_otherwise(folder, file, stem):
    """``file``, a file in ``folder``, is ``stem`` or ``stem.gz`` but for case and ``.``/``_``
    for ``-`` (Kaggle's ``t10k-images.idx3-ubyte``, upper-case names, ``.GZ``)."""
    key = file.lower().replace(".", "-").replace("_", "-")
    return (key in (stem, stem + "-gz") and file not in (stem, stem + ".gz")
            and os.path.isfile(os.path.join(folder, file)))


# Folder names of the data sets, as others spell them (torchvision: MNIST, FashionMNIST)
_FOLDER_NAMES = {"mnist": "mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}


def _subfolders(folder, listing, name=None):
    """Where else the files often are: each subfolder, and its ``raw/`` (torchvision's
    ``MNIST/raw``), but not one named after a data set other than ``name`` (with no ``name``,
    as for ``load_idx_folder``, every subfolder)."""
    for entry in listing[:100]:
        other = _FOLDER_NAMES.get(entry.lower().replace("-", "").replace("_", ""), name)
        sub = os.path.join(folder, entry)
        if (name is None or other == name) and os.path.isdir(sub):     # no name: any is a candidate
            yield sub
            yield os.path.join(sub, "raw")


def _split_files(split):
    if not isinstance(split, str):
        raise InputTypeError(f"split must be 'train', 't10k' or 'test' (a string), got {type(split).__name__}")
    if split == "test":
        split = "t10k"
    if split not in SPLITS:
        raise InputError(f"split must be one of 'train', 't10k' (or 'test'), got {split!r}")
    return SPLITS[split]


def load_idx_split(folder, split):
    """Load one split from ``folder``: ``(images, labels)``.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder holding the split's two IDX files (``.gz`` or not).
    split : {"train", "t10k", "test"}
        ``"test"`` is another name for ``"t10k"``.

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape (N, rows*cols).
    labels : numpy.ndarray
        ``uint8``, shape (N,).

    Raises
    ------
    DatasetNotFoundError
        If a file is missing (the message names it).
    DataFileError
        If a file is malformed, or the image and label counts differ (the
        message names both files).
    """
    folder = check_folder_path(folder, "folder")
    img_stem, lab_stem = _split_files(split)
    missing = _missing(folder, (img_stem, lab_stem))
    if missing:
        raise DatasetNotFoundError(
            f"{folder}: {_folder_problem(folder) or _missing_report(folder, missing)}", files=missing,
            places=[(folder, "folder")])
    img_path, lab_path = _find(folder, img_stem), _find(folder, lab_stem)
    images, labels = read_images(img_path), read_labels(lab_path)
    if len(images) != len(labels):
        raise DataFileError(f"{img_path} holds {len(images)} images but {lab_path} holds "
                            f"{len(labels)} labels; they must match")
    return images, labels


def _load_named(name, folder, split):
    """:func:`_read_named`; a broken file in the download cache gets a note on how to replace it."""
    try:
        return _read_named(name, folder, split)
    except DataFileError as e:
        if os.path.abspath(folder) == os.path.abspath(cache_dir(name)):
            e.add_note(f"The file is in npvae's download cache ({folder}): delete it, and npvae "
                       f"downloads it again the next time it looks for {name} (online).")
        raise


def _read_named(name, folder, split):
    """``load_idx_split``, for a data set loaded by name: its files must hold what that data set holds.

    The headers are checked first (28x28 images, one label per image), before a
    pixel is read; then that the images and the labels are not another known data set's
    (:mod:`npvae.data.known`), then the labels (0..9). A wrong file surfaces here,
    not in a figure after the training.
    """
    images_file, labels_file = (_find(folder, stem) for stem in _split_files(split))
    if images_file is not None and labels_file is not None:
        _, shape = read_idx_header(images_file)
        if len(shape) != 3 or shape[1:] != IMAGE_SHAPE:
            got = "x".join(map(str, shape[1:])) if len(shape) == 3 else f"shape {shape}"
            raise DataFileError(f"{images_file} holds images of {got} pixels, but {name} images are "
                                f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}: is this the {name} file?")
    images, labels = load_idx_split(folder, split)
    split = "t10k" if split == "test" else split        # (checked by load_idx_split above)
    check_identity(name, images, images_file, split=split)
    check_identity(name, labels, labels_file, what="labels", split=split)
    if labels.size and labels.max() >= N_CLASSES:
        i = int(np.argmax(labels >= N_CLASSES))
        raise DataFileError(f"{labels_file}: label {labels[i]} at index {i}, but {name} labels are "
                            f"0..{N_CLASSES - 1}: is this the {name} file?")
    return images, labels


def load_idx_folder(folder, name=None):
    """Load a folder holding the four standard IDX files as a :class:`Dataset`.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder; files may be gzip-compressed or not.
    name : str, optional
        Stored in ``Dataset.name``; defaults to the folder's name.

    Returns
    -------
    Dataset
        Its ``source`` is the folder's absolute path.
    """
    folder = os.path.abspath(check_folder_path(folder, "folder"))
    missing = _missing(folder, SPLITS["train"] + SPLITS["t10k"])
    if missing:
        raise DatasetNotFoundError(
            f"{folder}: {_folder_problem(folder) or _missing_report(folder, missing)}", files=missing,
            places=[(folder, "folder")])
    train_images, train_labels = load_idx_split(folder, "train")
    test_images, test_labels = load_idx_split(folder, "t10k")
    return Dataset(name or os.path.basename(folder), train_images, train_labels,
                   test_images, test_labels, folder)


def locate(name, split=None, data_dir=None, download=True, progress=True, timeout=TIMEOUT):
    """The folder holding data set ``name`` (one ``split``, or all four files), downloading if allowed.

    Nothing is read beyond the folder listings.

    Parameters
    ----------
    name, split, data_dir, download, progress, timeout
        As for :func:`load_split`; ``split=None`` (the default): the whole data set, as :func:`load_dataset`.

    Returns
    -------
    str
        The first folder of :func:`search_path` that holds the files, else the cache after a download.

    Raises
    ------
    DatasetNotFoundError
        As :func:`load_dataset`; its attributes say what was searched.
    """
    return _checked_locate(name, split, data_dir, download, progress, timeout)


def _checked_locate(name, split, data_dir, download, progress, timeout):
    """:func:`locate` for every public entry, so each is the same number of calls from the warning."""
    name = canonical_name(name)
    stems = SPLITS["train"] + SPLITS["t10k"] if split is None else _split_files(split)
    if data_dir is not None:
        data_dir = check_folder_path(data_dir, "data_dir")
    _check_flag(download, "download")
    _check_flag(progress, "progress")
    timeout = check_timeout(timeout)    # here too, so a bad one is refused when nothing downloads
    return _locate(name, stems, data_dir, download, progress, timeout)


def _locate(name, stems, data_dir, download, progress, timeout):
    """First folder holding all ``stems``, downloading into the cache if allowed."""
    places = search_path(name, data_dir)
    for folder, _ in places:
        if not _missing(folder, stems):
            if data_dir is None:
                _warn_if_env_unusable(name, folder)
            return folder
    failure = None
    if data_dir is None and download:
        dest = cache_dir(name)
        try:
            download_dataset(name, dest, files=[s + ".gz" for s in _missing(dest, stems)],
                             progress=progress, timeout=timeout)
            _warn_if_env_unusable(name, dest, downloaded=True)
            return dest
        except OSError as e:     # DownloadError, or the cache cannot be written
            failure = e
    raise DatasetNotFoundError(_not_found_message(name, stems, places, data_dir, download, failure),
                               dataset=name, files=stems, places=places, data_dir=data_dir,
                               download_error=failure) from failure


def _warn_if_env_unusable(name, used, downloaded=False):
    """A ``$NPVAE_DATA_DIR`` that names no usable folder (a typo?) is said, not silently passed over.

    (One that exists but holds other data sets is normal: it is then passed over quietly.)
    """
    env = os.environ.get(ENV_VAR, "")
    problem = env and _folder_problem(os.path.expanduser(env))
    if problem:
        instead = f"downloaded {name} into {used}" if downloaded else f"using {name} from {used}"
        warnings.warn(f"${ENV_VAR}={env}: {problem}; {instead} instead", UserWarning,
                      stacklevel=5)     # the user's line: past here, _locate, _checked_locate, a public entry


def search_report(stems, places, name=None):
    """Lines saying, for each ``(folder, origin)`` of ``places``, why it did not do (for data
    set ``name``, if given: a subfolder named after the other data set is not pointed at)."""
    lines = []
    for i, (folder, origin) in enumerate(places, 1):
        why = _folder_problem(folder) or _missing_report(folder, stems, name)
        lines.append(f"  {i}. {folder} ({origin}): {why}")
    return lines


def _not_found_message(name, stems, places, data_dir, download, failure):
    lines = [f"cannot find the {name} files {', '.join(s + '[.gz]' for s in stems)}.",
             "Looked in, in this order:", *search_report(stems, places, name)]
    if data_dir is None and not os.environ.get(ENV_VAR):
        lines.append(f"  (${ENV_VAR} is not set.)")
    if data_dir is not None:
        lines.append("data_dir was given, so no other place was searched and nothing was downloaded.")
        given = places[1][0]
        where = (f"give data_dir as the folder that holds the files (gzip-compressed or not), not "
                 f"{given}" if os.path.exists(given) and not os.path.isdir(given) else
                 f"put the files (gzip-compressed or not) in {places[0][0]} or {given}")
        lines.append(f"To fix: {where}, or leave out data_dir to use ${ENV_VAR}, the cache and downloading.")
        return "\n".join(lines)
    if failure is None:
        lines.append("Downloading is switched off (download=False).")
    elif isinstance(failure, DownloadError):
        lines.append(f"Downloading failed: {failure}")
    else:
        lines.append(cache_unwritable(name, failure))
    blocker = _file_in_the_way(cache_dir(name)) if failure is not None else None
    lines.append("To fix: " + (f"put the files (gzip-compressed or not) in {cache_dir(name)}, or "
                               if blocker is None else "") +
                 f"put them in FOLDER/{name} and set {ENV_VAR}=FOLDER, or pass data_dir=...; "
                 + ("or pass download=True." if failure is None else
                    "or try again when online." if isinstance(failure, DownloadError) else
                    cache_fix(name, failure)))
    return "\n".join(lines)


def _file_in_the_way(folder):
    """The file that stands where ``folder`` or one of its parents goes, or None."""
    path = nearest_existing(folder)
    return None if os.path.isdir(path) else path


def cache_unwritable(name, error):
    """The line saying that a download could not be written into the cache, and why."""
    if error.errno in NO_ROOM_ERRNOS:
        return f"Downloading stopped: no room to write {error.filename or 'into ' + cache_dir(name)}: {error.strerror}."
    blocker = _file_in_the_way(cache_dir(name))
    if blocker is not None:
        return (f"Nothing was downloaded: the cache folder {cache_dir(name)} cannot be made: {blocker} is a "
                f"file, not a folder.")
    return (f"Nothing was downloaded: cannot write into the cache folder {cache_dir(name)}: "
            f"{error.strerror or error}.")


def cache_fix(name, error):
    """What to do about :func:`cache_unwritable`'s ``error``, to end a "To fix:" line."""
    if error.errno in NO_ROOM_ERRNOS:
        return (f"or make room for them in {cache_dir(name)} (free some space, or raise the file-size "
                f"limit: ulimit -f) and run again.")
    blocker = _file_in_the_way(cache_dir(name))
    if blocker is not None:
        return f"or remove or rename the file {blocker}, or set XDG_CACHE_HOME to a folder you can write."
    return "or set XDG_CACHE_HOME to a folder you can write."


def load_split(name, split="t10k", data_dir=None, download=True, progress=True, timeout=TIMEOUT):
    """Find (or download) and load one split of a data set: ``(images, labels)``.

    Needs only that split's two files, so it works where only the MNIST test
    set is available; split it further with :func:`npvae.data.split`.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"`` or an alias (``"fashion_mnist"``, ``"fmnist"``).
    split : {"train", "t10k", "test"}
    data_dir, download, progress, timeout
        As for :func:`load_dataset`.

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape (N, 784).
    labels : numpy.ndarray
        ``uint8``, shape (N,).

    Raises
    ------
    InputError
        An unknown data set name or split.
    DatasetNotFoundError
        The split's files are nowhere to be found (and could not be downloaded).
    DataFileError
        A file is malformed, or does not hold what the data set holds (28x28
        images, labels 0..9).
    """
    name = canonical_name(name)
    _split_files(split)         # refused now: None would mean all four files to _checked_locate
    return _load_named(name, _checked_locate(name, split, data_dir, download, progress, timeout), split)


def load_dataset(name, data_dir=None, download=True, progress=True, timeout=TIMEOUT):
    """Find (or download) and load a whole data set.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"`` or an alias (``"fashion_mnist"``, ``"fmnist"``).
    data_dir : str or os.PathLike, optional
        Folder holding the four files, or holding a ``<name>/`` subfolder
        with them. If given, only this folder is searched and nothing is
        downloaded: missing files there are an error.
    download : bool
        Download into the user cache if the files are nowhere to be found.
    progress : bool
        Show download progress on stderr: a bar on a terminal or in a notebook, elsewhere (a
        log) a plain line every ``LOG_EVERY`` seconds (:mod:`npvae.data.download`).
    timeout : float or None
        For a download: seconds to wait for a mirror to answer, and to send each
        64 KiB, before the next mirror is tried (as :func:`download_dataset`;
        ``None`` waits as long as it takes).

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        Unknown ``name``.
    DatasetNotFoundError
        The files are not found and could not be downloaded; the message
        lists the missing files, the places looked in and where to put them.
    DataFileError
        A file is malformed, or does not hold what the data set holds (28x28
        images, labels 0..9).
    """
    name = canonical_name(name)
    folder = _checked_locate(name, None, data_dir, download, progress, timeout)
    train_images, train_labels = _load_named(name, folder, "train")
    test_images, test_labels = _load_named(name, folder, "t10k")
    return Dataset(name, train_images, train_labels, test_images, test_labels, os.path.abspath(folder))
