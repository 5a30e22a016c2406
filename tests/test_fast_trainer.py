"""npvae.fast.Trainer in a user's own loop: the reference loop's numbers, on the fast path.

The reference loop is ``model.zero_grad(); model.loss(x, beta); model.backward();
optimizer.step()``; a trainer's ``step(x, beta)`` must give the same losses and, once
synced, the same parameters and optimizer state (float64: to round-off).
"""
import copy
import os
import re
import tracemalloc
import traceback
import warnings

import numpy as np
import pytest

from npvae import SGD, VAE, Adam, fit, load_checkpoint, save_checkpoint
from npvae.data import load_idx_split, to_float
from npvae.errors import InputError, InputTypeError, StateError
from npvae.fast import Trainer
from npvae.layers import Sigmoid
from npvae.optim import Optimizer

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")


@pytest.fixture(scope="module")
def images():
    return load_idx_split(SAMPLE, "t10k")[0][:300]


def rel(a, b):
    """max |a - b| / max |b|: the relative error of ``a`` against the reference ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def batches(images, dtype, sizes=(64, 64, 64, 44)):
    """Float batches in [0, 1] (row-major, as a user makes them): a short last one included."""
    starts = np.cumsum((0,) + sizes)
    return [to_float(images[a:b], dtype) for a, b in zip(starts[:-1], starts[1:])]


def reference_steps(model, optimizer, xs, betas):
    """The user's loop on the reference: the LossParts of every step."""
    losses = []
    for x, beta in zip(xs, betas):
        model.zero_grad()
        losses.append(model.loss(x, beta))
        model.backward()
        optimizer.step()
    return np.array(losses)


OPTIMIZERS = {
    "Adam": lambda ps: Adam(ps, lr=2e-3),
    "Adam-betas-weight-decay": lambda ps: Adam(ps, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3),
    "SGD": lambda ps: SGD(ps, lr=1e-3),
    "SGD-momentum": lambda ps: SGD(ps, lr=1e-3, momentum=0.9),
    "SGD-momentum-weight-decay": lambda ps: SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-2),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_steps_equal_the_reference_loop(images, name):
    """float64, every step's loss and, after sync, every parameter and optimizer state."""
    ref = VAE(784, 32, 4, dtype=np.float64, rng=1)
    ref.encoder[0].bias.data[:8] = -30.0         # units off for every image: live-column gradients
    fast = copy.deepcopy(ref)                    # the same weights and noise stream
    opt_ref, opt_fast = OPTIMIZERS[name](ref.parameters()), OPTIMIZERS[name](fast.parameters())
    xs = batches(images, np.float64)
    betas = [1.0, 0.5, 0.0, 2.0]
    losses_ref = reference_steps(ref, opt_ref, xs, betas)
    with Trainer(fast, opt_fast) as trainer:     # syncs on exit
        losses_fast = np.array([trainer.step(x, beta) for x, beta in zip(xs, betas)])
    assert rel(losses_fast, losses_ref) < 1e-12
    for (pname, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert rel(q.data, p.data) < 1e-10, pname
    sd_ref, sd_fast = opt_ref.state_dict(), opt_fast.state_dict()
    assert sd_ref.keys() == sd_fast.keys() and opt_fast.t == opt_ref.t == 4
    for key in sd_ref:
        assert rel(sd_fast[key], sd_ref[key]) < 1e-10 if sd_ref[key].any() else not sd_fast[key].any(), key
    assert fast.rng.bit_generator.state == ref.rng.bit_generator.state   # the same draws, no more


def test_float32_steps_are_the_reference_to_float32_round_off(images):
    ref = VAE(784, 32, 4, rng=1)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = Adam(ref.parameters()), Adam(fast.parameters())
    xs = batches(images, np.float32)
    losses_ref = reference_steps(ref, opt_ref, xs, [1.0] * 4)
    with Trainer(fast, opt_fast) as trainer:
        losses_fast = np.array([trainer.step(x) for x in xs])
    assert rel(losses_fast, losses_ref) < 1e-5
    for (pname, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert np.allclose(q.data, p.data, rtol=1e-4, atol=1e-6), pname


def test_the_model_is_untouched_until_sync(images):
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    start = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, opt)
    xs = batches(images, np.float32)
    for x in xs[:2]:
        parts = trainer.step(x)
    assert all(np.array_equal(v, start[k]) for k, v in model.state_dict().items())
    assert opt.t == 0 and not any(v.any() for k, v in opt.state_dict().items() if "." in k)
    assert not any(p.grad.any() for p in model.parameters())   # gradients stay in the fast layout
    trainer.sync()
    assert opt.t == 2 and not all(np.array_equal(v, start[k]) for k, v in model.state_dict().items())
    after_two = copy.deepcopy(model.state_dict())
    trainer.step(xs[2])                          # the trainer goes on from its own state...
    assert all(np.array_equal(v, after_two[k]) for k, v in model.state_dict().items())
    trainer.sync()                               # ...and a second sync writes the third step
    assert opt.t == 3 and not np.array_equal(model.decoder[-1].bias.data, after_two["decoder.2.bias"])
    assert parts.total == parts.recon + parts.kl


def test_load_takes_up_changes_made_to_the_model(images):
    """After editing the model (or loading a state dict), ``load()`` hands the trainer the new values."""
    ref = VAE(784, 32, 4, dtype=np.float64, rng=2)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = Adam(ref.parameters()), Adam(fast.parameters())
    trainer = Trainer(fast, opt_fast)
    xs = batches(images, np.float64)
    for model in (ref, fast):
        model.decoder[0].weight.data *= 0.5
    trainer.load()
    losses_ref = reference_steps(ref, opt_ref, xs[:2], [1.0, 1.0])
    losses_fast = np.array([trainer.step(x) for x in xs[:2]])
    trainer.sync()
    assert rel(losses_fast, losses_ref) < 1e-12
    assert rel(fast.decoder[0].weight.data, ref.decoder[0].weight.data) < 1e-10


def test_the_context_manager_syncs_on_the_way_out_of_an_error(images):
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    start = model.encoder[0].weight.data.copy()
    with pytest.raises(RuntimeError, match="stop"):
        with Trainer(model, opt) as trainer:
            trainer.step(batches(images, np.float32)[0])
            raise RuntimeError("stop")
    assert opt.t == 1 and not np.array_equal(model.encoder[0].weight.data, start)


def test_a_step_after_the_with_block_is_refused_and_entering_again_trains_on(images):
    """After the block the model holds the result: a step then would train a copy that nothing
    writes back, its steps lost without a word."""
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    x = batches(images, np.float32)[0]
    with Trainer(model, opt, images=images) as trainer:
        trainer.step(x)
    for call in (lambda: trainer.step(x), lambda: trainer.batch([0, 1]), trainer.begin_epoch, trainer.end_epoch):
        with pytest.raises(StateError, match=r"with block has ended"):
            call()
    assert opt.t == 1
    with trainer:                                       # entered again: it trains on, and syncs
        trainer.step(x)
    assert opt.t == 2


def test_a_with_block_inside_another_closes_nothing_the_outer_one_still_uses(images):
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    x = batches(images, np.float32)[0]
    with Trainer(model, opt) as trainer:
        with trainer:                                   # e.g. in a helper the loop calls
            trainer.step(x)
        trainer.step(x)
    assert opt.t == 2


def test_a_step_with_a_non_finite_loss_is_not_applied(images):
    model = VAE(784, 32, 4, rng=0)
    model.decoder[-1].weight.data[:, 0] = 3e38        # finite, but the logits of pixel 0 overflow
    opt = Adam(model.parameters())
    start = copy.deepcopy(model.state_dict())
    with Trainer(model, opt) as trainer, np.errstate(all="ignore"):
        parts = trainer.step(batches(images, np.float32)[0])
    assert not np.isfinite(parts.total)
    assert opt.t == 0
    assert all(np.array_equal(v, start[k]) for k, v in model.state_dict().items())


def test_batches_of_the_training_images_are_the_reference_floats(images):
    """``Trainer.batch(idx)``: ``images[idx]`` as floats in [0, 1], as ``to_float`` or a cast gives them."""
    r = np.random.default_rng(0)
    pixels = images[:50]
    for data in (pixels, pixels / 255.0, (pixels / 255.0).astype(np.float32)):
        for dtype in (np.float32, np.float64):
            model = VAE(784, 16, 2, dtype=dtype, rng=0)
            trainer = Trainer(model, Adam(model.parameters()), images=data, batch_size=16)
            for idx in (r.permutation(50)[:16], np.array([3, 3, 49, 0]), r.permutation(50)[:16]):
                x = trainer.batch(idx)
                expected = to_float(data[idx], dtype) if data.dtype == np.uint8 else data[idx].astype(dtype)
                assert x.dtype == dtype and np.array_equal(x, expected)
                trainer.step(x)                  # a batch of the trainer's own goes straight in


@pytest.mark.parametrize("retire", [False, True])
def test_a_batch_of_the_trainers_own_is_changed_only_in_a_copy_which_is_checked(images, retire):
    """step takes its own batches unchecked: they are read-only, and a changed copy is checked
    (with retirement on, refused: the units were proven dead on the training images only)."""
    model = VAE(784, 16, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()), images=images[:64], batch_size=32,
                      retire_dead_units=retire)
    x = trainer.batch(np.arange(32))
    with pytest.raises(ValueError, match="read-only"):
        x[:] = 7.0
    noisy = x + 7.0
    with pytest.raises(InputError, match=r"\[0, 1\]" if not retire else "unchanged"):
        trainer.step(noisy)
    assert np.isfinite(trainer.step(x).total)


