"""Dead-unit retirement (npvae/fast/dead_units.py): first-layer units proven dead on every
training image are left out of the fast path's steps, which changes nothing but the time.

Checked through what a user sees: ``fit(..., backend="numba", retire_dead_units=...)``, the
record in ``fit``'s checkpoints and ``npvae.fast.Trainer.dead_units()``; the proof's premise
(``FusedAdam.at_rest``) and the held columns' replay are checked on the fused optimizer.
"""
import os
import signal
import warnings

import numpy as np
import pytest

from npvae import SGD, VAE, Adam
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.data import load_idx_split, to_float
from npvae.errors import CheckpointError, InputError, StateError
from npvae.evaluate import evaluate_elbo
from npvae.fast import Trainer
from npvae.fast.layout import ParameterBlock
from npvae.fast.optim import FusedAdam, FusedSGD, fused
from npvae.module import Parameter
from npvae.train import TrainingInterrupted, fit

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")
OFF = [0, 2, 3, 5, 9]        # first-layer units switched off for every image in these tests
RUN = dict(batch_size=50, rng=7, progress=False, backend="numba")


@pytest.fixture(scope="module")
def images():
    return load_idx_split(SAMPLE, "t10k")[0]


def vae(seed=0, dtype=np.float32, hidden=16):
    """A small VAE whose first-layer units OFF are 0 for every image in [0, 1]."""
    model = VAE(784, hidden, 3, dtype=dtype, rng=seed)
    model.encoder[0].bias.data[OFF] = -30.0      # |x W| <= 784 / 28 = 28 for x in [0, 1]
    return model


def retired(path):
    """The units retired, from a checkpoint written by fit (None: no record kept)."""
    record = load_checkpoint(path).dead_units
    return None if record is None else record["retired"]


def params_equal(a, b):
    return all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))


