"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or kill at any moment leaves either the old file or the new one at
``path``, never a half-written one, because ``os.replace`` within one folder
(one file system) is atomic on POSIX and Windows.

The temporary file is ``.<name>.<8 random characters>.tmp`` next to ``path``,
removed on any exception (Ctrl-C included). Only a process that is killed
outright (``kill -9``, a power cut) can leave one behind;
:func:`sweep_temporary_files` removes those (a run folder does it under its
lock, :mod:`npvae.runfolder`).
"""
import contextlib
import errno
import os
import re
import stat
import tempfile
import time

from .errors import InputError, InputTypeError, NpvaeError

__all__ = ["atomic_write", "append_line", "check_regular_file", "sweep_temporary_files", "default_file_mode",
           "TEMP_SUFFIX", "LONGEST_NAME", "NO_ROOM_ERRNOS", "check_name_length", "check_replaceable",
           "rename_into_place"]

TEMP_SUFFIX = ".tmp"
# what tempfile.mkstemp(prefix="." + name + ".", suffix=TEMP_SUFFIX) makes: 8 characters of [a-z0-9_]
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")
NAME_MAX = 255      # the longest file name (bytes) of the usual file systems
#: The longest name of a file written here: it is first written as ``.<name>.<8 characters>.tmp``.
LONGEST_NAME = NAME_MAX - len("..12345678" + TEMP_SUFFIX)
# a write that failed for want of room: a full disk, a file-size limit (ulimit -f), a quota
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def check_name_length(path):
    """Refuse a file name too long to be written atomically (its temporary name is 14 bytes longer)."""
    n = len(os.fsencode(os.path.basename(os.fspath(path))))
    if n > LONGEST_NAME:
        raise InputError(f"the file name is too long ({n} bytes; at most {LONGEST_NAME}); choose a shorter one")


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    An ``OSError`` raised while writing (a full disk, say) names ``path``. A
    symbolic link is written through: its target gets the new content, the link stays.

    Raises
    ------
    InputError
        If ``path`` is an existing folder, or anything else that is not a regular file
        (a pipe, a device such as ``/dev/null``, a socket): renaming onto it would replace it.

    Examples
    --------
    >>> with atomic_write("out.json", "w") as f:   # doctest: +SKIP
    ...     f.write("{}")
    """
    path = os.fspath(path)
    if not isinstance(path, str):           # bytes: the temporary file's name is made as a str
        raise InputTypeError(f"path must be a str or a pathlib.Path, got bytes {path!r}: os.fsdecode(path) "
                             f"makes a str of it")
    check_regular_file(path)
    target = os.path.realpath(path)         # a link is followed, not replaced by a file
    check_replaceable(target, path)
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):   # a file where a folder of the path goes
        raise InputError(f"cannot write {path}: a file stands where a folder of that path goes") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".", suffix=TEMP_SUFFIX)
    except OSError as e:                    # a read-only folder, say: name the file asked for
        raise OSError(e.errno, e.strerror, path) from e
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode(target))  # mkstemp makes 0600; give the usual mode
        rename_into_place(tmp, target, path)
    except OSError as e:
        _remove(tmp)
        if e.filename in (None, tmp) and e.errno is not None and not isinstance(e, NpvaeError):   # name the file
            raise OSError(e.errno, e.strerror, path) from e
        raise
    except BaseException:
        _remove(tmp)
        raise


def check_regular_file(path):
    """``path`` is a regular file (or a link to one) or does not exist yet; else an ``InputError``
    (also for an empty path, and one that names a folder by its form: ``out/``, ``out/.``)."""
    text = os.fsdecode(path)
    if not text:
        raise InputError("cannot write to an empty path: give a file path")
    if os.path.basename(text) in ("", ".", ".."):     # realpath would make "out/" or "out/." the file "out"
        raise InputError(f"cannot write {text}: that names a folder, not a file; give a file path")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:                    # a loop of links, no permission to look, ...
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot write {path}: it is a folder; give a file path")
    if not stat.S_ISREG(mode):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise InputError(f"cannot write {path}: it is {kind}, not a regular file; writing a file "
                         f"atomically would replace it: give a file path")


