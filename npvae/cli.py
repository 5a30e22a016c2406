"""What npvae's command-line programs share: one error boundary, exit codes, argument types.

A program is written as::

    def main(argv=None):
        args = parser.parse_args(argv)        # parser = cli.ArgumentParser(...)
        ...                                   # raise npvae's errors; return 0
    if __name__ == "__main__":
        cli.run(main, then_exit=True)

and :func:`run` does the rest: the first SIGINT, SIGTERM or SIGHUP raises
:class:`~npvae.signals.Interrupted` wherever the program is (so its atomic
writes clean up) and later ones cannot cut the cleanup short; every error
becomes one line on stderr (what was wrong, which argument or file, what to
do), followed by any notes the program added (``error.add_note``), and a
documented exit status (:data:`EXIT_STATUS`). A Python traceback is shown
only with ``--debug``.
"""
import argparse
import contextlib
import errno
import io
import os
import re
import select
import shlex
import shutil
import stat
import sys
import tempfile
import traceback
import warnings

import numpy as np

from . import signals
from .atomic import check_name_length
from .data.datasets import ENV_VAR, cache_dir, cache_fix, cache_unwritable, search_report
from .errors import (CheckpointError, DataFileError, DatasetNotFoundError, DownloadError, InputError,
                     InputTypeError, NpvaeError, RunFolderInUseError, StateDictError)
from .footprint import format_bytes
from .progress import emit
from .train import TrainingInterrupted

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_SIGHUP", "EXIT_SIGBREAK",
           "EXIT_CLOSED_PIPE", "EXIT_STATUS", "EXIT_STATUS_NO_CHECKPOINT",
           "ArgumentParser", "user_path", "folder_path", "whole_number", "real_number", "learning_rate",
           "run", "exit_code", "describe", "interruption", "reading_input", "check_output_folder", "shell_command",
           "places_searched"]

EXIT_OK = 0
EXIT_FAILURE = 1    # at run time: divergence, a file that cannot be written, out of memory
EXIT_USAGE = 2      # bad usage or input, found before anything was written (data not found, even
                    # after a failed download: the fix is the same, --data-dir or a connection);
                    # in train_mnist.py also a refusal after training, which keeps the run
EXIT_SIGINT = 128 + 2
EXIT_SIGTERM = 128 + 15
EXIT_SIGHUP = 128 + 1
EXIT_SIGBREAK = 128 + 21   # Windows' Ctrl-Break
EXIT_CLOSED_PIPE = 128 + 13   # SIGPIPE's: what a shell reports for a writer whose reader left

_EXIT_STATUS = """\
exit status:
  0    done
  1    failed while running: training diverged, a file could not be written
       (disk full, read-only), out of memory; the message says what is kept
  2    bad usage or input, found before anything was written: {usage}
  129  stopped by SIGHUP (the terminal closed), as by SIGTERM; a run started
       with nohup ignores it
  130  stopped by Ctrl-C (SIGINT); 143: stopped by SIGTERM; 149: stopped by
       Ctrl-Break (Windows).
       {stopped}
  141  the output's reader left (| head) with lines still to print: they are
       dropped quietly; a training run goes on and finishes its work (and
       may end with 0: it prints its lines at its end)"""
#: The exit statuses, as ``--help`` shows them (a program that trains with a checkpoint).
EXIT_STATUS = _EXIT_STATUS.format(
    usage="an argument,\n       a data file or a data set not found (also when downloading it failed),\n"
          "       a checkpoint, an --out that is busy, holds a run, not writable or too\n"
          "       small (a refusal after training, of a figure's path, $MPLBACKEND or\n"
          "       the NLL's memory, keeps the run)",
    stopped="Training keeps every completed step in its checkpoint; the message says\n"
            "       how to continue")
#: The same for a program that keeps no checkpoint (``examples/quickstart.py``).
EXIT_STATUS_NO_CHECKPOINT = _EXIT_STATUS.format(
    usage="an argument,\n       a data file or a data set not found (also when downloading it failed),\n"
          "       an --out that cannot be written",
    stopped="A stopped run keeps only the files it had finished: run it again")

