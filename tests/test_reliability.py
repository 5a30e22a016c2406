"""The library pieces under the command line's promises, through their public calls:
strict JSON, atomic writes and their sweep, the run-folder lock, signals, progress,
memory estimates, data fingerprints, and argument checks that used to reach NumPy."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from cli_util import SAMPLE, sample_copy
from deadline import fail_after

import npvae
from npvae import cli, footprint, jsonio, signals
from npvae.atomic import append_line, atomic_write, sweep_temporary_files
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.data import fingerprint, load_dataset, load_idx_split, load_split, search_path
from npvae.errors import (CheckpointError, DataFileError, DatasetNotFoundError, DivergenceError, InputError,
                          InputTypeError, RunFolderInUseError)
from npvae.progress import Bar, EpochProgress, format_duration
from npvae.runfolder import LOCK_NAME, RunFolder, holder


# -- strict JSON -------------------------------------------------------------------------
def test_strict_json_writes_null_with_the_reason_beside_it():
    line = jsonio.dumps({"a": float("inf"), "b": float("nan"), "c": -float("inf"), "d": 1.5, "e": None,
                         "f": [1.0, float("nan")], "g": {"h": float("inf")}, "i": np.float32(2.5),
                         "j": np.array([1, 2]), "k": np.int64(3)})
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert record["a"] is None and record["a_nonfinite"] == "inf"
    assert record["b"] is None and record["b_nonfinite"] == "nan"
    assert record["c"] is None and record["c_nonfinite"] == "-inf"
    assert record["d"] == 1.5 and "d_nonfinite" not in record and record["e"] is None
    assert record["f"] == [1.0, None] and record["f_nonfinite"] == {"1": "nan"}
    assert record["g"] == {"h": None, "h_nonfinite": "inf"}
    assert record["i"] == 2.5 and record["j"] == [1, 2] and record["k"] == 3


def test_strict_json_adds_a_reason_only_where_a_value_was_not_finite_and_handles_tuples_as_lists():
    record = json.loads(jsonio.dumps({"sizes": [400, 20], "betas": (0.9, 0.999), "shape": (2, 3),
                                      "pair": (1.0, float("-inf")), "empty": []}),
                        parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert record == {"sizes": [400, 20], "betas": [0.9, 0.999], "shape": [2, 3], "pair": [1.0, None],
                      "pair_nonfinite": {"1": "-inf"}, "empty": []}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fit_writes_strict_metrics(tmp_path):
    images, _ = load_idx_split(SAMPLE, "t10k")
    path = tmp_path / "m.jsonl"
    # float64 and the reference: each step's loss is finite (near 1e308), their sum is not. (SGD with a
    # tiny rate: Adam's v, the squares of gradients near 1e306, would overflow: a divergence of its own.)
    model = npvae.VAE(784, 8, 2, rng=0, dtype=np.float64)
    npvae.fit(model, images[:64], images[64:96], epochs=1, batch_size=32, beta=1e308, rng=0, progress=False,
              optimizer=npvae.SGD(model.parameters(), lr=1e-320), metrics_path=path, backend="numpy")
    (line,) = path.read_text().splitlines()
    record = json.loads(line, parse_constant=lambda c: pytest.fail(c))
    assert record["train_loss"] is None and record["train_loss_nonfinite"] == "inf"


# -- atomic writes ----------------------------------------------------------------------
def test_atomic_write_refuses_a_folder_and_names_the_file_on_a_write_error(tmp_path):
    with pytest.raises(InputError, match="it is a folder"):
        with atomic_write(tmp_path, "w"):
            pass
    with pytest.raises(InputError, match="path must be a file path"):
        save_checkpoint(tmp_path, npvae.VAE(4, 3, 2, rng=0))
    target = tmp_path / "x.bin"
    with pytest.raises(OSError) as info:
        with atomic_write(target) as f:
            f.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_pipe_or_a_device_is_never_replaced_by_a_file(tmp_path):
    """Renaming a temporary file onto a pipe, or /dev/null as root, would replace it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    model = npvae.VAE(6, 4, 2, rng=0)
    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    with pytest.raises(InputError, match="it is a pipe, not a regular file"):
        with atomic_write(fifo, "w") as f:
            f.write("x")
    with pytest.raises(InputError, match=r"metrics_path: cannot write .*it is a pipe, not a regular file"):
        npvae.fit(model, x, epochs=1, progress=False, backend="numpy", metrics_path=fifo)
    with pytest.raises(InputError, match="it is a pipe, not a regular file"):
        save_checkpoint(fifo, model)
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["fifo"]
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="cannot write .*loop: Too many levels of symbolic links"):
        save_checkpoint(loop, model)