def test_training_steps_allocate_nothing_of_batch_size(images):
    """After a first pass (workspaces made once per batch size), an epoch of steps allocates less
    than a quarter of one float batch."""
    B = 100
    model = VAE(784, 64, 8, rng=0)
    trainer = Trainer(model, Adam(model.parameters()), images=images, batch_size=B)
    order = np.random.default_rng(0).permutation(len(images))

    def epoch():
        for start in range(0, len(images), B):
            trainer.step(trainer.batch(order[start:start + B]))
    epoch()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        epoch()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < B * 784 * 4 / 4, peak - before


def test_batches_of_many_sizes_do_not_pile_up(images):
    """A loop of batches of every size (a curriculum, random sizes): the trainer keeps the arrays
    of a few sizes, not of every size it ever made (300 sizes here: 177 MB)."""
    model = VAE(784, 8, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()), images=images)
    trainer.batch([0])                                      # its kernel compiled or loaded
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(2, len(images) + 1):
            x = trainer.batch(np.arange(n))
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(x, to_float(images, np.float32))     # still the right batch
    assert grown - before < 20 * len(images) * 784 * 5, grown - before   # 20 batches of the largest size
    narrow = np.random.default_rng(0).integers(0, 256, (3000, 2), dtype=np.uint8)
    model = VAE(2, 4, 1, rng=0)             # narrow: what is kept per size beside the batch (its indices) shows
    trainer = Trainer(model, Adam(model.parameters()), images=narrow)
    trainer.batch([0])
    idx = np.arange(len(narrow))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(2, len(narrow) + 1):
            trainer.batch(idx[:n])
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown - before < 20 * len(narrow) * (2 * 4 + 2 + 8), grown - before     # batch, pixels, indices


# -- what a trainer refuses -------------------------------------------------------------------
class MyAdam(Adam):
    pass


class SignSGD(Optimizer):
    def step(self):
        for p in self.params:
            p.data -= 1e-3 * np.sign(p.grad)

    def hyper(self):
        return {}


def test_an_optimizer_of_some_parameters_is_pointed_at_a_loop_of_its_own():
    model = VAE(30, 16, 3, rng=0)
    with pytest.raises(InputError, match=r"write your own loop: model\.zero_grad, model\.loss, "
                                         r"model\.backward, optimizer\.step"):
        Trainer(model, Adam(model.parameters()[:2]))


def test_only_npvaes_adam_and_sgd_run_on_the_fast_path():
    model = VAE(784, 16, 2, rng=0)
    for optimizer in (MyAdam(model.parameters()), SignSGD(model.parameters())):
        with pytest.raises(InputTypeError, match=rf"Adam and SGD, not {type(optimizer).__name__}.*backend='numpy'"):
            Trainer(model, optimizer)
    with pytest.raises(InputTypeError, match="optimizer must be an npvae optimizer"):
        Trainer(model, "adam")
    with pytest.raises(InputTypeError, match="model must be an npvae.VAE"):
        Trainer(model.encoder, Adam(model.parameters()))