def check_replaceable(target, path=None):
    """On Windows, refuse to write over a read-only file (its read-only attribute set): Windows
    replaces none, and a temporary file given its mode could not be removed either. Elsewhere
    a rename replaces a file whatever its mode, as ``mv`` does."""
    if os.name != "nt":
        return
    try:
        mode = os.stat(target).st_mode
    except OSError:                         # not there yet (or not to be looked at: the write will say)
        return
    if not mode & stat.S_IWRITE:
        raise PermissionError(errno.EACCES, "the file is read-only, and Windows replaces no read-only file: "
                              "clear its read-only attribute (attrib -r, or its Properties) or give another "
                              "path", target if path is None else path)


# On Windows a file that is open cannot be replaced, and a virus scanner, an indexer or a sync
# client opens a new file for a moment: the rename is tried again for about a second first.
_WINDOWS_RETRY_WAITS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.25)


def rename_into_place(tmp, target, path=None):
    """``os.replace(tmp, target)``; on Windows tried again for about a second, then an error that
    names ``path`` (else ``target``) and says what holds it."""
    for wait in _WINDOWS_RETRY_WAITS if os.name == "nt" else ():
        try:
            os.replace(tmp, target)
            return
        except PermissionError:
            time.sleep(wait)
    try:
        os.replace(tmp, target)
    except PermissionError as e:
        if os.name != "nt":
            raise
        raise PermissionError(e.errno, f"{e.strerror} (on Windows a file that another program or a notebook "
                              f"holds open, an np.load left open say, cannot be replaced: close it there and "
                              f"try again)", target if path is None else path) from e


def _remove(path):
    """Remove ``path`` if it is there (on Windows, a read-only file too: its attribute is cleared first)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        if os.name != "nt" or os.stat(path).st_mode & stat.S_IWRITE:
            raise
        os.chmod(path, stat.S_IWRITE)
        os.remove(path)


def default_file_mode(path):
    """An existing file's mode, else 0666 less the umask (what open() would give).

    For a file made with :func:`tempfile.mkstemp` (mode 0600) before it is renamed into place.
    """
    try:                                    # (readable by its owner, whose file it stays)
        return os.stat(path).st_mode & 0o777 | stat.S_IRUSR
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without setting it where Linux says it (``/proc/self/status``).

    Setting it, even back at once, is seen by every thread: a file another thread makes in
    that instant gets the mode set. Where it must be set to be read, it is set to 077, so
    such a file is private rather than writable by all.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def append_line(path, line):
    """Append one line to a text file atomically (rewrite to a temp, then rename).

    Used for ``metrics.jsonl``: small files, so rewriting is cheap and a crash
    never leaves a torn last line.
    """
    check_regular_file(path)                # reading a pipe would wait for a writer
    old = ""
    if os.path.exists(path):
        with open(path, "r", encoding="utf-8") as f:
            old = f.read()
    with atomic_write(path, "w") as f:
        f.write(old + line.rstrip("\n") + "\n")


def sweep_temporary_files(folder, names=None):
    """Remove the temporary files :func:`atomic_write` left in ``folder``; return their names.

    With ``names`` (a list of file names), only those of files so named
    (``.<name>.<8 characters>.tmp``): a folder the user chose may hold files of that shape that
    are not ours.

    Only safe when no other process is writing into ``folder`` (e.g. under a
    run folder's lock): a live writer's temporary file looks the same.
    """
    if not isinstance(folder, (str, os.PathLike)) or not isinstance(os.fspath(folder), str):
        # (an int would be a file descriptor: its folder listed, the names removed from the current one)
        raise InputTypeError(f"folder must be a str or a pathlib.Path, got {type(folder).__name__} {folder!r}")
    if isinstance(names, (str, bytes, os.PathLike)):
        raise InputTypeError(f"names must be a list of file names, got one {type(names).__name__} {names!r}: "
                             f"write [{names!r}]")
    if names is not None:
        try:
            names = frozenset(names)        # read once: a generator would be used up by the first ``in``
        except TypeError:
            raise InputTypeError(f"names must be a list of file names, got {type(names).__name__}") from None
        if not all(isinstance(name, str) for name in names):
            raise InputTypeError(f"names must be file names (str), got {sorted(map(repr, names))}")
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            temporary = _TEMP_NAME.match(entry.name)
            ours = temporary and (names is None or temporary["name"] in names)
            if ours and entry.is_file(follow_symlinks=False):
                _remove(entry.path)
                removed.append(entry.name)
    return sorted(removed)