def metrics(history):
    """History without the wall-clock fields, which differ between runs."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


class NoiseThatStops(np.random.Generator):
    """The model's noise stream, unchanged, except that the ``at``-th draw (the ``at``-th
    training step: each step draws its noise once) first calls ``stop()``."""

    def __init__(self, model, at, stop):
        super().__init__(model.rng.bit_generator)
        self.draws, self.at, self.stop = 0, at, stop

    def standard_normal(self, *args, **kwargs):
        self.draws += 1
        if self.draws == self.at:
            self.stop()
        return super().standard_normal(*args, **kwargs)


def interrupt_at(model, step):
    """SIGINT arrives during training step ``step`` (counted over the run, from 1)."""
    model.rng = NoiseThatStops(model, step, lambda: signal.raise_signal(signal.SIGINT))


# -- what gets retired ------------------------------------------------------------------------
@pytest.mark.parametrize("plain_sgd", [False, True], ids=["Adam", "SGD-plain"])
def test_units_dead_on_every_training_image_are_retired_and_never_move(images, tmp_path, plain_sgd):
    x = images[:200]
    model = vae()
    w0, b0 = model.encoder[0].weight.data.copy(), model.encoder[0].bias.data.copy()
    optimizer = SGD(model.parameters(), lr=1e-2) if plain_sgd else None      # stateless: every unit a candidate
    fit(model, x, images[200:260], epochs=3, checkpoint=tmp_path / "c.npz", optimizer=optimizer, **RUN)
    units = retired(tmp_path / "c.npz")
    assert set(OFF) <= set(units) and len(units) < 16
    W, b = model.encoder[0].weight.data, model.encoder[0].bias.data
    assert np.array_equal(W[:, units], w0[:, units]) and np.array_equal(b[units], b0[units])
    assert not np.array_equal(W, w0)                                  # the others trained
    # the claim itself: every retired unit is off for every training image
    pre = to_float(x, np.float64) @ W.astype(np.float64) + b
    assert (pre[:, units] <= 0).all()


def test_a_trainer_retires_units_over_whole_epochs(images):
    """npvae.fast.Trainer in a loop of epochs, as fit drives it; its record is JSON-ready."""
    x = images[:150]
    model = vae()
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=50, retire_dead_units=True)
    assert trainer.dead_units() == dict(retired=[], candidates=[], live=[])
    shuffle = np.random.default_rng(0)
    for epoch in range(2):
        trainer.begin_epoch()
        order = shuffle.permutation(len(x))
        for start in range(0, len(x), 50):
            trainer.step(trainer.batch(order[start:start + 50]))
        trainer.end_epoch()
        record = trainer.dead_units()
        assert set(OFF) <= set(record["retired"]) and all(type(u) is int for u in record["retired"])
    assert Trainer(model, Adam(model.parameters())).dead_units() is None   # off: no record


def retiring_trainer(x, model=None):
    """A trainer of ``model`` (default :func:`vae`) retiring dead units of ``x``, with its Adam."""
    model = vae() if model is None else model
    opt = Adam(model.parameters())
    return Trainer(model, opt, images=x, batch_size=50, retire_dead_units=True), opt


def step_on(trainer, *starts):
    """One step on each batch of 50 images from ``starts``."""
    for start in starts:
        trainer.step(trainer.batch(np.arange(start, start + 50)))


def test_an_epoch_that_leaves_images_out_retires_nothing_and_says_so(images):
    """Unit 1 fires on the last image only: an "epoch" of the first half proves nothing about it."""
    x = images[:200].copy()
    x[-1] = 255
    model = vae()
    model.encoder[0].bias.data[1] = -700.0
    model.encoder[0].weight.data[:, 1] = 1.0                # x @ 1 - 700 > 0 on the white image only
    trainer, _ = retiring_trainer(x, model)
    trainer.begin_epoch()
    step_on(trainer, 0, 50)
    with pytest.warns(UserWarning, match=r"saw 100 of the 200 training images, so no unit was retired"):
        trainer.end_epoch()
    assert trainer.dead_units()["retired"] == []
    for epoch in range(2):                                  # whole epochs: OFF retired, unit 1 not
        trainer.begin_epoch()
        step_on(trainer, 0, 50, 100, 150)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trainer.end_epoch()
    retired = trainer.dead_units()["retired"]
    assert set(OFF) <= set(retired) and 1 not in retired


def test_a_batch_refused_mid_epoch_does_not_count_as_seen(images):
    """A step that raises (the optimizer moved elsewhere) computed nothing: if the loop goes on
    without that batch, the epoch left its images out."""
    trainer, opt = retiring_trainer(images[:150])
    trainer.begin_epoch()
    step_on(trainer, 0)
    opt.t += 1                                              # as a reference step or a load would
    with pytest.raises(StateError):
        step_on(trainer, 50)
    step_on(trainer, 100)
    with pytest.warns(UserWarning, match=r"saw 100 of the 150 training images"):
        trainer.end_epoch()
    assert trainer.dead_units()["retired"] == []


def test_an_index_array_refilled_after_batch_leaves_what_the_step_counts_as_seen_unchanged(images):
    """batch(idx) takes the indices as they are when it is called: a loop that fills the next
    batch's indices into the same array before stepping the batch it holds visits every image."""
    trainer, _ = retiring_trainer(images[:150])
    trainer.begin_epoch()
    idx = np.arange(50)
    x = trainer.batch(idx)
    for start in (50, 100, None):
        if start is not None:
            idx[:] = np.arange(start, start + 50)           # the next batch's, in the same array
        trainer.step(x)
        if start is not None:
            x = trainer.batch(idx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no "saw 100 of the 150 training images"
        trainer.end_epoch()
    assert set(OFF) <= set(trainer.dead_units()["retired"])


def test_a_hand_edit_after_begin_epoch_is_taken_by_the_first_step_as_one_made_before_it(images):
    """With units retired (moved out of the steps' way), an edit between begin_epoch and the
    epoch's first step is taken by that step, as it is when made before begin_epoch."""
    results = []
    for edit_after_begin in (False, True):
        model = vae()
        trainer, _ = retiring_trainer(images[:100], model)
        trainer.begin_epoch()
        step_on(trainer, 0, 50)
        trainer.end_epoch()
        assert set(OFF) <= set(trainer.dead_units()["retired"])
        if not edit_after_begin:
            model.encoder[0].weight.data[:, 1] *= 0.5
        trainer.begin_epoch()
        if edit_after_begin:
            model.encoder[0].weight.data[:, 1] *= 0.5
        step_on(trainer, 0, 50)
        trainer.end_epoch()
        results.append(model)
    assert params_equal(*results)


def test_under_warnings_as_errors_an_incomplete_epoch_still_ends_and_syncs(images):
    trainer, opt = retiring_trainer(images[:100])
    trainer.begin_epoch()
    step_on(trainer, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="so no unit was retired"):
            trainer.end_epoch()
    assert opt.t == 1                                       # synced: the model holds the step
    trainer.begin_epoch()                                   # and a new epoch starts cleanly
    step_on(trainer, 0, 50)
    trainer.end_epoch()
    assert set(OFF) <= set(trainer.dead_units()["retired"])


@pytest.mark.parametrize("make_optimizer", [lambda ps: Adam(ps), lambda ps: SGD(ps, lr=1e-3, momentum=0.9),
                                            lambda ps: SGD(ps, lr=1e-2)],
                         ids=["Adam", "SGD-momentum", "SGD-plain"])
def test_training_with_retirement_equals_training_without(images, tmp_path, make_optimizer):
    """Retirement changes which products are computed, not what: float64 runs agree to round-off.

    Plain SGD has no state, so every unit is a candidate, including ones that fire while the
    units are reordered: the case where a unit's position and its number part."""
    x, t = images[:300], images[300:400]
    runs = {}
    for retire in (True, False):
        model = vae(dtype=np.float64, hidden=32)
        path = tmp_path / f"{retire}.npz"
        history = fit(model, x, t, epochs=4, optimizer=make_optimizer(model.parameters()), checkpoint=path,
                      retire_dead_units=retire, **RUN)
        runs[retire] = (model, history, retired(path))
    (a, ha, units), (b, hb, none) = runs[True], runs[False]
    assert set(OFF) <= set(units) and none is None
    for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
        np.testing.assert_allclose(ha[key], hb[key], rtol=1e-12, err_msg=key)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.max(np.abs(p.data - q.data)) <= 1e-12 * np.max(np.abs(q.data)), name


@pytest.mark.parametrize("dead", [list(range(12, 16)), list(range(16))], ids=["the-last-units", "every-unit"])
def test_retiring_units_that_are_last_already_trains_what_the_reference_trains(images, tmp_path, dead):
    """Retired units are moved behind the computed ones; when they are the last ones already
    (or all of them), nothing moves, and the fast path still trains what the reference does."""
    x, t = images[:150], images[150:200]
    runs = {}
    for backend in ("numba", "numpy"):
        model = VAE(784, 16, 3, dtype=np.float64, rng=0)
        model.encoder[0].bias.data[dead] = -30.0
        path = tmp_path / f"{backend}.npz"
        runs[backend] = (model, fit(model, x, t, epochs=3, checkpoint=path, **{**RUN, "backend": backend}))
    assert retired(tmp_path / "numba.npz") == dead
    (fast, fast_history), (ref, ref_history) = runs["numba"], runs["numpy"]
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose(fast_history[key], ref_history[key], rtol=1e-10, err_msg=key)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert np.max(np.abs(p.data - q.data)) <= 1e-10 * np.max(np.abs(q.data)), name


def test_a_callback_that_changes_the_training_images_starts_the_record_afresh(images, tmp_path):
    """Units proven dead on the images before a callback inverted them fire on the new ones:
    the fast path trains them again, as the reference does."""
    runs, units = {}, [1, 4]
    for backend in ("numba", "numpy"):
        x = images[:150].copy()
        model = VAE(784, 16, 3, dtype=np.float64, rng=0)
        model.encoder[0].weight.data[:, units] = 0.02     # x W < 10 on digits (mostly black)...
        model.encoder[0].bias.data[units] = -10.0          # ...and > 10 on their negatives

        def invert_once(record, model, x=x):
            if record["epoch"] == 2:
                np.subtract(255, x, out=x)

        history = fit(model, x, epochs=4, callback=invert_once, checkpoint=tmp_path / f"{backend}.npz",
                      **{**RUN, "backend": backend})
        runs[backend] = (model, history)
    assert not set(units) & set(retired(tmp_path / "numba.npz"))  # the inverted images woke them
    (fast, fast_history), (ref, ref_history) = runs["numba"], runs["numpy"]
    np.testing.assert_allclose(fast_history["train_loss"], ref_history["train_loss"], rtol=1e-10)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert np.max(np.abs(p.data - q.data)) <= 1e-10 * np.max(np.abs(q.data)), name


def test_nothing_is_retired_with_binarization_weight_decay_or_the_switch_off(images, tmp_path):
    x = images[:100]
    fit(vae(), x, epochs=2, binarize=True, checkpoint=tmp_path / "bin.npz", **RUN)
    assert retired(tmp_path / "bin.npz") is None                    # images change every epoch
    model = vae()
    opt = Adam(model.parameters(), weight_decay=1e-4)                # never at rest
    fit(model, x, epochs=2, optimizer=opt, checkpoint=tmp_path / "wd.npz", **RUN)
    assert retired(tmp_path / "wd.npz") == []
    model = vae()
    opt = SGD(model.parameters(), weight_decay=1e-4)
    fit(model, x, epochs=2, optimizer=opt, checkpoint=tmp_path / "sgd-wd.npz", **RUN)
    assert retired(tmp_path / "sgd-wd.npz") == []
    fit(vae(), x, epochs=2, retire_dead_units=False, checkpoint=tmp_path / "off.npz", **RUN)
    assert retired(tmp_path / "off.npz") is None
    fit(vae(), x, epochs=2, checkpoint=tmp_path / "on.npz", **RUN)   # (the same runs do retire)
    assert set(OFF) <= set(retired(tmp_path / "on.npz"))


def test_a_retired_unit_that_a_callback_revives_is_computed_again(images, tmp_path):
    path = tmp_path / "c.npz"
    model = vae()
    revived = {}

    def revive(record, m):
        if record["epoch"] == 2:
            assert 0 in retired(path)                    # the checkpoint is written before the callback
            m.encoder[0].bias.data[0] = 5.0              # unit 0 now fires for every image
            revived["w"] = m.encoder[0].weight.data[:, 0].copy()

    fit(model, images[:100], epochs=3, checkpoint=path, callback=revive, **RUN)
    units = retired(path)
    assert 0 not in units and set(OFF[1:]) <= set(units)
    assert (model.encoder[0].weight.data[:, 0] != revived["w"]).any()     # it trained again in epoch 3
    assert model.encoder[0].bias.data[0] != 5.0


@pytest.mark.parametrize("rows", [slice(None), 400], ids=["every weight", "one weight"])
def test_a_retired_unit_whose_optimizer_state_changes_is_computed_again(images, tmp_path, rows):
    """A callback that loads other optimizer state (a first moment that moves unit 0, in every
    weight of its column or in one: at rest means at rest in every weight) ends the proof that
    the unit's parameters stay put: it is computed and updated again."""
    path = tmp_path / "c.npz"
    model = vae()
    opt = Adam(model.parameters())
    kept = {}

    def push(record, m):
        if record["epoch"] == 2:
            assert 0 in retired(path)
            state = opt.state_dict()
            state["m.0"][rows, 0] = 1e-3                 # m of encoder.0.weight, unit 0's column
            opt.load_state_dict(state)
            kept["w"] = np.copy(m.encoder[0].weight.data[rows, 0])

    fit(model, images[:100], epochs=3, optimizer=opt, checkpoint=path, callback=push, **RUN)
    assert 0 not in retired(path) and set(OFF[1:]) <= set(retired(path))
    assert np.all(model.encoder[0].weight.data[rows, 0] != kept["w"])   # Adam's moment moved it


def test_a_unit_that_fired_in_an_earlier_epoch_only_is_retired_once_an_epoch_proves_it_dead(images, tmp_path):
    """The evidence is gathered afresh each epoch: unit 0 fires in epoch 1, a callback switches it
    off for good, and epoch 2 proves it dead."""
    model = vae()
    model.encoder[0].bias.data[0] = 5.0                  # fires on every image in epoch 1

    def switch_off(record, m):
        if record["epoch"] == 1:
            m.encoder[0].bias.data[0] = -30.0

    fit(model, images[:100], epochs=3, optimizer=SGD(model.parameters(), lr=1e-2), callback=switch_off,
        checkpoint=tmp_path / "c.npz", **RUN)
    assert 0 in retired(tmp_path / "c.npz") and set(OFF) <= set(retired(tmp_path / "c.npz"))


def test_adams_moments_of_retired_units_end_as_training_without_retirement_leaves_them(images):
    """The held columns' second moments decay at every step they sit out: fit gives back the
    optimizer state of training without retirement (here, dead units with v > 0 and m = 0)."""
    states = {}
    for retire in (True, False):
        model = vae(dtype=np.float64)
        opt = Adam(model.parameters())
        state = opt.state_dict()
        state["v.0"][:, OFF] = 1e-6                      # left by firing long ago; m is 0: at rest
        opt.load_state_dict(state)
        fit(model, images[:100], epochs=2, optimizer=opt, retire_dead_units=retire, **RUN)
        states[retire] = opt.state_dict()
    assert states[True]["v.0"][:, OFF].max() < 1e-6     # they decayed
    for key, want in states[False].items():
        np.testing.assert_allclose(states[True][key], want, rtol=1e-12, atol=0, err_msg=key)


def test_evaluation_in_fit_computes_the_retired_units(images, tmp_path):
    """A test image may excite a unit that no training image does: evaluation skips nothing."""
    x = images[:100]
    model = vae()
    W, b = model.encoder[0].weight.data, model.encoder[0].bias.data
    crafted = np.where(W[:, OFF] > 0, 255, 0).T.astype(np.uint8)     # each lights up one off unit
    lit = np.diag((crafted / 255) @ W[:, OFF])
    dark = (to_float(x, np.float64) @ W[:, OFF]).max(axis=0)         # ...more than any training image
    assert (lit > dark).all()
    b[OFF] = -(lit + dark) / 2
    h = fit(model, x, crafted, epochs=3, checkpoint=tmp_path / "c.npz", **RUN)
    assert set(OFF) <= set(retired(tmp_path / "c.npz"))
    assert h[-1]["test_loss"] == evaluate_elbo(model, crafted, batch_size=50, seed=0, backend="numba").total
    reference = evaluate_elbo(model, crafted, batch_size=50, seed=0, backend="numpy").total
    assert h[-1]["test_loss"] == pytest.approx(reference, rel=1e-5)
    # and the same images with those units left dark score differently: they were computed
    b[OFF] = -30.0
    assert evaluate_elbo(model, crafted, batch_size=50, seed=0, backend="numba").total != h[-1]["test_loss"]


def test_an_error_mid_epoch_leaves_the_model_whole_and_in_order(images, tmp_path):
    """An exception in epoch 3 (units retired and reordered) leaves the model and the optimizer
    as the step before left them, units in their places: what a SIGINT there would have saved."""
    x, steps = images[:100], 2 * 2 + 2            # 2 steps an epoch: epoch 3, step 2
    saved = vae()
    interrupt_at(saved, steps - 1)
    with pytest.raises(TrainingInterrupted):
        fit(saved, x, epochs=4, checkpoint=tmp_path / "c.npz", **RUN)
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert set(OFF) <= set(ckpt.dead_units["retired"]) and (ckpt.epoch, ckpt.step) == (2, 1)

    def boom():
        raise RuntimeError("boom")
    model = vae()
    opt = Adam(model.parameters())
    model.rng = NoiseThatStops(model, steps, boom)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, x, epochs=4, optimizer=opt, **RUN)
    state = model.state_dict()
    assert all(np.array_equal(state[name], value) for name, value in ckpt.model_state.items())
    assert all(np.array_equal(opt.state_dict()[key], value) for key, value in ckpt.optimizer_state.items())