def test_the_optimizer_must_hold_the_models_parameters_in_any_order():
    model = VAE(784, 16, 2, rng=0)
    params = list(model.parameters())
    for wrong in (VAE(784, 16, 2, rng=1).parameters(), params[:-1]):
        with pytest.raises(InputError, match=r"exactly model.parameters\(\)"):
            Trainer(model, Adam(wrong))
    # the order does not matter: each parameter keeps its own moments
    x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    twin = VAE(784, 16, 2, rng=0)
    with Trainer(model, Adam(params[::-1])) as a, Trainer(twin, Adam(twin.parameters())) as b:
        for _ in range(3):
            a.step(x)
            b.step(x)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), twin.parameters()))
    with pytest.raises(InputError, match="retire_dead_units=True needs the training images"):
        Trainer(model, Adam(params), retire_dead_units=True)


@pytest.mark.parametrize("x, beta, error, words", [
    (np.zeros((4, 100), np.float32), 1.0, InputError, r"x must have 784 features"),
    (np.zeros(784, np.float32), 1.0, InputError, r"x must be 2-D.*reshape\(1, -1\)"),
    (np.zeros((0, 784), np.float32), 1.0, InputError, "x is an empty batch"),
    (np.zeros((4, 784), np.uint8), 1.0, InputTypeError, r"x has integer dtype uint8.*/ 255"),
    (np.full((4, 784), 2.0, np.float32), 1.0, InputError, r"x must lie in \[0, 1\]"),
    (np.full((4, 784), np.nan, np.float32), 1.0, InputError, "x contains NaN"),
    ("pixels", 1.0, InputTypeError, "x must be a numpy array"),
    (np.zeros((4, 784), np.float32), -0.5, InputError, "beta must be a finite number >= 0"),
    (np.zeros((4, 784), np.float32), float("nan"), InputError, "beta"),
    (np.zeros((4, 784), np.float32), "1", InputTypeError, "beta must be a number"),
])
def test_a_bad_batch_or_beta_is_a_clear_error_and_changes_nothing(images, x, beta, error, words):
    ref = VAE(784, 16, 2, dtype=np.float64, rng=0)
    fast = copy.deepcopy(ref)
    trainer = Trainer(fast, Adam(fast.parameters()))
    with pytest.raises(error, match=words):
        trainer.step(x, beta)
    # nothing consumed: the next good step is the reference's first step
    x = batches(images, np.float64)[0]
    assert rel(trainer.step(x), reference_steps(ref, Adam(ref.parameters()), [x], [1.0])[0]) < 1e-12


@pytest.mark.parametrize("beta, error", [(-0.5, InputError), (float("nan"), InputError), ("1", InputTypeError)])
def test_beta_is_checked_for_the_trainers_own_batches_too(images, beta, error):
    model = VAE(784, 16, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()), images=images, batch_size=32)
    with pytest.raises(error, match="beta"):
        trainer.step(trainer.batch(np.arange(32)), beta)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(images=np.zeros((10, 100), np.uint8)), InputError, r"images.*784"),
    (dict(images=np.full((10, 784), 3.0)), InputError, r"images.*\[0, 1\]"),
    (dict(images=[[0] * 784]), InputTypeError, "images"),
    (dict(images=np.zeros((10, 784), np.uint8), batch_size=0), InputError, "batch_size"),
    (dict(images=np.zeros((10, 784), np.uint8), batch_size=2.5), InputTypeError, "batch_size"),
])
def test_bad_training_images_or_batch_size_are_clear_errors(kwargs, error, words):
    model = VAE(784, 16, 2, rng=0)
    with pytest.raises(error, match=words):
        Trainer(model, Adam(model.parameters()), **kwargs)


def test_batch_needs_the_training_images():
    model = VAE(784, 16, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()))
    with pytest.raises(StateError, match="images="):
        trainer.batch(np.arange(4))


def test_after_sync_the_model_and_optimizer_are_the_users_again(images):
    """What a user does between sync() and the next step (a reference step, a state dict loaded)
    is what the trainer goes on from."""
    ref = VAE(784, 32, 4, dtype=np.float64, rng=2)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = Adam(ref.parameters()), Adam(fast.parameters())
    other = VAE(784, 32, 4, dtype=np.float64, rng=9).state_dict()
    xs = batches(images, np.float64)
    trainer = Trainer(fast, opt_fast)
    trainer.step(xs[0])
    trainer.sync()
    reference_steps(ref, opt_ref, xs[:1], [1.0])
    reference_steps(fast, opt_fast, xs[1:2], [1.0])          # a reference step on the synced model
    reference_steps(ref, opt_ref, xs[1:2], [1.0])
    for model in (ref, fast):
        model.load_state_dict(other)
    losses_ref = reference_steps(ref, opt_ref, xs[2:], [1.0, 1.0])
    losses_fast = np.array([trainer.step(x) for x in xs[2:]])
    trainer.sync()
    assert opt_fast.t == opt_ref.t == 4
    assert rel(losses_fast, losses_ref) < 1e-12
    for p, q in zip(fast.parameters(), ref.parameters()):
        assert rel(p.data, q.data) < 1e-10


@pytest.mark.parametrize("dtype, eps, pixel", [(np.float64, 1e-300, 1e-153), (np.float32, 1e-30, 1e-17)])
def test_adam_with_an_eps_near_the_smallest_floats_steps_as_the_reference(images, dtype, eps, pixel):
    """Gradients so small that v falls below the smallest normal float while m does not: the
    fast path's flush of tiny moments to 0 would leave m / eps, so with such an eps it flushes nothing."""
    xs = [x.copy() for x in batches(images, dtype)]
    for x in xs:
        x[:, 0] = pixel                                 # the first weight's row 0 gets tiny gradients
    ref = VAE(784, 32, 4, dtype=dtype, rng=2)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = Adam(ref.parameters(), eps=eps), Adam(fast.parameters(), eps=eps)
    reference_steps(ref, opt_ref, xs, [1.0] * len(xs))
    with Trainer(fast, opt_fast) as trainer:
        for x in xs:
            trainer.step(x)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert rel(p.data, q.data) < tol, name


