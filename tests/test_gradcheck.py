"""The gradient-checking tool, through its Python API and its command line.

``run(CASES)`` checks every op of the reference and the fast path's whole-model gradients;
``self_test(BUGS, CASES)`` plants the slips of gradcheck/planted.py and must catch each one.
"""
import inspect
import os
import re
import signal
import textwrap
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import npvae
from gradcheck import (BUGS, CASES, Problem, Row, check_problem, defaults, format_table, loss_problem, op_problem,
                       rel_error, run, self_test)
from gradcheck.core import summary

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_OPS = {"dense", "dense_square", "relu", "sigmoid", "sampler", "kl", "bce_logits", "bce", "sequential",
                 "vae_1h", "vae_2h", "vae_square", "adam", "adam_varying", "sgd", "sgd_momentum",
                 "sgd_weight_decay"}


@pytest.fixture(scope="module")
def rows64():
    return run(CASES)            # every case, float64, the reference and the fast path


def test_every_row_passes_in_float64(rows64):
    failed = [(r.op, r.backend, r.tensor, r.rel_err) for r in rows64 if not r.passed]
    assert not failed
    closed_form = [r for r in rows64 if r.tensor.startswith("step ")]     # the optimizers' rows
    as_reference = [r for r in rows64 if " = VAE." in r.tensor]          # the fast path against VAE.loss/backward
    assert closed_form and all(r.tol == 1e-11 for r in closed_form + as_reference)
    assert {r.op for r in as_reference} == {op for op in CASES if op.startswith("fast_vae")}
    assert all(r.tol == 1e-6 for r in rows64 if r not in closed_form + as_reference)


def test_a_slip_made_alike_in_the_fast_forward_and_backward_is_caught_against_the_reference(monkeypatch):
    """The last pixel left out of both the fast loss and its gradient: the finite differences
    agree with such a backward, the rows against ``VAE.loss`` and ``VAE.backward`` do not."""
    from npvae.fast import kernels
    original = kernels.bce_logits_forward_backward

    def last_pixel_dropped(logits, target, scale, rows, dlogits):
        original(logits[:, :-1], target[:, :-1], scale, rows, dlogits[:, :-1])
        dlogits[:, -1] = 0

    monkeypatch.setattr(kernels, "bce_logits_forward_backward", last_pixel_dropped)
    rows = run({"fast_vae_1h": CASES["fast_vae_1h"]})
    failed = {r.tensor for r in rows if not r.passed}
    assert failed and all(" = VAE." in name for name in failed)
    assert "loss = VAE.loss[beta=0.5]" in failed and "decoder.2.bias = VAE.backward[beta=0.5]" in failed


def test_the_optimizer_rows_hold_to_round_off_not_to_the_finite_difference_tolerance():
    """The closed-form rows keep their tolerance of round-off (1e-11) whatever --tol says: a
    slip of 1e-7 in a step (eps under the square root with the default eps = 1e-8) passes a
    tolerance of 1e-6, and the adam case uses eps = 1e-3 so that this slip shows in float32 too."""
    with BUGS["adam_eps_inside_sqrt"][1]():
        rows = run({"adam": CASES["adam"]}, tol=1e-6)
    assert rows and not any(r.passed for r in rows)
    rows = run({"adam": CASES["adam"]}, tol=1e-3)         # a looser --tol leaves them as tight
    assert all(r.passed and r.tol == 1e-11 for r in rows)


def test_every_reference_op_and_the_fast_cases_are_covered(rows64):
    assert REFERENCE_OPS <= set(CASES)
    assert {op for op, (backend, _) in CASES.items() if backend == "numpy"} >= REFERENCE_OPS
    fast = {op for op, (backend, _) in CASES.items() if backend == "numba"}
    assert {"fast_vae_1h", "fast_vae_2h", "fast_vae_dead_units", "fast_vae_retired_units", "fast_adam",
            "fast_sgd"} <= fast
    assert {(r.op, r.backend) for r in rows64} == {(op, backend) for op, (backend, _) in CASES.items()}
    # one directional row per finite-difference problem
    assert any(r.tensor == "<direction>" for r in rows64 if r.op == "dense")


# each op of the core and the gradcheck case that checks it
CASE_OF_OP = {"Dense": "dense", "ReLU": "relu", "Sigmoid": "sigmoid", "Sequential": "sequential",
              "Sampler": "sampler", "KL": "kl", "BCEWithLogits": "bce_logits", "BCE": "bce", "VAE": "vae_1h"}


def test_every_op_of_the_core_has_a_case():
    """An op added to the core without a case in gradcheck/cases.py fails here
    (docs/adding-a-layer.md: what a new layer needs)."""
    core = {name for module in (npvae.layers, npvae.sampler, npvae.losses, npvae.model)
            for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, npvae.Module) and cls.__module__ == module.__name__}
    assert core == set(CASE_OF_OP), (f"ops without a gradcheck case: {sorted(core - set(CASE_OF_OP))} "
                                     "(add one to gradcheck/cases.py, and list it in this file's "
                                     "REFERENCE_OPS and CASE_OF_OP)")
    assert set(CASE_OF_OP.values()) <= REFERENCE_OPS, (f"cases missing from this file's REFERENCE_OPS: "
                                                      f"{sorted(set(CASE_OF_OP.values()) - REFERENCE_OPS)}")


def test_square_layers_are_checked(rows64):
    """A transposed dW has the right shape on a square layer: cases must have one."""
    def shapes(op):
        return {r.tensor: r.shape for r in rows64 if r.op == op}
    assert shapes("dense_square")["weight"] == (4, 4)
    assert (7, 7) in shapes("sequential").values()
    square = shapes("vae_square")
    assert any(s[0] == s[1] for n, s in square.items() if n.startswith("encoder.") and n.endswith("weight"))
    assert any(s[0] == s[1] for n, s in square.items() if n.startswith("decoder.") and n.endswith("weight"))


@pytest.mark.parametrize("op, hidden", [("vae_1h", (7,)), ("vae_2h", (7, 5)), ("fast_vae_2h", (7, 5))])
def test_vae_rows_cover_every_parameter_for_two_betas(rows64, op, hidden):
    names = {n for n, _ in npvae.VAE(12, hidden, 3, dtype=np.float64, rng=0).named_parameters()}
    checked = {r.tensor for r in rows64 if r.op == op}
    assert names <= checked                                   # beta = 1
    assert {n + "[beta=0.5]" for n in names} <= checked       # beta != 1: the KL's weight matters


def test_the_fast_path_is_checked_on_square_layers_too(rows64):
    """A transposed dW in the fast path's kernels has the right shape only on a square layer."""
    square = {r.tensor.split(".")[0] for r in rows64 if r.backend == "numba" and r.tensor.endswith("weight")
              and len(r.shape) == 2 and r.shape[0] == r.shape[1]}
    assert square == {"encoder", "decoder"}


def test_the_constant_gradient_optimizer_cases_take_eight_steps(rows64):
    """Momentum's (1 - 0.9^t) / (1 - 0.9), weight decay's a^(t-1) and the bias corrections only
    show past the first step."""
    for op in ("adam", "sgd", "sgd_momentum", "sgd_weight_decay"):
        assert [r.tensor for r in rows64 if r.op == op] == [f"step {t}" for t in range(1, 9)], op


def test_the_retired_units_case_leaves_units_out(monkeypatch):
    """Else it checks what fast_vae_dead_units checks, and the first layer computed over fewer
    units than it has (after a retirement) goes unchecked."""
    from npvae.fast import FastVAE
    forward, computed = FastVAE.forward, set()

    def recorded(self, x, beta, eps):
        computed.add((self.n_units, self.units))
        return forward(self, x, beta, eps)

    monkeypatch.setattr(FastVAE, "forward", recorded)
    assert all(r.passed for r in run(CASES, ["fast_vae_retired_units"], ("numba",)))
    assert computed == {(5, 8)}                 # 3 of its 8 units retired


def test_losses_are_checked_with_grad_not_1(rows64):
    for op, name in (("kl", "h"), ("bce_logits", "logits"), ("bce", "probs")):
        assert {name, f"{name}[grad=-1.7]"} <= {r.tensor for r in rows64 if r.op == op}


def test_a_loss_whose_backward_ignores_grad_fails_its_grad_rows(monkeypatch):
    """The [grad=-1.7] rows must come from backward(grad=-1.7), the call the model makes with beta,
    not from -1.7 * backward()."""
    for cls in (npvae.KL, npvae.BCEWithLogits, npvae.BCE):
        monkeypatch.setattr(cls, "backward", lambda self, grad=1.0, backward=cls.backward: backward(self))
    rows = run(CASES, ["kl", "bce_logits", "bce"])
    failed = {(r.op, r.tensor) for r in rows if not r.passed}
    inputs = {"kl": "h", "bce_logits": "logits", "bce": "probs"}
    assert failed == {(op, name + "[grad=-1.7]") for op, x in inputs.items() for name in (x, "<direction>")}


# -- it can fail ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def self_tested_command():
    """One real self-test (5-10 s), made by ``python -m gradcheck --self-test``'s main in this
    process: its exit status, its printout, and the ``(ok, caught)`` that self_test returned it."""
    import contextlib
    import io

    import gradcheck.__main__ as command
    returned = []

    def recorded(*args, **kwargs):
        returned.append(self_test(*args, **kwargs))
        return returned[-1]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(command, "self_test", recorded)
        status = command.main(["--self-test"])
    assert len(returned) == 1
    return status, out.getvalue(), returned[0]


@pytest.fixture(scope="module")
def self_tested(self_tested_command):
    return self_tested_command[2]


def test_self_test_catches_every_planted_bug(self_tested):
    ok, caught = self_tested
    assert ok and set(caught) == set(BUGS)
    for name, failed in caught.items():
        assert failed, f"{name} not caught"
        # not by a hair: each slip is off by far more than the tolerance
        assert max(r.rel_err for r in failed) > 1e-3, name
    assert {r.op for r in caught["dense_transposed_dW"]} >= {"dense_square", "vae_square"}
    assert all(r.tensor.startswith("<contract") for r in caught["relu_writes_grad_out"])
    # a constant gradient cannot tell the betas apart, nor see an ignored weight decay
    assert {r.op for r in caught["adam_betas_swapped"]} == {"adam_varying"}
    assert {r.op for r in caught["adam_weight_decay_ignored"]} == {"adam_varying"}


def test_a_bug_is_caught_only_by_rows_that_pass_with_no_bug_planted():
    """At tol=1e-300 the rows of numbers fail with no bug planted: they would "catch" every bug,
    an Adam slip in the ReLU case. Only the contract rows (a grad assigned, grad_out written)
    still tell."""
    bugs = {name: BUGS[name] for name in ("adam_weight_decay_ignored", "kl_dmu_dropped", "relu_writes_grad_out")}
    cases = {name: CASES[name] for name in ("relu", "kl", "adam_varying")}
    ok, caught = self_test(bugs, cases, tol=1e-300)
    assert not ok
    assert caught["adam_weight_decay_ignored"] == [] and caught["kl_dmu_dropped"] == []
    assert {r.op for r in caught["relu_writes_grad_out"]} == {"relu"}
    assert self_test(bugs, cases)[0]            # at the default tolerance each is caught