# -- checkpoints: exact resumes with units retired ----------------------------------------------
def test_resume_mid_epoch_with_retired_units_is_bit_identical(images, tmp_path):
    x, t = images[:150], images[150:200]          # 3 steps an epoch
    straight = vae()
    h1 = fit(straight, x, t, epochs=4, checkpoint=tmp_path / "straight.npz", **RUN)
    model = vae()
    interrupt_at(model, 8)                         # epoch 3, step 2: units retired, evidence pending
    with pytest.raises(TrainingInterrupted):
        fit(model, x, t, epochs=4, checkpoint=tmp_path / "c.npz", **RUN)
    saved = load_checkpoint(tmp_path / "c.npz")
    assert (saved.epoch, saved.step) == (2, 2)
    assert set(OFF) <= set(saved.dead_units["retired"]) and set(saved.dead_units) == {"retired", "candidates", "live"}
    resumed = vae(seed=5)                          # another start: everything comes from the file
    with warnings.catch_warnings():                # the resumed epoch counts the images seen before the stop
        warnings.simplefilter("error")             # (else: "saw K of N training images", nothing retired)
        h2 = fit(resumed, x, t, epochs=4, resume=tmp_path / "c.npz", checkpoint=tmp_path / "resumed.npz",
                 **dict(RUN, rng=0))
    assert params_equal(straight, resumed)
    assert metrics(h1) == metrics(h2)
    assert load_checkpoint(tmp_path / "resumed.npz").dead_units == load_checkpoint(tmp_path / "straight.npz").dead_units


