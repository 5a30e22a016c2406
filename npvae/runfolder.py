"""A run folder: one run at a time, and nothing left over from a killed one.

**The lock.** A run holds an exclusive ``flock`` on ``<folder>/.npvae.lock``
for as long as it writes there; a second run into the same folder is refused
at once, with the first one's process id, start time and command. The
operating system releases the lock when its process ends, however it ends, so
a lock file left by a killed run is *stale*: the next run simply takes it
over (and says so). The holder removes the file when it is done; a run that
opens the file just as it is being removed checks, once locked, that the file
it holds is still the one at that path, and tries again otherwise.

**The sweep.** A killed run can leave the temporary files of its atomic
writes (:mod:`npvae.atomic`); the next run, holding the lock (so no other
writer is active), removes them.

Where ``fcntl`` does not exist (Windows), ``msvcrt.locking`` locks the file's
first byte instead, with the same behaviour but for two things. Windows removes no file that
is open, so there the holder empties, unlocks and closes the file first, then removes it. And
its lock keeps others from reading that byte, so a run refused there names no process: it
says "another run".
"""
import contextlib
import datetime
import json
import os
import shlex
import socket
import sys

from .atomic import sweep_temporary_files
from .errors import RunFolderInUseError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["RunFolder", "LOCK_NAME", "holder"]

LOCK_NAME = ".npvae.lock"


def _try_lock(fd):
    """Lock ``fd`` exclusively without waiting; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    except OSError:
        if fcntl is None:     # msvcrt reports a held lock as EACCES/EDEADLOCK
            return False
        raise
    return True


def _name_file(error, path):
    """Let ``error`` name ``path`` if it names no file (``flock`` and ``write`` name none)."""
    if isinstance(error, OSError) and error.errno is not None and error.filename is None:
        error.filename = path


def _close(fd, locked):
    """Close ``fd``; a lock of ``msvcrt`` is undone first (Windows may free a lock that is closed
    with its file only later, and a run that looks just after would find the folder busy)."""
    if locked and fcntl is None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    os.close(fd)


def _read_info(fd):
    """The holder's description written in the lock file, or {}."""
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 64 * 1024)
        info = json.loads(data.decode("utf-8")) if data else {}
        return info if isinstance(info, dict) else {}
    return {}


def _describe(info):
    if not info:
        return "another run"
    parts = [f"process {info.get('pid', '?')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts.append(f"on {info['host']}")
    if info.get("started"):
        parts.append(f"started {info['started']}")
    text = " ".join(parts)
    if info.get("command"):
        text += f": {info['command']}"
    return text


def holder(folder):
    """Who holds ``folder``'s lock: a description, or None if no run holds it.

    Changes nothing in ``folder`` (the lock file is neither created nor removed).
    """
    path = os.path.join(os.fspath(folder), LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR if fcntl is None else os.O_RDONLY)
    except FileNotFoundError:
        return None
    if _try_lock(fd):
        _close(fd, locked=True)
        return None                # free (a stale file)
    try:
        return _describe(_read_info(fd))
    finally:
        _close(fd, locked=False)


def _make_free_folder(path):
    """Make ``path``, or else the first of ``path-2``, ``path-3``, ... that no one has made; its name.
    ``os.mkdir`` fails if the folder exists, so two runs never get the same one."""
    path = path.rstrip("/") or path       # "runs/x/" is the folder runs/x
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    name, n = path, 1
    while True:
        try:
            os.mkdir(name)
            return name
        except FileExistsError:
            n += 1
            name = f"{path}-{n}"


class RunFolder:
    """A folder that one run at a time writes into; use as a context manager.

    ``with RunFolder(path, option="--out") as run:`` creates the folder if
    needed, takes the lock (or raises :class:`~npvae.errors.RunFolderInUseError`
    naming the other run), and removes temporary files a killed run left;
    leaving the block releases the lock and removes the lock file.

    ``files``: the names of the files the run writes; only their temporary files are removed
    (the folder is the user's choice, and may hold other files of that shape). None: every one.

    ``unique=True`` is for a folder the program named itself (``runs/<dataset>-<time>``), not the
    user: if it exists when it is made (another run started in the same second), the first free
    name of ``path-2``, ``path-3``, ... is made instead, and ``path`` says which.

    Attributes
    ----------
    path : str
    created : bool
        Whether this run created the folder.
    stale : str or None
        The description of a killed run whose lock was taken over.
    swept : list of str
        Temporary files removed when the lock was taken.
    """

    def __init__(self, path, option="folder", *, unique=False, files=None):
        self.path = os.fspath(path)
        self.files = files
        self.option = option
        self.unique = unique
        self.created = False
        self.stale = None
        self.swept = []
        self._fd = None

    def file(self, name):
        """The path of ``name`` inside the folder."""
        return os.path.join(self.path, name)

    def __enter__(self):
        if self.unique:
            self.path, self.created = _make_free_folder(self.path), True
        else:
            self.created = not os.path.isdir(self.path)
            os.makedirs(self.path, exist_ok=True)
        lock = self.file(LOCK_NAME)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
            except OSError as e:        # no locks here at all (ENOLCK): keep no file open
                os.close(fd)
                self._give_up()
                _name_file(e, lock)
                raise
            if not locked:
                who = _describe(_read_info(fd))
                os.close(fd)
                raise RunFolderInUseError(
                    f"{self.option} {self.path} is in use by {who}; wait for that run to finish "
                    f"(or stop it), or choose another {self.option}")
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            _close(fd, locked=True)     # we locked a file its holder had just removed: try again
        self._fd = fd
        try:
            info = _read_info(fd)
            if info:
                self.stale = _describe(info)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                         started=datetime.datetime.now().isoformat(timespec="seconds"),
                                         command=shlex.join([sys.executable, *sys.argv]))).encode("utf-8"))
            self.swept = sweep_temporary_files(self.path, self.files)
        except BaseException as e:      # a full disk, say: no __exit__ follows, so let go here
            self._give_up()
            _name_file(e, lock)
            raise
        return self

    def _give_up(self):
        """After a failed start: what :meth:`discard` does, its own errors left out (the first
        error is the one to tell)."""
        with contextlib.suppress(OSError):
            if self._fd is None and self.created:     # never locked: the lock file is ours alone
                os.remove(self.file(LOCK_NAME))
        with contextlib.suppress(OSError):
            self.discard([])

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self):
        """Remove the lock file and release the lock. POSIX: remove, then close (a run arriving in
        between is refused). Windows, which removes no open file: empty, unlock and close, then remove."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is None:
            # Windows removes no file that is open: unlock and close first. A run that opens the
            # file meanwhile keeps it (the removal then fails, and leaves that run's lock alone),
            # and finds it empty: no description of a run "that ended without releasing it".
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            _close(fd, locked=True)
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.remove(self.file(LOCK_NAME))
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(LOCK_NAME))
        finally:
            os.close(fd)

    def discard(self, names):
        """Remove the files ``names`` and release the lock; remove the folder too if this run created it.

        For a run that failed before it had anything worth keeping: a failed
        start leaves nothing behind. Other files in the folder are left alone
        (and so is a folder that is not empty).
        """
        for name in names:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.remove(self.file(name))
        self.release()
        if self.created:
            with contextlib.suppress(OSError):     # not empty (someone else's files): keep it
                os.rmdir(self.path)
