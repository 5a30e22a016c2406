"""Files under examples/train_mnist.py: the run folder's lock, a killed run's leftovers, strict JSON,
a read-only or full file system, a run that fails before its first checkpoint.

The file-system cases mount a small tmpfs (read-only, or nearly full) in a private
mount namespace (``unshare -m``), so nothing outside the test sees it; where the
machine does not allow that, they are skipped (read-only falls back to chmod when
not running as root).
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from cli_util import (ENV, FIGURED, REFERENCE, SMALL, TRAIN, assert_no_traceback, load_script, run, start,
                      strict_json_lines, wait_for)

from npvae import cli
from npvae.checkpoint import load_checkpoint
from npvae.runfolder import LOCK_NAME


@pytest.fixture(scope="module")
def script():
    """train_mnist.py in this process, for the cases whose subject is not the process (no fresh
    Python, imports or figures' matplotlib per run)."""
    return load_script()


def call(script, capsys, args):
    """The exit status and stderr of train_mnist.py's main(args), run as its ``__main__`` does."""
    code = cli.run(script.main, args)
    return code, capsys.readouterr().err


# -- the lock ----------------------------------------------------------------------------
# (npvae.runfolder's, the same for both back ends: the runs holding it train on the reference
# one, with no Numba to import and no kernels to load)
def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "run"
    first = start([TRAIN, *SMALL, *REFERENCE, "--batch-size", "16", "--epochs", "40", "--out", str(out)])
    seen = []
    try:
        assert wait_for(first, "epoch 1/40", seen), "".join(seen)
        second = run([TRAIN, *SMALL, "--epochs", "1", "--out", str(out)])
        resume = run([TRAIN, "--resume", str(out)])
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert second.returncode == 2, second.stderr
    assert f"--out {out} is in use by process {first.pid}" in second.stderr
    assert "choose another --out" in second.stderr
    assert resume.returncode == 2 and f"its run is still going (process {first.pid}" in resume.stderr
    assert_no_traceback(second.stderr + resume.stderr)
    assert first.returncode == 130, err                 # the first run did not notice a thing
    records = strict_json_lines(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))   # one run's lines, in order
    assert load_checkpoint(out / "checkpoint.npz").epoch >= 1
    assert not (out / LOCK_NAME).exists()


def test_resuming_a_run_still_in_its_first_epoch_says_it_is_going_not_that_it_has_no_checkpoint(tmp_path):
    """Its folder has no checkpoint.npz yet; what matters is that its run holds it."""
    from npvae.runfolder import RunFolder
    with RunFolder(tmp_path / "run", option="--out"):          # a run in its first epoch holds the folder
        resumes = [run([TRAIN, "--resume", str(tmp_path / "run" / name)]) for name in ("", "checkpoint.npz")]
    for resume in resumes:                                      # its folder, or the file to be (was "no such file")
        assert resume.returncode == 2
        assert f"its run is still going (process {os.getpid()}" in resume.stderr, resume.stderr
        assert "without a checkpoint" not in resume.stderr and "no such file" not in resume.stderr
        assert_no_traceback(resume.stderr)


def test_a_killed_runs_lock_and_temporary_files_are_taken_over(tmp_path):
    out = tmp_path / "run"
    killed = start([TRAIN, *SMALL, *REFERENCE, "--batch-size", "16", "--epochs", "40", "--out", str(out)])
    seen = []
    try:
        assert wait_for(killed, "epoch 1/40", seen), "".join(seen)
        killed.send_signal(signal.SIGKILL)           # no cleanup at all
        killed.communicate(timeout=60)
    finally:
        killed.kill()
    assert (out / LOCK_NAME).exists()
    # what a kill during an atomic write leaves (the moment cannot be hit on purpose)
    (out / ".checkpoint.npz.k1ll3d_x.tmp").write_bytes(b"PK half a checkpoint")
    (out / ".metrics.jsonl.abcd1234.tmp").write_text('{"epoch": ')
    (out / ".notes.txt").write_text("not ours")
    (out / ".draft.abcd1234.tmp").write_text("not ours either, though of the shape atomic_write uses")
    done = load_checkpoint(out / "checkpoint.npz").epoch
    proc = run([TRAIN, "--resume", str(out), "--epochs", str(done + 1), "--nll-images", "20", "--no-figures",
                *REFERENCE])
    assert proc.returncode == 0, proc.stderr
    assert f"took over the lock of a run that ended without releasing it (process {killed.pid}" in proc.stderr
    assert "removed 2 temporary file(s) a killed run left" in proc.stderr
    assert sorted(f for f in os.listdir(out) if f.startswith(".")) == [".draft.abcd1234.tmp", ".notes.txt"]
    assert load_checkpoint(out / "checkpoint.npz").epoch == done + 1


