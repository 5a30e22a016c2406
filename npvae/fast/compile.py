"""Compile the fast path's kernels ahead of time: ``python -m npvae.fast.compile``.

Numba compiles each kernel the first time it is called with a given set of
dtypes (20-40 s for all of them on a 2-core machine, more when it is busy) and keeps the result in its disk
cache (the first of ``$NUMBA_CACHE_DIR``, ``__pycache__`` next to :mod:`npvae.fast.kernels`
and the user's cache, ``~/.cache/numba`` on Linux, that it can write to), so every later run
only loads them. Training compiles what it needs on its own; run this once to take that wait
out of the first run (say, when building a container image). Numba uses a cache folder only
if the process can write to it: run this as the user who will train, or point
``NUMBA_CACHE_DIR`` at a folder that user can write (a cache that root filled and another
user may only read is passed over, and that user compiles again). It runs a tiny model
through every float32 path of the fast path in this process: training with Adam (live
columns and retired units included) and SGD, and evaluation.
"""
import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import traceback

import numpy as np

from ..atomic import NO_ROOM_ERRNOS
from ..progress import emit


def compile_kernels(dtypes=(np.float32,), say=None):
    """Run every fast path once for each dtype in ``dtypes``: each kernel compiles or loads.
    ``say(line)``, if given, is told each path as it starts (a cold compile is 20-40 s of them)."""
    from ..model import VAE
    from ..optim import SGD, Adam
    from .inference import Evaluator
    from .trainer import Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 12), dtype=np.uint8)
    paths = ["training with Adam", "training with SGD", "evaluation", "a code of one number"]
    t0, done = time.perf_counter(), 0

    def starting(dtype, what):
        nonlocal done
        done += 1
        if say is not None:
            say(f"  ({done}/{len(paths) * len(dtypes)}) {np.dtype(dtype).name}, {what} "
                f"[{time.perf_counter() - t0:.0f} s]")

    for dtype in dtypes:
        starting(dtype, paths[0])
        model = VAE(12, 16, 2, dtype=dtype, rng=0)
        model.encoder[0].bias.data[:10] = -1e3   # units off for every image: live columns, then retired
        with Trainer(model, Adam(model.parameters()), images=images, batch_size=16,
                     retire_dead_units=True) as trainer:
            for _ in range(2):
                trainer.begin_epoch()
                for start in range(0, len(images), 16):
                    trainer.step(trainer.batch(np.arange(start, start + 16)))
                trainer.end_epoch()
        starting(dtype, paths[1])
        with Trainer(model, SGD(model.parameters(), momentum=0.9), images=images) as trainer:
            trainer.step(trainer.batch(np.arange(16)))
        starting(dtype, paths[2])
        evaluator = Evaluator(model)                 # what evaluate_elbo and iw_nll run
        x = evaluator.prepare(images.astype(dtype) / 255)
        h = evaluator.encode(x)
        evaluator.recon_rows(h[:, :2] + np.exp(0.5 * h[:, 2:]), x)
        # a code of one number: its (B, 1) arrays are C order as well as F, which Numba types apart
        starting(dtype, paths[3])
        one = VAE(12, 16, 1, dtype=dtype, rng=0)
        with Trainer(one, Adam(one.parameters()), images=images) as trainer:
            trainer.step(trainer.batch(np.arange(16)))


def main(argv=None):
    """The command line; returns the exit status (130 after Ctrl-C, 143 after SIGTERM).

    What it prints is for people: a closed pipe or a full disk on stdout does not stop the
    compiling, whose result is the cache (the status says how it went)."""
    p = _Parser(prog="python -m npvae.fast.compile", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Compile the fast path's kernels ahead of time, into Numba's disk cache.",
                epilog="exit status:\n  0    done (or nothing to compile: NUMBA_DISABLE_JIT is set)\n"
                       "  1    no folder to keep the kernels in, or no room in it\n  2    bad usage\n"
                       "  130  stopped by Ctrl-C (SIGINT); 143: stopped by SIGTERM. What was compiled\n"
                       "       is kept")
    p.add_argument("--float64", action="store_true", help="also the float64 kernels (gradient checks, tests)")
    args = p.parse_args(argv)
    stop = _nothing_to_keep()
    if stop:
        status, message = stop
        emit(sys.stderr, f"npvae: {message}\n")
        return status
    if problem := _given_cache_dir_problem():
        emit(sys.stderr, f"npvae: warning: {problem}\n")
    emit(sys.stdout, "npvae: compiling the fast path's kernels into Numba's cache (20-40 s the first time) ...\n")
    t0 = time.perf_counter()
    finished = False
    with _noting_signals() as stopped_by:
        try:
            compile_kernels((np.float32, np.float64) if args.float64 else (np.float32,),
                            say=lambda line: emit(sys.stdout, line + "\n"))
        except OSError as e:        # Numba's write into its cache (a full disk, ulimit -f) names no file
            if e.errno not in NO_ROOM_ERRNOS:
                raise
            from .kernels import cache_places
            emit(sys.stderr, f"npvae: error: no room to keep the kernels in Numba's cache ({e.strerror}; it is "
                             f"the first of {cache_places()} that can be written): free some space there, or raise "
                             f"the file-size limit (ulimit -f), or set NUMBA_CACHE_DIR to a folder with room, and "
                             f"run this again\n")
            return 1
        finished = True
    if stopped_by:      # Numba's cache keeps what was compiled so far
        return _stopped(finished, stopped_by[0])
    emit(sys.stdout, f"npvae: the fast path's kernels are compiled (or were loaded) into Numba's cache in "
                     f"{time.perf_counter() - t0:.1f} s\n")
    return 0


