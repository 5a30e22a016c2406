"""What fit, evaluate and the model promise users of the Python API, as the command line does
for its users (tests/test_cli_*.py): resuming only on the same data, checked arguments, the
back end chosen where the work is done, progress for the NLL, models too big refused clearly."""
import inspect
import json
import signal

import pytest
from cli_util import SAMPLE, SMALL, TRAIN, start, wait_for

import npvae
import npvae.train
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


def _first_epoch(tmp_path, images, **kw):
    """A checkpoint (and metrics file) after one epoch of a small run, and its settings."""
    run = dict(batch_size=32, rng=0, progress=False, backend="numpy")
    path, metrics = tmp_path / "c.npz", tmp_path / "m.jsonl"
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], images[64:96], epochs=1, checkpoint=path, metrics_path=metrics,
        **run, **kw)
    return path, metrics, run


def test_a_resume_on_other_test_images_or_noise_is_refused_as_its_test_losses_would_not_compare(tmp_path, images):
    path, _, run = _first_epoch(tmp_path, images)
    for test, seed, what in ((images[64:96][::-1].copy(), 0, r"test images"),
                             (images[64:80], 0, r"number of test images"),
                             (None, 0, r"number of test images none but the checkpoint was evaluated with 32"),
                             (images[64:96], 7, r"eval_seed 7")):
        with pytest.raises(InputError, match=rf"cannot resume .* exactly: {what}.*the History's test losses would "
                                             rf"not compare"):
            fit(npvae.VAE(784, 8, 2, rng=0), images[:64], test, epochs=2, eval_seed=seed, resume=path, **run)
    assert len(fit(npvae.VAE(784, 8, 2, rng=0), images[:64], images[64:96], epochs=2, resume=path, **run)) == 2
    untested = tmp_path / "u.npz"                    # no test images, no test losses: eval_seed is free
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=1, checkpoint=untested, **run)
    assert len(fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=2, eval_seed=7, resume=untested, **run)) == 2


def test_a_refused_resume_leaves_the_callers_model_and_optimizer_as_they_were(tmp_path, images):
    """Refused for asking no more epochs than the checkpoint has: nothing of it is loaded first."""
    path, _, run = _first_epoch(tmp_path, images)
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], images[64:96], epochs=2, resume=path, checkpoint=path, **run)
    model = npvae.VAE(784, 8, 2, rng=5)
    opt = npvae.Adam(model.parameters(), lr=5e-4)
    before = {n: a.copy() for n, a in model.state_dict().items()}
    rng_state = model.rng.bit_generator.state
    with pytest.raises(InputError, match=r"epochs=1 is the total number of epochs, but .* is already at epoch 2"):
        fit(model, images[:64], images[64:96], epochs=1, optimizer=opt, resume=path, **run)
    assert all((model.state_dict()[n] == a).all() for n, a in before.items())
    assert model.rng.bit_generator.state == rng_state and opt.t == 0 and opt.lr == 5e-4


def test_resuming_another_optimizers_run_without_one_says_which_to_pass(tmp_path, images):
    run = dict(batch_size=32, rng=0, progress=False, backend="numpy")
    model = npvae.VAE(784, 8, 2, rng=0)
    fit(model, images[:64], epochs=1, optimizer=npvae.SGD(model.parameters(), lr=0.01, momentum=0.9),
        checkpoint=tmp_path / "s.npz", **run)
    with pytest.raises(InputError, match=r"holds the state of an SGD optimizer, but fit was given none and would "
                                         r"make its default Adam: pass optimizer=SGD\(model.parameters\(\)\)"):
        fit(npvae.VAE(784, 8, 2, rng=0), images[:64], epochs=2, resume=tmp_path / "s.npz", **run)
    again = npvae.VAE(784, 8, 2, rng=0)
    fit(again, images[:64], epochs=2, optimizer=npvae.SGD(again.parameters(), lr=0.5), resume=tmp_path / "s.npz",
        **run)


def test_a_new_run_whose_first_checkpoint_cannot_be_written_leaves_the_earlier_runs_metrics(tmp_path, images,
                                                                                             monkeypatch):
    path, metrics, run = _first_epoch(tmp_path, images)
    earlier = metrics.read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(npvae.train, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fit(npvae.VAE(784, 8, 2, rng=1), images[:64], images[64:96], epochs=1, checkpoint=path,
            metrics_path=metrics, **run)
    assert metrics.read_text() == earlier          # the pair still describes the earlier run
    monkeypatch.undo()
    fit(npvae.VAE(784, 8, 2, rng=0), images[:64], images[64:96], epochs=2, resume=path, checkpoint=path,
        metrics_path=metrics, **run)
    lines = metrics.read_text().splitlines()
    assert lines[0] == earlier.strip() and len(lines) == 2


def test_a_resume_into_a_new_metrics_file_writes_the_checkpoints_epochs_first(tmp_path, images):
    """The file a run stopped between its checkpoint and its metrics line, or a new one, is the run's."""
    path, metrics, run = _first_epoch(tmp_path, images)
    new = tmp_path / "new.jsonl"
    history = fit(npvae.VAE(784, 8, 2, rng=0), images[:64], images[64:96], epochs=2, resume=path,
                  metrics_path=new, **run)
    records = [json.loads(line) for line in new.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == json.loads(metrics.read_text()) and records[1]["train_loss"] == history[1]["train_loss"]


def test_a_resume_on_other_test_images_explains_the_fingerprint_as_for_the_training_images(tmp_path, images):
    """The same pixels as floats are other test images to the fingerprint: the message says so."""
    path, _, run = _first_epoch(tmp_path, images)
    as_floats = images[64:96] / 255.0
    with pytest.raises(InputError, match=r"exactly: test images .* \(fingerprints of the images' dtype, shape and "
                                         r"bytes: the same pixels as uint8 and as floats differ, so give them as the "
                                         r"run did\); the History's test losses would not compare"):
        fit(npvae.VAE(784, 8, 2, rng=0), images[:64], as_floats, epochs=2, resume=path, **run)
