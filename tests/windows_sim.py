"""Run a Python program as it would run on Windows, as far as Linux allows (for the tests).

    python tests/windows_sim.py SCRIPT [ARGS...]      SCRIPT as __main__
    python tests/windows_sim.py -c CODE [ARGS...]     CODE as __main__

Before the program imports anything, this:

* makes ``fcntl``, ``resource``, ``pwd``, ``grp`` and ``termios`` fail to import (Windows has
  none of them): ``sys.modules[name] = None``;
* puts a stand-in ``msvcrt`` in ``sys.modules``: ``locking(fd, mode, nbytes)`` with ``LK_UNLCK``,
  ``LK_LOCK``, ``LK_NBLCK``, ``LK_RLCK``, ``LK_NBRLCK``; a lock held by another descriptor raises
  ``PermissionError``, as msvcrt does. It is built on the real ``fcntl.flock``, so it locks the
  whole file, not ``nbytes`` bytes (npvae locks one byte, the first), ``LK_LOCK`` does not wait
  (Windows tries for 10 s), and, as on Windows, a second descriptor of the same process cannot
  take it either. As Windows' lock is mandatory, ``os.read`` of a locked file through another
  descriptor of this process fails too (another process's reads are not stopped);
* applies Windows' sharing rule: CPython opens files without ``FILE_SHARE_DELETE``, so
  ``os.remove``, ``os.unlink``, ``os.rename`` and ``os.replace`` of a file that is open fail
  (DeleteFileW, MoveFileExW). Here they raise ``PermissionError`` when the file has an open
  descriptor in this process (any one: ``os.open``, ``open``, NumPy's, ...; read from
  ``/proc/self/fd``);
* removes the signals Windows lacks (``SIGHUP``, ``SIGPIPE``, ``SIGUSR1``, ...) from ``signal``;
* makes ``/proc`` and ``/sys`` impossible to ``open``.

It does not simulate:

* ``os.name`` (it stays ``"posix"``: with ``"nt"``, ``pathlib.Path()`` refuses to work on Linux,
  and matplotlib uses it), ``os.sep``, drive letters, ``os.path`` (posixpath); a test of an
  ``os.name == "nt"`` branch sets ``os.name`` itself, after its imports;
* other processes' handles (the sharing rule sees this process's descriptors only), the lock's
  byte range and file position, reads of a locked file by another process or through ``open``;
* the console, its encoding, Ctrl-Break or closing its window; ``multiprocessing``'s spawn.

Linux only (``/proc/self/fd``, ``fcntl``): a test checks :func:`available` and skips otherwise.
"""
import contextlib
import os
import sys


def available():
    """Whether this machine can run the simulation."""
    if not os.path.isdir("/proc/self/fd"):
        return False
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


def simulate():
    import builtins
    import errno
    import fcntl as real_fcntl     # kept here, for the msvcrt stand-in, before it goes away
    import getpass  # noqa: F401   (these two probe for msvcrt when imported, to tell which OS
    import subprocess  # noqa: F401   they run on: imported now, they take Linux's way, as they must)
    import io
    import signal
    import types

    # -- modules Windows lacks --------------------------------------------------------------
    for name in ("fcntl", "resource", "pwd", "grp", "termios"):
        sys.modules[name] = None

    # -- msvcrt.locking -------------------------------------------------------------------------
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK, msvcrt.LK_RLCK, msvcrt.LK_NBRLCK = 0, 1, 2, 3, 4

    held = {}                           # (st_dev, st_ino) of a locked file: the descriptor holding it

    def file_id(fd):
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def locking(fd, mode, nbytes):
        if mode == msvcrt.LK_UNLCK:
            real_fcntl.flock(fd, real_fcntl.LOCK_UN)
            held.pop(file_id(fd), None)
            return
        try:
            real_fcntl.flock(fd, real_fcntl.LOCK_EX | real_fcntl.LOCK_NB)
        except BlockingIOError:
            raise PermissionError(errno.EACCES, "Permission denied") from None
        held[file_id(fd)] = fd

    real_read = os.read

    def read(fd, n):                    # Windows' lock is mandatory: no other descriptor reads the file
        holder = held.get(file_id(fd))
        if holder is not None and holder != fd:
            raise PermissionError(errno.EACCES, "The process cannot access the file because another "
                                  "process has locked a portion of the file")
        return real_read(fd, n)

    msvcrt.locking = locking
    sys.modules["msvcrt"] = msvcrt
    os.read = read

    # -- no file is removed, renamed or replaced while it is open ----------------------------------
    def is_open(path):
        try:
            st = os.stat(path)
        except OSError:
            return False
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):       # (the listing's own descriptor, closed by now)
                fst = os.fstat(int(fd))
                if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
                    return True
        return False

    def refuse_if_open(real, paths_from):
        def guarded(*args, **kwargs):
            for path in paths_from(args):
                if isinstance(path, (str, bytes, os.PathLike)) and is_open(path):
                    raise PermissionError(errno.EACCES, "The process cannot access the file because it is "
                                          "being used by another process", os.fsdecode(path))
            return real(*args, **kwargs)
        guarded.__name__ = real.__name__
        return guarded

    os.remove = refuse_if_open(os.remove, lambda args: args[:1])
    os.unlink = refuse_if_open(os.unlink, lambda args: args[:1])
    os.rename = refuse_if_open(os.rename, lambda args: args[:2])
    os.replace = refuse_if_open(os.replace, lambda args: args[:2])

    # -- Windows' signals only ------------------------------------------------------------------
    kept = {"SIGINT", "SIGTERM", "SIGABRT", "SIGFPE", "SIGILL", "SIGSEGV", "SIGBREAK"}
    for name in [n for n in dir(signal) if n.startswith("SIG") and n.isupper() and not n.startswith("SIG_")]:
        if name not in kept:
            delattr(signal, name)

    # -- no /proc, no /sys ------------------------------------------------------------------------
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if isinstance(file, str) and file.startswith(("/proc/", "/sys/")):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", file)
        return real_open(file, *args, **kwargs)

    builtins.open = io.open = open_


def main():
    import runpy
    simulate()
    if sys.argv[1] == "-c":
        code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
        sys.path[0] = ""                        # as python -c has it (not this file's folder)
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    else:
        script, sys.argv = sys.argv[1], sys.argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
