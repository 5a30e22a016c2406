"""KL, BCEWithLogits and BCE: values worked out by hand, saturation, dtypes, arguments."""
import math
import warnings

import numpy as np
import pytest

from npvae import BCE, KL, BCEWithLogits
from npvae.errors import InputError, InputTypeError

BACKENDS = ["numpy", "numba"]
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-14}


def _on(loss, backend):
    loss.set_backend(backend)
    return loss


@pytest.fixture
def quiet():
    """Warnings are errors; overflow, division by zero and invalid operations raise.

    Underflow (exp(-100) in float32 is subnormal) is left ignored, NumPy's default.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            yield


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_of_standard_normal_is_zero(backend, dtype):
    kl = _on(KL(), backend)
    h = np.zeros((4, 6), dtype)                  # mu = 0, logvar = 0: q = N(0, I) = p
    assert kl.forward(h) == 0.0
    dh = kl.backward()
    assert dh.dtype == dtype and not dh.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_by_hand(backend, dtype):
    kl = _on(KL(), backend)
    # row 0: mu = (1, 0), logvar = (0, log 2): 1/2 [(1 + 1 - 1 - 0) + (2 + 0 - 1 - log 2)] = 1 - log(2)/2
    # row 1: mu = (0, -2), logvar = (-1, 0): 1/2 [(e^-1 + 0 - 1 + 1) + (1 + 4 - 1 - 0)] = (e^-1 + 4) / 2
    h = np.array([[1.0, 0.0, 0.0, math.log(2)], [0.0, -2.0, -1.0, 0.0]], dtype)
    expected = ((1 - math.log(2) / 2) + (math.exp(-1) + 4) / 2) / 2
    assert kl.forward(h) == pytest.approx(expected, rel=RTOL[dtype])
    np.testing.assert_allclose(kl.rows, [1 - math.log(2) / 2, (math.exp(-1) + 4) / 2], rtol=RTOL[dtype])
    # dKL/dmu = mu / B, dKL/dlogvar = (e^logvar - 1) / (2B), B = 2
    dh = kl.backward()
    np.testing.assert_allclose(dh, [[0.5, 0.0, 0.0, 0.25], [0.0, -1.0, (math.exp(-1) - 1) / 4, 0.0]],
                               rtol=RTOL[dtype], atol=1e-7)
    dh3 = kl.backward(grad=3.0).copy()
    np.testing.assert_allclose(dh3, 3 * np.array([[0.5, 0.0, 0.0, 0.25], [0.0, -1.0, (math.exp(-1) - 1) / 4, 0.0]]),
                               rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_with_logits_by_hand(backend, dtype):
    loss = _on(BCEWithLogits(), backend)
    logits = np.array([[0.0, 2.0, -1.0], [3.0, -3.0, 0.5]], dtype)
    t = np.array([[1.0, 0.0, 1.0], [0.25, 1.0, 0.0]], dtype)
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per = -(t * np.log(sig) + (1 - t) * np.log(1 - sig))
    # row 0: log 2 + log(1 + e^2) + log(1 + e)
    assert per[0].sum() == pytest.approx(math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.e), rel=1e-14)
    assert loss.forward(logits, t) == pytest.approx(per.sum(1).mean(), rel=RTOL[dtype] * 4)
    dl = loss.backward()
    assert dl.dtype == dtype
    np.testing.assert_allclose(dl, (sig - t) / 2, rtol=RTOL[dtype] * 4, atol=1e-7)
    dl0 = dl.copy()
    np.testing.assert_allclose(loss.backward(grad=-2.5), -2.5 * dl0, rtol=RTOL[dtype] * 4)
    np.testing.assert_array_equal(loss.backward(), dl0)        # the scaled call did not change it


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_with_logits_saturated(backend, dtype, quiet):
    loss = _on(BCEWithLogits(), backend)
    logits = np.array([[100.0, -100.0, 100.0, -100.0]], dtype)
    t = np.array([[1.0, 0.0, 0.0, 1.0]], dtype)
    value = loss.forward(logits, t)
    dl = loss.backward()
    # right answers cost ~0, wrong ones |l| = 100 each
    assert np.isfinite(value) and value == pytest.approx(200.0, rel=1e-6)
    assert np.all(np.isfinite(dl))
    np.testing.assert_allclose(dl, [[0.0, 0.0, 1.0, -1.0]], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_with_logits_eval_mode_matches_training(backend, dtype):
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((4, 5))).astype(dtype)
    t = rng.uniform(size=(4, 5)).astype(dtype)
    train = _on(BCEWithLogits(), backend)
    ev = _on(BCEWithLogits(), backend).eval()
    assert train.forward(logits, t) == pytest.approx(ev.forward(logits, t), rel=RTOL[dtype] * 10)
    np.testing.assert_allclose(ev.backward(), train.backward(), rtol=RTOL[dtype] * 10, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_probabilities_by_hand(dtype):
    loss = BCE()
    p = np.array([[0.5, 0.25], [0.9, 0.1]], dtype)
    t = np.array([[1.0, 0.0], [1.0, 1.0]], dtype)
    expected = (math.log(2) - math.log(0.75) - math.log(0.9) - math.log(0.1)) / 2
    assert loss.forward(p, t) == pytest.approx(expected, rel=RTOL[dtype] * 4)
    dp = loss.backward()
    assert dp.dtype == dtype
    # (p - t) / (p (1 - p)) / B
    np.testing.assert_allclose(dp, [[-1.0, 1 / 0.75 / 2], [-1 / 0.9 / 2, -1 / 0.1 / 2]], rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(loss.backward(grad=0.5), dp / 2, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_probabilities_exactly_zero_or_one_are_finite(dtype, quiet):
    loss = BCE()
    p = np.array([[0.0, 1.0, 0.0, 1.0]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0]], dtype)
    value = loss.forward(p, t)
    dp = loss.backward()
    eps = np.finfo(dtype).eps
    assert np.isfinite(value) and np.all(np.isfinite(dp))
    # the two wrong pixels cost -log(eps) each (the clip), the right ones ~eps
    assert value == pytest.approx(-2 * math.log(eps), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_on_sigmoid_matches_bce_with_logits(backend):
    rng = np.random.default_rng(1)
    logits = 2 * rng.standard_normal((3, 6))
    t = rng.uniform(size=(3, 6))
    p = 1 / (1 + np.exp(-logits))
    a = _on(BCEWithLogits(), backend).forward(logits, t)
    assert BCE().forward(p, t) == pytest.approx(a, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_losses_are_batch_means_of_per_sample_sums(backend, dtype):
    rng = np.random.default_rng(2)
    h = rng.standard_normal((6, 4)).astype(dtype)
    logits = rng.standard_normal((6, 5)).astype(dtype)
    t = rng.uniform(size=(6, 5)).astype(dtype)
    for make, args in ((KL, (h,)), (BCEWithLogits, (logits, t)), (BCE, (1 / (1 + np.exp(-logits)), t))):
        whole = _on(make(), backend).forward(*args)
        assert isinstance(whole, float)
        halves = [_on(make(), backend).forward(*(a[i:i + 3] for a in args)) for i in (0, 3)]
        singles = [_on(make(), backend).forward(*(a[i:i + 1] for a in args)) for i in range(6)]
        assert whole == pytest.approx(sum(halves) / 2, rel=RTOL[dtype] * 10)
        assert whole == pytest.approx(sum(singles) / 6, rel=RTOL[dtype] * 10)


def test_loss_arguments_are_checked():
    x32, x64 = np.zeros((2, 3), np.float32), np.zeros((2, 3))
    with pytest.raises(InputError, match="same shape"):
        BCEWithLogits().forward(x64, np.zeros((2, 4)))
    with pytest.raises(InputTypeError, match="dtype"):
        BCEWithLogits().forward(x32, x64)
    with pytest.raises(InputError):
        BCE().forward(np.zeros(3), np.zeros(3))
    with pytest.raises(InputError, match="mu | logvar"):
        KL().forward(np.zeros((2, 3)))
    kl = KL()
    kl.forward(np.zeros((2, 4)))
    for bad in ("1", None, True, np.ones(1)):
        with pytest.raises(InputTypeError, match="grad"):
            kl.backward(bad)
