"""The fine print of docs/reliability.md: file modes and atomic writes, who holds a run folder,
the figures on the progress lines, exit statuses around signals, memory limits. Each tests
public behaviour: the functions' results, the files they write, the process's exit status."""
import errno
import io
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import types

import numpy as np
import pytest

try:
    import resource
except ImportError:                 # Windows
    resource = None

import npvae
from npvae import cli, signals
from npvae.atomic import atomic_write
from npvae.errors import InputError, RunFolderInUseError
from npvae.progress import Bar, EpochProgress
from npvae.runfolder import LOCK_NAME, RunFolder, holder
from npvae.train import TrainingInterrupted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


def python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120,
                          **kwargs)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def record(**kw):
    return dict(dict(train_loss=1.0, train_recon=0.5, train_kl=0.5, beta=1.0, test_loss=None), **kw)


# -- progress -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """The lines below are written for a terminal wider than they are, whatever runs the tests."""
    monkeypatch.setenv("COLUMNS", "150")


@pytest.fixture
def clock(monkeypatch):
    """progress's clock, moved by hand: ``clock[0] += seconds``."""
    now = [1000.0]
    monkeypatch.setattr("npvae.progress.time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_a_bar_shows_its_rate_time_left_and_last_count(clock):
    tty = FakeTTY()
    bar = Bar("NLL (k=5)", 10_000, "images", stream=tty)
    clock[0] += 2.0
    bar.update(1_000)                     # 500 images a second: the 9,000 left take 18 s
    assert tty.getvalue().endswith("NLL (k=5) [##..................]  10%  1,000/10,000 images  "
                                   "500 images/s  0:18 left")
    clock[0] += 0.05
    bar.update(1_100)                     # within the redraw interval: not drawn yet
    bar.close()                           # (an interrupted NLL): the count shown is the last one
    assert tty.getvalue().rstrip("\n").split("\r")[-1].startswith("NLL (k=5) [##..................]  11%  "
                                                                  "1,100/10,000 images")


def test_epochs_after_the_first_are_timed_whole():
    """The first epoch's slow first step is left out of its own timing only."""
    tty = FakeTTY()
    show = EpochProgress(True, epochs=4, steps=10, stream=tty)
    show.interval = 0
    show.start(1, 0)
    show.update(1, 1, 1.0, 128, 30.0)                            # 30 s: compiling
    for step in range(2, 11):
        show.update(1, step, 1.0, 128 * step, 30.0 + (step - 1))  # then 1 s a step
    show.summary(record(epoch=1, train_seconds=39.0, eval_seconds=1.0))          # counts as 11 s
    show.start(2, 0)
    for step in range(1, 11):
        show.update(2, step, 1.0, 64 * step, 1.0 * step)          # 64 samples a second
    assert "epoch 2/4  batch 5/10 [##########..........]  loss 1.000  64 samples/s  0:05 left" in tty.getvalue()
    show.summary(record(epoch=2, train_seconds=20.0, eval_seconds=1.0))          # 21 s
    # two epochs left at the mean pace so far, (11 + 21) / 2 = 16 s
    assert tty.getvalue().rstrip().endswith("20.0s + eval 1.0s  (0:32 left to train)")


def test_a_shorter_line_covers_the_longer_one_it_replaces():
    tty = FakeTTY()
    show = EpochProgress(True, epochs=1, steps=10, stream=tty)
    show.interval = 0
    show.update(1, 1, 1.0, 128, 1.0)
    show.update(1, 2, 123456.789, 256, 2.0)
    show.update(1, 3, 1.0, 384, 3.0)                 # "loss 1.000": 7 characters shorter
    first, second = tty.getvalue().split("\r")[-2:]
    assert len(second) == len(first) and second.rstrip().endswith("left")


def test_the_live_line_fits_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")              # a wrapped line cannot be redrawn in place
    tty = FakeTTY()
    show = EpochProgress(True, epochs=1, steps=10, stream=tty)
    show.interval = 0
    for step in range(1, 4):
        show.update(1, step, 1.0, 128 * step, 1.0 * step)
    assert all(len(line) <= 39 for line in tty.getvalue().split("\r")[1:])


# -- the run folder -------------------------------------------------------------------------------
def test_the_holder_is_named_with_its_command_and_a_host_only_if_it_is_another(tmp_path):
    folder = tmp_path / "run"
    with RunFolder(folder, "--out"):
        who = holder(folder)
        assert who.startswith(f"process {os.getpid()} started ")
        assert who.endswith(": " + shlex.join([sys.executable, *sys.argv]))
        assert f" on {socket.gethostname()}" not in who
    # a run on another machine (a shared file system) holds it
    folder.mkdir(exist_ok=True)
    code = ("import fcntl, json, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, json.dumps({'pid': 7, 'host': 'far-away'}).encode())\n"
            "print('locked', flush=True)\ntime.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(folder / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "locked\n"
        assert holder(folder) == "process 7 on far-away"
        with pytest.raises(RunFolderInUseError, match="is in use by process 7 on far-away"):
            RunFolder(folder, "--out").__enter__()
    finally:
        other.kill()
        other.wait()


def test_a_run_that_took_over_a_long_stale_lock_is_still_named(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 99999999, "command": "python train.py " + "x" * 5000}))
    with RunFolder(folder, "--out") as run:
        assert "process 99999999" in run.stale
        assert holder(folder).startswith(f"process {os.getpid()} ")      # not "another run"


