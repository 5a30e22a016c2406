"""Progress on stderr: a live bar on a terminal, plain lines in a log.

On a terminal (or in a Jupyter notebook) a line is redrawn in place (``\\r``) a few times a second:
what is done out of what, a bar, the rate and the time left. Elsewhere (a log
file, a pipe, pytest) a ``\\r`` line is noise, so nothing is drawn in place;
callers print one summary line per unit of work instead (an epoch), and a
long computation may print a plain line now and then (``log_every``).

:class:`EpochProgress` is what :func:`npvae.train.fit` shows; :class:`Bar` is
the generic piece (downloads, the NLL estimate).
"""
import math
import os
import re
import shutil
import sys
import time

__all__ = ["Bar", "EpochProgress", "emit", "format_duration", "is_terminal"]

_BAR_WIDTH = 20


def is_terminal(stream):
    """True if ``stream`` is an interactive terminal, or a Jupyter kernel's output (a notebook
    draws a ``\\r`` line in place too; its stream says it is no terminal)."""
    if type(stream).__module__.startswith("ipykernel."):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return callable(isatty) and bool(isatty())
    except (OSError, ValueError):       # a closed stream
        return False


def emit(stream, text):
    """Write and flush ``text``, with escapes for what the stream cannot encode. A stream that
    has gone (the terminal closed: EIO; a closed pipe) is not an error here: progress is for
    people, and the work goes on without it. Nor is none at all (``sys.stderr`` is None when
    the program started with it closed)."""
    if stream is None:
        return
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:      # a name the stream cannot show (PYTHONIOENCODING=ascii): escaped, not lost
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
    except (OSError, ValueError):
        pass


