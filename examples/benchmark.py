"""Benchmark npvae's training speed: Numba path, NumPy path, the GEMM floor, PyTorch.

Trains the tutorial model (784-400-20, batch 128, Adam 1e-3) on Fashion-MNIST
(60k images; synthetic images of the same shape when the data set is not
found) and prints medians over several epochs:

* seconds per epoch and samples per second, Numba path and NumPy path;
* the GEMM floor: the same step's matrix products alone, timed in this run,
  and the training epoch's ratio to it;
* evaluation time of the 10k test images (ELBO, one z per image);
* peak RSS, ``import npvae`` time, first training step in a fresh process with
  a cold and with a warm Numba cache;
* PyTorch, timed side by side, when ``--torch-python`` (default: this
  interpreter) can import torch. PyTorch is never a dependency of npvae.

Each part runs in its own fresh process so that thread pools, caches and
peak memory do not leak from one into another.

    python examples/benchmark.py --data-dir ../shared/data/fashion-mnist
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 128


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_data(data_dir):
    """(train uint8 (60000, 784), test uint8 (10000, 784), where they came from)."""
    import numpy as np
    from npvae.data import load_dataset
    from npvae.errors import NpvaeError
    try:
        ds = load_dataset("fashion-mnist", data_dir=data_dir, download=False, progress=False)
        return ds.train_images, ds.test_images, f"Fashion-MNIST from {ds.source}"
    except NpvaeError as e:
        print(f"(no Fashion-MNIST found, using synthetic images of the same shape: {str(e).splitlines()[0]})",
              file=sys.stderr)
    rng = np.random.default_rng(0)
    make = lambda n: (rng.random((n, 784)) < 0.3).astype(np.uint8) * rng.integers(0, 256, (n, 784), dtype=np.uint8)
    return make(60000), make(10000), "synthetic uint8 (60000, 784)"


# -- parts, each run in a fresh process ------------------------------------------------
def part_npvae(args):
    """Both back ends and the GEMM floor, epoch by epoch in turn, in one process.

    The machine is shared and noisy, so each round times a GEMM-floor epoch, a
    Numba epoch and a NumPy epoch back to back: a slow spell hits all three,
    and the ratios (medians over rounds) stay meaningful.
    """
    import numpy as np
    import npvae
    from npvae.evaluate import evaluate_elbo
    from npvae.train import fit
    train, test, source = load_data(args.data_dir)
    runs = {}
    for backend in ("numba", "numpy"):
        model = npvae.VAE(784, 400, 20, rng=0, backend=backend)
        runs[backend] = dict(model=model, opt=npvae.Adam(model.parameters(), backend=backend),
                             rng=np.random.default_rng(0), epoch_s=[], eval_s=[])
    floor = []
    for _ in range(args.epochs):
        floor.append(gemm_floor(runs["numba"]["model"], len(train)))
        for r in runs.values():
            hist = fit(r["model"], train, None, epochs=1, batch_size=BATCH, optimizer=r["opt"],
                       rng=r["rng"], progress=False)
            r["epoch_s"].append(hist[-1]["train_seconds"])
            r["train_loss"] = hist[-1]["train_loss"]
    for _ in range(7):  # the two paths' evaluations interleaved, like their epochs
        for r in runs.values():
            t0 = time.perf_counter()
            evaluate_elbo(r["model"], test, seed=0)
            r["eval_s"].append(time.perf_counter() - t0)
    out = dict(source=source, n_train=len(train), gemm_floor_s=floor, rss_mb=peak_rss_mb())
    for name, r in runs.items():
        out[name] = dict(epoch_s=r["epoch_s"], eval_s=r["eval_s"], train_loss=r["train_loss"])
    return out


def gemm_floor(model, n_train):
    """Seconds per epoch of the GEMMs one training step needs, and nothing else.

    The same products npvae's backward computes (no gradient for the data),
    with the same shapes and memory layouts (a row-major data batch, column-major
    activations and weights), through the same BLAS: forward ``x @ W`` for every
    Dense, then ``dW = x.T @ g`` for every Dense and ``dx = g @ W.T`` for all but
    the first. All of ``dW``: npvae's skipping of dead units' columns is not
    credited to the floor.
    """
    import numpy as np
    rng = np.random.default_rng(0)
    dense = [m for m in model.modules() if type(m).__name__ == "Dense"]

    def steps(B, n):
        xs = [np.asarray(rng.random((B, d.in_features), dtype=np.float32), order="C" if i == 0 else "F")
              for i, d in enumerate(dense)]
        ys = [np.empty((B, d.out_features), np.float32, order="F") for d in dense]
        dxs = [np.empty_like(x, order="F") for x in xs]
        dWs = [np.empty_like(d.weight.data) for d in dense]
        t0 = time.perf_counter()
        for _ in range(n):
            for d, x, y in zip(dense, xs, ys):
                np.matmul(x, d.weight.data, out=y)
            for i in reversed(range(len(dense))):
                np.matmul(xs[i].T, ys[i], out=dWs[i])
                if i > 0:
                    np.matmul(ys[i], dense[i].weight.data.T, out=dxs[i])
        return time.perf_counter() - t0

    full, last = divmod(n_train, BATCH)
    steps(BATCH, 10)  # warm up
    return steps(BATCH, full) + (steps(last, 1) if last else 0.0)


def part_torch(args):
    """The PyTorch example's model and loop, same data and settings."""
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F
    torch.set_num_threads(args.threads)
    train, test, source = load_data(args.data_dir)
    xtr = torch.from_numpy(train.astype(np.float32) / 255)
    xte = torch.from_numpy(test.astype(np.float32) / 255)

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

    def loss_fn(recon, x, mu, logvar):
        return (F.binary_cross_entropy(recon, x, reduction="sum")
                - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()))

    torch.manual_seed(0)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    epochs, evals = [], []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), BATCH):
            data = xtr[perm[i:i + BATCH]]
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_fn(recon, data, mu, logvar)
            loss.backward()
            opt.step()
        epochs.append(time.perf_counter() - t0)
    model.eval()
    for _ in range(5):
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(xte), BATCH):
                data = xte[i:i + BATCH]
                recon, mu, logvar = model(data)
                loss_fn(recon, data, mu, logvar)
        evals.append(time.perf_counter() - t0)
    return dict(source=source, epoch_s=epochs, eval_s=evals, rss_mb=peak_rss_mb(), torch=torch.__version__)


