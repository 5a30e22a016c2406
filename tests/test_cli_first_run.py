"""A first run of examples/train_mnist.py: offline guidance, and progress on a terminal."""
import contextlib
import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from cli_util import ENV, FIGURED, REFERENCE, SAMPLE, SMALL, TRAIN, assert_no_traceback, load_script

from npvae import cli
from npvae.data import download


def dead_port_url():
    """A URL on a port nobody listens on: a download fails at once, as offline."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def run_offline(tmp_path, args, data_dir_env):
    """The real script, offline (its mirrors point at a dead port), from an empty folder."""
    driver = tmp_path / "offline.py"
    driver.write_text(textwrap.dedent(f"""
        import runpy, sys
        import npvae.data.download
        npvae.data.download.MIRRORS["mnist"] = ({dead_port_url()!r},)
        sys.argv = [{TRAIN!r}, *{args!r}]
        runpy.run_path({TRAIN!r}, run_name="__main__")
    """))
    work = tmp_path / "work"
    work.mkdir()
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NPVAE_DATA_DIR": data_dir_env}
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, env=env, cwd=work,
                          timeout=120)
    return proc, work


def test_offline_first_run_says_where_it_looked_and_what_to_do(tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(SAMPLE, shared / "mnist")               # only the MNIST test set, as on this machine
    proc, work = run_offline(tmp_path, [], str(shared))
    err = proc.stderr
    assert proc.returncode == 2, err
    assert err.startswith("error: cannot find the mnist files train-images-idx3-ubyte[.gz]")
    for place in (shared / "mnist", shared, tmp_path / "cache" / "npvae" / "mnist"):
        assert f"{place} (" in err
    assert "Downloading them failed" in err and "cannot connect" in err
    assert "pass --data-dir DIR" in err and "NPVAE_DATA_DIR=DIR" in err and "data_dir=" not in err
    assert f"use --dataset mnist-test-split --data-dir {shared / 'mnist'}" in err
    assert_no_traceback(err)
    assert os.listdir(work) == []                           # no runs/<dataset>-<time>/run.json
    assert not (tmp_path / "cache").exists()                # and no empty cache folder


def test_offline_without_any_data_names_the_environment_variable(tmp_path):
    proc, work = run_offline(tmp_path, ["--dataset", "fashion-mnist"], "")
    assert proc.returncode == 2
    assert "($NPVAE_DATA_DIR is not set.)" in proc.stderr and "mnist-test-split" not in proc.stderr
    assert os.listdir(work) == [] and not (tmp_path / "cache").exists()


def read_all(fd, proc):
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:        # the other end is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal_is_a_bar_with_rate_and_time_left(tmp_path):
    controller, terminal = pytest.importorskip("pty").openpty()     # (not on Windows)
    proc = subprocess.Popen([sys.executable, TRAIN, *SMALL, "--batch-size", "8", "--epochs", "2", "--nll-k", "40",
                             "--out", str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=terminal,
                            env=ENV, cwd=tmp_path)
    os.close(terminal)
    try:
        text = read_all(controller, proc)
        proc.wait(timeout=120)
    finally:
        os.close(controller)
        proc.kill()
    assert proc.returncode == 0, text
    assert "\repoch 1/2  batch " in text and "/100 [#" in text and "samples/s" in text and " left" in text
    assert "\rNLL (k=40) [" in text and "images/s" in text
    lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    assert any(line.startswith("epoch 1/2  train") for line in lines)   # the bar gives way to the summary


def test_ctrl_c_at_the_nll_bar_on_a_terminal_starts_a_new_line_and_says_what_is_left(tmp_path):
    """The bar is ended before the message (it was printed on the bar's own line), and the message
    knows the figures are already drawn."""
    controller, terminal = pytest.importorskip("pty").openpty()     # (not on Windows)
    # 900 test images: two NLL batches of 500, so the bar is drawn half-way and the signal lands in the
    # second (at k=1500, over a second long)
    proc = subprocess.Popen([sys.executable, TRAIN, *FIGURED, "--split", "100", "--epochs", "1", "--nll-k", "1500",
                             "--out", str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=terminal,
                            env=ENV, cwd=tmp_path)
    os.close(terminal)
    seen = b""
    try:
        while b"NLL (k=1500) [" not in seen and proc.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                seen += os.read(controller, 65536)
        time.sleep(0.3)                                     # as a person would: not mid-draw
        proc.send_signal(signal.SIGINT)
        text = seen.decode("utf-8", "replace") + read_all(controller, proc)
        proc.wait(timeout=120)
    finally:
        os.close(controller)
        proc.kill()
    assert proc.returncode == 130, text
    assert "\nstopped: interrupted by SIGINT" in text.replace("\r\n", "\n"), text
    assert "the figures are drawn; to compute the NLL, run:" in text
    assert_no_traceback(text)


def test_a_mistyped_environment_variable_is_one_line_of_warning(tmp_path):
    """The data come from the cache instead, and the command line says so in its own words."""
    shutil.copytree(SAMPLE, tmp_path / "cache" / "npvae" / "mnist")
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NPVAE_DATA_DIR": str(tmp_path / "dta")}
    proc = subprocess.run([sys.executable, TRAIN, "--dataset", "mnist-test-split", "--split", "800", "--epochs", "1",
                           "--hidden-dim", "32", "--nll-k", "2", "--no-figures", *REFERENCE, "--out",
                           str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (f"warning: $NPVAE_DATA_DIR={tmp_path / 'dta'}: folder does not exist; using mnist from "
            f"{tmp_path / 'cache' / 'npvae' / 'mnist'} instead\n") in proc.stderr
    assert "UserWarning" not in proc.stderr and proc.stderr.count("$NPVAE_DATA_DIR") == 1


def test_a_first_download_shows_progress_in_a_log_unless_no_progress(tmp_path, monkeypatch, capsys):
    """Off a terminal the download prints a line now and then (every 10 s; here at each read), and
    --no-progress ("no bars") silences it as it does the epochs' bars."""
    files = sorted(os.listdir(SAMPLE))
    monkeypatch.setitem(download.MIRRORS, "mnist", (f"file://{SAMPLE}/",))
    monkeypatch.setitem(download.MD5, "mnist", {f: hashlib.md5(open(os.path.join(SAMPLE, f), "rb").read()).hexdigest()
                                                for f in files})
    monkeypatch.setattr(download, "LOG_EVERY", 0.0)
    monkeypatch.setenv("NPVAE_DATA_DIR", "")
    monkeypatch.chdir(tmp_path)
    args = [a for a in SMALL if a not in ("--data-dir", SAMPLE)] + ["--epochs", "1", "--nll-images", "20"]
    main = load_script().main
    for flags, cache in (([], "shown"), (["--no-progress"], "quiet")):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / cache))
        assert cli.run(main, [*args, *flags, "--out", str(tmp_path / cache / "run")]) == 0
        assert sorted(os.listdir(tmp_path / cache / "npvae" / "mnist")) == files      # downloaded
        downloads = [line for line in capsys.readouterr().err.splitlines() if line.startswith("downloading ")]
        assert bool(downloads) == (not flags), downloads


