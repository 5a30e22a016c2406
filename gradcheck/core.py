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
:math:`|a_V - n_V| / \max(|a_V|, |n_V|, \|a\| / \sqrt{n}, 10^{-12})`, with :math:`\|a\|` the
norm of the whole analytic gradient and :math:`n` its number of elements: :math:`\|a\|/\sqrt n`
is the size of :math:`a_V` for a typical random direction, and keeps a direction that happens
to be nearly orthogonal to the gradient (:math:`a_V \approx 0`) from failing a correct one on
round-off alone.

Why ``h = 1e-5`` and a tolerance of ``1e-6`` in float64: the central difference's error is
the truncation, :math:`h^2 L^{(3)} / 6`, plus the round-off of the two losses, about
:math:`\epsilon |L| / h` (:math:`\epsilon \approx 2.2 \times 10^{-16}`); their sum is smallest near
:math:`h = \epsilon^{1/3} \approx 6 \times 10^{-6}`, where both are around :math:`10^{-11}`
relative (times the sizes of :math:`L^{(3)}` and :math:`L`). A right backward gives 1e-11 to 1e-7
here (over seeds 0-22 the worst row reached 8.3e-8); a wrong one, 1e-4 to 2 (2 is the most a
row can be off: a gradient of the wrong sign), so 1e-6 leaves room on both sides. A much larger step
(``--step 1e-3``) fails right code on truncation alone, a much smaller one on round-off; a
tolerance from :data:`LARGEST_TOL` (0.1) up is refused, as it would pass a factor slipped.
float32 (:math:`\epsilon \approx 1.2 \times 10^{-7}`) leaves no such room: its check is a
smoke check. What is checked is each backward against its own forward: a slip in a forward
that its backward does not see (a constant dropped from a loss) is for the tests of values in
``tests/`` to catch.

An optimizer's update has no derivative to take: its cases compare each step with a
closed form instead (``Problem.exact``), computed in float64, and pass only within
:data:`EXACT_TOL` (round-off), far tighter than finite differences allow.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: default (step h, tolerance) per dtype; float32 is a smoke check only
DEFAULTS = {np.dtype(np.float64): (1e-5, 1e-6), np.dtype(np.float32): (1e-2, 3e-2)}
#: tolerance of the closed-form (optimizer) rows per dtype: round-off only. float64 steps
#: agree to ~3e-14; float32's are read off as differences of parameters near 1 (~2e-5)
EXACT_TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-3}
FLOOR = 1e-12
#: Tolerances from here up are refused: a tolerance T passes a gradient up to 1 / (1 - T) times too
#: large (at 0.1, one 11% too large; at 0.5, one twice).
LARGEST_TOL = 0.1
#: "numpy": the reference's ops, models and optimizers; "numba": the fast path's whole-model
#: gradients and fused optimizers
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
    exact : dict of str -> (ndarray, ndarray), optional
        Instead of finite differences: ``{name: (computed, expected)}`` pairs to compare
        (an optimizer's steps against their closed form).
    """
    tensors: dict
    loss: Callable[[], float]
    grads: Callable[[], dict]
    tag: str = ""
    exact: dict = None


class ContractBroken(AssertionError):
    """A module broke the protocol a check relies on (e.g. its backward wrote into its ``grad_out``,
    or its forward replaced a parameter's array)."""


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
    dtype: str = None       # run's settings (its h: the finite-difference step), which the table states
    h: float = None

    @property
    def passed(self):
        return bool(self.rel_err < self.tol)  # False for NaN


def defaults(dtype, h=None, tol=None):
    """``(dtype, h, tol)`` with the dtype's defaults filled in."""
    dtype = np.dtype(dtype)
    if dtype not in DEFAULTS:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    dh, dtol = DEFAULTS[dtype]
    h, tol = (dh if h is None else float(h)), (dtol if tol is None else float(tol))
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"h must be a finite step above 0 (e.g. {dh:g}), got {h!r}")
    if not 0 < tol < LARGEST_TOL:
        raise ValueError(f"tol must be above 0 and below {LARGEST_TOL} (a tol passes a gradient up to "
                         f"1/(1 - tol) times too large; e.g. {dtol:g}), got {tol!r}")
    return dtype, h, tol


def exact_tolerance(dtype, tol):
    """The closed-form rows' tolerance: :data:`EXACT_TOL`, or ``tol`` if that is tighter."""
    return min(tol, EXACT_TOL[np.dtype(dtype)])


def rel_error(a, n):
    """``max|a - n| / max(max|a|, max|n|, 1e-12)`` (see the module docstring)."""
    a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(n), initial=0.0), FLOOR)
    return float(np.max(np.abs(a - n), initial=0.0) / scale)       # 0 for empty arrays: nothing differs


