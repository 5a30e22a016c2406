"""What fit, evaluate and the model promise users of the Python API, as the command line does
for its users (tests/test_cli_*.py): resuming only on the same data, checked arguments, the
back end chosen where the work is done, progress for the NLL, models too big refused clearly."""
import inspect
import signal

import pytest
from cli_util import SAMPLE, SMALL, TRAIN, start, wait_for

import npvae
from npvae.data import load_idx_split
from npvae.errors import InputError, InputTypeError
from npvae.evaluate import evaluate_elbo, iw_nll
from npvae.train import fit


@pytest.fixture(scope="module")
def images():
    x, _ = load_idx_split(SAMPLE, "t10k")
    return x


def test_fit_refuses_to_resume_on_other_data_of_the_same_size(tmp_path, images):
    path = tmp_path / "c.npz"
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=path)
    other = images[:64].copy()
    other[5, 300] ^= 1
    with pytest.raises(InputError, match="images") as info:
        fit(npvae.VAE(784, 8, 2, rng=0), other, epochs=2, batch_size=32, progress=False, resume=path)
    assert str(path) in str(info.value)


def test_fit_checks_the_type_of_resume(images):
    with pytest.raises(InputTypeError, match="resume must be a file path"):
        fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, progress=False, resume=123)


def test_the_backend_is_chosen_where_the_work_is_done():
    for function in (fit, evaluate_elbo, iw_nll):
        assert "backend" in inspect.signature(function).parameters, function.__name__


def test_iw_nll_reports_progress(images):
    seen = []
    iw_nll(npvae.VAE(784, 8, 2, rng=0), images[:50], k=2, batch_size=20, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(20, 50), (40, 50), (50, 50)]


def test_a_model_too_big_to_allocate_is_an_input_error():
    with pytest.raises(InputError, match="hidden_dims"):
        npvae.VAE(784, 10 ** 12, 2)


def test_an_interrupted_command_line_run_does_not_mention_the_python_api(tmp_path):
    proc = start([TRAIN, *SMALL, "--batch-size", "16", "--epochs", "40", "--out", str(tmp_path / "run")])
    seen = []
    try:
        assert wait_for(proc, "epoch 1/40", seen)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "--resume" in err
    assert "fit(" not in err, err