def test_a_second_sync_keeps_what_the_user_did_after_the_first(images):
    """sync(), then the user's own step and edit, then the with block's sync on the way out:
    nothing the user did is undone."""
    model = VAE(784, 32, 4, dtype=np.float64, rng=2)
    opt = Adam(model.parameters())
    xs = batches(images, np.float64)
    with Trainer(model, opt) as trainer:
        trainer.step(xs[0])
        trainer.sync()
        reference_steps(model, opt, xs[1:2], [1.0])
        model.encoder[0].bias.data[:] = 7.0
        trainer.sync()
    assert opt.t == 2 and (model.encoder[0].bias.data == 7.0).all()


@pytest.mark.parametrize("name", ["Adam", "SGD-momentum"])
def test_a_learning_rate_schedule_inside_the_loop(images, name):
    """The optimizer's hyper-parameters are read at every step, as the reference reads them."""
    ref = VAE(784, 32, 4, dtype=np.float64, rng=3)
    fast = copy.deepcopy(ref)
    opt_ref, opt_fast = OPTIMIZERS[name](ref.parameters()), OPTIMIZERS[name](fast.parameters())
    xs = batches(images, np.float64, sizes=(50,) * 6)
    schedule = [1e-3, 1e-3, 1e-1, 1e-1, 3e-2, 3e-2]
    with Trainer(fast, opt_fast) as trainer:
        for x, lr in zip(xs, schedule):
            opt_fast.lr = lr
            trainer.step(x)
    for x, lr in zip(xs, schedule):
        opt_ref.lr = lr
        reference_steps(ref, opt_ref, [x], [1.0])
    for p, q in zip(fast.parameters(), ref.parameters()):
        assert rel(p.data, q.data) < 1e-10


def test_batch_takes_images_idx_as_indexing_does_and_refuses_the_rest(images):
    model = VAE(784, 16, 2, rng=0)
    x = images[:100]
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=8)
    np.testing.assert_array_equal(trainer.batch([-1, 0, 99]), to_float(x[[-1, 0, 99]], np.float32))
    for idx, error, words in [([0, 100], InputError, "index 100.*100 images"),
                              ([-101], InputError, "index -101"),
                              ([], InputError, "1 to 8 indices"),
                              (np.arange(9), InputError, "1 to 8 indices.*got 9"),
                              ([0.0, 1.0], InputTypeError, r"indices, got a list of float64 with shape \(2,\)"),
                              (np.ones(4, bool), InputTypeError, r"indices, got an array of bool with shape"),
                              (np.zeros((2, 2), int), InputTypeError, "1-D"),
                              (slice(0, 4), InputTypeError, r"got slice\(0, 4, None\): np.arange\(start, stop, step\)"),
                              (5, InputTypeError, r"got 5: one index goes in a list, \[5\]"),
                              (np.int64(5), InputTypeError, r"got (np.int64\()?5\)?: one index goes in a list, \[5\]$"),
                              (set(range(10**5)), InputTypeError, r"got \{0, 1, 2, 3, 4, 5, \.\.\.\}$"),  # not 600 kB
                              (None, InputTypeError, r"got None$")]:
        with pytest.raises(error, match=words):
            trainer.batch(idx)


def test_a_batch_size_beyond_the_training_set_is_one_batch_of_all_the_images_on_both_paths(images):
    """batch_size=2**40 as "the whole set in one batch": the fast path makes its batches for the
    40 images there are, not for 2**40 of them (which no memory holds)."""
    x = images[:40]
    for backend in ("numpy", "numba"):
        history = fit(VAE(784, 16, 2, rng=0), x, epochs=1, batch_size=2**40, rng=0, progress=False,
                      backend=backend)
        assert np.isfinite(history[-1]["train_loss"])
    model = VAE(784, 16, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()), images=x, batch_size=2**40)
    np.testing.assert_array_equal(trainer.batch(np.arange(40)), to_float(x, np.float32))


def test_the_switch_and_the_batch_size_are_checked_without_images_too():
    model = VAE(784, 16, 2, rng=0)
    with pytest.raises(InputTypeError, match="retire_dead_units must be True or False, got 'no'"):
        Trainer(model, Adam(model.parameters()), retire_dead_units="no")
    with pytest.raises(InputError, match="batch_size"):
        Trainer(model, Adam(model.parameters()), batch_size=-3)


# -- the model while a trainer holds it -------------------------------------------------------
def test_a_change_made_while_the_trainer_holds_the_model_is_kept_not_overwritten(images, tmp_path):
    """fit, load_checkpoint or a second trainer on a held model: the exit refuses to write
    the trainer's stale copy over their result, and says why."""
    xs = batches(images, np.float32)
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    with pytest.raises(StateError, match=r"changed while this Trainer held them.*1 step\(s\).*dropped"):
        with Trainer(model, opt) as trainer:
            trainer.step(xs[0])
            with pytest.warns(UserWarning, match="^Trainer: another Trainer holds 1 step"):   # fit's trainer
                fit(model, images[:128], epochs=2, batch_size=64, optimizer=opt, rng=0, progress=False)
            after_fit = copy.deepcopy(model.state_dict())
    assert opt.t == 4 and all(np.array_equal(v, after_fit[k]) for k, v in model.state_dict().items())

    other = VAE(784, 32, 4, rng=7)
    save_checkpoint(tmp_path / "c.npz", other, Adam(other.parameters()))
    trainer = Trainer(model, opt)
    trainer.step(xs[0])
    load_checkpoint(tmp_path / "c.npz", model=model, optimizer=opt)      # after the trainer stepped
    with pytest.raises(StateError, match=r"optimizer changed .*step count is now 0, it was 4.*1 step\(s\)"):
        trainer.step(xs[0])                      # at once, not at sync after a whole loop
    trainer.sync()                               # nothing left to write: the checkpoint stays
    assert np.array_equal(model.encoder[0].weight.data, other.encoder[0].weight.data) and opt.t == 0
    trainer.step(xs[0])                          # the next step takes the model as it is now
    trainer.sync()
    assert opt.t == 1 and rel(model.encoder[0].weight.data, other.encoder[0].weight.data) < 0.1