def test_resuming_into_a_model_of_another_size_names_the_sizes_not_the_record(images, tmp_path):
    fit(vae(), images[:100], epochs=2, checkpoint=tmp_path / "c.npz", **RUN)
    narrow = VAE(784, 4, 3, rng=0)                  # fewer units than the record's retired ones
    before = narrow.state_dict()
    with pytest.raises(CheckpointError, match=r"hidden_dims: checkpoint \[16\], model \[4\]"):
        fit(narrow, images[:100], epochs=3, resume=tmp_path / "c.npz", **RUN)
    assert all(np.array_equal(before[k], v) for k, v in narrow.state_dict().items())


def test_a_malformed_record_in_a_checkpoint_is_refused_before_loading(images, tmp_path):
    model = vae()
    fit(model, images[:100], epochs=2, checkpoint=tmp_path / "c.npz", **RUN)
    ckpt = load_checkpoint(tmp_path / "c.npz")
    opt = Adam(model.parameters())
    ckpt.load_into(None, opt)
    save_checkpoint(tmp_path / "bad.npz", model, opt, epoch=2, history=ckpt.history, rngs=ckpt.rng_states,
                    fit_config=ckpt.fit_config, dead_units={"retired": [99], "candidates": [], "live": []})
    fresh = vae(seed=3)
    before = {k: v.copy() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"bad\.npz.*dead_units\['retired'\].*\[0, 16\)"):
        fit(fresh, images[:100], epochs=3, resume=tmp_path / "bad.npz", **RUN)
    assert all(np.array_equal(before[k], v) for k, v in fresh.state_dict().items())
    # True is an int to Python, not a unit index
    save_checkpoint(tmp_path / "bool.npz", model, opt, epoch=2, history=ckpt.history, rngs=ckpt.rng_states,
                    fit_config=ckpt.fit_config, dead_units={"retired": [True], "candidates": [], "live": []})
    with pytest.raises(CheckpointError, match=r"bool\.npz.*dead_units\['retired'\].*got \[True\]"):
        fit(fresh, images[:100], epochs=3, resume=tmp_path / "bool.npz", **RUN)


