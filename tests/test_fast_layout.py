"""The fast path's layout and passes: the parameter block, the order and number of computed
units (what dead-unit retirement relies on), batches in the fast layout, and the evaluator."""
import os
import warnings

import numpy as np
import pytest

from npvae import VAE, Adam
from npvae.errors import InputError
from npvae.data import load_idx_split, to_float
from npvae.fast import Evaluator, FastVAE
from npvae.fast.step import quiet_numpy_warnings
from npvae.fast.layout import ParameterBlock
from npvae.fast.workspace import Workspace
from npvae.losses import bce_with_logits_per_sample

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")


@pytest.fixture(scope="module")
def images():
    return load_idx_split(SAMPLE, "t10k")[0][:64]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def adam_with_state(model, seed):
    opt = Adam(model.parameters())
    r = np.random.default_rng(seed)
    for p in model.parameters():
        opt.state[p]["m"][...] = r.standard_normal(p.shape)
        opt.state[p]["v"][...] = r.uniform(0, 1, p.shape)
    return opt


def test_the_block_holds_parameters_and_optimizer_state_and_gives_them_back_exactly():
    model = VAE(12, (8, 6), 3, dtype=np.float64, rng=0)
    params = list(model.parameters())
    opt = adam_with_state(model, 1)
    block = ParameterBlock([p.shape for p in params], model.dtype, Adam.state_names)
    states = {name: [opt.state[p][name] for p in params] for name in Adam.state_names}
    block.load([p.data for p in params], states)
    assert block.rows.shape == (4, sum(p.data.size for p in params))
    for i, p in enumerate(params):
        values, grads, m, v = block.views(i)
        assert np.array_equal(values, p.data) and not grads.any()
        assert np.array_equal(m, opt.state[p]["m"]) and np.array_equal(v, opt.state[p]["v"])
        assert np.shares_memory(values, block.row("values")) and np.shares_memory(m, block.row("m"))
        if p.data.ndim == 2:
            assert values.flags.f_contiguous           # weights column-major: a unit's weights in a run
    # the first n units of a layer are a prefix of its segment, in every row
    W = block.view(block.rows[0], 0)
    assert np.array_equal(block.rows[0][block.segment(0)][:12 * 3], W[:, :3].ravel(order="F"))
    # and back out, bit for bit, into another model and optimizer
    other = VAE(12, (8, 6), 3, dtype=np.float64, rng=5)
    other_opt = adam_with_state(other, 6)
    block.store([q.data for q in other.parameters()],
                {name: [other_opt.state[q][name] for q in other.parameters()] for name in Adam.state_names})
    for p, q in zip(params, other.parameters()):
        assert np.array_equal(p.data, q.data) and q.data.flags.c_contiguous
        assert all(np.array_equal(opt.state[p][n], other_opt.state[q][n]) for n in Adam.state_names)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_units_moved_behind_and_left_out_give_the_full_computation(images, dtype, tol):
    """What retirement does to the network: dead units moved behind the computed ones
    (``reorder``) and left out (``n_units``). Loss and gradients, in the model's order, are
    those of the full network, which are the reference's."""
    model = VAE(784, 40, 4, dtype=dtype, rng=0)
    off = np.array([1, 2, 7, 20, 21, 39])
    model.encoder[0].bias.data[off] = -30.0
    x = to_float(images, dtype)
    eps = np.random.default_rng(1).standard_normal((len(x), 4)).astype(dtype)
    model.zero_grad()
    reference = model.loss(x, 0.7, eps)
    model.backward()
    net = FastVAE(model)
    net.load(model)
    start = net.block.rows[0].copy()
    full = net.forward(np.asfortranarray(x), 0.7, eps)
    net.backward()
    full_grads = net.gradients()
    on = np.setdiff1d(np.arange(40), off)
    net.reorder(np.concatenate([on, off]))
    net.n_units = len(on)
    part = net.forward(np.asfortranarray(x), 0.7, eps)
    net.backward()
    assert rel(full, reference) < tol and rel(part, full) < tol
    for name, p in model.named_parameters():
        assert rel(full_grads[name], p.grad) < 10 * tol, name
        assert rel(net.gradients()[name], full_grads[name]) < 10 * tol, name
    assert not net.gradients()["encoder.0.weight"][:, off].any()
    # moving the units back restores every value bit for bit
    net.n_units = net.units
    net.reorder(np.argsort(np.concatenate([on, off])))
    assert net.order is None and np.array_equal(net.block.rows[0], start)


