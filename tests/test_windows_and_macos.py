"""Windows and macOS behaviour, simulated on Linux: the programs run under tests/windows_sim.py
(no fcntl, resource or pwd; an msvcrt stand-in; no file removed while it is open) or
tests/macos_poll_sim.py (poll() as macOS answers it), or /proc and /sys are hidden (macOS).
Each case once failed there (examples/benchmark.py's are in test_examples.py)."""
import builtins
import os
import select
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest
from cli_util import (ENV, REFERENCE, ROOT, SMALL, TRAIN, assert_no_traceback, load_script, open_without_proc_and_sys,
                      run, start, wait_for)

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
    args = [WINDOWS, TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out", str(out)]
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
                                                           str(out / "checkpoint.npz")]
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
    assert lines[0].startswith(f"refused: folder {folder} is in use by process "), proc.stdout
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
