"""A block that must not wait: a test fails, rather than hangs, if the code under test waits
(for a writer to a pipe, say)."""
import contextlib
import signal

import pytest


@contextlib.contextmanager
def fail_after(seconds, what):
    """Fail the test with ``what`` if the block takes longer than ``seconds`` (SIGALRM: Unix,
    main thread)."""
    old = signal.signal(signal.SIGALRM, lambda *args: pytest.fail(what))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