def test_self_test_leaves_the_reference_as_it_was(self_tested):
    rows = run(CASES, backends=("numpy",))
    assert all(r.passed for r in rows)


def _slightly_wrong_dense(dtype, rng, h):
    """A Dense layer whose input gradient is 1e-5 (relative) too large."""
    class SlightlyWrong(npvae.Dense):
        def backward(self, grad_out):
            return super().backward(grad_out) * (1 + 1e-5)

    d = SlightlyWrong(5, 4, dtype=dtype, rng=rng)
    x = rng.standard_normal((3, 5)).astype(dtype)
    return [op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)]


def test_a_gradient_wrong_by_1e5_relative_fails_at_the_default_tolerance():
    rows = {r.tensor: r for r in run({"slightly_wrong": ("numpy", _slightly_wrong_dense)})}
    assert rows["weight"].passed and rows["bias"].passed
    assert not rows["x"].passed and 5e-6 < rows["x"].rel_err < 2e-5
    assert not rows["<direction>"].passed
    assert "FAIL" in format_table(list(rows.values())) and "2 failed" in format_table(list(rows.values()))


def test_the_direction_row_does_not_fail_a_correct_gradient_nearly_orthogonal_to_it():
    """Seed 24 draws a direction almost orthogonal to vae_2h's gradient: |a_V| ~ 3e-6 for a
    gradient of norm ~1, so |a_V - n_V| / |a_V| was 1e-5 from round-off alone."""
    rows = run(CASES, ops="vae_2h", seed=24)
    assert all(r.passed for r in rows), [(r.tensor, r.rel_err) for r in rows if not r.passed]


class _Scale(npvae.Module):
    """A layer of the user's own, ``y = a * x`` with one parameter: how gradcheck sees yours."""

    def __init__(self, assign=False, answer="dx"):
        super().__init__()
        self.a = npvae.Parameter(np.array([0.7, -1.3, 0.4]))
        self.assign, self.answer = assign, answer

    def forward(self, x):
        self.x = x
        return x * self.a.data

    def backward(self, grad_out):
        da = (grad_out * self.x).sum(axis=0)
        if self.assign:
            self.a.grad[...] = da           # the slip: = where += belongs
        else:
            self.a.grad += da
        dx = grad_out * self.a.data
        if self.answer == "none":
            return None                     # forgot the return
        if self.answer == "shape":
            return dx[:, :2]
        if self.answer == "dtype":
            return dx.astype(np.float32)    # a float32 gradient for a float64 x: blamed on the next layer
        if self.answer == "crash":
            return self.missing_attribute
        return dx


class _ScaleKeepingItsGradient(_Scale):
    def zero_grad(self):
        pass                                # the slip: a zero_grad of its own that clears nothing


def _scale_case(cls=_Scale, **kw):
    def build(dtype, rng, h):
        layer, x = cls(**kw), rng.standard_normal((4, 3))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    return build


def test_a_layer_whose_zero_grad_clears_nothing_fails():
    """gradcheck leaves a gradient behind before taking the one it checks, as training does
    (a step's backward after the last step's): a zero_grad that keeps it must show."""
    assert all(r.passed for r in run({"scale": ("numpy", _scale_case())}))
    rows = run({"keeps": ("numpy", _scale_case(_ScaleKeepingItsGradient))})
    assert rows and not any(r.passed for r in rows)
    said = format_table(rows)           # blamed on zero_grad, not on the backward, which is right
    assert "zero_grad left a.grad non-zero" in said and "instead of adding" not in said, said


class _TwoParams(npvae.Module):
    """y = x * a + b, with a zero_grad of its own that clears only part (an entry, or one parameter)."""

    def __init__(self, partial):
        super().__init__()
        self.a = npvae.Parameter(np.array([0.7, -1.3, 0.4]))
        self.b = npvae.Parameter(np.array([0.2, 0.5, -0.9]))
        self.partial = partial

    def forward(self, x):
        self.x = x
        return x * self.a.data + self.b.data

    def backward(self, grad):
        self.a.grad += (grad * self.x).sum(axis=0)
        self.b.grad += grad.sum(axis=0)
        return grad * self.a.data

    def zero_grad(self):
        self.a.grad[0 if self.partial == "entry" else ...] = 0
        if self.partial == "entry":
            self.b.grad[...] = 0


@pytest.mark.parametrize("partial", ["entry", "param"])
def test_a_zero_grad_that_clears_only_part_is_named(partial):
    def build(dtype, rng, h):
        layer, x = _TwoParams(partial), rng.standard_normal((4, 3))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    said = format_table(run({"part": ("numpy", build)}))
    assert f"zero_grad left {'a' if partial == 'entry' else 'b'}.grad non-zero" in said, said


def test_a_model_whose_zero_grad_clears_nothing_fails_at_each_beta(monkeypatch):
    """Not only at beta = 0.5, whose problem comes after beta = 1's: each problem's own gradient
    is taken after stale ones."""
    monkeypatch.setattr(npvae.VAE, "zero_grad", lambda self: None)
    rows = run(CASES, ["vae_1h"])
    assert rows and not [(r.tensor, r.rel_err) for r in rows if r.passed]


def test_a_layer_of_your_own_passes_and_its_slips_fail_with_a_reason():
    ok = run({"scale": ("numpy", _scale_case())})
    assert ok and all(r.passed for r in ok)
    cases = {"assigns": ("numpy", _scale_case(assign=True)), "returns_none": ("numpy", _scale_case(answer="none")),
             "wrong_shape": ("numpy", _scale_case(answer="shape")), "crashes": ("numpy", _scale_case(answer="crash")),
             "wrong_dtype": ("numpy", _scale_case(answer="dtype")), "fine": ("numpy", _scale_case())}
    rows = run(cases)                       # one failing case does not stop the others
    why = {r.op: r.tensor for r in rows if not r.passed}
    assert set(why) == {"assigns", "returns_none", "wrong_shape", "crashes", "wrong_dtype"}
    assert "<contract: backward returned the gradient of x in float32, but x is float64>" in why["wrong_dtype"]
    assert "set a.grad instead of adding into it (+=)" in why["assigns"]
    assert "no gradient for x" in why["returns_none"]
    assert "gradient of x has shape (4, 2), expected (4, 3)" in why["wrong_shape"]
    assert "AttributeError" in why["crashes"] and "missing_attribute" in why["crashes"]
    assert all(r.passed for r in rows if r.op == "fine")


class _SquareTwice(npvae.Module):
    """``y = (x @ W) @ W``: one weight used twice, each use adding its part into ``W.grad``."""

    def __init__(self, W):
        super().__init__()
        self.W = npvae.Parameter(W)

    def forward(self, x):
        self.x, self.h = x, x @ self.W.data
        return self.h @ self.W.data

    def backward(self, g):
        self.W.grad += self.h.T @ g
        gh = g @ self.W.data.T
        self.W.grad += self.x.T @ gh
        return gh @ self.W.data.T


def _square_twice(dtype, rng, h):
    layer, x = _SquareTwice(rng.standard_normal((4, 4)).astype(dtype)), rng.standard_normal((3, 4)).astype(dtype)
    return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_parameter_used_twice_is_not_taken_for_an_assigned_gradient(dtype):
    """Two uses sum in another order on a second backward; an element that cancels to ~0 must
    not look like ``=`` for ``+=`` (seeds 27 and 194 did, with an element-wise tolerance)."""
    for seed in (27, 121, 194, 313):
        rows = run({"square_twice": ("numpy", _square_twice)}, dtype=dtype, seed=seed)
        assert not [r.tensor for r in rows if "contract" in r.tensor]


@pytest.mark.parametrize("cases, message", [
    ({"scale": ("nunpy", _scale_case())}, "case 'scale': unknown backend 'nunpy'"),
    ({"scale": _scale_case()}, "case 'scale' must be a (backend, build) pair"),
])
def test_a_case_that_cannot_run_is_an_error_not_an_empty_pass(cases, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cases)
    with pytest.raises(ValueError, match="backends must be among"):
        run({"scale": ("numpy", _scale_case())}, backends=("numpy", "nunba"))


def test_ops_takes_one_name_or_a_list():
    cases = {"scale": ("numpy", _scale_case()), "other": ("numpy", _scale_case(assign=True))}
    assert {r.op for r in run(cases, ops="scale")} == {"scale"}
    assert {r.op for r in run(cases, ops=["scale", "other"])} == {"scale", "other"}


def test_check_problem_restores_tensors():
    rng = np.random.default_rng(1)
    d = npvae.Dense(4, 3, dtype=np.float64, rng=rng)
    x = rng.standard_normal((3, 4))
    before = {"x": x.copy(), **d.state_dict()}
    prob = op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)
    check_problem(prob, "dense", "numpy", 1e-5, 1e-6, rng)
    assert np.array_equal(x, before["x"])
    for n, v in d.state_dict().items():
        assert np.array_equal(v, before[n])


def test_nan_gradient_fails():
    x = np.ones((2, 2))
    prob = Problem({"x": x}, lambda: float(np.sum(x)), lambda: {"x": np.full((2, 2), np.nan)})
    rows = check_problem(prob, "nan", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert rows and not any(r.passed for r in rows)


def test_rel_error_definition():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 1e-3]) == pytest.approx(1e-3)
    assert rel_error([2.0, 1e-9], [2.0, 0.0]) == pytest.approx(5e-10)   # per tensor, not per element
    assert np.isnan(rel_error([np.nan], [1.0]))


def test_same_seed_same_table_different_seed_differs():
    a = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=3)
    b = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=3)
    c = run(CASES, ops=["sampler", "vae_1h"], backends=("numpy",), seed=4)
    assert [(r.tensor, r.abs_err, r.rel_err) for r in a] == [(r.tensor, r.abs_err, r.rel_err) for r in b]
    assert [r.abs_err for r in a] != [r.abs_err for r in c]


def test_a_cases_rows_do_not_depend_on_the_cases_run_before_it():
    """``--op dense`` alone must give the rows dense has in the whole table: each case starts
    from its own default_rng(seed)."""
    alone = run(CASES, ops=["dense"])
    after = [r for r in run(CASES, ops=["relu", "dense"]) if r.op == "dense"]
    assert [(r.tensor, r.abs_err, r.rel_err) for r in alone] == [(r.tensor, r.abs_err, r.rel_err) for r in after]


