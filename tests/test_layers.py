"""Dense, ReLU, Sigmoid and Sequential: known values, dtypes, the module contract."""
import warnings

import numpy as np
import pytest

from npvae import Dense, ReLU, Sequential, Sigmoid
from npvae.errors import InputError, InputTypeError

BACKENDS = ["numpy", "numba"]
DTYPES = [np.float32, np.float64]


def _dense(dtype, backend, W, b):
    d = Dense(W.shape[0], W.shape[1], dtype=dtype, rng=0, backend=backend)
    d.load_state_dict({"weight": np.asarray(W, dtype), "bias": np.asarray(b, dtype)})
    return d


W = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
b = np.array([0.5, -1.0, -20.0])
X = np.array([[1.0, 2.0], [-1.0, 0.5]])
# x W + b by hand: [1+8+.5, 2+10-1, 3+12-20] and [-1+2+.5, -2+2.5-1, -3+3-20]
Y = np.array([[9.5, 11.0, -5.0], [1.5, -0.5, -20.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_forward_by_hand(backend, dtype):
    d = _dense(dtype, backend, W, b)
    y = d.forward(X.astype(dtype))
    assert y.dtype == dtype and y.shape == (2, 3)
    assert y.tolist() == Y.tolist()
    assert d.forward(X.astype(dtype), relu=True).tolist() == np.maximum(Y, 0).tolist()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_backward_by_hand(backend, dtype):
    d = _dense(dtype, backend, W, b)
    g = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]], dtype)
    g0 = g.copy()
    d.forward(X.astype(dtype))
    dx = d.backward(g)
    # dx = g W^T; dW = x^T g; db = sum_b g
    assert dx.tolist() == [[1 + 6, 4 + 12], [0.5 - 2 + 3, 2 - 5 + 6]]
    assert d.weight.grad.tolist() == [[1 - 0.5, 0 + 1, 2 - 1], [2 + 0.25, 0 - 0.5, 4 + 0.5]]
    assert d.bias.grad.tolist() == [1.5, -1.0, 3.0]
    assert np.array_equal(g, g0)
    # fused ReLU: the mask y > 0 is [[1, 1, 0], [1, 0, 0]]
    d.zero_grad()
    d.forward(X.astype(dtype), relu=True)
    dx = d.backward(g)
    gm = g * np.array([[1, 1, 0], [1, 0, 0]])
    assert dx.tolist() == (gm @ W.T).tolist()
    assert d.bias.grad.tolist() == gm.sum(0).tolist()
    assert d.weight.grad.tolist() == (X.T @ gm).tolist()
    assert np.array_equal(g, g0)
    assert d.backward(g, input_grad=False) is None


def test_dense_init_like_pytorch():
    d = Dense(16, 5, dtype=np.float64, rng=0)
    assert d.weight.shape == (16, 5) and d.bias.shape == (5,)
    assert np.abs(d.weight.data).max() <= 0.25 and np.abs(d.bias.data).max() <= 0.25
    assert np.abs(d.weight.data).max() > 0.2            # really uses the range
    d32 = Dense(16, 5, dtype=np.float32, rng=0)
    assert d32.weight.dtype == np.float32
    np.testing.assert_array_equal(d32.weight.data, d.weight.data.astype(np.float32))


