"""What the tests of overflowing models expect of NumPy's warnings, on each back end."""
import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def warned_on_the_reference_only(backend):
    """The reference is plain NumPy: an overflow warns as NumPy does, then npvae says what it
    means. The fast path's forward passes are as quiet as its kernels: its answer (a
    DivergenceError, a NaN it returns) comes alone, so there any warning fails the test."""
    with warnings.catch_warnings():
        if backend == "numba":
            warnings.simplefilter("error")
            yield
        else:
            warnings.simplefilter("ignore", RuntimeWarning)
            with np.errstate(all="ignore"):
                yield
