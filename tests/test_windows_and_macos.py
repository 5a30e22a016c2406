"""Windows and macOS behaviour, simulated on Linux: the programs run under tests/windows_sim.py
(no fcntl, resource or pwd; an msvcrt stand-in; no file removed while it is open) or
tests/macos_poll_sim.py (poll() as macOS answers it), or /proc and /sys are hidden (macOS).
Each case once failed there (examples/benchmark.py's are in test_examples.py)."""
import builtins
import errno
import os
import select
import shlex
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cli_util import (ENV, FIGURED, REFERENCE, ROOT, SMALL, TRAIN, assert_no_traceback, load_script,
                      open_without_proc_and_sys, run, start, wait_for)

import npvae
from npvae.atomic import atomic_write, sweep_temporary_files
from npvae.errors import InputError

import windows_sim

WINDOWS = os.path.join(ROOT, "tests", "windows_sim.py")
MACOS_POLL = os.path.join(ROOT, "tests", "macos_poll_sim.py")
LOCK = ".npvae.lock"

on_simulated_windows = pytest.mark.skipif(not windows_sim.available(),
                                          reason="the Windows simulation needs Linux (/proc/self/fd, fcntl)")


@on_simulated_windows
def test_on_windows_a_run_ends_with_status_0_and_takes_its_lock_file_away(tmp_path):
    """Windows removes no file that is open: the run folder's lock file used to be removed while
    held, and every run ended with "error: .npvae.lock: The process cannot access the file",
    status 1, the lock file left behind. The same command again is refused for its own reason."""
    out = tmp_path / "run"
    args = [WINDOWS, TRAIN, *FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out", str(out)]
    first = run(args)
    assert first.returncode == 0, first.stderr
    assert f"done: figures, metrics and checkpoint in {out}" in first.stdout
    assert LOCK not in os.listdir(out)
    again = run(args)
    assert again.returncode == 2, again.stderr
    assert again.stderr.splitlines()[-1] == (
        f"error: --out {out} already holds a run (checkpoint.npz): continue it with --resume {out}, "
        f"or choose another --out (remove that folder to start it over)")
    assert LOCK not in os.listdir(out)


@on_simulated_windows
def test_on_windows_a_run_that_diverges_at_once_says_so_and_leaves_nothing(tmp_path):
    """Its own status and message (not the lock file's), and no folder: a failed start leaves
    nothing behind."""
    out = tmp_path / "div"
    proc = run([WINDOWS, TRAIN, *SMALL, *REFERENCE, "--lr", "1e30", "--out", str(out)])
    assert proc.returncode == 1, proc.stderr
    assert "error: training diverged at epoch 1, step 2" in proc.stderr and LOCK not in proc.stderr, proc.stderr
    assert_no_traceback(proc.stderr)
    assert not out.exists()


@on_simulated_windows
def test_on_windows_ctrl_c_keeps_status_130_and_the_resume_command(tmp_path):
    """Ctrl-C during training: status 130 and the command that continues the run (it used to be
    status 1 and the lock file's error, the command not shown)."""
    out = tmp_path / "out"
    proc = start([WINDOWS, TRAIN, *SMALL, *REFERENCE, "--batch-size", "16", "--latent-dim", "3", "--epochs", "400",
                  "--out", str(out)])
    seen = []
    try:
        assert wait_for(proc, "epoch 1/400", seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(seen) + err
    assert "to continue, run:" in err and LOCK not in err, err
    command = shlex.split(err.strip().splitlines()[-1])
    assert [os.path.normpath(command[0]), *command[1:]] == [os.path.normpath(sys.executable), TRAIN, "--resume",
                                                           str(out / "checkpoint.npz"), "--no-figures"]
    assert "checkpoint.npz" in os.listdir(out) and LOCK not in os.listdir(out)


RUN_FOLDER_AND_FIT = """
    import os, sys
    import numpy as np
    import npvae
    from npvae.errors import RunFolderInUseError
    from npvae.runfolder import RunFolder

    folder = sys.argv[1]
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    with RunFolder(folder) as run:
        try:
            with RunFolder(folder):
                print("not refused")
        except RunFolderInUseError as e:
            print("refused:", e)
        ckpt = run.file("ckpt.npz")
        npvae.fit(npvae.VAE(784, 16, 2), images, epochs=1, checkpoint=ckpt, progress=False, backend="numpy")
    with RunFolder(folder) as run:                      # the next run, resuming the first
        print("stale:", run.stale)
        npvae.fit(npvae.VAE(784, 16, 2), images, epochs=2, checkpoint=ckpt, resume=ckpt, progress=False,
                  backend="numpy")
    print("left:", sorted(os.listdir(folder)))
"""


@on_simulated_windows
def test_on_windows_a_run_folder_with_a_checkpoint_in_it_is_left_unlocked(tmp_path):
    """RunFolder and fit as a user's script has them: a second holder refused while the first is
    in, the checkpoint written and resumed, and the next run finds no lock of a run "that ended
    without releasing it" (no error on leaving the block, no lock file left)."""
    folder = tmp_path / "run"
    proc = run([WINDOWS, "-c", textwrap.dedent(RUN_FOLDER_AND_FIT), str(folder)])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Windows' lock is mandatory: the holder's description cannot be read, even in its own process
    assert lines[0].startswith(f"refused: folder {folder} is in use by another run"), proc.stdout
    assert lines[1:] == ["stale: None", "left: ['ckpt.npz']"], proc.stdout


LOCK_OPENED_AS_IT_IS_RELEASED = """
    import os, sys
    from npvae.runfolder import RunFolder

    folder = sys.argv[1]
    with RunFolder(folder) as first:
        opened = os.open(first.file(".npvae.lock"), os.O_RDWR)   # the next run, just as the first ends
    print("left:", os.listdir(folder))                           # Windows would not remove it
    os.close(opened)
    with RunFolder(folder) as second:
        print("stale:", second.stale)
"""


@on_simulated_windows
def test_on_windows_a_lock_file_opened_as_its_run_ends_is_not_taken_for_a_killed_runs(tmp_path):
    """The file cannot be removed while the next run has it open; that run must not find the
    first one's description in it and say it "ended without releasing" its lock."""
    proc = run([WINDOWS, "-c", textwrap.dedent(LOCK_OPENED_AS_IT_IS_RELEASED), str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["left: ['.npvae.lock']", "stale: None"], proc.stdout


CHECKPOINT_HELD_OPEN = """
    import os, sys
    import numpy as np
    import npvae

    ckpt = sys.argv[1]
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    npvae.fit(npvae.VAE(784, 16, 2), images, epochs=1, checkpoint=ckpt, progress=False, backend="numpy")
    peek = np.load(ckpt)                    # a notebook's look at it, left open
    os.name = "nt"                          # what npvae's own code asks
    try:
        npvae.fit(npvae.VAE(784, 16, 2), images, epochs=2, checkpoint=ckpt, resume=ckpt, progress=False,
                  backend="numpy")
    except PermissionError as e:
        print(e)
"""


@on_simulated_windows
def test_on_windows_a_checkpoint_held_open_elsewhere_is_named_with_what_to_do(tmp_path):
    """Windows replaces no file that is open (an np.load kept in a notebook): the error names the
    file and says to close it, not a bare "Access is denied"."""
    ckpt = tmp_path / "c.npz"
    proc = run([WINDOWS, "-c", textwrap.dedent(CHECKPOINT_HELD_OPEN), str(ckpt)])
    assert proc.returncode == 0, proc.stderr
    assert str(ckpt) in proc.stdout and "holds open" in proc.stdout and "close it" in proc.stdout, proc.stdout


CACHE_DIR = """
    import ntpath, os, tempfile
    from npvae.data import cache_dir

    tempfile.gettempdir()                   # found now: with os.name "nt" it would look for C:\\Temp
    os.name = "nt"                          # what npvae's own code asks (os.path stays posixpath)
    os.path.expanduser = ntpath.expanduser  # Windows' "~": USERPROFILE (HOME is not looked at)
    print(cache_dir("mnist"))
    print(tempfile.gettempdir())
"""


@on_simulated_windows
def test_on_windows_without_home_the_data_cache_is_under_the_user_profile(tmp_path):
    """cmd.exe and PowerShell set no HOME: the cache used to go to the temporary folder, which
    Windows empties (docs/data.md: "on Windows ~ is %USERPROFILE%")."""
    profile, temp = tmp_path / "Users" / "ana", tmp_path / "Temp"
    profile.mkdir(parents=True)
    temp.mkdir()
    env = {k: v for k, v in ENV.items() if k not in ("HOME", "XDG_CACHE_HOME")}
    env.update(USERPROFILE=str(profile), TMPDIR=str(temp), TEMP=str(temp), TMP=str(temp))
    proc = run([WINDOWS, "-c", textwrap.dedent(CACHE_DIR)], env=env)
    assert proc.returncode == 0, proc.stderr
    cache, tempdir = proc.stdout.splitlines()
    assert tempdir == str(temp)
    assert cache == os.path.join(str(profile), ".cache", "npvae", "mnist")


@pytest.mark.skipif(not hasattr(select, "poll"), reason="no select.poll (Windows)")
def test_on_macos_a_reader_that_has_gone_gives_status_141_quietly(tmp_path):
    """``kl_curve.py | head -0`` with poll() answering as macOS does (a hang-up, and only to a
    caller asking about writing): the status of SIGPIPE and nothing on stderr, as on Linux (it
    used to end with "error: Broken pipe", status 1)."""
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, MACOS_POLL, os.path.join(ROOT, "examples", "kl_curve.py"),
                             "--out", str(tmp_path / "kl.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.close()                         # the reader is gone before the script prints
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 141 and err == "", err
    assert (tmp_path / "kl.png").exists()


@pytest.mark.skipif(not hasattr(os, "sysconf") or "SC_PHYS_PAGES" not in os.sysconf_names, reason="no sysconf")
def test_on_macos_a_model_far_too_big_is_still_refused_before_it_is_made(monkeypatch):
    """Without /proc and /sys (macOS) the machine's memory bounds the check: ``train_mnist.py
    --latent-dim 100000000`` is refused with the size (docs/reliability.md). It used to pass, and
    macOS would swap until it gave up."""
    script = load_script()
    settings = dict(batch_size=128, hidden_dim=400, latent_dim=100_000_000, backend="numba")
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", open_without_proc_and_sys)
        with pytest.raises(InputError, match=r"VAE trained on batches of 128 needs about \d+\.\d TB of memory, "
                                             r"but .* is available"):
            script.check_memory(settings, 10_000)


# -- Windows' file rules, asked of npvae's own os.name == "nt" branches in this process ---------------------

def refuse_like_windows(monkeypatch, busy_replaces=0):
    """os.replace and os.remove as Windows has them: a read-only file is neither replaced nor removed,
    and the first ``busy_replaces`` replaces fail as if a virus scanner had the new file open."""
    real_replace, real_remove = os.replace, os.remove
    busy = [busy_replaces]

    def read_only(path):
        return os.path.exists(path) and not os.stat(path).st_mode & stat.S_IWRITE

    def replace(src, dst):
        if read_only(dst) or busy[0] > 0:
            busy[0] -= 1
            raise PermissionError(errno.EACCES, "Access is denied", os.fsdecode(src), None, os.fsdecode(dst))
        real_replace(src, dst)

    def remove(path):
        if read_only(path):
            raise PermissionError(errno.EACCES, "Access is denied", os.fsdecode(path))
        real_remove(path)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "remove", remove)
    monkeypatch.setattr(os, "name", "nt")


def test_on_windows_a_read_only_file_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Windows replaces no read-only file, and the temporary file given its mode could not be removed:
    a .tmp was left that stopped every later run in the folder, under an error naming only it."""
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"old")
    target.chmod(0o444)
    with monkeypatch.context() as m:
        refuse_like_windows(m)
        with pytest.raises(PermissionError, match=r"read-only.*attrib -r") as raised:
            with atomic_write(target) as f:
                f.write(b"new")
    assert raised.value.filename == str(target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["checkpoint.npz"]


def test_on_windows_a_temporary_file_left_read_only_is_still_swept(tmp_path, monkeypatch):
    """What an older npvae left (a read-only .tmp beside a read-only checkpoint) must not stop the
    next run in the folder."""
    left = tmp_path / ".checkpoint.npz.abcd1234.tmp"
    left.write_bytes(b"x")
    left.chmod(0o444)
    with monkeypatch.context() as m:
        refuse_like_windows(m)
        assert sweep_temporary_files(tmp_path) == [left.name]
    assert os.listdir(tmp_path) == []


def test_on_windows_a_file_opened_for_a_moment_by_another_program_is_still_replaced(tmp_path, monkeypatch):
    """A virus scanner or a sync client opens a new file for a moment; one such moment used to stop a
    run at its checkpoint."""
    target = tmp_path / "metrics.jsonl"
    with monkeypatch.context() as m:
        refuse_like_windows(m, busy_replaces=3)
        with atomic_write(target, "w") as f:
            f.write("{}\n")
    assert target.read_text() == "{}\n" and os.listdir(tmp_path) == ["metrics.jsonl"]


def test_on_windows_fit_refuses_a_read_only_checkpoint_before_training(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    ckpt = tmp_path / "c.npz"
    npvae.fit(npvae.VAE(784, 16, 2), images, epochs=1, checkpoint=ckpt, progress=False, backend="numpy")
    ckpt.chmod(0o444)
    model = npvae.VAE(784, 16, 2)
    before = model.state_dict()
    with monkeypatch.context() as m:
        refuse_like_windows(m)
        with pytest.raises(InputError, match=r"checkpoint: cannot write .*c\.npz.*: the file is read-only"):
            npvae.fit(model, images, epochs=1, checkpoint=ckpt, progress=False, backend="numpy")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc")
def test_fit_tries_to_make_a_file_where_it_will_write_not_only_asks_for_permission(tmp_path):
    """os.access says every folder is writable on Windows (and to root, /proc): a file is made there
    first, so fit refuses before an epoch of training, not after it."""
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    model = npvae.VAE(784, 16, 2)
    before = model.state_dict()
    with pytest.raises(InputError, match=r"checkpoint: cannot write '/proc/npvae-c\.npz': no file can be made "
                                         r"in '/proc'"):
        npvae.fit(model, images, epochs=1, checkpoint="/proc/npvae-c.npz", progress=False, backend="numpy")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_metrics_and_checkpoint_names_that_differ_only_in_case_are_refused(tmp_path):
    """macOS and Windows take run.npz and RUN.npz as one file: the metrics replaced the checkpoint
    after the first epoch, and the next epoch's read of it failed with a UnicodeDecodeError."""
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    with pytest.raises(InputError, match=r"metrics_path and checkpoint are the same file \(.*RUN\.npz and "
                                         r".*run\.npz: names that differ only in case are one file"):
        npvae.fit(npvae.VAE(784, 16, 2), images, epochs=1, checkpoint=tmp_path / "run.npz",
                  metrics_path=tmp_path / "RUN.npz", progress=False, backend="numpy")
    assert os.listdir(tmp_path) == []


@on_simulated_windows
def test_on_windows_the_tests_that_need_pty_or_resource_are_collected(tmp_path):
    """Windows has neither module: three files failed to import, and pytest ran no test at all."""
    files = ["tests/test_cli_first_run.py", "tests/test_cli_signals.py", "tests/test_reliability_details.py"]
    code = ("import sys, pytest; "
            "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', *sys.argv[1:]]))")
    proc = run([WINDOWS, "-c", code, *files], cwd=ROOT)
    assert proc.returncode == 0 and " error" not in proc.stdout, proc.stdout + proc.stderr


def test_on_windows_a_figure_path_ending_in_a_slash_is_called_a_folder(monkeypatch, tmp_path):
    """Windows' separator is a backslash, and it takes "/" too: "figs/" was told to end in .png."""
    from npvae.cli import check_output_file
    monkeypatch.setattr(os, "sep", "\\")
    with pytest.raises(InputError, match=r"--out .*newfigs/ is a folder; name the \.png file to write, e\.g\. "
                                         r".*newfigs.figure\.png$"):
        check_output_file(str(tmp_path / "newfigs") + "/")


def test_on_windows_a_download_opened_for_a_moment_by_another_program_is_still_put_in_place(tmp_path, monkeypatch):
    """A virus scanner reads each new file: the download failed, reported as a cache that cannot be written."""
    import functools
    import http.server
    import threading
    import urllib.request  # noqa: F401  (now: imported under os.name "nt" it would keep Windows' file URLs)

    from npvae.data import download_file
    folder = os.path.join(ROOT, "tests", "data", "mnist-sample")
    source = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with monkeypatch.context() as m:
            refuse_like_windows(m, busy_replaces=2)
            download_file(f"http://127.0.0.1:{server.server_address[1]}/t10k-labels-idx1-ubyte.gz", tmp_path / "l.gz",
                          progress=False)
    finally:
        server.shutdown()
        server.server_close()
    with open(source, "rb") as a, open(tmp_path / "l.gz", "rb") as b:
        assert a.read() == b.read()
    assert os.listdir(tmp_path) == ["l.gz"]


def test_on_windows_a_read_only_file_reached_through_a_link_is_named_as_given(tmp_path, monkeypatch):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    target.chmod(0o444)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with monkeypatch.context() as m:
        refuse_like_windows(m)
        with pytest.raises(PermissionError, match="read-only") as raised:
            with atomic_write(link) as f:
                f.write(b"new")
    assert raised.value.filename == str(link)


def test_on_windows_a_path_under_a_file_fails_as_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "afile").write_bytes(b"x")

    def attempt():
        with pytest.raises(Exception) as raised:
            with atomic_write(tmp_path / "afile" / "c.npz") as f:
                f.write(b"new")
        return type(raised.value), str(raised.value)
    elsewhere = attempt()
    with monkeypatch.context() as m:
        refuse_like_windows(m)
        assert attempt() == elsewhere


def test_on_windows_only_a_file_held_open_is_tried_again(tmp_path, monkeypatch):
    """Another failure (a rename across file systems, say) is said at once."""
    import time
    calls = []

    def replace(src, dst):
        calls.append(dst)
        raise OSError(errno.EXDEV, "Invalid cross-device link", os.fsdecode(src))
    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        m.setattr(os, "name", "nt")
        m.setattr(time, "sleep", lambda s: None)
        with pytest.raises(OSError, match="cross-device"):
            with atomic_write(tmp_path / "c.npz") as f:
                f.write(b"x")
    assert len(calls) == 1


def test_on_windows_the_figure_path_offered_uses_windows_separators(monkeypatch):
    import ntpath

    from npvae.cli import check_output_file
    monkeypatch.setattr(os, "sep", "\\")
    monkeypatch.setattr(os.path, "join", ntpath.join)
    with pytest.raises(InputError, match=r"e\.g\. figs\\figure\.png$"):
        check_output_file("figs/")


def test_the_status_of_a_stop_by_ctrl_break_is_149_as_the_help_says():
    from npvae import cli
    assert cli.EXIT_SIGBREAK == 149 and "149: stopped by\n       Ctrl-Break (Windows)" in cli.EXIT_STATUS