def test_atomic_write_writes_through_a_symbolic_link(tmp_path):
    (tmp_path / "docs").mkdir()
    real = tmp_path / "docs" / "page.md"
    real.write_text("old")
    link = tmp_path / "page.md"
    link.symlink_to(real)
    with atomic_write(link, "w") as f:
        f.write("new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["docs", "page.md"] and os.listdir(real.parent) == ["page.md"]


def test_a_temporary_file_that_cannot_be_made_is_reported_under_the_name_asked_for(tmp_path):
    """The temporary name is 14 bytes longer than the file's: a 250-byte name fits, its temporary one does
    not. The error names the file the caller asked for, not a temporary name it never saw."""
    target = tmp_path / ("x" * 250)
    with pytest.raises(OSError) as info:
        with atomic_write(target, "w") as f:
            f.write("x")
    assert info.value.errno == errno.ENAMETOOLONG and info.value.filename == str(target)
    assert os.listdir(tmp_path) == []


def test_append_line_adds_one_line_each_and_refuses_a_pipe_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "m.jsonl"
    append_line(path, '{"epoch": 1}\n')            # a line that already ends in a newline gets no second one
    append_line(path, '{"epoch": 2}')
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with fail_after(5, "append_line waited for a writer to the pipe"):
        with pytest.raises(InputError, match="it is a pipe, not a regular file"):
            append_line(fifo, "x")
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == ["fifo", "m.jsonl"]


def test_sweep_removes_only_what_atomic_write_leaves(tmp_path):
    for name in (".checkpoint.npz.ab_cd123.tmp", ".run.json.zzzzzzzz.tmp", ".run.json.short.tmp", "keep.tmp",
                 ".hidden", "checkpoint.npz"):
        (tmp_path / name).write_text("x")
    assert sweep_temporary_files(tmp_path) == [".checkpoint.npz.ab_cd123.tmp", ".run.json.zzzzzzzz.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", ".run.json.short.tmp", "checkpoint.npz", "keep.tmp"]


def test_sweep_with_names_removes_only_the_temporary_files_of_those(tmp_path):
    for name in (".checkpoint.npz.ab_cd123.tmp", ".draft.abcd1234.tmp", ".run.json.zzzzzzzz.tmp"):
        (tmp_path / name).write_text("x")
    assert sweep_temporary_files(tmp_path, names=["checkpoint.npz", "run"]) == [".checkpoint.npz.ab_cd123.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".draft.abcd1234.tmp", ".run.json.zzzzzzzz.tmp"]


@pytest.mark.parametrize("folder", [3, b".", None])
def test_sweep_takes_a_folders_path_only(tmp_path, monkeypatch, folder):
    """An int would be taken as a file descriptor: its folder listed, but the names removed from
    the current folder. Refused, as is anything else that is not a str or a Path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".run.json.abcdefgh.tmp").write_text("x")
    with pytest.raises(InputTypeError, match=r"^folder must be a str or a pathlib.Path, got "):
        sweep_temporary_files(folder)
    assert os.listdir(tmp_path) == [".run.json.abcdefgh.tmp"]


def test_sweep_takes_a_list_of_names_not_one(tmp_path):
    """``in`` a string matches its parts: names="checkpoint.npz" would sweep ``.npz.<8>.tmp`` too."""
    (tmp_path / ".npz.abcdefgh.tmp").write_text("x")
    with pytest.raises(InputTypeError, match=r"^names must be a list of file names, got one str 'checkpoint.npz'"):
        sweep_temporary_files(tmp_path, names="checkpoint.npz")
    assert os.listdir(tmp_path) == [".npz.abcdefgh.tmp"]


def test_sweep_names_must_be_file_names_read_once(tmp_path):
    """A number or a path is refused before anything is removed, and a generator is read once, not
    used up by the first file it is asked about."""
    import pathlib
    for tail in ("abcdefgh", "ijklmnop"):
        (tmp_path / f".run.json.{tail}.tmp").write_text("x")
    for names in (5, [pathlib.Path("run.json")]):
        with pytest.raises(InputTypeError, match=r"^names must be"):
            sweep_temporary_files(tmp_path, names=names)
    assert len(os.listdir(tmp_path)) == 2
    assert sweep_temporary_files(tmp_path, names=(n for n in ["run.json"])) == [
        ".run.json.abcdefgh.tmp", ".run.json.ijklmnop.tmp"]


def test_sweep_names_what_it_removed_in_sorted_order(tmp_path):
    """train_mnist.py prints the list ("note: removed N temporary file(s) ..."): the same folder gives the same
    line whatever order the file system lists it in."""
    names = [f".checkpoint.npz.{c * 8}.tmp" for c in "qwertyuiopasdfghjklz"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert sweep_temporary_files(tmp_path) == sorted(names) and os.listdir(tmp_path) == []


def test_sweep_leaves_a_folder_or_a_link_with_a_temporary_files_name(tmp_path):
    """Only files atomic_write left are swept: a folder of that name is not a file to remove (os.remove
    would raise), and a link of that name is someone's link."""
    (tmp_path / ".run.json.abcdefgh.tmp").mkdir()
    (tmp_path / "kept").write_text("x")
    (tmp_path / ".checkpoint.npz.abcdefgh.tmp").symlink_to(tmp_path / "kept")
    assert sweep_temporary_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == [".checkpoint.npz.abcdefgh.tmp", ".run.json.abcdefgh.tmp", "kept"]

# -- the run folder's lock -------------------------------------------------------------
def test_run_folder_lock(tmp_path):
    folder = tmp_path / "run"
    with RunFolder(folder, "--out") as run:
        assert run.created and (folder / LOCK_NAME).exists()
        assert f"process {os.getpid()}" in holder(folder)
        with pytest.raises(RunFolderInUseError, match=f"--out {folder} is in use by process {os.getpid()}"):
            RunFolder(folder, "--out").__enter__()
    assert not (folder / LOCK_NAME).exists() and holder(folder) is None
    # a stale lock file (its process is gone) is taken over, and the temporary files it left swept
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 99999999, "started": "yesterday"}))
    (folder / ".checkpoint.npz.abcdefgh.tmp").write_text("x")
    before = sorted(os.listdir(folder))
    assert holder(folder) is None and sorted(os.listdir(folder)) == before      # looking changes nothing
    with RunFolder(folder) as run:
        assert "process 99999999" in run.stale and run.swept == [".checkpoint.npz.abcdefgh.tmp"]
        assert not run.created
    assert os.listdir(folder) == []