def _nothing_to_keep():
    """``(exit status, message)`` when compiling ahead would keep nothing (no JIT, or no cache
    folder); None when it will."""
    import numba
    if numba.config.DISABLE_JIT:
        return 0, "nothing to compile: NUMBA_DISABLE_JIT is set, so the kernels run as plain Python"
    from .kernels import CACHED, cache_places
    if not CACHED:
        return 1, (f"error: Numba finds no folder to keep the kernels in (none of {cache_places()} can be "
                   f"written): set NUMBA_CACHE_DIR to a folder you can write and run this again")
    return None


def _given_cache_dir_problem():
    """Why ``$NUMBA_CACHE_DIR``, if set, will not hold the kernels for later runs, or None: Numba
    passes over a folder it cannot write to, and takes a relative one from the current folder.
    The folder is created if missing, as Numba would create it."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    if not given:
        return None
    try:
        os.makedirs(given, exist_ok=True)       # as Numba would
        with tempfile.TemporaryFile(dir=given):
            pass
    except OSError as e:
        from .kernels import user_cache
        return (f"NUMBA_CACHE_DIR={given!r} cannot be written ({e.strerror or e}): Numba keeps the kernels "
                f"in the next folder it can write to, if any (__pycache__ beside npvae/fast/kernels.py, "
                f"else {user_cache()})")
    if not os.path.isabs(given):
        return (f"NUMBA_CACHE_DIR={given!r} is relative: the kernels go into {os.path.abspath(given)}, "
                f"where a run started from another folder will not look; give a full path")
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message):       # one line, as npvae's programs say it (npvae.cli sits above the fast path)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM",
                 **({signal.SIGBREAK: "Ctrl-Break"} if hasattr(signal, "SIGBREAK") else {})}


def _stopped(finished=False, signum=signal.SIGINT):
    what = _SIGNAL_NAMES[signum]
    emit(sys.stderr, f"npvae: stopped ({what}) after compiling had finished anyway: the kernels are in the cache\n"
         if finished else f"npvae: compiling stopped ({what}); run it again to finish\n")
    return 128 + signum


@contextlib.contextmanager
def _noting_signals():
    """Note a Ctrl-C (SIGINT) or SIGTERM in the list it yields, and end the block quietly after one.

    The KeyboardInterrupt the handler raises may land inside Numba's compiler, which can
    turn it into another error (a RuntimeError) or swallow it (Python then prints it as
    "Exception ignored ... ctypes callback"): so whether a signal came is noted by the handler,
    not read off the exception that ends the block, and a swallowed one is not printed."""
    noted = []

    def handler(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    def unraisable(info, print_it=sys.unraisablehook):
        # once a signal came, an object it left half built may fail as it goes (llvmlite's
        # ObjectRef without _as_parameter_): fallout of the interrupt, not worth printing
        if not (noted or isinstance(info.exc_value, KeyboardInterrupt)):
            print_it(info)

    # a signal ignored at the start (nohup) stays ignored, and one whose handler Python does not
    # know (None: set outside Python) is left alone: it could not be given back
    previous = {signum: signal.signal(signum, handler) for signum in _SIGNAL_NAMES
                if signal.getsignal(signum) not in (signal.SIG_IGN, None)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield noted
    except BaseException as e:
        if not noted:
            raise
        traceback.clear_frames(e.__traceback__)     # what those frames held goes now, under this hook
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)
        sys.unraisablehook = previous_hook


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:       # a Ctrl-C before main's own handler is in place
        sys.exit(_stopped())
