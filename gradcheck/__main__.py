"""``python -m gradcheck``: print the gradient-check table; exit 1 if any row fails."""
import argparse
import sys
import time

import numpy as np

from .cases import BAD_CASES, CASES
from .core import BACKENDS, format_table, run, self_test


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m gradcheck",
                                description="Central-difference gradient checks of every npvae op.")
    p.add_argument("--op", nargs="+", metavar="NAME", choices=sorted(CASES),
                   help="ops to check (default: all; see --list)")
    p.add_argument("--backend", choices=["numpy", "numba", "both"], default="both")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="float32 is a smoke check only (default step 1e-2, tol 3e-2)")
    p.add_argument("--step", type=float, default=None, metavar="H",
                   help="finite-difference step (default 1e-5 for float64, 1e-2 for float32)")
    p.add_argument("--tol", type=float, default=None, metavar="T",
                   help="pass if max rel err < T (default 1e-6 for float64, 3e-2 for float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of every case's inputs and weights")
    p.add_argument("--self-test", action="store_true",
                   help="check that deliberately wrong backward passes are caught (FAIL)")
    p.add_argument("--list", action="store_true", help="list the op names and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, build in CASES.items():
            print(name)
        return 0
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    dtype = np.dtype(args.dtype)
    t0 = time.perf_counter()
    if args.self_test:
        ok, rows, caught = self_test(BAD_CASES, backends, dtype, args.step, args.tol, args.seed)
        print(format_table(rows, dtype, args.step, args.tol, expect_fail=True))
        for (op, backend), hit in caught.items():
            print(f"self-test: {op} on {backend}: {'caught (FAIL), good' if hit else 'NOT caught'}")
        print(f"self-test {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.1f} s")
        return 0 if ok else 1
    rows = run(CASES, args.op, backends, dtype, args.step, args.tol, args.seed)
    print(format_table(rows, dtype, args.step, args.tol))
    ok = all(r.passed for r in rows)
    print(f"{'ALL PASSED' if ok else 'FAILURES'} in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