def test_a_run_that_opened_a_lock_file_its_holder_then_removed_locks_a_new_one(tmp_path, monkeypatch):
    """The module docstring's retry: the file opened was removed (its run ended) before it was locked;
    a lock on that removed file would keep no other run out, so the run takes the new file."""
    folder = tmp_path / "run"
    lock, real_open, removed = str(folder / LOCK_NAME), os.open, []

    def open_then_removed(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if os.fspath(path) == lock and not removed:
            os.remove(lock)                 # the run that held it ends just now
            removed.append(lock)
        return fd
    monkeypatch.setattr(os, "open", open_then_removed)
    with RunFolder(folder):
        monkeypatch.setattr(os, "open", real_open)
        assert removed
        assert f"process {os.getpid()}" in (holder(folder) or ""), "a run holds the folder, but no lock is visible"
        with pytest.raises(RunFolderInUseError):
            RunFolder(folder).__enter__()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux: /proc/self/fd")
def test_a_released_run_folder_keeps_no_file_open(tmp_path):
    """A program that makes run folders in a loop (a notebook, say) would run out of file descriptors."""
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with RunFolder(tmp_path / "run"):
            pass
    assert len(os.listdir("/proc/self/fd")) == before


def raising(error):
    def fail(*args):
        raise error
    return fail


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux: /proc/self/fd, fcntl")
def test_a_run_folder_that_cannot_be_locked_or_written_keeps_no_file_open_and_no_lock(tmp_path, monkeypatch):
    """No locks on the file system (NFS without lockd: ENOLCK), or a full disk while the lock file is
    written, even with a lock file that then cannot be removed: that first error, naming the lock
    file, and nothing held (a notebook could not use the folder again until restarted) or left in
    a folder the run made."""
    import fcntl
    before = len(os.listdir("/proc/self/fd"))
    folder = tmp_path / "run"
    failures = [[(fcntl, "flock", OSError(errno.ENOLCK, "No locks available"))],
                [(os, "write", OSError(errno.ENOSPC, "No space left on device"))],
                [(os, "write", OSError(errno.ENOSPC, "No space left on device")),
                 (os, "remove", PermissionError(errno.EACCES, "Permission denied"))]]
    for failing in failures:
        with monkeypatch.context() as broken:
            for module, name, error in failing:
                broken.setattr(module, name, raising(error))
            with pytest.raises(OSError) as raised:
                RunFolder(folder).__enter__()
        assert raised.value is failing[0][2] and raised.value.filename == str(folder / LOCK_NAME)
        assert len(os.listdir("/proc/self/fd")) == before, failing
        assert not folder.exists() or os.listdir(folder) == [LOCK_NAME], failing   # it could not be removed
    with RunFolder(folder):                      # free: not "in use" by this very process
        pass
    assert not os.path.exists(folder / LOCK_NAME)
    with monkeypatch.context() as broken:         # an error of no errno keeps its own words
        broken.setattr(os, "write", raising(OSError("the disk went away")))
        with pytest.raises(OSError, match=r"^the disk went away$"):
            RunFolder(folder).__enter__()


def test_a_run_that_opens_the_lock_file_as_its_holder_ends_is_refused_or_keeps_a_visible_lock(tmp_path,
                                                                                             monkeypatch):
    """The holder removes the lock file before it closes it (the module docstring): a run that comes
    in between is refused; closing first would let it lock the file that is then removed, and a
    third run would find the folder free."""
    folder = tmp_path / "run"
    lock, real_remove, seen = str(folder / LOCK_NAME), os.remove, {}

    def remove(path, *args, **kwargs):          # the second run arrives just before the removal
        if os.fspath(path) == lock and "second" not in seen:
            try:
                seen["second"] = RunFolder(folder).__enter__()
            except RunFolderInUseError:
                seen["second"] = None
        return real_remove(path, *args, **kwargs)
    with RunFolder(folder):
        monkeypatch.setattr(os, "remove", remove)
    monkeypatch.setattr(os, "remove", real_remove)
    assert "second" in seen                     # it did come in between
    if seen["second"] is not None:
        try:
            assert holder(folder) is not None, "a run holds the folder, but its lock file is gone"
        finally:
            seen["second"].release()


def test_a_folder_a_program_named_itself_takes_the_next_free_name_if_another_run_made_it_first(tmp_path):
    """Two runs started in the same second, without --out, both choose runs/<dataset>-<time>: the one
    that comes second goes on in <name>-2 (it was refused, told to choose another --out it never gave)."""
    base = tmp_path / "runs" / "mnist-20261206-183808"
    with RunFolder(base, "--out") as first:
        with RunFolder(base, "--out", unique=True) as second:
            assert second.path == f"{base}-2" and second.created and first.path == str(base)
        with RunFolder(base, "--out", unique=True) as third:    # -2 is left empty, not in use: still taken
            assert third.path == f"{base}-3"
    with RunFolder(tmp_path / "new" / "run", unique=True) as run:   # parents made, the name kept if free
        assert run.path == str(tmp_path / "new" / "run") and run.created
        run.discard([])
    assert not (tmp_path / "new" / "run").exists()


def test_a_folder_named_by_the_program_that_cannot_be_made_is_an_error_not_a_search_for_a_free_name(tmp_path):
    with fail_after(5, "RunFolder(unique=True) kept looking for a free name"):
        with pytest.raises(OSError) as info:
            with RunFolder(tmp_path / ("x" * 300), unique=True):
                pass
        assert info.value.errno == errno.ENAMETOOLONG


def test_a_folder_named_by_the_program_may_be_a_bare_relative_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RunFolder("run", unique=True) as first, RunFolder("run", unique=True) as second:
        assert (first.path, second.path) == ("run", "run-2")
    with RunFolder("more/", unique=True) as first, RunFolder("more/", unique=True) as second:
        assert (first.path, second.path) == ("more", "more-2")       # not more/-2, inside the first


def test_an_import_error_inside_npvae_is_still_called_a_bug():
    line = cli.describe(ImportError("cannot import name 'x' from 'npvae.fast.kernels'", name="npvae.fast.kernels"))
    assert "bug in npvae" in line, line


def test_discard_removes_only_what_the_run_wrote_and_only_its_own_folder(tmp_path):
    with RunFolder(tmp_path / "new") as run:
        (tmp_path / "new" / "run.json").write_text("{}")
        run.discard(["run.json", "metrics.jsonl"])
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mine.txt").write_text("x")
    with RunFolder(tmp_path / "old") as run:
        (tmp_path / "old" / "run.json").write_text("{}")
        run.discard(["run.json"])
    assert os.listdir(tmp_path / "old") == ["mine.txt"]


# -- signals ---------------------------------------------------------------------------
def test_raise_on_signals_raises_once_then_only_acknowledges(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.raise_on_signals():
        with pytest.raises(signals.Interrupted) as info:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(1)
        assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
        assert isinstance(info.value, KeyboardInterrupt)
        signal.raise_signal(signal.SIGINT)          # during the cleanup: no exception
    assert "SIGINT received again" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_cli_run_reports_in_one_line_with_the_documented_status(capsys):
    def failing(error):
        def main(argv):
            raise error
        return main

    cases = [(InputError("bad --thing"), 2, "error: bad --thing"),
             (DivergenceError("diverged"), 1, "error: diverged"),
             (OSError(errno.ENOSPC, "No space left on device", "/x/c.npz"), 1,
              "error: cannot write /x/c.npz: No space left on device; free some space"),
             (OSError(errno.EROFS, "Read-only file system", "/x"), 1, "error: cannot write /x: Read-only"),
             (PermissionError(errno.EACCES, "Permission denied", "/x"), 1, "error: /x: Permission denied"),
             (MemoryError(), 1, "error: out of memory"),
             (signals.Interrupted(signal.SIGTERM), 143, "stopped: interrupted by SIGTERM"),
             (KeyboardInterrupt(), 130, "stopped: interrupted by SIGINT"),
             (ZeroDivisionError("boom"), 1, "error: internal error (ZeroDivisionError: boom); this is a bug")]
    for error, status, line in cases:
        assert cli.run(failing(error), []) == status
        err = capsys.readouterr().err
        assert err.startswith(line) and "Traceback" not in err, err
    noted = InputError("first")
    noted.add_note("  then this")
    assert cli.run(failing(noted), []) == 2
    assert capsys.readouterr().err == "error: first\n  then this\n"
    assert cli.run(failing(InputError("x")), ["--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_interrupt_python_wrapped_in_another_error_is_reported_as_the_interrupt(capsys):
    """A Ctrl-C landing in matplotlib's import (a C extension's init, a class body's __set_name__)
    comes out as an ImportError or a RuntimeError: it used to be called a bug in npvae, status 1."""
    def wrapped(how):
        def main(argv):
            try:
                raise signals.Interrupted(signal.SIGTERM)
            except KeyboardInterrupt as interrupt:
                error = ImportError("initialization failed") if how == "context" else RuntimeError("set_name")
                error.add_note("to continue, run: ...")
                if how == "cause":
                    raise error from interrupt
                raise error
        return main
    for how in ("cause", "context"):
        assert cli.run(wrapped(how), []) == 143
        assert capsys.readouterr().err == "stopped: interrupted by SIGTERM\nto continue, run: ...\n"
    assert cli.interruption(ValueError("plain")) is None

    def cleanup_fails(error):       # an error of its own while an interrupt is being handled
        # (a RuntimeError subclass, or one said "from None", is not the wrapper Python puts around it)
        def main(argv):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                if isinstance(error, RuntimeError):
                    raise error from None           # said on purpose: not the interrupt's wrapper
                raise error
        return main
    assert cli.run(cleanup_fails(OSError(errno.ENOSPC, "No space left on device", "/x/run.json")), []) == 1
    assert capsys.readouterr().err.startswith("error: cannot write /x/run.json: No space left on device")
    assert cli.run(cleanup_fails(RuntimeError("in the cleanup")), []) == 1
    assert "internal error (RuntimeError: in the cleanup)" in capsys.readouterr().err
    for error in (ModuleNotFoundError("No module named 'scipy'"), RecursionError("too deep")):
        assert cli.run(cleanup_fails(error), []) == 1
        assert f"internal error ({type(error).__name__}: " in capsys.readouterr().err

    def pipe_of_its_own(argv):          # not stdout's reader: a helper process that went away, say
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    assert cli.run(pipe_of_its_own, []) == 1
    assert capsys.readouterr().err == "error: Broken pipe\n"


def _program(body, stdout):
    """Run ``cli.run(main)`` in a fresh Python whose main prints a line, then does ``body``;
    its output waits in Python's buffer (no PYTHONUNBUFFERED). Returns (status, stderr)."""
    script = ("import errno, sys\nfrom npvae import cli\nfrom npvae.errors import InputError\n"
              "def main(argv):\n    print('a line of results')\n    " + body + "\ncli.run(main, then_exit=True)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=stdout, stderr=subprocess.PIPE, env=env)
    if stdout == subprocess.PIPE:
        if body.startswith("raise InputError"):
            proc.stdout.close()                 # its reader left before it wrote
        else:
            proc.stdout.read()                  # a live reader, to the end
            proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=120), err


def test_a_program_started_with_stderr_closed_keeps_its_messages_out_of_its_results():
    """Python has no sys.stderr then, and print(..., file=sys.stderr) prints to stdout: a program's
    progress lines (latent_bubbles.py's "training with beta = 0") went into its table of results."""
    script = ("import sys\nfrom npvae import cli\ndef main(argv):\n    print('training...', file=sys.stderr)\n"
              "    print('results')\ncli.run(main, then_exit=True)\n")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.run(["sh", "-c", '"$0" -c "$1" 2>&-', sys.executable, script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "results\n")


def test_an_error_with_output_still_buffered_keeps_its_status_and_one_report():
    """The reader left (| head) or the disk is full, and main failed: Python's flush at exit
    used to add "Exception ignored ... BrokenPipeError" and turn the status into 120."""
    code, err = _program("raise InputError('bad --thing')", subprocess.PIPE)
    assert (code, err) == (2, "error: bad --thing\n")
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            code, err = _program("raise InputError('bad --thing')", full)
        assert (code, err) == (2, "error: bad --thing\n")


def test_a_program_that_closes_sys_stdout_itself_is_not_called_a_bug(tmp_path):
    with open(tmp_path / "out.txt", "w") as out:
        assert _program("sys.stdout.close()", out) == (0, "")


def test_a_broken_pipe_of_its_own_is_reported_while_stdouts_reader_is_still_there():
    """Only stdout's reader leaving is the quiet 141; a helper process that went away is an error."""
    code, err = _program("raise BrokenPipeError(errno.EPIPE, 'Broken pipe')", subprocess.PIPE)
    assert (code, err) == (1, "error: Broken pipe\n")


def test_a_programs_warnings_are_one_line_once_and_still_follow_the_users_filters(capsys):
    def main(argv):
        for _ in range(3):
            warnings.warn("the data come from the cache", UserWarning)
    assert cli.run(main, []) == 0
    assert capsys.readouterr().err == "warning: the data come from the cache\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # what python -W ignore or PYTHONWARNINGS set
        assert cli.run(main, []) == 0
    assert capsys.readouterr().err == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # -W error: the warning is an error
        assert cli.run(main, []) == 1
    assert "the data come from the cache" in capsys.readouterr().err


# -- progress ----------------------------------------------------------------------------
class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    monkeypatch.setenv("COLUMNS", "150")    # the lines below are for a terminal wider than they are
    tty = FakeTTY()
    show = EpochProgress(True, epochs=3, steps=10, stream=tty)
    show.update(1, 10, 123.4567, 640, 0.5)
    record = dict(epoch=1, train_loss=1.0, train_recon=0.5, train_kl=0.5, beta=1.0, test_loss=None,
                  train_seconds=2.0, eval_seconds=1.0)
    show.summary(record)
    text = tty.getvalue()
    assert "\repoch 1/3  batch 10/10 [####################]  loss 123.457  1,280 samples/s  0:00 left" in text
    assert text.rstrip().endswith("0:03 + eval 1.0s  (0:06 left to train)".replace("0:03", "2.0s"))
    log = io.StringIO()
    show = EpochProgress(True, epochs=3, steps=10, stream=log)
    show.update(1, 5, 1.0, 320, 0.5)
    show.summary(dict(record, train_loss=float("inf"), train_recon=2e300))
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 1
    assert "train inf (recon 2e+300" in log.getvalue()
    bar = Bar("NLL (k=5)", 200, "images", stream=FakeTTY())
    bar.update(200)
    assert "NLL (k=5) [####################] 100%  200/200 images" in bar.stream.getvalue()
    assert [format_duration(s) for s in (0, 59.6, 61, 3725, float("inf"), None)] == \
        ["0:00", "1:00", "1:01", "1:02:05", "?", "?"]


def test_on_an_80_column_terminal_the_bar_shrinks_and_the_time_left_stays(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    tty = FakeTTY()
    show = EpochProgress(True, epochs=20, steps=469, stream=tty)
    show.update(10, 469, 108.2141, 60000, 11.3)
    drawn = tty.getvalue().split("\r")[-1]
    assert drawn == "epoch 10/20  batch 469/469 [########]  loss 108.214  5,310 samples/s  0:00 left"   # 79
    bar = Bar("NLL (k=800)", 10000, "images", stream=FakeTTY())
    bar.update(10000)
    assert bar.stream.getvalue().split("\r")[-1].endswith("images/s  0:00 left")
    assert len(bar.stream.getvalue().split("\r")[-1]) <= 79


def test_the_bar_fits_the_terminal_it_is_drawn_on_when_stdout_goes_elsewhere(monkeypatch):
    """``train_mnist.py > log.txt``: stderr is the 80-column terminal, stdout a file."""
    import fcntl
    import pty
    import struct
    import termios
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with os.fdopen(slave, "w") as terminal:
        show = EpochProgress(True, epochs=20, steps=469, stream=terminal)
        show.update(10, 469, 108.2141, 60000, 11.3)
        terminal.flush()
        drawn = os.read(master, 4096).decode().split("\r")[-1]
    os.close(master)
    assert len(drawn) <= 79 and drawn.endswith("0:00 left"), drawn


@pytest.mark.parametrize("label", ["downloading t10k[1].gz", "downloading t10k [1].gz"])
def test_a_label_with_brackets_keeps_them_and_only_the_bar_shrinks(monkeypatch, label):
    monkeypatch.setenv("COLUMNS", "80")
    bar = Bar(label, 10_000_000, "MB", scale=1e6, fmt=".1f", stream=FakeTTY())
    bar.interval = 0
    bar.update(5_000_000)
    drawn = bar.stream.getvalue().split("\r")[-1]
    assert drawn.startswith(label + " [") and drawn.endswith(" left") and len(drawn) <= 79, drawn


@pytest.mark.parametrize("drawn_after", [True, False])
def test_a_terminal_narrowed_mid_epoch_gets_lines_that_fit_it(monkeypatch, drawn_after):
    """Padding over a wider line drawn before would wrap, and a wrapped line is not redrawn in
    place; so would clearing it with as many spaces, whether a line was drawn since or not."""
    monkeypatch.setenv("COLUMNS", "120")
    tty = FakeTTY()
    show = EpochProgress(True, epochs=3, steps=100, stream=tty)
    show.interval = 0
    show.update(1, 1, 1.0, 128, 1.0)
    show.update(1, 2, 1.0, 256, 2.0)
    monkeypatch.setenv("COLUMNS", "40")
    if drawn_after:
        show.update(1, 3, 1.0, 384, 3.0)
    show.message("a message")
    writes = tty.getvalue().split("\r")          # the first step is not drawn: no rate yet
    assert writes[:2] == ["", "epoch 1/3  batch 2/100 [....................]  loss 1.000  128 samples/s  1:38 left"]
    narrow = ["epoch 1/3  128 samples/s  1:37 left".ljust(39)] if drawn_after else []   # the bar, batch, loss went
    assert writes[2:] == [*narrow, " " * 39, "a message\n"]


def test_a_line_the_stream_cannot_encode_is_escaped_not_lost():
    """PYTHONIOENCODING=ascii and a folder named with a u-umlaut: the result line still says where
    (also on a stream that does not say its encoding)."""
    import codecs
    from npvae.progress import emit
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    emit(stream, "done: figures, metrics and checkpoint in runs/v \u00fc\n")
    assert stream.buffer.getvalue() == b"done: figures, metrics and checkpoint in runs/v \\xfc\n"
    buffer = io.BytesIO()
    emit(codecs.getwriter("ascii")(buffer), "done: in runs/v \u00fc\n")
    assert buffer.getvalue() == b"done: in runs/v \\xfc\n"


@pytest.mark.parametrize("columns, drawn", [
    (68, "epoch 10/20  batch 469/469  loss 108.214  5,310 samples/s  0:00 left"),
    (53, "epoch 10/20  loss 108.214  5,310 samples/s  0:00 left"),
    (40, "epoch 10/20  5,310 samples/s  0:00 left"),
    (20, "epoch 10/20  0:00 le"),
])
def test_a_narrower_terminal_keeps_the_rate_and_the_time_left_as_long_as_they_fit(monkeypatch, columns, drawn):
    """Narrower than 80 columns: the bar goes, then the fields after the epoch, from the left."""
    monkeypatch.setenv("COLUMNS", str(columns + 1))
    tty = FakeTTY()
    EpochProgress(True, epochs=20, steps=469, stream=tty).update(10, 469, 108.2141, 60000, 11.3)
    assert tty.getvalue().split("\r")[-1] == drawn


@pytest.mark.parametrize("done", [6400, 10000])
def test_a_narrow_terminal_drops_a_bars_percentage_alike_whatever_it_reads(monkeypatch, done):
    """At 100% as at 64%: the percentage goes before the rate and the time left."""
    monkeypatch.setenv("COLUMNS", "41")
    bar = Bar("NLL (k=800)", 10000, "images", stream=FakeTTY())
    bar.interval = 0
    bar.update(done)
    drawn = bar.stream.getvalue().split("\r")[-1].rstrip()
    assert drawn.startswith("NLL (k=800)  ") and "%" not in drawn and drawn.endswith(" left"), drawn


def test_a_bar_of_five_is_still_drawn(monkeypatch):
    monkeypatch.setenv("COLUMNS", "77")
    tty = FakeTTY()
    EpochProgress(True, epochs=20, steps=469, stream=tty).update(10, 469, 108.2141, 60000, 11.3)
    assert tty.getvalue().split("\r")[-1] == "epoch 10/20  batch 469/469 [#####]  loss 108.214  5,310 samples/s  0:00 left"


def test_time_left_is_not_thrown_off_by_a_slow_first_step(monkeypatch):
    """A cold Numba cache makes the first step take seconds (compiling): the rate and the
    time left are measured without it, on the bar and in the epoch's line."""
    monkeypatch.setenv("COLUMNS", "150")    # the lines below are for a terminal wider than they are
    tty = FakeTTY()
    show = EpochProgress(True, epochs=3, steps=10, stream=tty)
    show.interval = 0
    show.start(1, 0)
    assert tty.getvalue() == "\repoch 1/3  batch 0/10 [....................]  starting ..."
    show.update(1, 1, 1.0, 128, 30.0)                # 30 s: compiling
    for step in range(2, 11):                        # then 1 s a step
        show.update(1, step, 1.0, 128 * step, 30.0 + (step - 1))
    show.summary(dict(epoch=1, train_loss=1.0, train_recon=0.5, train_kl=0.5, beta=1.0, test_loss=None,
                      train_seconds=39.0, eval_seconds=1.0))
    text = tty.getvalue()
    assert "batch 1/10" not in text                  # nothing to time yet
    assert "batch 5/10 [##########..........]  loss 1.000  128 samples/s  0:05 left" in text
    assert text.rstrip().endswith("39.0s + eval 1.0s  (0:22 left to train)")   # 2 x (10 + 1) s
    show.start(2, 0)                                 # the next epochs are timed whole
    show.update(2, 1, 1.0, 128, 2.0)
    assert tty.getvalue().endswith("batch 1/10 [##..................]  loss 1.000  64 samples/s  0:18 left")


class HungUpTTY(FakeTTY):
    """A terminal that has closed: every write fails with EIO, as a tty does after SIGHUP."""

    def write(self, text):
        raise OSError(errno.EIO, "Input/output error")


def test_a_closed_terminal_does_not_stop_training():
    """Under nohup, or with SIGHUP handled elsewhere, the terminal can go away mid-run: the progress
    shown on it fails quietly and training finishes."""
    show = EpochProgress(True, epochs=2, steps=10, stream=HungUpTTY())
    show.update(1, 10, 1.0, 640, 0.5)
    show.summary(dict(epoch=1, train_loss=1.0, train_recon=0.5, train_kl=0.5, beta=1.0, test_loss=None,
                      train_seconds=2.0, eval_seconds=1.0))
    show.message("interrupted")
    show.close()
    bar = Bar("NLL (k=5)", 200, "images", stream=HungUpTTY())
    bar.update(200)
    bar.close("done")


# -- memory ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_the_training_estimate_covers_what_training_allocates(backend, dtype):
    """A model too big for the machine is refused by the estimate, not by the out-of-memory
    killer: on either back end, in either dtype, what training a wide model allocates stays within it."""
    from npvae.fast import Trainer
    x = np.random.default_rng(0).random((16, 784)).astype(dtype)
    small = npvae.VAE(784, 8, 2, rng=0, dtype=dtype)
    with Trainer(small, npvae.Adam(small.parameters())) as trainer:
        trainer.step(x)                                     # the kernels compiled or loaded first
    tracemalloc.start()
    try:
        model = npvae.VAE(784, 2000, 20, rng=0, dtype=dtype)
        opt = npvae.Adam(model.parameters())
        if backend == "numba":
            with Trainer(model, opt) as trainer:
                trainer.step(x)
                trainer.sync()
                trainer.step(x)                             # taken back: a new copy beside the old
        else:
            for _ in range(2):
                model.zero_grad()
                model.loss(x)
                model.backward()
                opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    need = footprint.training_bytes(784, 2000, 20, 16, dtype, backend=backend)
    assert peak <= need, (peak, need)


def test_memory_estimates():
    model = npvae.VAE(784, (64, 32), 5, rng=0)
    assert footprint.parameter_count(784, (64, 32), 5) == sum(p.data.size for p in model.parameters())
    small = footprint.training_bytes(784, 400, 20, 128)
    assert footprint.training_bytes(784, 400, 20, 128, np.float64) == 2 * small     # twice the bytes a number
    assert 5e6 < small < 1e8                                # tens of MB for the tutorial model
    assert footprint.training_bytes(784, 400, 10 ** 8, 128) > 1e12
    assert footprint.training_bytes(784, 10 ** 40, 20, 128) > 1e40          # no overflow
    # every value a batch row sends through the model has a gradient as large: per row, at least
    # twice every layer's outputs and inputs, in float32
    per_row = (footprint.training_bytes(784, 400, 20, 256) - small) / 128
    assert per_row >= 2 * 4 * ((784 + 400 + 40) + (20 + 400 + 784))
    for args in [(784, 400, 20, 128), (784, (512, 256), 10, 1)]:    # no back end: the larger, the fast path's
        assert footprint.training_bytes(*args) == footprint.training_bytes(*args, backend="numba") \
            > footprint.training_bytes(*args, backend="numpy")
    with pytest.raises(InputError, match="backend must be 'numba', 'numpy' or None"):
        footprint.training_bytes(784, 400, 20, 128, backend="torch")
    have = footprint.available_bytes()
    assert have is None or have > 0
    assert footprint.format_bytes(2.5e12) == "2.5 TB" and footprint.format_bytes(512) == "512 B"
    assert [footprint.format_bytes(n) for n in (999, 1000, 2.5e15, 3.3e26)] == ["999 B", "1.0 kB", "2.5 PB",
                                                                              "3.3e+26 bytes"]
    assert [footprint.format_bytes(n) for n in (999.6, 999_960, 999_949, 999.96e15)] == ["1.0 kB", "1.0 MB",
                                                                                      "999.9 kB", "1.0e+18 bytes"]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_train_mnist_counts_the_memory_of_its_back_end(monkeypatch, backend):
    """With memory enough for the reference but not for the fast path's copies, the default
    back end is refused, naming --backend numpy; the reference is not."""
    from cli_util import load_script
    script = load_script()
    need = {b: footprint.training_bytes(784, 20_000, 20, 128, backend=b) for b in ("numba", "numpy")}
    monkeypatch.setattr(footprint, "available_bytes", lambda: (need["numba"] + need["numpy"]) // 2)
    settings = dict(batch_size=128, hidden_dim=20_000, latent_dim=20, backend=backend)
    if backend == "numpy":
        script.check_memory(settings, 60_000)
        return
    with pytest.raises(InputError, match=r"784-20000-20 VAE trained on batches of 128 needs about .*, or "
                                         r"--backend numpy \(slower: it needs about"):
        script.check_memory(settings, 60_000)


def test_a_memory_size_the_system_does_not_know_is_no_bound(monkeypatch):
    """sysconf answers -1, without raising, for what it cannot tell: that is not -4096 bytes of
    memory (which would refuse every model), but no bound from it."""
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: -1 if name == "SC_PHYS_PAGES" else real(name))
    have = footprint.available_bytes()
    assert have is None or have > 0
    npvae.VAE(784, 400, 20, rng=0)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux: VmHWM")
def test_peak_memory_is_the_programs_own_not_that_of_what_started_it():
    import subprocess
    import sys
    ballast = np.ones(300 * 2**20 // 8)            # this process: 300 MB more than the program it starts
    code = "from npvae import footprint; print(footprint.peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 1e6 < int(out) < 150 * 2**20, out       # a Python with NumPy: tens of MB
    assert footprint.peak_rss_bytes() > ballast.nbytes

# -- data -------------------------------------------------------------------------------
def test_fingerprint_tells_data_apart():
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert fingerprint(x) == fingerprint(x.copy()) == fingerprint(np.asfortranarray(x))
    y = x.copy()
    y[2, 3] ^= 1
    assert fingerprint(y) != fingerprint(x)
    assert fingerprint(x.reshape(4, 3)) != fingerprint(x) != fingerprint(x.astype(np.float32))
    with pytest.raises(InputTypeError):
        fingerprint([1, 2])


def test_data_arguments_are_checked(tmp_path):
    with pytest.raises(InputTypeError, match="data_dir must be a folder path"):
        load_split("mnist", data_dir=123)
    with pytest.raises(InputTypeError, match="split must be 'train', 't10k' or 'test'"):
        load_split("mnist", split=["t10k"], data_dir=SAMPLE)
    with pytest.raises(InputTypeError, match="split must be 'train', 't10k' or 'test'.*NoneType"):
        load_split("mnist", split=None, data_dir=SAMPLE)    # before looking for (or downloading) all four files
    with pytest.raises(InputTypeError, match="download must be True or False"):
        load_split("mnist", data_dir=SAMPLE, download="no")
    with pytest.raises(InputError, match="data_dir must name a folder"):
        search_path("mnist", "")


def test_named_data_sets_must_hold_28x28_images_and_labels_0_to_9(tmp_path):
    images, labels = load_idx_split(SAMPLE, "t10k")
    sample_copy(tmp_path / "narrow", images=images.reshape(-1, 28, 28)[:, :, :27])
    with pytest.raises(DataFileError, match="28x27 pixels, but mnist images are 28x28"):
        load_split("mnist", data_dir=tmp_path / "narrow")
    bad = labels.copy()
    bad[7] = 10
    sample_copy(tmp_path / "labels", labels=bad)
    with pytest.raises(DataFileError, match="label 10 at index 7"):
        load_split("mnist", data_dir=tmp_path / "labels")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path / "labels")
    e = info.value
    assert e.dataset == "mnist" and e.data_dir == str(tmp_path / "labels") and len(e.places) == 2
    assert "train-images-idx3-ubyte" in e.files and e.download_error is None


# -- argument checks that used to reach NumPy --------------------------------------------
def test_negative_seed_is_an_npvae_error():
    with pytest.raises(InputError, match="rng must be .* non-negative int seed"):
        npvae.VAE(4, 3, 2, rng=-1)
    with pytest.raises(InputError, match="rng"):
        npvae.fit(npvae.VAE(4, 3, 2, rng=0), np.zeros((4, 4), np.uint8), epochs=1, rng=-1, progress=False)


def test_non_finite_optimizer_state_is_refused_by_name(tmp_path):
    images, _ = load_idx_split(SAMPLE, "t10k")
    path = tmp_path / "c.npz"
    npvae.fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, batch_size=32, rng=0, progress=False,
              checkpoint=path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["optimizer/v.1"] = arrays["optimizer/v.1"].copy()
    arrays["optimizer/v.1"][0] = np.inf
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"optimizer state v\.1 contains NaN or inf \(Adam's state, of "
                                              r"parameter encoder\.0\.bias\)"):
        load_checkpoint(path)


def test_writing_a_file_leaves_the_umask_alone_for_other_threads(tmp_path):
    """The umask is the whole process's: set to be read, even for an instant, it is the mode of a
    file another thread makes meanwhile (0666, writable by all, with the umask set to 0)."""
    (tmp_path / "other").mkdir()
    stop, modes = threading.Event(), set()

    def make_files():
        while not stop.is_set():
            path = tmp_path / "other" / "f"
            path.touch()
            modes.add(os.stat(path).st_mode & 0o777)
            path.unlink()
    old = os.umask(0o022)
    thread = threading.Thread(target=make_files)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with atomic_write(tmp_path / "new.txt", "w") as f:    # a new file: its mode comes from the umask
                f.write("x")
            os.remove(tmp_path / "new.txt")
    finally:
        stop.set()
        thread.join()
        os.umask(old)
    assert modes == {0o644}
