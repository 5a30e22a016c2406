"""Tests of npvae.train.fit: learning, history, validation, warm-up, beta, progress, metrics,
resume, divergence; on both back ends (``backend="numpy"``, the reference, and ``"numba"``,
the fast path) wherever the two could differ."""
import copy
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import npvae
from npvae import SGD, VAE, Adam, Module, evaluate_elbo
from npvae.layers import Dense, Sigmoid
from npvae.checkpoint import META_KEY, load_checkpoint
from npvae.data import load_idx_split
from npvae.errors import CheckpointError, DivergenceError, InputError, InputTypeError, PixelScaleWarning
from npvae.fast import Trainer
from npvae.optim import Optimizer
from numpy_warnings import warned_on_the_reference_only
from npvae.backend import resolve
from npvae.train import FIELDS, History, ReferenceSteps, TrainingInterrupted, fit, warmup_beta

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")
BACKENDS = ["numba", "numpy"]


@pytest.fixture(scope="module")
def sample():
    images, labels = load_idx_split(SAMPLE, "t10k")
    return images, labels


def small(seed=0, hidden=32, latent=4, dtype=np.float32):
    return VAE(784, hidden, latent, dtype=dtype, rng=seed)


def params_equal(a, b):
    return all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))


def metrics(history):
    """History without the wall-clock fields, which differ between runs."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


class NoiseThatStops(np.random.Generator):
    """The model's noise stream, unchanged, except that the ``at``-th draw (the ``at``-th
    training step, on either back end: each step draws its noise once) first calls ``stop()``."""

    def __init__(self, model, at, stop):
        super().__init__(model.rng.bit_generator)
        self.draws, self.at, self.stop = 0, at, stop

    def standard_normal(self, *args, **kwargs):
        self.draws += 1
        if self.draws == self.at:
            self.stop()
        return super().standard_normal(*args, **kwargs)


def interrupt_at(model, step, signum=signal.SIGINT):
    """``signum`` arrives during training step ``step`` (counted over the run, from 1)."""
    model.rng = NoiseThatStops(model, step, lambda: signal.raise_signal(signum))


# -- learning on real data -----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_falls_on_real_sample(sample, backend):
    images, _ = sample
    model = VAE(784, 128, 8, rng=0)
    untrained = 784 * math.log(2)  # BCE of p = 1/2 everywhere: ~543 nats, where any fresh model starts
    history = fit(model, images[:800], images[800:], epochs=3, batch_size=64, rng=0, progress=False,
                  backend=backend)
    first, last = history[0]["test_loss"], history[-1]["test_loss"]
    assert last < first - 100, history["test_loss"]
    assert last < 300 < untrained - 200
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_kl"] > 1  # the latent code is used


def test_history_fields(sample):
    images, _ = sample
    history = fit(small(), images[:200], images[200:300], epochs=2, batch_size=64, rng=0, progress=False)
    assert isinstance(history, History) and len(history) == 2
    for i, record in enumerate(history, 1):
        assert set(record) == set(FIELDS)
        assert record["epoch"] == i and record["steps"] == 4 * i
        assert record["train_seconds"] > 0 and record["eval_seconds"] > 0
        assert record["beta"] == 1.0
        assert record["test_loss"] == pytest.approx(record["test_recon"] + record["test_kl"])
        assert record["train_loss"] == pytest.approx(record["train_recon"] + record["train_kl"])
        json.dumps(record)  # plain JSON values
    assert history["epoch"] == [1, 2]
    assert history.last is history[1]
    assert history.best("test_loss") is min(history, key=lambda r: r["test_loss"])
    assert "2 epochs" in repr(history)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_seconds_cover_the_epochs_bookkeeping(sample, monkeypatch, backend):
    """What fit does around an epoch's steps (the dead-unit record, writing the state back, the
    finiteness check) is training time: benchmarks read train_seconds."""
    images, _ = sample
    steps = Trainer if backend == "numba" else ReferenceSteps
    end_epoch = steps.end_epoch

    model = small()
    fast = fit(model, images[:128], epochs=1, batch_size=64, rng=0, progress=False, backend=backend)
    pause = fast[0]["train_seconds"] + 0.5      # longer than the whole epoch, on a busy machine too

    def slow_end_epoch(self):
        time.sleep(pause)
        end_epoch(self)
    monkeypatch.setattr(steps, "end_epoch", slow_end_epoch)
    history = fit(model, images[:128], epochs=1, batch_size=64, rng=0, progress=False, backend=backend)
    assert history[0]["train_seconds"] >= pause


def test_without_test_images(sample):
    images, _ = sample
    history = fit(small(), images[:100], epochs=1, batch_size=50, rng=0, progress=False)
    assert history[0]["test_loss"] is None and history[0]["test_kl"] is None
    assert history.best("test_loss") is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_and_uint8_images_train_identically(sample, backend):
    """uint8 pixels, floats of either type, and any memory layout: the same training."""
    images, _ = sample
    runs = []
    for data in (images[:128], images[:128].astype(np.float32) / 255, images[:128] / 255.0,
                 images[:256:2], np.asfortranarray(images[:128])):
        model = small()
        fit(model, data, epochs=1, batch_size=32, rng=0, progress=False, backend=backend)
        runs.append(model)
    assert params_equal(runs[0], runs[1]) and params_equal(runs[0], runs[2])
    assert params_equal(runs[0], runs[4]) and not params_equal(runs[0], runs[3])   # (other images)
    strided = small()
    fit(strided, np.ascontiguousarray(images[:256:2]), epochs=1, batch_size=32, rng=0, progress=False,
        backend=backend)
    assert params_equal(strided, runs[3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_images_not_modified(sample, backend):
    images, _ = sample
    x = images[:64] / 255.0
    before = x.copy()
    fit(small(), x, x, epochs=1, batch_size=16, rng=0, binarize=True, progress=False, backend=backend)
    assert np.array_equal(x, before)


def test_both_back_ends_train_the_same_model_to_round_off(sample):
    """The one switch: ``backend=`` picks the path, not the result (float64, warm-up and beta included)."""
    images, _ = sample
    runs = {}
    for backend in BACKENDS:
        model = small(dtype=np.float64)
        runs[backend] = (model, fit(model, images[:200], images[200:260], epochs=2, batch_size=64, warmup=1,
                                    beta=0.5, rng=0, progress=False, backend=backend))
    (fast, h_fast), (ref, h_ref) = runs["numba"], runs["numpy"]
    for key in ("train_loss", "train_kl", "test_loss", "test_kl", "beta"):
        assert rel(h_fast[key], h_ref[key]) < 1e-10, key
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert rel(q.data, p.data) < 1e-9, name


class _Recording(VAE):
    """The stock VAE, noting each training step's batch size and loss (the reference runs it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []

    def loss(self, x, beta=1.0, eps=None):
        parts = super().loss(x, beta, eps)
        self.steps.append((len(x), parts))
        return parts


def test_an_epochs_losses_are_means_over_images_with_a_short_last_batch(sample):
    """150 images in batches of 100: the batch of 50 weighs half as much as the full one (the
    same code runs both back ends, and they train alike: the test above)."""
    images, _ = sample
    model = _Recording(784, 32, 4, dtype=np.float64, rng=0)
    history = fit(model, images[:150], epochs=1, batch_size=100, rng=0, progress=False, backend="numpy")
    assert [n for n, _ in model.steps] == [100, 50]
    (n1, a), (n2, b) = model.steps
    assert a.total != pytest.approx(b.total, rel=1e-3)          # else any weighting would do
    for i, key in enumerate(("train_loss", "train_recon", "train_kl")):
        assert history[key] == [pytest.approx((n1 * a[i] + n2 * b[i]) / 150, rel=1e-12)], key


def test_the_back_end_defaults_to_npvae_backend_then_numba(sample, monkeypatch, tmp_path):
    images, _ = sample
    runs = {}
    for env, backend in (("numpy", None), (None, "numpy"), (None, None), (None, "numba")):
        if env is None:
            monkeypatch.delenv("NPVAE_BACKEND", raising=False)
        else:
            monkeypatch.setenv("NPVAE_BACKEND", env)
        model = small()
        path = tmp_path / f"{env}-{backend}.npz"
        fit(model, images[:64], epochs=1, batch_size=32, rng=0, progress=False, backend=backend, checkpoint=path)
        runs[env, backend] = model
        assert load_checkpoint(path).fit_config["backend"] == (env or backend or "numba")
    assert params_equal(runs["numpy", None], runs[None, "numpy"])
    assert params_equal(runs[None, None], runs[None, "numba"])
    monkeypatch.setenv("NPVAE_BACKEND", "torch")
    with pytest.raises(InputError, match=r"NPVAE_BACKEND must be one of.*'torch'"):
        fit(small(), GOOD, epochs=1, progress=False)
    monkeypatch.setenv("NPVAE_BACKEND", "")                 # set, if empty: not "unset"
    with pytest.raises(InputError, match=r"^NPVAE_BACKEND must be one of .*got ''"):
        resolve()


def test_a_resumed_runs_back_end_is_named_as_the_runs_when_it_cannot_be_used(monkeypatch):
    """Not blamed on $NPVAE_BACKEND, which a resume does not read, nor fixed by setting it."""
    monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    with pytest.raises(InputError, match=r"^the resumed run's backend must be one of .*got 'torch'"):
        resolve(None, resumed="torch")
    monkeypatch.setitem(sys.modules, "numba", None)        # a Python that cannot import Numba
    with pytest.raises(InputError, match=r"the resumed run's back end, numba, needs Numba.*backend='numpy'$"):
        resolve(None, resumed="numba")
    with pytest.raises(InputError, match=r"the resumed run's back end, numba, needs Numba.*, --backend numpy$"):
        resolve(None, resumed="numba", flag="--backend")    # in the command line's words
    with pytest.raises(InputError, match=r"^--backend numba needs Numba.*--backend numpy \(or NPVAE_BACKEND=numpy\)"):
        resolve("numba", flag="--backend")


# -- validation ----------------------------------------------------------------------
GOOD = np.zeros((10, 784), np.uint8)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(epochs=0), InputError, "epochs"),
    (dict(epochs=-2), InputError, "epochs"),
    (dict(epochs=1.5), InputTypeError, "epochs"),
    (dict(batch_size=0), InputError, "batch_size"),
    (dict(batch_size=True), InputTypeError, "batch_size"),
    (dict(lr=0.0), InputError, "lr"),
    (dict(lr=-1e-3), InputError, "lr"),
    (dict(lr=float("nan")), InputError, "lr"),
    (dict(beta=-1.0), InputError, "beta"),
    (dict(warmup=-1), InputError, "warmup"),
    (dict(warmup=1.5), InputTypeError, "warmup"),
    (dict(binarize=1), InputTypeError, "binarize"),
    (dict(progress="yes"), InputTypeError, "progress"),
    (dict(retire_dead_units="yes"), InputTypeError, "retire_dead_units"),
    (dict(backend="torch"), InputError, r"backend must be one of \('numba', 'numpy'\)"),
    (dict(eval_seed=-1), InputError, "eval_seed"),
    (dict(eval_seed=0.5), InputTypeError, "eval_seed"),
    (dict(callback=3), InputTypeError, "callback"),
    (dict(callback=lambda record: None), InputTypeError, r"callback must take two arguments, \(record, model\)"),
    (dict(rng="seed"), InputTypeError, "rng"),
    (dict(optimizer="adam"), InputTypeError, "optimizer"),
])
def test_fit_rejects_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        fit(small(), GOOD, **{"epochs": 1, "progress": False, **kwargs})


