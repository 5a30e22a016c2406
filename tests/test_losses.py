"""KL, BCEWithLogits and BCE: values against closed forms, gradients by hand (the 1/B of the
batch mean, the grad argument) and against finite differences, saturation, arguments."""
import math
import warnings

import numpy as np
import pytest
from scipy import integrate

from finite_differences import check_loss
from npvae import BCE, KL, BCEWithLogits
from npvae.errors import InputError, InputTypeError
from npvae.losses import batch_mean, bce_with_logits_per_sample, kl_per_sample

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-14}


@pytest.fixture
def quiet():
    """Warnings are errors; overflow, division by zero and invalid operations raise.

    Underflow (exp(-100) in float32 is subnormal) is left ignored, NumPy's default.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            yield


# -- KL ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_of_standard_normal_is_zero(dtype):
    kl = KL()
    h = np.zeros((4, 6), dtype)                  # mu = 0, logvar = 0: q = N(0, I) = p
    assert kl.forward(h) == 0.0
    dh = kl.backward()
    assert dh.dtype == dtype and not dh.any()


@pytest.mark.parametrize("mu, logvar", [(0.7, -1.3), (-2.0, 1.1), (0.0, 0.0)])
def test_kl_closed_form_equals_the_integral(mu, logvar):
    """KL(q || p) = E_q[log q(z) - log p(z)], integrated numerically for one latent."""
    def log_q(z):
        return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / math.exp(logvar))

    def log_p(z):
        return -0.5 * (math.log(2 * math.pi) + z * z)

    integral, _ = integrate.quad(lambda z: math.exp(log_q(z)) * (log_q(z) - log_p(z)), -30, 30, epsabs=1e-13)
    assert kl_per_sample(np.array([[mu]]), np.array([[logvar]]))[0] == pytest.approx(integral, abs=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_by_hand(dtype):
    kl = KL()
    # row 0: mu = (1, 0), logvar = (0, log 2): 1/2 [(1 + 1 - 1 - 0) + (2 + 0 - 1 - log 2)] = 1 - log(2)/2
    # row 1: mu = (0, -2), logvar = (-1, 0): 1/2 [(e^-1 + 0 - 1 + 1) + (1 + 4 - 1 - 0)] = (e^-1 + 4) / 2
    h = np.array([[1.0, 0.0, 0.0, math.log(2)], [0.0, -2.0, -1.0, 0.0]], dtype)
    expected = ((1 - math.log(2) / 2) + (math.exp(-1) + 4) / 2) / 2
    assert kl.forward(h) == pytest.approx(expected, rel=RTOL[dtype])
    np.testing.assert_allclose(kl.rows, [1 - math.log(2) / 2, (math.exp(-1) + 4) / 2], rtol=RTOL[dtype])
    # dKL/dmu = mu / B, dKL/dlogvar = (e^logvar - 1) / (2B), B = 2
    by_hand = np.array([[1 / 2, 0.0, 0.0, (2 - 1) / 4], [0.0, -2 / 2, (math.exp(-1) - 1) / 4, 0.0]])
    dh = kl.backward()
    assert dh.dtype == dtype
    np.testing.assert_allclose(dh, by_hand, rtol=RTOL[dtype], atol=1e-7)
    np.testing.assert_allclose(kl.backward(grad=3.0), 3 * by_hand, rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_near_the_prior_is_never_negative_and_accurate_to_the_round_off_of_logvar(dtype):
    """A latent at the prior (mu = 0, logvar ~ 0, a collapsed posterior) has a KL of about
    logvar^2 / 4: exp(logvar) - 1 would leave only the round-off of 1 (a negative KL, a zero
    gradient); expm1 keeps it to the round-off of logvar."""
    lam = np.array([[3e-8, -3e-8, 1e-4, -1e-4, 1e-17, -2e-12]], dtype)
    h = np.concatenate([np.zeros_like(lam), lam], axis=1)
    lam64 = lam.astype(np.float64)
    exact_rows = (lam64 ** 2 / 2 + lam64 ** 3 / 6 + lam64 ** 4 / 24) / 2        # series of (e^l - 1 - l) / 2
    kl = KL()
    total = kl.forward(h)
    assert (kl.rows >= 0).all() and total >= 0
    assert abs(total - exact_rows.sum()) <= 4 * np.finfo(dtype).eps * np.abs(lam64).max()
    dlogvar = kl.backward()[:, lam.shape[1]:]
    np.testing.assert_allclose(dlogvar, np.expm1(lam64) / 2, rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("grad", [1.0, -1.7])
def test_kl_gradient_matches_finite_differences(grad):
    rng = np.random.default_rng(0)
    h = np.concatenate([rng.standard_normal((3, 4)), rng.uniform(-2.0, 1.5, (3, 4))], axis=1)
    kl = KL()
    check_loss(kl, lambda: kl.forward(h), h, grad)


# -- BCE on logits ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_by_hand(dtype):
    loss = BCEWithLogits()
    logits = np.array([[0.0, 2.0, -1.0], [3.0, -3.0, 0.5]], dtype)
    t = np.array([[1.0, 0.0, 1.0], [0.25, 1.0, 0.0]], dtype)
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per = -(t * np.log(sig) + (1 - t) * np.log(1 - sig))            # the textbook formula
    # row 0: -log(1/2) - log(1 - sigmoid(2)) - log(sigmoid(-1)) = log 2 + log(1 + e^2) + log(1 + e)
    assert per[0].sum() == pytest.approx(math.log(2) + math.log1p(math.exp(2)) + math.log1p(math.e), rel=1e-14)
    assert loss.forward(logits, t) == pytest.approx(per.sum(1).mean(), rel=RTOL[dtype] * 4)
    np.testing.assert_allclose(loss.rows, per.sum(1), rtol=RTOL[dtype] * 4)
    dl = loss.backward()
    assert dl.dtype == dtype
    # the sigmoid and the BCE collapse into (p - t), and the batch mean gives 1/B with B = 2
    np.testing.assert_allclose(dl, (sig - t) / 2, rtol=RTOL[dtype] * 4, atol=1e-7)
    dl0 = dl.copy()
    np.testing.assert_allclose(loss.backward(grad=-2.5), -2.5 * dl0, rtol=RTOL[dtype] * 4)
    np.testing.assert_array_equal(loss.backward(), dl0)        # the scaled call did not change it


@pytest.mark.parametrize("grad", [1.0, -1.7])
def test_bce_with_logits_gradient_matches_finite_differences(grad):
    rng = np.random.default_rng(1)
    logits, t = 2.0 * rng.standard_normal((3, 7)), rng.uniform(0.0, 1.0, (3, 7))
    loss = BCEWithLogits()
    check_loss(loss, lambda: loss.forward(logits, t), logits, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_saturated(dtype, quiet):
    loss = BCEWithLogits()
    logits = np.array([[100.0, -100.0, 100.0, -100.0]], dtype)
    t = np.array([[1.0, 0.0, 0.0, 1.0]], dtype)
    value = loss.forward(logits, t)
    dl = loss.backward()
    # right answers cost ~0, wrong ones |l| = 100 each
    assert np.isfinite(value) and value == pytest.approx(200.0, rel=1e-6)
    assert np.all(np.isfinite(dl))
    np.testing.assert_allclose(dl, [[0.0, 0.0, 1.0, -1.0]], atol=1e-6)


def test_bce_with_logits_eval_mode_is_the_same():
    rng = np.random.default_rng(0)
    logits, t = 3 * rng.standard_normal((4, 5)), rng.uniform(size=(4, 5))
    train, ev = BCEWithLogits(), BCEWithLogits().eval()
    assert train.forward(logits, t) == ev.forward(logits, t)
    np.testing.assert_array_equal(ev.backward(), train.backward())


# -- BCE on probabilities ---------------------------------------------------------------------------
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


@pytest.mark.parametrize("grad", [1.0, -1.7])
def test_bce_probabilities_gradient_matches_finite_differences(grad):
    rng = np.random.default_rng(2)
    p, t = rng.uniform(0.05, 0.95, (3, 7)), rng.uniform(0.0, 1.0, (3, 7))     # inside the clip range
    loss = BCE()
    check_loss(loss, lambda: loss.forward(p, t), p, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_probabilities_exactly_zero_or_one_are_finite(dtype, quiet):
    loss = BCE()
    p = np.array([[0.0, 1.0, 0.0, 1.0]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0]], dtype)
    value = loss.forward(p, t)
    dp = loss.backward()
    eps = float(np.finfo(dtype).eps)
    assert np.isfinite(value) and np.all(np.isfinite(dp))
    # the two wrong pixels cost -log(eps) each (the clip), the right ones ~eps
    assert value == pytest.approx(-2 * math.log(eps), rel=1e-5)
    # documented: the gradient at the clip boundary passes through, (p - t) / (p (1 - p)) at p = eps
    boundary = (eps - 1) / (eps * (1 - eps))            # p = 0 (clipped to eps), t = 1: about -1/eps
    np.testing.assert_allclose(dp[0, [2, 3]], [boundary, -boundary], rtol=1e-5)


def test_bce_on_sigmoid_matches_bce_with_logits():
    rng = np.random.default_rng(1)
    logits = 2 * rng.standard_normal((3, 6))
    t = rng.uniform(size=(3, 6))
    p = 1 / (1 + np.exp(-logits))
    assert BCE().forward(p, t) == pytest.approx(BCEWithLogits().forward(logits, t), rel=1e-12)


# -- the batch mean ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_are_batch_means_of_per_sample_sums(dtype):
    rng = np.random.default_rng(2)
    h = rng.standard_normal((6, 4)).astype(dtype)
    logits = rng.standard_normal((6, 5)).astype(dtype)
    t = rng.uniform(size=(6, 5)).astype(dtype)
    for make, args in ((KL, (h,)), (BCEWithLogits, (logits, t)), (BCE, (1 / (1 + np.exp(-logits)), t))):
        whole = make().forward(*args)
        assert isinstance(whole, float)
        halves = [make().forward(*(a[i:i + 3] for a in args)) for i in (0, 3)]
        singles = [make().forward(*(a[i:i + 1] for a in args)) for i in range(6)]
        assert whole == pytest.approx(sum(halves) / 2, rel=RTOL[dtype] * 10)
        assert whole == pytest.approx(sum(singles) / 6, rel=RTOL[dtype] * 10)
    assert batch_mean(np.array([1.0, 2.0, 6.0], np.float32)) == 3.0
    kl, bce = KL(), BCEWithLogits()
    assert kl.forward(h) == batch_mean(kl.rows) and bce.forward(logits, t) == batch_mean(bce.rows)
    np.testing.assert_array_equal(kl.rows, kl_per_sample(h[:, :2], h[:, 2:]))
    np.testing.assert_array_equal(bce.rows, bce_with_logits_per_sample(logits, t))


ROWS = {"KL": (KL, lambda rng: (rng.standard_normal((1, 4)),)),
        "BCEWithLogits": (BCEWithLogits, lambda rng: (rng.standard_normal((1, 3)), rng.uniform(size=(1, 3)))),
        "BCE": (BCE, lambda rng: (rng.uniform(0.1, 0.9, (1, 3)), rng.uniform(size=(1, 3))))}


@pytest.mark.parametrize("name", ROWS)
def test_gradients_carry_one_over_b(name):
    """One row repeated B = 5 times: the same loss (a mean), each row's gradient divided by B."""
    make, draw = ROWS[name]
    row = draw(np.random.default_rng(3))
    one, five = make(), make()
    assert one.forward(*row) == pytest.approx(five.forward(*(np.repeat(a, 5, axis=0) for a in row)), rel=1e-14)
    np.testing.assert_allclose(five.backward(), np.repeat(one.backward(), 5, axis=0) / 5, rtol=1e-14)


