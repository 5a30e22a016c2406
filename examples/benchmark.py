"""Benchmark npvae's training speed: the fast path, the reference, the GEMM floor, PyTorch.

Trains the tutorial model (784-400-20, batch 128, Adam 1e-3) on Fashion-MNIST
(60k images; without ``--data-dir``, synthetic images of the same shape when
npvae's lookup finds none) with ``fit(..., backend="numba")`` (the fast path) and ``backend="numpy"``
(the plain reference), and prints medians over several epochs:

* seconds per epoch and samples per second, fast path and reference;
* the GEMM floor: the same step's matrix products alone, timed in this run,
  and the training epoch's ratio to it;
* evaluation time of the 10k test images (ELBO, one z per image);
* peak RSS, ``import npvae`` time, first training step in a fresh process with
  a cold and with a warm Numba cache;
* PyTorch, timed side by side, when ``--torch-python`` (default: this
  interpreter) can import torch. PyTorch is never a dependency of npvae.

npvae and PyTorch each run in their own process, driven round by round from
this one: every round times a reference epoch, a GEMM-floor epoch, a fast-path
epoch and a PyTorch epoch back to back, and the ratios printed are medians of
the per-round ratios, so that the shared machine's slow spells hit all paths
alike. Each npvae path is one ``fit`` call over all the epochs (so the fast path
retires dead units as it does for a user), held between epochs by its callback
until the next round. The first-step timings use fresh processes (``--skip-first-step``
leaves them out, for quicker repeated runs of the epoch timings).

    python examples/benchmark.py --data-dir ../shared/data/fashion-mnist

``--keep-dead-units`` times the fast path with ``fit(..., retire_dead_units=False)``:
two runs, with and without it, show what retiring dead units saves.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 128


def peak_rss_mb():
    """This process's peak resident memory (MiB): ``VmHWM`` on Linux, as in npvae.footprint.

    (``ru_maxrss`` would start from the peak of the process that started this one.) The
    PyTorch part runs in another Python, which need not have npvae: hence not imported.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:     # Windows: no figure
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1024.0 ** (2 if sys.platform == "darwin" else 1)    # macOS counts bytes, others kB


def megabytes(mb):
    return "n/a" if mb is None else f"{mb:.0f}"


def minutes(seconds):
    """``83.4`` -> ``"1:23"``."""
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def load_data(data_dir, n_train=None):
    """(train uint8 (60000, 784), test uint8 (10000, 784), where they came from).

    ``n_train`` keeps only the first training images (quick trials, tests).
    """
    import numpy as np
    from npvae.data import load_dataset
    from npvae.errors import DatasetNotFoundError
    try:
        ds = load_dataset("fashion-mnist", data_dir=data_dir, download=False, progress=False)
        train, test, source = ds.train_images, ds.test_images, f"Fashion-MNIST from {ds.source}"
    except DatasetNotFoundError:
        if data_dir is not None:        # asked for by name: no stand-in (main has checked it already)
            raise
        rng = np.random.default_rng(0)
        # 30% of the pixels on, built from uint8 draws only (float temporaries would inflate peak RSS)
        make = lambda n: (rng.integers(0, 10, (n, 784), dtype=np.uint8) < 3) * rng.integers(0, 256, (n, 784), dtype=np.uint8)
        train, test, source = make(60000), make(10000), "synthetic uint8 (60000, 784)"
    if n_train:
        train, source = train[:n_train], f"{source}, first {n_train} training images"
    return train, test, source


