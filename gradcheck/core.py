r"""The checking machinery: central differences against hand-written backward passes.

A *problem* is one op set up with fixed inputs. It exposes the arrays to check
(inputs and ``Parameter.data``, perturbed in place), a scalar ``loss()`` that
runs the forward pass only, and ``grads()`` that runs forward and backward and
returns copies of the analytic gradients. For an op with output(s) :math:`y`
the scalar is :math:`L = \sum R \odot y` with :math:`R` a fixed random
"upstream gradient"; for a loss it is the loss itself (times ``g`` when
``backward(grad=g)`` is checked).

Per checked tensor :math:`T` (analytic gradient :math:`a`, numerical :math:`n`):

.. math::

    n_k = \frac{L(T + h e_k) - L(T - h e_k)}{2h}, \qquad
    \text{abs} = \max_k |a_k - n_k|, \qquad
    \text{rel} = \frac{\max_k |a_k - n_k|}{\max(\max_k |a_k|, \max_k |n_k|, 10^{-12})}.

The relative error is taken per tensor (llm.c style) so elements whose
gradient is zero do not blow it up. ``h`` is the step actually taken (the
perturbed value is read back, so float32 rounding of ``T + h`` is accounted
for). The directional check perturbs every checked tensor at once along a
random unit direction :math:`V` and compares :math:`\langle a, V\rangle` with
:math:`(L(T + hV) - L(T - hV)) / 2h`; its rel is
:math:`|a_V - n_V| / \max(|a_V|, |n_V|, 10^{-12})`.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: default (step h, tolerance) per dtype; float32 is a smoke check only
DEFAULTS = {np.dtype(np.float64): (1e-5, 1e-6), np.dtype(np.float32): (1e-2, 3e-2)}
FLOOR = 1e-12
BACKENDS = ("numpy", "numba")


@dataclass
class Problem:
    """One op with fixed inputs, ready to check.

    Attributes
    ----------
    tensors : dict of str -> ndarray
        The live arrays to check (inputs and parameters' ``.data``), perturbed in place.
    loss : callable () -> float
        :math:`L` at the tensors' current values; forward pass only.
    grads : callable () -> dict of str -> ndarray
        Analytic :math:`\\partial L / \\partial T` for every name in ``tensors`` (copies).
    tag : str
        Appended to the tensor names in the table, e.g. ``"[beta=0.5]"``.
    """
    tensors: dict
    loss: Callable[[], float]
    grads: Callable[[], dict]
    tag: str = ""


@dataclass
class Row:
    """One line of the table."""
    op: str
    backend: str
    tensor: str
    shape: tuple
    abs_err: float
    rel_err: float
    tol: float

    @property
    def passed(self):
        return bool(self.rel_err < self.tol)  # False for NaN


def defaults(dtype, h=None, tol=None):
    """``(dtype, h, tol)`` with the dtype's defaults filled in."""
    dtype = np.dtype(dtype)
    if dtype not in DEFAULTS:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    dh, dtol = DEFAULTS[dtype]
    return dtype, (dh if h is None else float(h)), (dtol if tol is None else float(tol))


def rel_error(a, n):
    """``max|a - n| / max(max|a|, max|n|, 1e-12)`` (see the module docstring)."""
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    scale = max(np.max(np.abs(a)), np.max(np.abs(n)), FLOOR)
    return float(np.max(np.abs(a - n)) / scale)


def numerical_grad(problem, name, h):
    """Central differences of ``problem.loss`` w.r.t. every element of ``tensors[name]``."""
    T = problem.tensors[name]
    num = np.empty(T.shape, np.float64)
    for idx in np.ndindex(*T.shape):
        orig = T[idx]
        T[idx] = orig + h
        up = float(T[idx])              # the step actually taken (float32 rounds it)
        lp = problem.loss()
        T[idx] = orig - h
        down = float(T[idx])
        lm = problem.loss()
        T[idx] = orig                   # exact restore
        num[idx] = (lp - lm) / (up - down)
    return num


def directional(problem, analytic, h, rng):
    """``(a_V, n_V)``: the analytic and numerical derivative along a random unit direction."""
    names = list(problem.tensors)
    V = {n: rng.standard_normal(problem.tensors[n].shape) for n in names}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in V.values()))
    orig = {n: problem.tensors[n].copy() for n in names}
    try:
        for n in names:
            problem.tensors[n][...] = orig[n] + h * V[n] / norm
        up = {n: problem.tensors[n].astype(np.float64) for n in names}
        lp = problem.loss()
        for n in names:
            problem.tensors[n][...] = orig[n] - h * V[n] / norm
        lm = problem.loss()
        # the displacement actually taken, per element (exact in float64, rounded in float32)
        disp = {n: up[n] - problem.tensors[n].astype(np.float64) for n in names}
    finally:
        for n in names:
            problem.tensors[n][...] = orig[n]
    a = sum(float(np.sum(np.asarray(analytic[n], np.float64) * disp[n])) for n in names) / (2 * h)
    return a, (lp - lm) / (2 * h)