# -- cli.run and signals --------------------------------------------------------------------------
def test_a_ctrl_c_while_an_error_is_reported_keeps_the_errors_status_and_message(capsys):
    class Slow(InputError):
        def __str__(self):
            signal.raise_signal(signal.SIGINT)      # lands while the message is being made
            return "bad --thing"

    def main(argv):
        raise Slow()
    assert cli.run(main, []) == 2
    err = capsys.readouterr().err
    assert err.endswith("error: bad --thing\n") and "SIGINT received again; already stopping" in err


def test_a_signal_just_as_main_ends_gives_the_signals_status():
    class Exit(SystemExit):
        @property
        def code(self):
            signal.raise_signal(signal.SIGTERM)     # arrives while the status is being read
            return 0

    def main(argv):
        raise Exit()
    assert cli.run(main, []) == 143


def test_a_program_that_exits_with_a_message_and_stderr_closed_exits_quietly(tmp_path):
    code = "import sys\nfrom npvae import cli\ncli.run(lambda argv: sys.exit('cannot go on'), [], then_exit=True)\n"
    proc = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} 2>&-; echo $?"],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.stdout == "1\n" and proc.stderr == "", proc.stderr


def test_a_child_of_a_program_started_with_stdin_closed_gets_dev_null(tmp_path):
    """The descriptors put in place of closed ones are passed on, as the closed ones would be."""
    code = ("import subprocess, sys\nfrom npvae import cli\n"
            "def main(argv):\n    print(subprocess.run(['readlink', '/proc/self/fd/0'], capture_output=True,"
            " text=True).stdout.strip())\n"
            "cli.run(main, [], then_exit=True)\n")
    proc = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} <&-"],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0 and proc.stdout == os.devnull + "\n", proc.stdout + proc.stderr


def test_a_program_that_exits_with_a_message_fails(capsys):
    def main(argv):
        sys.exit("cannot go on")
    assert cli.run(main, []) == 1
    assert capsys.readouterr().err == "cannot go on\n"            # as Python itself prints it


def test_a_signal_after_fit_stopped_on_one_is_only_acknowledged(capsys):
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    model = npvae.VAE(6, 4, 2, rng=0)
    with signals.raise_on_signals():
        with pytest.raises(TrainingInterrupted):
            npvae.fit(model, x, epochs=3, batch_size=16, rng=0, progress=False, backend="numpy",
                      callback=lambda rec, m: signal.raise_signal(signal.SIGINT))
        try:
            signal.raise_signal(signal.SIGTERM)     # pressed again while the program reports the stop
        except signals.Interrupted:
            pytest.fail("a second signal, after fit had stopped on the first, raised Interrupted")
    assert "SIGTERM received again" in capsys.readouterr().err