def test_only_the_cases_of_the_backends_asked_for_run():
    """``--backend numpy`` must not run (nor time, nor plant bugs into) the fast path's cases too."""
    cases = {"mine": ("numpy", _scale_case()), "fast": ("numba", _scale_case())}
    assert {r.op for r in run(cases, backends="numpy")} == {"mine"}
    assert {r.op for r in run(cases, backends=("numba",))} == {"fast"}
    assert {r.op for r in run(cases)} == {"mine", "fast"}


def test_in_float32_a_closed_form_row_fails_a_step_off_by_half_a_percent():
    """float32's optimizer steps agree with their closed form to ~2e-5 (the adam cases pass):
    a tolerance of 1e-3 leaves a slip of 5e-3 no room (1e-2 would)."""
    assert all(r.passed for r in run(CASES, ["adam", "adam_varying"], dtype=np.float32))

    def half_a_percent_off(dtype, rng, h):
        expected = rng.uniform(0.5, 1.0, (3, 4))
        return [Problem({}, None, None, exact={"step 1": (expected * (1 + 5e-3), expected)})]

    rows = run({"off": ("numpy", half_a_percent_off)}, dtype=np.float32)
    assert [(r.passed, r.tol) for r in rows] == [(False, 1e-3)]


def test_float32_is_a_smoke_check_with_adapted_defaults():
    dtype, h, tol = defaults(np.float32)
    assert (h, tol) == (1e-2, 3e-2)
    assert defaults(np.float64)[1:] == (1e-5, 1e-6)
    rows = run(CASES, ops=["dense_square", "sigmoid", "vae_1h"], backends=("numpy",), dtype=np.float32)
    assert rows and all(r.passed for r in rows) and all(r.tol == 3e-2 for r in rows)
    assert "smoke check" in format_table(rows, np.float32)


def test_the_table_header_states_the_settings_the_rows_were_made_with():
    """A float32 table headed "float64 ... pass if rel < 1e-06" showed PASS rows above the stated
    tolerance; rows of run(..., tol=) FAIL rows below it."""
    rows = run(CASES, ops="sigmoid", dtype=np.float32)
    table = format_table(rows)
    assert table.splitlines()[0] == "gradcheck: float32 central differences, h = 0.01, pass if rel < 0.03"
    assert "smoke check" in table
    assert format_table(run(CASES, ops="sigmoid", tol=1e-12)).splitlines()[0].endswith("pass if rel < 1e-12")
    assert format_table(rows[:1]).splitlines()[0] == table.splitlines()[0]      # a slice keeps its settings
    assert format_table(rows, np.float64).startswith("gradcheck: float64")   # a dtype given: its defaults
    made_by_hand = [Row("mine", "numpy", "x", (2,), 1e-9, 1e-9, 1e-6)]
    assert format_table(made_by_hand).startswith("gradcheck: float64")     # rows of no run: float64's defaults
    both = format_table(rows + run(CASES, ops="sigmoid"))
    assert "NOTE: rows of several runs (float32, float64): each row passed or failed by its own run's" in both


@pytest.mark.parametrize("seed", [1, 8, 13])
def test_the_whole_vae_cases_keep_both_batches_off_the_relu_kinks_in_float32(seed):
    """The beta 1 and beta 0.5 batches share the model: shifting its ReLU biases for the second
    batch alone put the first one's pre-activations on a kink (a correct model failed in float32
    at these seeds, whose step is 1e-2)."""
    rows = run(CASES, ops=["vae_2h", "vae_square"], backends=("numpy",), dtype=np.float32, seed=seed)
    assert rows and all(r.passed for r in rows), format_table(rows, np.float32)


# -- the table ------------------------------------------------------------------------------------
def _long_named(dtype, rng, h):
    d = npvae.Dense(3, 2, dtype=dtype, rng=rng)
    x = rng.standard_normal((2, 3)).astype(dtype)
    name = "an_input_with_a_rather_long_name_for_a_tensor"
    return [op_problem(d, lambda: d.forward(x), lambda R: {name: d.backward(R)}, {name: x}, rng)]


def test_table_columns_stay_aligned_whatever_the_names():
    cases = {"dense": CASES["dense"], "a_case_with_a_very_long_name_that_is_longer_than_any_column": (
        "numpy", _long_named), "x": ("numpy", _long_named), "sigmoid": CASES["sigmoid"]}
    rows = run(cases, tol=1e-300) + run(cases)              # some FAIL, some PASS
    lines = format_table(rows).splitlines()
    header = next(line for line in lines if line.startswith("op "))
    body = lines[lines.index(header) + 2:lines.index(header) + 2 + len(rows)]
    assert len(body) == len(rows) and any("FAIL" in b for b in body) and any("PASS" in b for b in body)
    start = {c: header.index(c) for c in ("backend", "tensor", "shape", "status")}
    end = {c: header.index(c) + len(c) for c in ("max abs err", "max rel err")}
    for r, line in zip(rows, body):
        shape = "x".join(map(str, r.shape)) or "()"
        assert line.startswith(r.op + " ")
        for col, text in (("backend", r.backend), ("tensor", r.tensor), ("shape", shape),
                          ("status", "PASS" if r.passed else "FAIL")):
            assert line[start[col]:start[col] + len(text)] == text and line[start[col] - 1] == " ", (col, line)
        for col, text in (("max abs err", f"{r.abs_err:.2e}"), ("max rel err", f"{r.rel_err:.2e}")):
            assert line[end[col] - len(text):end[col]] == text and line[end[col] - len(text) - 1] == " ", (col, line)
    assert lines[-1].startswith(f"{len(rows)} rows: ")


def test_the_summary_counts_passed_and_failed_rows_and_names_the_worst():
    """The worst row is the one to look at first; a NaN is worse than any number."""
    rows = [Row("a", "numpy", "x", (2,), 1e-12, 1e-10, 1e-6), Row("b", "numpy", "w", (2,), 1e-3, 2e-3, 1e-6),
            Row("c", "numba", "b", (2,), 0.0, 0.0, 1e-6)]
    assert summary(rows) == "3 rows: 2 passed, 1 failed (in b); worst rel err 2.00e-03 (b / numpy / w)"
    nan = Row("d", "numpy", "<direction>", (4,), np.nan, np.nan, 1e-6)
    assert summary(rows + [nan]) == ("4 rows: 2 passed, 2 failed (in b, d); worst rel err nan "
                                     "(d / numpy / <direction>)")
    error = Row("e", "numpy", "<error: ValueError: " + "a long message " * 20 + ">", (), np.inf, np.inf, 1e-6)
    line = summary([error])                 # the table gives an error's text whole; one line cuts it
    assert line.endswith("(e / numpy / <error: ValueError: a long message a long message a long ...>)"), line


@pytest.mark.parametrize("dtype, tol, shown", [(np.float64, None, "1e-11"), (np.float64, 1e-12, "1e-12"),
                                               (np.float32, None, "0.001")])
def test_the_header_gives_the_tolerance_the_closed_form_rows_are_held_to(dtype, tol, shown):
    """Round-off's (1e-11, 1e-3, as --help says), not --tol's, unless --tol is tighter."""
    rows = run(CASES, ["adam"], dtype=dtype, tol=tol)
    line = next(line for line in format_table(rows, dtype, tol=tol).splitlines() if "optimizer steps" in line)
    assert line.endswith(f"pass if rel < {shown}") and {r.tol for r in rows} == {float(shown)}


def test_table_states_the_metric():
    rows = run(CASES, ops=["dense"])
    text = format_table(rows)
    lines = text.splitlines()
    assert "h = 1e-05" in lines[0] and "rel < 1e-06" in lines[0] and "max|a - n|" in lines[1]
    assert sum(line.endswith("PASS") for line in lines) == len(rows) == 4
    assert lines[-1].startswith("4 rows: 4 passed, 0 failed")


# -- the command line -----------------------------------------------------------------------------
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "gradcheck", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ops", [("--op", "dense_square", "sequential"), ("--op", "dense_square", "--op", "sequential")])
def test_cli_checks_the_chosen_ops(ops):
    r = _cli(*ops, "--backend", "numpy")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(("dense_square ", "sequential "))]
    assert [row[2] for row in rows if row[0] == "dense_square"] == ["x", "weight", "bias", "<direction>"]
    assert ["sequential", "numpy", "2.weight", "7x7"] in [row[:4] for row in rows]
    assert all(row[1] == "numpy" and row[-1] == "PASS" for row in rows)
    assert "ALL PASSED" in r.stdout


