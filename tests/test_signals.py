"""SIGINT/SIGTERM during fit: a real subprocess is interrupted, leaves a valid checkpoint, and resumes.

The resumed run must equal an uninterrupted one bit for bit (mid-epoch resume is exact), on
either back end.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from npvae import VAE
from npvae.checkpoint import load_checkpoint
from npvae.errors import InputError
from npvae.signals import StopFlag
from npvae.train import TrainingInterrupted, fit

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "data", "interruptible_fit.py")


def load_script():
    spec = importlib.util.spec_from_file_location("interruptible_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(tmp_path, backend):
    """The uninterrupted run, trained in this process."""
    script = load_script()
    model, history = script.train(str(tmp_path / "reference.npz"), backend=backend)
    path = tmp_path / "reference-result.npz"
    script.save_result(path, model, history)
    return path


def run(args, **kwargs):
    return subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("signum, backend", [(signal.SIGINT, "numba"), (signal.SIGTERM, "numpy")],
                         ids=["SIGINT-numba", "SIGTERM-numpy"])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, signum, backend):
    ckpt, result = tmp_path / "c.npz", tmp_path / "result.npz"
    proc = run([ckpt, result, "--backend", backend])
    try:
        line = proc.stdout.readline()                    # wait until training reports progress
        assert line.strip() == "epoch 1", line + proc.stderr.read()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, (proc.returncode, out, err)
    assert "interrupted at epoch" in out
    assert signal.Signals(signum).name in err and "checkpoint written to" in err
    assert not result.exists()
    ckpt_data = load_checkpoint(ckpt)                    # a valid checkpoint
    assert 1 <= ckpt_data.epoch < 12 and (ckpt_data.step == 0 or ckpt_data.partial is not None)

    resumed = run([ckpt, result, "--resume", "--backend", backend])
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    got, want = np.load(result), np.load(reference(tmp_path, backend))
    assert set(got.files) == set(want.files)
    for key in want.files:
        if key != "history":
            assert np.array_equal(got[key], want[key]), key
    assert json.loads(str(got["history"])) == json.loads(str(want["history"]))


class NoiseThatSignals(np.random.Generator):
    """The model's noise stream, unchanged, except that ``signals`` arrive while training step ``at``
    draws its noise (each step draws once)."""

    def __init__(self, model, at, signals):
        super().__init__(model.rng.bit_generator)
        self.draws, self.at, self.signals = 0, at, signals

    def standard_normal(self, *args, **kwargs):
        self.draws += 1
        if self.draws == self.at:
            for signum in self.signals:
                signal.raise_signal(signum)
        return super().standard_normal(*args, **kwargs)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGINT, signal.SIGINT, signal.SIGTERM]],
                         ids=["once", "three times"])
def test_more_signals_stop_exactly_as_one_does(tmp_path, capsys, signals, backend):
    """However often the user presses Ctrl-C (or a scheduler sends SIGTERM), the step finishes, the
    checkpoint is written whole and TrainingInterrupted is raised: never a bare KeyboardInterrupt
    that loses the steps since the last checkpoint (issue 17)."""
    x = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    path = tmp_path / "c.npz"
    model = VAE(784, 8, 2, rng=0)
    model.rng = NoiseThatSignals(model, at=6, signals=signals)   # epoch 2 (4 steps an epoch), step 2
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, x, epochs=3, batch_size=16, rng=0, progress=False, checkpoint=path, backend=backend)
    assert info.value.signum == signal.SIGINT
    assert (load_checkpoint(path).epoch, load_checkpoint(path).step) == (1, 2)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert capsys.readouterr().err.count("received again; already stopping") == len(signals) - 1


def test_second_signal_is_acknowledged_not_raised(capsys):
    """A second Ctrl-C must not cut the checkpoint write short: it is only acknowledged."""
    flag = StopFlag()
    flag.handler(signal.SIGINT, None)
    assert flag.signum == signal.SIGINT
    flag.handler(signal.SIGTERM, None)                   # no exception
    assert flag.signum == signal.SIGINT
    err = capsys.readouterr().err
    assert "SIGTERM received again; already stopping (finishing the current step, or the evaluation or " \
           "callback under way, then writing the checkpoint), please wait" in err


def test_handlers_restored_after_fit_and_after_errors():
    def marker(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, marker)
    sigint = signal.getsignal(signal.SIGINT)     # Python's own, or SIG_IGN under a script's `pytest &`
    try:
        x = np.zeros((8, 784), np.uint8)
        fit(VAE(784, 8, 2, rng=0), x, epochs=1, progress=False)
        assert signal.getsignal(signal.SIGTERM) is marker
        assert signal.getsignal(signal.SIGINT) is sigint
        with pytest.raises(InputError):
            fit(VAE(784, 8, 2, rng=0), x, test_images=np.zeros((2, 3)), epochs=1, progress=False)
        assert signal.getsignal(signal.SIGTERM) is marker
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_fit_takes_over_sighup_only_from_its_default_action():
    """SIGHUP's default action (the process ends, no checkpoint) is replaced while fit trains; an
    ignored SIGHUP (nohup) and a program's own handler (say, a configuration reload) are kept."""
    def reload_config(signum, frame):
        pass

    x = np.zeros((8, 784), np.uint8)
    old = signal.getsignal(signal.SIGHUP)
    try:
        for before, caught in ((signal.SIG_DFL, True), (signal.SIG_IGN, False), (reload_config, False)):
            signal.signal(signal.SIGHUP, before)
            seen = []
            fit(VAE(784, 8, 2, rng=0), x, epochs=1, progress=False,
                callback=lambda *a, **k: seen.append(signal.getsignal(signal.SIGHUP)))
            assert (seen[0] is not before) == caught, before
            assert signal.getsignal(signal.SIGHUP) is before
    finally:
        signal.signal(signal.SIGHUP, old)