@pytest.mark.parametrize("images, error, words", [
    (np.zeros((10, 100), np.uint8), InputError, r"100 features.*input_dim is 784"),
    (np.zeros(784, np.uint8), InputError, r"2-D.*reshape\(1, -1\)"),
    (np.zeros((10, 28, 28), np.uint8), InputError, r"2-D.*reshape\(len\(train_images\), -1\)"),
    (np.zeros((0, 784), np.uint8), InputError, "empty"),
    (np.full((4, 784), np.nan, np.float32), InputError, "NaN"),
    (np.full((4, 784), 2.0), InputError, r"\[0, 1\]"),
    (np.full((4, 784), -0.5, np.float32), InputError, r"\[0, 1\]"),
    (np.zeros((4, 784), np.int16), InputTypeError, "uint8"),
    ([[0.0] * 784], InputTypeError, "numpy array"),
])
def test_fit_rejects_bad_train_images(images, error, words):
    with pytest.raises(error, match="train_images") as info:
        fit(small(), images, epochs=1, progress=False)
    assert info.match(words)


def test_fit_names_test_images():
    with pytest.raises(InputError, match="test_images"):
        fit(small(), GOOD, np.zeros((3, 10), np.uint8), epochs=1, progress=False)


def test_fit_rejects_optimizer_of_another_model():
    with pytest.raises(InputError, match="model.parameters"):
        fit(small(), GOOD, epochs=1, optimizer=Adam(small(seed=1).parameters()), progress=False)
    with pytest.raises(InputTypeError, match="VAE"):
        fit("model", GOOD, epochs=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_optimizer_whose_params_were_set_to_no_list_is_refused_by_name(backend):
    model = small()
    opt = Adam(model.parameters())
    opt.params = None                       # by hand, after the optimizer was made
    with pytest.raises(InputTypeError, match=r"optimizer\.params must be the list .*got NoneType"):
        fit(model, GOOD, epochs=1, optimizer=opt, backend=backend, progress=False)


def test_lr_with_an_optimizer_of_ones_own_is_refused_not_ignored():
    """lr sets the default optimizer's rate: beside optimizer= it would be silently ignored."""
    model = small()
    with pytest.raises(InputError, match=r"lr=0\.5 sets the default optimizer's rate, but optimizer= was "
                                         r"given \(its lr is 0\.001\)"):
        fit(model, GOOD, epochs=1, lr=0.5, optimizer=Adam(model.parameters()), progress=False)


def test_numpy_scalars_are_accepted(sample, tmp_path):
    images, _ = sample
    history = fit(small(), images[:64], images[64:80], epochs=np.int64(1), batch_size=np.int32(32),
                  warmup=np.int64(1), lr=np.float32(1e-3), beta=np.float64(1.0), eval_seed=np.uint8(3),
                  rng=0, progress=False, checkpoint=tmp_path / "c.npz", metrics_path=tmp_path / "m.jsonl")
    assert len(history) == 1 and load_checkpoint(tmp_path / "c.npz").fit_config["warmup"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_optimizer_and_callback_stop(sample, backend):
    images, _ = sample
    model = small()
    opt = SGD(model.parameters(), lr=1e-3, momentum=0.9)
    start = model.encoder[0].weight.data.copy()
    seen = []

    def callback(record, m):
        seen.append((record["epoch"], m is model, opt.t))
        return False  # stop after the first epoch

    history = fit(model, images[:64], epochs=5, batch_size=32, optimizer=opt, rng=0, callback=callback,
                  progress=False, backend=backend)
    assert len(history) == 1 and seen == [(1, True, 2)]              # the optimizer is synced for callbacks
    assert opt.t == 2 and opt.state_dict()["momentum_buffer.0"].any()
    assert not np.array_equal(model.encoder[0].weight.data, start)


class SignSGD(Optimizer):
    """A user's own optimizer: the reference runs it, the fast path does not."""

    def step(self):
        self.t += 1
        for p in self.params:
            p.data -= 1e-3 * np.sign(p.grad)

    def hyper(self):
        return {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_reference_fit_is_the_loop_its_docstring_describes(sample, dtype):
    """fit's docstring says how it shuffles and batches, for a loop of one's own (a layer fit
    cannot know, a schedule): that loop, written from it, trains the same bits."""
    images = sample[0][:300]
    model, mine = small(dtype=dtype), small(dtype=dtype)
    fit(model, images, epochs=2, batch_size=64, rng=3, backend="numpy", progress=False)
    opt, g = Adam(mine.parameters(), lr=1e-3), np.random.default_rng(3)
    for _ in range(2):
        order = g.permutation(len(images))
        for start in range(0, len(images), 64):
            mine.zero_grad()
            mine.loss(images[order[start:start + 64]].astype(dtype) / dtype(255))
            mine.backward()
            opt.step()
    assert params_equal(model, mine)


def test_an_optimizer_of_ones_own_trains_on_the_reference_only(sample):
    images, _ = sample
    model = small()
    opt = SignSGD(model.parameters())
    history = fit(model, images[:64], epochs=1, batch_size=32, optimizer=opt, rng=0, progress=False,
                  backend="numpy")
    assert len(history) == 1 and opt.t == 2
    with pytest.raises(InputTypeError, match=r"fit\(backend='numba'\).*not SignSGD.*backend='numpy'"):
        fit(model, images[:64], epochs=1, optimizer=opt, progress=False, backend="numba")


class LazyScaledSGD(Optimizer):
    """One's own optimizer keeping a float per parameter, made at its first step."""
    state_names = ("scale",)
    never_negative = ("scale",)

    def __init__(self, params):
        super().__init__(params)
        self.state = {p: {} for p in self.params}

    def step(self):
        self.t += 1
        for p in self.params:
            scale = self.state[p].setdefault("scale", 1e-3)
            p.data -= scale * p.grad

    def hyper(self):
        return {}


def test_an_optimizer_of_ones_own_with_state_of_its_own_kind_is_not_held_to_adams_shapes(sample):
    images, _ = sample
    model = small()
    opt = LazyScaledSGD(model.parameters())
    for epochs in (1, 2):                 # no state before the first step; a float after it
        fit(model, images[:64], epochs=1, batch_size=32, optimizer=opt, rng=0, progress=False, backend="numpy")
    assert opt.t == 4
    opt.state[model.parameters()[0]]["scale"] = -1.0
    with pytest.raises(InputError, match=r"optimizer state scale\.0 has negative values"):
        fit(model, images[:64], epochs=1, batch_size=32, optimizer=opt, rng=0, progress=False, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_optimizer_that_only_looks_like_one_is_told_what_to_subclass(sample, backend):
    class Duck:
        def __init__(self, params):
            self.params = list(params)

        def step(self):
            pass

        def zero_grad(self):
            pass
    model = small()
    with pytest.raises(InputTypeError, match=r"optimizer must be an npvae optimizer .*your own subclass of "
                                             r"npvae\.optim\.Optimizer\), got Duck$"):
        fit(model, sample[0][:64], epochs=1, optimizer=Duck(model.parameters()), progress=False, backend=backend)


# -- beta and warm-up ----------------------------------------------------------------
def test_warmup_beta_schedule():
    assert warmup_beta(1, 2.0, 0, 10) == 2.0
    assert warmup_beta(1, 1.0, 2, 10) == pytest.approx(0.05)
    assert warmup_beta(10, 1.0, 2, 10) == pytest.approx(0.5)
    assert warmup_beta(20, 1.0, 2, 10) == 1.0
    assert warmup_beta(35, 1.0, 2, 10) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_uses_warmup_per_step(sample, monkeypatch, backend):
    images, _ = sample
    betas = []
    steps = Trainer if backend == "numba" else ReferenceSteps   # the two kinds of training step
    step = steps.step

    def spy(self, x, beta=1.0):
        betas.append(beta)
        return step(self, x, beta)

    monkeypatch.setattr(steps, "step", spy)
    history = fit(small(), images[:100], images[100:150], epochs=3, batch_size=25, warmup=2, beta=0.5, rng=0,
                  progress=False, backend=backend)
    n = 4
    expected = [0.5 * min(1.0, t / (2 * n)) for t in range(1, 3 * n + 1)]
    assert betas == pytest.approx(expected)
    assert history["beta"] == pytest.approx([0.25, 0.5, 0.5])
    assert history["beta_start"] == pytest.approx([0.0625, 0.3125, 0.5])
    # test loss uses the target beta, not the warm-up's
    for r in history:
        assert r["test_loss"] == pytest.approx(r["test_recon"] + 0.5 * r["test_kl"])


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_beta_weights_the_kl(sample, beta):
    images, _ = sample
    history = fit(small(), images[:100], images[100:150], epochs=1, batch_size=50, beta=beta, rng=0,
                  progress=False)
    r = history[0]
    assert r["train_loss"] == pytest.approx(r["train_recon"] + beta * r["train_kl"], rel=1e-12)
    assert r["test_loss"] == pytest.approx(r["test_recon"] + beta * r["test_kl"], rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binarize_changes_training_reproducibly(sample, backend):
    images, _ = sample
    a, b, c = small(), small(), small()
    for model, binarize in ((a, True), (b, True), (c, False)):
        fit(model, images[:64], epochs=1, batch_size=32, rng=3, binarize=binarize, progress=False, backend=backend)
    assert params_equal(a, b) and not params_equal(a, c)


def test_binarized_runs_from_the_same_generator_state_are_identical(sample):
    """The binarization stream follows the Generator's state, not its seed: a Generator
    restored from a saved state (it has no seed of its own) gives the same run twice."""
    images, _ = sample
    state = np.random.default_rng(3).bit_generator.state

    def restored():
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        return rng
    a, b = small(), small()
    for model in (a, b):
        fit(model, images[:64], epochs=1, batch_size=32, rng=restored(), binarize=True, progress=False,
            backend="numpy")
    assert params_equal(a, b)
    rng = restored()
    fit(small(), images[:64], epochs=1, batch_size=32, rng=rng, binarize=True, progress=False, backend="numpy")
    assert rng.bit_generator.state != state      # the shuffles drew from it, as always


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_makes_runs_identical(sample, backend):
    images, _ = sample
    runs = [small() for _ in range(3)]
    for model, seed in zip(runs, (5, 5, 6)):
        fit(model, images[:64], epochs=1, batch_size=16, rng=seed, progress=False, backend=backend)
    assert params_equal(runs[0], runs[1]) and not params_equal(runs[0], runs[2])


# -- progress, metrics file, threads --------------------------------------------------
def test_progress_lines_when_not_a_tty(sample, capsys):
    images, _ = sample
    fit(small(), images[:64], images[64:96], epochs=2, batch_size=16, rng=0, progress=True)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "test" in lines[0]
    assert "\r" not in err
    fit(small(), images[:64], epochs=1, batch_size=16, rng=0, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_line_shows_the_warmup_ramp(sample, capsys):
    images, _ = sample
    fit(small(), images[:64], epochs=3, batch_size=16, rng=0, warmup=2, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert "warm-up beta 0.125->0.5)" in lines[0]
    assert "warm-up beta 0.625->1)" in lines[1]
    assert "beta 1)" in lines[2] and "warm-up" not in lines[2]


def test_a_warmup_longer_than_the_run_is_warned_about(sample):
    """The KL weight would never reach beta: legal (a resume can finish the ramp), but said."""
    images, _ = sample
    with pytest.warns(UserWarning, match=r"warmup=4 epochs is longer than epochs=2: the KL weight ends at 0.25, "
                                         r"not beta=0.5"):
        history = fit(small(), images[:64], epochs=2, batch_size=16, rng=0, warmup=4, beta=0.5, progress=False)
    assert history["beta"][-1] == pytest.approx(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(small(), images[:64], epochs=2, batch_size=16, rng=0, warmup=2, progress=False)   # reaches beta
        fit(small(), images[:64], epochs=2, batch_size=16, rng=0, warmup=4, beta=0.0, progress=False)  # 0 is 0


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_live_progress_line_on_a_tty(sample, monkeypatch):
    images, _ = sample
    stream = FakeTTY()
    monkeypatch.setattr("sys.stderr", stream)
    fit(small(), images[:64], epochs=1, batch_size=16, rng=0, progress=True)
    out = stream.getvalue()
    assert "\repoch 1/1  batch 4/4" in out and "samples/s" in out
    assert out.rstrip().splitlines()[-1].lstrip("\r ").startswith("epoch 1/1  train")


class KernelStream(io.StringIO):
    """What a Jupyter kernel gives its cells as stderr: no terminal, but it draws ``\\r`` lines in place."""
    __module__ = "ipykernel.iostream"

    def isatty(self):
        return False


def test_a_notebook_gets_the_live_progress_line_too(sample, monkeypatch):
    """In a notebook an epoch used to be silent until its summary line (28 s for Fashion-MNIST
    on the reference)."""
    images, _ = sample
    stream = KernelStream()
    monkeypatch.setattr("sys.stderr", stream)
    fit(small(), images[:64], epochs=1, batch_size=16, rng=0, progress=True)
    assert "\repoch 1/1  batch 4/4" in stream.getvalue() and "samples/s" in stream.getvalue()


def test_metrics_file(sample, tmp_path):
    images, _ = sample
    path = tmp_path / "m.jsonl"
    path.write_text('{"old": 1}\n')
    fit(small(), images[:64], images[64:96], epochs=2, batch_size=32, rng=0, progress=False,
        metrics_path=path, checkpoint=tmp_path / "c.npz")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]          # a fresh run starts the file anew
    assert {"epoch", "train_loss", "test_loss", "test_recon", "test_kl", "train_seconds"} <= set(records[0])
    # resuming from epoch 1 drops lines past the checkpoint (here: a stale epoch 2)
    fit(small(), images[:64], images[64:96], epochs=1, batch_size=32, rng=0, progress=False,
        checkpoint=tmp_path / "c1.npz")
    fit(small(), images[:64], images[64:96], epochs=3, batch_size=32, rng=0, progress=False,
        metrics_path=path, resume=tmp_path / "c1.npz")
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2, 3]
    # a resume with no epoch left to train trims the file all the same
    fit(small(), images[:64], images[64:96], epochs=1, batch_size=32, rng=0, progress=False,
        metrics_path=path, resume=tmp_path / "c1.npz")
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_fresh_run_that_fails_before_writing_anything_leaves_the_earlier_runs_metrics(sample, tmp_path, backend):
    """The metrics file restarts when the run first writes (it or the checkpoint), not before its
    first step: a divergence in epoch 1 leaves the earlier run's pair of files as they were."""
    images, _ = sample
    files = dict(metrics_path=tmp_path / "m.jsonl", checkpoint=tmp_path / "c.npz")
    fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, backend=backend, **files)
    before = {k: p.read_bytes() for k, p in files.items()}
    with warned_on_the_reference_only(backend), pytest.raises(DivergenceError):
        fit(small(), images[:64], epochs=2, batch_size=32, lr=1e30, rng=0, progress=False, backend=backend,
            **files)
    assert {k: p.read_bytes() for k, p in files.items()} == before
    fresh = tmp_path / "new" / "m.jsonl"                # nor an empty file where there was none
    with warned_on_the_reference_only(backend), pytest.raises(DivergenceError):
        fit(small(), images[:64], epochs=2, batch_size=32, lr=1e30, rng=0, progress=False, backend=backend,
            metrics_path=fresh)
    assert not fresh.exists()


def test_a_fresh_run_stopped_in_its_first_epoch_restarts_the_metrics_file_with_its_checkpoint_only(sample, tmp_path):
    """Ctrl-C in epoch 1 of a new run: with a checkpoint path, the mid-epoch checkpoint replaces the
    earlier run's, and its metrics go with it; without one nothing is written, and they stay."""
    images, _ = sample
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.npz"
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, backend="numpy",
        metrics_path=metrics, checkpoint=ckpt)
    earlier = metrics.read_bytes()
    assert earlier
    for files in (dict(metrics_path=metrics), dict(metrics_path=metrics, checkpoint=ckpt)):
        model = small()
        interrupt_at(model, 1)
        with pytest.raises(TrainingInterrupted):
            fit(model, images[:64], epochs=2, batch_size=32, rng=0, progress=False, backend="numpy", **files)
        if "checkpoint" not in files:
            assert metrics.read_bytes() == earlier
    assert (load_checkpoint(ckpt).epoch, load_checkpoint(ckpt).step) == (0, 1) and metrics.read_text() == ""


def test_a_run_that_fails_writing_an_epochs_metrics_line_resumes_to_a_file_with_every_epoch_once(sample, tmp_path,
                                                                                                  monkeypatch):
    """The line is written after its epoch's checkpoint: a run that fails writing epoch 2's line
    leaves the epoch-2 checkpoint, and the resume writes that line from the checkpoint's History."""
    import npvae.train
    images, _ = sample
    metrics, ckpt = tmp_path / "m.jsonl", tmp_path / "c.npz"
    real = npvae.train.append_line

    def disk_full_at_epoch_2(path, line):
        if json.loads(line)["epoch"] == 2:
            raise OSError(28, "No space left on device")
        real(path, line)
    monkeypatch.setattr(npvae.train, "append_line", disk_full_at_epoch_2)
    with pytest.raises(OSError, match="No space left"):
        fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, backend="numpy",
            metrics_path=metrics, checkpoint=ckpt)
    monkeypatch.setattr(npvae.train, "append_line", real)
    fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend="numpy", metrics_path=metrics,
        checkpoint=ckpt, resume=ckpt)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("resumed, fails_at, kept", [(False, 1, "no checkpoint was written before it"),
                                                    (False, 2, "the last good one is {} (epoch 1)"),
                                                    (True, 2, "the last good one is {} (epoch 1)")])
def test_a_checkpoint_that_cannot_be_written_says_which_and_what_is_kept(sample, tmp_path, monkeypatch, resumed,
                                                                         fails_at, kept):
    """The OSError names the file only: a note says which epoch's checkpoint failed, and which is
    the last good one (this run's, or the one it resumed from), or that there is none."""
    import npvae.train
    images, _ = sample
    ckpt = tmp_path / "c.npz"
    if resumed:
        fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=ckpt)
    real = npvae.train.save_checkpoint

    def read_only_at(path, *args, epoch, **kwargs):
        if epoch == fails_at:
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        real(path, *args, epoch=epoch, **kwargs)
    monkeypatch.setattr(npvae.train, "save_checkpoint", read_only_at)
    with pytest.raises(PermissionError) as info:
        fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, checkpoint=ckpt,
            resume=ckpt if resumed else None)
    assert info.value.__notes__ == [f"the checkpoint of epoch {fails_at} was not written; {kept.format(ckpt)}"]