# errors that mean "the input was wrong": found at the start, nothing written
_USAGE_ERRORS = (InputError, InputTypeError, DataFileError, DatasetNotFoundError, CheckpointError,
                 StateDictError, RunFolderInUseError)
# errno values that only a write gets, and what to do about them
_WRITE_ERRNOS = {errno.ENOSPC: "free some space", getattr(errno, "EDQUOT", errno.ENOSPC): "free some space",
                 errno.EROFS: "write somewhere else", errno.EFBIG: "write somewhere else"}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that reports a usage error in one line and has ``--debug``.

    Help texts are shown as written (state defaults in them yourself: there is
    no automatic "(default: None)"); the description and epilog keep their
    line breaks. ``debug=False`` leaves ``--debug`` out, for a program that
    does not run inside :func:`run` (which is what reads it).
    """

    def __init__(self, *args, debug=True, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        if debug:
            self.add_argument("--debug", action="store_true", help="on an error, also show the Python traceback")

    def print_help(self, file=None):
        """argparse's, but help that cannot be written to stdout (``> /dev/full``) fails as other
        output does: argparse drops the error, and the program exited 0 having shown nothing."""
        if file is not None or sys.stdout is None:      # argparse's: with stdout closed (>&-), on stderr
            return super().print_help(file)
        try:
            sys.stdout.write(self.format_help())
        except BrokenPipeError:
            raise                   # its reader left (| head): the program's boundary ends it quietly
        except OSError as e:        # (unbuffered output: PYTHONUNBUFFERED, as containers often set)
            _output_to_devnull()
            self.exit(EXIT_FAILURE, f"error: cannot write the output (stdout): {e.strerror or e}\n")

    def error(self, message):
        if message.endswith(": expected one argument"):
            # argparse takes "-1e-3" for an option: say how to pass a value that starts with "-"
            option = message.split(":")[0].removeprefix("argument ").split("/")[-1]
            message += f" (give it one; a value starting with '-' is written {option}=VALUE)"
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def user_path(text):
    """An argument that names a file or folder, ``~`` expanded as the library expands it.

    The shell expands ``--out ~/x`` but not ``--out=~/x``; without this, that run would
    write into a folder named ``~`` here while the library wrote into the home folder.
    """
    return os.path.expanduser(text)


def folder_path(text):
    """:func:`user_path` for a folder to read: an empty one (``--data-dir "$UNSET"``) is refused,
    not taken as "search everywhere"."""
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, got ''")
    return user_path(text)


def whole_number(minimum=None, maximum=None):
    """An argparse ``type``: an int within the bounds, with a clear message otherwise."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def real_number(minimum=None, *, exclusive=False):
    """An argparse ``type``: a finite float >= ``minimum`` (> with ``exclusive``)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            bound = f"greater than {minimum}" if exclusive else f"at least {minimum}"
            underflow = value == 0 and any(digit in "123456789" for digit in text.lower().split("e")[0])
            rounded = f" ({text} rounds to {value})" if underflow else ""
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}{rounded}")
        return value
    parse.__name__ = "number"
    return parse


def learning_rate(text):
    """An argparse ``type`` for ``--lr`` of a float32 model (the examples'): above 0, and neither
    0 nor inf once rounded to float32 (the optimizer would refuse it, but after the data load)."""
    value = real_number(0, exclusive=True)(text)
    largest = float(np.finfo(np.float32).max)
    if value > largest:
        raise argparse.ArgumentTypeError(f"{text} overflows float32, the model's dtype (largest {largest:.3g})")
    if np.float32(value) == 0:
        raise argparse.ArgumentTypeError(f"{text} is 0 in float32, the model's dtype: no step would change it")
    return value


def interruption(error):
    """The Ctrl-C (or SIGTERM, SIGHUP) that ``error`` is, or that Python wrapped in it, or None.

    An interrupt that lands inside an import or a class body comes out as a plain
    ``ImportError``, ``RuntimeError`` or ``SystemError`` around it. Any other error (a full
    disk, a missing module, while the interrupt was being handled) is what to report."""
    for _ in range(8):                  # wrappers of wrappers, but never a loop
        if isinstance(error, KeyboardInterrupt):
            return error
        if type(error) not in (ImportError, RuntimeError, SystemError):    # not their subclasses
            return None
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def exit_code(error):
    """The exit status for ``error`` (see :data:`EXIT_STATUS`)."""
    if isinstance(error, (signals.Interrupted, TrainingInterrupted)):
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):
        return EXIT_SIGINT
    if isinstance(error, _USAGE_ERRORS):
        return EXIT_USAGE
    return EXIT_FAILURE


def places_searched(error, data_dir="--data-dir"):
    """The lines of a :class:`DatasetNotFoundError`'s search report, each place and why it did
    not do, with the Python argument ``data_dir`` called what the program calls it."""
    places = [(folder, origin.replace("data_dir", data_dir)) for folder, origin in error.places]
    return search_report(error.files, places, error.dataset)


def _data_not_found(e):
    """A data set not found, in command-line terms: where it was looked for, --data-dir, $NPVAE_DATA_DIR."""
    lines = [f"cannot find the {e.dataset} files {', '.join(f + '[.gz]' for f in e.files)}.",
             "Looked in, in this order:", *places_searched(e)]
    holding = f"a folder holding the files, or holding {e.dataset}/ with them"
    if e.data_dir is not None:
        lines.append("--data-dir was given, so no other place was searched and nothing was downloaded.")
        lines.append(f"To fix: point --data-dir at {holding}; or leave it out to use ${ENV_VAR}, the cache "
                     f"({cache_dir(e.dataset)}) and downloading.")
        return "\n".join(lines)
    if not os.environ.get(ENV_VAR):
        lines.append(f"  (${ENV_VAR} is not set.)")
    if isinstance(e.download_error, DownloadError):
        lines.append("Downloading them failed: " + str(e.download_error).replace("\n", "\n  "))
    elif e.download_error is not None:
        lines.append(cache_unwritable(e.dataset, e.download_error))
        lines.append(f"To fix: pass --data-dir DIR ({holding}), or set {ENV_VAR}=DIR; "
                     + cache_fix(e.dataset, e.download_error))
        return "\n".join(lines)
    lines.append(f"To fix: pass --data-dir DIR ({holding}), or set {ENV_VAR}=DIR; with neither, they are "
                 f"downloaded into {cache_dir(e.dataset)} when online.")
    return "\n".join(lines)


def describe(error):
    """The line that tells a user what went wrong (without the notes), or None if already said.

    ``TrainingInterrupted`` has been reported by ``fit`` itself. A data set
    that cannot be found is explained in this module's terms (``--data-dir``).
    """
    if isinstance(error, TrainingInterrupted):
        return None
    if isinstance(error, DatasetNotFoundError) and error.dataset is not None:
        return "error: " + _data_not_found(error)
    if isinstance(error, signals.Interrupted):
        return f"stopped: {error}"
    if isinstance(error, KeyboardInterrupt):
        return "stopped: interrupted by SIGINT"
    if isinstance(error, NpvaeError):
        return f"error: {error}"
    if isinstance(error, MemoryError):
        return "error: out of memory"
    if isinstance(error, Warning):      # the user asked for warnings to stop the program
        return f"error: {error} (a warning, raised as an error by python -W error or PYTHONWARNINGS)"
    if isinstance(error, OSError):
        what = error.strerror or str(error)
        if error.filename is None:
            return f"error: {what}"
        if error.errno in _WRITE_ERRNOS:
            return f"error: cannot write {error.filename}: {what}; {_WRITE_ERRNOS[error.errno]}"
        return f"error: {error.filename}: {what}"
    if isinstance(error, ImportError) and error.name and not error.name.startswith("npvae"):
        return f"error: cannot import {error.name}: {error}"     # a library's install, or too little memory
    return (f"error: internal error ({type(error).__name__}: {error}); this is a bug in npvae: run again "
            f"with --debug to see where it happened, and please report it")


def _report(error, debug, shown):
    """``shown``: what to say of ``error`` (the interrupt behind it, if any); both one's notes."""
    line = describe(shown)
    notes = [*getattr(shown, "__notes__", ()), *(getattr(error, "__notes__", ()) if shown is not error else ())]
    lines = ([line] if line else []) + notes
    try:
        if debug:
            traceback.print_exception(error)
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
    except (OSError, ValueError, AttributeError):    # stderr closed or gone: the status still says it
        pass


def _flush_output():
    """Flush stdout; a failure says it was the output (``> /dev/full``), not some file."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:                # and Python's own flush at exit would fail once more
        _output_to_devnull()
        raise OSError(e.errno, f"cannot write the output (stdout): {e.strerror or e}") from None
    except ValueError:                  # the program closed sys.stdout itself: nothing left to write
        pass


def _output_to_devnull():
    """Point stdout at /dev/null: what is still in its buffer can then never fail again at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:               # (fd 1 was closed, and /dev/null took its number)
            os.dup2(devnull, fd)
            os.close(devnull)


def _settle_output():
    """After an error: the output still in the buffer goes now, or, if it cannot, is dropped,
    so that Python's flush at exit adds no second report (and no status 120)."""
    with contextlib.suppress(ValueError, AttributeError):
        try:
            sys.stdout.flush()
        except OSError:
            _output_to_devnull()


def _stdout_reader_gone():
    """True if stdout is a pipe whose reader has closed it (``| head`` read what it wanted);
    stdout then points at /dev/null, or Python's own flush at exit would fail once more."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poll = select.poll()
        # a pipe without a reader polls as an error (Linux) or a hang-up (macOS, only when
        # asked about writing)
        poll.register(fd, select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0)):
            return False
        _output_to_devnull()
        return True
    except (OSError, ValueError, AttributeError):   # no stdout, or no poll (Windows): say the error
        return False


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A library warning on the command line: ``warning: ...`` (``--debug`` shows Python's form)."""
    try:
        (file or sys.stderr).write(f"warning: {message}\n")
    except (OSError, ValueError, AttributeError):    # stderr closed or gone
        pass


def run(main, argv=None, *, then_exit=False):
    """Call ``main(argv)`` inside the error boundary; return the exit status.

    ``--debug`` among the arguments shows tracebacks (and NumPy's warnings);
    without it, a library's warning is one line, ``warning: ...``, said once.
    ``SystemExit`` (``--help``, an argparse usage error) gives its status
    (``sys.exit("message")``: 1, the message printed, as Python does).
    With ``then_exit`` (a program's last call), exit with the status instead
    of returning it, ignoring those signals from the end of ``main`` on:
    the status stays the one reported, however late a second Ctrl-C comes.

    It also readies the process for a program: closed stdin, stdout or stderr get
    ``/dev/null`` in their place, and ``print`` escapes what stdout cannot encode (both
    stay after it returns).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    _fill_closed_standard_descriptors()
    if sys.stderr is None:              # started with it closed (2>&-): print(file=sys.stderr) would go to stdout
        sys.stderr = open(os.devnull, "w")
    _escape_what_stdout_cannot_encode()
    folder_gone = not _working_folder_exists()    # then no relative path can have been written
    with warnings.catch_warnings(), signals.raise_on_signals(then_ignore=then_exit):
        if not debug:
            # e.g. "overflow encountered in exp" as training diverges: the error says it better
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("once", category=UserWarning, append=True)   # after -W / PYTHONWARNINGS
            warnings.showwarning = _one_line_warning
        try:
            try:
                try:
                    code = main(argv)
                    code = EXIT_OK if code is None else code
                except SystemExit as e:      # argparse has said what it had to (--help: to stdout)
                    code = e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_FAILURE)
                    if code == EXIT_FAILURE and not isinstance(e.code, int):
                        emit(sys.stderr, f"{e.code}\n")      # sys.exit("message"): said, as Python says it
                if sys.stdout is not None:   # (None: started with stdout closed, >&-)
                    _flush_output()          # the last lines sit in the buffer: a closed pipe shows here
            except BaseException as error:  # noqa: BLE001 - this is the boundary
                signals.hold()               # from here on a signal cannot cut the report short
                if isinstance(error, BrokenPipeError) and _stdout_reader_gone():    # | head: nothing to say
                    code = EXIT_CLOSED_PIPE
                else:
                    shown = interruption(error) or (folder_gone and _lost_working_folder(error)) or error
                    if folder_gone and isinstance(error, DatasetNotFoundError) and any(
                            not os.path.isabs(folder) for folder, _ in error.places):   # a relative $NPVAE_DATA_DIR
                        error.add_note("The current folder no longer exists (deleted or moved?), so "
                                       "relative paths name nothing: cd to a folder that exists.")
                    _report(error, debug, shown)
                    code = exit_code(shown)
                    _settle_output()
        except signals.Interrupted as late:   # a signal arrived just as an error was raised
            code = late.exit_code
    if then_exit:
        sys.exit(code)
    return code


def _fill_closed_standard_descriptors():
    """A program started with stdin, stdout or stderr closed (``>&-``) hands descriptor 0, 1 or 2
    to the next file it opens (the run's lock, a figure being written), and a message printed below
    Python (Numba, the BLAS, a crash dump) would land in it: /dev/null takes them first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                opened = os.open(os.devnull, os.O_RDWR)     # the lowest free descriptor: this one
            except OSError:                                  # no /dev/null (a sandbox): as it was
                return
            os.set_inheritable(opened, True)                 # a child process gets it as stdin/out/err


def _escape_what_stdout_cannot_encode():
    """A ``print`` of a name stdout's encoding lacks (``PYTHONIOENCODING=ascii``, a folder named
    ``ü``) would fail once the work is done: escape it, as Python's stderr does (and as
    :func:`npvae.progress.emit` does on any stream it is given)."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="backslashreplace")


def _working_folder_exists():
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


def _lost_working_folder(error):
    """For a program started in a folder since deleted: a relative path (or making one whole)
    failed there. Say that (bad input, 2), not the system's bare "No such file or directory"."""
    if type(error) is not FileNotFoundError or (error.filename and os.path.isabs(error.filename)):
        return None     # an npvae error (a data set not found) says more; a whole path is not the folder's
    return InputError("the current folder no longer exists (deleted or moved?): cd to a folder that "
                      "exists, or give every path in full")


def shell_command(words, stream=None):
    """``words`` as one command to paste into a shell (bash, zsh), shown on ``stream`` (default
    ``sys.stderr``): quoted as :func:`shlex.join` does, but a word the stream cannot show as it
    is (bytes that are no UTF-8, letters its encoding lacks, a newline) in bash's ``$'...'``,
    its bytes escaped: an escape the stream makes up would name another file. On Windows, quoted
    for cmd.exe instead: bash's single quotes mean nothing there."""
    if os.name == "nt":
        return " ".join(_cmd_word(os.fsdecode(w)) for w in words)
    stream = sys.stderr if stream is None else stream
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return " ".join(_shell_word(os.fsdecode(w), encoding) for w in words)


def _cmd_word(word):
    """A word as Windows programs read their command line: in double quotes if it holds a space,
    a tab, a quote or a character cmd.exe reads itself (``&|<>^()``, literal inside quotes; a
    quote is escaped, and the backslashes before it or the closing quote doubled). ``%NAME%``
    is still expanded: cmd.exe has no quoting for it."""
    if word and not any(c in word for c in ' \t"&|<>^()'):
        return word
    return '"' + re.sub(r'(\\*)("|$)', lambda m: 2 * m[1] + ("\\" + m[2] if m[2] else ""), word) + '"'


def _shell_word(word, encoding):
    try:
        word.encode(encoding)                   # strict: no surrogates, nothing to escape
        if word.isprintable():
            return shlex.quote(word)
    except UnicodeEncodeError:
        pass
    try:
        data = os.fsencode(word)                # the bytes the system takes for this name
    except UnicodeEncodeError:                  # an ASCII file-system encoding (LC_ALL=C, PYTHONUTF8=0)
        data = word.encode("utf-8", "surrogateescape")
    body = "".join(chr(b) if 32 <= b < 127 and chr(b) not in "'\\" else f"\\x{b:02x}" for b in data)
    return f"$'{body}'"


@contextlib.contextmanager
def reading_input(what):
    """Inside: an input file that cannot be read (no permission, an I/O error) is bad input.

    That is status 2, found before anything was written, where any other OSError of a
    run is a failure while running (status 1). ``what`` names the input (``"--data-dir"``).
    """
    try:
        yield
    except OSError as e:
        if isinstance(e, NpvaeError):      # e.g. a DatasetNotFoundError: it says it better
            raise
        where = f" {e.filename}" if e.filename is not None else ""
        raise InputError(f"{what}:{where} cannot be read: {e.strerror or e}") from e


def check_output_folder(path, option="--out", need_bytes=0, files=(), instead="choose another folder"):
    """Refuse, before anything is written, an output folder that cannot be used.

    ``path`` may exist (it must be a folder) or not (the nearest existing
    folder above it must be writable). With ``need_bytes``, its file system
    must have that much free space. ``files``: names of files the program writes
    there, none of which may be a folder. ``instead``: what most refusals end with, what to
    do instead (another folder, said the way the program takes it).

    Raises
    ------
    InputError
        Naming ``option``, the path and the reason: a file, a folder below a
        file, a broken link, not writable (read-only file system, no
        permission), too little space, a folder where a file goes.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise InputError(f"{option} must name a folder, got {path!r}")
    existing = os.path.abspath(path)
    while True:                  # up to the nearest folder that exists
        try:
            st = os.stat(existing)
        except FileNotFoundError:
            if os.path.lexists(existing):
                raise InputError(f"{option} {path}: {existing} is a symbolic link to nothing; remove it or "
                                 f"{instead}") from None
            existing = os.path.dirname(existing)
            continue
        except NotADirectoryError:
            existing = os.path.dirname(existing)
            continue
        except OSError as e:      # a name too long, a loop of links, no permission to look
            raise InputError(f"{option} {path} cannot be used: {e.strerror or e}") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        if existing == os.path.abspath(path):
            raise InputError(f"{option} {path} is a file, not a folder; choose a folder (it is created if "
                             f"needed)")
        raise InputError(f"{option} {path} cannot be created: {existing} is a file, not a folder; {instead}")
    try:
        with tempfile.TemporaryFile(dir=existing):    # on Linux this does not even get a name
            pass
    except OSError as e:
        # "in {existing}": the system's reason is for a new file there (in /proc: "No such file")
        raise InputError(f"{option} {path} is not writable: no file can be created in {existing} "
                         f"({e.strerror or e}); {instead}") from None
    if need_bytes:
        free = shutil.disk_usage(existing).free
        if free < need_bytes:
            raise InputError(f"{option} {path}: only {format_bytes(free)} free on its file system, and this "
                             f"run writes about {format_bytes(need_bytes)}; free some space or {instead}")
    for name in files:
        if os.path.isdir(os.path.join(path, name)):
            raise InputError(f"{option} {path}: {name} there is a folder, where this writes a file; remove it "
                             f"or {instead}")
    return path


def check_output_file(path, option="--out", suffix=".png"):
    """Refuse, before any work is done, an output file that cannot be written.

    ``path`` must end in ``suffix`` (a figure is written as a PNG whatever its name),
    must not be a folder, nor a symbolic link into a folder that does not exist, and its
    folder must be usable (:func:`check_output_folder`).
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise InputError(f"{option} must name a {suffix} file, got {path!r}")
    if path.endswith((os.sep, "/")) or os.path.isdir(path):     # Windows takes "/" too
        raise InputError(f"{option} {path} is a folder; name the {suffix} file to write, e.g. "
                         f"{os.path.join(path.rstrip(os.sep + '/') or '.', 'figure' + suffix)}")
    if not path.lower().endswith(suffix):
        raise InputError(f"{option} {path}: the file is written as {suffix[1:].upper()}; give it a {suffix} name")
    try:
        check_name_length(path)             # with the temporary name it is first written under
    except InputError as e:
        raise InputError(f"{option}: {e}") from None
    if os.path.islink(path) and not os.path.exists(path):      # written through: its folders would be made
        target = os.path.realpath(path)
        if not os.path.isdir(os.path.dirname(target)):
            raise InputError(f"{option} {path} is a symbolic link to {target}, in a folder that does not exist; "
                             f"remove the link or name another file")
    check_output_folder(os.path.dirname(path) or ".", f"{option} {path}: the folder")
    return path