def part_first_step(args):
    """In a fresh process: ``import npvae``, then build the model and take one training step.

    The step's time covers what the first use of the Numba path costs: importing
    Numba, its one-time set-up, and loading (or compiling) each kernel.
    """
    t0 = time.perf_counter()
    import numpy as np
    import npvae
    t1 = time.perf_counter()
    model = npvae.VAE(rng=0)
    opt = npvae.Adam(model.parameters())
    x = np.random.default_rng(0).random((BATCH, 784), dtype=np.float32)
    model.zero_grad()
    model.loss(x)
    model.backward()
    opt.step()
    t2 = time.perf_counter()
    return dict(import_s=t1 - t0, first_step_s=t2 - t1, from_start_s=t2 - t0)


PARTS = dict(npvae=part_npvae, torch=part_torch, first_step=part_first_step)


def run_part(python, part, args, env=None, extra=()):
    cmd = [python, os.path.abspath(__file__), "--part", part, "--epochs", str(args.epochs),
           "--threads", str(args.threads), *extra]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    threads = {k: str(args.threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **threads, **(env or {}))
    r = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if r.returncode != 0:
        raise RuntimeError(f"part {part} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's IDX files (default: npvae's lookup)")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per path (medians are printed)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS and PyTorch threads")
    ap.add_argument("--torch-python", default=sys.executable, help="interpreter to time PyTorch with")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return

    med = statistics.median
    print(f"npvae benchmark: 784-400-20, batch {BATCH}, Adam 1e-3, {args.threads} BLAS threads, "
          f"medians over {args.epochs} epochs per path", flush=True)
    torch_ok = False
    if not args.skip_torch:
        torch_ok = subprocess.run([args.torch_python, "-c", "import torch"], capture_output=True).returncode == 0
        if not torch_ok:
            print(f"(PyTorch not importable by {args.torch_python}: skipped)")
    # PyTorch before and after npvae, so that both see the machine in the same moods
    th = [run_part(args.torch_python, "torch", args)] if torch_ok else []
    res = run_part(sys.executable, "npvae", args)
    th += [run_part(args.torch_python, "torch", args)] if torch_ok else []
    print(f"data: {res['source']}", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = run_part(sys.executable, "first_step", args, env)
        warm = [run_part(sys.executable, "first_step", args, env) for _ in range(5)]

    n = res["n_train"]
    floor, nb, npy = res["gemm_floor_s"], res["numba"], res["numpy"]
    t_floor, t_nb, t_np = med(floor), med(nb["epoch_s"]), med(npy["epoch_s"])
    over_floor = lambda r: med(t / f for t, f in zip(r["epoch_s"], floor))
    rows = [("path", "s/epoch", "samples/s", "x GEMM floor", "eval 10k (s)", "peak RSS (MB)")]
    rows.append(("GEMM floor (BLAS only)", f"{t_floor:.3f}", f"{n / t_floor:,.0f}", "1.00", "", ""))
    rows.append(("npvae numba", f"{t_nb:.3f}", f"{n / t_nb:,.0f}", f"{over_floor(nb):.2f}",
                 f"{med(nb['eval_s']):.3f}", f"{res['rss_mb']:.0f}*"))
    rows.append(("npvae numpy", f"{t_np:.3f}", f"{n / t_np:,.0f}", f"{over_floor(npy):.2f}",
                 f"{med(npy['eval_s']):.3f}", "*"))
    if th:
        t_th = med(t for part in th for t in part["epoch_s"])
        e_th = med(t for part in th for t in part["eval_s"])
        rows.append((f"pytorch {th[0]['torch']}", f"{t_th:.3f}", f"{n / t_th:,.0f}", f"{t_th / t_floor:.2f}",
                     f"{e_th:.3f}", f"{max(p['rss_mb'] for p in th):.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("* one process trains both npvae paths; its peak RSS covers both models and the data")
    print()
    print(f"numba path vs numpy path: {med(a / b for a, b in zip(npy['epoch_s'], nb['epoch_s'])):.2f}x faster "
          "(median of per-round ratios)")
    if th:
        print(f"numba epoch / pytorch epoch: {t_nb / t_th:.2f} (target <= 0.5)")
        print(f"pytorch eval / numba eval: {e_th / med(nb['eval_s']):.2f}x (target >= 2)")
    print(f"import npvae: {med(w['import_s'] for w in warm):.3f} s (median of {len(warm)} fresh processes)")
    print(f"first training step in a fresh process, after the import: cold Numba cache "
          f"{cold['first_step_s']:.2f} s, warm {med(w['first_step_s'] for w in warm):.2f} s "
          f"(median of {len(warm)}; from process start, warm: {med(w['from_start_s'] for w in warm):.2f} s)")
    print(f"train loss after {args.epochs} epochs (numba / numpy): {nb['train_loss']:.2f} / {npy['train_loss']:.2f}")


if __name__ == "__main__":
    main()