def test_a_checkpoint_after_the_callback_that_cannot_be_written_says_what_the_file_holds(sample, tmp_path,
                                                                                       monkeypatch):
    """With a callback an epoch is saved twice, before it and after: the second failing, the file
    holds the epoch as it was before the callback (not "the last good one is" that same epoch)."""
    import npvae.train
    images, _ = sample
    ckpt, real, calls = tmp_path / "c.npz", npvae.train.save_checkpoint, []

    def read_only_after_the_callback(path, *args, epoch, **kwargs):
        calls.append(epoch)
        if calls.count(2) == 2:
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        real(path, *args, epoch=epoch, **kwargs)
    monkeypatch.setattr(npvae.train, "save_checkpoint", read_only_after_the_callback)
    with pytest.raises(PermissionError) as info:
        fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, checkpoint=ckpt,
            callback=lambda record, model: None)
    assert info.value.__notes__ == [f"the checkpoint of epoch 2 as the callback left it was not written; {ckpt} "
                                    f"(epoch 2) holds it as it was before the callback"]


def test_resuming_passes_over_a_metrics_line_that_is_not_utf8(sample, tmp_path):
    """A note added in another encoding (Latin-1 here) is not an epoch record: it goes, the run goes on."""
    images, _ = sample
    path = tmp_path / "m.jsonl"
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, metrics_path=path,
        checkpoint=tmp_path / "c.npz")
    with open(path, "ab") as f:
        f.write('{"note": "résumé later"}\n'.encode("latin-1"))
        f.write(b'{"epoch": [1], "note": "a line of ones own"}\n{"epoch": 1.0}\n')   # not an epoch's record
    fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, metrics_path=path,
        resume=tmp_path / "c.npz")
    assert [json.loads(line)["epoch"] for line in path.read_text(encoding="utf-8").splitlines()] == [1, 2]


def test_fit_in_a_thread_leaves_signal_handlers_alone(sample):
    images, _ = sample
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = {}
    thread = threading.Thread(target=lambda: result.update(h=fit(small(), images[:32], epochs=1, batch_size=16,
                                                                     rng=0, progress=False)))
    thread.start()
    thread.join()
    assert len(result["h"]) == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# -- resume --------------------------------------------------------------------------
RUN = dict(batch_size=24, warmup=2, binarize=True, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_at_epoch_boundary_is_bit_identical(sample, tmp_path, backend):
    images, _ = sample
    x, t = images[:120], images[120:170]
    straight = small()
    h1 = fit(straight, x, t, epochs=4, rng=7, backend=backend, **RUN)
    first = small()
    fit(first, x, t, epochs=2, rng=7, checkpoint=tmp_path / "c.npz", backend=backend, **RUN)
    resumed = small(seed=99)                                # other init: everything must come from the file
    opt = Adam(resumed.parameters(), lr=0.5)                # lr too: the checkpoint's state wins
    h2 = fit(resumed, x, t, epochs=4, rng=12345, optimizer=opt, resume=tmp_path / "c.npz", backend=backend, **RUN)
    assert params_equal(straight, resumed)
    assert metrics(h1) == metrics(h2)
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_is_bit_identical(sample, tmp_path, backend):
    images, _ = sample
    x, t = images[:120], images[120:170]                   # 5 steps per epoch
    straight = small()
    opt1 = Adam(straight.parameters())
    h1 = fit(straight, x, t, epochs=3, rng=7, optimizer=opt1, backend=backend, **RUN)

    model = small()
    interrupt_at(model, 7)                                  # epoch 2, step 2
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, x, t, epochs=3, rng=7, checkpoint=tmp_path / "c.npz", backend=backend, **RUN)
    e = info.value
    assert isinstance(e, KeyboardInterrupt) and e.signum == signal.SIGINT
    assert (e.epoch, e.step, e.checkpoint) == (1, 2, str(tmp_path / "c.npz"))
    assert "epoch 2, step 2" in str(e) and "resume=" in str(e)
    assert len(e.history) == 1
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert (ckpt.epoch, ckpt.step) == (1, 2) and ckpt.partial["n"] == 48

    resumed = small(seed=3)
    opt2 = Adam(resumed.parameters())
    h2 = fit(resumed, x, t, epochs=3, rng=0, optimizer=opt2, resume=tmp_path / "c.npz", backend=backend, **RUN)
    assert params_equal(straight, resumed)
    assert metrics(h1) == metrics(h2)
    sd1, sd2 = opt1.state_dict(), opt2.state_dict()
    assert sd1.keys() == sd2.keys() and all(np.array_equal(sd1[k], sd2[k]) for k in sd1)