def numerical_grad(problem, name, h):
    """Central differences of ``problem.loss`` w.r.t. every element of ``tensors[name]``."""
    T = problem.tensors[name]
    num = np.empty(T.shape, np.float64)
    for idx in np.ndindex(*T.shape):
        orig = T[idx]
        try:
            T[idx] = orig + h
            up = float(T[idx])          # the step actually taken (float32 rounds it)
            lp = problem.loss()
            T[idx] = orig - h
            down = float(T[idx])
            lm = problem.loss()
        finally:
            T[idx] = orig               # exact restore, also when the loss raised
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


def check_problem(problem, op, backend, h, tol, rng, exact_tol=None):
    """Rows for one problem: one per tensor, then one for the directional check; for a
    closed-form problem, one per compared pair, passing within ``exact_tol`` (default ``tol``).

    A backward pass that breaks the module protocol (:class:`ContractBroken`, e.g. by
    writing into its incoming gradient) gives a single failing row that says so; so does
    an error raised by the op's code (a ``sys.exit`` too), and a tensor that cannot be
    nudged in place (not a float array, or sharing memory with another).
    """
    if problem.exact is not None:
        return [Row(op, backend, name + problem.tag, np.shape(a),
                    float(np.max(np.abs(np.subtract(a, e)), initial=0.0)), rel_error(a, e),
                    tol if exact_tol is None else exact_tol)
                for name, (a, e) in problem.exact.items()]
    unfit = _unfit_tensors(problem.tensors)
    if unfit:
        return [_error_row(op, backend, unfit, tol, problem.tag)]
    try:
        return _difference_rows(problem, op, backend, h, tol, rng)
    except ContractBroken as e:
        return [_error_row(op, backend, str(e), tol, problem.tag, kind="contract")]
    except (Exception, SystemExit) as e:    # the op's own code raised: this problem's row, the others go on
        return [_error_row(op, backend, _describe(e), tol, problem.tag)]


def _unfit_tensors(tensors):
    """Why the tensors cannot be checked by nudging their elements in place, or None."""
    names = list(tensors)
    for name in names:
        T = tensors[name]
        if not isinstance(T, np.ndarray):
            return f"{name} is a {type(T).__name__}; the tensors checked are arrays, nudged in place"
        if T.dtype.kind != "f":
            return (f"{name} is {T.dtype}: only floats can be nudged by h; hold an integer input fixed (leave "
                    f"it out of the tensors checked)")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.shares_memory(tensors[a], tensors[b]):
                return (f"{a} and {b} share memory (tied weights, or one array under two names): nudging one "
                        f"moves the other, so neither's gradient can be taken alone")
    return None