# -- strict JSON -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_kl_weight_that_overflows_diverges_on_both_back_ends(tmp_path, backend):
    # beta / B overflows float32: NaN gradients. The fast path once flushed NaN moments to 0
    # (a comparison with NaN is false) and trained on; it must stop as the reference does.
    out = tmp_path / "run"
    proc = run([TRAIN, *SMALL, "--epochs", "1", "--beta", "1e308", "--backend", backend, "--out", str(out)])
    assert proc.returncode == 1, proc.stderr
    assert "error: training diverged at epoch 1" in proc.stderr and "Traceback" not in proc.stderr
    assert "a smaller KL weight than beta=1e+308" in proc.stderr and "or a smaller --beta than 1e+308" in proc.stderr
    assert not out.exists()


# -- a run that fails before its first checkpoint ----------------------------------------
def test_divergence_in_the_first_epoch_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    proc = run([TRAIN, *SMALL, "--epochs", "2", "--lr", "1e30", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "error: training diverged at epoch 1" in proc.stderr and "run again with e.g. --lr 1e+29" in proc.stderr
    assert "resumed" not in proc.stderr                      # a fresh run: nothing to resume
    assert_no_traceback(proc.stderr)
    assert os.listdir(tmp_path) == []


def test_divergence_after_a_checkpoint_says_to_try_a_smaller_lr_in_another_folder(tmp_path, script, capsys,
                                                                                  monkeypatch):
    """The folder keeps the run (resumable from its checkpoint, with its own --lr): the same
    command with a smaller --lr would be refused there, so the advice names another --out, and
    following it trains."""
    from npvae.errors import DivergenceError
    real_fit = script.fit

    def diverging_in_epoch_2(*args, **kwargs):
        real_fit(*args, **{**kwargs, "epochs": 1})
        raise DivergenceError("training diverged at epoch 2, step 1 of 13: the loss is nan")
    monkeypatch.setattr(script, "fit", diverging_in_epoch_2)
    out = tmp_path / "run"
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "2", "--out", str(out)])
    assert code == 1 and load_checkpoint(out / "checkpoint.npz").epoch == 1, err
    assert (f"to try a smaller learning rate, run again with e.g. --lr 0.0001 and another --out ({out} keeps "
            f"this run, as far as its checkpoint)") in err, err
    monkeypatch.setattr(script, "fit", real_fit)
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "2", "--lr", "0.0001",
                                      "--out", str(tmp_path / "another")])
    assert code == 0, err


def test_divergence_after_a_checkpoint_in_a_folder_the_program_named_needs_no_other_out(tmp_path, script, capsys,
                                                                                         monkeypatch):
    """Without --out the same command makes a new folder anyway: the advice is the smaller --lr alone."""
    from npvae.errors import DivergenceError
    real_fit = script.fit

    def diverging_in_epoch_2(*args, **kwargs):
        real_fit(*args, **{**kwargs, "epochs": 1})
        raise DivergenceError("training diverged at epoch 2, step 1 of 13: the loss is nan")
    monkeypatch.setattr(script, "fit", diverging_in_epoch_2)
    monkeypatch.chdir(tmp_path)
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "2"])
    assert code == 1 and "run again with e.g. --lr 0.0001\n" in err + "\n" and "another --out" not in err, err