def check_problem(problem, op, backend, h, tol, rng):
    """Rows for one problem: one per tensor, then one for the directional check."""
    analytic = problem.grads()          # before any perturbation: forward caches are ours
    rows = []
    for name, T in problem.tensors.items():
        a = np.asarray(analytic[name], np.float64)
        if a.shape != T.shape:
            raise AssertionError(f"{op}: gradient of {name} has shape {a.shape}, tensor {T.shape}")
        n = numerical_grad(problem, name, h)
        rows.append(Row(op, backend, name + problem.tag, T.shape,
                        float(np.max(np.abs(a - n))), rel_error(a, n), tol))
    a_v, n_v = directional(problem, analytic, h, rng)
    total = sum(T.size for T in problem.tensors.values())
    rows.append(Row(op, backend, "<direction>" + problem.tag, (total,), abs(a_v - n_v),
                    abs(a_v - n_v) / max(abs(a_v), abs(n_v), FLOOR), tol))
    return rows


def run(cases, ops=None, backends=BACKENDS, dtype=np.float64, h=None, tol=None, seed=0):
    """Check ``cases`` (``{name: build}``, see :mod:`gradcheck.cases`); return the rows.

    Each case is built with ``np.random.default_rng(seed)`` for every back end,
    so both back ends see the same numbers and the same seed gives the same table.
    """
    dtype, h, tol = defaults(dtype, h, tol)
    ops = list(cases) if ops is None else list(ops)
    unknown = [o for o in ops if o not in cases]
    if unknown:
        raise KeyError(f"unknown op(s) {unknown}; known: {sorted(cases)}")
    rows = []
    for op in ops:
        for backend in backends:
            rng = np.random.default_rng(seed)
            for problem in cases[op](dtype=dtype, backend=backend, rng=rng, h=h):
                rows.extend(check_problem(problem, op, backend, h, tol, rng))
    return rows


def format_table(rows, dtype=np.float64, h=None, tol=None, expect_fail=False):
    """The table as text: a header stating the metric, one line per row, a summary line."""
    dtype, h, tol = defaults(dtype, h, tol)
    lines = [f"gradcheck: {dtype} central differences, h = {h:g}, pass if rel < {tol:g}",
             "  abs = max|a - n|; rel = max|a - n| / max(max|a|, max|n|, 1e-12) per tensor "
             "(a analytic, n numerical); <direction>: all tensors along one random unit vector"]
    if dtype == np.float32:
        lines.append("  NOTE: float32 is a smoke check only (round-off limits it); "
                     "the real check is float64")
    head = f"{'op':<18} {'backend':<7} {'tensor':<34} {'shape':<10} {'max abs err':>11} {'max rel err':>11}  status"
    lines += [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r.shape)) or "()"
        status = "PASS" if r.passed else ("FAIL (expected)" if expect_fail else "FAIL")
        lines.append(f"{r.op:<18} {r.backend:<7} {r.tensor:<34} {shape:<10} "
                     f"{r.abs_err:>11.2e} {r.rel_err:>11.2e}  {status}")
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows):
    """``"N rows: P passed, F failed; worst rel err ... (op/backend/tensor)"``."""
    if not rows:
        return "0 rows checked"
    failed = [r for r in rows if not r.passed]
    worst = max(rows, key=lambda r: (np.nan_to_num(r.rel_err, nan=np.inf)))
    return (f"{len(rows)} rows: {len(rows) - len(failed)} passed, {len(failed)} failed; "
            f"worst rel err {worst.rel_err:.2e} ({worst.op} / {worst.backend} / {worst.tensor})")


def self_test(bad_cases, backends=BACKENDS, dtype=np.float64, h=None, tol=None, seed=0):
    """Run the deliberately wrong cases; ``(ok, rows, caught)``.

    ``caught`` maps ``(op, backend)`` to whether at least one row FAILed; ``ok``
    is True only if every wrong backward was caught on every back end.
    """
    rows = run(bad_cases, backends=backends, dtype=dtype, h=h, tol=tol, seed=seed)
    caught = {(op, b): any(not r.passed for r in rows if r.op == op and r.backend == b)
              for op in bad_cases for b in backends}
    return all(caught.values()), rows, caught