def check_data(ap, data_dir):
    """Read and check Fashion-MNIST once, in the main process, so that a bad file is said before
    any timing (the helper processes' messages go to their logs). Without ``--data-dir``, none
    found means synthetic images, said here; a file that is there but broken is an error."""
    from npvae.errors import DatasetNotFoundError, NpvaeError
    where = "Fashion-MNIST" if data_dir is None else f"--data-dir {data_dir}"
    try:
        n_train = _count_training_images(data_dir)
    except DatasetNotFoundError as e:
        if data_dir is not None:        # asked for: no synthetic stand-in
            from npvae import cli
            ap.exit(2, "\n".join([f"error: {where}: the Fashion-MNIST files are not there. Looked in:",
                                  *cli.places_searched(e),
                                  "To fix: point --data-dir at a folder holding them (or holding fashion-mnist/ "
                                  "with them), or leave it out: npvae looks in $NPVAE_DATA_DIR and its cache, "
                                  "and times synthetic images if it finds none"]) + "\n")
        print("(no Fashion-MNIST found: timing synthetic images of the same shape; --data-dir DIR names "
              "a folder of it)", file=sys.stderr)
        return
    except NpvaeError as e:             # a file that is there but truncated, or another data set's
        hint = "" if data_dir is not None else " (fix or remove that file, or name a folder with --data-dir)"
        ap.exit(2, f"error: {where}: {e}{hint}\n")
    except OSError as e:                # no permission, an I/O error
        ap.exit(2, f"error: {where}: {e.filename} cannot be read: {e.strerror or e}\n")
    if n_train == 0:
        ap.exit(2, f"error: {where}: its training set holds no images\n")


def _count_training_images(data_dir):
    """Load Fashion-MNIST as the runner will; its warnings (an unusable $NPVAE_DATA_DIR) are
    printed as one line each, before any error."""
    from npvae.data import load_dataset
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        try:
            return len(load_dataset("fashion-mnist", data_dir=data_dir, download=False, progress=False).train_images)
        finally:
            for w in said:
                print(f"warning: {w.message}", file=sys.stderr)


# -- the timed parts: runners driven by the main process, one-shot parts -------------
class FitInRounds:
    """One ``fit`` call over all the epochs, run one epoch per :meth:`epoch` call.

    fit runs in a thread of its own and its callback waits, after each epoch, until
    the next call: the epochs of every path can then alternate, round by round.
    """

    def __init__(self, fit, model, images, backend, epochs, retire_dead_units=True):
        import queue
        import threading
        self.records, self.go, self.stopping = queue.Queue(), threading.Semaphore(0), False

        def callback(record, model):
            self.records.put(record)
            self.go.acquire()
            return not self.stopping        # False: fit stops here

        self.thread = threading.Thread(target=fit, daemon=True, args=(model, images), kwargs=dict(
            epochs=epochs, batch_size=BATCH, rng=0, progress=False, backend=backend, callback=callback,
            retire_dead_units=retire_dead_units))
        self.started = False

    def epoch(self):
        """Train the next epoch; its record."""
        if self.started:
            self.go.release()
        else:
            self.thread.start()
            self.started = True
        return self.records.get()

    def finish(self):
        """Stop fit after the epoch it has done."""
        self.stopping = True
        self.go.release()
        self.thread.join()


class NpvaeRunner:
    """Both paths and the GEMM floor, in one process the main process drives.

    Each ``train_round`` times a reference epoch, a GEMM-floor epoch and a fast-path
    epoch back to back, so a slow spell of the machine hits all three and the
    ratios (medians over rounds) stay meaningful.
    """

    def __init__(self, args):
        import npvae
        from npvae.evaluate import evaluate_elbo
        from npvae.train import fit
        self.evaluate_elbo = evaluate_elbo
        self.train, self.test, self.source = load_data(args.data_dir, args.train_images)
        # load every Numba kernel (training and evaluation) before the timed rounds
        warm = npvae.VAE(784, 400, 20, rng=1)
        fit(warm, self.train[:2 * BATCH], self.test[:BATCH], epochs=1, batch_size=BATCH, progress=False,
            backend="numba")
        self.models = {backend: npvae.VAE(784, 400, 20, rng=0) for backend in ("numba", "numpy")}
        self.runs = {backend: FitInRounds(fit, model, self.train, backend, args.epochs,
                                          retire_dead_units=not args.keep_dead_units)   # fast path only
                     for backend, model in self.models.items()}
        self.train_loss = {}

    def train_round(self):
        # The reference epoch first and the fast one last: the headline ratio's two epochs,
        # the fast path's here and PyTorch's in the next process, then run back to back.
        out = {}
        for name in ("numpy", "floor", "numba"):
            if name == "floor":
                out[name] = gemm_floor(self.models["numba"], len(self.train))
                continue
            record = self.runs[name].epoch()
            out[name] = record["train_seconds"]
            self.train_loss[name] = record["train_loss"]
        return {k: out[k] for k in ("floor", "numba", "numpy")}

    def eval_round(self):
        out = {}
        for name in ("numpy", "numba"):   # the fast path's next to PyTorch's, as in train_round
            t0 = time.perf_counter()
            self.evaluate_elbo(self.models[name], self.test, seed=0, backend=name)
            out[name] = time.perf_counter() - t0
        return {k: out[k] for k in ("numba", "numpy")}

    def finish(self):
        for run in self.runs.values():
            run.finish()
        return dict(source=self.source, n_train=len(self.train), rss_mb=peak_rss_mb(), train_loss=self.train_loss)