def test_loss_arguments_are_checked():
    x32, x64 = np.zeros((2, 3), np.float32), np.zeros((2, 3))
    with pytest.raises(InputError, match="same shape"):
        BCEWithLogits().forward(x64, np.zeros((2, 4)))
    with pytest.raises(InputTypeError, match="dtype"):
        BCEWithLogits().forward(x32, x64)
    with pytest.raises(InputError, match="probs"):
        BCE().forward(np.zeros(3), np.zeros(3))
    with pytest.raises(InputError, match="mu | logvar"):
        KL().forward(np.zeros((2, 3)))
    kl = KL()
    kl.forward(np.zeros((2, 4)))
    for bad in ("1", None, True, np.ones(1)):
        with pytest.raises(InputTypeError, match="grad"):
            kl.backward(bad)


@pytest.mark.parametrize("make, args, owner", [
    (KL, (np.zeros((0, 4)),), "KL.forward"),
    (BCEWithLogits, (np.zeros((0, 3)), np.zeros((0, 3))), "BCEWithLogits.forward"),
    (BCE, (np.zeros((0, 3)), np.zeros((0, 3))), "BCE.forward"),
])
def test_a_loss_of_an_empty_batch_is_refused_by_name(make, args, owner):
    """The mean over no images is not a number: said, not a ZeroDivisionError."""
    with pytest.raises(InputError, match=rf"{owner}: the batch is empty \(0 rows\)"):
        make().forward(*args)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -np.inf])