def test_a_checkpoint_resumes_on_the_other_back_end(sample, tmp_path):
    """Mid-epoch on the fast path, finished on the reference: the reference run's result to round-off."""
    images, _ = sample
    x = images[:120]
    straight = small(dtype=np.float64)
    h1 = fit(straight, x, epochs=2, batch_size=24, rng=7, progress=False, backend="numpy")
    model = small(dtype=np.float64)
    interrupt_at(model, 3)
    with pytest.raises(TrainingInterrupted):
        fit(model, x, epochs=2, batch_size=24, rng=7, progress=False, checkpoint=tmp_path / "c.npz",
            backend="numba")
    resumed = small(seed=3, dtype=np.float64)
    h2 = fit(resumed, x, epochs=2, batch_size=24, progress=False, resume=tmp_path / "c.npz", backend="numpy")
    assert rel(h2["train_loss"], h1["train_loss"]) < 1e-10
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert rel(q.data, p.data) < 1e-9, name


@pytest.mark.parametrize("environment", [None, "numba"])
def test_a_resume_goes_on_with_the_runs_own_back_end_unless_told_otherwise(sample, tmp_path, monkeypatch,
                                                                          environment):
    """backend=None on a resume is the checkpoint's back end, not $NPVAE_BACKEND's nor the default:
    a run started on the reference went on, without a word, on the fast path (not to the last
    bit), and its checkpoint then said numba throughout."""
    images, _ = sample
    x = images[:120]
    if environment is None:
        monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    else:
        monkeypatch.setenv("NPVAE_BACKEND", environment)
    straight = small()
    fit(straight, x, epochs=2, batch_size=24, rng=7, progress=False, backend="numpy")
    fit(small(), x, epochs=1, batch_size=24, rng=7, progress=False, checkpoint=tmp_path / "c.npz", backend="numpy")
    shutil.copy(tmp_path / "c.npz", tmp_path / "d.npz")
    resumed = small()
    fit(resumed, x, epochs=2, batch_size=24, progress=False, checkpoint=tmp_path / "c.npz", resume=tmp_path / "c.npz")
    assert params_equal(straight, resumed)
    assert load_checkpoint(tmp_path / "c.npz").fit_config["backend"] == "numpy"
    told = small()                                  # an explicit backend= still changes it
    fit(told, x, epochs=2, batch_size=24, progress=False, checkpoint=tmp_path / "d.npz", resume=tmp_path / "d.npz",
        backend="numba")
    assert load_checkpoint(tmp_path / "d.npz").fit_config["backend"] == "numba"


def without_backend(src, dst):
    """A copy of fit's checkpoint ``src`` as an older npvae wrote it: no back end in its fit_config."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays[META_KEY][()]))
    del meta["fit_config"]["backend"]
    np.savez(dst, **{**arrays, META_KEY: np.array(json.dumps(meta))})
    return dst


def test_a_resume_of_a_checkpoint_that_records_no_back_end_says_which_it_goes_on_with(sample, tmp_path,
                                                                                      monkeypatch):
    x = sample[0][:48]
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    fit(small(), x, epochs=1, batch_size=24, rng=7, progress=False, checkpoint=tmp_path / "c.npz")
    old = without_backend(tmp_path / "c.npz", tmp_path / "old.npz")
    with pytest.warns(UserWarning, match=r"fit\(resume='.*old\.npz'\): the checkpoint records no back end "
                                         r"\(an older npvae wrote it\), so the run goes on "
                                         r"with numpy; pass backend='numpy' or 'numba' to choose") as caught:
        fit(small(), x, epochs=2, batch_size=24, progress=False, resume=old)
    assert [w.filename for w in caught] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(small(), x, epochs=2, batch_size=24, progress=False, resume=old, backend="numpy")
        fit(small(), x, epochs=2, batch_size=24, progress=False, resume=tmp_path / "c.npz")
        with pytest.raises(InputError):                 # a resume refused says only why
            fit(small(), x[:, :5], epochs=2, batch_size=24, progress=False, resume=old)


def test_a_resume_of_a_checkpoint_that_records_no_back_end_refused_by_the_checkpoint_says_only_why(sample, tmp_path,
                                                                                                 monkeypatch):
    """The note on the back end is for a resume that goes on: one the checkpoint refuses (another
    batch size, another model) gets the refusal alone."""
    x = sample[0][:48]
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    fit(small(), x, epochs=1, batch_size=24, rng=7, progress=False, checkpoint=tmp_path / "c.npz")
    old = without_backend(tmp_path / "c.npz", tmp_path / "old.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"cannot resume .*old\.npz exactly: batch_size"):
            fit(small(), x, epochs=2, batch_size=12, progress=False, resume=old)
        with pytest.raises(CheckpointError, match=r"latent_dim"):
            fit(small(latent=8), x, epochs=2, batch_size=24, progress=False, resume=old)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interrupt_without_checkpoint_path(sample, backend):
    images, _ = sample
    model = small()
    interrupt_at(model, 2, signal.SIGTERM)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM.*nothing was saved to disk \(the model holds the "
                                                  r"steps taken, and this exception's \.history the epochs done\)\. "
                                                  r"The Adam that fit made is gone, its moments with it: pass "
                                                  r"optimizer= to keep it, or checkpoint= to be able to resume "
                                                  r"exactly$") as info:
        fit(model, images[:64], epochs=2, batch_size=16, rng=0, progress=False, backend=backend)
    assert info.value.checkpoint is None and info.value.signum == signal.SIGTERM
    assert (info.value.epoch, info.value.step) == (0, 2)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    again = pickle.loads(pickle.dumps(info.value))          # as a process pool passes it back
    assert (str(again), again.signum, again.epoch, again.step, again.checkpoint) == \
        (str(info.value), signal.SIGTERM, 0, 2, None)
    model = small()                                         # an optimizer of one's own holds its steps too
    interrupt_at(model, 2, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"\(the model and the optimizer hold the steps taken, and this "
                                                  r"exception's \.history the epochs done\)$"):
        fit(model, images[:64], epochs=2, batch_size=16, rng=0, progress=False, backend=backend,
            optimizer=Adam(model.parameters()))


def test_the_line_an_interrupt_prints_holds_no_python_advice(sample, capsys):
    """It is what a command line (quickstart.py) shows before it exits: no model is left there
    to hold the steps, so the advice about the model and .history is the exception's only."""
    images, _ = sample
    model = small()
    interrupt_at(model, 2, signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"\.history"):
        fit(model, images[:64], epochs=2, batch_size=16, rng=0, progress=True, backend="numpy")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("no checkpoint path was given, so nothing was saved to disk"), line


def test_a_new_run_onto_a_stopped_runs_checkpoint_says_how_to_continue_it(sample, tmp_path):
    """A notebook cell run again after a stop replaced the checkpoint the stop said to resume
    from, without a word."""
    images, _ = sample
    path = tmp_path / "c.npz"
    model = small()
    interrupt_at(model, 3)
    with pytest.raises(TrainingInterrupted):
        fit(model, images[:64], epochs=2, batch_size=16, rng=0, progress=False, checkpoint=path)
    with pytest.warns(UserWarning, match=r"holds a run stopped at epoch 1, step 3 of its 2 epochs.*"
                                         r"pass resume=") as caught:
        fit(small(), images[:64], epochs=1, batch_size=16, rng=0, progress=False, checkpoint=path)
    assert caught[0].filename == __file__                   # at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a finished run's: nothing to lose
        fit(small(), images[:64], epochs=1, batch_size=16, rng=0, progress=False, checkpoint=path)


def test_resume_checks_settings_and_model(sample, tmp_path):
    images, _ = sample
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=tmp_path / "c.npz")
    model = small(seed=5)
    before = model.state_dict()
    with pytest.raises(InputError, match="batch_size 16 but the checkpoint was trained with 32"):
        fit(model, images[:64], epochs=2, batch_size=16, progress=False, resume=tmp_path / "c.npz")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())   # untouched
    with pytest.raises(InputError, match="n_train"):
        fit(small(), images[:96], epochs=2, batch_size=32, progress=False, resume=tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="latent_dim: checkpoint 4, model 8"):
        fit(small(latent=8), images[:64], epochs=2, batch_size=32, progress=False, resume=tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        fit(small(), images[:64], epochs=2, progress=False, resume=tmp_path / "missing.npz")
    two = _at_epoch(tmp_path, images, 2)
    with pytest.raises(InputError, match="already"):
        fit(small(), images[:64], epochs=1, batch_size=32, progress=False, resume=two)
    done = fit(small(), images[:64], epochs=1, batch_size=32, progress=False, resume=tmp_path / "c.npz")
    assert len(done) == 1                                   # nothing left to do


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_refuses_other_training_images_of_the_same_size(sample, tmp_path, backend):
    images, _ = sample
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=tmp_path / "c.npz",
        backend=backend)
    assert load_checkpoint(tmp_path / "c.npz").fit_config["train_data"]    # the images' fingerprint
    model = small(seed=5)
    before = model.state_dict()
    for other in (images[64:128], images[:64][::-1].copy(), images[:64] / 255.0):
        with pytest.raises(InputError, match=r"cannot resume .*c\.npz exactly: training images .*the same pixels "
                                             r"as uint8 and as floats differ, so give them as the run did"):
            fit(model, other, epochs=2, batch_size=32, progress=False, resume=tmp_path / "c.npz", backend=backend)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    done = fit(model, images[:64].copy(), epochs=2, batch_size=32, progress=False, resume=tmp_path / "c.npz",
               backend=backend)                             # the same images in another array: fine
    assert len(done) == 2


