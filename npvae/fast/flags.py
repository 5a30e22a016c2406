"""Numba compile options, defined once for every kernel.

fastmath lets LLVM vectorise reductions and fuse multiply-adds (``reassoc``,
``contract``, ``arcp``, ``nsz``, ``afn``) but never assumes away NaN or inf
(no ``nnan``/``ninf``): a diverging run must still be seen as diverging.
"""
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
# Without fused multiply-adds, for a kernel whose every element must round the same way
# wherever it sits in the array: LLVM 14 (Numba 0.59) fused the scalar tail of a loop but not
# its vector body, so an element's last bit depended on the array's length.
FASTMATH_NO_FMA = FASTMATH - {"contract"}
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