@pytest.mark.parametrize("make, args", [
    (KL, (np.zeros((2, 4)),)),
    (BCEWithLogits, (np.zeros((2, 3)), np.full((2, 3), 0.5))),
    (BCE, (np.full((2, 3), 0.3), np.full((2, 3), 0.5))),
])
def test_a_loss_backward_refuses_a_grad_that_is_not_finite(make, args, bad):
    loss = make()
    loss.forward(*args)
    with pytest.raises(InputError, match="grad must be a finite number"):
        loss.backward(bad)


@pytest.mark.parametrize("make, args, match", [
    (BCE, (np.array([[1.7]]), np.array([[1.0]])), r"probs \(a forgotten sigmoid\? BCEWithLogits takes logits\) "
                                                  r"must lie in \[0, 1\]"),
    (BCE, (np.array([[7.5]]), np.array([[1.0]])), r"got values in \[7.5, 7.5\]$"),      # logits, not pixels
    (BCE, (np.array([[np.nan]]), np.array([[1.0]])), "got only NaN$"),
    (BCE, (np.array([[np.nan, 0.3, np.nan, 0.9]]), np.ones((1, 4))), r"got values in \[0.3, 0.9\] \(2 of 4 NaN\)$"),
    (BCE, (np.array([[0.5]]), np.array([[5.0]])), r"target must lie in \[0, 1\]"),
    (BCEWithLogits, (np.array([[0.3]]), np.array([[-2.0]])), r"target must lie in \[0, 1\]"),
])
def test_a_bce_refuses_probabilities_and_targets_outside_0_1(make, args, match):
    with pytest.raises(InputError, match=match):
        make().forward(*args)