def test_resume_of_a_checkpoint_without_the_images_fingerprint_warns_that_it_cannot_check_them(sample, tmp_path):
    """Checkpoints from before fit recorded its images cannot tell other images of the same count."""
    images, _ = sample
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, checkpoint=tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__meta__"][()]))
    del meta["fit_config"]["train_data"]
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.warns(UserWarning, match=r"old\.npz holds no fingerprint of the images it was trained on.*cannot "
                                         r"check that train_images are those") as said:
        fit(small(), images[64:128], epochs=2, batch_size=32, progress=False, resume=tmp_path / "old.npz")
    assert [w.filename for w in said if "fingerprint" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a checkpoint with the fingerprint: no warning
        fit(small(), images[:64], epochs=2, batch_size=32, progress=False, resume=tmp_path / "c.npz")


def _at_epoch(tmp_path, images, epochs):
    path = tmp_path / f"e{epochs}.npz"
    fit(small(), images[:64], epochs=epochs, batch_size=32, rng=0, progress=False, checkpoint=path)
    return path


# -- divergence ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_weight_raises_divergence_and_keeps_checkpoint(sample, tmp_path, backend):
    images, _ = sample
    path = tmp_path / "c.npz"
    model = small()
    saved = {}

    def poison(record, m):
        saved["bytes"] = path.read_bytes()
        m.decoder[0].weight.data[0, 0] = np.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        words = r"callback after epoch 1 left NaN or inf in parameter decoder\.0\.weight; the last good checkpoint is"
        with pytest.raises(DivergenceError, match=words + r" .*c\.npz \(epoch 1\)") as info:
            fit(model, images[:64], epochs=3, batch_size=32, rng=0, checkpoint=path, callback=poison,
                progress=False, backend=backend)
    assert path.read_bytes() == saved["bytes"]
    history = info.value.history                          # the epochs before it, with or without a checkpoint
    assert isinstance(history, History) and history["epoch"] == [1]
    assert history[0] == load_checkpoint(path).history[0]
    assert load_checkpoint(path).epoch == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_learning_rate_diverges(sample, tmp_path, backend):
    images, _ = sample
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"epoch 1, step \d+ of 13.*not applied"):
            fit(small(), images[:800], epochs=2, batch_size=64, lr=1e6, rng=0, progress=False,
                checkpoint=tmp_path / "c.npz", backend=backend)
    assert not (tmp_path / "c.npz").exists()              # nothing diverged was ever written


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loss_that_is_not_finite_before_any_step_is_not_called_a_divergence(sample, backend):
    """A smaller learning rate cannot help a model whose first loss is already inf."""
    images, _ = sample
    model = small()
    model.encoder[2].bias.data[model.latent_dim:] = 100        # every log-variance: exp(100) is inf in float32
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"loss of the first batch is inf .*before any training step: "
                                                  r"the model as given makes it") as info:
            fit(model, images[:128], epochs=1, batch_size=64, rng=0, progress=False, backend=backend)
    assert "learning rate" not in str(info.value)
    trained_on = Adam(model.parameters())
    trained_on.t = 5                                            # an optimizer that has stepped: a divergence
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"training diverged at epoch 1, step 1 .*smaller learning rate"):
            fit(model, images[:128], epochs=1, batch_size=64, optimizer=trained_on, rng=0, progress=False,
                backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_inf_loss_on_a_later_epochs_first_batch_is_a_divergence(sample, backend):
    images, _ = sample

    def poison(record, model):                  # finite weights whose codes overflow: exp(100) in float32
        model.encoder[2].bias.data[model.latent_dim:] = 100
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match="training diverged at epoch 2, step 1") as info:
            fit(small(), images[:128], epochs=2, batch_size=64, rng=0, progress=False, backend=backend,
                callback=poison)
    assert "before any training step" not in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_optimizer_a_diverged_run_left_with_inf_is_refused_before_training(sample, backend):
    """Its inf moments would hold their parameters still for a whole run, then blame the new lr."""
    images, _ = sample
    model = small()
    opt = Adam(model.parameters(), lr=1e6)
    with warned_on_the_reference_only(backend), pytest.raises(DivergenceError):
        fit(model, images[:800], epochs=1, batch_size=64, optimizer=opt, rng=0, progress=False, backend=backend)
    fresh = small()
    model.load_state_dict(fresh.state_dict())                 # the weights start again; the optimizer does not
    opt.lr = 1e-3
    with pytest.raises(InputError, match=r"optimizer state v\.\d+ holds NaN or inf .*build a new one"):
        fit(model, images[:128], epochs=1, batch_size=64, optimizer=opt, rng=0, progress=False, backend=backend)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), fresh.parameters()))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_optimizer_state_edited_by_hand_out_of_shape_or_sign_is_refused_before_training(sample, backend):
    """A negative v trained into a loss of 1e12 on the fast path while the reference stopped; a
    moment of another shape, a list or none failed part-way with NumPy's or Python's own error."""
    images, _ = sample
    shape = r"m\.0 must be an array of its parameter's shape \(784, 32\), got shape \(4,\)"
    edits = {"negative": (lambda st: st["v"].__setitem__(..., -1.0),
                          r"v\.0 has negative values \(min -1\), but it is a mean of squares"),
             "shape": (lambda st: st.__setitem__("m", np.zeros(4, np.float32)), shape),
             "list": (lambda st: st.__setitem__("m", [0.0]), r"m\.0 must be .*, got list"),
             "missing": (lambda st: st.pop("v"), r"v\.0 must be .*, got nothing")}
    for what, (edit, words) in edits.items():
        model = small()
        opt = Adam(model.parameters())
        edit(opt.state[model.parameters()[0]])
        before = [p.data.copy() for p in model.parameters()]
        with pytest.raises(InputError, match=rf"^optimizer state {words}; build a new one"):
            fit(model, images[:128], epochs=1, batch_size=64, optimizer=opt, rng=0, progress=False, backend=backend)
        assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before)), what


def test_a_callers_own_errstate_raise_still_raises_at_numpys_line_on_the_fast_path(sample):
    """The fast path quiets NumPy's warnings, not a "raise" asked for to find where a NaN starts."""
    images, _ = sample
    with np.errstate(over="raise", invalid="raise"), pytest.raises(FloatingPointError) as caught:
        fit(small(), images[:800], epochs=2, batch_size=64, lr=1e6, rng=0, progress=False, backend="numba")
    assert caught.type is FloatingPointError             # NumPy's own, not fit's DivergenceError


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_whose_test_loss_overflows_diverges_though_its_steps_were_finite(sample, tmp_path, backend):
    images, _ = sample      # lr=10 on the tutorial model: finite steps, then codes whose variance is inf
    history = []
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"epoch 1: the test loss after it is (nan|inf) .*though every "
                                                  r"training step's loss was finite.*smaller learning rate than lr=10"):
            fit(VAE(784, 400, 20, rng=0), images[:500], images[800:], epochs=2, lr=10, rng=4, progress=False,
                checkpoint=tmp_path / "c.npz", callback=lambda record, model: history.append(record),
                backend=backend)
    assert history == [] and not (tmp_path / "c.npz").exists()      # no record, no checkpoint of it


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gradient_whose_square_overflows_adams_v_diverges_naming_the_epoch(tmp_path, backend, checkpoint):
    """float32: a log-variance of 80 gives a finite loss (1e34) but gradients above 1.8e19, whose
    squares are inf in Adam's v; that parameter would never move again. fit says so at the epoch's
    end, with or without a checkpoint to save (it once trained on, frozen, when there was none)."""
    images = (np.random.default_rng(0).random((64, 9)) * 255).astype(np.uint8)
    model = VAE(9, 5, 2, rng=0)
    model.encoder[2].bias.data[2:] = 80.0                    # logvar
    path = tmp_path / "c.npz" if checkpoint else None
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"training diverged in epoch 1: optimizer state v\.\d \(of "
                                                  r"parameter (en|de)coder\.\d\.(weight|bias)\) holds NaN or inf "
                                                  r"after the epoch's last step\. Try a smaller learning"):
            fit(model, images, images[:16], epochs=3, batch_size=16, rng=0, progress=False, checkpoint=path,
                backend=backend)
    assert path is None or not path.exists()


class _Warns(Module):
    """A layer of the user's own, identity forward; its backward warns (and, with
    ``blow_up``, divides by zero, so the next step's loss is NaN)."""

    def __init__(self, blow_up):
        super().__init__()
        self.blow_up = blow_up

    def forward(self, x):
        return x

    def backward(self, grad_out):
        zero = np.zeros(1, grad_out.dtype)
        if self.blow_up:
            return grad_out / zero                       # divide by zero: inf gradients
        np.log(zero)                                     # a warning, nothing more
        return grad_out


def _with_layer(layer):
    model = small()
    model.encoder[1] = layer                             # where the ReLU was: the reference runs it
    return model


def test_warnings_from_inside_fit_are_shown_as_python_shows_them(sample):
    """Nothing of fit's own stands between a layer's warning and the user's filters."""
    images, _ = sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")                 # once per place
        fit(_with_layer(_Warns(blow_up=False)), images[:256], epochs=2, batch_size=64, rng=0, progress=False,
            backend="numpy")
    assert [(w.category, os.path.basename(w.filename)) for w in caught] == [(RuntimeWarning, "test_train.py")]


def test_numpy_set_to_raise_still_raises_at_the_line(sample):
    images, _ = sample
    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        fit(_with_layer(_Warns(blow_up=True)), images[:128], epochs=1, batch_size=64, rng=0, progress=False,
            backend="numpy")


def test_the_fast_path_freezes_the_gc_only_while_fit_runs_and_the_reference_never():
    import gc
    images = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    seen = {}
    for backend in BACKENDS:
        seen[backend] = []
        fit(VAE(12, 8, 2, rng=0), images, epochs=2, batch_size=16, rng=0, progress=False, backend=backend,
            callback=lambda record, model: seen[backend].append(gc.get_freeze_count()))
        assert gc.get_freeze_count() == 0
    assert seen["numpy"] == [0, 0] and all(n > 0 for n in seen["numba"])
    gc.freeze()                                   # the caller's own freeze is left alone
    try:
        fit(VAE(12, 8, 2, rng=0), images, epochs=1, batch_size=16, rng=0, progress=False)
        assert gc.get_freeze_count() > 0          # not unfrozen by fit
    finally:
        gc.unfreeze()


def test_what_a_callback_leaves_behind_is_freed_during_fit_on_the_fast_path():
    """A notebook's callback draws a figure each epoch (a cycle of objects): the fast path's
    frozen collector used to keep every one of them until fit returned. (The reference leaves
    the collector alone: it frees them when its thresholds say, as anywhere in Python.)"""
    import weakref

    class Cycle:
        def __init__(self):
            self.me = self
            self.payload = np.zeros(1000)
    images = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    refs, alive = [], []

    def callback(record, model):
        alive.append(sum(r() is not None for r in refs[:-1]))     # those of earlier epochs but the last
        refs.append(weakref.ref(Cycle()))
    fit(VAE(12, 8, 2, rng=0), images, epochs=6, batch_size=16, rng=0, progress=False, backend="numba",
        callback=callback)
    assert alive == [0] * 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_callbacks_edit_after_the_last_epoch_stays(sample, backend):
    """The callback sees the model holding everything; what it changes is not overwritten after it."""
    images, _ = sample

    def edit(record, model):
        model.encoder[0].bias.data[:] = 7.0

    model = small()
    fit(model, images[:64], epochs=2, batch_size=32, progress=False, callback=edit, backend=backend)
    assert (model.encoder[0].bias.data == 7.0).all()


