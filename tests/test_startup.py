"""Numba starts without importing scipy.linalg, and SciPy and Numba's BLAS still work after."""
import json
import os
import subprocess
import sys

import pytest

from npvae.kernels import startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In a fresh process: ask npvae for the Numba back end (the kernel module, no kernel
# compiled), start Numba's CPU target with a tiny jitted function, note what is
# imported, then use BLAS from jitted code and from SciPy.
SCRIPT = """
import json, sys
import numba, numpy as np
import npvae.kernels
npvae.kernels.get("numba")
numba.njit(lambda a: a + 1)(1)               # Numba's CPU target starts: its BLAS check runs
report = {"linalg_at_start": "scipy.linalg" in sys.modules,
          "preloaded": "scipy.linalg.cython_blas" in sys.modules}
a = np.arange(9.0).reshape(3, 3)
report["jit_dot_ok"] = bool(np.array_equal(numba.njit(lambda x, y: np.dot(x, y))(a, a), a @ a))
import scipy.linalg
from scipy.linalg import cython_blas
from scipy.stats import norm
report["scipy_ok"] = bool(np.allclose(scipy.linalg.blas.dgemm(1.0, a, a), a @ a)
                          and hasattr(cython_blas, "__pyx_capi__") and norm.cdf(0.0) == 0.5)
print(json.dumps(report))
"""


def _run(**env):
    env = {**os.environ, "PYTHONPATH": ROOT, "NPVAE_COMPILE_IN_CHILD": "0", **env}
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_numba_starts_without_scipy_linalg_and_blas_still_works():
    report = _run()
    assert report == dict(linalg_at_start=False, preloaded=True, jit_dot_ok=True, scipy_ok=True)


def test_turned_off_numba_imports_scipy_linalg_itself():
    # what the preload saves: without it, Numba's start imports the whole package
    report = _run(**{startup.ENV: "0"})
    assert report == dict(linalg_at_start=True, preloaded=True, jit_dot_ok=True, scipy_ok=True)


def test_nothing_to_do_once_loaded(monkeypatch):
    monkeypatch.delenv(startup.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "scipy.linalg", sys.modules.get("scipy.linalg", object()))
    assert startup.preload_cython_blas() is False
    monkeypatch.delitem(sys.modules, "scipy.linalg")
    monkeypatch.setitem(sys.modules, startup.NAME, object())
    assert startup.preload_cython_blas() is False


@pytest.mark.parametrize("trouble", ["no scipy", "load fails"])
def test_any_failure_leaves_it_to_numba(monkeypatch, trouble):
    for name in (startup.NAME, "scipy.linalg", "numba.np.arraymath"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv(startup.ENV, raising=False)
    if trouble == "no scipy":
        monkeypatch.setattr(startup.importlib.util, "find_spec", lambda name: None)
    else:
        def broken(name, path):
            raise ImportError("cannot load")
        monkeypatch.setattr(startup.importlib.util, "spec_from_file_location", broken)
    assert startup.preload_cython_blas() is False
    assert startup.NAME not in sys.modules
