"""Ctrl-C, SIGTERM and SIGHUP sent to examples/train_mnist.py at odd moments, as a user (or a scheduler) would.

Every case ends with a clean message, the documented status (130, 143 or 129), no
traceback, and no partial or temporary file; where a training step was done, a
checkpoint that --resume continues.

The signal handling is the command line's (npvae.cli), the same for both back ends: runs whose
subject is when or how the signal comes use the reference back end (no Numba to import, no
kernels to load); those stopped inside a step or the NLL, and SIGHUP with --debug, keep the fast path.
"""
import http.server
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from cli_util import (ENV, FIGURED, REFERENCE, ROOT, SMALL, TRAIN, assert_no_traceback, run, start, strict_json_lines,
                      wait_for)

from npvae.checkpoint import load_checkpoint


def stop(proc, signals_to_send, gap=0.0):
    for i, signum in enumerate(signals_to_send):
        if i:
            time.sleep(gap)
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return err


def hidden_files(folder):
    return [f for f in os.listdir(folder) if f.startswith(".")]


def test_ctrl_c_during_the_nll_then_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = start([TRAIN, *SMALL, "--epochs", "1", "--nll-k", "50000", "--out", str(out)])
    seen = []
    try:
        assert wait_for(proc, "importance-weighted NLL", seen), "".join(seen)
        time.sleep(0.3)
        err = stop(proc, [signal.SIGINT])
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(seen) + err
    assert err.startswith("stopped: interrupted by SIGINT") and "the training is complete and saved" in err
    assert_no_traceback(err)
    assert hidden_files(out) == [] and load_checkpoint(out / "checkpoint.npz").epoch == 1
    assert not any(r.get("summary") for r in strict_json_lines(out / "metrics.jsonl"))
    # the command it printed, a cheaper NLL, on the reference (a checkpoint moves between back ends)
    finish = run([TRAIN, "--resume", str(out), "--nll-k", "1", *REFERENCE])
    assert finish.returncode == 0, finish.stderr
    assert strict_json_lines(out / "metrics.jsonl")[-1]["summary"]


def test_sigterm_while_drawing_the_figures(tmp_path):
    out = tmp_path / "run"
    proc = start([TRAIN, *FIGURED, *REFERENCE, "--epochs", "2", "--out", str(out)])   # drawing: either back end
    seen = []
    try:
        assert wait_for(proc, "drawing the figures", seen), "".join(seen)
        err = stop(proc, [signal.SIGTERM])
    finally:
        proc.kill()
    assert proc.returncode == 143, "".join(seen) + err
    assert "stopped: interrupted by SIGTERM" in err and "--resume" in err.splitlines()[-1]
    assert_no_traceback(err)
    assert hidden_files(out) == []
    assert load_checkpoint(out / "checkpoint.npz").epoch == 2


def test_repeated_signals_while_the_run_stops(tmp_path):
    """SIGINT, then at once SIGTERM and another SIGINT: they land while the step ends and the (20 MB)
    checkpoint is written; neither cuts the write short or turns into a traceback."""
    out = tmp_path / "run"
    proc = start([TRAIN, *SMALL, "--hidden-dim", "1200", "--batch-size", "16", "--epochs", "40",
                  "--out", str(out)])
    seen = []
    try:
        assert wait_for(proc, "epoch 1/40", seen), "".join(seen)
        time.sleep(0.1)                           # into epoch 2: the stop writes a mid-epoch checkpoint
        err = stop(proc, [signal.SIGINT, signal.SIGTERM, signal.SIGINT], gap=0.0)
    finally:
        proc.kill()
    # Which of the two the process takes first is the kernel's choice when they land together on a
    # busy machine (the thread a signal is delivered to may wait for a core): usually SIGINT.
    assert proc.returncode in (130, 143), "".join(seen) + err
    first = "SIGINT" if proc.returncode == 130 else "SIGTERM"
    assert f"interrupted by {first} at epoch" in err and "received again; already stopping" in err, err
    assert_no_traceback(err)
    assert hidden_files(out) == []
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.epoch >= 1 and err.rstrip().endswith(f"--resume {out / 'checkpoint.npz'} --no-figures")