# -- read-only and full file systems ----------------------------------------------------
@pytest.fixture(scope="module")
def private_tmpfs(tmp_path_factory):
    """``mounted(size, options, command)``: run ``command`` where ``folder`` is a fresh tmpfs, seen by it only."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) on this machine")
    probe = tmp_path_factory.mktemp("probe")
    check = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k npvae-test {probe}"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {check.stderr.strip()}")

    def mounted(folder, size, options, command, timeout=300):
        os.makedirs(folder, exist_ok=True)
        opts = ",".join(["size=" + size, *options])
        script = f"mount -t tmpfs -o {opts} npvae-test {shlex.quote(str(folder))} && exec {shlex.join(command)}"
        return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=ENV,
                              timeout=timeout)
    return mounted


def test_read_only_out_is_refused_at_the_start(tmp_path, private_tmpfs):
    mnt = tmp_path / "mnt"
    proc = private_tmpfs(mnt, "1m", ["ro"], [sys.executable, TRAIN, *SMALL, "--out", str(mnt / "run")])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: --out {mnt / 'run'} is not writable: no file can be created in {mnt} "
                                  f"(Read-only file system)")
    assert_no_traceback(proc.stderr)


def test_a_resume_in_a_read_only_run_folder_names_the_folder_and_the_way_out(tmp_path, private_tmpfs):
    """No --out was given: the message names the run's folder and says to continue with --out NEW."""
    mnt = tmp_path / "mnt"
    train = shlex.join([sys.executable, TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20",
                        "--out", str(mnt / "run")])
    resume = shlex.join([sys.executable, TRAIN, "--resume", str(mnt / "run"), "--epochs", "2"])
    script = f"{train} >/dev/null 2>&1 && mount -o remount,ro {shlex.quote(str(mnt))} && {resume}"
    proc = private_tmpfs(mnt, "8m", [], ["sh", "-c", script])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: the run's folder {mnt / 'run'} is not writable"), proc.stderr
    assert proc.stderr.rstrip().endswith("(Read-only file system); continue it in another folder with --out NEW")
    assert "--out " + str(mnt) not in proc.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_out_in_a_folder_that_takes_no_files_names_that_folder_as_the_reason():
    """/proc exists, yet creating a file in it fails with "No such file or directory": the message
    says it is the folder that takes no files, not that /proc is missing."""
    proc = run([TRAIN, *SMALL, "--out", "/proc/npvae-run"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --out /proc/npvae-run is not writable: no file can be created in /proc "
                                  "("), proc.stderr
    assert_no_traceback(proc.stderr)


def test_read_only_out_without_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: see test_read_only_out_is_refused_at_the_start")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = run([TRAIN, *SMALL, "--out", str(folder / "run")])
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "Permission denied" in proc.stderr
    assert os.listdir(folder) == []


def test_too_little_space_is_refused_at_the_start(tmp_path, private_tmpfs):
    mnt = tmp_path / "mnt"
    proc = private_tmpfs(mnt, "1m", [], [sys.executable, TRAIN, *SMALL, "--out", str(mnt / "run")])
    assert proc.returncode == 2, proc.stderr
    assert f"--out {mnt / 'run'}: only " in proc.stderr
    assert "free some space or choose another folder" in proc.stderr
    assert_no_traceback(proc.stderr)


FILL_DURING_THE_RUN = """
    import json, os, subprocess, sys, threading
    mnt, command = sys.argv[1], sys.argv[2:]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def keep_the_disk_full():     # also what the run frees (an old checkpoint replaced by a new one)
        with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:
            while not done.is_set():
                try:
                    f.write(b"\\0" * 4096)
                except OSError:
                    done.wait(0.001)

    filler = threading.Thread(target=keep_the_disk_full)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1/"):            # a checkpoint is written: now the disk fills up
            filler.start()
            break
    seen.append(proc.stderr.read())
    proc.wait()
    done.set()
    filler.join()
    run = os.path.join(mnt, "run")
    from npvae.checkpoint import load_checkpoint
    print(json.dumps(dict(status=proc.returncode, stderr="".join(seen), files=sorted(os.listdir(run)),
                          epoch=load_checkpoint(os.path.join(run, "checkpoint.npz")).epoch)))
"""


def test_a_disk_that_fills_up_during_the_run(tmp_path, private_tmpfs):
    mnt = tmp_path / "mnt"
    driver = tmp_path / "fill.py"
    driver.write_text(textwrap.dedent(FILL_DURING_THE_RUN))
    command = [sys.executable, str(driver), str(mnt), sys.executable, TRAIN, *SMALL, "--batch-size", "16",
               "--epochs", "40", "--out", str(mnt / "run")]
    proc = private_tmpfs(mnt, "12m", [], command)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    err = result["stderr"]
    assert result["status"] == 1, err
    assert "error: cannot write" in err and "No space left on device; free some space" in err
    assert "to continue once that is fixed, run:" in err and err.rstrip().endswith("/run/checkpoint.npz --no-figures")
    assert_no_traceback(err)
    assert not [f for f in result["files"] if f.startswith(".")]        # no temporary file, no lock
    assert result["epoch"] >= 1                                           # the last good checkpoint


RESUME_ON_A_NEARLY_FULL_DISK = """
    import json, os, subprocess, sys
    mnt, train = sys.argv[1], sys.argv[2:]
    first = subprocess.run(train + ["--epochs", "1", "--out", os.path.join(mnt, "run")], capture_output=True, text=True)
    st = os.statvfs(mnt)
    with open(os.path.join(mnt, "filler"), "wb") as f:     # leave 14 MB: a new checkpoint and the figures fit
        f.write(bytes(st.f_bavail * st.f_frsize - (14 << 20)))
    again = subprocess.run(train[:2] + ["--resume", os.path.join(mnt, "run", "checkpoint.npz"), "--epochs", "2"],
                           capture_output=True, text=True)
    print(json.dumps(dict(first=first.returncode, again=again.returncode, stderr=first.stderr + again.stderr)))
"""


def test_a_resume_counts_the_files_it_replaces_as_space(tmp_path, private_tmpfs):
    """A run whose disk filled up can be resumed once a little space is free: its own checkpoint
    and figures are replaced, not written beside what is there (784-400-20: 7.8 MB a checkpoint)."""
    mnt = tmp_path / "mnt"
    driver = tmp_path / "resume.py"
    driver.write_text(textwrap.dedent(RESUME_ON_A_NEARLY_FULL_DISK))
    command = [sys.executable, str(driver), str(mnt), sys.executable, TRAIN, *FIGURED, *REFERENCE, "--hidden-dim",
               "400", "--nll-images", "20"]
    proc = private_tmpfs(mnt, "24m", [], command)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["first"], result["again"]) == (0, 0), result["stderr"]