def test_a_checkpoint_loaded_after_making_the_trainer_is_what_it_trains(images, tmp_path):
    """Make the trainer, load a checkpoint, train: the first step takes the loaded state."""
    xs = batches(images, np.float32)
    saved = VAE(784, 32, 4, rng=7)
    saved_opt = Adam(saved.parameters())
    fit(saved, images[:128], epochs=1, batch_size=64, optimizer=saved_opt, rng=0, progress=False)
    save_checkpoint(tmp_path / "c.npz", saved, saved_opt)
    reference = copy.deepcopy(saved)
    reference_opt = Adam(reference.parameters())
    reference_opt.load_state_dict(saved_opt.state_dict())

    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    trainer = Trainer(model, opt)
    load_checkpoint(tmp_path / "c.npz", model=model, optimizer=opt)
    for x in xs[:3]:
        parts = trainer.step(x)
        reference.zero_grad()
        want = reference.loss(x)
        reference.backward()
        reference_opt.step()
        assert abs(parts.total - want.total) < 1e-4 * abs(want.total)
    trainer.sync()
    assert opt.t == reference_opt.t == 5
    assert rel(model.encoder[0].weight.data, reference.encoder[0].weight.data) < 1e-4


def second_of_two_trainers(xs):
    """A model and its optimizer, which two trainers each took 3 steps on; the first has synced.
    The second trainer is returned."""
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    first, second = Trainer(model, opt), Trainer(model, opt)
    for x in xs[:3]:
        first.step(x)
        second.step(x)
    first.sync()
    return model, opt, second


def test_two_trainers_on_one_model_are_refused_at_the_second_sync(images):
    model, opt, second = second_of_two_trainers(batches(images, np.float32))
    with pytest.raises(StateError, match="one Trainer per model"):
        second.sync()
    assert opt.t == 3                            # the first trainer's result, untouched


def test_a_new_trainer_on_a_model_another_holds_unwritten_steps_of_is_warned_about(images):
    """A notebook cell making the trainer, run again: the first trainer's steps were dropped
    without a word (the second started from the untrained model)."""
    x = batches(images, np.float32)[0]
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    trainer = Trainer(model, opt)
    trainer.step(x)
    trainer.step(x)
    with pytest.warns(UserWarning, match=r"another Trainer holds 2 step\(s\) of this model that no sync\(\) "
                                         r"wrote back.*call the other's sync\(\) first"):
        trainer = Trainer(model, opt)
    trainer.step(x)
    trainer.sync()
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # synced, or never stepped: nothing to say
        trainer = Trainer(model, opt)
        Trainer(model, opt)
        with Trainer(model, opt) as t:
            t.step(x)
        Trainer(model, opt)


def test_every_trainer_still_holding_steps_is_warned_about_not_only_the_last_one_made(images):
    x = batches(images, np.float32)[0]
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    first = Trainer(model, opt)
    for _ in range(5):
        first.step(x)
    for _ in range(2):                              # a second, then a third: the first still holds 5
        with pytest.warns(UserWarning, match=r"another Trainer holds 5 step\(s\)"):
            Trainer(model, opt)
    with pytest.warns(UserWarning, match=r"another Trainer holds 5 step\(s\)"):
        second = Trainer(model, opt)
    for _ in range(3):
        second.step(x)
    with pytest.warns(UserWarning, match=r"Trainer: 2 other Trainers hold 5, 3 step\(s\) of this model .*one of "
                                         r"them can be written back"):
        Trainer(model, opt)
    assert opt.t == 0


def test_a_load_that_refuses_the_model_keeps_the_trainers_steps(images):
    """Refused, it takes nothing: the steps are still the trainer's to write back once the edit is undone."""
    x = batches(images, np.float64)[0]
    model = VAE(784, 16, 4, rng=0, dtype=np.float64)
    opt = Adam(model.parameters())
    trainer = Trainer(model, opt)
    trainer.step(x)
    trainer.step(x)
    model.encoder[1].forward = lambda a: a
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no "drops the 2 step(s)": it drops none
        with pytest.raises(InputTypeError, match=r"model\.encoder\.1\.forward is set on the ReLU itself"):
            trainer.load()
    for _ in range(2):                              # and no step trains the stock model meanwhile
        with pytest.raises(InputTypeError, match=r"model\.encoder\.1\.forward is set on the ReLU itself"):
            trainer.step(x)
    del model.encoder[1].forward
    trainer.sync()
    assert opt.t == 2


