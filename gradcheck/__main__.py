"""``python -m gradcheck``: print the gradient-check table; exit 1 if any row fails (141 if
stdout's reader leaves early, as in ``python -m gradcheck | head``)."""
import os
import sys
import time

import numpy as np

from npvae.cli import ArgumentParser, real_number, whole_number

from .cases import CASES, DESCRIPTIONS
from .core import BACKENDS, LARGEST_TOL, format_table, run, self_test
from .planted import BUGS

#: steps from here on leave the cases no room: ReLU's inputs lie in [-1, 1] and 20 steps
#: away from its kink at 0
LARGEST_STEP = 0.05

#: the largest magnitude of a value the cases perturb (the dead units' biases): it sets the smallest step
LARGEST_VALUE = 100.0

#: the status when stdout's reader has gone: 128 + SIGPIPE, what a shell reports for ``cat``,
#: ``grep`` or ``git`` stopped the same way
EXIT_CLOSED_PIPE = 141


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m gradcheck", debug=False,
                       description="Central-difference gradient checks of every npvae op and the whole\n"
                                   "model (reference and fast path); the optimizers' update rules (the\n"
                                   "reference's and the fast path's fused ones) are checked against their\n"
                                   "closed forms, step by step.")
    p.add_argument("--op", nargs="+", action="extend", metavar="NAME", choices=sorted(CASES),
                   help="cases to check, also as --op A --op B (default: all; see --list)")
    p.add_argument("--backend", choices=["numpy", "numba", "both"], default="both",
                   help="numpy: the reference's cases; numba: the fast path's (default: both)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="float32 is a smoke check only (default step 1e-2, tol 3e-2)")
    p.add_argument("--step", type=real_number(0, exclusive=True), default=None, metavar="H",
                   help="finite-difference step (default 1e-5 for float64, 1e-2 for float32)")
    p.add_argument("--tol", type=real_number(0, exclusive=True), default=None, metavar="T",
                   help="pass if max rel err < T (default 1e-6 for float64, 3e-2 for float32); the "
                        "exact rows (the optimizers' closed forms, the fast path against VAE.loss/backward) "
                        "keep their own, tighter one (1e-11, 1e-3) unless T is tighter")
    p.add_argument("--seed", type=whole_number(0), default=0, help="seed of every case's inputs and weights "
                                                                   "(default: 0)")
    p.add_argument("--self-test", action="store_true",
                   help="plant each slip a learner makes, one at a time, into the reference and show "
                        "that the check catches it (exit 0 only if every one is caught)")
    p.add_argument("--list", action="store_true", help="list the cases (and the planted bugs) and exit")
    args = p.parse_args(argv)
    args.op = list(dict.fromkeys(args.op)) if args.op else args.op     # each case once, in the order given
    if args.self_test and args.op:
        p.error("--op does not apply to --self-test, which plants each bug and runs every reference case")
    if args.list and (args.op or args.self_test):
        p.error(f"--list lists every case and planted bug and exits: leave out "
                f"{'--op' if args.op else '--self-test'}")
    usual = "1e-5" if args.dtype == "float64" else "1e-2"
    if args.step is not None and args.step >= LARGEST_STEP:
        p.error(f"argument --step: must be below {LARGEST_STEP} (ReLU's inputs lie in [-1, 1], 20 steps away "
                f"from its kink; e.g. {usual}), got {args.step}")
    # below it, x + h rounds back to x for the largest value a case perturbs (a dead unit's bias,
    # -100): no difference left
    smallest = 16 * np.finfo(args.dtype).eps * LARGEST_VALUE
    if args.step is not None and args.step < smallest:
        p.error(f"argument --step: must be at least {smallest:.1e} in {args.dtype} (smaller steps vanish in "
                f"round-off; e.g. {usual}), got {args.step}")
    if args.tol is not None and args.tol >= LARGEST_TOL:
        p.error(f"argument --tol: must be below {LARGEST_TOL} (T passes a gradient up to 1/(1 - T) times too "
                f"large: at {LARGEST_TOL:g} one {1 / (1 - LARGEST_TOL) - 1:.0%} too large, at 0.5 one twice; e.g. "
                f"{'1e-6' if args.dtype == 'float64' else '3e-2'}), got {args.tol:g}")
    chosen = BACKENDS if args.backend == "both" else (args.backend,)
    skipped = [op for op in args.op or () if CASES[op][0] not in chosen]
    if skipped:
        p.error(f"--op {' '.join(skipped)} check{'s' if len(skipped) == 1 else ''} the "
                f"{CASES[skipped[0]][0]} path, which --backend {args.backend} leaves out")
    if args.self_test and args.backend == "numba":
        p.error("--backend numba does not apply to --self-test, which plants each bug in the reference")
    if args.self_test and args.dtype == "float32":
        p.error("--self-test proves the float64 check; float32's is a smoke check, whose tolerance lets "
                "small slips pass (a clamp in the BCE's backward, say)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, (backend, _) in CASES.items():
            if args.backend in ("both", backend):
                print(f"{name:<23} {backend:<6} {DESCRIPTIONS.get(name, '')}".rstrip())
        print("\nplanted bugs (--self-test):")
        for name, (what, _) in BUGS.items():
            print(f"  {name:<34} {what}")
        return 0
    dtype = np.dtype(args.dtype)
    t0 = time.perf_counter()
    if args.self_test:
        control = run(CASES, None, ("numpy",), dtype, args.step, args.tol, args.seed)     # no bug planted
        failing = [r for r in control if not r.passed]
        if failing:
            worst = max(failing, key=lambda r: r.rel_err)
            print(f"note: with no bug planted, {len(failing)} of {len(control)} rows fail at these settings "
                  f"(worst: {worst.op} {worst.tensor}, rel {worst.rel_err:.2g}); a bug counts as caught only by "
                  f"rows that pass clean")
        ok, caught = self_test(BUGS, CASES, ("numpy",), dtype, args.step, args.tol, args.seed, control=control)
        width = max(map(len, BUGS))
        for name, failed in caught.items():
            what = BUGS[name][0]
            if failed:
                worst = max(failed, key=lambda r: r.rel_err)
                where = sorted({r.op for r in failed})
                print(f"caught      {name:<{width}}  {len(failed)} failing row{'s' if len(failed) > 1 else ''} in {', '.join(where)} "
                      f"(worst: {worst.op} {worst.tensor}, rel {worst.rel_err:.2g})\n            {'':<{width}}  {what}")
            else:
                print(f"NOT CAUGHT  {name:<{width}}  {what}")
        n = sum(bool(f) for f in caught.values())
        print(f"self-test {'passed' if ok else 'FAILED'}: {n} of {len(caught)} planted bugs caught "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0 if ok else 1
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    rows = run(CASES, args.op, backends, dtype, args.step, args.tol, args.seed)
    print(format_table(rows, dtype, args.step, args.tol))
    ok = all(r.passed for r in rows)
    print(f"{'ALL PASSED' if ok else 'FAILURES'} in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


def run_cli(argv=None):
    """:func:`main`'s exit status, without a traceback when the output cannot be written: if
    stdout's reader leaves early (``| head``), stop quietly with :data:`EXIT_CLOSED_PIPE`; a
    full disk is one line; with stdout closed the checks run and the status tells. Ctrl-C
    stops with one line and status 130."""
    if sys.stdout is None:              # started with stdout closed (``>&-``)
        sys.stdout = open(os.devnull, "w")
    try:
        try:
            return main(argv)
        finally:
            sys.stdout.flush()          # the last lines sit in the buffer: a closed pipe shows here
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_CLOSED_PIPE
    except OSError as e:                # e.g. ``> /dev/full``
        _stdout_to_devnull()
        print(f"error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped: interrupted by SIGINT", file=sys.stderr)
        return 130


def _stdout_to_devnull():
    """Python flushes stdout again at exit, which would fail and print "Exception ignored":
    point it at /dev/null (Python's signal docs, "Note on SIGPIPE")."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(run_cli())