def test_a_new_run_never_replaces_a_run_in_its_folder(tmp_path, script, capsys):
    """Running the same command twice must not wipe the first run: the second is refused and
    points to --resume, and the first run's files are left byte for byte."""
    out = tmp_path / "run"
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 0, err
    before = {f: (out / f).read_bytes() for f in sorted(os.listdir(out))}
    code, err = call(script, capsys, [*SMALL, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 2
    assert f"--out {out} already holds a run (checkpoint.npz): continue it with --resume {out}" in err
    assert_no_traceback(err)
    assert {f: (out / f).read_bytes() for f in sorted(os.listdir(out))} == before
    (out / "checkpoint.npz").unlink()               # to save space, say: the results are still there
    del before["checkpoint.npz"]
    code, err = call(script, capsys, [*SMALL, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 2
    assert f"--out {out} holds files of an earlier run (run.json, metrics.jsonl" in err
    assert "choose another --out, or remove those files" in err
    assert {f: (out / f).read_bytes() for f in sorted(os.listdir(out))} == before


def test_what_a_run_killed_in_its_first_epoch_left_does_not_block_the_same_command(tmp_path, script, capsys):
    """kill -9 (the OOM killer, power lost) before the first checkpoint leaves run.json (older
    versions also an empty metrics.jsonl and the untrained reconstructions): nothing to keep, so
    the command runs again (it used to be refused until the user removed them by hand)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"dataset": "mnist-test-split", "seed": 7}\n')
    (out / "metrics.jsonl").write_bytes(b"")
    (out / "reconstruction_before.png").write_bytes(b"\x89PNG of the killed run")
    (out / LOCK_NAME).write_text("")                # its lock file, held by nobody now
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 0, err
    assert (f"note: removed what a run stopped in its first epoch left in {out}: run.json, metrics.jsonl, "
            f"reconstruction_before.png") in err
    assert b"killed run" not in (out / "reconstruction_before.png").read_bytes()       # this run's own
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1


def test_a_figure_drawn_after_training_is_no_leftover_of_a_first_epoch(tmp_path, script, capsys):
    """Only what a run stopped in its first epoch leaves is removed: a folder that also holds a
    figure drawn after training (its checkpoint and metrics since removed) is refused, and kept."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"dataset": "mnist-test-split", "seed": 7}\n')
    (out / "samples.png").write_bytes(b"\x89PNG of an earlier run")
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == 2 and f"--out {out} holds files of an earlier run (run.json, samples.png)" in err, err
    assert sorted(os.listdir(out)) == ["run.json", "samples.png"]
    assert (out / "samples.png").read_bytes() == b"\x89PNG of an earlier run"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
def test_started_with_stdout_and_stderr_closed_their_descriptors_go_to_no_file_it_writes(tmp_path):
    """Else the first files opened (the run's lock, a figure) would take descriptors 1 and 2, and
    a message printed below Python would be written into them."""
    script = tmp_path / "program.py"
    script.write_text("import os, sys\nfrom npvae import cli\n"
                      "def main(argv):\n"
                      "    written = os.write(1, b'x') + os.write(2, b'x')      # as a C library would\n"
                      "    with open(sys.argv[1], 'w') as f:\n"
                      "        f.write(' '.join(os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)))\n"
                      "        f.write(f' {written}')\n"
                      "cli.run(main, [], then_exit=True)\n", encoding="utf-8")
    command = shlex.join([sys.executable, str(script), str(tmp_path / "fds")]) + " <&- >&- 2>&-"
    proc = subprocess.run(["bash", "-c", command], env=ENV, timeout=60)
    assert proc.returncode == 0
    assert (tmp_path / "fds").read_text() == " ".join([os.devnull] * 3) + " 2"


def test_a_run_started_with_stderr_closed_still_trains_and_writes_its_files(tmp_path):
    """`2>&-`: Python has no sys.stderr at all; progress and notes are dropped, the work is done."""
    out = tmp_path / "run"
    command = shlex.join([sys.executable, TRAIN, *FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)]) + " 2>&-"
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert load_checkpoint(out / "checkpoint.npz").epoch == 1 and (out / "samples.png").exists()


def test_a_new_run_in_the_same_second_gets_a_folder_of_its_own(tmp_path):
    # the default folder is runs/<dataset>-<second>: taken by another run, it gets "-2"
    import datetime
    now = datetime.datetime.now()
    taken = [f"mnist-test-split-{now + datetime.timedelta(seconds=s):%Y%m%d-%H%M%S}" for s in range(60)]
    for name in taken:
        (tmp_path / "runs" / name).mkdir(parents=True)
    proc = run([TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    new = sorted(set(os.listdir(tmp_path / "runs")) - set(taken))
    assert len(new) == 1 and new[0].endswith("-2") and new[0][:-2] in taken, new
    assert (tmp_path / "runs" / new[0] / "checkpoint.npz").exists()
    assert "done: metrics and checkpoint (no figures) in" in proc.stdout       # results on stdout


def test_a_tilde_in_the_equals_form_of_a_path_option_means_the_home_folder(tmp_path, script, capsys, monkeypatch):
    """The shell leaves ``--out=~/x`` alone: the program expands it, as the library does, so one
    run is one folder (not its figures in ./~ and its checkpoint in the home folder)."""
    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    small = dict(zip(FIGURED[::2], FIGURED[1::2]))
    shutil.copytree(small.pop("--data-dir"), home / "data")
    args = [a for pair in small.items() for a in pair]
    monkeypatch.setenv("HOME", str(home))           # what ~ expands to, when it is expanded
    monkeypatch.chdir(here)
    code, err = call(script, capsys, [*args, *REFERENCE, "--data-dir=~/data", "--epochs", "1", "--out=~/runs/a"])
    assert code == 0, err
    assert os.listdir(here) == []
    assert {"checkpoint.npz", "run.json", "samples.png"} <= set(os.listdir(home / "runs" / "a"))
    code, err = call(script, capsys, ["--resume=~/runs/a", "--epochs", "2", "--no-figures"])
    assert code == 0, err
    assert load_checkpoint(home / "runs" / "a").epoch == 2


def test_a_resume_with_an_unusable_out_names_out_not_the_run_folder(tmp_path, script, capsys):
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out",
                                      str(tmp_path / "run")])
    assert code == 0, err
    code, err = call(script, capsys, ["--resume", str(tmp_path / "run"), "--epochs", "2", "--out", "/proc/npvae-run"])
    assert code == 2, err
    assert err.startswith("error: --out /proc/npvae-run is not writable"), err
    assert err.rstrip().endswith("; choose another folder"), err


def test_a_resume_in_its_own_folder_on_a_full_disk_says_to_continue_elsewhere(tmp_path, private_tmpfs):
    mnt = tmp_path / "mnt"
    train = shlex.join([sys.executable, TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20",
                        "--out", str(mnt / "run")])
    fill = f"head -c 100M /dev/zero > {shlex.quote(str(mnt / 'filler'))} 2>/dev/null"
    resume = shlex.join([sys.executable, TRAIN, "--resume", str(mnt / "run"), "--epochs", "2"])
    proc = private_tmpfs(mnt, "8m", [], ["sh", "-c", f"{train} >/dev/null 2>&1 && {{ {fill}; {resume}; }}"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: the run's folder {mnt / 'run'}: only "), proc.stderr
    assert proc.stderr.rstrip().endswith("free some space or continue it in another folder with --out NEW"), proc.stderr


def test_a_run_that_diverges_at_once_keeps_the_empty_out_folder_the_user_made(tmp_path):
    """``mkdir run; train_mnist.py --out run`` that diverges in its first epoch leaves ``run``
    (empty) where it was: the user's folder, not the run's (a folder the run made is removed)."""
    out = tmp_path / "run"
    out.mkdir()
    proc = run([TRAIN, *SMALL, "--epochs", "2", "--lr", "1e30", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "error: training diverged at epoch 1" in proc.stderr
    assert_no_traceback(proc.stderr)
    assert out.is_dir() and os.listdir(out) == []