# -- the premise: where the fused optimizer is at rest ------------------------------------------
def fused_over(param, optimizer):
    """The fused twin of ``optimizer`` over a block holding ``param`` and the optimizer's state."""
    block = ParameterBlock([param.shape], param.dtype, type(optimizer).state_names)
    opt = fused(optimizer, block, [param])
    block.load([param.data], opt.states())
    return opt, block


def no_gradient(param):
    """The first weight's gradient as live columns: none."""
    return np.zeros((param.shape[0], 0), param.dtype, order="F"), np.zeros(0, np.intp)


def test_at_rest_is_where_a_zero_gradient_cannot_move_a_parameter():
    p = Parameter(np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32))
    adam = Adam([p])
    opt, _ = fused_over(p, adam)
    assert isinstance(opt, FusedAdam) and opt.at_rest(0).all()        # nothing moved yet: m = 0
    adam.state[p]["m"][3, 1] = 1e-3
    adam.state[p]["v"][3, 1] = 1e-6
    opt, _ = fused_over(p, adam)
    at = opt.at_rest(0)
    assert not at[3, 1] and at.sum() == at.size - 1
    assert fused_over(p, Adam([p], weight_decay=1e-4))[0].at_rest(0) is None
    opt, _ = fused_over(p, SGD([p]))
    assert isinstance(opt, FusedSGD) and opt.at_rest(0).all()         # no momentum: never moves
    sgd = SGD([p], momentum=0.9)
    sgd.state[p]["momentum_buffer"][0, 0] = 1.0
    at = fused_over(p, sgd)[0].at_rest(0)
    assert not at[0, 0] and at.sum() == at.size - 1
    assert fused_over(p, SGD([p], weight_decay=1e-3))[0].at_rest(0) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_at_rest_is_sound_and_not_just_a_zero_first_moment(dtype):
    """4000 random states around the bound: entries called at rest do not move in 3000
    zero-gradient steps (bit for bit), though nearly all have a nonzero first moment;
    the entries not called at rest mostly do move."""
    r = np.random.default_rng(3)
    shape = (40, 100)
    n = 40 * 100
    p = Parameter((r.choice([-1, 1], n) * 10.0 ** r.uniform(-3, 0, n)).astype(dtype).reshape(shape))
    p.data.flat[:20] = 0
    adam = Adam([p])
    adam.t = int(r.integers(1, 5000))
    lo, hi = (-16, -6) if dtype == np.float32 else (-26, -12)        # some move, some not
    m, v = adam.state[p]["m"], adam.state[p]["v"]
    m.flat[:] = r.choice([-1, 1], n) * 10.0 ** r.uniform(lo, hi, n)
    v.flat[:] = 10.0 ** r.uniform(-14, -2, n)
    v.flat[20:40] = 0                                                 # only eps in the denominator
    m[:, 99] = 0                                                      # a column whose moment has flushed
    opt, block = fused_over(p, adam)
    at = opt.at_rest(0)
    assert not at.flat[:20].any()                       # p = 0 with m != 0: never taken as at rest
    assert 0.2 < at.mean() < 0.8 and (m[at] != 0).mean() > 0.95 and at[:, 99].all()
    values = block.view(block.rows[0], 0)
    before = values.copy()
    for _ in range(3000):
        opt.step(no_gradient(p))
    assert np.array_equal(values[at], before[at])
    assert (values[~at] != before[~at]).mean() > 0.9


