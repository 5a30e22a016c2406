"""What fit, evaluate and the model must do for issue 17, tested through the public API.

WAITING FOR THE CORE: every test here is marked ``xfail(strict=True)`` until the
lead wires the change named in its reason into npvae/train.py, evaluate.py or
model.py (being rewritten for issue 15); once it is wired, the test passes, strict
xfail turns that into a failure, and the mark is removed. The command line
already does each of these itself (tests/test_cli_*.py); these are the same
promises for users of the Python API.
"""
import inspect
import signal

import pytest
from cli_util import SAMPLE, SMALL, TRAIN, start, wait_for

import npvae
from npvae.data import load_idx_split
from npvae.errors import InputError, InputTypeError
from npvae.evaluate import evaluate_elbo, iw_nll
from npvae.train import fit


def waiting(what):
    return pytest.mark.xfail(strict=True, reason=f"waiting for the core (issue 15 rewrite): {what}")


@pytest.fixture(scope="module")
def images():
    x, _ = load_idx_split(SAMPLE, "t10k")
    return x


@waiting("fit must store a fingerprint of train_images in the checkpoint's fit_config (e.g. "
         "npvae.data.fingerprint) and, on resume, refuse other images of the same size with an InputError "
         "naming both fingerprints")
def test_fit_refuses_to_resume_on_other_data_of_the_same_size(tmp_path, images):
    path = tmp_path / "c.npz"
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=path)
    other = images[:64].copy()
    other[5, 300] ^= 1
    with pytest.raises(InputError, match="images") as info:
        fit(npvae.VAE(784, 8, 2, rng=0), other, epochs=2, batch_size=32, progress=False, resume=path)
    assert str(path) in str(info.value)


@waiting("fit must check resume= like checkpoint= (validate.check_file_path(resume, 'resume')) before "
         "os.fspath, so resume=123 is an InputTypeError, not a raw TypeError")
def test_fit_checks_the_type_of_resume(images):
    with pytest.raises(InputTypeError, match="resume must be a file path"):
        fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, progress=False, resume=123)


@waiting("fit, evaluate_elbo and iw_nll must take backend= (the CLI's --backend then passes it there "
         "instead of to VAE(...))")
def test_the_backend_is_chosen_where_the_work_is_done():
    for function in (fit, evaluate_elbo, iw_nll):
        assert "backend" in inspect.signature(function).parameters, function.__name__


@waiting("iw_nll must take progress=callable(done_images, total_images), called after each batch, so that "
         "the CLI can show the NLL's progress with a single call (today it calls iw_nll in chunks)")
def test_iw_nll_reports_progress(images):
    seen = []
    iw_nll(npvae.VAE(784, 8, 2, rng=0), images[:50], k=2, batch_size=20, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(20, 50), (40, 50), (50, 50)]


@waiting("VAE(...) must refuse sizes that cannot be allocated with an InputError naming the argument "
         "(e.g. with npvae.footprint.parameter_count), not a raw ValueError/MemoryError from NumPy")
def test_a_model_too_big_to_allocate_is_an_input_error():
    with pytest.raises(InputError, match="hidden_dims"):
        npvae.VAE(784, 10 ** 12, 2)


@waiting("when fit stops on a signal it prints 'interrupted by SIGINT at ...; checkpoint written to X' "
         "without 'continue with fit(..., resume=...)' (a command-line user is told the command to run "
         "instead); the fit(...) hint can stay in the exception's message")
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
