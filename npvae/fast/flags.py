"""Numba compile options, defined once for every kernel.

fastmath lets LLVM vectorise reductions and fuse multiply-adds (``reassoc``,
``contract``, ``arcp``, ``nsz``, ``afn``) but never assumes away NaN or inf
(no ``nnan``/``ninf``): a diverging run must still be seen as diverging.
"""
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