def format_duration(seconds):
    """``"0:07"``, ``"12:34"``, ``"1:02:03"``; ``"?"`` when unknown (inf, NaN, negative)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _num(x):
    """A loss for people: 3 decimals, or 4 significant digits when huge (a beta of 1e308 happens)."""
    return f"{x:.3f}" if abs(x) < 1e6 else f"{x:.4g}"


def _bar(fraction, width=_BAR_WIDTH):
    filled = min(width, max(0, int(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class _Line:
    """One line redrawn in place on a terminal, clipped to its width."""

    def __init__(self, stream):
        self.stream = stream
        self.width = 0          # characters drawn on the current line

    def draw(self, text):
        columns = _columns(self.stream)
        text = _fit(text, columns)
        # padded over what was drawn, within today's width (the terminal may have narrowed)
        padded, self.width = text.ljust(min(self.width, columns)), max(min(self.width, columns), len(text))
        emit(self.stream, "\r" + padded)           # the width is set before: Ctrl-C may cut in

    def clear(self):
        if self.width:
            emit(self.stream, "\r" + " " * min(self.width, _columns(self.stream)) + "\r")
            self.width = 0

    def end(self):
        """Keep what is drawn and move to a new line."""
        if self.width:
            emit(self.stream, "\n")
            self.width = 0


def _columns(stream):
    """The characters a line redrawn on ``stream`` may take (a line that wraps cannot be redrawn
    in place): ``$COLUMNS`` if set, else the width of the terminal ``stream`` is on (stderr's,
    when stdout goes to a file), else what :func:`shutil.get_terminal_size` finds."""
    columns = 0
    if not os.environ.get("COLUMNS"):
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):    # no descriptor (a notebook, a test's stream)
            pass
    return max(10, (columns or shutil.get_terminal_size((100, 24)).columns) - 1)


_BAR = re.compile(r" \[[#.]{2,}\]")     # what _bar draws, after a label that may hold brackets of its own


def _fit(text, columns):
    """``text`` in ``columns`` characters, so that the rate and the time left stay in sight: its
    bar shrinks, or goes (an 80-column terminal); then the fields after the first, set apart by
    two spaces, go one by one from the left (a narrower one); then the end is cut."""
    bars = list(_BAR.finditer(text))
    excess = len(text) - columns
    if excess > 0 and bars:
        start, end = bars[-1].span()        # " [" ... "]"
        inner = text[start + 2:end - 1]
        width = len(inner) - excess
        bar = " " + _bar(inner.count("#") / len(inner), width) if width >= 5 else ""
        text = text[:start] + bar + text[end:]
    # "epoch 1/3", "batch 3/100", "loss 1.000", ..., "1:37 left"; a bar's percentage is one too ("  64%", " 100%")
    fields = re.split(r"  | (?=100%)", text)
    while len(text) > columns and len(fields) > 2:
        del fields[1]
        text = "  ".join(fields)
    return text[:columns]


class Bar:
    """Progress of a task with a known total, e.g. images or bytes.

    Parameters
    ----------
    label : str
        What is being done, e.g. ``"NLL (k=800)"``.
    total : int or None
        Units to do; None if unknown (no bar, no time left).
    unit : str
        Shown after the counts, e.g. ``"images"``.
    scale, fmt : float, str
        Counts are shown as ``format(done / scale, fmt)`` (e.g. bytes as MB).
    enabled : bool
        False: show nothing.
    log_every : float or None
        Off a terminal, print a plain line at most this often (seconds); None: never.
    stream : file, optional
        Default ``sys.stderr``.
    """

    interval = 0.2     # seconds between redraws on a terminal

    def __init__(self, label, total, unit="", *, scale=1.0, fmt=",.0f", enabled=True, log_every=None,
                 stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(enabled)
        self.live = self.enabled and is_terminal(self.stream)
        self.label, self.total, self.unit = label, total, unit
        self.scale, self.fmt, self.log_every = scale, fmt, log_every
        self.line = _Line(self.stream)
        self.started = time.perf_counter()
        self.last_draw = self.last_log = self.started
        self.done = 0
        self.drawn = None         # the amount done when last drawn

    def _count(self, n):
        return format(n / self.scale, self.fmt)

    def text(self):
        """The progress line as it stands."""
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            fraction = self.done / self.total
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{self.label} {_bar(fraction)} {100 * fraction:3.0f}%  {self._count(self.done)}/"
                    f"{self._count(self.total)}{unit}  {self._count(rate)}{unit}/s  {format_duration(left)} left")
        return f"{self.label} {self._count(self.done)}{unit}  {self._count(rate)}{unit}/s"

    def update(self, done):
        """Set the amount done; redraws (throttled) on a terminal, logs now and then elsewhere."""
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.live:
            if now - self.last_draw >= self.interval or (self.total and done >= self.total):
                self.last_draw, self.drawn = now, done
                self.line.draw(self.text())
        elif self.log_every is not None and now - self.last_log >= self.log_every:
            self.last_log = now
            emit(self.stream, self.text() + "\n")

    def close(self, final=None):
        """End the bar; ``final`` (a line) replaces it, or is printed off a terminal."""
        if not self.enabled:
            return
        if self.live:
            if final is None:
                if self.line.width:
                    if self.drawn != self.done:      # the last update was skipped by the throttle
                        self.line.draw(self.text())
                    self.line.end()
                return
            self.line.clear()
        if final is not None:
            emit(self.stream, final + "\n")


class EpochProgress:
    """What :func:`npvae.train.fit` shows: a bar per epoch on a terminal, then one line per epoch.

    On a terminal, while an epoch runs::

        epoch 3/20  batch 250/469 [##########..........]  loss 108.214  5,312 samples/s  0:04 left

    and after each epoch (on a terminal or not) one summary line, ending with
    the time the remaining epochs should take at the pace so far. The session's
    first step is left out of the rate and the pace: on a cold Numba cache it
    includes seconds of compiling.

    Parameters
    ----------
    enabled : bool
        False: show nothing.
    epochs, steps : int
        Total epochs, and steps per epoch.
    stream : file, optional
        Default ``sys.stderr``.
    """

    interval = 0.2  # seconds between redraws: ~5 per second

    def __init__(self, enabled, epochs, steps, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.live = enabled and is_terminal(self.stream)
        self.epochs, self.steps = epochs, steps
        self.line = _Line(self.stream)
        self.last = 0.0
        self.epoch_seconds = []      # this session's epochs, for the time left in the run
        # (epoch, step, samples, seconds) at the end of this session's first step, which
        # carries one-off costs (Numba compiling or loading its kernels: seconds on a cold
        # cache): the rest of that epoch is timed from there.
        self.first = None

    def start(self, epoch, step):
        """Before a session's epoch, ``step`` of its steps already done: on a terminal, the
        session's first epoch says it has begun (its first step may take seconds)."""
        if self.live and self.first is None:
            self.line.draw(f"epoch {epoch}/{self.epochs}  batch {step}/{self.steps} {_bar(step / self.steps)}"
                           f"  starting ...")

    def update(self, epoch, step, loss, samples, seconds):
        """After ``step`` (1-based) of ``epoch``: ``samples`` seen and ``seconds`` spent in this epoch."""
        if self.first is None:
            self.first = (epoch, step, samples, seconds)
            if step < self.steps:       # no rate yet: drawn from the next step on
                return
        if not self.live:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and step < self.steps:
            return
        self.last = now
        e0, step0, samples0, seconds0 = self.first
        if epoch == e0 and step > step0:             # time the epoch from its first step's end
            steps, samples, seconds = step - step0, samples - samples0, seconds - seconds0
        else:
            steps = step
        rate = samples / seconds if seconds > 0 else 0.0
        left = seconds / steps * (self.steps - step) if steps else float("inf")
        self.line.draw(f"epoch {epoch}/{self.epochs}  batch {step}/{self.steps} {_bar(step / self.steps)}"
                       f"  loss {_num(loss)}  {rate:,.0f} samples/s  {format_duration(left)} left")

    def summary(self, record):
        """One line for a finished epoch (a :data:`npvae.train.FIELDS` record)."""
        if not self.enabled:
            return
        r = record
        # In a warm-up epoch each step weighs its KL by its own beta, so the line shows the ramp.
        start = r.get("beta_start", r["beta"])
        beta = f"beta {r['beta']:.3g}" if start == r["beta"] else f"warm-up beta {start:.3g}->{r['beta']:.3g}"
        line = (f"epoch {r['epoch']}/{self.epochs}  train {_num(r['train_loss'])} "
                f"(recon {_num(r['train_recon'])}, KL {_num(r['train_kl'])}, {beta})")
        if r["test_loss"] is not None:
            line += f"  test {_num(r['test_loss'])} (recon {_num(r['test_recon'])}, KL {_num(r['test_kl'])})"
        line += f"  {r['train_seconds']:.1f}s + eval {r['eval_seconds']:.1f}s"
        self.epoch_seconds.append(self._epoch_time(r))
        remaining = self.epochs - r["epoch"]
        if remaining > 0:
            pace = sum(self.epoch_seconds) / len(self.epoch_seconds)
            line += f"  ({format_duration(remaining * pace)} left to train)"
        self.message(line)

    def _epoch_time(self, r):
        """The epoch's time for the pace: the session's first epoch as if its first step had
        taken as long as the others."""
        train = r["train_seconds"]
        if self.first is not None and self.first[0] == r["epoch"] and self.steps > self.first[1]:
            _, step0, _, seconds0 = self.first
            train = (train - seconds0) / (self.steps - step0) * self.steps
        return train + r["eval_seconds"]

    def close(self):
        """End a live line (e.g. before an error message)."""
        if self.live:
            self.line.end()

    def message(self, line):
        """Print ``line``, replacing a live progress line."""
        if self.live:
            self.line.clear()
        emit(self.stream, line + "\n")