def _describe(e):
    """``"ValueError: the message"`` (the class alone when the message is empty)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _difference_rows(problem, op, backend, h, tol, rng):
    """The rows of a problem checked against central differences (see :func:`check_problem`)."""
    analytic = problem.grads()          # before any perturbation: forward caches are ours
    rows = []
    for name, T in problem.tensors.items():
        if analytic.get(name) is None:
            return [_error_row(op, backend, f"no gradient for {name} (did backward return it?)", tol, problem.tag)]
        a = np.asarray(analytic[name], np.float64)
        if a.shape != T.shape:
            return [_error_row(op, backend, f"gradient of {name} has shape {a.shape}, expected {T.shape}", tol,
                               problem.tag)]
        n = numerical_grad(problem, name, h)
        rows.append(Row(op, backend, name + problem.tag, T.shape,
                        float(np.max(np.abs(a - n), initial=0.0)), rel_error(a, n), tol))
    a_v, n_v = directional(problem, analytic, h, rng)
    total = sum(T.size for T in problem.tensors.values())
    typical = np.sqrt(sum(float(np.sum(np.asarray(analytic[n], np.float64) ** 2)) for n in problem.tensors)
                      / max(total, 1))     # |a_V| for a typical random unit direction
    rows.append(Row(op, backend, "<direction>" + problem.tag, (total,), abs(a_v - n_v),
                    abs(a_v - n_v) / max(abs(a_v), abs(n_v), typical, FLOOR), tol))
    return rows


def _error_row(op, backend, message, tol, tag="", kind="error"):
    """A failing row that says why no gradient could be compared (``kind``: "error", or "contract"
    for a module that broke the protocol)."""
    return Row(op, backend, f"<{kind}: {message}>{tag}", (), float("inf"), float("inf"), tol)


def run(cases, ops=None, backends=BACKENDS, dtype=np.float64, h=None, tol=None, seed=0):
    """Check ``cases`` (``{name: (backend, build)}``, see :mod:`gradcheck.cases`); return the rows.

    ``ops``: the case names to run (a name or a list; default all). Only the cases
    whose back end is in ``backends`` run. Each is built with
    ``np.random.default_rng(seed)``, so the same seed gives the same table. ``dtype``: the
    precision of the check (float64; float32 is a smoke check); ``h`` and ``tol``: the step
    and the tolerance, by default :data:`DEFAULTS`'s for ``dtype``. A case
    that raises (``sys.exit`` included; not a Ctrl-C) gives one failing row naming the error.

    Raises
    ------
    ValueError
        A case that is not a ``(backend, build)`` pair with a back end of
        :data:`BACKENDS`, an unknown back end in ``backends``, a step ``h`` that is not above
        0, or a ``tol`` not above 0 and below :data:`LARGEST_TOL`.
    KeyError
        A name in ``ops`` that is not a case.
    """
    dtype, h, tol = defaults(dtype, h, tol)
    backends = [backends] if isinstance(backends, str) else list(backends)
    for name, case in cases.items():
        if not (isinstance(case, (tuple, list)) and len(case) == 2 and callable(case[1])):
            raise ValueError(f"case {name!r} must be a (backend, build) pair, got {case!r}")
        if case[0] not in BACKENDS:
            raise ValueError(f"case {name!r}: unknown backend {case[0]!r}; known: {list(BACKENDS)}")
    if any(b not in BACKENDS for b in backends):
        raise ValueError(f"backends must be among {list(BACKENDS)}, got {backends}")
    ops = list(cases) if ops is None else [ops] if isinstance(ops, str) else list(ops)
    unknown = [o for o in ops if o not in cases]
    if unknown:
        raise KeyError(f"unknown op(s) {unknown}; known: {sorted(cases)}")
    rows = []
    for op in ops:
        backend, build = cases[op]
        if backend not in backends:
            continue
        rng = np.random.default_rng(seed)
        try:
            for problem in build(dtype=dtype, rng=rng, h=h):
                rows.extend(check_problem(problem, op, backend, h, tol, rng, exact_tolerance(dtype, tol)))
        except (Exception, SystemExit) as e:    # the case's own code (a layer under test) is anything
            rows.append(_error_row(op, backend, _describe(e), tol))
    for r in rows:
        r.dtype, r.h = dtype.name, h
    return rows


_LONGEST_IN_TABLE = 60     # a tensor entry longer than this (an error's text) goes under the table


def _exact_row(r):
    """A row compared with a closed form or with the reference, not with finite differences."""
    return r.tensor.startswith("step ") or " = VAE." in r.tensor


def format_table(rows, dtype=None, h=None, tol=None, expect_fail=False):
    """The table as text: a header stating the metric, one line per row, a summary line.

    Column widths follow the longest entry, so long case and tensor names keep the
    columns aligned. The header states ``dtype``, ``h`` and ``tol``: by default those
    :func:`run` made the rows with (kept by each row, so a slice or a filter of them too;
    float64's defaults for rows of another origin); a ``dtype`` given brings its own
    defaults for the other two. ``expect_fail``: failing rows read "FAIL (expected)" (a
    planted bug's).
    """
    made = {(r.dtype, r.h) for r in rows if r.dtype is not None}
    if dtype is None and len(made) == 1:
        (dtype, made_h), = made
        h = made_h if h is None else h
        if tol is None:             # the finite-difference rows' own (the exact rows have theirs)
            tol = next((r.tol for r in rows if not _exact_row(r) and r.dtype is not None), None)
    dtype, h, tol = defaults(np.float64 if dtype is None else dtype, h, tol)
    # rows judged by another tolerance than the header's: several runs', or another dtype or tol given
    mixed = len(made) > 1 or any(r.dtype is not None and (r.dtype != dtype.name or not _exact_row(r)
                                                          and (r.tol != tol or r.h != h)) for r in rows)
    lines = [f"gradcheck: {dtype} central differences, h = {h:g}, pass if rel < {tol:g}",
             "  abs = max|a - n|; rel = max|a - n| / max(max|a|, max|n|, 1e-12) per tensor "
             "(a analytic, n numerical); <direction>: all tensors along one random unit vector"]
    if mixed:
        runs = "rows of several runs" if len(made) > 1 else "rows of a run"
        lines.append(f"  NOTE: {runs} ({', '.join(sorted({d for d, _ in made}))}): each row passed or "
                     f"failed by its own run's tolerance (and h), not the one above")
    if any(_exact_row(r) for r in rows):
        lines.append(f"  optimizer steps (step t) against their closed form, and the fast path against "
                     f"VAE.loss/VAE.backward (= VAE.*): pass if rel < {exact_tolerance(dtype, tol):g}")
    if any("[grad=" in r.tensor or "[beta=" in r.tensor for r in rows):
        lines.append("  [grad=g]: the loss's incoming gradient is g, not 1; [beta=b]: the KL weight")
    lines.append("  why this h and tolerance: python -m pydoc gradcheck.core; the cases: python -m gradcheck --list")
    if dtype == np.float32:
        lines.append("  NOTE: float32 is a smoke check only (round-off limits it); "
                     "the real check is float64")
    fail = "FAIL (expected)" if expect_fail else "FAIL"
    table = [("op", "backend", "tensor", "shape", "max abs err", "max rel err", "status")]
    notes = []          # long error messages, under the table: a column that wide helps nobody
    for r in rows:
        tensor = r.tensor
        if tensor.startswith("<") and len(tensor) > _LONGEST_IN_TABLE:
            notes.append(f"  [{len(notes) + 1}] {r.op} / {r.backend}: {tensor}")
            tensor = f"{tensor.split(':')[0]}: [{len(notes)}] below>"
        table.append((r.op, r.backend, tensor, "x".join(map(str, r.shape)) or "()",
                      f"{r.abs_err:.2e}", f"{r.rel_err:.2e}", "PASS" if r.passed else fail))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    right = (False, False, False, False, True, True, False)   # numbers right-aligned

    def fmt(line):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)).rstrip()

    lines.append(fmt(table[0]))
    lines.append("-" * len(fmt(table[0])))
    lines.extend(fmt(line) for line in table[1:])
    lines.extend(notes)
    if any(" = VAE." in r.tensor and not r.passed for r in rows):
        lines.append("  a failing '= VAE.*' row compares the fast path with the reference: if the fast path's "
                     "own rows pass, the reference may be the one at fault (a forward slip that its backward "
                     "does not see: tests/ check the values)")
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows):
    """``"N rows: P passed, F failed (in the failing cases); worst rel err ... (op/backend/tensor)"``."""
    if not rows:
        return "0 rows checked"
    failed = [r for r in rows if not r.passed]
    worst = max(rows, key=lambda r: (np.nan_to_num(r.rel_err, nan=np.inf)))
    where = f" (in {', '.join(dict.fromkeys(r.op for r in failed))})" if failed else ""
    return (f"{len(rows)} row{'s' if len(rows) > 1 else ''}: {len(rows) - len(failed)} passed, {len(failed)} "
            f"failed{where}; worst rel err {worst.rel_err:.2e} ({worst.op} / {worst.backend} / {_short(worst.tensor)})")


def _short(tensor):
    """A row's tensor entry for one line: an error's long text cut (the table gives it whole)."""
    return tensor if len(tensor) <= _LONGEST_IN_TABLE else tensor[:_LONGEST_IN_TABLE - 4] + " ...>"


def self_test(bugs, cases, backends=("numpy",), dtype=np.float64, h=None, tol=None, seed=0, control=None):
    """Plant each bug in turn and run every case: ``(ok, caught)``.

    ``bugs`` maps a name to ``(description, plant)``, ``plant()`` a context manager that
    plants the bug while it is entered (see :mod:`gradcheck.planted`). ``caught[name]`` is the list of failing rows
    with the bug in place (empty: not caught); ``ok`` is True only if every bug is caught.

    A row that fails with no bug planted would "catch" every bug and prove nothing: a bug is
    caught only by rows that pass in the ``control``, the same cases run with no bug planted
    (run here unless given; ``run``'s rows). ``backends``, ``dtype``, ``h``, ``tol`` and
    ``seed`` are :func:`run`'s.
    """
    if control is None:
        control = run(cases, backends=backends, dtype=dtype, h=h, tol=tol, seed=seed)
    failing_clean = {(r.op, r.backend, r.tensor) for r in control if not r.passed}
    caught = {}
    for name, (_, plant) in bugs.items():
        with plant():
            rows = run(cases, backends=backends, dtype=dtype, h=h, tol=tol, seed=seed)
        caught[name] = [r for r in rows if not r.passed and (r.op, r.backend, r.tensor) not in failing_clean]
    return all(caught.values()), caught