def held_versus_not(make_optimizer):
    """A (6, 5) weight whose last two columns get zero gradients and are at rest: 12 steps with
    those columns held (released halfway and at the end), and 12 steps without."""
    out = []
    for hold in (True, False):
        p = Parameter(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32))
        optimizer = make_optimizer(p)
        if isinstance(optimizer, Adam):     # at rest, with both moments still decaying (m too little to move p)
            optimizer.state[p]["v"][:, 3:] = np.linspace(1e-37, 0.5, 12).reshape(6, 2)
            optimizer.state[p]["m"][:, 3:] = np.linspace(-1e-14, 1e-14, 12).reshape(6, 2)
            optimizer.state[p]["m"][0, 3] = 2e-38                    # flushes to 0 on the first step
        opt, block = fused_over(p, optimizer)
        assert opt.at_rest(0)[:, 3:].all()
        grads = np.random.default_rng(1).standard_normal((12, 6, 3)).astype(np.float32)
        for t in range(12):
            if hold and t in (0, 7):
                opt.hold(3)
            opt.step((np.asfortranarray(grads[t]), np.arange(3)))    # live columns 0, 1, 2
            if hold and t in (5, 11):
                opt.release()
        opt.store()
        block.store([p.data], opt.states())
        out.append((p.data.copy(), optimizer.state_dict()))
    return out


@pytest.mark.parametrize("make_optimizer", [lambda p: Adam([p]), lambda p: SGD([p], lr=0.1, momentum=0.9)],
                         ids=["Adam", "SGD"])
def test_held_columns_end_where_the_steps_would_have_left_them_bit_for_bit(make_optimizer):
    (p1, s1), (p2, s2) = held_versus_not(make_optimizer)
    assert np.array_equal(p1, p2)
    assert s1.keys() == s2.keys() and all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert s1["t"] == 12


