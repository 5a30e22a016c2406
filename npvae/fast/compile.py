"""Compile the fast path's kernels ahead of time: ``python -m npvae.fast.compile``.

Numba compiles each kernel the first time it is called with a given set of
dtypes (about 6 s for all of them on a 2-core machine) and keeps the result in its disk
cache (``__pycache__`` next to :mod:`npvae.fast.kernels`, or ``$NUMBA_CACHE_DIR``),
so every later run only loads them. Training compiles what it needs on its own;
run this once to take that wait out of the first run (say, when building a
container image). It runs a tiny model through every float32 path of the fast
path in this process: training with Adam (live columns and retired units
included) and SGD, and evaluation.
"""
import argparse
import contextlib
import signal
import sys
import time

import numpy as np


def compile_kernels(dtypes=(np.float32,)):
    """Run every fast path once for each dtype in ``dtypes``: each kernel compiles or loads."""
    from ..model import VAE
    from ..optim import SGD, Adam
    from .inference import Evaluator
    from .trainer import Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 12), dtype=np.uint8)
    for dtype in dtypes:
        model = VAE(12, 16, 2, dtype=dtype, rng=0)
        model.encoder[0].bias.data[:10] = -1e3   # units off for every image: live columns, then retired
        with Trainer(model, Adam(model.parameters()), images=images, batch_size=16,
                     retire_dead_units=True) as trainer:
            for _ in range(2):
                trainer.begin_epoch()
                for start in range(0, len(images), 16):
                    trainer.step(trainer.batch(np.arange(start, start + 16)))
                trainer.end_epoch()
        with Trainer(model, SGD(model.parameters(), momentum=0.9), images=images) as trainer:
            trainer.step(trainer.batch(np.arange(16)))
        evaluator = Evaluator(model)                 # what evaluate_elbo and iw_nll run
        x = evaluator.prepare(images.astype(dtype) / 255)
        h = evaluator.encode(x)
        evaluator.recon_rows(h[:, :2] + np.exp(0.5 * h[:, 2:]), x)


def main(argv=None):
    """The command line; returns the exit status (130 after Ctrl-C)."""
    p = argparse.ArgumentParser(prog="python -m npvae.fast.compile", description=__doc__.splitlines()[0])
    p.add_argument("--float64", action="store_true", help="also the float64 kernels (gradient checks, tests)")
    args = p.parse_args(argv)
    stop = _nothing_to_keep()
    if stop:
        status, message = stop
        print(f"npvae: {message}", file=sys.stderr)
        return status
    print("npvae: compiling the fast path's kernels into Numba's cache (about 6 s the first time) ...",
          flush=True)
    t0 = time.perf_counter()
    finished = False
    with _noting_ctrl_c() as ctrl_c:
        compile_kernels((np.float32, np.float64) if args.float64 else (np.float32,))
        finished = True
    if ctrl_c:      # Numba's cache keeps what was compiled so far
        return _stopped(finished)
    print(f"npvae: the fast path's kernels are compiled (or were loaded) into Numba's cache in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def _nothing_to_keep():
    """``(exit status, message)`` when compiling ahead would keep nothing (no JIT, or no cache
    folder); None when it will."""
    import numba
    if numba.config.DISABLE_JIT:
        return 0, "nothing to compile: NUMBA_DISABLE_JIT is set, so the kernels run as plain Python"
    from .kernels import CACHED
    if not CACHED:
        return 1, ("error: Numba finds no folder to keep the kernels in (the package's __pycache__ and "
                   "~/.cache are not writable): set NUMBA_CACHE_DIR to a writable folder and run this again")
    return None


def _stopped(finished=False):
    print("npvae: stopped (Ctrl-C) after compiling had finished anyway: the kernels are in the cache"
          if finished else "npvae: compiling stopped (Ctrl-C); run it again to finish", file=sys.stderr)
    return 130


@contextlib.contextmanager
def _noting_ctrl_c():
    """Note a Ctrl-C (SIGINT) in the list it yields, and end the block quietly after one.

    The KeyboardInterrupt that Ctrl-C raises may land inside Numba's compiler, which can
    turn it into another error (a RuntimeError) or swallow it (Python then prints it as
    "Exception ignored ... ctypes callback"): so whether Ctrl-C came is noted by the handler,
    not read off the exception that ends the block, and a swallowed one is not printed."""
    noted = []

    def handler(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    def unraisable(info, print_it=sys.unraisablehook):
        if not isinstance(info.exc_value, KeyboardInterrupt):
            print_it(info)

    previous, previous_hook = signal.signal(signal.SIGINT, handler), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield noted
    except BaseException:
        if not noted:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:       # a Ctrl-C before main's own handler is in place
        sys.exit(_stopped())
