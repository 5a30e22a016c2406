"""The gradient-checking suite, through its Python API and its command line."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvae
from gradcheck import BAD_CASES, CASES, Problem, check_problem, defaults, format_table, rel_error, run, self_test
from gradcheck.cases import _op_problem

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows64():
    return run(CASES)            # every op, float64, both back ends


def test_every_row_passes_in_float64(rows64):
    failed = [(r.op, r.backend, r.tensor, r.rel_err) for r in rows64 if not r.passed]
    assert not failed
    assert max(r.rel_err for r in rows64) < 1e-6
    assert all(r.tol == 1e-6 for r in rows64)


def test_every_op_and_backend_is_covered(rows64):
    seen = {(r.op, r.backend) for r in rows64}
    assert seen == {(op, b) for op in CASES for b in ("numpy", "numba")}
    expected_ops = {"dense", "relu", "sigmoid", "sampler", "kl", "bce_logits", "bce",
                    "sequential", "sequential_nofuse", "vae_1h", "vae_2h"}
    assert expected_ops <= set(CASES)
    # one directional row per problem
    assert any(r.tensor == "<direction>" for r in rows64 if r.op == "dense")


@pytest.mark.parametrize("op, hidden", [("vae_1h", (7,)), ("vae_2h", (7, 5))])
def test_vae_rows_cover_every_parameter(rows64, op, hidden):
    names = {n for n, _ in npvae.VAE(12, hidden, 3, dtype=np.float64, rng=0).named_parameters()}
    assert any(n.startswith("encoder.") for n in names) and any(n.startswith("decoder.") for n in names)
    for backend in ("numpy", "numba"):
        checked = {r.tensor for r in rows64 if r.op == op and r.backend == backend}
        assert names <= checked                                   # beta = 1
        assert {n + "[beta=0.5]" for n in names} <= checked       # beta != 1


def test_dense_rows(rows64):
    dense = {r.tensor: r for r in rows64 if r.op == "dense" and r.backend == "numpy"}
    assert set(dense) == {"x", "weight", "bias", "<direction>"}
    assert dense["weight"].shape == (5, 4) and dense["x"].shape == (3, 5)


def test_losses_check_grad_argument(rows64):
    for op, name in (("kl", "h"), ("bce_logits", "logits"), ("bce", "probs")):
        assert any(r.tensor == f"{name}[grad=-1.7]" for r in rows64 if r.op == op)


def test_self_test_catches_wrong_backwards():
    ok, rows, caught = self_test(BAD_CASES)
    assert ok
    assert set(caught) == {(op, b) for op in BAD_CASES for b in ("numpy", "numba")}
    assert all(caught.values())
    # not by a hair: the wrong gradients are off by far more than the tolerance
    assert all(r.rel_err > 1e-2 for r in rows if not r.tensor.startswith("<"))


def test_a_small_gradient_error_is_caught():
    """A bias gradient off by one part in 1e5 must FAIL at the default tolerance."""
    class SlightlyWrongDense(npvae.Dense):
        def backward(self, grad_out, input_grad=True):
            dx = super().backward(grad_out, input_grad)
            self.bias._grad *= 1 + 1e-5
            return dx

    rng = np.random.default_rng(0)
    d = SlightlyWrongDense(5, 4, dtype=np.float64, rng=rng, backend="numpy")
    x = rng.standard_normal((3, 5))
    prob = _op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)
    rows = {r.tensor: r for r in check_problem(prob, "dense", "numpy", 1e-5, 1e-6, rng)}
    assert rows["x"].passed and rows["weight"].passed
    assert not rows["bias"].passed and 5e-6 < rows["bias"].rel_err < 2e-5


def test_check_problem_restores_tensors():
    rng = np.random.default_rng(1)
    d = npvae.Dense(4, 3, dtype=np.float64, rng=rng, backend="numpy")
    x = rng.standard_normal((3, 4))
    before = {"x": x.copy(), **d.state_dict()}
    prob = _op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)
    check_problem(prob, "dense", "numpy", 1e-5, 1e-6, rng)
    assert np.array_equal(x, before["x"])
    for n, v in d.state_dict().items():
        assert np.array_equal(v, before[n])


def test_same_seed_same_table_different_seed_differs():
    a = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=3)
    b = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=3)
    c = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=4)
    assert [(r.tensor, r.abs_err, r.rel_err) for r in a] == [(r.tensor, r.abs_err, r.rel_err) for r in b]
    assert [r.abs_err for r in a] != [r.abs_err for r in c]


def test_float32_is_a_smoke_check_with_adapted_defaults():
    dtype, h, tol = defaults(np.float32)
    assert (h, tol) == (1e-2, 3e-2)
    assert defaults(np.float64)[1:] == (1e-5, 1e-6)
    rows = run(CASES, ops=["dense", "sigmoid", "vae_1h"], dtype=np.float32)
    assert all(r.passed for r in rows)
    assert all(r.tol == 3e-2 for r in rows)
    assert "smoke check" in format_table(rows, np.float32)
    ok, _, _ = self_test(BAD_CASES, dtype=np.float32)
    assert ok


def test_rel_error_definition():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 1e-3]) == pytest.approx(1e-3)
    assert rel_error([2.0, 1e-9], [2.0, 0.0]) == pytest.approx(5e-10)   # per tensor, not per element
    assert np.isnan(rel_error([np.nan], [1.0]))


def test_nan_gradient_fails():
    x = np.ones((2, 2))
    prob = Problem({"x": x}, lambda: float(np.sum(x)), lambda: {"x": np.full((2, 2), np.nan)})
    rows = check_problem(prob, "nan", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert not any(r.passed for r in rows)


def test_table_format(rows64):
    text = format_table(rows64[:6])
    lines = text.splitlines()
    assert "max abs err" in text and "max rel err" in text and "max|a - n|" in lines[1]
    assert sum(line.endswith("PASS") for line in lines) == 6
    assert lines[-1].startswith("6 rows: 6 passed, 0 failed")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "gradcheck", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_dense_numpy():
    r = _cli("--op", "dense", "--backend", "numpy")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("dense")]
    assert [line.split()[2] for line in lines] == ["x", "weight", "bias", "<direction>"]
    assert all(line.split()[1] == "numpy" and line.endswith("PASS") for line in lines)
    assert "max rel err" in r.stdout and "4 rows: 4 passed, 0 failed" in r.stdout


def test_cli_exits_non_zero_on_failure():
    r = _cli("--op", "sigmoid", "--backend", "numpy", "--tol", "1e-300")
    assert r.returncode == 1
    assert "FAIL" in r.stdout


def test_cli_self_test_and_list():
    r = _cli("--self-test", "--backend", "numpy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrong_sigmoid on numpy: caught" in r.stdout and "wrong_sampler on numpy: caught" in r.stdout
    r = _cli("--list")
    assert r.returncode == 0 and set(r.stdout.split()) == set(CASES)
    assert _cli("--op", "no_such_op").returncode == 2
