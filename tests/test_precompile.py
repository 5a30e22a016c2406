"""A cold Numba kernel cache is filled by a child process, so the caller never compiles."""
import json
import os
import subprocess
import sys

import pytest

from npvae.kernels import precompile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh process with an empty kernel cache: one training step and one evaluation,
# then every kernel's compile counts in *this* process (Numba's per-dispatcher stats).
TRAIN_AND_REPORT = """
import json, numpy as np, npvae
from npvae.kernels import numba_kernels as nbk
from npvae.evaluate import evaluate_elbo
from npvae.train import fit
images = np.random.default_rng(0).integers(0, 256, (64, 30), dtype=np.uint8)
model = npvae.VAE(30, 8, 2, rng=0)
fit(model, images, images[:16], epochs=1, batch_size=16, progress=False)
evaluate_elbo(model, images)
stats = {n: getattr(nbk, n).stats for n in dir(nbk) if hasattr(getattr(nbk, n), "stats")}
print(json.dumps({n: [sum(s.cache_hits.values()), sum(s.cache_misses.values())] for n, s in stats.items()}))
"""


def _fresh_process(tmp_path, **env):
    env = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), **env}
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, "-c", TRAIN_AND_REPORT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cold_cache_compiles_in_a_child_and_the_caller_only_loads(tmp_path):
    counts = _fresh_process(tmp_path)
    compiled_here = {n: c for n, (hits, c) in counts.items() if c}
    assert compiled_here == {}, f"compiled in the calling process: {compiled_here}"
    assert counts["add_bias"][0] > 0 and counts["adam_update"][0] > 0   # loaded from the cache
    assert any(p.suffix == ".nbi" for p in (tmp_path / "numba-cache").rglob("*"))


class _Spy:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def __call__(self, cmd, env=None, **kw):
        self.calls.append((cmd, env))
        if self.fail:
            raise self.fail


@pytest.fixture
def fresh(monkeypatch):
    """ensure_compiled as if never called in this process, with the child replaced by a spy."""
    monkeypatch.setattr(precompile, "_checked", False)
    monkeypatch.delenv(precompile.ENV, raising=False)
    spy = _Spy()
    monkeypatch.setattr(precompile.subprocess, "run", spy)
    return spy


def test_cold_cache_runs_the_child_once_with_this_npvae(fresh, monkeypatch):
    monkeypatch.setattr(precompile, "cache_is_warm", lambda: False)
    precompile.ensure_compiled()
    precompile.ensure_compiled()                     # once per process
    assert len(fresh.calls) == 1
    cmd, env = fresh.calls[0]
    assert cmd == [sys.executable, "-m", "npvae.kernels.precompile"]
    assert env[precompile.ENV] == "0"                # the child compiles in itself: no grandchild
    assert env["PYTHONPATH"].split(os.pathsep)[0] == ROOT


def test_warm_cache_opt_out_or_frozen_app_runs_no_child(fresh, monkeypatch):
    monkeypatch.setattr(precompile, "cache_is_warm", lambda: True)
    precompile.ensure_compiled()
    monkeypatch.setattr(precompile, "_checked", False)
    monkeypatch.setattr(precompile, "cache_is_warm", lambda: False)
    monkeypatch.setenv(precompile.ENV, "0")
    precompile.ensure_compiled()
    monkeypatch.setattr(precompile, "_checked", False)
    monkeypatch.delenv(precompile.ENV)
    monkeypatch.setattr(sys, "frozen", True, raising=False)   # e.g. PyInstaller: no Python to run
    precompile.ensure_compiled()
    assert fresh.calls == []


@pytest.mark.parametrize("error", [OSError("no such file"), subprocess.CalledProcessError(1, "python")])
def test_a_failing_child_falls_back_to_compiling_here(fresh, monkeypatch, error):
    fresh.fail = error
    monkeypatch.setattr(precompile, "cache_is_warm", lambda: False)
    precompile.ensure_compiled()                     # no exception: Numba compiles on first use
    assert len(fresh.calls) == 1


def test_probe_says_warm_without_a_jit(monkeypatch):
    import numba
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert precompile.cache_is_warm()