@pytest.mark.parametrize("make_optimizer", [lambda ps: SGD(ps, lr=1e-2), lambda ps: Adam(ps)], ids=["SGD", "Adam"])
@pytest.mark.parametrize("mid_epoch", ["sync", "sync-load"])
def test_a_sync_or_load_inside_an_epoch_keeps_the_evidence(images, make_optimizer, mid_epoch):
    """sync() or load() in the middle of an epoch (to evaluate, to save) and the steps after it
    still count: a unit that fires only on the images after it is not retired."""
    x = images[:300].copy()
    x[:150] = 0                                    # the units that fire do so on the last 150 only
    runs = {}
    for interrupted in (False, True):
        model = vae(hidden=16)
        opt = make_optimizer(model.parameters())
        trainer = Trainer(model, opt, images=x, batch_size=30, retire_dead_units=True)
        for epoch in range(3):
            trainer.begin_epoch()
            for start in range(0, 300, 30):
                trainer.step(trainer.batch(np.arange(start, start + 30)))
                if interrupted and start == 120:
                    for call in mid_epoch.split("-"):
                        getattr(trainer, call)()
            trainer.end_epoch()
        runs[interrupted] = (model, trainer.dead_units()["retired"])
    (plain, retired_plain), (synced, retired_synced) = runs[False], runs[True]
    assert retired_synced == retired_plain and set(OFF) <= set(retired_plain)
    first = plain.encoder[0]                     # and the claim itself: each is off on every image
    pre = to_float(x, np.float64) @ first.weight.data.astype(np.float64) + first.bias.data
    assert (pre[:, retired_plain] <= 0).all()
    for p, q in zip(synced.parameters(), plain.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=1e-6)


@pytest.mark.parametrize("edit", ["weights and bias", "bias alone"])
def test_a_unit_edited_after_a_mid_epoch_sync_is_not_retired_on_old_evidence(images, edit):
    """Unit j is off on the first half of the epoch, then edited (its weights and bias, or its bias
    alone) so that it would fire there, but not on the second half (blank images): the first
    half's evidence is about the old parameters, so j must not be retired."""
    x = images[:100].copy()
    x[50:] = 0
    j = OFF[0]
    model = vae(hidden=16)
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=50, retire_dead_units=True)
    trainer.begin_epoch()
    trainer.step(trainer.batch(np.arange(50)))
    trainer.sync()
    W, b = model.encoder[0].weight.data, model.encoder[0].bias.data
    if edit == "weights and bias":
        W[:, j], b[j] = 1.0, -0.5
    else:
        b[j] = 0.0
    assert (to_float(x[:50], np.float64) @ W[:, j] + b[j] > 0).any() and b[j] <= 0    # blank images: off
    trainer.step(trainer.batch(np.arange(50, 100)))
    trainer.end_epoch()
    retired = trainer.dead_units()["retired"]
    assert j not in retired and set(OFF[1:]) <= set(retired)


def test_a_unit_revived_after_a_mid_epoch_sync_is_computed_again(images):
    x = images[:100]
    model = vae(hidden=16)
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=50, retire_dead_units=True)
    for epoch in range(2):                       # OFF retired after epoch 0; OFF[0] revived in epoch 1
        trainer.begin_epoch()
        trainer.step(trainer.batch(np.arange(50)))
        if epoch == 1:
            trainer.sync()
            model.encoder[0].bias.data[OFF[0]] = 100.0
        trainer.step(trainer.batch(np.arange(50, 100)))
        trainer.end_epoch()
    assert OFF[0] not in trainer.dead_units()["retired"]


def test_with_retirement_steps_take_the_trainers_own_batches(images):
    model = vae()
    trainer = Trainer(model, Adam(model.parameters()), images=images[:100], batch_size=50, retire_dead_units=True)
    with pytest.raises(InputError, match="trainer.batch"):
        trainer.step(np.zeros((50, 784), np.float32))


@pytest.mark.parametrize("retire", [False, True], ids=["switch off", "retiring"])
def test_steps_taken_before_an_epoch_begins_are_kept_not_dropped(images, retire):
    """A warm-up step, or epochs begun without end_epoch: begin_epoch writes the steps it has
    not synced back first (it once took the model's old values again, and the steps were lost)."""
    x = images[:100]
    ref = vae(dtype=np.float64)
    ref_opt = Adam(ref.parameters())
    model = vae(dtype=np.float64)
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=50, retire_dead_units=retire)
    trainer.step(trainer.batch(np.arange(50)))                    # a warm-up step
    for _ in range(2):
        trainer.begin_epoch()                                     # and no end_epoch
        step_on(trainer, 0, 50)
    trainer.sync()
    for idx in [np.arange(50)] + [np.arange(0, 50), np.arange(50, 100)] * 2:
        ref.zero_grad()
        ref.loss(to_float(x[idx], np.float64))
        ref.backward()
        ref_opt.step()
    assert trainer.optimizer.t == ref_opt.t == 5
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-10, atol=1e-12)


