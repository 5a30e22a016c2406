"""Finite-difference gradient checks of every npvae op, the whole model, and the fast path;
the optimizers' update rules against their closed forms.

Run ``python -m gradcheck`` (``--help`` for options), or from Python::

    from gradcheck import CASES, run, format_table
    rows = run(CASES)                      # float64, the reference and the fast path
    print(format_table(rows))
    assert all(r.passed for r in rows)

``python -m gradcheck --self-test`` plants, one at a time, the slips a learner makes
(:mod:`gradcheck.planted`) and shows that each is caught. See :mod:`gradcheck.core`
for the error metric and :mod:`gradcheck.cases` for what each case checks. A layer of your
own is checked with :func:`op_problem`, a loss of your own with :func:`loss_problem` (their
docstrings show how).
"""
from .cases import CASES, loss_problem, op_problem
from .core import (BACKENDS, DEFAULTS, ContractBroken, Problem, Row, check_problem, defaults, format_table,
                   rel_error, run, self_test, summary)
from .planted import BUGS

__all__ = ["BACKENDS", "BUGS", "CASES", "DEFAULTS", "ContractBroken", "Problem", "Row", "check_problem",
           "defaults", "format_table", "loss_problem", "op_problem", "rel_error", "run", "self_test", "summary"]
