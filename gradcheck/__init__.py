"""Finite-difference gradient checks of every npvae op, on both kernel back ends.

Run ``python -m gradcheck`` (``--help`` for options), or from Python::

    from gradcheck import CASES, run, format_table
    rows = run(CASES)                      # float64, numpy and numba
    print(format_table(rows))
    assert all(r.passed for r in rows)

See :mod:`gradcheck.core` for the error metric and :mod:`gradcheck.cases` for
what each case checks.
"""
from .cases import BAD_CASES, CASES, WrongSampler, WrongSigmoid
from .core import (BACKENDS, DEFAULTS, Problem, Row, check_problem, defaults, format_table, rel_error, run,
                   self_test, summary)

__all__ = ["BACKENDS", "BAD_CASES", "CASES", "DEFAULTS", "Problem", "Row", "WrongSampler", "WrongSigmoid",
           "check_problem", "defaults", "format_table", "rel_error", "run", "self_test", "summary"]