def gemm_floor(model, n_train):
    """Seconds per epoch of the GEMMs one training step needs, and nothing else.

    The same products the fast path's backward computes (no gradient for the data),
    with the same shapes and memory layout (column-major batches, activations and
    weights, :mod:`npvae.fast.layout`), through the same BLAS: forward ``x @ W`` for
    every Dense, then ``dW = x.T @ g`` for every Dense and ``dx = g @ W.T`` for all
    but the first. All of every product: the fast path's skipping of dead units is
    not credited to the floor.
    """
    import numpy as np
    rng = np.random.default_rng(0)
    weights = [np.asfortranarray(m.weight.data) for m in model.modules() if type(m).__name__ == "Dense"]

    def steps(B, n):
        xs = [np.asfortranarray(rng.random((B, W.shape[0]), dtype=np.float32)) for W in weights]
        ys = [np.empty((B, W.shape[1]), np.float32, order="F") for W in weights]
        dxs = [np.empty_like(x, order="F") for x in xs]
        dWs = [np.empty_like(W, order="F") for W in weights]
        t0 = time.perf_counter()
        for _ in range(n):
            for W, x, y in zip(weights, xs, ys):
                np.matmul(x, W, out=y)
            for i in reversed(range(len(weights))):
                np.matmul(xs[i].T, ys[i], out=dWs[i])
                if i > 0:
                    np.matmul(ys[i], weights[i].T, out=dxs[i])
        return time.perf_counter() - t0

    full, last = divmod(n_train, BATCH)
    steps(BATCH, 10)  # warm up
    return steps(BATCH, full) + (steps(last, 1) if last else 0.0)