def test_units_moved_twice_are_put_back_by_restore_order():
    """``reorder`` composes: after two moves, ``restore_order`` gives every row back bit for bit,
    and ``gradients`` are still in the model's order."""
    model = VAE(12, 8, 3, dtype=np.float64, rng=0)
    x = np.random.default_rng(2).random((5, 12))
    eps = np.random.default_rng(3).standard_normal((5, 3))
    net = FastVAE(model)
    net.load(model)
    net.forward(np.asfortranarray(x), 1.0, eps)
    net.backward()
    want = net.gradients()
    start = net.block.rows.copy()
    net.reorder(np.array([1, 2, 3, 4, 5, 6, 7, 0]))
    net.reorder(np.array([7, 0, 2, 1, 3, 4, 6, 5]))
    got = net.gradients()
    assert all(np.array_equal(got[name], want[name]) for name in want)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="put them back first"):   # not units in the wrong places
        net.store(model)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    net.restore_order()
    assert net.order is None and np.array_equal(net.block.rows, start)


def test_quiet_numpy_warnings_silences_overflow_and_invalid_but_keeps_raise():
    """What the fast path's forward passes run in: their loss shows a NaN or inf itself, and under
    ``-W error`` a warning would replace that answer; a caller's ``errstate(raise)`` still holds."""
    inf = np.array([np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="warn", invalid="warn"), quiet_numpy_warnings():
            assert np.isnan(inf - inf)[0] and np.isinf(np.array([1e308]) * 10)[0]
    with np.errstate(invalid="raise"), quiet_numpy_warnings():
        with pytest.raises(FloatingPointError):
            inf - inf


def test_a_workspace_takes_batches_in_the_fast_layout():
    ws = Workspace(5, [12, 8, 6], [3, 8, 12], np.float32)
    x = np.random.default_rng(0).random((5, 12)).astype(np.float32)
    copied = ws.batch(x)                          # row-major: copied into column-major order
    assert copied.flags.f_contiguous and np.array_equal(copied, x) and not np.shares_memory(copied, x)
    column_major = np.asfortranarray(x)
    assert ws.batch(column_major) is column_major  # already in the layout: taken as it is


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_the_evaluator_is_the_models_forward_pass(images, dtype, tol):
    model = VAE(784, 32, 4, dtype=dtype, rng=3)
    evaluator = Evaluator(model)
    x = to_float(images, dtype)
    h = evaluator.encode(evaluator.prepare(x)).copy()
    assert rel(h, model.encoder.forward(x)) < tol
    z = np.random.default_rng(0).standard_normal((len(x), 4)).astype(dtype)
    rows = evaluator.recon_rows(z, evaluator.prepare(x))
    assert rel(rows, bce_with_logits_per_sample(model.decoder.forward(z), x)) < tol
    model.encoder[0].weight.data[...] = 0         # the evaluator copied the parameters once, when made
    assert rel(evaluator.encode(evaluator.prepare(x)), h) == 0


def test_the_evaluator_refuses_what_prepare_did_not_make(images):
    """Pixels 0..255, one image, or codes of another width would give numbers, but wrong ones."""
    model = VAE(784, 32, 4, rng=3)
    evaluator = Evaluator(model)
    x = to_float(images[:6], np.float32)
    z = np.zeros((6, 4), np.float32)
    for bad in (images[:6], x, x[0], np.asfortranarray(x[:, :100]), np.asfortranarray(x, np.float64), x.tolist()):
        with pytest.raises(InputError, match=r"x must be prepare\(x\)'s batch of shape \(batch, 784\), got (a|list)"):
            evaluator.encode(bad)
        with pytest.raises(InputError, match=r"x must be prepare\(x\)'s batch"):
            evaluator.recon_rows(z, bad)
    for bad in (z[:5], z[:, :3], z.astype(np.float64), z.tolist()):
        with pytest.raises(InputError, match=r"z must be a float32 array, a row per row of x, of shape \(6, 4\), got"):
            evaluator.recon_rows(bad, evaluator.prepare(x))
    assert evaluator.recon_rows(z, evaluator.prepare(x)).shape == (6,)
    x64 = x.astype(np.float64)                       # prepare makes the model's type of it
    assert np.array_equal(evaluator.encode(evaluator.prepare(x64)), evaluator.encode(evaluator.prepare(x)))


def test_the_evaluator_blames_the_layout_only_for_an_x_of_the_models_type_and_width(images):
    """"not in the column-major layout" is said of a row-major x prepare would only reorder, not of
    an x of another type (a float64 array in column-major order is in that layout)."""
    evaluator = Evaluator(VAE(784, 32, 4, rng=3))
    x = to_float(images[:6], np.float32)
    with pytest.raises(InputError, match=r"got a float32 array of shape \(6, 784\) not in the column-major layout "
                                         r"prepare\(x\) makes: pass prepare\(x\)'s result$"):
        evaluator.encode(np.ascontiguousarray(x))
    for bad in (np.asfortranarray(x, np.float64), x.astype(np.float64)):
        with pytest.raises(InputError, match=r"got a float64 array of shape \(6, 784\)$"):
            evaluator.encode(bad)


def test_units_left_out_after_a_pass_where_they_fired_get_zero_gradients():
    """FastVAE.backward zeroes what it does not compute: the left-out units' bias gradient and
    their rows of the next weight's gradient ("these rows step with 0"). The tutorial's own
    retirement only leaves out units whose last gradients were 0 already, so a stale row from
    the previous pass would go unnoticed there; here the units fired in the previous pass."""
    model = VAE(30, 12, 3, dtype=np.float64, rng=0)
    model.encoder[0].bias.data[:] = 5.0                 # every unit fires on every row
    x = np.random.default_rng(2).random((9, 30))
    eps = np.random.default_rng(3).standard_normal((9, 3))
    net = FastVAE(model)
    net.load(model)
    net.forward(np.asfortranarray(x), 1.0, eps)
    net.backward()
    out = np.array([0, 5, 11])
    assert net.gradients()["encoder.0.bias"][out].all()          # they had gradients
    kept = np.setdiff1d(np.arange(12), out)
    net.reorder(np.concatenate([kept, out]))
    net.n_units = len(kept)
    net.forward(np.asfortranarray(x), 1.0, eps)
    net.backward()
    grads = net.gradients()
    assert not grads["encoder.0.weight"][:, out].any()
    assert not grads["encoder.0.bias"][out].any()
    assert not grads["encoder.2.weight"][out, :].any()


def test_the_fast_paths_loss_sums_its_rows_in_float64_in_float32_training():
    """As the reference's batch_mean, FastVAE.forward sums the per-image losses in float64: one
    image's loss of 784000 and 127 of 0.01 each give the mean of all 128, where a float32 sum
    would drop the small ones (float32's spacing at 784000 is 0.0625)."""
    model = VAE(784, 32, 4, dtype=np.float32, rng=0)
    state = model.state_dict()
    state["decoder.2.weight"][:] = 0.0
    state["decoder.2.bias"][:] = 1000.0               # every logit 1000: a black pixel costs 1000
    model.load_state_dict(state)
    x = np.ones((128, 784), np.float32)
    x[0] = 0.0                                         # image 0: 784000
    x[1:, 0] = 0.99999                                 # the others: about 0.01
    eps = np.random.default_rng(0).standard_normal((128, 4)).astype(np.float32)
    net = FastVAE(model)
    net.load(model)
    full = net.forward(np.asfortranarray(x), 1.0, eps).recon
    first = net.forward(np.asfortranarray(x[:1]), 1.0, eps[:1]).recon
    rest = net.forward(np.asfortranarray(x[1:]), 1.0, eps[1:]).recon
    assert rest > 0.005
    assert full == pytest.approx((first + 127 * rest) / 128, rel=1e-13)


def test_load_takes_the_model_as_it_is_in_its_order_with_every_unit_computed():
    """After units were moved and some left out, ``load`` starts again from the model: the loss
    and the gradients are a fresh FastVAE's (a Trainer reloads so after a Ctrl-C cut a move short)."""
    model = VAE(30, 12, 3, dtype=np.float64, rng=0)
    model.encoder[0].bias.data[:] = 5.0                 # every unit fires: leaving one out shows
    x = np.asfortranarray(np.random.default_rng(2).random((9, 30)))
    eps = np.random.default_rng(3).standard_normal((9, 3))
    fresh = FastVAE(model)
    fresh.load(model)
    expected = fresh.forward(x, 1.0, eps)
    fresh.backward()
    wanted = {name: g.copy() for name, g in fresh.gradients().items()}
    net = FastVAE(model)
    net.load(model)
    net.reorder(np.arange(12)[::-1])
    net.n_units = 6
    net.load(model)
    assert net.forward(x, 1.0, eps) == expected
    net.backward()
    for name, g in net.gradients().items():
        np.testing.assert_array_equal(g, wanted[name], err_msg=name)
