"""Compile the Numba kernels in a short-lived child process when the disk cache is cold.

Compiling is the only time Numba's compiler runs, and it leaves about 50-60 MB of
its state in the process for good (typing and LLVM objects that ``gc`` and
``malloc_trim`` do not give back): the very first training run of a fresh install
peaked at 292 MB against 236 MB for every later run, which loads the compiled
kernels from the cache instead. So the first time the Numba back end is asked
for (:func:`npvae.kernels.get`), :func:`ensure_compiled` checks whether the cache
already holds the float32 kernels and, if not, runs ``python -m
npvae.kernels.precompile`` in a child process, which compiles them into the
cache by running a tiny model through every float32 path; the calling process
then only loads them. Same kernels, same results; the child takes about the
time the compiling takes anyway (20-40 s, once per install and per change of
``numba_kernels.py``), though a process that only trains now also waits for the
evaluation kernels.

``NPVAE_COMPILE_IN_CHILD=0`` turns this off (compile in the process itself, as
Numba does by default). Run ``python -m npvae.kernels.precompile`` yourself to
fill the cache ahead of time (e.g. when building a container image).
"""
import os
import subprocess
import sys
import time

import numpy as np

ENV = "NPVAE_COMPILE_IN_CHILD"
_checked = False


def _enabled():
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_is_warm():
    """True if Numba's disk cache holds this version's float32 training kernels.

    Asks the cache for one of them (``add_bias`` on a column-major float32 batch,
    compiled by every float32 training run), with the lookup Numba itself makes
    before compiling: a hit loads the compiled code, a miss compiles nothing.
    That one kernel stands for all: the child compiles them all in one go. If
    the lookup is not possible (no JIT, a Numba without this internal API), the
    answer is True, i.e. Numba's own behaviour: compile on first use, in process.
    """
    import numba
    if numba.config.DISABLE_JIT:
        return True
    from . import numba_kernels
    kernel = numba_kernels.add_bias
    sig = (numba.typeof(np.empty((2, 2), np.float32, order="F")), numba.typeof(np.empty(2, np.float32)))
    try:
        return kernel._cache.load_overload(sig, kernel.targetctx) is not None
    except Exception:  # noqa: BLE001 - a Numba internal changed: fall back to Numba's default
        return True


def ensure_compiled():
    """Once per process: if the kernel cache is cold, fill it from a child process.

    Called by :func:`npvae.kernels.get` the first time the Numba back end is used.
    Any failure of the child (no usable ``sys.executable``, a crash, an unwritable
    cache) leaves things as they were: the kernels then compile in this process.
    """
    global _checked
    if _checked:
        return
    _checked = True
    # a frozen application's sys.executable is the application itself, not Python
    if not _enabled() or not sys.executable or getattr(sys, "frozen", False) or cache_is_warm():
        return
    if sys.stderr is not None and sys.stderr.isatty():
        print("npvae: compiling the Numba kernels into the disk cache (first use only, 20-40 s)...",
              file=sys.stderr, flush=True)
    # the child compiles in itself, and imports this very npvae
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, **{ENV: "0", "PYTHONPATH": path})
    try:
        subprocess.run([sys.executable, "-m", __name__], env=env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.SubprocessError):
        pass  # compile in this process instead, as Numba would


def compile_float32():
    """Run a tiny model through every float32 path once: each kernel compiles (or loads).

    Training (column-major batches, Adam with dead-unit columns, SGD), evaluation and
    the importance-weighted NLL (row-major batches), sampling, reconstructing,
    interpolating. Sizes do not matter to Numba, only dtypes and memory layouts.
    """
    from ..evaluate import evaluate_elbo, iw_nll
    from ..model import VAE
    from ..optim import SGD
    from ..train import fit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 12), dtype=np.uint8)
    model = VAE(12, 16, 2, rng=0, backend="numba")
    # half of the encoder's units dead (as in a trained model), so that backward
    # takes its live-columns path and Adam its column kernel, and (second epoch)
    # training skips them once they are proven dead (npvae.dead_units)
    model.encoder[0].bias.data[:8] = -1e3
    fit(model, images, images[:16], epochs=2, batch_size=16, progress=False)
    model.encoder[0].weight.grad  # writes out the gradient held as columns
    fit(model, images, epochs=1, batch_size=16, progress=False, binarize=True,
        optimizer=SGD(model.parameters(), lr=1e-3, momentum=0.9))
    evaluate_elbo(model, images)
    iw_nll(model, images[:4], k=3)
    model.sample(3)
    model.reconstruct(images[:3].astype(np.float32) / 255)
    model.interpolate(images[0].astype(np.float32) / 255, images[1].astype(np.float32) / 255, steps=3)


def main():
    global _checked
    _checked = True  # this process is the one that compiles
    t0 = time.perf_counter()
    compile_float32()
    print(f"npvae kernels compiled (or loaded) into the Numba cache in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
