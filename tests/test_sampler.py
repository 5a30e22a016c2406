"""The reparameterization sampler: statistics of its draws, values and gradient by hand and
against finite differences, reproducibility, arguments."""
import numpy as np
import pytest

from finite_differences import check_op
from npvae import Sampler
from npvae.errors import InputError, InputTypeError

MU = np.array([0.5, -1.0, 2.0, 0.0])
LOGVAR = np.array([-2.0, 0.0, 1.5, 0.7])     # variances far from 1 on both sides
ROWS = 100_000


def _h(dtype, rows=ROWS):
    return np.tile(np.concatenate([MU, LOGVAR]), (rows, 1)).astype(dtype)


def assert_moments(z, mu, logvar, k=5.0):
    """Sample mean and variance of each column within ``k`` standard errors of mu, exp(logvar).

    For n normal draws the standard error of the mean is sqrt(var / n) and that of the
    sample variance var * sqrt(2 / (n - 1)); k = 5 fails a correct sampler about once in
    a million runs, and the seed is fixed anyway.
    """
    z = z.astype(np.float64)
    n = z.shape[0]
    var = np.exp(logvar)
    mean_err = np.abs(z.mean(0) - mu) / np.sqrt(var / n)
    var_err = np.abs(z.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    assert np.all(mean_err < k), f"mean off by {mean_err} standard errors"
    assert np.all(var_err < k), f"variance off by {var_err} standard errors"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draws_have_mean_mu_and_variance_exp_logvar(dtype):
    s = Sampler(rng=0)
    z = s.forward(_h(dtype))
    assert z.dtype == dtype and z.shape == (ROWS, 4)
    assert_moments(z, MU, LOGVAR)


def test_fixed_eps_value_and_gradient_by_hand():
    s = Sampler()
    h = np.array([[1.0, -2.0, np.log(4.0), np.log(0.25)]])       # mu = (1, -2), std = (2, 0.5)
    eps = np.array([[0.5, -2.0]])
    z = s.forward(h, eps)
    # z = mu + std * eps: the noise scaled by the standard deviation, not the variance (4, 0.25)
    np.testing.assert_allclose(z, [[1 + 2 * 0.5, -2 + 0.5 * -2.0]], rtol=1e-15)
    g = np.array([[3.0, -1.0]])
    g0 = g.copy()
    dh = s.backward(g)
    # [dz | dz * eps * std / 2]: d(std)/d(logvar) = std / 2
    np.testing.assert_allclose(dh, [[3.0, -1.0, 3.0 * 0.5 * 2 / 2, -1.0 * -2.0 * 0.5 / 2]], rtol=1e-15)
    assert np.array_equal(g, g0)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    h = np.concatenate([rng.standard_normal((3, 4)), rng.uniform(-2.0, 1.5, (3, 4))], axis=1)
    eps = rng.standard_normal((3, 4))
    s = Sampler(rng=0)
    check_op(s, h, forward=lambda h: s.forward(h, eps))


def test_zero_noise_gives_the_mean_and_no_logvar_gradient():
    s = Sampler()
    h = np.array([[0.3, -1.2, 0.9, -3.0]])
    np.testing.assert_array_equal(s.forward(h, np.zeros((1, 2))), [[0.3, -1.2]])
    np.testing.assert_array_equal(s.backward(np.array([[2.0, 5.0]])), [[2.0, 5.0, 0.0, 0.0]])


def test_seeded_draws_are_reproducible():
    h = _h(np.float32, rows=8)
    a = Sampler(rng=5).forward(h)
    b = Sampler(rng=np.random.default_rng(5)).forward(h)
    s = Sampler(rng=6)
    c = s.forward(h)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(c, s.forward(h))           # fresh noise on every call


def test_sampler_arguments_are_checked():
    s = Sampler(rng=0)
    with pytest.raises(InputError, match="mu | logvar"):
        s.forward(np.zeros((2, 3)))
    with pytest.raises(InputError, match="eps must have shape"):         # a shape: a ValueError
        s.forward(np.zeros((2, 4)), eps=np.zeros((2, 3)))
    with pytest.raises(InputTypeError, match="eps has dtype"):           # a dtype: a TypeError
        s.forward(np.zeros((2, 4)), eps=np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match="eps contains NaN"):
        s.forward(np.zeros((2, 4)), eps=np.full((2, 2), np.nan))
    s.forward(np.zeros((2, 4)))
    with pytest.raises(InputError, match="grad_out"):
        s.backward(np.zeros((2, 4)))
    with pytest.raises(InputTypeError, match="grad_out has dtype int64"):
        s.backward(np.zeros((2, 2), np.int64))
    with pytest.raises(InputTypeError, match="rng"):
        Sampler(rng="seed")