def test_history_refuses_a_field_it_does_not_have(sample):
    images, _ = sample
    history = fit(small(), images[:100], epochs=1, batch_size=50, rng=0, progress=False)
    assert history["test_loss"] == [None]
    with pytest.raises(KeyError, match="history has no field 'tset_loss'.*test_loss"):
        history["tset_loss"]
    with pytest.raises(KeyError, match="tset_loss"):
        history.best("tset_loss")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_divergence_without_a_checkpoint_still_hands_back_the_epochs_it_completed(sample, backend):
    images, _ = sample

    def poison_after_epoch_2(record, model):
        if record["epoch"] == 2:
            model.decoder[0].weight.data[0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(DivergenceError) as info:
            fit(small(), images[:64], epochs=4, batch_size=32, rng=0, callback=poison_after_epoch_2,
                progress=False, backend=backend)
    assert info.value.history["epoch"] == [1, 2]
    assert DivergenceError("raised elsewhere").history is None     # save_checkpoint's, say: no AttributeError


def test_a_slice_of_a_history_is_a_history(sample):
    images, _ = sample
    history = fit(small(), images[:100], images[100:150], epochs=3, batch_size=50, rng=0, progress=False)
    later = history[1:]
    assert isinstance(later, History) and later["epoch"] == [2, 3]
    assert later.best()["epoch"] in (2, 3) and later.last == history.last


# -- what a callback changes, a shared generator, paths, odd arrays ---------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learning_rate_schedule_in_the_callback_resumes_bit_for_bit(sample, tmp_path, backend):
    images, _ = sample

    def run(epochs, **kwargs):
        model = small(dtype=np.float64)
        opt = Adam(model.parameters(), lr=1e-3)
        schedule = lambda record, m: setattr(opt, "lr", 1e-3 * 0.5 ** record["epoch"])
        fit(model, images[:128], epochs=epochs, batch_size=64, optimizer=opt, rng=0, progress=False,
            backend=backend, callback=schedule, **kwargs)
        return model, opt

    straight, _ = run(3)
    run(1, checkpoint=tmp_path / "c.npz")
    assert load_checkpoint(tmp_path / "c.npz").optimizer_state["lr"] == 5e-4   # the callback's setting
    resumed, _ = run(3, resume=tmp_path / "c.npz")
    assert params_equal(straight, resumed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_generator_for_the_model_and_the_shuffle_still_resumes_exactly(sample, tmp_path, backend):
    images, _ = sample

    def run(epochs, **kwargs):
        g = np.random.default_rng(0)
        model = VAE(784, 32, 4, rng=g)
        fit(model, images[:128], epochs=epochs, batch_size=64, rng=g, progress=False, backend=backend, **kwargs)
        return model

    straight = run(2)
    assert params_equal(straight, run(2))                     # same seed, same bits
    run(1, checkpoint=tmp_path / "c.npz")
    assert params_equal(straight, run(2, resume=tmp_path / "c.npz"))


def test_the_metrics_may_not_go_into_the_checkpoint_a_run_resumes_from(sample, tmp_path):
    """Else the metrics file, trimmed at the resume's start, replaces the checkpoint with text."""
    images, _ = sample
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, backend="numpy",
        checkpoint=tmp_path / "c.npz")
    before = (tmp_path / "c.npz").read_bytes()
    with pytest.raises(InputError, match="metrics_path and resume are the same file"):
        fit(small(), images[:64], epochs=2, batch_size=32, progress=False, backend="numpy",
            resume=tmp_path / "c.npz", metrics_path=tmp_path / "c.npz")
    assert (tmp_path / "c.npz").read_bytes() == before


def test_output_paths_are_checked_before_any_training(sample, tmp_path):
    images, _ = sample
    (tmp_path / "afile").write_text("x")
    model = small()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InputError, match=r"checkpoint: cannot write .*afile.* is a file, not a folder"):
        fit(model, images[:64], epochs=1, progress=False, checkpoint=tmp_path / "afile" / "c.npz")
    with pytest.raises(InputError, match="metrics_path: cannot write"):
        fit(model, images[:64], epochs=1, progress=False, metrics_path=tmp_path / "afile" / "m" / "x.jsonl")
    with pytest.raises(InputError, match="metrics_path and checkpoint are the same file"):
        fit(model, images[:64], epochs=1, progress=False, checkpoint=tmp_path / "c", metrics_path=tmp_path / "c")
    with pytest.raises(InputError, match="ends with a slash"):
        fit(model, images[:64], epochs=1, progress=False, checkpoint=str(tmp_path / "new") + "/")
    long_name = "a" * 246 + ".npz"       # a legal name, but its temporary name (14 bytes more) is not
    for option in ("checkpoint", "metrics_path"):
        with pytest.raises(InputError, match=rf"{option}: the file name is too long \(250 bytes; at most 241\)"):
            fit(model, images[:64], epochs=1, progress=False, **{option: tmp_path / long_name})
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    assert sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_arrays_and_broken_models_are_refused_up_front(sample, backend):
    images, _ = sample
    masked = np.ma.masked_array(images[:64], mask=images[:64] > 200)
    with pytest.raises(InputTypeError, match=r"train_images is a masked array.*filled"):
        fit(small(), masked, epochs=1, progress=False, backend=backend)
    broken = small()
    broken.decoder[0].weight.data[0, 0] = np.nan
    with pytest.raises(InputError, match="decoder.0.weight holds NaN or inf, so training it cannot work"):
        fit(broken, images[:64], epochs=1, progress=False, backend=backend)
    with pytest.raises(InputError, match="decoder.0.weight holds NaN or inf, so every loss it gives is NaN"):
        evaluate_elbo(broken, images[:64], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_images_a_callback_breaks_in_place_are_refused_by_name(sample, backend):
    images, _ = sample
    floats = images[:64].astype(np.float32) / 255

    def spoil(record, model):
        floats[...] *= 3
    with pytest.raises(InputError, match=r"train_images \(after the callback\) must lie in \[0, 1\]"):
        fit(small(), floats, epochs=2, batch_size=32, progress=False, backend=backend, callback=spoil)
    floats = images[:64].astype(np.float32) / 255

    def round_off(record, model):
        floats[0, 0] = 1.0001
    with pytest.raises(InputError, match=r"\(after the callback\) must lie .*: np\.clip\(train_images, 0, 1\)$"):
        fit(small(), floats, epochs=2, batch_size=32, progress=False, backend=backend, callback=round_off)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_callbacks_numpy_false_stops_and_an_answer_that_is_no_bool_is_refused(sample, backend):
    images, _ = sample
    history = fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend=backend,
                  callback=lambda record, model: np.float64(record["train_loss"]) < 0)    # np.False_
    assert len(history) == 1
    with pytest.raises(InputTypeError, match=r"callback must return None, True or False .*got \{'beta': 1.0"):
        fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend=backend,
            callback=lambda record, model: record)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_callback_that_replaces_a_layer_is_refused_not_trained_around(sample, backend):
    """The optimizer holds the old layer's parameters: the reference would train those, detached."""
    images, _ = sample

    def replace(record, model):
        model.encoder[0] = Dense(784, 32, rng=5)
    with pytest.raises(InputError, match=r"the callback changed the model's layers or parameters"):
        fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend=backend, callback=replace)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_callback_that_swaps_the_kl_is_refused_at_once_when_test_images_are_evaluated(sample, backend):
    """Evaluation computes the stock terms: the reference trained an epoch with the new KL and then
    failed in that epoch's evaluation, naming evaluate_elbo, not the callback."""
    images, _ = sample
    wider = type("WiderPrior", (npvae.KL,), {})

    def swap(record, model):
        model.kl = wider()
    with pytest.raises(InputError, match=r"^the callback changed the model's layers or parameters.*model\.kl is a "
                                         r"WiderPrior"):
        fit(small(), images[:64], images[64:96], epochs=3, batch_size=32, progress=False, backend=backend,
            callback=swap)


def test_a_callback_that_swaps_an_activation_is_refused_by_the_fast_path(sample):
    images, _ = sample

    def swap(record, model):
        model.encoder[1] = Sigmoid()
    with pytest.raises(InputError, match=r"callback changed .*Dense -> Sigmoid -> Dense.*backend='numpy'"):
        fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend="numba", callback=swap)
    history = fit(small(), images[:64], epochs=2, batch_size=32, progress=False, backend="numpy", callback=swap)
    assert len(history) == 2                       # the reference runs the model as it now is


