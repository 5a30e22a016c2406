"""The example scripts, run end to end as subprocesses on the shipped MNIST sample; what they print,
in this process with their costly part (training, the benchmark's runner processes) faked."""
import builtins
import contextlib
import json
import os
import re
import runpy
import shlex
import signal
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
from cli_util import (ENV, FIGURED, QUICKSTART, REFERENCE, ROOT, SAMPLE, SMALL, TRAIN, assert_no_traceback,
                      load_script, open_without_proc_and_sys, run, start, write_idx_gz)

from npvae import cli, evaluate_elbo, iw_nll
from npvae.checkpoint import load_checkpoint, load_model
from npvae.data import load_idx_split, locate
from npvae.errors import DatasetNotFoundError

FIGURES = ("reconstruction_before.png", "reconstruction_after.png", "samples.png", "interpolation.png",
           "loss.png", "latent.png")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    proc = run([TRAIN, *FIGURED, "--epochs", "1", "--latent-dim", "2", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_mnist_writes_everything(run_dir):
    out, proc = run_dir
    for name in FIGURES:
        w, h = png_size(out / name)
        assert w >= 400 and h >= 150, (name, w, h)
    assert png_size(out / "latent.png")[0] > png_size(out / "samples.png")[0]   # scatter + manifold
    records = lines(out / "metrics.jsonl")
    assert len(records) == 2
    assert {"epoch", "train_loss", "test_loss", "test_recon", "test_kl", "train_seconds"} <= set(records[0])
    summary = records[-1]
    assert summary["summary"] and summary["nll_k"] == 2 and summary["nll_images"] == 200
    assert 0 < summary["iw_nll"] < 1000
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.epoch == 1 and ckpt.model_config["latent_dim"] == 2
    assert json.loads((out / "run.json").read_text())["split"] == 800
    assert "800 training images, 200 test images" in proc.stderr
    assert "k=2" in proc.stderr and "200 test images" in proc.stderr
    assert "IW NLL (k=2, 200 images)" in proc.stdout
    assert summary["nll_images_neg_elbo"] is None and "negative ELBO of those" not in proc.stdout   # all: the line above
    assert "grey-level pixels: compare these only between runs on the same data; they are not log-likelihoods" \
        in proc.stdout
    assert "epoch 1/1" in proc.stderr and "\r" not in proc.stderr   # one line per epoch (not a terminal)
    assert not [f for f in os.listdir(out) if f.startswith(".")]   # no lock or temporary file left


def test_no_figures_writes_the_numbers_only_and_loads_no_matplotlib(tmp_path):
    """--no-figures: a run for its numbers (one of a sweep, say) spends no time on figures."""
    out = tmp_path / "run"
    proc = run(["-X", "importtime", TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20",
                "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.jsonl", "run.json"]
    assert lines(out / "metrics.jsonl")[-1]["summary"] and "drawing the figures" not in proc.stderr
    assert f"done: metrics and checkpoint (no figures) in {out}" in proc.stdout
    imported = re.findall(r"^import time: .*\|\s*([\w.]+)$", proc.stderr, re.M)     # as -X importtime lists them
    assert "numpy" in imported and not [m for m in imported if m.startswith("matplotlib")]


def test_a_resume_without_no_figures_draws_the_figures_a_run_with_them_draws(tmp_path, capsys):
    """Resuming a finished --no-figures run draws all six, the untrained model's reconstructions
    too (rebuilt from the seed): byte for byte what the same run with figures drew."""
    main, args = load_script().main, [*REFERENCE, "--epochs", "1", "--nll-images", "20"]
    assert cli.run(main, [*FIGURED, *args, "--out", str(tmp_path / "drawn")]) == 0
    assert cli.run(main, [*SMALL, *args, "--out", str(tmp_path / "later")]) == 0
    assert not [f for f in os.listdir(tmp_path / "later") if f.endswith(".png")]
    capsys.readouterr()
    assert cli.run(main, ["--resume", str(tmp_path / "later")]) == 0
    assert "has done its 1 epoch: drawing its figures and estimating its NLL (ask" in capsys.readouterr().err
    for name in FIGURES:
        assert (tmp_path / "later" / name).read_bytes() == (tmp_path / "drawn" / name).read_bytes(), name


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    """One run with --seed 3 --beta 0.5 --warmup 4, read by the three tests below (a run each
    would triple their time): the warm-up never reaches --beta in its one epoch."""
    out = tmp_path_factory.mktemp("weighted") / "out"
    proc = run([TRAIN, *SMALL, "--epochs", "1", "--seed", "3", "--beta", "0.5", "--warmup", "4", "--nll-images", "50",
                "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_the_summary_test_loss_is_the_epochs_test_loss_with_its_beta(weighted_run):
    """With --beta 0.5 the closing test_loss is recon + 0.5 KL, as every epoch's is (the last
    epoch's, same model and noise), warm-up or not; the negative ELBO (beta 1) is given apart, by name."""
    out, proc = weighted_run
    last, summary = lines(out / "metrics.jsonl")
    assert summary["test_loss"] == pytest.approx(last["test_loss"], rel=1e-12)
    assert summary["test_loss"] == pytest.approx(summary["test_recon"] + 0.5 * summary["test_kl"], rel=1e-12)
    assert summary["test_neg_elbo"] == pytest.approx(summary["test_recon"] + summary["test_kl"], rel=1e-12)
    assert f"test loss (recon + 0.5 KL) {summary['test_loss']:.2f} nats" in proc.stdout
    assert f"negative ELBO {summary['test_neg_elbo']:.2f}" in proc.stdout
    assert "IW NLL (k=2, the first 50 of 200 images)" in proc.stdout     # not the images of the test loss
    held_out = load_idx_split(SAMPLE, "t10k")[0][800:850]                  # --split 800's, the first 50
    part = evaluate_elbo(load_model(out), held_out)
    assert summary["nll_images_neg_elbo"] == pytest.approx(part.recon + part.kl, rel=1e-12)   # theirs, beside it
    assert f"  negative ELBO of those 50 images {part.recon + part.kl:.2f} nats" in proc.stdout
    assert "k=2 samples on the first 50 of 200 test images" in proc.stderr


def test_the_seed_is_what_its_help_says_it_is_in_python(weighted_run):
    """--seed N: VAE(rng=) and fit(rng=) from np.random.SeedSequence(N).spawn(2), so a user can
    make the same run in Python."""
    import npvae
    from npvae.data import load_split, split
    out, _ = weighted_run
    model_seed, data_seed = np.random.SeedSequence(3).spawn(2)
    (train, _), (test, _) = split(*load_split("mnist", "t10k", data_dir=SAMPLE), 800)
    model = npvae.VAE(784, 32, 20, rng=np.random.default_rng(model_seed))
    with pytest.warns(UserWarning, match="warmup=4 epochs is longer"):
        history = npvae.fit(model, train, test, epochs=1, batch_size=64, beta=0.5, warmup=4,
                            rng=np.random.default_rng(data_seed), progress=False)
    epoch = lines(out / "metrics.jsonl")[0]
    assert epoch["train_loss"] == pytest.approx(history["train_loss"][0], rel=1e-9)   # another seed: 1e-3 off
    assert epoch["test_loss"] == pytest.approx(history["test_loss"][0], rel=1e-9)


def test_a_warmup_longer_than_the_run_gets_a_note_in_the_flags_words(weighted_run):
    _, proc = weighted_run
    assert "note: --warmup 4 is longer than --epochs 1: the KL weight ends at 0.125, not --beta 0.5" in proc.stderr
    assert "UserWarning" not in proc.stderr                 # not Python's form of the same warning


def test_resume_continues_in_the_same_folder(run_dir):
    out, _ = run_dir
    proc = run([TRAIN, "--resume", str(out / "checkpoint.npz"), "--epochs", "2"])
    assert proc.returncode == 0, proc.stderr
    records = lines(out / "metrics.jsonl")
    assert [r.get("epoch") for r in records[:-1]] == [1, 2] and records[-1]["summary"]
    assert load_checkpoint(out / "checkpoint.npz").epoch == 2
    assert f"writing to {out}" in proc.stderr


def test_interrupted_run_prints_the_resume_command(tmp_path):
    out = tmp_path / "out"
    args = [TRAIN, *FIGURED, "--batch-size", "16", "--latent-dim", "3", "--epochs", "40", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=ROOT)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("epoch 1/40"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(seen) + err
    command = shlex.split(err.strip().splitlines()[-1])
    assert [os.path.normpath(command[0]), *command[1:]] == [os.path.normpath(sys.executable), TRAIN, "--resume",
                                                           str(out / "checkpoint.npz")]   # (pytest run as ../venv/...)
    ckpt = load_checkpoint(out / "checkpoint.npz")
    # bit for bit what a run that was never stopped gives (started now, to run beside the resume)
    straight = start([*args[:-2], "--epochs", str(ckpt.epoch + 1), "--nll-images", "20", "--out", str(tmp_path / "s")])
    try:
        finish = run(command[1:] + ["--epochs", str(ckpt.epoch + 1)])
        _, straight_err = straight.communicate(timeout=300)
    finally:
        straight.kill()
    assert finish.returncode == 0, finish.stderr
    resumed = load_checkpoint(out / "checkpoint.npz")
    assert resumed.epoch == ckpt.epoch + 1
    for name in FIGURES:
        png_size(out / name)
    assert straight.returncode == 0, straight_err
    reference = load_checkpoint(tmp_path / "s" / "checkpoint.npz")
    for name, value in reference.model_state.items():
        assert np.array_equal(resumed.model_state[name], value), name
    for name, value in reference.optimizer_state.items():
        assert np.array_equal(resumed.optimizer_state[name], value), name


def test_quickstart_writes_under_runs(tmp_path):
    """The data folder given either way, the two runs side by side, each in a folder of its own."""
    forms = {"DATA_DIR": [QUICKSTART, SAMPLE], "--data-dir": [QUICKSTART, "--data-dir", SAMPLE]}
    procs = {}
    for how, args in forms.items():
        os.mkdir(tmp_path / how)
        procs[how] = start(args, cwd=tmp_path / how)
    for how, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, (how, err)
        assert "test loss" in out and "reconstructs the same: True" in out
        folder = tmp_path / how / "runs" / "quickstart"            # runs/ is in .gitignore
        assert sorted(os.listdir(tmp_path / how)) == ["runs"]
        png_size(folder / "quickstart_samples.png")
        assert load_checkpoint(folder / "quickstart.npz").model_config["latent_dim"] == 20
    with open(QUICKSTART) as f:
        assert len(f.read().splitlines()) < 60
    with open(os.path.join(ROOT, ".gitignore")) as f:
        assert "runs/" in f.read().split()


def test_quickstart_keeps_its_results_when_its_reader_has_gone(tmp_path, quickstart, capsys):
    out = tmp_path / "out"
    script = f"{shlex.join([sys.executable, QUICKSTART, SAMPLE, '--out', str(out)])} | head -c0; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0 and "error" not in proc.stderr, proc.stderr
    assert sorted(os.listdir(out)) == ["quickstart.npz", "quickstart_samples.png"]
    assert "replaces" not in proc.stderr
    # run again over what it left, in this process (the reader is there now; the training, a spy's)
    quickstart.main([SAMPLE, "--out", str(out)])
    assert f"note: this run replaces the earlier quickstart outputs in {out}" in capsys.readouterr().err


def test_quickstart_documents_its_arguments_and_fails_cleanly(tmp_path):
    help_text = run([QUICKSTART, "--help"]).stdout
    assert "DATA_DIR" in help_text and "--data-dir" in help_text and "--out" in help_text
    assert "(default: None)" not in help_text
    assert "A stopped run keeps only the files it had finished" in help_text and "checkpoint;" not in help_text
    proc = run([QUICKSTART, "--data-dir", str(tmp_path / "empty")], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot find the mnist files") and "--data-dir" in proc.stderr
    assert_no_traceback(proc.stderr)
    assert os.listdir(tmp_path) == []                       # no runs/ folder for a run that never started
    for args, words in (([""], "argument DATA_DIR: must name a folder, got ''"),        # "$UNSET"
                        ([str(tmp_path / "empty"), "--data-dir", str(tmp_path / "empty") + "/"],
                         "cannot find the mnist files")):   # one folder, written two ways: not "differ"
        proc = run([QUICKSTART, *args], cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.startswith("error: " + words), proc.stderr


def test_quickstart_refuses_an_output_it_cannot_replace_before_training(tmp_path):
    (tmp_path / "quickstart_samples.png").mkdir()
    proc = run([QUICKSTART, SAMPLE, "--out", str(tmp_path)])
    assert proc.returncode == 2 and "quickstart_samples.png there is a folder" in proc.stderr, proc.stderr
    assert "test loss" not in proc.stdout                   # found before training, not after
    assert os.listdir(tmp_path) == ["quickstart_samples.png"]


def test_bad_data_dir_fails_cleanly(tmp_path):
    proc = run([TRAIN, "--dataset", "mnist-test-split", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot find the mnist files"), proc.stderr
    assert "--data-dir was given" in proc.stderr and "point --data-dir at" in proc.stderr
    assert_no_traceback(proc.stderr)
    assert os.listdir(tmp_path) == []                       # "writing to" never happened: no run folder


BENCHMARK = os.path.join(ROOT, "examples", "benchmark.py")


def test_benchmark_first_step_part_reports_its_timings():
    """The benchmark's parts print one JSON line; the first-step part is quick enough to run here."""
    proc = run([BENCHMARK, "--part", "first_step"])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"import_s", "first_step_s", "from_start_s"}
    assert 0 < out["import_s"] < out["from_start_s"] and 0 < out["first_step_s"] < out["from_start_s"]
    assert out["import_s"] > 0.005          # a real import (numpy too), not npvae already loaded


def test_benchmark_runner_answers_the_main_process(tmp_path, monkeypatch):
    """The npvae runner: one JSON line per command, the timings the main process tabulates."""
    cmd = [sys.executable, BENCHMARK, "--part", "npvae", "--train-images", "300"]
    env = dict(os.environ, PYTHONPATH=ROOT, NPVAE_DATA_DIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path))
    monkeypatch.setenv("NPVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with contextlib.suppress(DatasetNotFoundError):     # a system-wide copy: the runner would time that
        pytest.skip(f"Fashion-MNIST is installed in {locate('fashion-mnist', download=False)}")
    proc = subprocess.run(cmd, input="train_round\neval_round\nfinish\n", capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ready, train, evals, finish = (json.loads(line) for line in proc.stdout.splitlines())
    assert ready == "ready" and finish["source"].startswith("synthetic")      # no data set anywhere it looks
    assert set(train) == {"floor", "numba", "numpy"} and all(v > 0 for v in train.values())
    assert set(evals) == {"numba", "numpy"} and all(v > 0 for v in evals.values())
    assert finish["n_train"] == 300 and finish["rss_mb"] > 0
    assert set(finish["train_loss"]) == {"numba", "numpy"}


def test_benchmark_keep_dead_units_times_the_fast_path_with_every_unit(tmp_path):
    """--keep-dead-units: the fast path trains with fit(retire_dead_units=False), and says so.
    --skip-first-step leaves out the fresh processes (and their cold compile). On 10 images of
    each split (tiny_fashion): the synthetic stand-in's 10,000 test images cost 14 evaluations
    (7 eval rounds, two paths) of 784-400-20, most of this test's time; that no data means
    synthetic images, said by the main process, is checked by
    test_a_benchmark_helper_that_fails_is_said_with_how_it_ended_and_its_error, which keeps them."""
    proc = run([BENCHMARK, "--epochs", "1", "--train-images", "300", "--skip-torch", "--keep-dead-units",
                "--skip-first-step", "--data-dir", tiny_fashion(str(tmp_path / "fashion"))], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "the fast path keeps its dead units" in proc.stdout
    assert "npvae fast, all units" in proc.stdout and "npvae fast (numba)" not in proc.stdout
    assert "fast path vs reference" in proc.stdout
    assert "first training step" not in proc.stdout and "import npvae" not in proc.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_benchmark_output_that_cannot_be_written_ends_it_without_a_traceback(tmp_path):
    """``| head -1`` ended in a BrokenPipeError's traceback, ``> /dev/full`` in an OSError's."""
    args = [sys.executable, BENCHMARK, "--epochs", "1", "--train-images", "20", "--skip-torch", "--skip-first-step",
            "--data-dir", tiny_fashion(str(tmp_path / "fashion"))]
    proc = subprocess.run(["bash", "-c", f"{shlex.join(args)} | head -1; exit ${{PIPESTATUS[0]}}"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert (proc.returncode, proc.stderr) == (141, ""), proc.stderr
    assert proc.stdout.startswith("npvae benchmark: ")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert (proc.returncode, proc.stderr) == (1, "error: No space left on device\n")


def test_benchmark_gemm_floor_times_the_models_products():
    sys.path.insert(0, os.path.dirname(BENCHMARK))
    try:
        import benchmark
    finally:
        sys.path.remove(os.path.dirname(BENCHMARK))
    import npvae
    model = npvae.VAE(30, 8, 2, rng=0)
    seconds = benchmark.gemm_floor(model, 300)      # 2 full batches of 128 and one of 44
    assert 0 < seconds < 5


@pytest.mark.parametrize("flag, value", [("--data-dir", "{tmp}"), ("--torch-python", "{tmp}/no-python"),
                                         ("--torch-python", "/bin/false")])
def test_benchmark_refuses_a_data_dir_or_python_it_cannot_use(tmp_path, flag, value):
    """A --data-dir without Fashion-MNIST is not replaced by synthetic images when it was asked for,
    nor is PyTorch quietly left out when a Python that cannot import it was named."""
    value = value.format(tmp=tmp_path)
    proc = run([BENCHMARK, "--epochs", "1", "--train-images", "100", flag, value])
    assert proc.returncode == 2 and value in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "data_dir" not in proc.stderr                # the option as it is typed, not the Python argument


def test_a_benchmark_helper_that_fails_is_said_with_how_it_ended_and_its_error(tmp_path):
    """Here the PyTorch side: a "python" that imports torch but fails as a helper process."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\n[ "$1" = "-c" ] && exit 0\n'
                    'printf "Traceback (most recent call last):\\nValueError: no such thing\\n" >&2\nexit 3\n')
    fake.chmod(0o755)
    proc = run([BENCHMARK, "--epochs", "1", "--train-images", "100", "--skip-first-step", "--torch-python", str(fake)],
               cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "no Fashion-MNIST found: timing synthetic images of the same shape" in proc.stderr   # said, by this process
    first, *rest = proc.stderr[proc.stderr.index("error:"):].splitlines()
    assert first == "error: the torch part failed (exit status 3): ValueError: no such thing"
    assert rest == ["its last messages:", "  | Traceback (most recent call last):", "  | ValueError: no such thing"]


def tiny_fashion(folder):
    """A folder of the four Fashion-MNIST file names holding 10 blank images each."""
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "t10k"):
        write_idx_gz(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), np.zeros((10, 28, 28), np.uint8))
        write_idx_gz(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), np.arange(10))
    return folder


def test_benchmark_refuses_a_broken_data_file_before_timing_anything(tmp_path):
    """Not a fall back to synthetic images: the files named by --data-dir are read and checked first."""
    tiny_fashion(tmp_path)
    truncated = tmp_path / "t10k-labels-idx1-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:-12])
    proc = run([BENCHMARK, "--epochs", "1", "--skip-torch", "--skip-first-step", "--data-dir", str(tmp_path)])
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.startswith(f"error: --data-dir {tmp_path}: ") and "truncated" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc/self/mem")
def test_benchmark_says_what_is_wrong_with_its_data_itself_and_does_not_time_a_stand_in(tmp_path):
    """A file that cannot be read (even by root: /proc/self/mem), one file missing of four, and,
    without --data-dir, a broken copy where npvae looks: each said in one place, status 2, before
    any timing; only no Fashion-MNIST at all (and no --data-dir) means synthetic images."""
    args = [BENCHMARK, "--epochs", "1", "--skip-torch", "--skip-first-step"]
    unreadable = tiny_fashion(tmp_path / "unreadable")
    os.remove(unreadable / "t10k-images-idx3-ubyte.gz")
    os.symlink("/proc/self/mem", unreadable / "t10k-images-idx3-ubyte.gz")
    proc = run([*args, "--data-dir", str(unreadable)])
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == (f"error: --data-dir {unreadable}: {unreadable}/t10k-images-idx3-ubyte.gz cannot be "
                           "read: Input/output error\n")
    partial = tiny_fashion(tmp_path / "partial")
    os.remove(partial / "train-labels-idx1-ubyte.gz")
    proc = run([*args, "--data-dir", str(partial)])
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "missing train-labels-idx1-ubyte[.gz]" in proc.stderr and "t10k-images" not in proc.stderr.split("\n", 1)[1]
    assert_no_traceback(proc.stderr)
    broken = tiny_fashion(tmp_path / "cache" / "npvae" / "fashion-mnist")      # in npvae's cache
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really")
    proc = run(args, env={**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NPVAE_DATA_DIR": "/nonexistent"})
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    warning, error = proc.stderr.splitlines()          # the warning as one line, not Python's two
    assert warning.startswith("warning: $NPVAE_DATA_DIR=/nonexistent: folder does not exist; using fashion-mnist")
    assert error.startswith("error: Fashion-MNIST: ") and "train-images-idx3-ubyte.gz" in error
    assert error.endswith("(fix or remove that file, or name a folder with --data-dir)")
    assert_no_traceback(proc.stderr)


@pytest.mark.parametrize("args, message", [(["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
                                           (["--threads", "two"], "argument --threads: expected a whole number"),
                                           (["--threads", "1" + "0" * 20], "argument --threads: must be at most 256"),
                                           (["--data-dir", ""], "argument --data-dir: must name a folder, got ''"),
                                           (["--no-such-flag"], "unrecognized arguments: --no-such-flag")])
def test_benchmark_usage_errors_are_one_line(args, message):
    proc = run([BENCHMARK, *args])
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_quickstart_refuses_two_different_data_folders(tmp_path):
    proc = run([QUICKSTART, SAMPLE, "--data-dir", str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and "differ: give one of them" in proc.stderr, proc.stderr
    assert_no_traceback(proc.stderr)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("optimize", [[], ["-OO"]])
def test_every_programs_help_fits_an_80_column_terminal(optimize):
    """Pre-formatted lines (the exit statuses, the resume rules) are not wrapped by argparse. With
    ``python -OO`` (or ``PYTHONOPTIMIZE=2``), which strips docstrings, the help is shorter, not a crash."""
    programs = [[os.path.join(ROOT, "examples", name)] for name in
                ("train_mnist.py", "quickstart.py", "latent_bubbles.py", "kl_curve.py", "worked_example.py",
                 "benchmark.py")] + [["-m", "gradcheck"], ["-m", "npvae.fast.compile"]]
    env = {**ENV, "COLUMNS": "80"}
    procs = [subprocess.Popen([sys.executable, *optimize, *p, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT) for p in programs]
    for program, proc in zip(programs, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (program, err)
        assert max(len(line) for line in out.splitlines()) <= 79, (program, [l for l in out.splitlines() if len(l) > 79])


@pytest.fixture
def quickstart(monkeypatch):
    """quickstart.py in this process with its training replaced by a spy (its two epochs cost
    seconds): the spy records what fit was given and returns two epochs of made-up losses."""
    script = load_script(QUICKSTART, "quickstart_under_test")
    script.fits, script.titles = [], []

    def fit(model, train, test, **settings):
        script.fits.append(dict(train=train, test=test, **settings))
        return [{"test_loss": 348.94}, {"test_loss": 260.04}]
    monkeypatch.setattr(script, "fit", fit)
    monkeypatch.setattr(script, "plot_samples", lambda images, path, title: script.titles.append(title))
    return script


def test_quickstart_prints_the_last_epochs_loss_of_two_epochs_on_80_percent(quickstart, tmp_path, capsys):
    """What it prints and draws is what it did: fit for 2 epochs on the first 800 of the 1,000
    digits (200 held out), the loss after the last epoch, the 800 in the figure's title."""
    quickstart.main([SAMPLE, "--out", str(tmp_path)])
    (settings,) = quickstart.fits
    assert settings["epochs"] == 2 and len(settings["train"]) == 800 and len(settings["test"]) == 200
    out = capsys.readouterr().out
    assert "test loss (negative ELBO) after 2 epochs: 260.0 nats per image\n" in out
    assert "reloaded model reconstructs the same: True\n" in out
    (title,) = quickstart.titles
    assert "after 2 epochs on 800 digits" in title


def test_quickstart_says_when_the_reloaded_model_differs(quickstart, tmp_path, monkeypatch, capsys):
    """"reconstructs the same" compares the reloaded file's model with the one trained: a file
    that comes back with one weight changed gives False."""
    load_model = quickstart.load_model

    def load_changed(path):
        model = load_model(path)
        model.decoder[-1].bias.data[:] += 1.0
        return model
    monkeypatch.setattr(quickstart, "load_model", load_changed)
    quickstart.main([SAMPLE, "--out", str(tmp_path)])
    assert "reloaded model reconstructs the same: False\n" in capsys.readouterr().out


def test_quickstart_notes_a_replacement_when_one_earlier_output_is_there(quickstart, tmp_path, capsys):
    """Either of its two files from an earlier run is replaced: the note comes for one alone too."""
    (tmp_path / "quickstart.npz").write_bytes(b"")
    quickstart.main([SAMPLE, "--out", str(tmp_path)])
    assert f"note: this run replaces the earlier quickstart outputs in {tmp_path}" in capsys.readouterr().err


def load_benchmark():
    return load_script(BENCHMARK, "benchmark_under_test")


# Three rounds of made-up epoch times (s), chosen so that a median of per-round ratios differs
# from a ratio of medians: medians floor 1, fast 2, reference 8, pytorch 4; per-round ratios
# reference / fast 3, 4, 2 (median 3), reference / floor 6, 4, 8 (median 6), fast / floor 2, 1, 4.
ROUNDS = [dict(floor=1.0, numba=2.0, numpy=6.0, pytorch=4.0),
          dict(floor=2.0, numba=2.0, numpy=8.0, pytorch=4.0),
          dict(floor=1.0, numba=4.0, numpy=8.0, pytorch=6.0)]


class FakeWorker:
    """A runner process's answers without the process: ROUNDS' epochs, evaluations of 0.5 s
    (fast), 1.5 s (reference), 2 s (PyTorch), and what a runner's finish reports."""
    started = {}        # part -> (python, args), as main started it

    def __init__(self, python, part, args):
        self.part, self.round = part, 0
        FakeWorker.started[part] = (python, args)

    def __call__(self, command):
        keys = ("floor", "numba", "numpy") if self.part == "npvae" else ("pytorch",)
        if command == "train_round":
            self.round += 1
            return {k: ROUNDS[self.round - 1][k] for k in keys}
        if command == "eval_round":
            return {k: dict(numba=0.5, numpy=1.5, pytorch=2.0)[k] for k in keys if k != "floor"}
        if self.part == "torch":
            return dict(rss_mb=456.0, torch="2.13.0")
        return dict(source="synthetic", n_train=6000, rss_mb=123.4, train_loss=dict(numba=101.25, numpy=102.5))


@pytest.fixture
def benchmark_table(monkeypatch, capsys):
    """benchmark.py's main() in this process with its runner processes faked (FakeWorker), as
    ``--epochs 3 --keep-dead-units --torch-python /bin/true``; the first steps take 5 s cold, 0.5 s warm."""
    return run_benchmark_table(monkeypatch, capsys, FakeWorker)


def run_benchmark_table(monkeypatch, capsys, worker):
    """benchmark_table's run, with ``worker`` (FakeWorker or a subclass) for the runner processes."""
    script = load_benchmark()
    first_steps = iter([5.0] + [0.5] * 5)
    monkeypatch.setattr(script, "Worker", worker)
    monkeypatch.setattr(FakeWorker, "started", {})
    monkeypatch.setattr(script, "check_data", lambda ap, data_dir: None)
    monkeypatch.setattr(script, "run_part", lambda python, part, args, env: dict(
        import_s=0.25, first_step_s=next(first_steps), from_start_s=1.0))
    monkeypatch.setattr(sys, "argv", [BENCHMARK, "--epochs", "3", "--keep-dead-units", "--torch-python", "/bin/true"])
    script.main()
    return script, capsys.readouterr().out


def test_benchmark_table_shows_the_medians_and_ratios_of_the_timings(benchmark_table):
    """Each cell from the timings it names: s/epoch the medians, samples/s = images / that median,
    "x GEMM floor" the median of per-round ratios to the floor (ROUNDS), eval and RSS per path."""
    _, out = benchmark_table
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("path "))) + 2     # under the dashes
    cells = [[c.strip() for c in row.split("  ") if c.strip()] for row in lines[start:start + 4]]
    assert cells == [["GEMM floor (BLAS only)", "1.000", "6,000", "1.00"],
                     ["npvae fast, all units", "2.000", "3,000", "2.00", "0.500", "123*"],
                     ["npvae reference", "8.000", "750", "6.00", "1.500", "*"],
                     ["pytorch 2.13.0", "4.000", "1,500", "4.00", "2.000", "456"]]


def test_benchmark_summary_lines_give_the_ratios_the_right_way_round(benchmark_table):
    """The speed-up is reference / fast (faster when above 1), each a median of per-round ratios;
    PyTorch's ratios, the first steps and the losses each under their own names."""
    _, out = benchmark_table
    assert [line[:12] for line in out.splitlines() if line.startswith("  round ")] == [
        "  round 1/3:", "  round 2/3:", "  round 3/3:"]
    assert "fast path vs reference: 3.000x faster (rounds 2.00-4.00, middle half 2.50-3.50)\n" in out
    assert "fast epoch (all units) / pytorch epoch: 0.500 (target <= 0.5; " in out
    assert "reference epoch / pytorch epoch: 1.500 (no target; " in out
    assert "pytorch eval / fast eval: 4.000x (target > 1; " in out
    assert "import npvae: 0.250 s" in out
    assert "cold Numba cache 5.00 s, warm 0.50 s" in out
    assert "train loss after 3 epochs (fast / reference): 101.25 / 102.50\n" in out


def test_benchmark_runner_process_gets_the_options_of_the_main_process(benchmark_table, monkeypatch):
    """--keep-dead-units, --epochs reach the runner: its command line, parsed as the runner parses
    it, gives the settings the main process printed in its header."""
    script, out = benchmark_table
    assert "the fast path keeps its dead units" in out
    served = []
    monkeypatch.setattr(script, "serve", lambda runner, args: served.append((runner, args)))
    python, args = FakeWorker.started["npvae"]
    monkeypatch.setattr(sys, "argv", script._command(python, "npvae", args)[1:])
    script.main()
    ((runner, runner_args),) = served
    assert runner is script.NpvaeRunner and runner_args.keep_dead_units and runner_args.epochs == 3


def test_benchmark_evaluates_each_model_on_its_own_path():
    """eval_round times the reference model with backend="numpy", the fast one with "numba"."""
    script = load_benchmark()
    calls = []
    runner = types.SimpleNamespace(models=dict(numba="fast model", numpy="reference model"), test="images",
                                   evaluate_elbo=lambda model, images, seed, backend: calls.append((model, backend)))
    assert set(script.NpvaeRunner.eval_round(runner)) == {"numba", "numpy"}
    assert sorted(calls) == [("fast model", "numba"), ("reference model", "numpy")]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc/self/status")
def test_benchmark_peak_rss_is_in_mib():
    """The "peak RSS (MB)" column: the kernel's VmHWM (kB) / 1024, not another unit."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert load_benchmark().peak_rss_mb() == pytest.approx(kib / 1024, rel=0.05)


@pytest.mark.parametrize("platform, maxrss", [("darwin", 300 * 2 ** 20), ("linux", 300 * 1024)])
def test_benchmark_peak_rss_without_proc_is_read_in_the_platforms_unit(monkeypatch, platform, maxrss):
    """Without /proc (macOS), getrusage: its ru_maxrss counts bytes on macOS, kB on Linux (macOS's
    300 MB used to be shown as 307200)."""
    resource = pytest.importorskip("resource")
    script = load_benchmark()
    with monkeypatch.context() as m:
        m.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=maxrss))
        m.setattr(sys, "platform", platform)
        m.setattr(builtins, "open", open_without_proc_and_sys)
        mb = script.peak_rss_mb()
    assert mb == pytest.approx(300.0)


class NoPeakMemoryWorker(FakeWorker):
    """FakeWorker's answers, but the runners' peak memory is not known (Windows: None)."""
    def __call__(self, command):
        answer = super().__call__(command)
        if isinstance(answer, dict) and "rss_mb" in answer:
            answer = dict(answer, rss_mb=None)
        return answer


def test_benchmark_without_the_resource_module_runs_and_says_n_a_for_peak_memory(monkeypatch, capsys):
    """Windows has no ``resource`` (the benchmark imported it first thing, and stopped there): no
    peak memory, and the table says n/a where it would show it."""
    monkeypatch.setitem(sys.modules, "resource", None)
    script = load_benchmark()
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", open_without_proc_and_sys)
        assert script.peak_rss_mb() is None
    _, out = run_benchmark_table(monkeypatch, capsys, NoPeakMemoryWorker)
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("path "))) + 2     # under the dashes
    peak = {row.split("  ")[0]: row.split()[-1] for row in lines[start + 1:start + 4]}    # (the floor has none)
    assert peak == {"npvae fast, all units": "n/a*", "npvae reference": "*", "pytorch 2.13.0": "n/a"}, out


def test_a_benchmark_part_killed_by_a_signal_says_which():
    """A returncode of -9 is signal 9 (SIGKILL, e.g. the OOM killer), not "signal -9"."""
    assert str(load_benchmark().PartFailed("npvae", -9, "")) == "the npvae part failed (killed by signal 9)"


def test_benchmark_interrupted_exits_130_in_one_line(monkeypatch, capsys, tmp_path):
    """Ctrl-C while it starts its runner: status 130 and one line, as the other programs."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(subprocess, "Popen", interrupted)
    monkeypatch.setattr(sys, "argv", [BENCHMARK, "--skip-torch", "--data-dir", tiny_fashion(str(tmp_path))])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(BENCHMARK, run_name="__main__")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "\nstopped: interrupted by SIGINT\n"


def test_benchmark_gemm_floor_times_the_last_partial_batch_too(monkeypatch):
    """300 images are 2 batches of 128 and one of 44: the floor times the 44 as well."""
    import npvae
    rows = []
    matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b, out: rows.append(len(out)) or matmul(a, b, out=out))
    load_benchmark().gemm_floor(npvae.VAE(30, 8, 2, rng=0), 300)
    assert 44 in rows


def test_what_a_binarized_run_with_its_own_seed_draws_and_reports(tmp_path, capsys):
    """samples.png draws from default_rng(--seed) (as --help says); the reconstructions show the
    0/1 test images the test loss scores (evaluate_elbo's stream at seed 0); the NLL of some images,
    and the ELBO beside it, are of their binarized pixels. Those two figures rebuilt from the checkpoint."""
    from npvae import load_model, plots
    from npvae.data import binarize
    out = tmp_path / "run"
    assert cli.run(load_script().main, [*FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--binarize",
                                        "--seed", "3", "--no-progress", "--out", str(out)]) == 0
    model = load_model(out / "checkpoint.npz")
    plots.plot_samples(model.sample(64, rng=np.random.default_rng(3)), tmp_path / "samples.png",
                       title="64 samples decoded from z ~ N(0, I) (d = 20)")
    test = load_idx_split(SAMPLE, "t10k")[0][800:]
    shown = binarize(test[:10].astype(np.float32) / 255, np.random.default_rng([0, 1]))
    plots.plot_reconstructions(shown, model.reconstruct(shown), tmp_path / "after.png",
                               title="Binarized test images (top) and reconstructions after 1 epoch")
    assert (tmp_path / "samples.png").read_bytes() == (out / "samples.png").read_bytes()
    assert (tmp_path / "after.png").read_bytes() == (out / "reconstruction_after.png").read_bytes()
    part = evaluate_elbo(model, test[:20], batch_size=64, binarize=True, backend="numpy")
    summary = lines(out / "metrics.jsonl")[-1]
    assert summary["nll_images_neg_elbo"] == pytest.approx(part.recon + part.kl, rel=1e-6)
    assert summary["iw_nll"] == pytest.approx(iw_nll(model, test[:20], k=2, binarize=True, backend="numpy"), rel=1e-6)


def test_ten_held_out_images_and_a_warmup_as_long_as_the_run_are_fine(tmp_path, capsys):
    """--split 990 of the 1,000 sample images leaves the ten held-out images a run needs at least;
    --warmup 1 --epochs 1 ends the ramp at --beta, so there is nothing to note. Those ten hold a 0
    but no 6: the interpolation from the one to the other is left out, with a note, and the rest drawn."""
    args = [a for a in FIGURED if a not in ("--split", "800")]
    code = cli.run(load_script().main, [*args, *REFERENCE, "--split", "990", "--epochs", "1", "--warmup", "1",
                                        "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0 and "990 training images, 10 test images" in err and "is longer than" not in err, err
    assert "note: no test image of class 6: interpolation.png is not drawn" in err, err
    code = cli.run(load_script().main, [*SMALL, *REFERENCE, "--epochs", "1", "--beta", "0", "--warmup", "3",
                                        "--out", str(tmp_path / "unweighted")])
    err = capsys.readouterr().err
    assert code == 0 and "is longer than" not in err, err      # a ramp to 0 ends at 0
    drawn = sorted(name for name in os.listdir(tmp_path / "run") if name.endswith(".png"))
    assert drawn == ["latent.png", "loss.png", "reconstruction_after.png", "reconstruction_before.png", "samples.png"]


def out_of_memory(*args):
    """In place of train_mnist's ``evaluate``: a failure once the training is saved."""
    raise MemoryError()


def test_once_the_figures_are_drawn_the_command_that_finishes_the_run_draws_no_more(tmp_path, capsys, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "evaluate", out_of_memory)
    out = tmp_path / "run"
    assert cli.run(script.main, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the figures are drawn; to compute the NLL once that is fixed, run:" in err and (out / "loss.png").exists()
    assert shlex.split(err.strip().splitlines()[-1])[-3:] == ["--resume", str(out / "checkpoint.npz"), "--no-figures"]


def test_the_resume_command_names_the_checkpoint_in_full_whatever_the_out_given(tmp_path, capsys, monkeypatch):
    """Pasted in another folder, a relative path would name nothing: the checkpoint's after a
    relative --out, or the program's, started by a relative path."""
    script = load_script()
    monkeypatch.setattr(script, "evaluate", out_of_memory)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [os.path.relpath(TRAIN, tmp_path)])      # python ../../examples/train_mnist.py
    assert cli.run(script.main, [*SMALL, *REFERENCE, "--epochs", "1", "--out", "run"]) == 1
    command = shlex.split(capsys.readouterr().err.strip().splitlines()[-1])
    assert command[-2:] == [str(tmp_path / "run" / "checkpoint.npz"), "--no-figures"], command
    assert command[:3] == [sys.executable, os.path.abspath(TRAIN), "--resume"], command
