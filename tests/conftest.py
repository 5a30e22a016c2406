"""What every test starts from, whatever ran before it in the same process."""
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def numpy_error_state_kept():
    """NumPy's error state as the test found it, after it too. A Ctrl-C stand-in raised on the
    line of a ``with np.errstate(...)`` as the block ends (tests/test_fast_trainer_interrupts.py)
    leaves the block's state on, and NumPy's warnings off for every later test."""
    before = np.geterr()
    yield
    np.seterr(**before)
