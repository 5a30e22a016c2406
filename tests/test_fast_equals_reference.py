"""The fast path equals the reference: step by step, on the tutorial's shapes and real digits.

The reference is the plain loop a user writes (``model.zero_grad(); model.loss(x);
model.backward(); optimizer.step()``); the fast path is :class:`npvae.fast.Trainer`, with
everything it does only for speed switched on: the first layer's weight gradient over its
live units, units proven dead retired and left out, the fused Adam. The fast path is checked
against the reference, never the reverse.
"""
import copy
import os

import numpy as np
import pytest

import npvae
from npvae.data import load_idx_split, to_float
from npvae.fast import Trainer
from npvae.train import fit

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")
BATCH = 128            # 1000 images: 7 full batches and a short last one of 104
EPOCHS = 7             # 56 Adam steps


@pytest.fixture(scope="module")
def images():
    return load_idx_split(SAMPLE, "t10k")[0]


def rel(a, b):
    """max |a - b| / max |b|: the relative error of ``a`` against the reference ``b``."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


def rel_each(a, b):
    """max over entries of |a - b| / |b|: every entry against its own reference value."""
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(np.abs(b), 1e-300)))


def rel_entries(a, b):
    """max over entries of |a - b| / max(|b|, max|b| / 1000): every entry against its own value,
    down to a thousandth of the tensor's largest. (A weight near 0, 1e-6 say, is the sum of
    steps a thousand times larger: its own relative error measures their round-off, 5e-11
    here with 2 BLAS threads, a few times that elsewhere.)"""
    b = np.asarray(b, np.float64)
    scale = np.maximum(np.abs(b), np.max(np.abs(b)) / 1000)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(scale, 1e-300)))


def train_side_by_side(images, dtype, hidden=400, latent=20, betas=(0.9, 0.999), epochs=EPOCHS,
                       off_at_start=120, off_later=240):
    """Train two copies of one VAE (784-400-20 unless told), the reference and the fast path, on
    the same batches and noise; return the per-step losses of both, both models with their
    optimizers, and the fast trainer.

    Units ``[0, off_at_start)`` are off for every image from the start: retired after epoch 1.
    Units ``[off_at_start, off_later)`` are switched off after epoch 2, and keep moving on their
    moments, through the live-columns path of the first weight's update."""
    ref = npvae.VAE(784, hidden, latent, dtype=dtype, rng=1)
    ref.encoder[0].bias.data[:off_at_start] = -30.0
    fast = copy.deepcopy(ref)                   # the same weights and the same noise stream
    opt_ref, opt_fast = npvae.Adam(ref.parameters(), betas=betas), npvae.Adam(fast.parameters(), betas=betas)
    trainer = Trainer(fast, opt_fast, images=images, batch_size=BATCH, retire_dead_units=True)
    shuffle = np.random.default_rng(5)
    losses_ref, losses_fast = [], []
    for epoch in range(epochs):
        if epoch == 2:
            # more units go quiet (between epochs, as a fit callback would do it) while
            # Adam's moments are far from 0: dead columns whose parameters still move
            for model in (ref, fast):
                model.encoder[0].bias.data[off_at_start:off_later] = -30.0
        order = shuffle.permutation(len(images))
        trainer.begin_epoch()
        for start in range(0, len(images), BATCH):
            idx = order[start:start + BATCH]
            ref.zero_grad()
            losses_ref.append(ref.loss(to_float(images[idx], dtype)))
            ref.backward()
            opt_ref.step()
            losses_fast.append(trainer.step(trainer.batch(idx)))
        trainer.end_epoch()
    return np.array(losses_ref), np.array(losses_fast), (ref, opt_ref), (fast, opt_fast), trainer


@pytest.fixture(scope="module")
def float64_run(images):
    return train_side_by_side(images, np.float64)