def test_a_signal_fit_stopped_on_outside_a_program_does_not_mute_the_next_programs_first_one():
    """fit stopped by Ctrl-C in a notebook or a script of one's own (no raise_on_signals around it):
    a program run afterwards in the same process still stops on its first signal."""
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    with pytest.raises(TrainingInterrupted):
        npvae.fit(npvae.VAE(6, 4, 2, rng=0), x, epochs=2, batch_size=16, rng=0, progress=False,
                  backend="numpy", callback=lambda rec, m: signal.raise_signal(signal.SIGINT))
    with pytest.raises(signals.Interrupted):
        with signals.raise_on_signals():
            signal.raise_signal(signal.SIGTERM)


def test_a_second_signal_during_the_cleanup_of_the_first_is_only_acknowledged(capsys):
    with signals.raise_on_signals():
        try:
            signal.raise_signal(signal.SIGINT)
        except signals.Interrupted:
            try:
                signal.raise_signal(signal.SIGINT)      # pressed again while the finally blocks run
            except signals.Interrupted:
                pytest.fail("a second signal cut the cleanup of the first short")
    assert "SIGINT received again; already stopping" in capsys.readouterr().err


def test_a_late_signal_while_python_shuts_down_does_not_change_the_status():
    code = ("import atexit, os, signal\nfrom npvae import cli\n"
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
            "cli.run(lambda argv: 0, [], then_exit=True)\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr


def test_after_cleanup_on_sigterm_sigterm_ends_the_process_as_before():
    code = ("import os, signal, time\nfrom npvae.signals import cleanup_on_sigterm\n"
            "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"      # whatever the test runner left
            "with cleanup_on_sigterm():\n    pass\n"
            "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\n")
    proc = python(code)
    assert proc.returncode == -signal.SIGTERM and proc.stderr == "", proc.stderr


# -- atomic writes --------------------------------------------------------------------------------
def test_an_error_at_fsync_is_reported_and_the_old_file_kept(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    target.write_text("old")

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fsync", failing)       # what NFS or a thin disk reports at fsync
    with pytest.raises(OSError) as info:
        with atomic_write(target, "w") as f:
            f.write("new")
    assert info.value.errno == errno.EIO and info.value.filename == str(target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["m.json"]


def test_a_new_file_gets_the_usual_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o644
    private = tmp_path / "private.npz"
    private.write_bytes(b"x")
    os.chmod(private, 0o600)
    with atomic_write(private) as f:
        f.write(b"y")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and private.read_bytes() == b"y"


def test_ctrl_c_during_an_atomic_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["x.json"]


def test_a_failed_rename_names_the_file_asked_for(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(OSError) as info:
        with atomic_write(target, "w") as f:
            f.write("x")
            os.mkdir(target)                        # something put a folder there meanwhile
    assert info.value.filename == str(target)
    assert os.listdir(tmp_path) == ["out.json"]


# -- memory ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/self/status") or resource is None, reason="Linux")
@pytest.mark.skipif(resource is not None and 0 <= resource.getrlimit(resource.RLIMIT_AS)[1] < 4 << 30,
                    reason="a hard limit below 4 GiB")
def test_ulimit_v_bounds_what_is_available():
    code = ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "from npvae import footprint\nprint(footprint.available_bytes())\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert 0 < int(proc.stdout) < 4 << 30           # the limit less what the process has mapped


@pytest.mark.skipif(not hasattr(os, "sysconf") or "SC_PHYS_PAGES" not in os.sysconf_names, reason="no sysconf")
def test_without_proc_the_memory_bound_is_all_of_the_machines_memory(monkeypatch):
    """Without /proc/meminfo (macOS), nor a cgroup or ulimit -v: sysconf's physical memory, all of
    it (not the free part, which macOS keeps small); no bound where sysconf does not know the name."""
    import builtins

    from cli_util import open_without_proc_and_sys
    from npvae import footprint
    monkeypatch.setattr(builtins, "open", open_without_proc_and_sys)
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if resource is None or resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:  # no ulimit -v
        assert footprint.available_bytes() == physical
    else:
        assert footprint.available_bytes() <= physical

    def unknown(name):
        raise ValueError("unrecognized configuration name")
    monkeypatch.setattr(os, "sysconf", unknown)
    assert footprint.available_bytes() is None


def with_files(files):
    """``open``, but under /proc and /sys only ``files`` (path -> text) exist."""
    from cli_util import REAL_OPEN

    def fake_open(file, *args, **kwargs):
        if isinstance(file, str) and file.startswith(("/proc/", "/sys/")):
            if file in files:
                return io.StringIO(files[file])
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", file)
        return REAL_OPEN(file, *args, **kwargs)
    return fake_open


@pytest.mark.skipif(os.name != "posix", reason="POSIX")
def test_what_is_available_is_the_least_of_meminfo_and_the_cgroups_room(monkeypatch):
    """/proc/meminfo counts kB of 1024 bytes; a container's room is its limit less what it uses
    already, and its limit "max" is no limit at all."""
    import builtins

    from npvae import footprint
    meminfo = {"/proc/meminfo": "MemTotal:  8000000 kB\nMemAvailable:  50000 kB\n"}
    monkeypatch.setattr(builtins, "open", with_files(meminfo))
    assert footprint.available_bytes() == 50000 * 1024
    cgroup = {"/sys/fs/cgroup/memory.max": "100000000\n", "/sys/fs/cgroup/memory.current": "60000000\n"}
    monkeypatch.setattr(builtins, "open", with_files(cgroup))
    assert footprint.available_bytes() == 40_000_000
    monkeypatch.setattr(builtins, "open", with_files({**meminfo, **cgroup}))
    assert footprint.available_bytes() == 40_000_000
    monkeypatch.setattr(builtins, "open", with_files({**meminfo, **cgroup, "/sys/fs/cgroup/memory.max": "max\n"}))
    assert footprint.available_bytes() == 50000 * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux: VmHWM")
def test_peak_memory_counts_memory_freed_since():
    code = ("import numpy as np\nfrom npvae import footprint\na = np.ones(100 * 2**20 // 8)\ndel a\n"
            "print(footprint.peak_rss_bytes())\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 100 * 2**20, proc.stdout


def test_a_file_written_over_one_of_mode_000_can_be_read_by_its_owner(tmp_path):
    """The old file's mode is kept, but a new checkpoint its owner could not read helps no one."""
    target = tmp_path / "c.npz"
    target.write_bytes(b"old")
    target.chmod(0o000)
    with atomic_write(target) as f:
        f.write(b"new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o400


class _InterruptedAtLoss(npvae.VAE):
    """The reference runs the model's own loss: a Ctrl-C pressed during the loss of step ``at`` (1-based)."""
    at = 1
    calls = 0

    def loss(self, x, beta=1.0, eps=None):
        self.calls += 1
        if self.calls == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().loss(x, beta, eps)


def test_a_signal_during_the_fast_paths_first_step_is_said_at_once_with_why_it_takes(monkeypatch, capsys):
    """A cold first step compiles for up to a minute: a silent Ctrl-C looks unheard. Later steps are
    short: the stop's own message follows at once, with no line before it."""
    from npvae.fast import Trainer
    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    said = "SIGINT received; stopping after the step under way (a process's first step compiles the fast path's"
    step = Trainer.step
    for at in (1, 2):
        calls = []

        def interrupted(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == at:
                signal.raise_signal(signal.SIGINT)
            return step(self, *args, **kwargs)
        monkeypatch.setattr(Trainer, "step", interrupted)
        with pytest.raises(TrainingInterrupted, match=f"at epoch 1, step {at} of 4"):
            npvae.fit(npvae.VAE(12, 8, 2, rng=0), x, epochs=1, batch_size=16, progress=False, backend="numba")
        assert (said in capsys.readouterr().err) == (at == 1)
    for at in (1, 2):                               # the reference compiles nothing: nothing to say first
        model = _InterruptedAtLoss(12, 8, 2, rng=0)
        model.at = at
        with pytest.raises(TrainingInterrupted, match=f"at epoch 1, step {at} of 4"):
            npvae.fit(model, x, epochs=1, batch_size=16, progress=False, backend="numpy")
        assert "SIGINT received" not in capsys.readouterr().err


def test_a_signal_after_the_first_step_is_not_said_to_wait_for_it(capsys):
    """Once the first step is done, a signal (here in the end-of-epoch callback of a one-step epoch)
    is not told it stops "after the step under way": that step is over."""
    x = np.random.default_rng(0).random((16, 12)).astype(np.float32)

    def interrupt(record, model):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted):
        npvae.fit(npvae.VAE(12, 8, 2, rng=0), x, epochs=2, batch_size=16, progress=False, backend="numba",
                  callback=interrupt)
    assert "stopping after the step under way" not in capsys.readouterr().err


def test_a_signal_during_the_first_step_of_a_resumed_fast_run_is_said_at_once(monkeypatch, capsys, tmp_path):
    """A resumed run in a new process compiles in its first step just as a fresh one does."""
    from npvae.fast import Trainer
    x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    path = tmp_path / "run.npz"
    npvae.fit(npvae.VAE(12, 8, 2, rng=0), x, epochs=1, batch_size=16, progress=False, backend="numba", checkpoint=path)
    step = Trainer.step

    def interrupted(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return step(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "step", interrupted)
    with pytest.raises(TrainingInterrupted, match="at epoch 2, step 1 of 4"):
        npvae.fit(npvae.VAE(12, 8, 2, rng=0), x, epochs=2, batch_size=16, progress=False, backend="numba",
                  checkpoint=path, resume=path)
    err = capsys.readouterr().err
    assert "SIGINT received; stopping after the step under way (a process's first step compiles" in err
    assert "the first," not in err                     # not this run's first step


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_lines_at_their_edges():
    """A time left below zero (a count past its total) is unknown; a bar past its total keeps its
    width; a huge negative loss is shown in four digits as a huge positive one is; a log gets a
    line at most every log_every seconds; the last epoch's line says no time left to train."""
    from npvae.progress import format_duration
    assert format_duration(-5) == "?"
    log = io.StringIO()
    Bar("NLL", 10, "images", log_every=0.0, stream=log).update(20)
    assert "NLL [" + "#" * 20 + "]" in log.getvalue() and log.getvalue().rstrip().endswith("? left"), log.getvalue()
    log = io.StringIO()
    bar = Bar("NLL", 100, "images", log_every=3600.0, stream=log)
    for done in range(1, 51):
        bar.update(done)
    assert log.getvalue() == ""
    log = io.StringIO()
    record = dict(epoch=1, train_loss=-2e300, train_recon=-2e300, train_kl=0.5, beta=1.0, test_loss=None,
                  train_seconds=2.0, eval_seconds=1.0)
    EpochProgress(True, epochs=1, steps=10, stream=log).summary(record)
    assert "train -2e+300 (recon -2e+300," in log.getvalue() and "left to train" not in log.getvalue()


@pytest.mark.parametrize("columns, bar", [("76", None), ("77", "[#####]")])     # room for 4 cells, and for 5
def test_a_bar_narrower_than_five_is_left_out_not_drawn(monkeypatch, columns, bar):
    monkeypatch.setenv("COLUMNS", columns)
    tty = _Terminal()
    EpochProgress(True, epochs=20, steps=469, stream=tty).update(10, 469, 108.2141, 60000, 11.3)
    drawn = tty.getvalue().split("\r")[-1]
    assert (bar in drawn if bar else "[" not in drawn) and drawn.endswith("0:00 left"), drawn