def test_cli_self_test_at_settings_where_clean_rows_fail_says_so_and_fails(monkeypatch, capsys):
    import gradcheck.__main__ as command          # in this process, on three cases and three bugs
    monkeypatch.setattr(command, "CASES", {name: CASES[name] for name in ("relu", "kl", "adam_varying")})
    monkeypatch.setattr(command, "BUGS", {name: BUGS[name] for name in ("adam_weight_decay_ignored",
                                                                         "kl_dmu_dropped", "relu_writes_grad_out")})
    assert command.main(["--self-test", "--tol", "1e-300"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("note: with no bug planted, 22 of 22 rows fail at these settings")
    assert "NOT CAUGHT  adam_weight_decay_ignored" in out and "self-test FAILED: 1 of 3" in out


def test_cli_self_test_note_counts_the_rows_that_fail_clean_and_names_the_worst(monkeypatch, capsys):
    """A layer 1e-5 off fails 2 of the 6 rows with no bug planted: "2 of 6", and its worst row."""
    import gradcheck.__main__ as command
    monkeypatch.setattr(command, "CASES", {"relu": CASES["relu"], "slightly_wrong": ("numpy", _slightly_wrong_dense)})
    monkeypatch.setattr(command, "BUGS", {"relu_writes_grad_out": BUGS["relu_writes_grad_out"]})
    assert command.main(["--self-test"]) == 0
    assert capsys.readouterr().out.startswith("note: with no bug planted, 2 of 6 rows fail at these settings "
                                              "(worst: slightly_wrong x, rel 1e-05)")


def test_cli_reports_its_time_in_seconds(capsys):
    """The last line's "in X s": no more than the run took."""
    import gradcheck.__main__ as command
    t0 = time.perf_counter()
    assert command.main(["--op", "relu", "--backend", "numpy"]) == 0
    took = time.perf_counter() - t0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"ALL PASSED in \d+\.\d s", last), last
    assert float(last.split()[-2]) <= took + 0.05, (last, took)      # printed to 0.1 s


def test_cli_ctrl_c_stops_with_one_line_and_status_130():
    """As run_cli documents: 128 + SIGINT, what a script that runs it tests for; no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")       # the note's line as soon as it is printed
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck", "--self-test", "--tol", "1e-300"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C as at a terminal, even under ``pytest &`` (which starts with SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        note = proc.stdout.readline()       # printed once the clean run is done: the bugs are being planted
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert note.startswith("note: with no bug planted"), note + err
    assert (proc.returncode, err) == (130, "stopped: interrupted by SIGINT\n")


def test_cli_exits_1_when_a_row_fails():
    r = _cli("--op", "sigmoid", "--backend", "numpy", "--tol", "1e-300")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "FAILURES" in r.stdout


def test_cli_float32_smoke_check():
    r = _cli("--op", "dense", "--backend", "numpy", "--dtype", "float32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "float32" in r.stdout and "smoke check" in r.stdout


def test_cli_self_test_reports_each_bug_caught(self_tested_command):
    status, out, (_, caught) = self_tested_command
    assert status == 0, out
    for name, failed in caught.items():
        line = next(line for line in out.splitlines() if line.startswith("caught") and name in line.split())
        assert f"{len(failed)} failing row" in line and all(r.op in line for r in failed), line
    assert "NOT CAUGHT" not in out
    assert f"{len(BUGS)} of {len(BUGS)} planted bugs caught" in out


def test_cli_self_test_names_the_worst_row_of_each_bug(self_tested_command):
    """The row to look at first: the largest rel err among the bug's failing rows."""
    _, out, (_, caught) = self_tested_command
    for name, failed in caught.items():
        line = next(line for line in out.splitlines() if line.startswith("caught") and name in line.split())
        worst = max(failed, key=lambda r: r.rel_err)
        assert line.endswith(f"(worst: {worst.op} {worst.tensor}, rel {worst.rel_err:.2g})"), line


def test_cli_list_and_bad_arguments():
    r = _cli("--list")
    assert r.returncode == 0, r.stdout + r.stderr
    words = set(r.stdout.split())
    assert set(CASES) <= words and set(BUGS) <= words
    assert _cli("--op", "no_such_op").returncode == 2
    assert _cli("--backend", "cuda").returncode == 2


def test_cli_piped_into_head_stops_without_a_traceback():
    """``python -m gradcheck | head -1``: head leaves after one line; no BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(["sh", "-c", '"$0" -m gradcheck | head -1', sys.executable], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.startswith("gradcheck: float64 central differences") and r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr and "Error" not in r.stderr, r.stderr


def test_cli_with_its_reader_gone_exits_141_quietly():
    """The reader closes the pipe before gradcheck writes a line (as ``head`` may, at any point):
    the status of a program stopped by SIGPIPE, 128 + 13, and nothing on stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck", "--op", "sigmoid", "--backend", "numpy"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                  # long before the child has imported NumPy
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and stderr == "", stderr


@pytest.mark.parametrize("stdout, status, message", [
    ("> /dev/full", 1, "error: cannot write the output: No space left on device\n"),   # a full disk
    (">&-", 0, ""),                      # started with stdout closed: the status still tells
])
def test_cli_whose_output_cannot_be_written_says_so_in_one_line(stdout, status, message):
    if "full" in stdout and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(["sh", "-c", f'"$0" -m gradcheck --op sigmoid --backend numpy {stdout}', sys.executable],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stderr) == (status, message)


@pytest.mark.parametrize("args, message", [
    (("--seed", "-3"), "--seed: must be at least 0"),
    (("--step", "0"), "--step: must be greater than 0"),
    (("--step", "nan"), "--step: must be a finite number"),
    (("--step", "2"), "--step: must be below 0.05"),
    (("--step", "0.06"), "--step: must be below 0.05 (ReLU's inputs lie in [-1, 1], 20 steps away from its kink"),
    (("--tol", "0"), "--tol: must be greater than 0"),
    (("--tol", "-1"), "--tol: must be greater than 0"),
    (("--tol", "2"), "--tol: must be below 0.1 (T passes a gradient up to 1/(1 - T) times too large: at 0.1 one "
                     "11% too large, at 0.5 one twice; e.g. 1e-6), got 2"),
    (("--tol", "0.95"), "--tol: must be below 0.1"),           # passed a KL backward 10 times too large
    (("--tol", "0.6"), "--tol: must be below 0.1"),            # passed a factor of 2 slipped in
    (("--self-test", "--op", "dense"), "--op does not apply to --self-test"),
    (("--step", "1e-300"), "--step: must be at least 3.6e-13 in float64"),
    (("--dtype", "float32", "--step", "1e-7"), "--step: must be at least 1.9e-04 in float32 (smaller steps vanish "
                                                 "in round-off; e.g. 1e-2)"),
    (("--op", "fast_vae_1h", "--backend", "numpy"), "--op fast_vae_1h checks the numba path"),
    (("--op", "dense", "kl", "--backend", "numba"), "--op dense kl check the numpy path"),
    (("--self-test", "--backend", "numba"), "--backend numba does not apply to --self-test"),
    (("--self-test", "--dtype", "float32"), "--self-test proves the float64 check; float32's is a smoke check"),
    (("--list", "--op", "dense"), "--list lists every case and planted bug and exits: leave out --op"),
])
def test_cli_refuses_arguments_that_would_make_a_check_meaningless(args, message):
    """A step of 0 or a tolerance of 0 would report FAILURES a learner could take for a wrong gradient."""
    r = _cli(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    # one line, as the examples' errors: the usage block would push the message out of sight
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def docstring_code(function, before):
    """The code block of ``function``'s docstring after the line ending in ``before``."""
    return textwrap.dedent(function.__doc__.split(before + "::\n", 1)[1])


def test_the_layer_of_your_own_in_op_problems_docstring_runs_and_passes(capsys):
    """The docstring is where a user learns to check a layer: its code runs as written."""
    exec(compile(docstring_code(op_problem, "is checked the same way"), "op_problem's docstring", "exec"), {})
    table = capsys.readouterr().out
    assert "tanh" in table and "FAIL" not in table and "PASS" in table


def test_the_whole_model_check_of_docs_adding_a_layer_passes_and_catches_a_wrong_layer(capsys):
    """Where a user learns to check a model with a layer of their own in it: the page's block runs
    as written and passes; with the Tanh's derivative wrong, the encoder's first layer fails."""
    from doc_blocks import python_blocks
    (code,) = python_blocks("docs/adding-a-layer.md")
    exec(compile(code, "docs/adding-a-layer.md", "exec"), {})
    table = capsys.readouterr().out
    assert "my_vae" in table and "PASS" in table and "FAIL" not in table
    wrong = code.replace("(1 - self.saved(\"y\") ** 2)", "(1 - self.saved(\"y\"))")
    assert wrong != code
    names = {}
    exec(compile(wrong, "docs/adding-a-layer.md", "exec"), names)
    failed = {r.tensor for r in names["rows"] if not r.passed}
    assert {"encoder.0.weight", "encoder.0.bias"} <= failed and "decoder.2.weight" not in failed, failed


def test_the_kl_of_your_own_in_loss_problems_docstring_passes_and_a_slip_in_it_fails(capsys):
    """Where a teacher learns to check a student's loss: the docstring's KL passes as written; with
    the 1/2 forgotten it fails, and with ``grad`` left out it fails where grad is not 1."""
    code = docstring_code(loss_problem, "is checked so")

    def status(slip=None):
        source = code.replace(*slip) if slip else code
        assert source != code or slip is None
        exec(compile(source, "loss_problem's docstring", "exec"), {})
        rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("my_kl ")]
        return {row[2]: row[-1] for row in rows}

    assert status() == {"h": "PASS", "<direction>": "PASS", "h[grad=-1.7]": "PASS", "<direction>[grad=-1.7]": "PASS"}
    assert set(status(("0.5 * np.expm1", "np.expm1")).values()) == {"FAIL"}
    assert status(("grad / len(h)", "1 / len(h)")) == {"h": "PASS", "<direction>": "PASS", "h[grad=-1.7]": "FAIL",
                                                       "<direction>[grad=-1.7]": "FAIL"}


class _SquaredDistance(npvae.Module):
    """``sum((a - b)**2)``: a loss of two inputs, whose backward returns a gradient for each."""

    def forward(self, a, b):
        self.keep(a=a, b=b)
        return float(np.sum((a - b) ** 2))

    def backward(self, grad=1.0):
        d = 2.0 * grad * (self.saved("a") - self.saved("b"))
        return d, -d


def test_a_loss_of_two_inputs_is_checked_one_input_at_a_time():
    rng = np.random.default_rng(0)
    loss, a, b = _SquaredDistance(), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    problems = [loss_problem(loss, lambda: loss.forward(a, b), "a", a, g, part=0) for g in (1.0, -1.7)]
    problems += [loss_problem(loss, lambda: loss.forward(a, b), "b", b, g, part=1) for g in (1.0, -1.7)]
    rows = run({"distance": ("numpy", lambda dtype, rng, h: problems)})
    assert len(rows) == 8 and all(r.passed for r in rows), format_table(rows)
    swapped = run({"distance": ("numpy", lambda dtype, rng, h: [
        loss_problem(loss, lambda: loss.forward(a, b), "a", a, part=1)])})   # b's gradient for a: wrong
    assert not any(r.passed for r in swapped)
    with pytest.raises(TypeError, match=r"backward returned a tuple of 2 gradient\(s\); pass part= \(the index of "
                                        r"a's, 0 to 1; got None\)"):
        loss_problem(loss, lambda: loss.forward(a, b), "a", a).grads()
    with pytest.raises(TypeError, match=r"0 to 1; got 2\)"):
        loss_problem(loss, lambda: loss.forward(a, b), "a", a, part=2).grads()
    a32, b32 = a.astype(np.float32), b.astype(np.float32)        # a teacher's g an np.float64: no false alarm
    rows = run({"distance": ("numpy", lambda dtype, rng, h: [
        loss_problem(loss, lambda: loss.forward(a32, b32), "a", a32, np.float64(-1.7), part=0)])}, dtype=np.float32)
    assert all(r.passed for r in rows), format_table(rows)


class _StudentKL(npvae.KL):
    """The stock KL with one of a student's slips in its backward (or forward)."""

    def __init__(self, slip):
        super().__init__()
        self.slip = slip

    def forward(self, h):
        value = super().forward(h)
        return np.full(len(h), value) if self.slip == "per image" else value

    def backward(self, grad=1.0):
        h = self.saved("h")
        d = h.shape[1] // 2
        if self.slip == "into h":                   # builds its result in the saved input
            h[:, d:] = 0.5 * np.expm1(h[:, d:])
            h *= grad / len(h)
            return h
        dh = grad / len(h) * np.concatenate([h[:, :d], 0.5 * np.expm1(h[:, d:])], axis=1)
        return {"float64": lambda: dh.astype(np.float64), "no return": lambda: None, "list": lambda: [dh],
                "per image": lambda: dh}[self.slip]()


@pytest.mark.parametrize("slip, dtype, words", [
    ("float64", np.float32, r"<contract: backward returned the gradient of h in float64, but h is float32>"),
    ("into h", np.float64, r"<contract: forward or backward wrote into h>"),
    ("no return", np.float64, r"no gradient for h \(did backward return it\?\)"),
    ("list", np.float64, r"backward returned a list of 1 gradient\(s\); pass part="),
    ("per image", np.float64, r"forward\(\) returned an array of shape \(3,\) where a loss is one number"),
])
def test_a_students_slip_in_a_loss_is_named_not_taken_for_wrong_math(slip, dtype, words):
    """Each fails with what it is, not as a gradient off by some amount (a float64 gradient from a
    float32 loss passed, and training then blamed the Dense before it)."""
    def case(dtype, rng, h):
        kl, x = _StudentKL(slip), rng.standard_normal((3, 8)).astype(dtype)
        return [loss_problem(kl, lambda: kl.forward(x), "h", x)]
    rows = run({"kl": ("numpy", case)}, dtype=dtype)
    assert not any(r.passed for r in rows) and re.search(words, rows[0].tensor), rows[0].tensor


def test_parameters_kept_in_a_list_are_named_not_left_out_of_the_check():
    """A weight in a list is no parameter of the module: its gradient, right or wrong, went unchecked
    (the table had rows for x alone)."""
    class ListDense(npvae.Module):
        def __init__(self):
            super().__init__()
            self.params = [npvae.Parameter(np.ones((3, 2)))]

        def forward(self, x):
            self.keep(x=x)
            return x @ self.params[0].data

        def backward(self, grad_out):
            self.params[0].grad += 3 * self.saved("x").T @ grad_out      # 3x too large, unseen
            return grad_out @ self.params[0].data.T

    class Outer(npvae.Module):                      # the same, one module down
        def __init__(self):
            super().__init__()
            self.inner = ListDense()

    class Layers(npvae.Module):                     # PyTorch's ModuleList pitfall
        def __init__(self):
            super().__init__()
            self.blocks = [npvae.Dense(3, 2, dtype=np.float64, rng=0)]

    x = np.ones((4, 3))
    for module, where in ((ListDense(), r"ListDense\.params \(a list\)"), (Outer(), r"ListDense\.params \(a list\)"),
                          (Layers(), r"Layers\.blocks \(a list\)")):
        with pytest.raises(TypeError, match=where + r" holds Parameters where parameters\(\) does not see them"):
            op_problem(module, lambda: x, lambda R: {"x": R}, {"x": x}, np.random.default_rng(0))
    with_arrays = npvae.Dense(3, 2, dtype=np.float64, rng=0)
    with_arrays.notes = [np.ones(2)]                # plain arrays in a list hide nothing
    rows = run({"dense": ("numpy", lambda dtype, rng, h: [op_problem(
        with_arrays, lambda: with_arrays.forward(x), lambda R: {"x": with_arrays.backward(R)}, {"x": x}, rng)])})
    assert all(r.passed for r in rows), format_table(rows)


def test_a_layer_that_writes_into_its_input_is_named_not_taken_for_wrong_math():
    class ReLUInPlace(npvae.Module):                # np.maximum(x, 0, out=x): changes x once, at the first call
        def forward(self, x):
            y = np.maximum(x, 0, out=x)
            self.keep(y=y)
            return y

        def backward(self, grad_out):
            return grad_out * (self.saved("y") > 0)

    def in_place(dtype, rng, h):
        layer, x = ReLUInPlace(), rng.standard_normal((3, 5)).astype(dtype)
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    assert [r.tensor for r in run({"relu": ("numpy", in_place)})] == ["<contract: forward or backward wrote into x>"]

    class LeakyInPlace(npvae.Module):
        def forward(self, x):
            self.keep(x=x.copy())
            x[x < 0] *= 0.2                         # the caller's array
            return x

        def backward(self, grad_out):
            return np.where(self.saved("x") < 0, 0.2, 1.0) * grad_out

    def case(dtype, rng, h):
        layer, x = LeakyInPlace(), rng.standard_normal((3, 5)).astype(dtype)
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    rows = run({"leaky": ("numpy", case)})
    assert [r.tensor for r in rows] == ["<contract: forward or backward wrote into x>"]


def test_op_problem_given_a_loss_says_to_use_loss_problem_and_a_forward_without_return_says_so():
    kl, x = npvae.KL(), np.random.default_rng(0).standard_normal((3, 8))
    with pytest.raises(TypeError, match=r"op_problem: forward\(\) returned a number \(float\) where a layer "
                                        r"returns an array: a loss is checked with gradcheck.loss_problem"):
        op_problem(kl, lambda: kl.forward(x), lambda R: {"h": kl.backward(R)}, {"h": x}, np.random.default_rng(1))
    for returned, words in ((None, r"returned None .*return statement missing"), ([1.0], r"returned a list where")):
        with pytest.raises(TypeError, match=words):
            op_problem(kl, lambda: returned, lambda R: {}, {"h": x}, np.random.default_rng(1))


def test_away_from_kinks_refuses_a_layer_it_does_not_know():
    """A Sequential case with a new layer must not shift the next ReLU's inputs by wrong values."""
    from gradcheck.cases import away_from_kinks

    class Double(npvae.Module):
        def forward(self, x):
            return 2 * x

    layers = [npvae.Dense(3, 2, dtype=np.float64, rng=0), Double(), npvae.ReLU()]
    with pytest.raises(TypeError, match=r"layers\[1\] is a Double"):
        away_from_kinks(layers, np.ones((2, 3)), 1e-3)


def test_a_long_error_is_printed_under_the_table_not_in_its_tensor_column():
    def broken(dtype, rng, h):
        raise ValueError("the layer under test failed in a way that takes a long sentence to say, " * 2)

    rows = run({"broken": ("numpy", broken), "relu": CASES["relu"]})
    text = format_table(rows)
    table_lines = [line for line in text.splitlines() if line.startswith(("broken", "relu"))]
    assert any("<error: [1] below>" in line for line in table_lines)
    assert max(map(len, table_lines)) < 120
    assert "  [1] broken / numpy: <error: ValueError: the layer under test failed" in text


def test_the_smallest_step_allowed_still_moves_a_dead_units_bias():
    """The dead units' biases are -100: a step that vanishes there divides by zero."""
    from gradcheck.__main__ import parse_args
    step = parse_args(["--step", "3.6e-13"]).step
    rows = run(CASES, ["fast_vae_dead_units"], ("numba",), np.float64, step)
    assert rows and not [r.tensor for r in rows if r.tensor.startswith("<error")]


def test_a_failure_of_the_reference_is_not_blamed_on_the_fast_path(monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(npvae.VAE, "backward", broken)
    rows = run(CASES, ["fast_vae_1h"], ("numba",))
    assert [r.tensor for r in rows] == ["<error: RuntimeError: the reference this case is compared with failed "
                                        "(VAE.loss/VAE.backward): ValueError: operands could not be broadcast "
                                        "together>"]


def test_the_summary_names_the_failing_cases_and_what_a_failing_comparison_with_the_reference_means():
    def kl_without_the_minus_one(self, h):       # a forward slip: the KL off by a constant, same gradient
        return KL_FORWARD(self, h) + 0.5 * h.shape[1] / 2

    KL_FORWARD = npvae.KL.forward
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(npvae.KL, "forward", kl_without_the_minus_one)
        rows = run(CASES, ["kl", "fast_vae_1h"])
    text = format_table(rows)
    assert "failed (in fast_vae_1h)" in text.splitlines()[-1]
    assert "a failing '= VAE.*' row compares the fast path with the reference" in text
    assert summary([rows[0]]).startswith("1 row: 1 passed, 0 failed;")
    assert "compares the fast path with the reference" not in format_table(run(CASES, ["fast_vae_1h"]))


def test_the_header_explains_the_exact_rows_only_when_there_are_some():
    assert "optimizer steps (step t)" not in format_table(run(CASES, ["relu"]))
    assert "optimizer steps (step t)" in format_table(run(CASES, ["adam"]))
    assert "optimizer steps (step t)" in format_table(run(CASES, ["fast_vae_1h"]))      # the '= VAE.*' rows


@pytest.mark.parametrize("optimizer, cases", [("FusedAdam", ["fast_adam", "fast_adam_no_decay"]),
                                              ("FusedSGD", ["fast_sgd"])])
def test_the_fused_optimizer_cases_run_the_fused_optimizers(monkeypatch, optimizer, cases):
    """A fused optimizer that does not move the weight's last columns (as if it skipped the ones
    whose gradient is 0) fails its cases: they check the fast path, not the reference again."""
    from npvae.fast import optim
    step = getattr(optim, optimizer).step

    def lazy(self, first_grad):
        p = self.block.views(0)[0]
        kept = p[:, 2:].copy()
        step(self, first_grad)
        p[:, 2:] = kept

    monkeypatch.setattr(getattr(optim, optimizer), "step", lazy)
    rows = run(CASES, cases, ("numba",))
    assert {r.op for r in rows if not r.passed and "weight" in r.tensor} == set(cases)


@pytest.mark.parametrize("optimizer, case", [("FusedAdam", "fast_adam"), ("FusedAdam", "fast_adam_no_decay"),
                                             ("FusedSGD", "fast_sgd")])
def test_a_fused_optimizer_that_holds_the_dead_columns_still_fails(monkeypatch, optimizer, case):
    """A first-weight column with no gradient still moves (its weight decay, its moments or
    momentum from the steps it was live): each fused case hands over dead columns to show it."""
    from npvae.fast import optim
    step = getattr(optim, optimizer).step

    def holds_dead_columns(self, first_grad):
        p = self.block.views(0)[0]
        dead = np.setdiff1d(np.arange(p.shape[1]), first_grad[1])
        kept = p[:, dead].copy()
        step(self, first_grad)
        p[:, dead] = kept

    monkeypatch.setattr(getattr(optim, optimizer), "step", holds_dead_columns)
    rows = run(CASES, [case], ("numba",))
    assert {r.tensor.split()[-1] for r in rows if not r.passed} == {"weight"}


def test_list_lists_the_cases_of_the_backend_asked_for(capsys):
    import gradcheck.__main__ as command
    assert command.main(["--list", "--backend", "numba"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.split("\n\n")[0].splitlines()]
    assert listed == [name for name, (backend, _) in CASES.items() if backend == "numba"]


def test_list_says_what_each_case_checks_and_the_table_what_its_tags_mean(capsys):
    import gradcheck.__main__ as command
    from gradcheck.cases import DESCRIPTIONS
    assert command.main(["--list"]) == 0
    cases = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert len(cases) == len(CASES)
    for line, (name, (backend, _)) in zip(cases, CASES.items()):     # a new case's slips, said plainly
        assert name in DESCRIPTIONS, f"case {name!r} has no line in gradcheck.cases.DESCRIPTIONS"
        assert len(line) <= 79, f"--list's line for {name!r} is {len(line)} columns; shorten its DESCRIPTIONS entry"
        assert line.split(maxsplit=2) == [name, backend, DESCRIPTIONS[name]]
    legend = "[grad=g]: the loss's incoming gradient is g, not 1; [beta=b]: the KL weight"
    table = format_table(run(CASES, ["kl", "vae_1h"], ("numpy",)))
    assert legend in table and "python -m pydoc gradcheck.core" in table
    assert legend not in format_table(run(CASES, ["dense"], ("numpy",)))    # no tagged rows: no legend


@pytest.mark.parametrize("settings, message", [
    (dict(tol=5.0), r"tol must be above 0 and below 0.1 .* got 5.0"),      # passed every wrong gradient
    (dict(tol=0.6), r"tol must be above 0 and below 0.1"),                  # passed a factor of 2
    (dict(tol=-1.0), r"tol must be above 0"),                               # failed right rows of 1e-11
    (dict(h=0.0), r"h must be a finite step above 0 \(e.g. 1e-05\), got 0.0"),  # a ZeroDivisionError row
])
def test_the_python_api_refuses_a_step_or_tolerance_that_makes_the_check_meaningless(settings, message):
    with pytest.raises(ValueError, match=message):
        run(CASES, ["dense"], ("numpy",), **settings)


def test_rel_error_is_the_documented_formula():                             # G03
    from gradcheck.core import rel_error
    assert rel_error([1.0, 0.0], [2.0, 0.0]) == pytest.approx(0.5)
    assert rel_error([0.0], [3.0]) == pytest.approx(1.0)


def test_a_direction_orthogonal_to_a_right_gradient_passes():              # G07
    from gradcheck.core import Problem, check_problem
    V = np.random.default_rng(0).standard_normal(2)     # the direction check_problem will draw
    a = np.array([V[1], -V[0]])                          # a right gradient orthogonal to it
    T = np.array([0.3, 0.7])
    prob = Problem(tensors={"T": T}, loss=lambda: float(a @ T), grads=lambda: {"T": a.copy()})
    rows = check_problem(prob, "linear", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert all(r.passed for r in rows), [(r.tensor, r.rel_err) for r in rows]


# -- a teaching assistant's autograder: what students hand in ----------------------------------------
class _GaussianNLL(npvae.Module):
    """``mean over the batch of sum(0.5 * (logvar + (x - pred)**2 / exp(logvar)))``, with a learned
    per-pixel ``logvar``: a loss with a Parameter of its own. ``slip``: "2x" doubles logvar's
    gradient, "=" sets ``.grad`` instead of adding into it."""

    def __init__(self, slip=None):
        super().__init__()
        self.logvar = npvae.Parameter(np.linspace(-0.5, 0.5, 4))
        self.slip = slip

    def forward(self, pred, x):
        self.keep(pred=pred, x=x)
        lv = self.logvar.data
        return float(np.sum(0.5 * (lv + (x - pred) ** 2 / np.exp(lv))) / len(x))

    def backward(self, grad=1.0):
        pred, x = self.saved("pred"), self.saved("x")
        lv, r = self.logvar.data, pred - x
        dlv = grad / len(x) * np.sum(0.5 * (1 - r ** 2 / np.exp(lv)), axis=0) * (2 if self.slip == "2x" else 1)
        if self.slip == "=":
            self.logvar.grad = dlv
        else:
            self.logvar.grad += dlv
        return grad / len(x) * r / np.exp(lv)


@pytest.mark.parametrize("slip, words", [(None, None), ("2x", None),
                                         ("=", r"<contract: backward set logvar.grad instead of adding into it")])
def test_a_loss_with_a_parameter_of_its_own_has_that_parameter_checked(slip, words):
    """A learned variance's gradient was never checked: a wrong one passed, and the table had no
    row for it."""
    def case(dtype, rng, h):
        loss = _GaussianNLL(slip)
        pred, x = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        return [loss_problem(loss, lambda: loss.forward(pred, x), "pred", pred, g) for g in (1.0, -1.7)]
    rows = run({"gauss": ("numpy", case)})
    if slip is None:
        assert all(r.passed for r in rows) and {r.tensor for r in rows} >= {"logvar", "logvar[grad=-1.7]"}, \
            format_table(rows)
    elif words is None:
        assert {r.tensor for r in rows if not r.passed} >= {"logvar", "logvar[grad=-1.7]"}, format_table(rows)
        assert all(r.passed for r in rows if r.tensor.startswith("pred")), format_table(rows)
    else:
        assert not any(r.passed for r in rows) and re.match(words, rows[0].tensor), format_table(rows)


class _Tanh(npvae.Module):
    def __init__(self, slip=None):
        super().__init__()
        self.slip = slip

    def forward(self, x):
        y = np.tanh(x)
        self.keep(y=y)
        return y.astype(np.float64) if self.slip == "float64 out" else y

    def backward(self, grad_out):
        if self.slip == "exit":
            sys.exit("a student's sys.exit")
        g = grad_out * (1 - self.saved("y") ** 2)
        return g.tolist() if self.slip == "list" else g


def _tanh_case(slip):
    def case(dtype, rng, h):
        layer, x = _Tanh(slip), rng.standard_normal((3, 5)).astype(dtype)
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    return case


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_gradient_handed_back_as_a_list_or_a_forward_of_another_dtype_is_named(dtype):
    """A list passed in float64 (and was called float64 in float32), then failed in a model; a float64
    output from float32 inputs passed, then failed at the next layer."""
    rows = run({"tanh": ("numpy", _tanh_case("list"))}, dtype=dtype)
    assert not any(r.passed for r in rows) and rows[0].tensor.startswith(
        "<contract: backward returned the gradient of x as a list; it must be an ndarray"), format_table(rows)
    rows = run({"tanh": ("numpy", _tanh_case("float64 out"))}, dtype=np.float32)
    assert not any(r.passed for r in rows)
    assert rows[0].tensor == "<contract: forward returned float64 from float32 inputs>"
    assert all(r.passed for r in run({"tanh": ("numpy", _tanh_case(None))}, dtype=dtype))


def test_a_sys_exit_in_a_students_code_is_a_failing_row_and_the_other_cases_still_run():
    rows = run({"exits": ("numpy", _tanh_case("exit")), "tanh": ("numpy", _tanh_case(None))})
    assert [r.op for r in rows if not r.passed] == ["exits"]
    assert "SystemExit: a student's sys.exit" in rows[0].tensor
    assert any(r.op == "tanh" and r.passed for r in rows)


def test_an_empty_parameter_is_checked_with_the_rest_not_a_numpy_error():
    class WithAnEmptyBias(npvae.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = npvae.Parameter(np.ones((5, 2))), npvae.Parameter(np.zeros(0))

        def forward(self, x):
            self.keep(x=x)
            return x @ self.w.data

        def backward(self, grad_out):
            self.w.grad += self.saved("x").T @ grad_out
            return grad_out @ self.w.data.T

    def case(dtype, rng, h):
        layer, x = WithAnEmptyBias(), rng.standard_normal((3, 5))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    rows = run({"empty": ("numpy", case)})
    assert all(r.passed for r in rows) and {"x", "w", "b"} <= {r.tensor for r in rows}, format_table(rows)
    assert rel_error(np.zeros(0), np.zeros(0)) == 0.0


def test_a_forward_that_raises_part_way_through_the_differences_leaves_its_inputs_as_they_were():
    """A timed-out or crashing forward left the element being nudged off by h (a model's weight,
    in a whole-model check)."""
    calls = 0

    class Flaky(_Tanh):
        def forward(self, x):
            nonlocal calls
            calls += 1
            if calls == 10:
                raise RuntimeError("a timeout, say")
            return super().forward(x)
    x = np.random.default_rng(0).standard_normal((3, 5))
    kept = x.copy()

    def case(dtype, rng, h):
        layer = Flaky()
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    rows = run({"flaky": ("numpy", case)})
    assert "RuntimeError: a timeout, say" in rows[-1].tensor and np.array_equal(x, kept)


def test_an_error_row_keeps_its_problems_tag_and_the_next_problem_still_runs():
    class NoGradArgument(npvae.KL):
        def backward(self):                         # forgets grad=: fails at g = -1.7 only
            return super().backward()

    def case(dtype, rng, h):
        kl, x = NoGradArgument(), rng.standard_normal((3, 8))
        return [loss_problem(kl, lambda: kl.forward(x), "h", x, g) for g in (-1.7, 1.0)]
    rows = run({"kl": ("numpy", case)})
    assert rows[0].tensor.startswith("<error: TypeError") and rows[0].tensor.endswith("[grad=-1.7]")
    assert [r.tensor for r in rows[1:]] == ["h", "<direction>"] and all(r.passed for r in rows[1:])


def test_a_header_given_another_dtype_than_the_rows_says_each_row_keeps_its_own_tolerance():
    rows32 = run(CASES, ops="sigmoid", dtype=np.float32)
    assert "each row passed or failed by its own run's tolerance" in format_table(rows32, dtype=np.float64)
    same = format_table(rows32) + format_table(run(CASES, ops="sigmoid"), dtype=np.float64)
    assert "own run's tolerance" not in same


def _square_loss_case(make, x_of=lambda rng: rng.standard_normal((3, 4)), name="x", gs=(1.0, -1.7)):
    """A case of ``make()``'s loss on ``x_of(rng)``, at each g of ``gs``."""
    def case(dtype, rng, h):
        m, x = make(), x_of(rng)
        return [loss_problem(m, lambda: m.forward(x), name, x, g) for g in gs]
    return case


class _HalfSquare(npvae.Module):
    """``0.5 * sum(x**2)``; ``fail_at``: the forward call that raises (a timeout, say)."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise FloatingPointError("overflow in exp")
        self.keep(x=x)
        return float(0.5 * np.sum(x ** 2))

    def backward(self, grad=1.0):
        return grad * self.saved("x")


def test_an_error_while_the_differences_run_is_that_problems_row_and_the_next_problem_still_runs():
    rows = run({"flaky": ("numpy", _square_loss_case(lambda: _HalfSquare(fail_at=8)))})
    assert rows[0].tensor == "<error: FloatingPointError: overflow in exp>" and not rows[0].passed
    assert [r.tensor for r in rows[1:]] == ["x[grad=-1.7]", "<direction>[grad=-1.7]"]
    assert all(r.passed for r in rows[1:])


def test_what_cannot_be_nudged_in_place_is_named_not_checked_wrongly():
    """An integer input, two tensors sharing memory (a gradient of either alone cannot be taken), a
    name given to an input and a parameter (one row hid the other), a parameter whose array forward
    replaces (the check nudged the old one): each used to pass a wrong gradient or fail a right one."""
    ints = run({"ints": ("numpy", _square_loss_case(_HalfSquare, lambda rng: rng.integers(0, 9, (3, 4))))})
    assert ints[0].tensor.startswith("<error: x is int64: only floats can be nudged by h")
    tied = npvae.VAE(6, 4, 2, rng=0, dtype=np.float64)
    tied.decoder[2].weight.data = tied.encoder[0].weight.data.T
    problem = Problem({"a": tied.encoder[0].weight.data, "b": tied.decoder[2].weight.data}, lambda: 0.0, dict)
    row, = check_problem(problem, "tied", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert row.tensor.startswith("<error: a and b share memory") and not row.passed

    class LearnedMean(_HalfSquare):
        def __init__(self, replace=False):
            super().__init__()
            self.mu, self.replace = npvae.Parameter(np.zeros(4)), replace

        def forward(self, x):
            if self.replace:
                self.mu.data = np.clip(self.mu.data, -5, 5)     # a new array each call
            return super().forward(x - self.mu.data)

        def backward(self, grad=1.0):
            d = super().backward(grad)
            self.mu.grad -= d.sum(axis=0)
            return d
    with pytest.raises(TypeError, match=r"\['mu'\] name both an input and a parameter"):
        _square_loss_case(LearnedMean, name="mu")(np.float64, np.random.default_rng(0), 1e-5)
    assert all(r.passed for r in run({"mean": ("numpy", _square_loss_case(LearnedMean))}))
    replaced = run({"mean": ("numpy", _square_loss_case(lambda: LearnedMean(replace=True)))})
    assert replaced[0].tensor.startswith("<contract: forward or backward replaced mu.data with another array")


def test_a_loss_returning_none_or_a_backward_callable_returning_no_dict_is_named():
    class NoReturn(_HalfSquare):
        def forward(self, x):
            super().forward(x)
    rows = run({"none": ("numpy", _square_loss_case(NoReturn))})
    assert "forward() returned None where a loss returns a number" in rows[0].tensor

    def case(dtype, rng, h):
        layer, x = _Tanh(), rng.standard_normal((3, 5))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: layer.backward(R), {"x": x}, rng)]
    rows = run({"no dict": ("numpy", case)})
    assert "backward(R) must return {input name: gradient}, got ndarray" in rows[0].tensor


def test_a_header_given_another_tolerance_than_the_rows_says_each_row_keeps_its_own():
    rows = run(CASES, ops="sigmoid", tol=1e-12)
    assert "own run's tolerance" in format_table(rows, tol=1e-3) and "own run's" not in format_table(rows)


class _LazyMean(_HalfSquare):
    """``0.5 * sum((x - mu)**2)`` with ``mu`` made at the first forward (its width from the data),
    or made anew at every forward (``anew``); ``factor`` scales mu's gradient (3: wrong)."""

    def __init__(self, factor=1.0, anew=False):
        super().__init__()
        self.factor, self.anew = factor, anew

    def forward(self, x):
        if self.anew or not hasattr(self, "mu"):
            self.mu = npvae.Parameter(np.zeros(x.shape[1]) if not hasattr(self, "mu") else self.mu.data.copy())
        return super().forward(x - self.mu.data)

    def backward(self, grad=1.0):
        d = super().backward(grad)
        self.mu.grad -= self.factor * d.sum(axis=0)
        return d


def test_a_parameter_made_at_the_first_forward_is_checked_and_one_made_anew_each_time_is_named():
    """A parameter a layer or loss makes in its forward had no row (a wrong gradient passed); one
    made anew at each forward left the check nudging the old one."""
    def layer_case(make):
        def case(dtype, rng, h):
            m, x = make(), rng.standard_normal((3, 4))
            return [op_problem(m, lambda: np.atleast_2d(m.forward(x)),
                               lambda R: {"x": m.backward(float(R[0, 0]))}, {"x": x}, rng)]
        return case
    for build in (_square_loss_case, layer_case):
        right = run({"lazy": ("numpy", build(_LazyMean))})
        assert all(r.passed for r in right) and any(r.tensor.startswith("mu") for r in right), format_table(right)
        wrong = run({"lazy": ("numpy", build(lambda: _LazyMean(factor=3.0)))})
        assert [r.passed for r in wrong if r.tensor.startswith("mu")] == [False] * len(
            [r for r in wrong if r.tensor.startswith("mu")]) != [], format_table(wrong)
        anew = run({"lazy": ("numpy", build(lambda: _LazyMean(anew=True)))})
        assert anew[0].tensor.startswith("<contract: forward or backward replaced the Parameter mu"), \
            format_table(anew)


def test_a_loss_handing_back_a_list_of_gradients_per_input_or_written_as_a_plain_class_passes():
    class Split(npvae.KL):
        def backward(self, grad=1.0):
            return list(np.split(super().backward(grad), 2, axis=1))     # [d mu | d logvar] as two arrays

    class PlainHalfSquare:                          # no npvae.Module: no parameters to check
        def forward(self, x):
            self.x = x
            return float(0.5 * np.sum(x ** 2))

        def backward(self, grad=1.0):
            return grad * self.x

    def case(dtype, rng, h):
        kl, mu, lv = Split(), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        return [loss_problem(kl, lambda: kl.forward(np.concatenate([mu, lv], axis=1)), n, v, g, part=i)
                for i, (n, v) in enumerate([("mu", mu), ("logvar", lv)]) for g in (1.0, -1.7)]
    rows = run({"split": ("numpy", case), "plain": ("numpy", _square_loss_case(PlainHalfSquare))})
    assert all(r.passed for r in rows) and len(rows) == 12, format_table(rows)


def test_a_header_given_another_step_than_the_rows_says_so():
    rows = run(CASES, ops="sigmoid", h=1e-4)
    assert "own run's tolerance (and h)" in format_table(rows, h=1e-3) and "own run's" not in format_table(rows)


# -- what mutation testing of gradcheck found no test to pin --------------------------------------
def test_rel_error_when_the_analytic_gradient_is_the_larger():
    # the docstring: max|a - n| / max(max|a|, max|n|, 1e-12); the suite pins only |n| >= |a|
    assert rel_error([2.0, 0.0], [1.0, 0.0]) == pytest.approx(0.5)
    assert rel_error([3.0], [0.0]) == pytest.approx(1.0)


def test_the_step_actually_taken_in_float32_is_used():
    # the docstring: "h is the step actually taken (the perturbed value is read back, so float32
    # rounding of T + h is accounted for)". A linear loss makes the difference exact.
    c = np.array([0.7, -1.3])
    T = np.array([1000.0, -300.0], np.float32)
    prob = Problem({"T": T}, lambda: float(c @ T.astype(np.float64)), lambda: {"T": c.copy()})
    rows = check_problem(prob, "linear", "numpy", 1e-3, 1e-4, np.random.default_rng(0))
    assert all(r.passed for r in rows), [(r.tensor, r.rel_err) for r in rows]


def test_a_gradient_of_a_broadcastable_but_wrong_shape_fails():
    # a bias gradient handed back as (1, 4) for a (4,) tensor: the right numbers, the wrong shape
    c = np.array([0.7, -1.3, 0.4, 2.0])
    T = np.array([0.1, 0.2, 0.3, 0.4])
    prob = Problem({"b": T}, lambda: float(c @ T), lambda: {"b": c.reshape(1, 4).copy()})
    rows = check_problem(prob, "bias", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert len(rows) == 1 and not rows[0].passed
    assert "gradient of b has shape (1, 4), expected (4,)" in rows[0].tensor


def test_a_sys_exit_in_a_problems_backward_is_that_problems_row():
    # check_problem's docstring: "so does an error raised by the op's code (a sys.exit too)"
    import sys
    T = np.array([0.1, 0.2])

    def grads():
        sys.exit(3)                       # a student's backward that exits
    prob = Problem({"x": T}, lambda: float(T.sum()), grads, tag="[grad=-1.7]")
    rows = check_problem(prob, "mine", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert len(rows) == 1 and not rows[0].passed
    assert rows[0].tensor == "<error: SystemExit: 3>[grad=-1.7]"


def test_a_row_exactly_at_the_tolerance_fails():
    # the header says "pass if rel < tol": rel == tol is a failure (boundary only)
    prob = Problem({}, None, None, exact={"step 1": (np.array([2.0]), np.array([1.0]))})   # rel = 0.5 exactly
    row, = check_problem(prob, "opt", "numpy", 1e-5, 0.5, np.random.default_rng(0), exact_tol=0.5)
    assert row.rel_err == 0.5 and not row.passed


def test_rows_of_two_runs_at_different_steps_are_flagged():
    # same dtype and tolerance, two steps: the header can state only one of them
    from gradcheck import CASES
    rows = run(CASES, ops="relu", h=1e-5) + run(CASES, ops="relu", h=1e-4)
    assert "rows of several runs" in format_table(rows)


class _TwiceUsed(npvae.Module):
    """``y = a * x + a * z``: one parameter used twice. ``slip="one ="``: the first use's gradient is
    assigned (=), the second's added (+=); ``slip="replace"``: forward replaces ``a.data``."""

    def __init__(self, slip=None):
        super().__init__()
        self.a = npvae.Parameter(np.array([0.7, -1.3, 0.4]))
        self.slip = slip

    def forward(self, x, z):
        if self.slip == "replace":
            self.a.data = self.a.data.copy()            # a new array each call
        self.x, self.z = x, z
        return self.a.data * x + self.a.data * z

    def backward(self, grad_out):
        if self.slip == "one =":
            self.a.grad[...] = (grad_out * self.x).sum(axis=0)
        else:
            self.a.grad += (grad_out * self.x).sum(axis=0)
        self.a.grad += (grad_out * self.z).sum(axis=0)
        return grad_out * self.a.data


def _twice_used_case(slip):
    def build(dtype, rng, h):
        layer = _TwiceUsed(slip)
        x, z = 0.1 * rng.standard_normal((4, 3)), rng.standard_normal((4, 3)) + 2.0
        return [op_problem(layer, lambda: layer.forward(x, z), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    return build


class _ScaleShift(npvae.Module):
    """``y = p[0] * x + p[1]``, scale and shift packed in one parameter. ``slip``: the shift's
    gradient is assigned (=) where += belongs, the scale's added."""

    def __init__(self, slip=False):
        super().__init__()
        self.p = npvae.Parameter(np.array([0.7, -0.2]))
        self.slip = slip

    def forward(self, x):
        self.x = x
        return self.p.data[0] * x + self.p.data[1]

    def backward(self, grad_out):
        self.p.grad[0] += np.sum(grad_out * self.x)
        if self.slip:
            self.p.grad[1] = np.sum(grad_out)
        else:
            self.p.grad[1] += np.sum(grad_out)
        return grad_out * self.p.data[0]


def _scale_shift_case(slip):
    def build(dtype, rng, h):
        layer, x = _ScaleShift(slip), 10.0 + rng.standard_normal((4, 3))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    return build


def test_a_gradient_assigned_in_part_of_a_parameter_is_named():
    # the += check is per tensor: an assigned part whose gradient is smaller than the rest's
    assert all(r.passed for r in run({"ok": ("numpy", _scale_shift_case(False))}))
    rows = run({"slip": ("numpy", _scale_shift_case(True))})
    assert len(rows) == 1 and rows[0].tensor == "<contract: backward set p.grad instead of adding into it (+=)>"


def test_a_layer_whose_forward_replaces_its_parameters_data_is_named():
    # op_problem's docstring: neither forward nor backward may replace a parameter's .data
    rows = run({"slip": ("numpy", _twice_used_case("replace"))})
    assert len(rows) == 1
    assert rows[0].tensor.startswith("<contract: forward or backward replaced a.data with another array")


def test_away_from_kinks_puts_every_relu_input_at_least_margin_from_0():
    # its docstring: "shifting the bias of each Dense before a ReLU by the least amount that puts
    # every pre-activation at least margin from 0"; checked here for a deep stack at once
    from gradcheck.cases import away_from_kinks
    rng = np.random.default_rng(0)
    layers = [npvae.Dense(5, 8, dtype=np.float64, rng=rng), npvae.ReLU(), npvae.Dense(8, 8, dtype=np.float64, rng=rng),
              npvae.ReLU(), npvae.Dense(8, 3, dtype=np.float64, rng=rng), npvae.Sigmoid()]
    x = rng.standard_normal((16, 5))
    margin = 0.05
    out = away_from_kinks(layers, x, margin)
    a = x
    for i, layer in enumerate(layers):
        a = layer.forward(a)
        if isinstance(layer, npvae.Dense) and isinstance(layers[i + 1], npvae.ReLU):
            assert np.min(np.abs(a)) >= margin * (1 - 1e-9), (i, np.min(np.abs(a)))
    np.testing.assert_allclose(out, a, rtol=1e-12)      # and it returns the stack's output


class _TanhIgnoringGradOut(npvae.Module):
    """The slip: backward returns tanh's local derivative, not times grad_out."""

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_out):
        return 1 - self.y ** 2


def test_a_backward_that_ignores_its_grad_out_fails():
    # caught only because R is random: with R = ones, L = sum(y) and the slip is right
    def build(dtype, rng, h):
        layer, x = _TanhIgnoringGradOut(), rng.standard_normal((3, 5))
        return [op_problem(layer, lambda: layer.forward(x), lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]
    rows = run({"tanh": ("numpy", build)})
    assert rows and not any(r.passed for r in rows), [(r.tensor, r.rel_err) for r in rows]


class _SquareLossWithBuffer(npvae.Module):
    """``sum(x**2) / 2``, whose gradient ``x`` forward writes into a buffer of its own (allocated
    once, as a fast layer would); backward (grad=1) hands that buffer back. Right in training:
    the caller uses the gradient before the next forward."""

    def __init__(self, shape):
        super().__init__()
        self.dx = np.zeros(shape)

    def forward(self, x):
        self.dx[...] = x
        return float(0.5 * np.sum(x * x))

    def backward(self, grad=1.0):
        if grad == 1.0:
            return self.dx
        return grad * self.dx


def test_a_gradient_handed_back_in_a_buffer_the_next_forward_overwrites_is_copied():
    # Problem.grads: "Analytic dL/dT for every name in tensors (copies)"
    def build(dtype, rng, h):
        x = rng.standard_normal((3, 4))
        m = _SquareLossWithBuffer(x.shape)
        return [loss_problem(m, lambda: m.forward(x), "x", x)]
    rows = run({"square": ("numpy", build)})
    assert rows and all(r.passed for r in rows), [(r.tensor, r.rel_err) for r in rows]


def test_the_relu_case_passes_in_float32_at_any_seed():
    # float32's step is 1e-2: a ReLU input closer than that to 0 fails a right backward
    from gradcheck import CASES
    for seed in range(30):
        rows = run(CASES, ops="relu", dtype=np.float32, seed=seed)
        assert all(r.passed for r in rows), (seed, [(r.tensor, r.rel_err) for r in rows if not r.passed])


def test_expect_fail_marks_failing_rows_as_expected():
    # format_table's docstring: "expect_fail: failing rows read 'FAIL (expected)'"
    from gradcheck import Row
    rows = [Row("mine", "numpy", "x", (2,), 1.0, 0.5, 1e-6), Row("mine", "numpy", "y", (2,), 0.0, 0.0, 1e-6)]
    table = format_table(rows, expect_fail=True)
    assert "FAIL (expected)" in table and "PASS" in table
    assert "FAIL (expected)" not in format_table(rows)


def test_a_tensor_that_is_not_an_array_is_named():
    T = [0.1, 0.2]                      # a list where an array belongs
    prob = Problem({"x": T}, lambda: float(sum(T)), lambda: {"x": np.ones(2)}, tag="[t]")
    rows = check_problem(prob, "mine", "numpy", 1e-5, 1e-6, np.random.default_rng(0))
    assert len(rows) == 1 and not rows[0].passed
    assert rows[0].tensor == "<error: x is a list; the tensors checked are arrays, nudged in place>[t]"


def test_a_nan_in_an_input_is_not_blamed_on_a_write():
    from npvae import Sigmoid
    def build(dtype, rng, h):
        s, x = Sigmoid(), rng.standard_normal((3, 4))
        x[0, 0] = np.nan
        return [op_problem(s, lambda: s.forward(x), lambda R: {"x": s.backward(R)}, {"x": x}, rng)]
    rows = run({"nan": ("numpy", build)})
    assert not any(r.passed for r in rows)
    assert not any("wrote into" in r.tensor for r in rows), [r.tensor for r in rows]


def test_the_direction_row_sees_a_gradient_with_two_entries_swapped():
    # entries swapped (a transposed square dW): their sum is right, so a fixed all-ones direction is
    # blind to it; a random one is not
    c = np.array([0.3, -1.1, 2.0, 0.6])
    T = np.array([0.1, 0.2, 0.3, 0.4])
    prob = Problem({"w": T}, lambda: float(c @ T), lambda: {"w": c[[1, 0, 2, 3]].copy()})
    rows = {r.tensor: r for r in check_problem(prob, "w", "numpy", 1e-5, 1e-6, np.random.default_rng(0))}
    assert not rows["w"].passed and not rows["<direction>"].passed


# -- a second read of the checks of a loss's own parameters -----------------------------------------
def test_a_loss_whose_forward_writes_into_its_input_is_named_from_its_first_forward_on():
    """The first forward runs when the problem is made; one that clamps ``x`` in place there
    (idempotently) was no longer seen to write into it."""
    class ClampInPlace(_HalfSquare):
        def forward(self, x):
            x[x < 0] = 0.0                          # the slip: the caller's array changed
            return super().forward(x)
    rows = run({"clamp": ("numpy", _square_loss_case(ClampInPlace, gs=(1.0,)))})
    assert [r.tensor for r in rows] == ["<contract: forward or backward wrote into x>"]


def test_a_loss_whose_forward_raises_is_its_own_row_not_the_whole_cases():
    class Broken(_HalfSquare):
        def forward(self, x):
            raise ValueError("shapes (3,4) and (5,) not aligned")

    def case(dtype, rng, h):
        good, x, bad, y = _HalfSquare(), rng.standard_normal((3, 4)), Broken(), rng.standard_normal((3, 4))
        return [loss_problem(good, lambda: good.forward(x), "x", x),
                loss_problem(bad, lambda: bad.forward(y), "y", y, g=-1.7, tag="[broken]")]
    rows = run({"two": ("numpy", case)})
    assert [r.tensor for r in rows] == ["x", "<direction>", "<error: ValueError: shapes (3,4) and (5,) not "
                                                            "aligned>[broken][grad=-1.7]"]


def test_parameters_held_by_an_object_that_is_no_module_are_refused_not_left_unchecked():
    class LearnedMean:                              # forgot to subclass npvae.Module
        def __init__(self):
            self.mu = npvae.Parameter(np.zeros(4))

        def forward(self, x):
            return _HalfSquare.forward(self, x - self.mu.data)

    with pytest.raises(TypeError, match=r"LearnedMean holds Parameters \(mu\) but is no npvae.Module"):
        loss_problem(LearnedMean(), lambda: 0.0, "x", np.zeros((3, 4)))


def test_a_parameter_replaced_in_backward_is_named_as_such():
    """It was reported as a zero_grad that left the gradient non-zero."""
    class Replacing(_LazyMean):
        def backward(self, grad=1.0):
            d = super().backward(grad)
            self.mu = npvae.Parameter(self.mu.data.copy())
            return d
    rows = run({"replace": ("numpy", _square_loss_case(Replacing, gs=(1.0,)))})
    assert rows[0].tensor.startswith("<contract: forward or backward replaced the Parameter mu"), format_table(rows)


def test_a_first_forward_that_raises_once_is_that_problems_row_not_a_parameter_left_unchecked():
    """A slip in the branch that makes a loss's first Parameter raises on the first call only: the
    error is the problem's row (a second parameter made after it went unchecked)."""
    class FirstCallRaises(_LazyMean):
        def forward(self, x):
            first = not hasattr(self, "mu")
            value = super().forward(x)
            if first:
                raise AttributeError("'FirstCallRaises' object has no attribute 'mu_init'")
            return value
    rows = run({"lazy": ("numpy", _square_loss_case(lambda: FirstCallRaises(factor=3.0), gs=(1.0,)))})
    assert [r.tensor for r in rows] == ["<error: AttributeError: 'FirstCallRaises' object has no attribute "
                                        "'mu_init'>"]


def test_a_write_into_a_shared_input_is_blamed_on_the_loss_that_made_it_only():
    class Clamping(npvae.KL):
        def forward(self, h):
            np.clip(h[:, 4:], -1.0, None, out=h[:, 4:])    # clamps logvar in place
            return super().forward(h)

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((3, 4)), rng.uniform(-2.0, 1.5, (3, 4))], axis=1)
    given = x.copy()

    def case(order):
        def build(dtype, rng, h):
            stock, mine = npvae.KL(), Clamping()
            problems = [loss_problem(stock, lambda: stock.forward(x), "h", x),
                        loss_problem(mine, lambda: mine.forward(x), "h", x, tag="[mine]")]
            return problems[::order]
        return build
    for order in (1, -1):                           # the writer checked after the stock KL, or before it
        rows = run({"two": ("numpy", case(order))})
        assert np.array_equal(x, given)             # the stock KL was checked at the input given
        assert sorted(r.tensor for r in rows if not r.passed) == ["<contract: forward or backward wrote into h>[mine]"]
        assert sorted(r.tensor for r in rows if r.passed) == ["<direction>", "h"], format_table(rows)


def test_layers_or_lists_of_parameters_held_by_an_object_that_is_no_module_are_refused():
    class Helper:
        def __init__(self):
            self.shift = npvae.Parameter(np.zeros(4))
            self.me = self                          # a cycle: looked into once

    class Projected:                                # a loss that forgot to subclass npvae.Module
        def __init__(self):
            self.proj, self.scales, self.helper = npvae.Dense(4, 4), [npvae.Parameter(np.ones(4))], Helper()
            self.np, self.cls, self.data = np, Helper, np.ones(3)      # not looked into

    with pytest.raises(TypeError, match=r"Projected holds Parameters \(proj, scales, helper\) but is no npvae.Module"):
        loss_problem(Projected(), lambda: 0.0, "x", np.zeros((3, 4)))