def test_load_says_when_it_drops_steps_no_sync_wrote_back(images):
    """``load()`` takes the model as it is now: steps the trainer took since its last sync are
    dropped, and a warning says how many (and how to keep them)."""
    x = batches(images, np.float32)[0]
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    trainer = Trainer(model, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # nothing taken since: nothing to say
        trainer.load()
        trainer.step(x)
        trainer.sync()
        trainer.load()
    before = [p.data.copy() for p in model.parameters()]
    for _ in range(3):
        trainer.step(x)
    with pytest.warns(UserWarning, match=r"Trainer.load: drops the 3 step\(s\) taken since the last sync\(\).*"
                                         r"call sync\(\) first"):
        trainer.load()
    trainer.sync()
    assert opt.t == 1 and all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


def test_no_error_when_the_trainer_has_nothing_to_lose_or_the_block_fails(images):
    model = VAE(784, 32, 4, rng=0)
    opt = Adam(model.parameters())
    with Trainer(model, opt):                    # no step: an edit is simply kept
        model.decoder[0].bias.data[0] = 5.0
    assert model.decoder[0].bias.data[0] == 5.0
    with pytest.raises(KeyError, match="mine") as info:  # the block's own error is the one raised
        with Trainer(model, opt) as trainer:
            trainer.step(batches(images, np.float32)[0])
            model.decoder[0].bias.data[0] = 6.0
            raise KeyError("mine")
    assert model.decoder[0].bias.data[0] == 6.0 and opt.t == 0
    # ... and what the refused sync would have said rides on it as a note: the step was dropped
    assert any("1 step(s) since it took them are dropped" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("name", ["Adam", "SGD-momentum"])
def test_a_nan_gradient_gives_nan_parameters_as_on_the_reference(images, name):
    """A KL weight that overflows float32 makes NaN gradients: the fast optimizer must not
    flush their NaN moments to 0 (``NaN < tiny`` is false) and so hide the divergence."""
    x = batches(images, np.float32)[0]
    ref, fast = VAE(784, 32, 4, rng=0), VAE(784, 32, 4, rng=0)
    opt_ref, opt_fast = OPTIMIZERS[name](ref.parameters()), OPTIMIZERS[name](fast.parameters())
    with np.errstate(all="ignore"):
        reference_steps(ref, opt_ref, [x], [1e308])
        with Trainer(fast, opt_fast) as trainer:
            trainer.step(x, beta=1e308)
    for p, q in zip(ref.parameters(), fast.parameters()):
        assert np.array_equal(np.isnan(p.data), np.isnan(q.data))
    assert np.isnan(fast.encoder[0].weight.data).any()


def test_npvae_fast_is_there_after_a_plain_import_and_loads_numba_only_then():
    import subprocess
    import sys
    code = ("import sys, npvae\n"
            "assert 'numba' not in sys.modules, 'import npvae loaded numba'\n"
            "assert npvae.fast.Trainer is not None and 'numba' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_package_namespace_holds_its_api_and_submodules_only():
    import types
    import npvae
    public = {name for name in dir(npvae) if not name.startswith("_")}
    stray = {name for name in public - set(npvae.__all__)
             if not (isinstance(getattr(npvae, name), types.ModuleType)
                     and getattr(npvae, name).__name__.startswith("npvae."))}
    assert not stray, f"names leaked into npvae's namespace: {sorted(stray)}"
    assert set(npvae.__all__) <= public


def test_a_model_holding_nan_is_refused_by_name_as_fit_refuses_it(tmp_path):
    """At the first step: a checkpoint loaded after making the trainer may still repair it."""
    model = VAE(12, 8, 2, rng=0)
    opt = Adam(model.parameters())
    save_checkpoint(tmp_path / "good.npz", model, opt)
    model.decoder[-1].bias.data[3] = np.nan
    x = np.random.default_rng(0).random((5, 12))
    trainer = Trainer(model, opt)
    with pytest.raises(InputError, match=r"decoder.2.bias holds NaN or inf, so training it cannot work"):
        trainer.step(x)
    assert opt.t == 0
    load_checkpoint(tmp_path / "good.npz", model, opt)
    assert np.isfinite(trainer.step(x).total)


def test_begin_epoch_says_when_the_steps_it_holds_are_dropped_for_a_change_made_elsewhere():
    model = VAE(12, 8, 2, rng=0)
    trainer = Trainer(model, Adam(model.parameters()))
    x = np.random.default_rng(0).random((5, 12)).astype(np.float32)
    trainer.step(x)
    model.decoder[-1].bias.data[0] = 7.0                       # a hand edit while the trainer holds the model
    with pytest.raises(StateError, match=r"changed while this Trainer held them.*1 step\(s\)"):
        trainer.begin_epoch()
    assert model.decoder[-1].bias.data[0] == 7.0                # their change is kept


def test_a_model_holding_nan_is_refused_at_every_step_until_repaired():
    model = VAE(12, 8, 2, rng=0)
    opt = Adam(model.parameters())
    model.decoder[-1].bias.data[3] = np.nan
    trainer = Trainer(model, opt)
    x = np.random.default_rng(0).random((5, 12))
    for _ in range(2):
        with pytest.raises(InputError, match=r"decoder\.2\.bias holds NaN or inf"):
            trainer.step(x)
    assert opt.t == 0


def test_a_nan_written_into_the_model_after_a_sync_is_refused_at_the_next_step():
    model = VAE(12, 8, 2, rng=0)
    opt = Adam(model.parameters())
    trainer = Trainer(model, opt)
    x = np.random.default_rng(0).random((5, 12))
    trainer.step(x)
    trainer.sync()                                             # the model is the user's again
    model.decoder[-1].bias.data[3] = np.nan
    with pytest.raises(InputError, match=r"decoder\.2\.bias holds NaN or inf"):
        trainer.step(x)
    assert opt.t == 1


@pytest.mark.parametrize("make", [Adam, lambda params: SGD(params, lr=0.1, momentum=0.9)], ids=["Adam", "SGD"])
def test_a_step_set_on_the_optimizer_itself_is_refused_not_skipped(make):
    """The fast path runs its fused update, never optimizer.step: a wrapper set on the instance
    (gradient clipping, a per-step warm-up) would be left out without a word."""
    model = VAE(784, 16, 2, rng=0)
    opt = make(model.parameters())
    calls = []
    stock_step = opt.step
    opt.step = lambda: calls.append(1) or stock_step()
    with pytest.raises(InputTypeError, match=r"optimizer\.step is set on the optimizer itself.*backend='numpy'"):
        Trainer(model, opt)
    x = np.random.default_rng(0).integers(0, 256, (8, 784), dtype=np.uint8)
    with pytest.raises(InputTypeError, match=r"fit\(backend='numba'\): optimizer\.step is set on the optimizer"):
        fit(model, x, epochs=1, optimizer=opt, backend="numba", progress=False)
    assert opt.t == 0
    fit(model, x, epochs=1, optimizer=opt, backend="numpy", progress=False)    # the reference calls it
    assert calls == [1] and opt.t == 1


def test_a_step_that_fits_callback_sets_on_the_optimizer_is_refused_not_skipped():
    """Clipping from epoch 2 on, say: the callback is where fit lets a user change things."""
    model = VAE(784, 16, 2, rng=0)
    opt = Adam(model.parameters())
    x = np.random.default_rng(0).integers(0, 256, (8, 784), dtype=np.uint8)

    def clip_from_now_on(record, model):
        stock_step = opt.step
        opt.step = lambda: stock_step()
    with pytest.raises(InputTypeError, match=r"the callback changed the optimizer: optimizer\.step is set on the "
                                             r"optimizer itself.*backend='numpy'") as caught:
        fit(model, x, epochs=3, optimizer=opt, callback=clip_from_now_on, backend="numba", progress=False)
    assert opt.t == 1
    shown = "".join(traceback.format_exception(type(caught.value), caught.value, caught.tb))
    assert shown.count("Traceback") == 1 and "During handling" not in shown     # the refusal alone


def test_a_step_count_set_while_the_trainer_holds_the_optimizer_is_taken_or_refused(images):
    """``optimizer.t`` set by hand (a warm restart of Adam's bias correction), with every value as it was:
    before the trainer's first step it is taken, as a loaded checkpoint is; after a step, sync keeps it
    and says the trainer's steps are dropped, as for any other change made elsewhere."""
    xs = batches(images, np.float64)
    model = VAE(784, 32, 4, rng=0, dtype=np.float64)
    reference = copy.deepcopy(model)
    opt, reference_opt = Adam(model.parameters(), lr=2e-3), Adam(reference.parameters(), lr=2e-3)
    trainer = Trainer(model, opt)
    opt.t = reference_opt.t = 100
    trainer.step(xs[0])
    reference_steps(reference, reference_opt, xs[:1], [1.0])
    trainer.sync()
    assert opt.t == 101 and rel(model.encoder[0].weight.data, reference.encoder[0].weight.data) < 1e-10
    trainer.step(xs[1])
    opt.t = 7
    with pytest.raises(StateError, match=r"changed while this Trainer held them.*1 step\(s\).*dropped"):
        trainer.sync()
    assert opt.t == 7


def test_after_a_sync_refused_for_a_change_made_elsewhere_the_next_step_trains_on_from_that_change(images):
    """The refused sync keeps the other trainer's result; the docs promise that the next step takes the model
    as it is then (not a second error), and its sync writes that step back."""
    xs = batches(images, np.float32)
    model, opt, second = second_of_two_trainers(xs)
    kept = [p.data.copy() for p in model.parameters()]
    with pytest.raises(StateError, match="one Trainer per model"):
        second.sync()
    assert opt.t == 3 and all(np.array_equal(p.data, k) for p, k in zip(model.parameters(), kept))
    second.step(xs[3])
    second.sync()
    assert opt.t == 4 and not np.array_equal(model.encoder[0].weight.data, kept[0])


def _clip_step(opt):
    stock_step = opt.step
    opt.step = lambda: stock_step()


# what a user may change on the model or the optimizer while a trainer has them, and the refusal
EDITS = {
    "a Sigmoid for the ReLU": (lambda m, o: m.encoder.__setitem__(1, Sigmoid()), InputTypeError,
                               r"model\.encoder is Dense -> Sigmoid -> Dense"),
    "loss set on the model": (lambda m, o: setattr(m, "loss", lambda x, beta=1.0, eps=None: None), InputTypeError,
                              r"model\.loss is set on the model itself"),
    "step set on the optimizer": (lambda m, o: _clip_step(o), InputTypeError,
                                  r"optimizer\.step is set on the optimizer itself"),
    "a layer frozen": (lambda m, o: setattr(o, "params", o.params[2:]), InputError,
                       r"optimizer must hold exactly model\.parameters\(\)"),
    "the parameter list replaced": (lambda m, o: setattr(o, "params", None), InputTypeError,
                                    r"optimizer\.params must be the list of the parameters it updates .*got NoneType"),
    "a step count with a fraction": (lambda m, o: setattr(o, "t", o.t + 0.5), InputTypeError,
                                     r"optimizer\.t must be a whole number of steps"),
    "Adam's moments made read-only": (lambda m, o: setattr(o.state[m.encoder[0].weight]["m"].flags, "writeable",
                                                           False), InputError,
                                      r"optimizer\.state\[model\.encoder\.0\.weight\]\['m'\] must be a writable"),
    "a weight made read-only": (lambda m, o: setattr(m.decoder[2].bias.data.flags, "writeable", False), InputError,
                                r"model\.decoder\.2\.bias\.data must be a writable array"),
}


@pytest.mark.parametrize("when", ["before the first step", "after a sync"])
@pytest.mark.parametrize("edit", EDITS)
def test_a_model_or_optimizer_changed_after_the_trainer_was_made_is_checked_again(edit, when):
    """The trainer takes the model back at its next step, as it is then: what it would not
    compute as the reference does is refused there, as when it was made, not trained as the stock model."""
    change, error, words = EDITS[edit]
    model = VAE(30, 16, 3, rng=0, dtype=np.float64)
    opt = Adam(model.parameters(), lr=1e-2)
    x = np.random.default_rng(1).random((16, 30))
    trainer = Trainer(model, opt)
    if when == "after a sync":
        trainer.step(x)
        trainer.sync()
    before = [p.data.copy() for p in model.parameters()]
    change(model, opt)
    edited = opt.t
    with pytest.raises(error, match=words):
        trainer.step(x)
    trainer.sync()                                  # nothing of the trainer's to write back
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    assert opt.t == edited


@pytest.mark.parametrize("edit", [edit for edit in EDITS if "step count" not in edit])  # (that one: at the step)
def test_a_model_or_optimizer_changed_after_the_trainers_first_update_is_refused_at_the_sync(edit):
    """Once it has applied an update, a step no longer checks the model (the check would cost
    about a twentieth of a step): a change made then is found at the sync. Its steps computed the
    model as it was, so they are dropped, not written back into the changed one."""
    change, _, words = EDITS[edit]
    model = VAE(30, 16, 3, rng=0, dtype=np.float64)
    opt = Adam(model.parameters(), lr=1e-2)
    x = np.random.default_rng(1).random((16, 30))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(StateError, match=r"changed while this Trainer held them.*2 step\(s\).*dropped") as raised:
        with Trainer(model, opt) as trainer:
            trainer.step(x)
            change(model, opt)
            trainer.step(x)
    assert re.search(words, str(raised.value)), raised.value
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    moments = [a for p in model.parameters() for a in opt.state[p].values()]     # (opt.params may be gone)
    assert opt.t == 0 and moments and not any(a.any() for a in moments)     # nor the optimizer's


def test_the_noise_is_the_samplers_as_on_the_reference(images):
    """A subclass may give ``rng`` a meaning of its own: the reference's Sampler draws from
    ``model.sampler.rng``, and so does the trainer."""
    class OwnStream(VAE):
        @property
        def rng(self):
            return np.random.default_rng(123)
    x = batches(images, np.float64)[:2]
    ref, fast = OwnStream(784, 32, 4, dtype=np.float64, rng=0), OwnStream(784, 32, 4, dtype=np.float64, rng=0)
    opt_ref, opt_fast = Adam(ref.parameters()), Adam(fast.parameters())
    losses_ref = reference_steps(ref, opt_ref, x, [1.0, 1.0])
    with Trainer(fast, opt_fast) as trainer:
        losses_fast = np.array([trainer.step(b) for b in x])
    assert rel(losses_fast, losses_ref) < 1e-12


def test_a_model_repaired_after_a_step_that_was_not_applied_is_checked_again():
    """A first step whose loss is inf takes nothing; the user then loads good values and swaps a
    layer: the next step takes the model back and refuses the swap, as before any step."""
    model = VAE(30, 16, 3, rng=0, dtype=np.float64)
    good = {k: v.copy() for k, v in model.state_dict().items()}
    opt = Adam(model.parameters(), lr=1e-2)
    x = np.random.default_rng(1).random((16, 30))
    model.encoder[2].bias.data[3:] = 1e300                  # logvar: exp overflows, the KL is inf
    trainer = Trainer(model, opt)
    assert not np.isfinite(trainer.step(x).total) and opt.t == 0
    model.load_state_dict(good)
    model.encoder[1] = Sigmoid()
    with pytest.raises(InputTypeError, match=r"model\.encoder is Dense -> Sigmoid -> Dense"):
        trainer.step(x)


@pytest.mark.parametrize("repaired", ["after the sync", "before the sync"])
def test_a_step_not_applied_still_counts_as_evidence_that_units_fired(repaired):
    """Retiring dead units: a step whose loss is inf is not applied, but its forward pass saw which
    units fired. A sync then keeps that in the record a checkpoint saves, whether it has nothing to
    write back or finds the model repaired meanwhile (the trainer's copy dropped for the user's), so
    a run resumed from the record retires none of the units that fire."""
    images = (np.random.default_rng(0).random((64, 30)) * 255).astype(np.uint8)
    model = VAE(30, 16, 3, rng=0)
    model.encoder[2].bias.data[3:] = 1e30                   # float32's exp overflows: the KL is inf
    opt = Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(model, opt, images=images, batch_size=64, retire_dead_units=True)
    trainer.begin_epoch()
    assert not np.isfinite(trainer.step(trainer.batch(np.arange(64))).total)
    if repaired == "before the sync":
        model.encoder[2].bias.data[3:] = 0
    trainer.sync()
    model.encoder[2].bias.data[3:] = 0
    resumed = Trainer(model, opt, images=images, batch_size=64, retire_dead_units=True)
    resumed.load_dead_units(trainer.dead_units())
    resumed.begin_epoch(resumed=True)
    resumed.end_epoch()
    fire = (images / 255.0 @ model.encoder[0].weight.data + model.encoder[0].bias.data > 0).any(axis=0)
    assert len(resumed.dead_units()["retired"]) == int((~fire).sum())


@pytest.mark.parametrize("t", [3.0, np.int64(3), np.uint64(3), np.array(3)],
                         ids=["a whole float", "np.int64", "np.uint64", "a 0-d array"])
def test_a_whole_step_count_of_any_type_trains_as_on_the_reference(t):
    """``opt.t`` set to 3.0 is 3 steps taken, as load_state_dict takes it; only a fraction is refused."""
    x = np.random.default_rng(1).random((16, 30))
    ref, fast = VAE(30, 16, 3, rng=0, dtype=np.float64), VAE(30, 16, 3, rng=0, dtype=np.float64)
    opt_ref, opt_fast = Adam(ref.parameters(), lr=1e-2), Adam(fast.parameters(), lr=1e-2)
    opt_ref.t, opt_fast.t = 3, t
    losses_ref = reference_steps(ref, opt_ref, [x, x], [1.0, 1.0])
    with Trainer(fast, opt_fast) as trainer:
        losses_fast = np.array([trainer.step(x) for _ in range(2)])
    assert rel(losses_fast, losses_ref) < 1e-12 and opt_fast.t == 5
    for p, q in zip(fast.parameters(), ref.parameters()):
        assert rel(p.data, q.data) < 1e-10


def test_a_layer_swapped_after_a_step_that_was_not_applied_is_refused():
    """No value changed, no update applied yet: the trainer still holds what it took, and a swap
    then is refused at the next step as before the first one."""
    model = VAE(30, 16, 3, rng=0, dtype=np.float64)
    model.encoder[0].weight.data[:] = np.abs(model.encoder[0].weight.data)
    model.encoder[0].bias.data[:] = 0
    model.encoder[2].weight.data[:, 3:] = 1e3               # logvar = 1e3 * sum(h): exp overflows
    opt = Adam(model.parameters(), lr=1e-2)
    trainer = Trainer(model, opt)
    assert not np.isfinite(trainer.step(np.ones((8, 30))).total)
    model.encoder[1] = Sigmoid()
    with pytest.raises(InputTypeError, match=r"model\.encoder is Dense -> Sigmoid -> Dense"):
        trainer.step(np.zeros((8, 30)))


def test_a_reference_step_before_the_trainers_first_is_taken_whatever_type_t_has():
    """``opt.t`` a 0-d array, changed in place by a reference step after the trainer was made:
    the trainer takes that step (as for an int), and its own is not dropped."""
    x = np.random.default_rng(1).random((16, 30))
    model = VAE(30, 16, 3, rng=0, dtype=np.float64)
    opt = Adam(model.parameters(), lr=1e-2)
    opt.t = np.array(3)
    trainer = Trainer(model, opt)
    reference_steps(model, opt, [x], [1.0])
    trainer.step(x)
    trainer.sync()
    assert opt.t == 5


@pytest.mark.parametrize("t", [2 ** 53 + 2, 2 ** 63, 1e20, -1, np.array([3])])
def test_a_step_count_beyond_any_run_or_no_count_at_all_is_refused(t):
    model = VAE(30, 16, 3, rng=0)
    opt = Adam(model.parameters())
    opt.t = t
    with pytest.raises(InputTypeError, match=r"optimizer\.t must be a whole number of steps taken, from 0 to 2\*\*53"):
        Trainer(model, opt)
    opt.t = 2 ** 53                         # the bound itself is a count
    Trainer(model, opt)
