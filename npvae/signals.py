"""Stopping cleanly on SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed), and on Windows
SIGBREAK (Ctrl-Break, the one way another program can ask a console program there to stop).

Two ways to hear a signal, for two situations:

* **A loop that must reach a safe point first** (a training step, then its
  checkpoint): :class:`StopFlag` with :func:`catch_signals`. The first signal
  only records ``flag.signum``; the loop checks it between steps and stops
  there. Later signals are acknowledged on stderr and otherwise ignored: the
  checkpoint being written must not be cut short.
* **A program everywhere else** (loading data, drawing figures, the NLL):
  :func:`raise_on_signals` makes the first signal raise :class:`Interrupted`
  at once, so ``finally`` blocks and atomic writes clean up on the way out.
  From then on, signals are acknowledged only, so the cleanup itself cannot
  be cut short.

A library call that writes a temporary file and may run in a program that
kept SIGTERM's or SIGHUP's default action (which ends the process without any cleanup)
wraps the write in :func:`cleanup_on_sigterm`.

SIGHUP (the terminal closed) is heard the same way, but only where it still
has its default action, which would end the process with no cleanup at all. A
program that ignores it (started with ``nohup``) or has its own use for it
(reloading a configuration, say) keeps it as it is.

Python lets only the main thread install handlers; elsewhere these helpers
change nothing.
"""
import contextlib
import signal
import sys
import threading

__all__ = ["Interrupted", "StopFlag", "catch_signals", "raise_on_signals", "hold", "cleanup_on_sigterm"]

# SIGHUP does not exist on Windows, and SIGBREAK only there.
_SIGHUP = getattr(signal, "SIGHUP", None)
SIGNALS = (signal.SIGINT, signal.SIGTERM) + tuple(
    sig for sig in (_SIGHUP, getattr(signal, "SIGBREAK", None)) if sig is not None)

# The first signal the handlers below have seen since raise_on_signals began,
# or None. Signals are process-wide, so this is too: once a stop is under way
# (in fit's flag or in a raised Interrupted), a later signal must not raise.
_stopping = None


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM, SIGHUP or SIGBREAK arrived; raised by the handler of :func:`raise_on_signals`.

    A ``KeyboardInterrupt``, so ``except Exception`` does not swallow it and
    code that already handles Ctrl-C handles SIGTERM the same way.

    Attributes
    ----------
    signum : int
        The signal received.
    exit_code : int
        ``128 + signum``, what a shell reports for a process the signal ended
        (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP, 149 for SIGBREAK).
    """

    def __init__(self, signum):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {signal_name(signum)}")


def signal_name(signum):
    """``"SIGINT"`` for 2, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _acknowledge(signum, doing="stopping", repeated=True):
    """Say that a signal (by default a repeated one) was heard; never raise from here."""
    heard = " again; already" if repeated else ";"
    try:
        sys.stderr.write(f"\n{signal_name(signum)} received{heard} {doing}, please wait\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):     # stderr closed or gone: nothing to tell
        pass


class StopFlag:
    """Set by the first SIGINT/SIGTERM/SIGHUP; the loop checks :attr:`signum` between steps.

    Later signals do not raise: they are acknowledged with a line on stderr
    that says what is being finished (``doing``), so that a second Ctrl-C
    during the checkpoint write neither corrupts nor loses it. The first is said at once
    only while :attr:`slow` is set (what the loop is busy with, e.g. a first step that compiles):
    otherwise the loop's own message follows within a step.
    """

    def __init__(self, doing="stopping (finishing the current step, or the evaluation or callback under way, "
                             "then writing the checkpoint)"):
        self.signum = None
        self.doing = doing
        self.slow = None

    def handler(self, signum, frame):
        global _stopping
        if self.signum is None:
            self.signum = signum
            _stopping = _stopping or signum
            if self.slow:
                _acknowledge(signum, f"stopping after {self.slow}", repeated=False)
            return
        _acknowledge(signum, self.doing)


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def _ours_or_default(handler):
    """True for SIGHUP's default action and for the handlers this module installs."""
    return handler is signal.SIG_DFL or handler is _raise_first or isinstance(getattr(handler, "__self__", None),
                                                                               StopFlag)


@contextlib.contextmanager
def _handlers(handler, after=None):
    """Install ``handler`` for :data:`SIGNALS` for the block; then restore the old ones (or set ``after``).

    SIGHUP is taken over only from its default action or from these handlers (see the module
    docstring)."""
    if not _in_main_thread():
        yield
        return
    previous = {}
    try:
        for sig in SIGNALS:
            if sig == _SIGHUP and not _ours_or_default(signal.getsignal(sig)):
                continue                 # nohup, or the program's own use of SIGHUP
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            # None means "installed outside Python": the best we can restore is the default.
            signal.signal(sig, after if after is not None else signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def catch_signals(flag):
    """Route SIGINT, SIGTERM and SIGHUP to ``flag`` (a :class:`StopFlag`) for the block."""
    with _handlers(flag.handler):
        yield flag


def _raise_first(signum, frame):
    global _stopping
    if _stopping is not None:
        _acknowledge(signum)
        return
    _stopping = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def raise_on_signals(then_ignore=False):
    """For a program's main function: the first SIGINT, SIGTERM or SIGHUP raises :class:`Interrupted`.

    Later signals are acknowledged and ignored, so the ``finally`` blocks and
    ``except`` clauses the first one set running can finish. Handlers are
    restored when the block ends; with ``then_ignore`` (the program exits
    next) the signals are ignored instead: while Python shuts down it puts
    back the default handlers, and a late Ctrl-C would end the process by
    the signal rather than with the exit status it was about to return.
    """
    global _stopping
    _stopping = None
    try:
        with _handlers(_raise_first, signal.SIG_IGN if then_ignore else None):
            yield
    finally:
        _stopping = None


def hold(signum=signal.SIGINT):
    """From now on (until :func:`raise_on_signals` ends), signals are acknowledged, never raised.

    A program calls this when it starts to stop for another reason (an
    error), so that a Ctrl-C cannot cut its cleanup short either.
    """
    global _stopping
    _stopping = _stopping or signum


@contextlib.contextmanager
def cleanup_on_sigterm():
    """Let the block clean up on SIGTERM (or SIGHUP), then end the process as the signal would have.

    The default action of SIGTERM and SIGHUP ends the process at once:
    ``finally`` blocks do not run and a temporary file stays behind. For each
    of the two that still has that default action, the block gets a handler
    that raises :class:`Interrupted` instead; the block's cleanup runs, and
    then the signal is delivered again with its default action, so the process
    ends exactly as it would have (status "killed by SIGTERM"). A signal the
    program ignores or handles itself is left as it is.
    """
    if not _in_main_thread():
        yield
        return
    mine = [sig for sig in (signal.SIGTERM, _SIGHUP) if sig is not None and signal.getsignal(sig) is signal.SIG_DFL]

    def on_signal(signum, frame):
        raise Interrupted(signum)

    for sig in mine:
        signal.signal(sig, on_signal)
    try:
        yield
    except Interrupted as e:
        if e.signum not in mine:
            raise
        for sig in mine:
            signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(e.signum)           # the process ends here
        raise                                   # (not reached)
    finally:
        for sig in mine:
            if signal.getsignal(sig) is on_signal:
                signal.signal(sig, signal.SIG_DFL)