def test_a_run_without_out_whose_folder_another_run_took_meanwhile_goes_on_in_the_next(tmp_path, monkeypatch,
                                                                                        capsys):
    """Two runs started in the same second both name runs/<dataset>-<time>: the one that locks it
    second goes on in <name>-2 (it was refused, and told to choose another --out it never gave)."""
    from npvae.runfolder import RunFolder
    script = load_script()
    monkeypatch.chdir(tmp_path)
    taken = os.path.join("runs", "mnist-test-split-20261206-183808")
    monkeypatch.setattr(script, "new_run_folder", lambda dataset: taken)   # named before the other run made it
    with RunFolder(taken, "--out"):                                          # the other run, holding it
        assert cli.run(script.main, [*SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20"]) == 0
    err = capsys.readouterr().err
    assert f"writing to {taken}-2\n" in err and "model: 784-32-20, float32, backend numpy\n" in err, err
    assert os.path.exists(os.path.join(f"{taken}-2", "checkpoint.npz")) and os.listdir(taken) == []


def test_a_run_without_out_that_cannot_make_its_folder_says_so_without_blaming_out(tmp_path, monkeypatch,
                                                                                      capsys):
    """runs/ is a file here: the folder the program names cannot be made. The user gave no --out,
    so the refusal names the run folder, and --out as the way to pick one."""
    script = load_script()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    assert cli.run(script.main, [*SMALL, *REFERENCE, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "the run folder runs/mnist-test-split-" in err and "runs is a file, not a folder" in err, err
    assert "--out DIR" in err and "--out runs" not in err, err