needs_sighup = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
# Sets SIGHUP's disposition, then becomes the script (dispositions SIG_DFL and SIG_IGN survive exec).
LAUNCH_WITH_SIGHUP = ("import os, signal, sys; signal.signal(signal.SIGHUP, getattr(signal, sys.argv[1])); "
                      "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def popen_with_sighup(args, disposition, stderr=subprocess.PIPE):
    """Start a script with SIGHUP as a terminal leaves it (``"SIG_DFL"``) or as nohup does (``"SIG_IGN"``),
    whatever the test runner's own is."""
    return subprocess.Popen([sys.executable, "-c", LAUNCH_WITH_SIGHUP, disposition, *args], stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=ENV, cwd=ROOT)


def read_until(fd, text, timeout=120):
    """Read a pseudo-terminal's output until ``text`` appears; what was read."""
    seen, end = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 65536).decode("utf-8", "replace")
    return seen


@needs_sighup
def test_sighup_stops_training_with_a_checkpoint_that_resumes(tmp_path):
    """The terminal closed: the run stops as on Ctrl-C (step, checkpoint), with status 129."""
    out = tmp_path / "run"
    proc = popen_with_sighup([TRAIN, *SMALL, *REFERENCE, "--epochs", "40", "--out", str(out)], "SIG_DFL")
    seen = []
    try:
        assert wait_for(proc, "epoch 1/40", seen), "".join(seen)
        err = stop(proc, [signal.SIGHUP])
    finally:
        proc.kill()
    assert proc.returncode == 129, "".join(seen) + err
    assert "interrupted by SIGHUP" in err and "--resume" in err.splitlines()[-1]
    assert_no_traceback(err)
    assert hidden_files(out) == []
    epoch = load_checkpoint(out / "checkpoint.npz").epoch
    assert 1 <= epoch < 40
    resumed = run([TRAIN, "--resume", str(out), "--epochs", str(epoch + 1), "--no-progress", "--no-figures",
                   *REFERENCE])
    assert resumed.returncode == 0, resumed.stderr


@needs_sighup
def test_sighup_is_left_ignored_under_nohup(tmp_path):
    """Started as ``nohup`` starts a program (SIGHUP ignored), closing the terminal changes nothing."""
    out = tmp_path / "run"
    proc = popen_with_sighup([TRAIN, *SMALL, *REFERENCE, "--epochs", "3", "--out", str(out)], "SIG_IGN")
    seen = []
    try:
        assert wait_for(proc, "epoch 1/3", seen), "".join(seen)
        err = stop(proc, [signal.SIGHUP])
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(seen) + err
    assert "SIGHUP" not in err
    assert load_checkpoint(out / "checkpoint.npz").epoch == 3


