"""Every kernel of npvae/fast/kernels.py against the reference lines it stands for.

Each kernel fuses a few lines of the plain NumPy reference (``Dense``, ``ReLU``, ``Sampler``,
``KL``, ``BCEWithLogits``, ``Adam``, ``SGD``, ``to_float``); here each one gets the reference's
own inputs in the fast path's layout (column-major batches, flat optimizer rows) and must
give the reference's numbers: bit for bit where the arithmetic is the same, within a few
units in the last place where the kernel rounds differently (sums in another order, float32
``exp`` and ``log1p`` as polynomials, Adam's update arranged as PyTorch arranges it).

The file also runs as plain Python (``NUMBA_DISABLE_JIT=1 python -m pytest
tests/test_fast_kernels.py``, as CI does), so its arrays are small.
"""
import math
import warnings
from fractions import Fraction

import numba
import numpy as np
import pytest

from npvae import SGD, Adam, Dense, ReLU, Sampler
from npvae.data import to_float
from npvae.fast import kernels as k
from npvae.layers import sigmoid
from npvae.losses import KL, BCEWithLogits, bce_with_logits_per_sample, kl_per_sample
from npvae.module import Parameter

JIT = not numba.config.DISABLE_JIT
DTYPES = [np.float32, np.float64]
B, N, D = 5, 7, 3          # batch, width, latent size: small, for the plain-Python run


def rtol(dtype, ulps=4):
    return ulps * float(np.finfo(dtype).eps)


def F(a, dtype=None):
    """``a`` as a new column-major array (the fast path's layout of every 2-D array)."""
    return np.array(a, dtype=dtype, order="F")