def test_the_dead_unit_record_is_loaded_between_epochs_only(images):
    """Inside an epoch the units retired so far are already left out of its steps: a fresh
    record then would leave them out for the rest of it. Between epochs it starts afresh."""
    x = images[:150]
    trainer, _ = retiring_trainer(x)
    for _ in range(2):
        trainer.begin_epoch()
        step_on(trainer, 0, 50, 100)
        trainer.end_epoch()
    assert set(OFF) <= set(trainer.dead_units()["retired"])
    trainer.begin_epoch()
    before = trainer.dead_units()
    with pytest.raises(StateError, match=r"inside an epoch.*before begin_epoch\(\) or after end_epoch\(\)"):
        trainer.load_dead_units(None)
    assert trainer.dead_units() == before                         # nothing changed
    step_on(trainer, 0, 50, 100)
    trainer.end_epoch()
    trainer.load_dead_units(None)
    assert trainer.dead_units() == dict(retired=[], candidates=[], live=[])


def test_a_record_whose_retired_units_fire_on_these_parameters_has_them_computed_again(images):
    """A record saved with other parameters (another checkpoint's) retired units that fire here:
    training left them out, silently, and ended 26% away from the reference. Checked on loading."""
    x = images[:150]
    model, reference = vae(dtype=np.float64), vae(dtype=np.float64)
    trainer, _ = retiring_trainer(x, model)
    ref_opt = Adam(reference.parameters())
    firing = [1, 4, 6, 7]                                   # not in OFF: these fire on the images
    trainer.load_dead_units(dict(retired=OFF + firing, candidates=[], live=[]))
    assert trainer.dead_units()["retired"] == OFF           # the dead ones stay retired
    for _ in range(2):
        trainer.begin_epoch()
        for start in (0, 50, 100):
            trainer.step(trainer.batch(np.arange(start, start + 50)))
            reference.zero_grad()
            reference.loss(to_float(x[start:start + 50], np.float64))
            reference.backward()
            ref_opt.step()
        trainer.end_epoch()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-10, atol=1e-12, err_msg=name)


def test_a_loaded_record_is_checked_on_every_image_however_many():
    """The check goes through the images in chunks: a unit that fires on one image only (the
    first chunk's last, or one in the second) is computed again; one that fires on none stays retired."""
    x = np.zeros((5000, 784), np.uint8)
    x[4095, :392] = x[4500, 392:] = 255                     # the two images with ink, each on half the pixels
    model = VAE(784, 4, 2, rng=0)
    first = model.encoder[0]
    first.weight.data[:] = 0.0
    first.weight.data[:392, 0] = first.weight.data[392:, 3] = 0.01    # 3.92 on image 4095 (unit 0), 4500 (unit 3)
    first.weight.data[:, 1] = -0.01                         # unit 1 fires on neither; unit 2 on none
    first.bias.data[:] = -1.0                               # every unit is 0 on every other image
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=100, retire_dead_units=True)
    trainer.load_dead_units(dict(retired=[0, 1, 2, 3], candidates=[], live=[]))
    assert trainer.dead_units()["retired"] == [1, 2]


def test_a_loaded_candidate_that_fires_is_not_retired_at_the_epochs_end():
    """A record whose candidate fires on these parameters (another checkpoint's): the unit was
    retired at the end of the resumed epoch, and its weights stopped moving."""
    x = np.zeros((150, 784), np.uint8)
    x[10] = 255                                             # the one image with ink, in a batch already done
    model = VAE(784, 4, 2, rng=0)
    first = model.encoder[0]
    first.weight.data[:] = 0.0
    first.weight.data[:, 0] = 0.01                          # unit 0: 7.84 on that image, else 0
    first.bias.data[:] = -1.0
    trainer, _ = retiring_trainer(x, model)
    trainer.load_dead_units(dict(retired=[], candidates=[0, 1, 2, 3], live=[]))
    trainer.begin_epoch(resumed=True)
    step_on(trainer, 100)                                   # the epoch's last batch: the others came before
    trainer.end_epoch()
    assert trainer.dead_units()["retired"] == [1, 2, 3]


def test_a_loaded_record_is_checked_on_the_last_image_of_4097():
    """Trainer.load_dead_units re-checks a record on every training image, 4096 at a time: with
    4097 images the second chunk is the last image alone, and a retired unit that fires on it
    only is computed again."""
    x = np.zeros((4097, 784), np.uint8)
    x[4096] = 255                                           # the one image with ink: the last
    model = VAE(784, 4, 2, rng=0)
    first = model.encoder[0]
    first.weight.data[:] = 0.0
    first.weight.data[:, 0] = 0.01                          # unit 0: 7.84 on that image, else 0
    first.bias.data[:] = -1.0                               # every unit is 0 on every other image
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=100, retire_dead_units=True)
    trainer.load_dead_units(dict(retired=[0, 1, 2, 3], candidates=[], live=[]))
    assert trainer.dead_units()["retired"] == [1, 2, 3]
