"""The reparameterization sampler: statistics of its draws, values, gradient, arguments."""
import numpy as np
import pytest

from npvae import Sampler
from npvae.errors import InputError, InputTypeError

BACKENDS = ["numpy", "numba"]
MU = np.array([0.5, -1.0, 2.0, 0.0])
LOGVAR = np.array([-2.0, 0.0, 1.5, 0.7])     # variances far from 1 on both sides
ROWS = 200_000


def _h(dtype, rows=ROWS):
    return np.tile(np.concatenate([MU, LOGVAR]), (rows, 1)).astype(dtype)


def assert_moments(z, mu, logvar, k=5.0):
    """Sample mean and variance of each column within ``k`` standard errors of mu, exp(logvar)."""
    z = z.astype(np.float64)
    n = z.shape[0]
    var = np.exp(logvar)
    mean_err = np.abs(z.mean(0) - mu) / np.sqrt(var / n)
    var_err = np.abs(z.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    assert np.all(mean_err < k), f"mean off by {mean_err} standard errors"
    assert np.all(var_err < k), f"variance off by {var_err} standard errors"


class VarianceScaledSampler(Sampler):
    """The classic mistake: noise scaled by the variance exp(logvar), not the std."""

    def forward(self, h, eps=None):
        d = h.shape[1] // 2
        eps = self.rng.standard_normal((h.shape[0], d)).astype(h.dtype) if eps is None else eps
        return h[:, :d] + np.exp(h[:, d:]) * eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_draws_have_mean_mu_and_variance_exp_logvar(backend, dtype):
    s = Sampler(rng=0)
    s.set_backend(backend)
    z = s.forward(_h(dtype))
    assert z.dtype == dtype and z.shape == (ROWS, 4)
    assert_moments(z, MU, LOGVAR)


def test_the_same_check_catches_noise_scaled_by_the_variance():
    z = VarianceScaledSampler(rng=0).forward(_h(np.float64))
    with pytest.raises(AssertionError, match="variance off"):
        assert_moments(z, MU, LOGVAR)
    # and the check is not trivially strict: the right sampler with the same noise passes
    assert_moments(Sampler(rng=0).forward(_h(np.float64)), MU, LOGVAR)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_eps_value_and_gradient(backend):
    s = Sampler()
    s.set_backend(backend)
    h = np.array([[1.0, -2.0, np.log(4.0), np.log(0.25)]])       # mu = (1, -2), std = (2, 0.5)
    eps = np.array([[0.5, -2.0]])
    z = s.forward(h, eps)
    np.testing.assert_allclose(z, [[1 + 2 * 0.5, -2 + 0.5 * -2.0]], rtol=1e-15)
    g = np.array([[3.0, -1.0]])
    g0 = g.copy()
    dh = s.backward(g)
    # [dz | dz * eps * std / 2]
    np.testing.assert_allclose(dh, [[3.0, -1.0, 3.0 * 0.5 * 2 / 2, -1.0 * -2.0 * 0.5 / 2]], rtol=1e-15)
    assert np.array_equal(g, g0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_draws_are_reproducible(backend):
    h = _h(np.float32, rows=8)
    a = Sampler(rng=5).set_backend(backend).forward(h).copy()
    b = Sampler(rng=np.random.default_rng(5)).set_backend(backend).forward(h).copy()
    s = Sampler(rng=6).set_backend(backend)
    c = s.forward(h).copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(c, s.forward(h))           # fresh noise on every call


def test_sampler_arguments_are_checked():
    s = Sampler(rng=0)
    with pytest.raises(InputError, match="mu | logvar"):
        s.forward(np.zeros((2, 3)))
    with pytest.raises(InputTypeError, match="eps"):
        s.forward(np.zeros((2, 4)), eps=np.zeros((2, 3)))
    with pytest.raises(InputTypeError, match="eps"):
        s.forward(np.zeros((2, 4)), eps=np.zeros((2, 2), np.float32))
    s.forward(np.zeros((2, 4)))
    with pytest.raises(InputError, match="grad_out"):
        s.backward(np.zeros((2, 4)))
    with pytest.raises(InputTypeError):
        Sampler(rng="seed")