def assert_same_training(losses_ref, losses_fast, ref, opt_ref, fast, opt_fast):
    """Every step's loss and both of its parts, each against its own reference value, and every
    parameter entry (:func:`rel_entries`) within 1e-10; Adam's moments within 1e-10 of each
    tensor's largest (a moment averages gradients of both signs: where it nears 0, its own
    relative error means nothing)."""
    assert np.all(losses_ref[:, 2] > 0)                     # the KL column is not 0 anywhere
    assert rel_each(losses_fast, losses_ref) < 1e-10
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert rel_entries(q.data, p.data) < 1e-10, name
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        for moment in ("m", "v"):
            assert rel(opt_fast.state[q][moment], opt_ref.state[p][moment]) < 1e-10, (name, moment)
    assert opt_fast.t == opt_ref.t == len(losses_ref)


def test_float64_every_step_and_every_parameter_within_1e_10(float64_run):
    losses_ref, losses_fast, (ref, opt_ref), (fast, opt_fast), _ = float64_run
    assert len(losses_ref) == EPOCHS * 8 >= 50
    assert_same_training(losses_ref, losses_fast, ref, opt_ref, fast, opt_fast)


def test_units_retired_while_their_moments_decay_train_what_the_reference_trains(images):
    """Units that go quiet after they have trained are retired once Adam's next update could no
    longer move them, with their moments not yet 0: while left out, those moments must decay as
    the skipped steps would have decayed them. (A beta1 of 0.5 brings them to rest within the
    run; 784-64-8 keeps it quick.)"""
    losses_ref, losses_fast, (ref, opt_ref), (fast, opt_fast), trainer = train_side_by_side(
        images, np.float64, hidden=64, latent=8, betas=(0.5, 0.999), epochs=12, off_at_start=16, off_later=32)
    retired = trainer.dead_units()["retired"]
    assert set(range(16)) < set(retired) and set(retired) & set(range(16, 32))     # some went quiet late
    W = ref.encoder[0].weight
    late = sorted(set(retired) & set(range(16, 32)))
    assert np.all(opt_ref.state[W]["v"][:, late].any(axis=0))     # retired with moments not yet 0
    assert_same_training(losses_ref, losses_fast, ref, opt_ref, fast, opt_fast)


def test_the_speed_paths_were_taken(float64_run):
    """Not a vacuous comparison: units were retired and skipped, and the training moved."""
    losses_ref, _, _, _, trainer = float64_run
    record = trainer.dead_units()
    assert set(range(120)) <= set(record["retired"])       # the units switched off, and maybe more
    assert losses_ref[-1, 0] < 0.8 * losses_ref[0, 0]


def test_gradients_of_one_step_equal_the_reference(images):
    """The fused backward, gradient by gradient, in float64 (the live-columns path included)."""
    from npvae.fast import FastVAE
    model = npvae.VAE(784, 400, 20, dtype=np.float64, rng=3)
    model.encoder[0].bias.data[::2] = -30.0               # half the units off: live columns only
    x = to_float(images[:BATCH], np.float64)
    eps = np.random.default_rng(0).standard_normal((BATCH, 20))
    model.zero_grad()
    parts = model.loss(x, beta=0.7, eps=eps)
    model.backward()
    net = FastVAE(model)
    net.load(model)
    fast_parts = net.forward(np.asfortranarray(x), 0.7, eps)
    net.backward()
    assert rel(fast_parts, parts) < 1e-12
    grads = net.gradients()
    for name, p in model.named_parameters():
        assert rel(grads[name], p.grad) < 1e-11, name


