"""Skipping first-layer units proven dead on the training set: the layers' skipping path,
the proof's bookkeeping in fit, its safeguards, and exact resumes."""
import os
import signal

import numpy as np
import pytest

from npvae import SGD, VAE, Adam, Dense, ReLU, Sequential
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.data import load_idx_split
from npvae.errors import CheckpointError, StateError
from npvae.train import TrainingInterrupted, fit

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")
BACKENDS = ["numpy", "numba"]
OFF = [0, 2, 3, 5, 9]        # first-layer units forced off in these tests


@pytest.fixture(scope="module")
def images():
    return load_idx_split(SAMPLE, "t10k")[0]


# -- the layers: Dense.units and in_units give the full computation's numbers ----------------
def _chain(backend, dtype, off=OFF):
    seq = Sequential(Dense(6, 10, dtype=dtype, rng=0), ReLU(), Dense(10, 4, dtype=dtype, rng=1)).set_backend(backend)
    seq[0].bias.data[off] = -100.0                        # these units are 0 for any x in [0, 1)
    return seq


def _pass(seq, x, g):
    seq.zero_grad()
    y = seq.forward(x).copy()
    dx = seq.backward(g)
    return y, dx.copy(), [p.grad.copy() for p in seq.parameters()]


@pytest.mark.parametrize("off", [OFF, [5, 6, 7, 8, 9]], ids=["scattered", "last"])   # last: slices, no gathers
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", BACKENDS)
def test_skipping_units_that_are_off_gives_the_full_results(backend, dtype, order, off):
    rng = np.random.default_rng(0)
    x = np.asarray(rng.random((7, 6)).astype(dtype), order=order)
    g = np.asarray(rng.standard_normal((7, 4)).astype(dtype), order=order)
    seq = _chain(backend, dtype, off)
    y_full, dx_full, grads_full = _pass(seq, x, g)
    seq[0].units = np.setdiff1d(np.arange(10), off)
    y, dx, grads = _pass(seq, x, g)
    assert seq[0]._y.shape == (7, 5)                      # only the 5 units on were computed
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, y_full, **tol)
    np.testing.assert_allclose(dx, dx_full, **tol)
    for a, b in zip(grads, grads_full):
        np.testing.assert_allclose(a, b, **tol)
    assert not grads[0][:, off].any() and not grads[1][off].any() and not grads[2][off].any()


