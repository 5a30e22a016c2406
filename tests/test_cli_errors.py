"""Bad input to examples/train_mnist.py: one line naming what is wrong, exit status 2, nothing written.

Most cases call the script's main() in this process through npvae.cli.run (the
same boundary `python examples/train_mnist.py` goes through, but without a Python
start each: fast); a sample of them, and the ones only a real process shows,
run as subprocesses.
"""
import os
import shutil
import warnings

import numpy as np
import pytest
from cli_util import FIGURED, SAMPLE, SMALL, TRAIN, assert_no_traceback, load_script, run, sample_copy

from npvae import VAE, cli
from npvae.checkpoint import save_checkpoint
from npvae.data import load_idx_split
from npvae.optim import SGD, Adam
from npvae.train import fit

BAD_ARGUMENTS = [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
    (["--epochs", "1e3"], "argument --epochs: expected a whole number, got '1e3'"),
    (["--epochs", ""], "argument --epochs: expected a whole number, got ''"),
    (["--epochs", "9" * 5000], "argument --epochs: expected a whole number"),     # past int()'s digit limit
    (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
    (["--lr", "inf"], "argument --lr: must be a finite number"),
    (["--lr=-inf"], "argument --lr: must be a finite number"),
    (["--lr", "0"], "argument --lr: must be greater than 0, got 0"),
    (["--lr=-1e-3"], "argument --lr: must be greater than 0"),
    (["--lr", "-1e-3"], "argument --lr: expected one argument (give it one; a value starting with '-' is written --lr=VALUE)"),
    (["--lr", "1e-400"], "1e-400 rounds to 0.0"),
    (["--lr", "1e-300"], "argument --lr: 1e-300 is 0 in float32, the model's dtype"),
    (["--lr", "1e39"], "argument --lr: 1e39 overflows float32, the model's dtype (largest 3.4e+38)"),
    (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["--beta", "-1"], "argument --beta: must be at least 0"),
    (["--beta", "nan"], "argument --beta: must be a finite number"),
    (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["--warmup", "-1"], "argument --warmup: must be at least 0"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["--hidden-dim", "0"], "argument --hidden-dim: must be at least 1"),
    (["--latent-dim", "-5"], "argument --latent-dim: must be at least 1"),
    (["--nll-k", "0"], "argument --nll-k: must be at least 1, got 0"),
    (["--nll-images", "-1"], "argument --nll-images: must be at least 1, got -1"),
    (["--split", "0"], "argument --split: must be at least 1"),
    (["--split", "999"], "--split 999 leaves 1 of the 1,000 images held out; the evaluation and figures need "
                         "at least 10: use --split 990 or less"),
    (["--split", "5000"], "--split 5000 leaves 0 of the 1,000 images held out"),
    (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--dataset", "fashion-mnist", "--split", "5"], "--split applies to --dataset mnist-test-split only"),
    (["--latent-dim", "100000000"], "a 784-32-100000000 VAE trained on batches of 64 needs about"),
    (["--hidden-dim", "10" + "0" * 30], "choose a smaller --hidden-dim, --latent-dim or --batch-size"),
    (["--out", ""], "--out must name a folder, got ''"),
    (["--data-dir", ""], "--data-dir must name a folder, got ''"),
    (["--resume", "missing.npz"], "--resume missing.npz: no such file or folder"),
]


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture
def user(tmp_path, monkeypatch, capsys, script):
    """Call the CLI in this process from an empty folder; ``user(args)`` -> (exit status, stderr)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("NPVAE_DATA_DIR", "/nonexistent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def call(args):
        code = cli.run(script.main, [*args, "--out", str(work / "out")] if "--out" not in args else args)
        return code, capsys.readouterr().err
    call.work, call.main = work, script.main
    return call


def assert_refused(code, err, words, work, one_line=True):
    assert code == cli.EXIT_USAGE, err
    assert err.startswith("error: ") and words in err, err
    if one_line:
        assert len(err.strip().splitlines()) == 1, err
    assert_no_traceback(err)
    assert os.listdir(work) == []                  # nothing written: no run folder, no runs/
    assert not os.path.exists(os.path.join(os.path.dirname(work), "cache"))     # no empty cache folder


@pytest.mark.parametrize("args, words", BAD_ARGUMENTS, ids=[" ".join(a)[:40] for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_before_anything_is_written(user, args, words):
    assert_refused(*user([*SMALL, *args]), words, user.work)


# -- the output folder ------------------------------------------------------------------
def test_out_that_is_a_file_or_below_one_or_a_dangling_link(user, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for out, words in ((afile, "is a file, not a folder"),
                       (afile / "run", f"cannot be created: {afile} is a file"),
                       (tmp_path / "dangling", "is a symbolic link to nothing"),
                       (tmp_path / ("x" * 300), "File name too long"),
                       ("/dev/null", "is a file, not a folder")):
        assert_refused(*user([*SMALL, "--out", str(out)]), words, user.work)
    assert afile.read_text() == "x"


# -- data files -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    images, labels = load_idx_split(SAMPLE, "t10k")
    return images.reshape(-1, 28, 28), labels


def bad_data(folder, sample, case):
    images, labels = sample
    if case == "27x28 images":
        return sample_copy(folder, images=images[:, :27, :])
    if case == "label 12":
        bad = labels.copy()
        bad[5] = 12
        return sample_copy(folder, labels=bad)
    if case == "fewer labels than images":
        return sample_copy(folder, labels=labels[:900])
    if case == "truncated gzip":
        path = sample_copy(folder)
        images_file = os.path.join(path, "t10k-images-idx3-ubyte.gz")
        with open(images_file, "rb") as f:
            data = f.read()
        with open(images_file, "wb") as f:
            f.write(data[:len(data) // 2])
        return path
    if case == "10 images":
        return sample_copy(folder, images=images[:10], labels=labels[:10])
    if case == "no files":
        os.makedirs(folder)
        return str(folder)
    if case == "unreadable images":
        return unreadable(sample_copy(folder), "t10k-images-idx3-ubyte.gz")
    raise AssertionError(case)


# A file whose read fails, even for root (where a file without read permission would not):
# /proc/self/mem cannot be read at offset 0 (an I/O error).
needs_proc_mem = pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc/self/mem")


def unreadable(folder, name):
    """``folder`` with its file ``name`` replaced by one that cannot be read."""
    os.remove(os.path.join(folder, name))
    os.symlink("/proc/self/mem", os.path.join(folder, name))
    return folder


@pytest.mark.parametrize("case, words, one_line", [
    ("27x28 images", "holds images of 27x28 pixels, but mnist images are 28x28", True),
    ("label 12", "t10k-labels-idx1-ubyte.gz: label 12 at index 5, but mnist labels are 0..9", True),
    ("fewer labels than images", "holds 1000 images but", True),
    ("truncated gzip", "gzip stream ends early (file truncated?)", True),
    ("no files", "cannot find the mnist files t10k-images-idx3-ubyte[.gz]", False),
    ("10 images", "holds 10 images; the split needs at least 11: one to train on and 10 held out", True),
    pytest.param("unreadable images", "t10k-images-idx3-ubyte.gz cannot be read: Input/output error", True,
                 marks=needs_proc_mem),
])
def test_bad_data_files_are_refused_by_name(user, tmp_path, sample, case, words, one_line):
    folder = bad_data(tmp_path / "data", sample, case)
    code, err = user([*SMALL, "--data-dir", folder])
    assert_refused(code, err, words, user.work, one_line)


# -- checkpoints ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, sample):
    """A checkpoint written by fit, and broken variants of it."""
    folder = tmp_path_factory.mktemp("ckpt")
    images = sample[0].reshape(len(sample[0]), -1)[:64]
    good = folder / "good.npz"
    fit(VAE(784, 8, 2, rng=0), images, epochs=1, batch_size=32, rng=0, progress=False, checkpoint=good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    out = {"good": good}
    for name, key in (("nan-moment", "optimizer/m.2"), ("nan-weight", "model/decoder.0.weight")):
        broken = dict(arrays)
        broken[key] = broken[key].copy()
        broken[key].flat[3] = np.nan
        out[name] = folder / f"{name}.npz"
        np.savez(out[name], **broken)
    out["model-only"] = folder / "model-only.npz"
    save_checkpoint(out["model-only"], VAE(784, 8, 2, rng=0))
    out["two-hidden"] = folder / "two-hidden.npz"
    fit(VAE(784, (8, 4), 2, rng=0), images, epochs=1, batch_size=32, rng=0, progress=False,
        checkpoint=out["two-hidden"])
    out["other-input"] = folder / "other-input.npz"
    fit(VAE(100, 8, 2, rng=0), images[:, :100], epochs=1, batch_size=32, rng=0, progress=False,
        checkpoint=out["other-input"])
    sgd_model = VAE(784, 8, 2, rng=0)
    out["sgd"] = folder / "sgd.npz"
    fit(sgd_model, images, epochs=1, batch_size=32, rng=0, progress=False, optimizer=SGD(sgd_model.parameters()),
        checkpoint=out["sgd"])
    out["no-streams"] = folder / "no-streams.npz"     # a fit_config, but not fit's generators
    plain = VAE(784, 8, 2, rng=0)
    save_checkpoint(out["no-streams"], plain, Adam(plain.parameters()), fit_config=dict(epochs=1, batch_size=32))
    out["garbage"] = folder / "garbage.npz"
    out["garbage"].write_bytes(os.urandom(2000))
    out["folder"] = folder / "empty-run"
    out["folder"].mkdir()
    out["unreadable"] = folder / "unreadable.npz"
    out["unreadable"].write_bytes(b"")
    unreadable(str(folder), "unreadable.npz")
    return out


@pytest.mark.parametrize("name, words", [
    ("nan-moment", "optimizer state m.2 contains NaN or inf (Adam's state, of parameter encoder.2.weight)"),
    ("nan-weight", "parameter decoder.0.weight contains NaN or inf"),
    ("model-only", "was not written by training (fit), so it cannot be resumed"),
    ("two-hidden", "holds a 784-8-4-2 model; this program trains 784-H-d models"),
    ("other-input", "holds a 100-8-2 model; this program trains 784-H-d models"),
    ("sgd", "was trained with SGD optimizer; this program continues runs trained with Adam"),
    ("no-streams", "was not written by training (fit), so it cannot be resumed"),
    ("garbage", "not an npvae checkpoint"),
    ("folder", "is a folder without a checkpoint.npz"),
    pytest.param("unreadable", "unreadable.npz: cannot be read: Input/output error", marks=needs_proc_mem),
])
def test_bad_checkpoints_are_refused_by_name(user, checkpoints, name, words):
    before = sorted(os.listdir(os.path.dirname(checkpoints[name])))
    assert_refused(*user([*SMALL, "--resume", str(checkpoints[name])]), words, user.work)
    assert sorted(os.listdir(os.path.dirname(checkpoints[name]))) == before


# -- as a user would: real processes ----------------------------------------------------
def test_bad_input_in_real_processes(tmp_path):
    """A sample of the above, each in its own Python, started together: status 2, one line, nothing written."""
    import subprocess
    import sys

    from cli_util import ENV
    cases = [["--lr", "nan"], ["--seed", "-1"], ["--epochs", "0"], ["--latent-dim", "100000000"],
             ["--split", "999"], ["--nll-k", "0"], ["--out", "/dev/null"], ["--resume", "missing.npz"]]
    procs = [subprocess.Popen([sys.executable, TRAIN, *SMALL, *case], cwd=tmp_path, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for case in cases]
    for case, proc in zip(cases, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (case, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (case, err)
        assert_no_traceback(err)
    assert os.listdir(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path):
    proc = run([TRAIN, *SMALL, "--split", "999", "--debug"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().endswith("use --split 990 or less")


def test_help_documents_defaults_resuming_and_exit_status():
    proc = run([TRAIN, "--help"])
    assert proc.returncode == 0
    text = proc.stdout
    assert "(default: None)" not in text and "(default: 20)" in text and "(default: 0.001)" in text
    assert "Resuming" in text and "--epochs N" in text and "A refused resume changes nothing" in text
    assert "exit status:" in text and all(f"\n  {code} " in text for code in (0, 1, 2, 130))
    assert "143: stopped by SIGTERM" in text and "\n  129  stopped by SIGHUP" in text
    assert "The model is float32 (a float64 one trains in Python: npvae.fit)." in " ".join(text.split())


def test_data_dir_that_is_a_file_is_named(user, tmp_path):
    afile = tmp_path / "data.gz"
    afile.write_bytes(b"\x1f\x8b")
    code, err = user([*SMALL, "--data-dir", str(afile)])
    assert_refused(code, err, f"{afile} (--data-dir): not a folder", user.work, one_line=False)


def test_odd_but_valid_input_trains(tmp_path, user, capsys):
    """Numbers at the edges that are still meaningful: a batch larger than the data set, a small lr,
    more NLL images than there are (with --binarize, the figures are likelihoods: no grey-level note).
    In this process (the fast path's kernels loaded once), as the user fixture calls it."""
    shutil.copytree(SAMPLE, tmp_path / "data")
    code = cli.run(user.main, [*FIGURED, "--epochs", "1", "--batch-size", "9" * 30, "--lr", "1e-6", "--nll-images",
                               "9" * 30, "--binarize", "--data-dir", str(tmp_path / "data"), "--out",
                               str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "IW NLL (k=2, 200 images)" in out and "grey-level" not in out
    assert "is more than the 800 training images: each epoch is one step over all of them" in err


def test_a_warning_the_user_made_an_error_is_not_called_a_bug(user, tmp_path):
    """``python -W error`` (or PYTHONWARNINGS=error) turns npvae's warnings into exceptions: the
    user asked for that, so the message says so, with the warning's own words."""
    shutil.copytree(SAMPLE, tmp_path / "cache" / "npvae" / "mnist")    # found in the cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, err = user(["--dataset", "mnist-test-split", "--split", "800", "--epochs", "1"])
    assert code == 1 and "$NPVAE_DATA_DIR=/nonexistent: folder does not exist" in err
    assert "a warning, raised as an error by python -W error or PYTHONWARNINGS" in err
    assert "bug" not in err and "--debug" not in err


def name_bytes(path):
    """The bytes a shell passes for ``path``: UTF-8 where the file-system encoding cannot say it
    (PYTHONUTF8=0 LC_ALL=C), as npvae.cli.shell_command writes them."""
    try:
        return os.fsencode(str(path))
    except UnicodeEncodeError:
        return str(path).encode("utf-8", "surrogateescape")


def test_a_deleted_current_folder_is_named_not_a_bare_no_such_file(tmp_path):
    """The default --out is relative: with the current folder gone, say so (bad input: 2)."""
    import subprocess
    import sys

    from cli_util import ENV
    gone = tmp_path / "gone"
    gone.mkdir()
    command = f'cd "{gone}" && rmdir "{gone}" && exec "$0" "$@"'
    proc = subprocess.run(["bash", "-c", command, sys.executable, TRAIN, *SMALL, "--epochs", "1"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the current folder no longer exists (deleted or moved?)")
    assert_no_traceback(proc.stderr)
    gone.mkdir()                            # every path in full: what is wrong is the data, as elsewhere
    args = ["--dataset", "mnist", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(["bash", "-c", command, sys.executable, TRAIN, *args], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert proc.returncode == 2 and "Looked in, in this order:" in proc.stderr, proc.stderr
    assert "current folder" not in proc.stderr


@pytest.fixture
def in_a_deleted_folder(tmp_path, monkeypatch):
    """This process's current folder, deleted (as by another shell's rm -r)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    here.rmdir()


def test_a_data_set_not_found_through_a_relative_folder_in_a_deleted_one_says_why(in_a_deleted_folder, capsys):
    """$NPVAE_DATA_DIR=rel, started in a folder since deleted: the places searched, and the reason."""
    from npvae.errors import DatasetNotFoundError

    def main(argv):
        raise DatasetNotFoundError("cannot find the mnist files", dataset="mnist",
                                   places=[("rel/mnist", "$NPVAE_DATA_DIR/mnist"), ("rel", "$NPVAE_DATA_DIR")])
    assert cli.run(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot find the mnist files")
    assert "The current folder no longer exists (deleted or moved?), so relative paths name nothing" in err


def test_a_current_folder_deleted_while_running_is_a_failure_while_running(tmp_path, monkeypatch):
    """Files may have been written by then: status 1, with what the system said."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)

    def main(argv):
        here.rmdir()
        open("metrics.jsonl", "w").close()
    assert cli.run(main, []) == 1


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_the_resume_command_printed_pastes_back_for_any_folder_name(tmp_path, encoding):
    """A name the terminal cannot show is printed in bash's $'...' form, its bytes escaped: the
    escapes a stream would make up (\\udcff, \\xfc) would name another file."""
    import io
    import subprocess
    names = ["plain", "with space", "v \u00fc", "bad\udcffbyte", "new\nline", "quote's \\ $x"]
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    for name in names:
        command = cli.shell_command(["printf", "%s", str(tmp_path / name)], stream)
        command.encode(encoding)                               # shown as it is
        assert "\n" not in command
        out = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30).stdout
        assert out == name_bytes(tmp_path / name), (name, command)
    assert cli.shell_command(["python", "a b"], stream) == "python 'a b'"    # shlex's quoting otherwise


def test_on_windows_the_resume_command_is_quoted_for_cmd_exe(monkeypatch):
    """Bash's single quotes would be part of the names there; Windows programs split their command
    line by its own rules (double quotes, a quote escaped, backslashes before one doubled)."""
    import os
    monkeypatch.setattr(os, "name", "nt")
    words = [r"C:\Python312\python.exe", r"examples\train_mnist.py", "--resume", r"D:\my runs\checkpoint.npz"]
    assert cli.shell_command(words) == (r'C:\Python312\python.exe examples\train_mnist.py --resume '
                                        r'"D:\my runs\checkpoint.npz"')
    assert cli.shell_command(["a b\\", 'say "hi"', ""]) == r'"a b\\" "say \"hi\"" ""'
    assert cli.shell_command([r"C:\runs&co\c.npz", r"C:\x^y"]) == r'"C:\runs&co\c.npz" "C:\x^y"'   # cmd's own


def test_the_resume_command_can_be_shown_in_an_ascii_locale():
    """PYTHONUTF8=0 LC_ALL=C: names are bytes in an ASCII file-system encoding."""
    import subprocess
    import sys

    from cli_util import ENV
    code = "from npvae.cli import shell_command\nprint(shell_command(['\\u00fc', 'x\\udcff', b'b y']))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**ENV, "PYTHONUTF8": "0", "LC_ALL": "C"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "$'\\xc3\\xbc' $'x\\xff' 'b y'\n"


def test_a_data_folder_this_locale_cannot_spell_is_a_search_report_not_a_bug(tmp_path):
    """A run recorded in a UTF-8 locale, resumed with PYTHONUTF8=0 LC_ALL=C (cron): its data
    folder's name cannot be given to the system; the places searched say so."""
    import subprocess
    import sys

    from cli_util import ENV
    code = ("from npvae.data import load_split\n"
            "try:\n    load_split('mnist', 't10k', data_dir='/nonexistent/\\u00e9', download=False)\n"
            "except Exception as e:\n    print(type(e).__name__, ascii(str(e)))\n")
    env = {**ENV, "PYTHONUTF8": "0", "LC_ALL": "C"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.startswith("DatasetNotFoundError"), proc.stdout + proc.stderr
    assert "cannot be spelled in this locale's encoding of file names (ascii)" in proc.stdout


def test_in_a_deleted_current_folder_only_relative_paths_are_blamed_on_it(tmp_path, in_a_deleted_folder, capsys):

    def absolute(argv):
        open(tmp_path / "missing" / "x")

    def relative(argv):
        open("x")
    assert cli.run(absolute, []) == 1
    assert "current folder" not in capsys.readouterr().err
    assert cli.run(relative, []) == 2
    assert "the current folder no longer exists" in capsys.readouterr().err


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_control_characters_and_backslashes_paste_back(tmp_path, encoding):
    import io
    import subprocess
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    for name in ["del\x7fchar", "back\\nslash\n", "tab\tbad", "v\\\u00fc\n"]:
        command = cli.shell_command(["printf", "%s", str(tmp_path / name)], stream)
        assert command.isprintable(), command
        out = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30).stdout
        assert out == name_bytes(tmp_path / name), (name, command)


def test_a_stream_that_shows_any_letter_gets_it_as_it_is():
    import io
    assert cli.shell_command(["python", "v \u00fc"], io.StringIO()) == "python 'v \u00fc'"


def test_whole_number_takes_both_of_its_bounds():
    import argparse
    parse = cli.whole_number(1, 10)
    assert parse("1") == 1 and parse("10") == 10
    with pytest.raises(argparse.ArgumentTypeError, match="must be at most 10, got 11"):
        parse("11")


def test_the_status_a_program_returns_is_its_exit_status():
    """latent_bubbles.py refuses a --train it cannot take by returning 2 from main."""
    assert cli.run(lambda argv: 3, []) == 3
    proc = run([os.path.join(os.path.dirname(TRAIN), "latent_bubbles.py"), "--train", "1000000"])
    assert proc.returncode == 2 and "--train must be between" in proc.stderr, proc.stderr