@needs_sighup
def test_a_terminal_that_goes_away_mid_run_does_not_stop_it(tmp_path):
    """stderr is a terminal that closes after epoch 1 (every write then fails with EIO) and no SIGHUP
    comes (nohup, disown): the run still trains, draws its figures and writes its summary."""
    out = tmp_path / "run"
    controller, terminal = pytest.importorskip("pty").openpty()     # (not on Windows)
    proc = popen_with_sighup([TRAIN, *FIGURED, *REFERENCE, "--epochs", "3", "--out", str(out)], "SIG_IGN",
                             stderr=terminal)
    os.close(terminal)
    try:
        seen = read_until(controller, "epoch 1/3  train")
        os.close(controller)                     # the terminal is gone
        proc.wait(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, seen
    assert load_checkpoint(out / "checkpoint.npz").epoch == 3
    assert (out / "samples.png").exists() and strict_json_lines(out / "metrics.jsonl")[-1]["summary"]


@needs_sighup
def test_sighup_after_the_terminal_closed_even_with_debug(tmp_path):
    """The terminal closes, then SIGHUP comes: 129 and a checkpoint, even with --debug's traceback
    to print to a terminal that is no longer there."""
    out = tmp_path / "run"
    controller, terminal = pytest.importorskip("pty").openpty()     # (not on Windows)
    proc = popen_with_sighup([TRAIN, *SMALL, "--epochs", "40", "--debug", "--out", str(out)], "SIG_DFL",
                             stderr=terminal)
    os.close(terminal)
    try:
        seen = read_until(controller, "epoch 1/40  train")
        os.close(controller)
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 129, seen
    assert 1 <= load_checkpoint(out / "checkpoint.npz").epoch < 40
    assert hidden_files(out) == []


# What the interpreter prints when a Ctrl-C lands before the script has set its handlers (its
# first lines: ``import signal``, then the handlers): no script can change that, so such a try
# is made again, later. (While it sets up sys.stdin/stdout/stderr, CPython stops with "Fatal
# Python error: init_sys_streams" and status 1; seen on a loaded machine.)
BEFORE_THE_SCRIPT = ("line 0, in <module>", "init_import_site", "init_sys_streams", "    import signal\n")


def test_ctrl_c_while_python_starts(tmp_path):
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8):      # a loaded machine starts Python slower
        proc = start([TRAIN, *SMALL, "--out", str(tmp_path / "run")], cwd=tmp_path)
        time.sleep(delay)
        err = stop(proc, [signal.SIGINT])
        if not any(words in err for words in BEFORE_THE_SCRIPT):
            break
    else:
        pytest.fail(f"every Ctrl-C came before the script started: {err}")
    assert proc.returncode in (130, -signal.SIGINT), err     # -2: before Python set up its handlers
    assert_no_traceback(err)
    assert os.listdir(tmp_path) == []


# -- downloads ---------------------------------------------------------------------------
class Trickle(http.server.BaseHTTPRequestHandler):
    """Promises 1 MB, sends 1 kB every 20 ms: a download that is still going when the signal comes."""

    def do_GET(self):
        self.server.started.set()
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:       # the client went away: that is the point
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickle():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    httpd.daemon_threads = True
    httpd.started = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def start_with_mirror(tmp_path, url, code):
    """Run ``code`` in a new Python whose MNIST mirror is ``url`` (a real user cannot point it elsewhere)."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys
        import npvae.data.download
        npvae.data.download.MIRRORS["mnist"] = ({url!r},)
        {code}
    """))
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("NPVAE_DATA_DIR")
    return start([str(driver)], cwd=tmp_path, env=env)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_download_from_the_command_line(tmp_path, trickle, signum):
    httpd, url = trickle
    code = ("import runpy; sys.argv = [{0!r}, '--dataset', 'mnist-test-split', '--out', 'run']; "
            "runpy.run_path({0!r}, run_name='__main__')").format(TRAIN)
    proc = start_with_mirror(tmp_path, url, code)
    try:
        assert httpd.started.wait(60), proc.stderr.read()
        time.sleep(0.2)
        err = stop(proc, [signum])
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert f"stopped: interrupted by {signal.Signals(signum).name}" in err
    assert_no_traceback(err)
    assert not (tmp_path / "cache" / "npvae").exists()       # no .part file, and no empty cache folder
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_during_a_download_in_a_program_of_ones_own(tmp_path, trickle, name):
    """Without npvae's CLI (the signal at its default action): the partial file is removed, and the
    process still ends by the signal."""
    if not hasattr(signal, name):
        pytest.skip(f"no {name} on this platform")
    signum = getattr(signal, name)
    httpd, url = trickle
    proc = start_with_mirror(tmp_path, url, f"import signal; signal.signal(signal.{name}, signal.SIG_DFL); "
                                           f"from npvae.data import load_split; load_split('mnist')")
    try:
        assert httpd.started.wait(60), proc.stderr.read()
        time.sleep(0.2)
        err = stop(proc, [signum])
    finally:
        proc.kill()
    assert proc.returncode == -signum, err
    assert not (tmp_path / "cache" / "npvae").exists()