def test_float64_the_tiny_terms_of_a_loss_are_kept_as_the_reference_keeps_them():
    """Where the loss is made of tiny terms: white pixels the decoder is sure of (each pixel's
    BCE is log1p(e^-35) = 6e-16: fastmath's reordering once cancelled it to 0) and latents at
    the prior (a KL of about logvar^2 / 4: exp(logvar) - 1 once cancelled it to round-off)."""
    from npvae.fast import FastVAE
    model = npvae.VAE(784, 64, 8, dtype=np.float64, rng=0)
    state = model.state_dict()
    state["decoder.2.weight"][:] = 0.0
    state["decoder.2.bias"][:] = 35.0                     # every logit 35
    state["encoder.2.weight"][:] = 0.0
    state["encoder.2.bias"][:] = np.linspace(-1e-6, 1e-6, 16)    # mu and logvar near 0
    model.load_state_dict(state)
    x = np.ones((BATCH, 784))                              # all white
    eps = np.random.default_rng(0).standard_normal((BATCH, 8))
    model.zero_grad()
    parts = model.loss(x, eps=eps)
    model.backward()
    net = FastVAE(model)
    net.load(model)
    fast_parts = net.forward(np.asfortranarray(x), 1.0, eps)
    net.backward()
    assert parts.recon > 0 and parts.kl > 0
    assert rel_each(fast_parts, parts) < 1e-10
    grads = net.gradients()
    for name, p in model.named_parameters():
        assert rel(grads[name], p.grad) < 1e-10, name
    evaluated = [npvae.evaluate_elbo(model, x, backend=backend) for backend in ("numpy", "numba")]
    assert rel_each(evaluated[1], evaluated[0]) < 1e-10


def test_float32_within_what_float32_allows(images, float64_run):
    """In float32 the two paths round differently (fused kernels, the order of BLAS's sums), and
    Adam's steps amplify round-off where a gradient is near 0: the runs drift apart. Float32
    itself drifts from the float64 run far more: the fast path must stay much closer to the
    float32 reference than the float32 reference stays to the float64 one."""
    losses64, _, (ref64, _), _, _ = float64_run
    losses_ref, losses_fast, (ref, _), (fast, _), _ = train_side_by_side(images, np.float32)
    assert rel(losses_fast[:1], losses_ref[:1]) < 1e-6     # one step: float32 round-off
    assert rel(losses_fast, losses_ref) < 1e-4              # 56 steps
    assert rel(losses_fast, losses_ref) < 0.01 * rel(losses_ref, losses64)
    for (name, p), q, p64 in zip(ref.named_parameters(), fast.parameters(), ref64.parameters()):
        assert rel(q.data, p.data) < 0.25 * rel(p.data, p64.data), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adams_moments_after_one_step_equal_the_reference_to_round_off(images, dtype):
    """A systematic difference (a ``1 - beta2`` rounded otherwise) would hide under the
    losses' tolerance: the moments after one step show it."""
    ref = npvae.VAE(784, 64, 8, dtype=dtype, rng=0)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = npvae.Adam(ref.parameters()), npvae.Adam(fast.parameters())
    x = to_float(images[:BATCH], dtype)
    ref.zero_grad()
    ref.loss(x)
    ref.backward()
    opt_ref.step()
    with Trainer(fast, opt_fast) as trainer:
        trainer.step(x)
    for p, q in zip(ref.parameters(), fast.parameters()):
        for name in ("m", "v"):
            want, got = opt_ref.state[p][name], opt_fast.state[q][name]
            moved = want != 0
            bias = np.median(got[moved] / want[moved] - 1)      # round-off is as often up as down
            assert abs(bias) < 4 * np.finfo(dtype).eps, (name, bias)     # (the old bias: 100 eps)


def test_fit_on_both_back_ends_trains_the_same_model(images):
    """fit's two paths, batching and evaluation included, agree in float64."""
    runs = {}
    for backend in ("numpy", "numba"):
        model = npvae.VAE(784, 64, 8, dtype=np.float64, rng=2)
        history = fit(model, images[:600], images[600:], epochs=2, batch_size=100, rng=0, progress=False,
                      backend=backend)
        runs[backend] = (model, history)
    (ref, h_ref), (fast, h_fast) = runs["numpy"], runs["numba"]
    for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
        assert rel(h_fast[key], h_ref[key]) < 1e-10, key
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert rel(q.data, p.data) < 1e-10, name