@pytest.mark.parametrize("backend", BACKENDS)
def test_binarize_with_a_batch_larger_than_the_data(sample, backend):
    images, _ = sample
    history = fit(small(), images[:40], epochs=1, batch_size=2**40, binarize=True, rng=0, progress=False,
                  backend=backend)
    assert history.last["steps"] == 1 and math.isfinite(history.last["train_loss"])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_model_that_diverged_resumes_from_its_last_good_checkpoint(tmp_path, backend):
    """What a DivergenceError advises: the model holds NaN, the checkpoint is good."""
    x = (np.random.default_rng(0).random((200, 20)) * 255).astype(np.uint8)
    model = VAE(20, 8, 2, rng=0)
    fit(model, x, epochs=1, progress=False, checkpoint=tmp_path / "good.npz", backend=backend)
    for p in model.parameters():
        p.data[...] = np.nan
    history = fit(model, x, epochs=2, progress=False, resume=tmp_path / "good.npz", backend=backend)
    assert np.isfinite(history["train_loss"][-1])
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_a_beta_per_epoch_is_fit_once_per_epoch_with_one_optimizer_and_generator():
    """docs/adding-a-layer.md: fit(epochs=1, beta=b, optimizer=opt, rng=g) per epoch trains,
    on the reference, bit for bit what a loop of one's own does."""
    from npvae.data import iterate_indices
    x = np.random.default_rng(0).random((200, 30)).astype(np.float32)
    betas = (0.2, 0.5, 1.0)
    by_fit, by_hand = VAE(30, 16, 3, rng=0), VAE(30, 16, 3, rng=0)
    opt, g = Adam(by_fit.parameters()), np.random.default_rng(5)
    for b in betas:
        fit(by_fit, x, epochs=1, batch_size=50, beta=b, optimizer=opt, rng=g, progress=False, backend="numpy")
    opt, g = Adam(by_hand.parameters()), np.random.default_rng(5)
    for b in betas:
        for idx in iterate_indices(len(x), 50, g):
            by_hand.zero_grad()
            by_hand.loss(x[idx], beta=b)
            by_hand.backward()
            opt.step()
    assert all(np.array_equal(p.data, q.data) for p, q in zip(by_fit.parameters(), by_hand.parameters()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fit_in_a_thread_leaves_the_warning_filters_of_other_threads_alone(sample, backend):
    """warnings.catch_warnings saves and restores the process's one list of filters, so a fit that
    used it dropped filters other threads added meanwhile (and two fits at once could leave theirs
    behind): fit keeps its warnings to itself without it. (Numba's compiler uses it: once compiled.)"""
    images, _ = sample
    fit(small(), images[:64], epochs=1, batch_size=64, progress=False, backend=backend)   # compiled: see the docs
    done = threading.Event()
    def train():
        try:
            for seed in range(2):
                fit(small(seed=seed), images[:64], images[:256], epochs=4, batch_size=64, rng=0, progress=False,
                    backend=backend)
        finally:
            done.set()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        thread = threading.Thread(target=train)
        thread.start()
        added = 0
        while not done.is_set():
            warnings.filterwarnings("ignore", message=f"a message of this test's own {added}")
            added += 1
            time.sleep(0.001)
        thread.join()
        kept = [f for f in warnings.filters if isinstance(f[1], re.Pattern) and "this test's own" in f[1].pattern]
        assert added > 20 and len(kept) == added


def test_a_fit_that_fails_leaves_the_pixel_scale_warning_on(monkeypatch):
    """fit keeps its own repeat of the warning quiet while it runs; one that raises must not keep
    it quiet for the rest of the thread."""
    import npvae.train as train
    images = (np.random.default_rng(0).random((64, 6)) > .5).astype(np.uint8)
    def broken(*args, **kwargs):
        raise RuntimeError("a failure inside fit")
    with monkeypatch.context() as m:
        m.setattr(train, "_training_steps", broken)
        with pytest.raises(RuntimeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(VAE(6, 5, 2, rng=0), images, epochs=1, batch_size=32, rng=0, progress=False, backend="numpy")
    with pytest.warns(PixelScaleWarning):
        fit(VAE(6, 5, 2, rng=0), images, epochs=1, batch_size=32, rng=0, progress=False, backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_optimizer_state_with_a_single_negative_entry_is_refused(sample, backend):
    """One negative v is as wrong as a whole negative v: refused before training, not only an all-negative one."""
    images, _ = sample
    model = small()
    opt = Adam(model.parameters())
    opt.state[model.parameters()[0]]["v"][3, 5] = -0.5
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(InputError, match=r"^optimizer state v\.0 has negative values \(min -0\.5\), but it is a "
                                         r"mean of squares; build a new one"):
        fit(model, images[:128], epochs=1, batch_size=64, optimizer=opt, rng=0, progress=False, backend=backend)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


class LazyAdam(Adam):
    """A subclass of Adam that makes its moments at its first step (its own way of keeping state)."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.state = {p: {} for p in self.params}

    def step(self):
        for p in self.params:
            for name in self.state_names:
                self.state[p].setdefault(name, np.zeros_like(p.data))
        super().step()


def test_a_subclass_of_adam_whose_state_is_made_at_its_first_step_trains_on_the_reference(sample):
    """Only Adam and SGD themselves are held to their state's shapes: a subclass (one's own) may keep
    its state its own way, as an Optimizer subclass may."""
    images, _ = sample
    model = small()
    opt = LazyAdam(model.parameters())
    history = fit(model, images[:64], epochs=1, batch_size=32, optimizer=opt, rng=0, progress=False,
                  backend="numpy")
    assert len(history) == 1 and opt.t == 2 and opt.state[model.parameters()[0]]["v"].any()


def test_a_callback_may_swap_the_kl_of_a_run_that_evaluates_no_test_images(sample):
    """The stock terms are required of the model only while fit evaluates test images."""
    images, _ = sample
    wider = type("WiderPrior", (npvae.KL,), {})
    seen = []

    def swap(record, model):
        model.kl = wider()
        seen.append(record["epoch"])
    history = fit(small(), images[:64], epochs=2, batch_size=32, rng=0, progress=False, backend="numpy",
                  callback=swap)
    assert len(history) == 2 and seen == [1, 2]


def test_resume_takes_a_run_folder_as_load_checkpoint_does(sample, tmp_path):
    images, _ = sample
    run = tmp_path / "run"
    kwargs = dict(epochs=2, batch_size=32, progress=False, backend="numpy")
    fit(small(), images[:64], rng=0, checkpoint=run / "checkpoint.npz", **{**kwargs, "epochs": 1})
    resumed = fit(small(), images[:64], resume=run, **kwargs)
    straight = fit(small(), images[:64], rng=0, **kwargs)
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]


def test_a_file_that_is_no_checkpoint_is_not_replaced_by_one(sample, tmp_path):
    """A data file's name mistyped as the checkpoint was replaced after the first epoch."""
    images, _ = sample
    data = tmp_path / "images.npz"
    np.savez(data, images=images[:64])
    before = data.read_bytes()
    with pytest.raises(InputError, match=r"checkpoint=.*images\.npz.* does not load as an npvae checkpoint"):
        fit(small(), images[:64], epochs=1, batch_size=32, progress=False, backend="numpy", checkpoint=data)
    assert data.read_bytes() == before
    (tmp_path / "empty.npz").write_bytes(b"")       # what tempfile.mkstemp(suffix=".npz") leaves: taken
    fit(small(), images[:64], epochs=1, batch_size=32, progress=False, backend="numpy",
        checkpoint=tmp_path / "empty.npz")
    assert npvae.load_checkpoint(tmp_path / "empty.npz").epoch == 1


def test_a_history_record_without_an_epoch_is_refused_before_anything_is_loaded(sample, tmp_path):
    """A hand-made or another tool's file: a raw KeyError or TypeError came after the model was loaded."""
    images, _ = sample
    path = tmp_path / "c.npz"
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, backend="numpy", checkpoint=path)
    ckpt = npvae.load_checkpoint(path)
    model = small(seed=5)
    for record in ({"train_loss": 1.0}, {"epoch": "one"}):
        npvae.save_checkpoint(path, small(), history=[record], epoch=1, rngs={
            name: ckpt.generator(name) for name in ("shuffle", "binarize")}, fit_config=ckpt.fit_config)
        before = model.state_dict()
        with pytest.raises(npvae.CheckpointError, match="a history record has no epoch number"):
            fit(model, images[:64], epochs=2, batch_size=32, progress=False, backend="numpy", resume=path,
                metrics_path=tmp_path / "m.jsonl")
        assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_parameter_is_refused_before_any_step(sample, backend):
    """The reference found it inside Adam's update, seven parameters of eight already moved."""
    images, _ = sample
    model = small()
    model.decoder[2].bias.data.flags.writeable = False     # a "frozen" layer, as one might try
    before = model.state_dict()
    with pytest.raises(InputError, match=r"model\.decoder\.2\.bias\.data is read-only, .* to freeze a layer"):
        fit(model, images[:64], epochs=1, batch_size=32, progress=False, backend=backend)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_this_machine_cannot_hold_is_refused_before_it_starts(sample, backend, monkeypatch):
    images, _ = sample
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 10**6)
    with pytest.raises(InputError, match=r"fit: training a 784-32-4 float32 VAE on batches of 32 needs about "
                                         r".* more memory, but 1\.0 MB is available"):
        fit(small(), images[:64], epochs=1, batch_size=32, progress=False, backend=backend)


def test_a_signal_while_a_callback_asks_to_stop_is_still_reported(sample):
    """Early stopping and a Ctrl-C at once: fit returned as if only the callback had asked, and a
    script sent SIGTERM went on and ended with status 0."""
    images, _ = sample

    def stop_after_a_ctrl_c(record, model):
        os.kill(os.getpid(), signal.SIGINT)             # arrives while the callback runs
        return False
    with pytest.raises(TrainingInterrupted) as info:
        fit(small(), images[:64], epochs=3, batch_size=32, progress=False, backend="numpy",
            callback=stop_after_a_ctrl_c)
    assert info.value.signum == signal.SIGINT and info.value.epoch == 1


def test_a_learning_rate_given_to_a_resume_that_will_not_use_it_is_warned_of(sample, tmp_path):
    images, _ = sample
    path = tmp_path / "c.npz"
    kwargs = dict(batch_size=32, progress=False, backend="numpy")
    fit(small(), images[:64], epochs=1, lr=2e-3, checkpoint=path, **kwargs)
    with pytest.warns(UserWarning, match=r"lr=0\.5 is not used: a resume goes on with the checkpoint's optimizer "
                                         r"settings \(lr=0\.002\); to change it, pass an optimizer"):
        fit(small(), images[:64], epochs=2, lr=0.5, resume=path, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # not given, or the same: nothing to say
        fit(small(), images[:64], epochs=2, resume=path, **kwargs)
        fit(small(), images[:64], epochs=2, lr=2e-3, resume=path, **kwargs)


@pytest.mark.parametrize("given, says", [
    (lambda x: x.astype(object), r"got dtype object; if it holds numbers, np\.asarray\(train_images, "
                                 r"dtype=np\.float32\) converts it"),
    (lambda x: (x - 0.5) / 0.29, r"got values in \[-1\.724, 1\.724\]; standardized or in \[-1, 1\]\? npvae "
                                 r"takes pixels in \[0, 1\], whatever the likelihood \(its own BCE is a Bernoulli per "
                                 r"pixel\): give the pixels in \[0, 1\] "
                                 r"\(undo the standardization, train_images \* std \+ mean; from \[-1, 1\], "
                                 r"\(train_images \+ 1\) / 2\)$"),
    (lambda x: 2 * x - 1, r"got values in \[-1, 1\]; standardized or in \[-1, 1\]\?"),
])
def test_images_as_data_scientists_have_them_are_refused_with_the_conversion(given, says):
    """A pandas DataFrame's .values (objects), standardized pixels, pixels in [-1, 1]."""
    x = np.linspace(0, 1, 64 * 784, dtype=np.float32).reshape(64, 784)
    with pytest.raises((InputError, npvae.InputTypeError), match=says):
        fit(small(), given(x), epochs=1, progress=False, backend="numpy")


def test_the_memory_check_counts_what_fit_adds_not_what_exists_or_an_nll(sample, monkeypatch):
    """It counted the model's parameters, which exist already, and the command line's NLL rows,
    which fit never computes: runs that fit were refused."""
    images, _ = sample
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 3 * 10**6)
    history = fit(small(), images[:64], epochs=1, batch_size=32, progress=False, backend="numpy")
    assert len(history) == 1


def test_resume_from_a_folder_without_a_checkpoint_says_what_to_give(sample, tmp_path):
    images, _ = sample
    with pytest.raises(npvae.CheckpointNotFoundError, match=r"is a folder without a checkpoint\.npz: give the "
                                                             r"checkpoint file itself"):
        fit(small(), images[:64], epochs=1, progress=False, backend="numpy", resume=tmp_path)


def test_a_data_file_as_checkpoint_is_not_replaced_when_resuming_from_another_file(sample, tmp_path):
    images, _ = sample
    run = dict(batch_size=32, progress=False, backend="numpy")
    fit(small(), images[:64], epochs=1, rng=0, checkpoint=tmp_path / "a.npz", **run)
    data = tmp_path / "images.npz"
    np.savez(data, images=images[:64])
    before = data.read_bytes()
    with pytest.raises(InputError, match="does not load as an npvae checkpoint"):
        fit(small(), images[:64], epochs=2, resume=tmp_path / "a.npz", checkpoint=data, **run)
    assert data.read_bytes() == before


def test_resuming_into_another_runs_checkpoint_does_not_suggest_resuming_that_one(sample, tmp_path):
    images, _ = sample
    run = dict(batch_size=32, progress=False, backend="numpy")
    fit(small(), images[:64], epochs=1, rng=0, checkpoint=tmp_path / "a.npz", **run)
    fit(small(), images[:64], epochs=3, rng=1, checkpoint=tmp_path / "b.npz",
        callback=lambda record, model: False, **run)           # b: a run stopped at epoch 1 of 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(small(), images[:64], epochs=2, resume=tmp_path / "a.npz", checkpoint=tmp_path / "b.npz", **run)


@pytest.mark.parametrize("record", [{"epoch": 0}, {"epoch": True}, {"epoch": 1.0}])
def test_a_history_record_numbered_0_true_or_a_float_is_refused(sample, tmp_path, record):
    images, _ = sample
    path = tmp_path / "c.npz"
    fit(small(), images[:64], epochs=1, batch_size=32, rng=0, progress=False, backend="numpy", checkpoint=path)
    ckpt = npvae.load_checkpoint(path)
    npvae.save_checkpoint(path, small(), history=[record], epoch=1, rngs={
        name: ckpt.generator(name) for name in ("shuffle", "binarize")}, fit_config=ckpt.fit_config)
    with pytest.raises(npvae.CheckpointError, match="a history record has no epoch number"):
        fit(small(5), images[:64], epochs=2, batch_size=32, progress=False, backend="numpy", resume=path)


def test_when_the_fast_path_does_not_fit_the_reference_is_offered_if_it_does(sample, monkeypatch):
    """784-32-4 on batches of 32 adds about 3.3 MB on the fast path, 1.5 MB on the reference."""
    images, _ = sample
    kwargs = dict(epochs=1, batch_size=32, progress=False)
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 2 * 10**6)
    with pytest.raises(InputError, match=r"needs about 3\.3 MB more memory, but 2\.0 MB is available: .* or "
                                         r"backend='numpy' \(slower; about 1\.5 MB\)"):
        fit(small(), images[:64], backend="numba", **kwargs)
    fit(small(), images[:64], backend="numpy", **kwargs)
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 1 * 10**6)
    with pytest.raises(InputError, match=r"needs about 3\.3 MB more memory, but 1\.0 MB is available: choose a "
                                         r"smaller model or batch_size$"):
        fit(small(), images[:64], backend="numba", **kwargs)
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 4 * 10**6)
    fit(small(), images[:64], backend="numba", **kwargs)


