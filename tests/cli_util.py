"""Helpers for the tests that drive examples/train_mnist.py and quickstart.py as a user would."""
import builtins
import errno
import gzip
import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "mnist-sample")
TRAIN = os.path.join(ROOT, "examples", "train_mnist.py")
QUICKSTART = os.path.join(ROOT, "examples", "quickstart.py")
# No data set anywhere a test did not put one (tests that download point XDG_CACHE_HOME at tmp_path).
ENV = {**os.environ, "PYTHONPATH": ROOT, "NPVAE_DATA_DIR": "/nonexistent"}
# A small run, without its figures: they take most of its time (about 1.3 s of 1.4). The tests of
# the figures, and of what a run writes, draw them: FIGURED.
SMALL = ["--dataset", "mnist-test-split", "--data-dir", SAMPLE, "--split", "800", "--hidden-dim", "32",
         "--batch-size", "64", "--nll-k", "2", "--no-figures"]
FIGURED = SMALL[:-1]
# For a run whose subject is not the training (its folder, paths, notes): the reference path
# starts about 0.6 s sooner, with no Numba to import and no kernels to load.
REFERENCE = ["--backend", "numpy"]


def run(args, cwd=ROOT, timeout=300, env=None):
    """Run a Python script the way a user would; the CompletedProcess."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env or ENV, cwd=cwd,
                          timeout=timeout)


def start(args, cwd=ROOT, env=None):
    """Start a Python script to be stopped later; Ctrl-C (SIGINT) reaches it as at a terminal, even
    when the tests run under a script's ``pytest &`` (which starts them with SIGINT ignored, and a
    process started from an ignored Ctrl-C ignores it while Python starts)."""
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or ENV, cwd=cwd,
                            preexec_fn=sigint_as_at_a_terminal if os.name == "posix" else None)


def sigint_as_at_a_terminal():
    """For ``preexec_fn``: the child hears Ctrl-C, whatever this process was started with."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(proc, text, seen):
    """Read the process's stderr until a line contains ``text``; False if it ended first."""
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return True
    return False


def load_script(path=TRAIN, name="train_mnist_under_test"):
    """The example as a module, to call its main() in this process (fast, for the many argument cases)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (hidden ones included)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_no_traceback(text):
    assert "Traceback" not in text and 'File "' not in text, text


def strict_json_lines(path):
    """Every line of ``path`` parsed as strict JSON (NaN and Infinity refused)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


def write_idx_gz(path, array):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as f:
        f.write(gzip.compress(header + array.tobytes(), mtime=0))


def sample_copy(folder, images=None, labels=None):
    """A copy of the shipped sample in ``folder``, with the images and/or labels replaced."""
    from npvae.data import load_idx_split
    x, y = load_idx_split(SAMPLE, "t10k")
    os.makedirs(folder, exist_ok=True)
    x = x.reshape(-1, 28, 28) if images is None else images
    write_idx_gz(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), x)
    write_idx_gz(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), y if labels is None else labels)
    return str(folder)


REAL_OPEN = builtins.open


def open_without_proc_and_sys(file, *args, **kwargs):
    """``open``, but /proc and /sys cannot be read, as on macOS (and Windows): patch it in as
    ``builtins.open`` to see what npvae does without them."""
    if isinstance(file, str) and file.startswith(("/proc/", "/sys/")):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", file)
    return REAL_OPEN(file, *args, **kwargs)