class TorchRunner:
    """The PyTorch example's model and loop (as in the reference run), same data and settings."""

    def __init__(self, args):
        import numpy as np
        import torch
        from torch import nn
        from torch.nn import functional as F
        self.torch, self.F = torch, F
        torch.set_num_threads(args.threads)
        train, test, _ = load_data(args.data_dir, args.train_images)
        self.xtr = torch.from_numpy(train.astype(np.float32) / 255)
        self.xte = torch.from_numpy(test.astype(np.float32) / 255)

        class VAE(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
                self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

            def forward(self, x):
                h = F.relu(self.fc1(x))
                mu, logvar = self.fc21(h), self.fc22(h)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

        torch.manual_seed(0)
        self.model = VAE()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.g = torch.Generator().manual_seed(0)

    def loss(self, recon, x, mu, logvar):
        return (self.F.binary_cross_entropy(recon, x, reduction="sum")
                - 0.5 * self.torch.sum(1 + logvar - mu.pow(2) - logvar.exp()))

    def train_round(self):
        xtr, model, opt = self.xtr, self.model, self.opt
        model.train()
        t0 = time.perf_counter()
        perm = self.torch.randperm(len(xtr), generator=self.g)
        for i in range(0, len(xtr), BATCH):
            data = xtr[perm[i:i + BATCH]]
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = self.loss(recon, data, mu, logvar)
            loss.backward()
            opt.step()
        return dict(pytorch=time.perf_counter() - t0)

    def eval_round(self):
        self.model.eval()
        t0 = time.perf_counter()
        with self.torch.no_grad():
            for i in range(0, len(self.xte), BATCH):
                data = self.xte[i:i + BATCH]
                recon, mu, logvar = self.model(data)
                self.loss(recon, data, mu, logvar)
        return dict(pytorch=time.perf_counter() - t0)

    def finish(self):
        return dict(rss_mb=peak_rss_mb(), torch=self.torch.__version__)


def spread(values):
    """How much per-round ratios scatter on a noisy machine: their range and middle half."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return f"rounds {min(values):.2f}-{max(values):.2f}, middle half {q1:.2f}-{q3:.2f}"


def part_first_step(args):
    """In a fresh process: ``import npvae``, then build the model and take one fast training step.

    The step's time covers what the first use of the fast path costs: importing
    Numba, its one-time set-up, and loading (or compiling, with a cold cache) each
    kernel the step runs.
    """
    t0 = time.perf_counter()
    import numpy as np
    import npvae
    t1 = time.perf_counter()
    from npvae.fast import Trainer
    model = npvae.VAE(rng=0)
    trainer = Trainer(model, npvae.Adam(model.parameters()))
    trainer.step(np.random.default_rng(0).random((BATCH, 784), dtype=np.float32))
    t2 = time.perf_counter()
    return dict(import_s=t1 - t0, first_step_s=t2 - t1, from_start_s=t2 - t0)


RUNNERS = dict(npvae=NpvaeRunner, torch=TorchRunner)
PARTS = dict(first_step=part_first_step)


def serve(runner_class, args):
    """A runner in its own process: one command (a method name) per stdin line, one JSON line back."""
    runner = runner_class(args)
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        command = line.strip()
        print(json.dumps(getattr(runner, command)()), flush=True)
        if command == "finish":
            return


def _command(python, part, args):
    cmd = [python, os.path.abspath(__file__), "--part", part, "--threads", str(args.threads),
           "--epochs", str(args.epochs)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.train_images:
        cmd += ["--train-images", str(args.train_images)]
    if args.keep_dead_units:
        cmd += ["--keep-dead-units"]
    return cmd


def _env(args, env=None):
    threads = {k: str(args.threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **threads, **(env or {}))


class PartFailed(RuntimeError):
    """A child process of the benchmark ended before it answered: how it ended, and its error."""

    def __init__(self, part, returncode, stderr):
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        errors = [line for line in stderr.splitlines() if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", line)]
        super().__init__(f"the {part} part failed ({how})" + (f": {errors[-1]}" if errors else ""))
        self.stderr = stderr


class Worker:
    """The main process's handle on a runner (:func:`serve`) in a child process."""

    def __init__(self, python, part, args):
        self.part, self.log = part, tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(_command(python, part, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=_env(args))
        self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self._failed()
        return json.loads(line)

    def _failed(self):
        self.proc.wait()
        self.log.seek(0)
        raise PartFailed(self.part, self.proc.returncode, self.log.read())

    last = None         # the worker that ran the latest command

    def __call__(self, command):
        """Run ``command`` in the child, after a pause that lets the other process's idle
        BLAS and OpenMP threads stop spinning (OpenBLAS spins about 0.1 s), if it ran the
        command before this one (with --skip-torch there is no other: no pause)."""
        if Worker.last is not self:
            time.sleep(0.3)
        Worker.last = self
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:         # it has ended already: say how
            self._failed()
        out = self._read()
        if command == "finish":
            self.proc.wait(timeout=60)
        return out


def run_part(python, part, args, env=None):
    """A one-shot part in a fresh process; its one JSON line."""
    r = subprocess.run(_command(python, part, args), capture_output=True, text=True, env=_env(args, env))
    if r.returncode != 0:
        raise PartFailed(part, r.returncode, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a usage error in one line, as npvae's programs give it. (Not npvae.cli's:
    the first-step part times ``import npvae`` in a fresh process, so nothing imports it first.)"""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def whole_number(text):
    """An argparse ``type``: an int of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def folder(text):
    """An argparse ``type``: a folder's path, ``~`` expanded; an empty one (``--data-dir "$UNSET"``) is refused."""
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, got ''")
    return os.path.expanduser(text)


MAX_THREADS = 256


def thread_count(text):
    """:func:`whole_number`, at most :data:`MAX_THREADS` (OpenMP and the BLAS take any number, and
    start them: a slip of a few digits must not ask for that on a shared machine)."""
    value = whole_number(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS} (this machine has {os.cpu_count()} "
                                         f"cores), got {value}")
    return value


def main():
    ap = ArgumentParser(description=(__doc__ or "").split("\n")[0])      # (-OO: no docstrings)
    ap.add_argument("--data-dir", type=folder, default=None,
                    help="folder with Fashion-MNIST's IDX files (default: npvae's lookup)")
    ap.add_argument("--epochs", type=whole_number, default=5,
                    help="timed epochs per path (medians are printed; default: 5)")
    ap.add_argument("--threads", type=thread_count, default=2, help="BLAS and PyTorch threads (default: 2)")
    ap.add_argument("--torch-python", type=os.path.expanduser, default=None,
                    help="interpreter to time PyTorch with (default: this one, skipped if it has no torch)")
    ap.add_argument("--skip-torch", action="store_true", help="time npvae only")
    ap.add_argument("--skip-first-step", action="store_true",
                    help="leave out the first-step timings in fresh processes (10-25 s, a cold compile included)")
    ap.add_argument("--train-images", type=whole_number, default=None,
                    help="train on only the first N images (a quick trial; the figures are then not comparable)")
    ap.add_argument("--keep-dead-units", action="store_true",
                    help="time the fast path with fit(..., retire_dead_units=False), to measure what retiring saves")
    ap.add_argument("--part", choices=sorted(PARTS) + sorted(RUNNERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part in RUNNERS:
        return serve(RUNNERS[args.part], args)
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return
    check_data(ap, args.data_dir)
    has_torch = False
    named = args.torch_python is not None           # asked for by name: no torch is an error, not a skip
    args.torch_python = args.torch_python or sys.executable
    if not args.skip_torch:
        try:
            has_torch = subprocess.run([args.torch_python, "-c", "import torch"], capture_output=True).returncode == 0
        except OSError as e:
            ap.error(f"--torch-python {args.torch_python}: cannot run it ({e.strerror})")
        if not has_torch and named:
            ap.error(f"--torch-python {args.torch_python}: cannot import torch (or use --skip-torch)")

    med = statistics.median
    print(f"npvae benchmark: 784-400-20, batch {BATCH}, Adam 1e-3, {args.threads} BLAS threads, "
          f"medians over {args.epochs} epochs per path"
          + ("; the fast path keeps its dead units" if args.keep_dead_units else ""), flush=True)
    workers = {"npvae": Worker(sys.executable, "npvae", args)}
    if has_torch:
        workers["torch"] = Worker(args.torch_python, "torch", args)
    elif not args.skip_torch:
        print(f"(PyTorch not importable by {args.torch_python}: skipped)")
    # Round by round, each process in turn (the other one idle), so that a slow
    # spell of this shared machine hits every path: the per-round ratios are fair.
    epochs, evals = [], []
    start = time.perf_counter()
    for r in range(args.epochs):
        epochs.append({k: v for w in workers.values() for k, v in w("train_round").items()})
        left = (time.perf_counter() - start) / (r + 1) * (args.epochs - r - 1)
        print(f"  round {r + 1}/{args.epochs}: " + ", ".join(f"{k} {v:.2f} s" for k, v in epochs[-1].items())
              + (f"  ({minutes(left)} left in the rounds)" if left else ""), flush=True)
    for _ in range(7):
        evals.append({k: v for w in workers.values() for k, v in w("eval_round").items()})
    res = workers["npvae"]("finish")
    th = workers["torch"]("finish") if "torch" in workers else None
    print(f"data: {res['source']}", flush=True)
    if not args.skip_first_step:
        print("timing the first training step in fresh processes (1 cold, 5 warm) ...", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            cold = run_part(sys.executable, "first_step", args, env)
            warm = [run_part(sys.executable, "first_step", args, env) for _ in range(5)]

    n = res["n_train"]
    col = lambda rounds, key: [r[key] for r in rounds]
    per_round = lambda rounds, a, b: [x / y for x, y in zip(col(rounds, a), col(rounds, b))]
    ratio = lambda a, b: med(per_round(epochs, a, b))   # median of per-round ratios
    t = {k: med(col(epochs, k)) for k in epochs[0]}
    e = {k: med(col(evals, k)) for k in evals[0]}
    rows = [("path", "s/epoch", "samples/s", "x GEMM floor", "eval 10k (s)", "peak RSS (MB)")]
    rows.append(("GEMM floor (BLAS only)", f"{t['floor']:.3f}", f"{n / t['floor']:,.0f}", "1.00", "", ""))
    fast_name = "npvae fast, all units" if args.keep_dead_units else "npvae fast (numba)"
    rows.append((fast_name, f"{t['numba']:.3f}", f"{n / t['numba']:,.0f}", f"{ratio('numba', 'floor'):.2f}",
                 f"{e['numba']:.3f}", f"{megabytes(res['rss_mb'])}*"))
    rows.append(("npvae reference", f"{t['numpy']:.3f}", f"{n / t['numpy']:,.0f}", f"{ratio('numpy', 'floor'):.2f}",
                 f"{e['numpy']:.3f}", "*"))
    if th:
        rows.append((f"pytorch {th['torch']}", f"{t['pytorch']:.3f}", f"{n / t['pytorch']:,.0f}",
                     f"{ratio('pytorch', 'floor'):.2f}", f"{e['pytorch']:.3f}", megabytes(th['rss_mb'])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("* one process trains both npvae paths; its peak RSS covers both models, the data and Numba's compiler")
    print("(ratios are medians of per-round ratios: each round times every path once, back to back)")
    print()
    speedup = ratio('numpy', 'numba')
    print(f"fast path vs reference: {speedup if speedup >= 1 else 1 / speedup:.3f}x "
          f"{'faster' if speedup >= 1 else 'slower'} "
          f"({spread(per_round(epochs, 'numpy', 'numba'))})")
    if th:
        print(f"fast epoch{' (all units)' * args.keep_dead_units} / pytorch epoch: "
              f"{ratio('numba', 'pytorch'):.3f} (target <= 0.5; "
              f"{spread(per_round(epochs, 'numba', 'pytorch'))})")
        print(f"reference epoch / pytorch epoch: {ratio('numpy', 'pytorch'):.3f} (no target; "
              f"{spread(per_round(epochs, 'numpy', 'pytorch'))})")
        e_ratios = per_round(evals, "pytorch", "numba")
        print(f"pytorch eval / fast eval: {med(e_ratios):.3f}x (target > 1; {spread(e_ratios)})")
    if not args.skip_first_step:
        print(f"import npvae: {med(w['import_s'] for w in warm):.3f} s (median of {len(warm)} fresh processes)")
        print(f"first training step in a fresh process, after the import: cold Numba cache "
              f"{cold['first_step_s']:.2f} s, warm {med(w['first_step_s'] for w in warm):.2f} s "
              f"(median of {len(warm)}; from process start, warm: {med(w['from_start_s'] for w in warm):.2f} s)")
    loss = res["train_loss"]
    print(f"train loss after {args.epochs} epoch{'s' * (args.epochs != 1)} (fast / reference): {loss['numba']:.2f} / {loss['numpy']:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # the helper processes read their end of the pipe and exit too
        print("\nstopped: interrupted by SIGINT", file=sys.stderr)
        sys.exit(130)
    except PartFailed as e:         # what it said last, under the line that says how it ended
        tail = e.stderr.strip().splitlines()[-20:]
        print("\n".join([f"error: {e}", *(["its last messages:"] if tail else []), *("  | " + t for t in tail)]),
              file=sys.stderr)
        sys.exit(1)
    except OSError as e:            # stdout's reader left (| head), or it is a full disk: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())    # Python's flush at exit fails no more
        if isinstance(e, BrokenPipeError):
            sys.exit(128 + 13)      # SIGPIPE's status, as a shell reports a writer whose reader left
        print(f"error: {'' if e.filename is None else f'{e.filename}: '}{e.strerror or e}", file=sys.stderr)
        sys.exit(1)
