"""Run a Python script with ``select.poll`` answering as macOS's does (for the tests).

    python tests/macos_poll_sim.py SCRIPT [ARGS...]

macOS builds ``poll()`` on kqueue (xnu, bsd/kern/sys_generic.c: ``poll_nocancel`` and
``poll_callback``): a descriptor registered for no event gets no filter, so nothing is ever
reported for it; a pipe whose other end has gone is an ``EV_EOF``, reported as ``POLLHUP`` (and
no ``POLLOUT``), only to a caller that asked for ``POLLIN`` or ``POLLOUT``. Linux reports
``POLLERR`` (writer) or ``POLLHUP`` (reader) for it, asked or not.

Here Linux's answer is translated: ``POLLERR`` or ``POLLHUP`` becomes ``POLLHUP`` (with
``POLLIN`` if asked) when ``POLLIN`` or ``POLLOUT`` was asked, else nothing; any other event is
reported only if asked. Only pipes are meant: sockets, ttys, ``POLLNVAL`` and a blocking
``poll()`` that macOS would keep waiting in are not simulated, nor is anything else of macOS.
"""
import os
import runpy
import select
import sys

_linux_poll = select.poll


class MacPoll:
    def __init__(self):
        self._poll = _linux_poll()
        self._asked = {}

    def register(self, fd, eventmask=select.POLLIN | select.POLLPRI | select.POLLOUT):
        fd = fd if isinstance(fd, int) else fd.fileno()
        self._asked[fd] = eventmask
        self._poll.register(fd, eventmask)

    modify = register

    def unregister(self, fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        self._asked.pop(fd, None)
        self._poll.unregister(fd)

    def poll(self, timeout=None):
        answer = []
        for fd, got in self._poll.poll(timeout):
            asked = self._asked.get(fd, 0)
            if got & (select.POLLERR | select.POLLHUP):         # the other end has gone: EV_EOF
                got = select.POLLHUP | (asked & select.POLLIN) if asked & (select.POLLIN | select.POLLOUT) else 0
            else:
                got &= asked
            if got:
                answer.append((fd, got))
        return answer


if __name__ == "__main__":
    select.poll = MacPoll
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