@pytest.mark.parametrize("off", [OFF, [5, 6, 7, 8, 9]], ids=["scattered", "last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulate_over_skipping_passes(backend, off):
    rng = np.random.default_rng(1)
    x, g = rng.random((5, 6)), rng.standard_normal((5, 4))
    seq = _chain(backend, np.float64, off)
    _, _, once = _pass(seq, x, g)
    seq[0].units = np.setdiff1d(np.arange(10), off)
    seq.zero_grad()
    for _ in range(2):                                    # no zero_grad in between: += twice
        seq.forward(x)
        seq.backward(g)
    for p, a in zip(seq.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * a, rtol=1e-12, atol=1e-14)


def test_changing_the_skipped_units_allocates_nothing_new():
    """Workspaces of the skipped widths come out of one full-width allocation each."""
    seq = _chain("numba", np.float32)
    x = np.asfortranarray(np.random.default_rng(3).random((7, 6)).astype(np.float32))
    g = np.asfortranarray(np.ones((7, 4), np.float32))
    sizes = []
    for on in ([1, 4, 6, 7, 8], [1, 4, 6, 7], [4, 6], [1, 4, 6, 7, 8]):
        seq[0].units = np.array(on)
        seq.forward(x)
        seq.backward(g)
        sizes.append(sum(a.base is None for m in seq.modules() for a in m._workspace.values()))   # owners
    assert sizes[1:] == sizes[:1] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_marks_the_units_that_fired(backend):
    seq = _chain(backend, np.float64)
    seq[0].live = np.zeros(10, bool)
    seq.forward(np.random.default_rng(2).random((5, 6)))
    fired = (seq[0]._y > 0).any(axis=0)
    assert np.array_equal(seq[0].live, fired) and not seq[0].live[OFF].any()


def test_skipping_misuse_is_a_clear_error():
    from npvae.errors import InputError, InputTypeError
    layer = Dense(3, 4, rng=0)
    for bad, err in (([2, 1], InputError), ([0, 4], InputError), ([-1, 2], InputError), ([1, 1], InputError),
                     ([], InputTypeError), ([0.5], InputTypeError), ([[1]], InputTypeError)):
        with pytest.raises(err, match="Dense.units"):
            layer.units = bad
    with pytest.raises(InputTypeError, match=r"Dense.live must be a bool array of shape \(4,\)"):
        layer.live = np.zeros(3, bool)
    with pytest.raises(InputError, match=r"in_units must be increasing unit indices in \[0, 3\)"):
        layer.forward(np.zeros((2, 1), np.float32), in_units=np.array([3]))
    layer.units = np.array([0, 2])
    with pytest.raises(StateError, match="relu=True"):
        layer.forward(np.zeros((2, 3), np.float32))
    last = Sequential(Dense(3, 4, rng=0), ReLU())
    last[0].units = np.array([1])
    with pytest.raises(StateError, match="last layer"):
        last.forward(np.zeros((2, 3), np.float32))
    then_relu = Sequential(Dense(3, 4, rng=0), ReLU(), ReLU())
    then_relu[0].units = np.array([1])
    with pytest.raises(StateError, match="must be a Dense"):
        then_relu.forward(np.zeros((2, 3), np.float32))


# -- the optimizers: at rest ----------------------------------------------------------------
def test_at_rest_is_a_first_moment_too_small_to_move_or_no_momentum_without_weight_decay():
    model = VAE(12, 5, 2, rng=0)
    w = model.encoder[0].weight
    adam = Adam(model.parameters())
    assert adam.at_rest(w).all()                          # nothing moved yet
    adam.state["m"][0][3, 1] = 1e-3
    at = adam.at_rest(w)
    assert not at[3, 1] and at.sum() == at.size - 1
    assert Adam(model.parameters(), weight_decay=1e-4).at_rest(w) is None
    assert SGD(model.parameters()).at_rest(w).all()       # no momentum: a zero gradient never moves it
    sgd = SGD(model.parameters(), momentum=0.9)
    sgd.state["momentum_buffer"][0][0, 0] = 1.0
    assert not sgd.at_rest(w)[0, 0] and sgd.at_rest(w).sum() == w.data.size - 1
    assert SGD(model.parameters(), weight_decay=1e-3).at_rest(w) is None
    with pytest.raises(Exception, match="not one of"):
        adam.at_rest(VAE(12, 5, 2, rng=1).encoder[0].weight)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_at_rest_is_sound_and_not_just_a_zero_first_moment(backend, dtype):
    """Entries Adam calls at rest do not move in 3000 zero-gradient steps (bit for bit),
    though most have a nonzero first moment; entries it does not call at rest mostly move."""
    from npvae.module import Parameter
    r = np.random.default_rng(3)
    n = 4000
    p = Parameter((r.choice([-1, 1], n) * 10.0 ** r.uniform(-3, 0, n)).astype(dtype))
    p.data[:20] = 0
    opt = Adam([p], backend=backend)
    opt.t = int(r.integers(1, 5000))
    lo, hi = (-16, -6) if dtype == np.float32 else (-26, -12)   # around the bound: some move, some not
    opt.state["m"][0][:] = r.choice([-1, 1], n) * 10.0 ** r.uniform(lo, hi, n)
    opt.state["v"][0][:] = 10.0 ** r.uniform(-14, -2, n)
    opt.state["v"][0][20:40] = 0                       # only eps in the denominator
    at = opt.at_rest(p)
    assert not at[:20].any()                           # p = 0 with m != 0: never taken as at rest
    assert 0.2 < at.mean() < 0.8 and (opt.state["m"][0][at] != 0).all()
    before = p.data.copy()
    for _ in range(3000):
        p.zero_grad()
        opt.step()
    assert np.array_equal(p.data[at], before[at])
    assert (p.data[~at] != before[~at]).mean() > 0.9


def _held_vs_not(opt_class, backend, columns, **hyper):
    """Parameter (6, 5) whose last two columns get zero gradients and are at rest: 12 steps
    with those columns held (released halfway and at the end) and 12 without."""
    from npvae.module import Parameter
    out = []
    for hold in (True, False):
        p = Parameter(np.asfortranarray(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)))
        opt = opt_class([p], backend=backend, **hyper)
        if "v" in opt.state:   # at rest, with both moments still decaying (m: too little to move p)
            opt.state["v"][0][:, 3:] = np.linspace(1e-37, 0.5, 12).reshape(6, 2)
            opt.state["m"][0][:, 3:] = np.linspace(-1e-14, 1e-14, 12).reshape(6, 2)
            opt.state["m"][0][0, 3] = 2e-38   # flushes to 0 on the first step
            assert opt.at_rest(p)[:, 3:].all()
        grads = np.random.default_rng(1).standard_normal((12, 6, 5)).astype(np.float32)
        grads[:, :, 3:] = 0
        for t in range(12):
            if hold and t in (0, 7):
                opt.hold(p, 3)
            if columns:      # the gradient held as its columns, as Dense leaves it
                p.zero_grad()
                p.set_column_grad(np.asfortranarray(grads[t][:, :3]), np.arange(3), opt_k(backend).scatter_columns)
            else:
                p.grad[...] = grads[t]
            opt.step()
            if hold and t in (5, 11):
                opt.release(p)
        out.append((p.data.copy(), opt.state_dict()))
    return out


def opt_k(backend):
    from npvae import kernels
    return kernels.get(backend)


@pytest.mark.parametrize("columns", [False, True], ids=["dense-grad", "column-grad"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_held_columns_end_where_the_steps_would_have_left_them_bit_for_bit(backend, columns):
    for opt_class, hyper in ((Adam, {}), (SGD, dict(lr=0.1, momentum=0.9))):
        (p1, s1), (p2, s2) = _held_vs_not(opt_class, backend, columns, **hyper)
        assert np.array_equal(p1, p2), opt_class.__name__
        assert all(np.array_equal(s1[k], s2[k]) for k in s1), opt_class.__name__


def test_hold_needs_a_column_major_matrix():
    from npvae.errors import InputError
    model = VAE(12, 5, 2, rng=0)
    opt = Adam(model.parameters())
    with pytest.raises(InputError, match="column-major 2-D"):
        opt.hold(model.encoder[0].bias, 2)
    with pytest.raises(InputError, match="0 < n <= 5"):
        opt.hold(model.encoder[0].weight, 6)


# -- fit: what gets retired, and that it is sound ---------------------------------------------
def _model(backend="numba", seed=0):
    model = VAE(784, 16, 3, rng=seed, backend=backend)
    model.encoder[0].bias.data[OFF] = -5.0                 # off for every image in [0, 1]: dies at once
    return model


def _retired(model):
    return np.flatnonzero(model._dead_units.retired).tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_units_off_for_a_whole_epoch_are_retired_and_stay_dead(images, backend):
    x = images[:200]
    model = _model(backend)
    seen = []

    def during_epoch(opt):
        step = opt.step

        def stepping():
            seen.append(None if model.encoder[0].units is None else model.encoder[0].units.tolist())
            step()
        opt.step = stepping
        return opt

    opt = during_epoch(Adam(model.parameters()))
    w0 = model.encoder[0].weight.data[:, OFF].copy()
    fit(model, x, images[200:260], epochs=3, batch_size=50, optimizer=opt, rng=0, progress=False)
    assert set(OFF) <= set(_retired(model))
    assert seen[:4] == [None] * 4                          # epoch 1 only gathers the evidence
    # then the units computed come first (fit reorders them while it skips the rest)
    assert all(s == list(range(len(s))) and len(s) <= 16 - len(OFF) for s in seen[4:])
    assert model.encoder[0].units is None and model.encoder[0].live is None   # whole again after fit
    assert np.array_equal(model.encoder[0].weight.data[:, OFF], w0)           # never moved
    # the claim itself: every retired unit is off for every training image
    layer = model.encoder[0]
    pre = (x.astype(np.float64) / 255) @ layer.weight.data.astype(np.float64) + layer.bias.data
    assert (pre[:, _retired(model)] <= 0).all()


def test_training_with_skipping_matches_training_without(images, monkeypatch):
    from npvae import dead_units
    x, t = images[:300], images[300:400]
    runs = []
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(dead_units.DeadUnits, "for_fit", classmethod(lambda cls, *a: None))
        model = _model()
        h = fit(model, x, t, epochs=4, batch_size=50, rng=0, progress=False)
        runs.append((model, h))
    (a, ha), (b, hb) = runs
    assert len(_retired(a)) >= len(OFF) and "_dead_units" not in b.__dict__
    np.testing.assert_allclose(ha["train_loss"], hb["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(ha["test_loss"], hb["test_loss"], rtol=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-3, atol=1e-5)   # round-off, grown by 24 steps


def test_evaluation_in_fit_computes_retired_units(images):
    """A test image may excite a unit no training image does: evaluation skips nothing."""
    from npvae.evaluate import evaluate_elbo
    model = _model()
    w = model.encoder[0].weight.data
    crafted = np.where(w[:, OFF] > 0, 255, 0).T.astype(np.uint8)   # each lights up one retired unit
    pre = (crafted / 255) @ w[:, OFF] + model.encoder[0].bias.data[OFF]
    assert (np.diag(pre) > 0).all()
    h = fit(model, images[:100], crafted, epochs=3, batch_size=50, rng=0, progress=False)
    assert set(OFF) <= set(_retired(model))
    assert h[-1]["test_loss"] == evaluate_elbo(model, crafted, batch_size=50, seed=0).total


def test_nothing_is_retired_with_binarization_or_weight_decay(images):
    model = _model()
    fit(model, images[:100], epochs=2, batch_size=50, rng=0, progress=False, binarize=True)
    assert "_dead_units" not in model.__dict__
    model = _model()
    opt = Adam(model.parameters(), weight_decay=1e-4)
    fit(model, images[:100], epochs=2, batch_size=50, optimizer=opt, rng=0, progress=False)
    assert _retired(model) == []


def test_a_retired_unit_edited_by_a_callback_is_computed_again(images):
    model = _model()

    def revive(record, m):
        if record["epoch"] == 2:
            assert 0 in _retired(m)
            m.encoder[0].bias.data[0] = 5.0                # unit 0 now fires for every image

    fit(model, images[:100], epochs=3, batch_size=50, rng=0, progress=False, callback=revive)
    assert 0 not in _retired(model) and set(OFF[1:]) <= set(_retired(model))
    assert model.encoder[0].weight.grad[:, 0].any()       # it trained again in epoch 3


def test_an_error_mid_epoch_leaves_the_model_whole_and_in_order(images):
    model = _model()
    opt = Adam(model.parameters())
    w0 = model.encoder[0].weight.data[:, OFF].copy()
    step = opt.step

    def failing():
        step()
        if opt.t == 6:                                      # epoch 3, units retired and reordered
            raise RuntimeError("boom")
    opt.step = failing
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, images[:100], epochs=4, batch_size=50, optimizer=opt, rng=0, progress=False)
    layer = model.encoder[0]
    assert layer.units is None and layer.live is None
    assert np.array_equal(layer.weight.data[:, OFF], w0)    # the dead units back in their columns
    assert not opt.state["m"][0][:, OFF].any() and opt.state["m"][0].any()


def test_the_record_carries_over_to_the_next_fit_on_the_same_images_only(images):
    model, x = _model(), images[:100]
    opt = Adam(model.parameters())
    fit(model, x, epochs=2, batch_size=50, optimizer=opt, rng=0, progress=False)
    record = model._dead_units
    assert set(OFF) <= set(_retired(model))
    fit(model, x, epochs=1, batch_size=50, optimizer=opt, rng=0, progress=False)
    assert model._dead_units is record
    other = x.copy()
    other[0, 0] += 1                                       # one pixel differs: not the same training set
    units_seen = []
    step = opt.step
    opt.step = lambda: (units_seen.append(model.encoder[0].units), step())
    fit(model, other, epochs=1, batch_size=50, optimizer=opt, rng=0, progress=False)
    assert model._dead_units is not record and units_seen == [None, None]   # a new record: proofs anew


# -- checkpoints: exact resumes with units retired ---------------------------------------------
def _interrupt_at(opt, global_step):
    step = opt.step

    def stepping():
        step()
        if opt.t == global_step:
            signal.raise_signal(signal.SIGINT)
    opt.step = stepping


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_with_retired_units_is_bit_identical(images, tmp_path, backend):
    x, t = images[:150], images[150:200]                   # 3 steps an epoch
    straight = _model(backend)
    h1 = fit(straight, x, t, epochs=4, batch_size=50, rng=7, progress=False)
    model = _model(backend)
    opt = Adam(model.parameters(), backend=backend)        # fit's own Adam follows the model's back end
    _interrupt_at(opt, 8)                                   # epoch 3, step 2: units retired, evidence pending
    with pytest.raises(TrainingInterrupted):
        fit(model, x, t, epochs=4, batch_size=50, rng=7, optimizer=opt, checkpoint=tmp_path / "c.npz",
            progress=False)
    saved = load_checkpoint(tmp_path / "c.npz").dead_units
    assert set(OFF) <= set(saved["retired"]) and set(saved) == {"retired", "candidates", "live"}
    resumed = _model(backend, seed=5)
    h2 = fit(resumed, x, t, epochs=4, batch_size=50, rng=0, resume=tmp_path / "c.npz", progress=False)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(straight.parameters(), resumed.parameters()))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert _retired(straight) == _retired(resumed)


def test_a_malformed_record_in_a_checkpoint_is_refused_before_loading(images, tmp_path):
    model = _model()
    fit(model, images[:100], epochs=2, batch_size=50, rng=0, progress=False, checkpoint=tmp_path / "c.npz")
    ckpt = load_checkpoint(tmp_path / "c.npz")
    opt = Adam(model.parameters())
    ckpt.load_into(None, opt)
    save_checkpoint(tmp_path / "bad.npz", model, opt, epoch=2, history=ckpt.history, rngs=ckpt.rng_states,
                    fit_config=ckpt.fit_config, dead_units={"retired": [99], "candidates": [], "live": []})
    fresh = _model(seed=3)
    before = {k: v.copy() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"dead_units\['retired'\].*\[0, 16\)"):
        fit(fresh, images[:100], epochs=3, batch_size=50, progress=False, resume=tmp_path / "bad.npz")
    assert all(np.array_equal(before[k], v) for k, v in fresh.state_dict().items())