def test_dense_checks_inputs():
    d = Dense(3, 2, dtype=np.float32, rng=0)
    with pytest.raises(InputTypeError, match="dtype"):
        d.forward(np.zeros((2, 3), np.float64))
    with pytest.raises(InputError, match=r"\(batch, 3\)"):
        d.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(InputTypeError):
        d.forward([[0.0, 0.0, 0.0]])
    d.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="grad_out"):
        d.backward(np.zeros((3, 2), np.float32))
    with pytest.raises(InputError):
        Dense(0, 2)
    with pytest.raises(InputTypeError):
        Dense(3, 2, dtype=np.int32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_relu(backend, dtype):
    r = ReLU()
    r.set_backend(backend)
    x = np.array([[-2.0, -0.0, 0.0, 3.0], [1e-30, -1e-30, 5.0, -7.0]], dtype)
    y = r.forward(x)
    assert y.dtype == dtype and y.tolist() == [[0, 0, 0, 3], [dtype(1e-30), 0, 5, 0]]
    g = np.arange(1.0, 9.0, dtype=dtype).reshape(2, 4)
    g0 = g.copy()
    dx = r.backward(g)
    assert dx.dtype == dtype and dx.tolist() == [[0, 0, 0, 4], [5, 0, 7, 0]]
    assert np.array_equal(g, g0), "ReLU.backward modified grad_out"
    assert dx is not g and not np.shares_memory(dx, g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_known_values(backend):
    s = Sigmoid()
    s.set_backend(backend)
    assert s.forward(np.zeros((1, 3))).tolist() == [[0.5, 0.5, 0.5]]
    with np.errstate(all="raise"):
        y = s.forward(np.array([[-100.0, 100.0, 2.0]])).copy()
    assert y[0, 1] == 1.0
    assert y[0, 0] == pytest.approx(3.720075976020836e-44, rel=1e-12)     # exp(-100) / (1 + exp(-100))
    assert y[0, 2] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-15)
    dx = s.backward(np.full((1, 3), 2.0))
    assert dx[0, 2] == pytest.approx(2 * y[0, 2] * (1 - y[0, 2]), rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_float32_saturates_quietly(backend):
    s = Sigmoid()
    s.set_backend(backend)
    x = np.array([[-100.0, 100.0, 0.0, -1000.0, 1000.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # exp(-100) underflows in float32 (NumPy ignores underflow by default); nothing else may trip
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            y = s.forward(x).copy()
            dx = s.backward(np.ones_like(x))
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))
    assert y[0, 1] == 1.0 and y[0, 4] == 1.0 and y[0, 2] == 0.5
    # the true value 3.7e-44 is subnormal in float32: 0, subnormal, or at most float32's tiny
    assert 0.0 <= y[0, 0] <= np.finfo(np.float32).tiny * 1.05
    assert np.all(np.isfinite(dx)) and dx[0, 1] == 0.0 and dx[0, 2] == 0.25


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_keep_dtype_and_shape(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(dtype)
    seq = Sequential(Dense(5, 6, dtype=dtype, rng=0), ReLU(), Dense(6, 3, dtype=dtype, rng=1), Sigmoid())
    seq.set_backend(backend)
    for layer in [Dense(5, 3, dtype=dtype, rng=0), ReLU(), Sigmoid(), seq]:
        layer.set_backend(backend)
        y = layer.forward(x)
        g = rng.standard_normal(y.shape).astype(dtype)
        dx = layer.backward(g)
        assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
        for name, p in layer.named_parameters():
            assert p.grad.dtype == dtype and p.grad.shape == p.shape, name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_fused_equals_unfused(backend, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5)).astype(dtype)
    g = rng.standard_normal((6, 4)).astype(dtype)
    out = []
    for fuse in (True, False):
        seq = Sequential(Dense(5, 7, dtype=dtype, rng=1), ReLU(), Dense(7, 4, dtype=dtype, rng=2), fuse=fuse)
        seq.set_backend(backend)
        y = seq.forward(x).copy()
        dx = seq.backward(g).copy()
        out.append((y, dx, {n: p.grad.copy() for n, p in seq.named_parameters()}))
    (y1, dx1, g1), (y2, dx2, g2) = out
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(dx1, dx2, rtol=rtol, atol=rtol)
    assert g1.keys() == g2.keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=rtol, atol=rtol)


def test_sequential_plan_and_names():
    d1, r, d2 = Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1)
    fused = Sequential(d1, r, d2)
    assert [(type(m).__name__, f) for m, f in fused._plan] == [("Dense", True), ("Dense", False)]
    unfused = Sequential(Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1), fuse=False)
    assert len(unfused._plan) == 3
    assert len(fused) == 3 and fused[1] is r and fused[2] is d2
    assert [n for n, _ in fused.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(InputError):
        Sequential()
    with pytest.raises(InputTypeError):
        Sequential(Dense(3, 4), "relu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_never_writes_grad_out(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    for layer in [Dense(4, 4, dtype=np.float64, rng=0), ReLU(), Sigmoid(),
                  Sequential(Dense(4, 5, dtype=np.float64, rng=0), ReLU(), Dense(5, 4, dtype=np.float64, rng=1))]:
        layer.set_backend(backend)
        y = layer.forward(x)
        g = rng.standard_normal(y.shape)
        g0 = g.copy()
        layer.backward(g)
        assert np.array_equal(g, g0), type(layer).__name__


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_live_in_workspace_buffers(backend):
    """Documented behaviour: the same batch shape reuses the output array."""
    d = Dense(3, 2, dtype=np.float64, rng=0, backend=backend)
    y1 = d.forward(np.ones((2, 3)))
    kept = y1.copy()
    y2 = d.forward(np.zeros((2, 3)))
    assert y2 is y1 and not np.array_equal(kept, y1)
    y3 = d.forward(np.ones((5, 3)))              # another shape: another buffer
    assert y3.shape == (5, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dead", [0, 3, 12, 20])
def test_dead_units_skip_columns_of_the_weight_gradient(backend, dtype, dead):
    """Units off for the whole batch give zero columns of dW; the rest match x.T @ g."""
    from npvae.layers import LIVE_FRACTION_TO_SKIP
    rng = np.random.default_rng(dead)
    d = Dense(6, 20, dtype=dtype, rng=0, backend=backend)
    d.bias.data[:dead] = -100.0                     # these units are off for every input
    d.bias.data[dead:] = 0.5                        # the others are on for some inputs
    x = rng.uniform(-1, 1, (50, 6)).astype(dtype)
    g = rng.standard_normal((50, 20)).astype(dtype)
    y = d.forward(x, relu=True).copy()
    assert (y[:, :dead] == 0).all() and (y[:, dead:] > 0).any(axis=0).all()
    uses_skip = 20 - dead <= LIVE_FRACTION_TO_SKIP * 20
    assert uses_skip == (dead >= 5)
    expected = x.astype(np.float64).T @ (g * (y > 0))
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    for rounds in (1, 2):                           # overwrite after zero_grad, then accumulate
        d.forward(x, relu=True)
        d.backward(g, input_grad=False)
        gw = d.weight.grad
        assert (gw[:, :dead] == 0).all()
        np.testing.assert_allclose(gw, rounds * expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    d.weight.grad[:, :dead] = 5.0                   # stale values in dead columns: overwritten after zero_grad
    d.zero_grad()
    d.forward(x, relu=True)
    d.backward(g, input_grad=False)
    assert (d.weight.grad[:, :dead] == 0).all()