@pytest.mark.parametrize("bad, error, words", [
    ([[0.5]], InputTypeError, r"probs must be a 2-D array \(batch, features\), got list"),
    (None, InputTypeError, r"got NoneType"),
    (np.full(3, 0.5), InputError, r"got \(3,\)"),
])
def test_a_bce_given_no_array_says_so_with_a_type_error(bad, error, words):
    """As every other op: a wrong type is a TypeError, a wrong shape a ValueError."""
    with pytest.raises(error, match=words):
        BCE().forward(bad, np.full((1, 1), 0.5))


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
@pytest.mark.parametrize("make", [BCE, BCEWithLogits])
def test_a_bce_takes_float32_or_float64_as_every_other_op(make, dtype):
    a, t = np.full((2, 3), 0.3, dtype), np.full((2, 3), 0.5, dtype)
    with pytest.raises(InputTypeError, match=r"must share a float32 or float64 dtype, got "):
        make().forward(a, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_loss_is_the_float64_sum_of_its_rows_over_the_batch_even_in_float32(dtype):
    """batch_mean promises the rows are summed in float64: one big row and many small ones
    lose the small ones if the sum runs in float32 (a float32 accumulator at 2**25 steps by 4)."""
    B = 256
    mu = np.zeros((B, 1), dtype)
    mu[0, 0] = 2.0 ** 13                       # row 0: KL = mu**2 / 2 = 2**25, exact in float32
    mu[1:, 0] = 1.5                            # the others: 1.125 each, exact
    h = np.concatenate([mu, np.zeros_like(mu)], axis=1)      # logvar = 0
    kl = KL()
    loss = kl.forward(h)
    exact = (2.0 ** 25 + (B - 1) * 1.125) / B
    assert math.fsum(kl.rows.astype(np.float64)) / B == exact
    assert loss == exact