def test_resume_takes_a_run_folder_given_with_a_tilde(sample, tmp_path, monkeypatch):
    images, _ = sample
    monkeypatch.setenv("HOME", str(tmp_path))
    run = dict(batch_size=32, progress=False, backend="numpy")
    fit(small(), images[:64], epochs=1, rng=0, checkpoint=tmp_path / "run" / "checkpoint.npz", **run)
    assert len(fit(small(), images[:64], epochs=2, resume="~/run", **run)) == 2


def test_the_memory_check_counts_a_given_optimizers_state_as_there_and_a_checkpoints_copies(sample, tmp_path,
                                                                                            monkeypatch):
    """784-32-4 on batches of 32, on the reference: 1.5 MB added with fit's own Adam, 1.1 MB with one
    given (its moments exist already), 2.1 MB with a checkpoint (a save copies the state)."""
    images, _ = sample
    kwargs = dict(epochs=1, batch_size=32, progress=False, backend="numpy")
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 1.3 * 10**6)
    with pytest.raises(InputError, match=r"needs about 1\.5 MB more memory, but 1\.3 MB is available"):
        fit(small(), images[:64], **kwargs)
    model = small()
    fit(model, images[:64], optimizer=npvae.Adam(model.parameters()), **kwargs)
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 1.8 * 10**6)
    fit(small(), images[:64], **kwargs)
    with pytest.raises(InputError, match=r"needs about 2\.1 MB more memory, but 1\.8 MB is available"):
        fit(small(), images[:64], checkpoint=tmp_path / "c.npz", **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_gradient_or_optimizer_state_is_refused_before_any_step(sample, backend):
    images, _ = sample
    model = small()
    model.decoder[2].weight.grad.flags.writeable = False
    with pytest.raises(InputError, match=r"model\.decoder\.2\.weight\.grad is read-only"):
        fit(model, images[:64], epochs=1, batch_size=32, progress=False, backend=backend)
    model = small()
    opt = npvae.Adam(model.parameters())
    opt.state[model.decoder[2].bias]["v"].flags.writeable = False
    before = model.state_dict()
    with pytest.raises(InputError, match=r"optimizer\.state\[model\.decoder\.2\.bias\]\['v'\] is read-only"):
        fit(model, images[:64], optimizer=opt, epochs=1, batch_size=32, progress=False, backend=backend)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()) and opt.t == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_divergence_says_the_model_holds_the_steps_before_it_and_how_to_get_back(sample, tmp_path, backend):
    """"Not applied" alone reads as "the model is fine": it holds the steps that give the NaN loss."""
    images, _ = sample

    def poison(record, model):                  # finite weights whose codes overflow: exp(100) in float32
        model.encoder[2].bias.data[model.latent_dim:] = 100
    kept = tmp_path / "run.npz"
    for checkpoint, back in ((None, "start again from a new model"),
                             (kept, f"take the model back to the last good checkpoint, {kept} (epoch 1), with "
                                    f"npvae.load_checkpoint(path, model)")):
        with warned_on_the_reference_only(backend):
            with pytest.raises(DivergenceError, match=r"this step was not applied, but the steps before it, which the "
                                                      rf"model holds, give this loss; {re.escape(back)}\. "):
                fit(small(), images[:128], epochs=2, batch_size=64, rng=0, progress=False, backend=backend,
                    callback=poison, checkpoint=checkpoint)


# -- settings the tests above rarely use (each found untested by a mutation round) ---------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_one_epoch_warmup_ramps_over_the_first_epoch(sample, backend):
    h = fit(small(), sample[0][:100], epochs=2, batch_size=25, warmup=1, beta=1.0, rng=0, progress=False,
            backend=backend)
    assert h["beta_start"] == pytest.approx([0.25, 1.0]) and h["beta"] == pytest.approx([1.0, 1.0])  # 1/4 .. 4/4


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signal_during_an_epochs_last_step_stops_at_its_end_and_resumes_exactly(sample, tmp_path, backend):
    """The epoch is completed and saved whole: a mid-epoch checkpoint after its last step could not be resumed."""
    x, run = sample[0][:120], dict(batch_size=24, progress=False, rng=7, backend=backend)     # 5 steps an epoch
    straight = small()
    fit(straight, x, epochs=2, **run)
    model = small()
    interrupt_at(model, 5)
    with pytest.raises(TrainingInterrupted, match="end of epoch 1") as stopped:
        fit(model, x, epochs=2, checkpoint=tmp_path / "c.npz", **run)
    assert (stopped.value.epoch, stopped.value.step) == (1, 0)
    resumed = small(seed=5)
    fit(resumed, x, epochs=2, resume=tmp_path / "c.npz", **run)
    assert params_equal(straight, resumed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_epochs_train_seconds_count_the_time_before_the_stop(sample, tmp_path, backend):
    model = small()
    interrupt_at(model, 2)
    slow = model.rng.standard_normal

    def standard_normal(*args, **kwargs):           # steps 1 and 2 take 0.3 s longer; the stop is in step 2
        time.sleep(0.3)
        return slow(*args, **kwargs)
    model.rng.standard_normal = standard_normal
    run = dict(batch_size=24, progress=False, rng=7, backend=backend)
    with pytest.raises(TrainingInterrupted):
        fit(model, sample[0][:120], epochs=1, checkpoint=tmp_path / "c.npz", **run)
    assert fit(small(seed=5), sample[0][:120], epochs=1, resume=tmp_path / "c.npz", **run)[0]["train_seconds"] >= 0.6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eval_seed, binarize", [(5, False), (0, True), (5, True)])
def test_the_test_loss_is_evaluate_elbo_with_the_runs_eval_seed_and_binarization(sample, backend, eval_seed,
                                                                                  binarize):
    x, t = sample[0][:100], sample[0][100:160]
    model = small()
    h = fit(model, x, t, epochs=1, batch_size=25, rng=0, eval_seed=eval_seed, binarize=binarize, progress=False,
            backend=backend)
    want = evaluate_elbo(model, t, batch_size=25, seed=eval_seed, binarize=binarize, backend=backend)
    assert (h[0]["test_loss"], h[0]["test_recon"], h[0]["test_kl"]) == (want.total, want.recon, want.kl)


def test_a_resume_whose_epochs_end_inside_the_checkpoints_unfinished_epoch_is_refused_loading_nothing(sample,
                                                                                                      tmp_path):
    x, run = sample[0][:120], dict(batch_size=24, progress=False, rng=7, backend="numpy")
    model = small()
    interrupt_at(model, 7)                          # epoch 2, step 2
    with pytest.raises(TrainingInterrupted):
        fit(model, x, epochs=2, checkpoint=tmp_path / "c.npz", **run)
    again = small(seed=5)
    before = again.state_dict()
    with pytest.raises(InputError, match=r"epochs=1 .*already at epoch 2"):
        fit(again, x, epochs=1, resume=tmp_path / "c.npz", **run)
    assert all(np.array_equal(v, again.state_dict()[k]) for k, v in before.items())


@pytest.mark.filterwarnings("ignore:warmup=2 epochs is longer")
def test_a_resume_with_another_warmup_is_refused_by_name(sample, tmp_path):
    run = dict(batch_size=25, progress=False, rng=7, backend="numpy")
    fit(small(), sample[0][:100], epochs=1, warmup=2, checkpoint=tmp_path / "c.npz", **run)
    with pytest.raises(InputError, match=r"cannot resume .*warmup 0 but the checkpoint was trained with 2"):
        fit(small(), sample[0][:100], epochs=3, warmup=0, resume=tmp_path / "c.npz", **run)


@pytest.mark.parametrize("backend, retire", [("numba", True), ("numba", False), ("numpy", False)])
def test_a_run_whose_callback_changed_the_images_resumes_on_the_changed_images(sample, tmp_path, backend, retire):
    """The checkpoints record the images as the callback left them, on both back ends, with
    dead units retired (the fast path's default) or not."""
    x = sample[0][:150].copy()
    model = VAE(784, 16, 3, dtype=np.float64, rng=0)
    model.encoder[0].weight.data[:, [1, 4]] = 0.02      # dead on digits (mostly black): retired ...
    model.encoder[0].bias.data[[1, 4]] = -10.0          # ... and alive on their negatives

    def invert_once(record, model):
        if record["epoch"] == 2:
            np.subtract(255, x, out=x)
    run = dict(batch_size=50, rng=7, progress=False, backend=backend, retire_dead_units=retire)
    fit(model, x, epochs=2, callback=invert_once, checkpoint=tmp_path / "c.npz", **run)
    assert len(fit(VAE(784, 16, 3, dtype=np.float64, rng=1), x, epochs=3, resume=tmp_path / "c.npz", **run)) == 3
    with pytest.raises(InputError, match="training images"):
        fit(VAE(784, 16, 3, dtype=np.float64, rng=1), sample[0][:150], epochs=3, resume=tmp_path / "c.npz", **run)


def test_history_best_gives_the_first_of_tied_records():
    h = History([{"epoch": 1, "test_loss": 2.0}, {"epoch": 2, "test_loss": 1.0}, {"epoch": 3, "test_loss": 1.0}])
    assert h.best()["epoch"] == 2 and h.best("epoch")["epoch"] == 1


def test_history_columns_and_best_take_a_field_a_callback_added(sample):
    def note_lr(record, model):
        record["lr"] = 0.5 / record["epoch"]
    h = fit(small(), sample[0][:50], epochs=2, batch_size=25, rng=0, progress=False, backend="numpy",
            callback=note_lr)
    assert h["lr"] == [0.5, 0.25] and h.best("lr")["epoch"] == 2
    with pytest.raises(KeyError, match="no field 'nope'"):
        h["nope"]