def normal(seed, shape, dtype, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def latent(seed, dtype, lo=-3.0, hi=2.0):
    """``h = [mu | logvar]`` (B, 2D), column-major, logvar in [lo, hi]."""
    r = np.random.default_rng(seed)
    return F(np.concatenate([r.standard_normal((B, D)), r.uniform(lo, hi, (B, D))], axis=1), dtype)


def relu_output(seed, dtype, off=(1, 4, 5)):
    """A ReLU layer's output (B, N): some zeros everywhere, and units ``off`` zero for the whole batch."""
    y = np.maximum(normal(seed, (B, N), dtype), 0)
    y[0, 0] = 0
    y[:, list(off)] = 0
    return F(y)


# -- a Dense layer and its ReLU ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_bias_is_the_bias_of_dense_forward(dtype):
    layer = Dense(4, N, dtype=dtype, rng=0)
    x = normal(1, (B, 4), dtype)
    y = F(x @ layer.weight.data)                 # the product as the reference takes it
    k.add_bias(y, layer.bias.data)
    assert np.array_equal(y, layer.forward(x))   # one addition an entry: the same bits


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_forward_is_dense_then_relu(dtype):
    layer = Dense(4, N, dtype=dtype, rng=0)
    x = normal(1, (B, 4), dtype)
    y = F(x @ layer.weight.data)
    k.bias_relu_forward(y, layer.bias.data)
    assert np.array_equal(y, ReLU().forward(layer.forward(x)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_is_the_bias_gradient_of_dense_backward(dtype):
    layer = Dense(4, N, dtype=dtype, rng=0)
    layer.forward(normal(1, (B, 4), dtype))
    g = normal(2, (B, N), dtype)
    layer.backward(g)
    db = np.full(N, 99, dtype)                   # written, not added to
    k.bias_grad(F(g), db)
    np.testing.assert_allclose(db, layer.bias.grad, rtol=rtol(dtype), atol=rtol(dtype) * B)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_bias_backward_is_relu_backward_then_the_bias_gradient(dtype):
    y = relu_output(0, dtype)
    y[:, 6] = 0
    y[2, 6] = 1.0                                # unit 6 fires once...
    g = normal(1, (B, N), dtype)
    g[2, 6] = 0                                  # ...where its gradient is 0: no gradient at all
    relu = ReLU()
    assert np.array_equal(relu.forward(y), y)    # a ReLU whose output was y
    expected = relu.backward(g)
    dx, db, live = F(np.full((B, N), 7, dtype)), np.full(N, 7, dtype), np.full(N, -1, np.intp)
    n_live = k.relu_bias_backward(F(g), y, dx, db, live)
    assert np.array_equal(dx, expected)
    np.testing.assert_allclose(db, expected.sum(axis=0), rtol=rtol(dtype), atol=rtol(dtype) * B)
    # live: the columns of dx with a nonzero entry, increasing (the others' dW columns are 0)
    assert live[:n_live].tolist() == np.flatnonzero(expected.any(axis=0)).tolist() == [0, 2, 3]
    assert k.relu_bias_backward(F(g), F(-y), dx, db, live) == 0 and not dx.any() and not db.any()


def test_relu_bias_backward_by_hand():
    dy = F([[5, 1, 6, 2], [7, -3, 0, 0]], np.float32)
    y = F([[0, 1, 0, 2], [0, 3, 0, 1]], np.float32)                 # units 0 and 2 off
    dx, db, live = F(np.empty((2, 4), np.float32)), np.empty(4, np.float32), np.full(4, -1, np.intp)
    assert k.relu_bias_backward(dy, y, dx, db, live) == 2 and live[:2].tolist() == [1, 3]
    assert dx.tolist() == [[0, 1, 0, 2], [0, -3, 0, 0]] and db.tolist() == [0, -2, 0, 2]
    out = F(np.empty((2, 2), np.float32))
    k.gather_columns(dx, live, out)
    assert out.tolist() == [[1, 2], [-3, 0]]


def test_a_unit_whose_gradients_cancel_is_live_its_weight_gradient_is_not_0():
    """Live means some sample's gradient is not 0, not that their sum is not 0: the bias
    gradient of unit 1 cancels to 0, its weight gradient ``x.T @ dx`` does not."""
    dy = F([[4, 1], [2, -1]], np.float32)
    y = F([[0, 2], [0, 5]], np.float32)                             # unit 0 off, unit 1 on
    dx, db, live = F(np.empty((2, 2), np.float32)), np.empty(2, np.float32), np.full(2, -1, np.intp)
    assert k.relu_bias_backward(dy, y, dx, db, live) == 1 and live[0] == 1
    assert db.tolist() == [0, 0] and dx.tolist() == [[0, 1], [0, -1]]
    out = F(np.empty((2, 1), np.float32))
    k.gather_columns(dx, live, out)                 # what the weight gradient multiplies: its column
    assert out.tolist() == [[1], [-1]]


def test_mark_fired_columns_marks_units_that_fired_and_keeps_earlier_marks():
    y = F(np.zeros((5, 4), np.float32))
    y[3, 0], y[0, 2] = 1e-30, 2.0                 # columns 0 and 2 fired...
    fired = np.array([False, True, False, False])  # ...column 1 did in an earlier batch
    k.mark_fired_columns(y, fired)
    assert fired.tolist() == [True, True, True, False]
    y = relu_output(3, np.float64)
    fired = np.zeros(N, bool)
    k.mark_fired_columns(y, fired)
    assert np.array_equal(fired, (y > 0).any(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_columns_takes_the_listed_columns(dtype):
    a = F(normal(0, (B, N), dtype))
    idx = np.array([0, 2, 3, 6, 1], np.intp)
    out = F(np.empty((B, 4), dtype))             # only the first out.shape[1] entries of idx
    k.gather_columns(a, idx, out)
    assert np.array_equal(out, a[:, idx[:4]])


# -- pixels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_pixels_is_to_float_for_every_pixel_value(dtype):
    pixels = F(np.arange(256, dtype=np.uint8).reshape(16, 16))
    out = F(np.full((16, 16), np.nan, dtype))
    k.scale_pixels(pixels, out)
    assert np.array_equal(out, to_float(pixels, dtype))
    # and to_float is x / 255 rounded once: the nearest float of dtype to the exact quotient
    for x, got in zip(pixels.ravel(), out.ravel()):
        q = Fraction(int(x), 255)
        near = dtype(float(q))
        best = min((near, np.nextafter(near, dtype(0)), np.nextafter(near, dtype(1))),
                   key=lambda c: abs(Fraction(float(c)) - q))
        assert got == best, f"pixel {x} -> {got!r}, the nearest {dtype.__name__} is {best!r}"
    assert out[0, 0] == 0 and out[15, 15] == 1


def test_scale_pixels_of_an_empty_batch_does_nothing():
    k.scale_pixels(F(np.zeros((0, 3), np.uint8)), F(np.zeros((0, 3), np.float32)))


# -- the reconstruction loss -------------------------------------------------------------------
def logits_and_targets(dtype, width=N, scale=4.0):
    r = np.random.default_rng(width)
    return F(scale * r.standard_normal((B, width)), dtype), F(r.uniform(0, 1, (B, width)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_logits_forward_is_bce_with_logits_per_sample(dtype):
    logits, target = logits_and_targets(dtype)
    rows = np.full(B, 99, dtype)
    k.bce_logits_forward(logits, target, rows)
    np.testing.assert_allclose(rows, bce_with_logits_per_sample(logits, target), rtol=rtol(dtype, 8))


@pytest.mark.parametrize("width", [N, N - 1], ids=["odd", "even"])   # two columns a pass, and the odd one
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_logits_forward_backward_is_bce_forward_then_backward(dtype, width):
    logits, target = logits_and_targets(dtype, width)
    bce = BCEWithLogits()
    bce.forward(logits, target)
    rows, dlogits = np.full(B, 99, dtype), F(np.full((B, width), 99, dtype))
    k.bce_logits_forward_backward(logits, target, dtype(1.0 / B), rows, dlogits)
    np.testing.assert_allclose(rows, bce.rows, rtol=rtol(dtype, 8))
    np.testing.assert_allclose(dlogits, bce.backward(), rtol=rtol(dtype, 8), atol=rtol(dtype, 2) / B)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fused_sigmoid_is_npvae_sigmoid_saturated_values_included(dtype):
    """With target 0 and scale 1, ``dlogits`` is the sigmoid itself."""
    logits = F(np.concatenate([np.linspace(-30, 30, 61), [-1000, -100, -88, 88, 100, 1000]])[None, :], dtype)
    rows, s = np.empty(1, dtype), F(np.empty_like(logits))
    with np.errstate(under="ignore"):
        k.bce_logits_forward_backward(logits, F(np.zeros_like(logits)), dtype(1.0), rows, s)
    expected = sigmoid(logits)
    subnormal = float(np.finfo(dtype).smallest_subnormal)
    np.testing.assert_allclose(s, expected, rtol=rtol(dtype, 8), atol=8 * subnormal)
    assert ((s >= 0) & (s <= 1)).all() and s[0, 30] == 0.5 and s[0, -1] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_logits_give_finite_losses_and_gradients_without_warnings(dtype):
    logits = F([[-1000, -100, -88, -30, 0, 30, 88, 100, 1000]], dtype)
    target = F([[0, 1, 0, 1, 0.5, 0, 1, 0, 1]], dtype)
    rows, dlogits = np.empty(1, dtype), F(np.empty_like(logits))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            k.bce_logits_forward_backward(logits, target, dtype(1.0), rows, dlogits)
    # softplus(l) - l t: about |l| where the target is on the wrong side, about 0 elsewhere
    assert rows[0] == pytest.approx(100 + 30 + math.log(2) + 30 + 100, rel=rtol(dtype, 8))
    assert rows[0] == pytest.approx(bce_with_logits_per_sample(logits, target)[0], rel=rtol(dtype, 8))
    assert dlogits.ravel().tolist() == pytest.approx([0, -1, 0, -1, 0, 1, 0, 1, 0], abs=1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_nan_or_inf_logit_gives_the_references_nan_or_inf_loss(dtype, bad):
    """A diverged decoder must show in the loss (fastmath assumes no NaN or inf away). For
    l = +inf and 0 < t < 1 the kernel's l (1 - t) is inf, the true loss, where the reference's
    max(l, 0) - l t is inf - inf = NaN: there, both are not finite."""
    logits, target = logits_and_targets(dtype)
    logits[2, 3] = bad
    rows, dlogits = np.empty(B, dtype), F(np.empty((B, N), dtype))
    with np.errstate(all="ignore"):
        expected = bce_with_logits_per_sample(logits, target)
        k.bce_logits_forward_backward(logits, target, dtype(1.0 / B), rows, dlogits)
    assert not np.isfinite(expected[2])

    def assert_like_the_reference(rows):
        if bad == np.inf:
            assert not np.isfinite(rows[2])
            rows, want = np.delete(rows, 2), np.delete(expected, 2)
        else:
            want = expected
        np.testing.assert_allclose(rows, want, rtol=rtol(dtype, 8), equal_nan=True)
    assert_like_the_reference(rows)
    with np.errstate(all="ignore"):
        k.bce_logits_forward(logits, target, rows)
    assert_like_the_reference(rows)


@pytest.mark.skipif(not JIT, reason="under NUMBA_DISABLE_JIT=1 nothing is compiled")
def test_no_kernel_is_compiled_to_assume_nan_or_inf_away():
    """fastmath without nnan/ninf: LLVM may drop a NaN or inf that those flags let it assume
    away (whenever a new version exploits them), and a diverging run must still be seen as
    diverging. (The compiled code itself cannot be read from Numba's cache.)"""
    from numba.core.dispatcher import Dispatcher
    kernels = {name: f for name, f in vars(k).items() if isinstance(f, Dispatcher)}
    assert len(kernels) > 10
    for name, kernel in kernels.items():
        flags = kernel.targetoptions.get("fastmath")
        assert flags is not True and not {"nnan", "ninf", "fast"} & set(flags or ()), (name, flags)


# -- the latent code: sampler and KL -----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_sampler_forward_is_sampler(dtype):
    h = latent(0, dtype)
    eps = normal(1, (B, D), dtype)               # row-major, as the Generator draws it
    z, std = F(np.empty((B, D), dtype)), F(np.empty((B, D), dtype))
    k.sampler_forward(h, eps, z, std)
    np.testing.assert_allclose(std, np.exp(0.5 * h[:, D:]), rtol=rtol(dtype, 8))
    np.testing.assert_allclose(z, Sampler().forward(h, eps), rtol=rtol(dtype, 8), atol=rtol(dtype, 8))


def test_sampler_forward_by_hand():
    z, std = F(np.empty((1, 1), np.float32)), F(np.empty((1, 1), np.float32))
    k.sampler_forward(F([[2.0, np.log(4.0)]], np.float32), np.array([[-1.5]], np.float32), z, std)
    assert std[0, 0] == pytest.approx(2.0, rel=1e-6) and z[0, 0] == pytest.approx(-1.0, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_forward_is_kl_per_sample(dtype):
    h = latent(2, dtype)
    rows = np.full(B, 99, dtype)
    k.kl_forward(h, rows)
    np.testing.assert_allclose(rows, kl_per_sample(h[:, :D], h[:, D:]), rtol=rtol(dtype, 8))
    k.kl_forward(F([[1.0, 0.0], [0.0, 0.0]], dtype), rows[:2])   # mu = 1, var = 1: (1 + 1 - 1 - 0)/2
    assert rows[:2].tolist() == [0.5, 0.0]


@pytest.mark.parametrize("beta", [0.0, 0.7])
@pytest.mark.parametrize("dtype", DTYPES)
def test_latent_backward_is_sampler_backward_plus_kl_backward(dtype, beta):
    h, eps, dz = latent(3, dtype), normal(4, (B, D), dtype), normal(5, (B, D), dtype)
    sampler, kl = Sampler(), KL()
    sampler.forward(h, eps)
    kl.forward(h)
    expected = sampler.backward(dz) + kl.backward(beta)   # the two roads into h, as VAE.backward sums them
    z, std = F(np.empty((B, D), dtype)), F(np.empty((B, D), dtype))
    k.sampler_forward(h, eps, z, std)
    dh = F(np.full((B, 2 * D), 99, dtype))
    k.latent_backward(F(dz), eps, std, h, dtype(beta / B), dh)
    np.testing.assert_allclose(dh, expected, rtol=rtol(dtype, 8), atol=rtol(dtype, 8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_kl_gradient_keeps_its_digits_for_log_variances_near_0(dtype):
    """Latents at the prior: ``(exp(logvar) - 1) / 2`` with ``exp(logvar)`` near 1 would lose
    most digits to the subtraction (19% of the value at logvar = 1e-7 in float32); the
    reference's ``expm1`` keeps them, and so must the kernel."""
    h = F(np.zeros((B, 2 * D)), dtype)
    h[:, D:] = np.array([[1e-7, -1e-7, 3e-6], [-2e-5, 1e-4, -1e-3], [1e-2, -3e-2, 5e-8],
                         [2e-7, 7e-4, -4e-6], [1e-6, -1e-5, 1e-3]])
    kl = KL()
    kl.forward(h)
    expected = kl.backward(0.7)
    z, std = F(np.empty((B, D), dtype)), F(np.empty((B, D), dtype))
    eps, dz = np.zeros((B, D), dtype), F(np.zeros((B, D), dtype))      # the road through z gives 0
    k.sampler_forward(h, eps, z, std)
    dh = F(np.full((B, 2 * D), 99, dtype))
    k.latent_backward(dz, eps, std, h, dtype(0.7 / B), dh)
    np.testing.assert_allclose(dh[:, D:], expected[:, D:], rtol=rtol(dtype, 8), atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_latent_kernels_at_extreme_log_variances_follow_the_reference(dtype):
    """Huge logvar overflows to inf, tiny to 0, NaN stays NaN: as NumPy's reference does."""
    big = 1000.0 if dtype == np.float32 else 2000.0
    h = latent(6, dtype)
    h[:, D:] = [[big, -big, 0.0], [-30.0, 60.0, np.nan], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    h[3, 0] = np.nan                             # a NaN mean
    eps = normal(7, (B, D), dtype)
    z, std, rows = F(np.empty((B, D), dtype)), F(np.empty((B, D), dtype)), np.empty(B, dtype)
    with np.errstate(all="ignore"):
        k.sampler_forward(h, eps, z, std)
        k.kl_forward(h, rows)
        ref_z = Sampler().forward(h, eps)
        ref_rows = kl_per_sample(h[:, :D], h[:, D:])
    np.testing.assert_allclose(z, ref_z, rtol=rtol(dtype, 8), equal_nan=True)
    np.testing.assert_allclose(rows, ref_rows, rtol=rtol(dtype, 8), equal_nan=True)
    assert std[0, 0] == np.inf and std[0, 1] == 0 and np.isnan(std[1, 2])
    assert rows[0] == np.inf and np.isnan(rows[1]) and np.isnan(rows[3]) and np.isfinite(rows[2])


# -- the optimizers' updates -------------------------------------------------------------------
def adam_constants(dtype, t, wd, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """The kernel's scalar arguments for step ``t``, as npvae.fast.optim.FusedAdam passes them."""
    b1, b2 = betas
    rates = tuple(dtype(x) for x in (b1, 1 - b1, b2, 1 - b2))
    c = (lr, eps, wd, 1 - b1 ** t, 1 - b2 ** t, np.finfo(dtype).tiny)
    lr, eps, wd, bc1, bc2, tiny = (dtype(x) for x in c)
    return lr, rates, eps, wd, bc1, bc2, tiny


def adam_state(seed, dtype, n=24):
    r = np.random.default_rng(seed)
    p, g = normal(seed, n, dtype), normal(seed + 1, n, dtype)
    m = (0.1 * r.standard_normal(n)).astype(dtype)
    v = r.uniform(1e-6, 0.1, n).astype(dtype)
    return p, g, m, v


def reference_adam(p, g, m, v, t, wd):
    """``Adam.step`` (the reference) as step ``t`` from state (p, m, v) with gradient g."""
    param = Parameter(p.copy())
    opt = Adam([param], weight_decay=wd)
    opt.t = t - 1
    opt.state[param]["m"][...] = m
    opt.state[param]["v"][...] = v
    param.grad[...] = g
    opt.step()
    return param.data, opt.state[param]["m"], opt.state[param]["v"]


def assert_close_to_scale(got, want, scale, dtype, ulps=8):
    """|got - want| within a few ulp of ``scale``, the size of the terms that made ``want``
    (a moment's new value may be far smaller than its two terms: it cancels)."""
    err = np.abs(got.astype(np.float64) - want) / (rtol(dtype, 1) * np.abs(scale))
    assert (err <= ulps).all(), f"off by {err.max():.1f} ulp of the terms' scale"


@pytest.mark.parametrize("t", [1, 37])
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_is_adam_step(dtype, wd, t):
    p, g, m, v = adam_state(0, dtype)
    want = reference_adam(p, g, m, v, t, wd)
    got = [a.copy() for a in (p, g, m, v)]
    k.adam_update(*got, *adam_constants(dtype, t, wd))
    assert np.array_equal(got[1], g)             # the gradient is read, never written
    g = g + wd * p
    moved = np.max(np.abs(want[0] - p))
    assert_close_to_scale(got[0], want[0], np.abs(p) + moved, dtype)
    assert_close_to_scale(got[2], want[1], np.maximum(np.abs(m), np.abs(g)), dtype)
    assert_close_to_scale(got[3], want[2], np.maximum(v, g * g), dtype)
    assert (got[0] != p).all()


def test_adam_update_overflows_v_where_the_reference_does():
    """float32: a gradient whose square passes the largest float makes v inf on both paths (g * g
    first, as PyTorch), so a parameter frozen by it is frozen on both, and fit's check of the
    optimizer's state stops both alike. (The reference once overflowed only 30 times higher.)"""
    p, _, m, v = adam_state(0, np.float32, n=4)
    g = np.array([1e19, 1.9e19, 4e19, 1e21], np.float32)          # squares: 1e38, 3.6e38 (inf), ...
    got = [a.copy() for a in (p, g, m, v)]
    with np.errstate(over="ignore"):            # the overflow is the point (the kernel's: NUMBA_DISABLE_JIT=1)
        want = reference_adam(p, g, m, v, 1, 0.0)
        k.adam_update(*got, *adam_constants(np.float32, 1, 0.0))
    assert np.isinf(want[2]).tolist() == np.isinf(got[3]).tolist() == [False, True, True, True]


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.95)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_moments_from_zero_are_the_references_to_round_off(dtype, betas):
    """The first step's moments are ``(1 - beta1) g`` and ``(1 - beta2) g^2``: the kernel must use
    the same rounded ``1 - beta`` as the reference, to round-off (in float32, ``1 - float32(0.999)``
    is 1.3e-5 off: about 100 ulp)."""
    p, g, _, _ = adam_state(3, dtype)
    got = [p.copy(), g, np.zeros_like(p), np.zeros_like(p)]
    k.adam_update(*got, *adam_constants(dtype, 1, 0.0, betas=betas))
    ref = Adam([Parameter(p.copy())], betas=betas)
    param = ref.params[0]
    param.grad[...] = g
    ref.step()
    one_ulp = 2 * np.finfo(dtype).eps         # (fastmath may multiply g * g first: 1 ulp)
    np.testing.assert_allclose(got[2], ref.state[param]["m"], rtol=one_ulp, atol=0)
    np.testing.assert_allclose(got[3], ref.state[param]["v"], rtol=one_ulp, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_flushes_moments_below_the_smallest_normal_to_zero(dtype):
    """The one documented difference from the reference: moments under ``tiny`` become 0
    (the reference's would go subnormal); the update they would have made is negligible."""
    tiny = np.finfo(dtype).tiny
    p, g = np.ones(4, dtype), np.zeros(4, dtype)
    m = np.array([tiny, -tiny, 2 * tiny, 0], dtype)
    v = np.array([tiny, 2 * tiny, 0.5, 0], dtype)
    k.adam_update(p, g, m, v, *adam_constants(dtype, 5, 0.0))
    assert m.tolist() == [0, 0, dtype(0.9) * dtype(2 * tiny), 0]     # 0.9 tiny < tiny: flushed
    assert v[0] == 0 and v[1] == dtype(0.999) * dtype(2 * tiny) and v[2] > 0
    assert (p == 1).all()                                            # too small to move 1.0


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_columns_is_adam_update_with_the_gradient_written_out(dtype, wd):
    """The first weight's update from its live columns == the update of the whole gradient."""
    p, m = F(normal(0, (B, N), dtype)), F(normal(1, (B, N), dtype, 0.1))
    v = F(np.random.default_rng(2).uniform(1e-6, 0.1, (B, N)).astype(dtype))
    m[:, 5] = 0                                  # a long-dead unit: its first moment has flushed to 0
    m[:, 1] = 1e-3                               # a dead unit whose moment still moves it
    columns = np.array([0, 2, 3, 6], np.intp)    # increasing, as relu_bias_backward writes them
    values = F(normal(3, (B, len(columns)), dtype))
    g = F(np.zeros((B, N), dtype))
    g[:, columns] = values
    c = adam_constants(dtype, 9, wd)
    dense = [a.copy(order="F") for a in (p, m, v)]
    k.adam_update(*(a.ravel(order="F") for a in (dense[0], g, dense[1], dense[2])), *c)
    start = p.copy()
    k.adam_update_columns(p, values, columns, m, v, *c)
    for got, want in zip((p, m, v), dense):
        np.testing.assert_allclose(got, want, rtol=rtol(dtype), atol=0)
    assert (p[:, 1] != start[:, 1]).all()        # the dead unit with a moment left moves
    if wd == 0:                                  # the long-dead one stays put (with weight decay it moves)
        assert (m[:, 5] == 0).all() and np.array_equal(p[:, 5], start[:, 5])
    else:
        assert (p[:, 5] != start[:, 5]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_decay_moment_is_bit_for_bit_the_zero_gradient_steps_it_replays(dtype):
    """What the fast path skips for held columns (FusedAdam.hold) is replayed exactly."""
    tiny = np.finfo(dtype).tiny
    r = np.random.default_rng(5)
    c = adam_constants(dtype, 3, 0.0)
    zeros = np.zeros(24, dtype)
    v = r.uniform(0, 0.1, 24).astype(dtype)
    v[:4] = tiny * np.array([1.0, 1.5, 1e3, 0.0])   # near the end of the normal range: flush on the way
    stepped = v.copy()
    for _ in range(30):
        k.adam_update(np.ones(24, dtype), zeros, zeros.copy(), stepped, *c)
    k.decay_moment(v, dtype(0.999), 30, dtype(tiny))
    assert np.array_equal(v, stepped) and v[0] == 0 and v[2] > 0
    # the first moment, signed, decays by beta1 the same way
    m = (r.uniform(0, 0.1, 24) * np.where(np.arange(24) % 2, 1, -1)).astype(dtype)
    m[:2] = tiny * np.array([-1.05, 1.2])
    stepped = m.copy()
    for _ in range(30):
        k.adam_update(np.ones(24, dtype), zeros, stepped, r.uniform(0, 0.1, 24).astype(dtype), *c)
    k.decay_moment(m, dtype(0.9), 30, dtype(tiny))
    assert np.array_equal(m, stepped) and m[0] == m[1] == 0 and (m[2::2] < 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_decay_moment_over_blocks_that_flush_at_different_steps(dtype):
    """The kernel goes block by block (1024 entries) and stops a block once all of it is 0:
    a block that flushes early, one that never does, and a short last block."""
    tiny = np.finfo(dtype).tiny
    v = np.random.default_rng(6).uniform(0, 1e-3, 2500).astype(dtype)
    v[:1024] = tiny * np.linspace(1.0, 1.002, 1024, dtype=dtype)   # all 0 after one step
    v[1500] = tiny                                                  # one early 0 among live values
    expected = v.copy()
    steps = 40 if JIT else 3
    for _ in range(steps):                       # the definition: one zero-gradient step at a time
        expected *= dtype(0.999)
        expected[expected < tiny] = 0
    k.decay_moment(v, dtype(0.999), steps, dtype(tiny))
    assert np.array_equal(v, expected)
    assert not v[:1024].any() and v[1500] == 0 and (v[1024:1500] > 0).all() and (v[2000:] > 0).all()


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_is_sgd_step(dtype, momentum, wd):
    p0, g1, g2 = normal(0, 24, dtype), normal(1, 24, dtype), normal(2, 24, dtype)
    param = Parameter(p0.copy())
    opt = SGD([param], lr=0.1, momentum=momentum, weight_decay=wd)
    p, buf = p0.copy(), np.zeros(24, dtype)
    for t, g in enumerate((g1, g2, g1), start=1):  # the first step (buf = g) and two after it
        param.grad[...] = g
        opt.step()
        scale = np.abs(buf) + np.abs(g) + np.abs(p)        # before the step: its terms
        k.sgd_update(p, g, buf, dtype(0.1), dtype(momentum), dtype(wd), t == 1, dtype(np.finfo(dtype).tiny))
        assert_close_to_scale(p, param.data, scale, dtype)
        if momentum:
            assert_close_to_scale(buf, opt.state[param]["momentum_buffer"], scale, dtype)


# -- float32 math helpers: exp and log1p as polynomials ----------------------------------------
# Loops applying each helper elementwise, compiled as the kernels are (fastmath, as they run
# in training) and without fastmath (the algorithm as written). Not cached: Numba would check
# a cached loop against this file only, and keep running the helpers as they were when
# kernels.py changed since.
AS_IN_KERNELS = dict(k.JIT_OPTIONS, cache=False)
AS_WRITTEN = dict(k.JIT_OPTIONS, cache=False, fastmath=False)


@numba.njit(**AS_IN_KERNELS)
def exp_neg_map(x, out):
    for i in range(x.size):
        out[i] = k.exp_neg(x[i])


@numba.njit(**AS_WRITTEN)
def exp_neg_map_as_written(x, out):
    for i in range(x.size):
        out[i] = k.exp_neg(x[i])


@numba.njit(**AS_IN_KERNELS)
def exp_any_map(x, out):
    for i in range(x.size):
        out[i] = k.exp_any(x[i])


@numba.njit(**AS_WRITTEN)
def exp_any_map_as_written(x, out):
    for i in range(x.size):
        out[i] = k.exp_any(x[i])


@numba.njit(**AS_IN_KERNELS)
def expm1_any_map(x, out):
    for i in range(x.size):
        out[i] = k.expm1_any(x[i])


@numba.njit(**AS_WRITTEN)
def expm1_any_map_as_written(x, out):
    for i in range(x.size):
        out[i] = k.expm1_any(x[i])


@numba.njit(**AS_IN_KERNELS)
def log1p_unit_map(x, out):
    for i in range(x.size):
        out[i] = k.log1p_unit(x[i])


@numba.njit(**AS_WRITTEN)
def log1p_unit_map_as_written(x, out):
    for i in range(x.size):
        out[i] = k.log1p_unit(x[i])


def ulps(y, exact):
    """|y - exact| in units of float32's spacing at ``exact`` (float64)."""
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(y.astype(np.float64) - exact) / spacing


def grid(lo, hi):
    return np.linspace(lo, hi, 200_001 if JIT else 2001).astype(np.float32)


def test_float32_exp_neg_is_within_a_few_ulp():
    x = -grid(0, 87.3)
    exact = np.exp(x.astype(np.float64))
    y = np.empty_like(x)
    exp_neg_map_as_written(x, y)
    assert ulps(y, exact).max() <= 1.0           # the algorithm as written
    exp_neg_map(x, y)
    assert ulps(y, exact).max() <= 5.0           # as compiled into the kernels (reassociated)
    assert ulps(y[x >= -10], exact[x >= -10]).max() <= 1.5
    # below -87.3 the result is subnormal: a few units of the smallest subnormal 2^-149 off at most
    tail = -np.linspace(87.3, 110.0, 2001).astype(np.float32)
    out = np.empty_like(tail)
    with np.errstate(under="ignore"):
        exp_neg_map(tail, out)
    err = np.abs(out.astype(np.float64) - np.exp(tail.astype(np.float64))) / 2.0 ** -149
    assert err.max() <= 4.0 and (out >= 0).all() and (out[tail <= -104.0] == 0).all()


def test_float32_exp_any_is_within_a_few_ulp_and_overflows_to_inf():
    x = grid(-87.3, 88.72)
    exact = np.exp(x.astype(np.float64))
    y = np.empty_like(x)
    exp_any_map_as_written(x, y)
    assert ulps(y, exact).max() <= 1.0
    exp_any_map(x, y)
    assert np.isfinite(y).all() and ulps(y, exact).max() <= 5.0
    # overflow to inf, underflow to 0, NaN kept: as the C library's expf
    edge = np.array([88.8, 100.0, 1e30, np.inf, -104.5, -1e30, -np.inf, np.nan], np.float32)
    out = np.empty_like(edge)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):   # NumPy's, under NUMBA_DISABLE_JIT=1
        exp_any_map(edge, out)
    assert out[:4].tolist() == [np.inf] * 4 and out[4:7].tolist() == [0.0] * 3 and np.isnan(out[7])


def test_float32_expm1_any_is_within_a_few_ulp_near_zero_too_and_never_below_x():
    """The KL's exp(logvar) - 1 at the prior (logvar ~ 0) is about logvar: accurate to its own ulp,
    and never below logvar, so that expm1(logvar) - logvar, the KL, is never negative."""
    tiny = np.logspace(-40, 0, 2001)
    x = np.concatenate([grid(-87.3, 88.72), grid(-1.5, 1.5), tiny, -tiny, [0.0]]).astype(np.float32)
    exact = np.expm1(x.astype(np.float64))
    y = np.empty_like(x)
    for expm1_map, bound in ((expm1_any_map_as_written, 2.0), (expm1_any_map, 5.0)):
        expm1_map(x, y)
        assert np.isfinite(y).all()
        assert ulps(y[exact != 0], exact[exact != 0]).max() <= bound, expm1_map
        assert (y >= x).all() and (y[x == 0] == 0).all()


def test_float32_log1p_unit_is_within_a_few_ulp():
    n = 100_001 if JIT else 1001
    e = np.concatenate([np.linspace(0, 1, n), np.logspace(-40, 0, 2001)]).astype(np.float32)
    exact = np.log1p(e.astype(np.float64))
    y = np.empty_like(e)
    for log1p_map in (log1p_unit_map_as_written, log1p_unit_map):
        log1p_map(e, y)
        assert y[e == 0].tolist() == [0.0]
        assert ulps(y[exact > 0], exact[exact > 0]).max() <= 3.0


def test_float64_helpers_are_the_c_librarys_functions():
    x = np.linspace(-700, 700, 2001)
    for apply, ref, xs in ((exp_neg_map, math.exp, -np.abs(x)), (exp_any_map, math.exp, x),
                           (expm1_any_map, math.expm1, np.concatenate([x, np.logspace(-300, 0, 301)])),
                           (log1p_unit_map, math.log1p, np.linspace(0, 1, 2001))):
        y = np.empty_like(xs)
        apply(xs, y)
        want = np.array([ref(v) for v in xs])
        assert (np.abs(y - want) <= np.abs(np.spacing(want))).all(), ref.__name__   # within 1 ulp


def test_typed_keeps_the_float_type():
    @numba.njit
    def half_of(a):
        return k.typed(0.5, a[0]) * a[0]
    def tenth_of(a):
        return k.typed(0.1, a[0]) * a[0]
    assert half_of(np.array([3.0], np.float32)) == 1.5
    # 0.1 as a float32 times 3 in float32, not 0.1 * 3 in float64
    three = np.array([3.0], np.float32)
    assert numba.njit(tenth_of)(three) == float(np.float32(0.1) * np.float32(3)) != 0.1 * 3
    assert numba.njit(tenth_of)(three.astype(np.float64)) == 0.1 * 3
    assert k.typed(0.5, np.float32(1)).dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_step_kernel_is_its_update_kernels_then_one_more_step_counted(dtype):
    """adam_step and sgd_step: the first weight's columns, the rest, and the count, in one call
    (so that a Ctrl-C cannot land between them), bit for bit what the separate calls give."""
    p1, m1 = F(normal(0, (B, N), dtype)), F(normal(1, (B, N), dtype, 0.1))
    v1 = F(np.random.default_rng(2).uniform(1e-6, 0.1, (B, N)).astype(dtype))
    columns = np.array([0, 2, 3, 6], np.intp)
    values = F(normal(3, (B, len(columns)), dtype))
    rest = adam_state(4, dtype)
    c = adam_constants(dtype, 9, 0.01)
    apart = [a.copy(order="K") for a in (p1, m1, v1)], [a.copy() for a in rest]
    k.adam_update_columns(apart[0][0], values, columns, apart[0][1], apart[0][2], *c)
    k.adam_update(*apart[1], *c)
    count = np.array([8], np.int64)
    k.adam_step(p1, values, columns, m1, v1, *rest, *c, count)
    for got, want in zip((p1, m1, v1, *rest), (*apart[0], *apart[1])):
        assert np.array_equal(got, want)
    assert count.tolist() == [9]

    tiny = dtype(np.finfo(dtype).tiny)
    first, second = (normal(5, (3, 40), dtype), normal(6, (3, 30), dtype))     # rows: p, g, buf
    constants = (dtype(0.1), dtype(0.9), dtype(0.01))
    apart = first.copy(), second.copy()
    k.sgd_update(*apart[0], *constants, False, tiny)
    k.sgd_update(*apart[1], *constants, False, tiny)
    k.sgd_step(*first, *second, *constants, False, tiny, count)
    assert np.array_equal(first, apart[0]) and np.array_equal(second, apart[1]) and count.tolist() == [10]


def test_kernels_take_nothing_compiled_from_other_npvae_files():
    """Numba's disk cache checks a kernel against the file it is defined in, not against the
    files it imports from: a flag, helper or constant the kernels took from another of
    npvae's files could change while the machine code cached before the change stays in use."""
    import ast
    import pathlib
    tree = ast.parse(pathlib.Path(k.__file__).read_text(encoding="utf-8"))
    imported = [ast.unparse(node) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("npvae"))]
    assert imported == []
