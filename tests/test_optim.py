"""Adam and SGD against their update rules written out in plain NumPy float64."""
import numpy as np
import pytest

from npvae import SGD, Adam, Dense, Parameter
from npvae.errors import InputError, InputTypeError, NpvaeError, StateDictError

BACKENDS = ["numpy", "numba"]
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
STEPS = 6


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in ((3, 4), (4,))]


def _grads(step, dtype):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(dtype) for s in ((3, 4), (4,))]


def _set_grads(params, grads):
    for p, g in zip(params, grads):
        p.zero_grad()
        p.grad[...] = g


def adam_reference(p, grads, lr, b1, b2, eps, wd):
    """PyTorch's Adam (L2 weight decay added to the gradient), bias corrections included."""
    p = p.astype(np.float64).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def sgd_reference(p, grads, lr, momentum, wd):
    """PyTorch's SGD: b = g at the first step, then b = momentum b + g; p -= lr b."""
    p = p.astype(np.float64).copy()
    buf = None
    for g in grads:
        g = g.astype(np.float64) + wd * p
        buf = g.copy() if buf is None else momentum * buf + g
        p = p - lr * (buf if momentum else g)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_follows_the_update_rule(backend, dtype, wd):
    params = _params(dtype)
    start = [p.data.copy() for p in params]
    opt = Adam(params, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd, backend=backend)
    for t in range(STEPS):
        _set_grads(params, _grads(t, dtype))
        opt.step()
    assert opt.t == STEPS
    for i, p in enumerate(params):
        want, m, v = adam_reference(start[i], [_grads(t, dtype)[i] for t in range(STEPS)], 0.01, 0.8, 0.95, 1e-6, wd)
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, want, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(opt.state["m"][i], m, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(opt.state["v"][i], v, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])


def test_adam_first_step_moves_by_lr():
    """With bias correction the first step is lr * sign(g) (|g| >> eps): the rule, not a guess."""
    p = Parameter(np.array([1.0, -2.0, 3.0]))
    opt = Adam([p], lr=0.1, backend="numpy")
    p.grad[...] = [4.0, -0.5, 1e-3]
    opt.step()
    np.testing.assert_allclose(p.data, [0.9, -1.9, 2.9], rtol=1e-6)


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_follows_the_update_rule(backend, dtype, momentum, wd):
    params = _params(dtype)
    start = [p.data.copy() for p in params]
    opt = SGD(params, lr=0.05, momentum=momentum, weight_decay=wd, backend=backend)
    for t in range(STEPS):
        _set_grads(params, _grads(t, dtype))
        opt.step()
    for i, p in enumerate(params):
        want = sgd_reference(start[i], [_grads(t, dtype)[i] for t in range(STEPS)], 0.05, momentum, wd)
        np.testing.assert_allclose(p.data, want, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("make", [lambda ps, b: Adam(ps, lr=0.01, backend=b),
                                  lambda ps, b: SGD(ps, lr=0.01, momentum=0.9, backend=b)], ids=["Adam", "SGD"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_state_dict_round_trip(make, backend):
    a_params, b_params = _params(np.float32), _params(np.float32)
    a = make(a_params, backend)
    for t in range(3):
        _set_grads(a_params, _grads(t, np.float32))
        a.step()
    sd = a.state_dict()
    b = make(b_params, backend)
    b.load_state_dict(sd)
    for pa, pb in zip(a_params, b_params):
        pb.data[...] = pa.data
    for name, arrays in a.state.items():           # copies, not views
        for i, arr in enumerate(arrays):
            assert not np.shares_memory(sd[f"{name}.{i}"], arr)
    for t in range(3, 6):                           # the two now step identically
        _set_grads(a_params, _grads(t, np.float32))
        _set_grads(b_params, _grads(t, np.float32))
        a.step()
        b.step()
    assert a.t == b.t == 6 and a.hyper() == b.hyper()
    for pa, pb in zip(a_params, b_params):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_optimizer_load_state_dict_errors():
    opt = Adam(_params(np.float64), lr=0.01)
    sd = opt.state_dict()
    missing = dict(sd)
    del missing["v.1"]
    for bad in (missing, dict(sd, extra=np.zeros(1)), dict(sd, **{"m.0": np.zeros((4, 3))}),
                dict(sd, **{"m.0": sd["m.0"].astype(np.float32)}), [1, 2]):
        with pytest.raises(StateDictError):
            opt.load_state_dict(bad)


def test_optimizer_load_state_dict_with_bad_hyper_changes_nothing():
    params = _params(np.float64)
    opt = Adam(params, lr=0.01)
    sd = opt.state_dict()
    bad = {k: (v + 1 if k.startswith(("m.", "v.")) else v) for k, v in sd.items()}
    bad["lr"], bad["t"] = np.array(-1.0), np.array(9)
    with pytest.raises(StateDictError):
        opt.load_state_dict(bad)
    assert opt.t == 0 and not opt.state["m"][0].any()


@pytest.mark.parametrize("kwargs, err", [
    (dict(lr=0.0), InputError), (dict(lr=-1e-3), InputError), (dict(lr=float("nan")), InputError),
    (dict(lr="0.1"), InputTypeError), (dict(betas=(1.0, 0.999)), InputError),
    (dict(betas=(0.9, -0.1)), InputError), (dict(eps=0.0), InputError), (dict(weight_decay=-1.0), InputError),
])
def test_adam_rejects_bad_hyper_parameters(kwargs, err):
    with pytest.raises(err):
        Adam(_params(np.float32), **kwargs)


def test_bad_arguments_are_npvae_errors():
    for bad in (dict(lr=0.0), dict(lr=-1.0), dict(momentum=-0.5)):
        with pytest.raises(NpvaeError):
            SGD(_params(np.float32), **bad)
    with pytest.raises(InputError, match="empty"):
        Adam([])
    with pytest.raises(InputTypeError, match="Parameter"):
        Adam([np.zeros(3)])
    with pytest.raises(InputError, match="backend"):
        Adam(_params(np.float32), backend="gpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_after_zero_grad_sees_zero_gradient(backend):
    d = Dense(3, 2, dtype=np.float64, rng=0, backend=backend)
    opt = SGD(d.parameters(), lr=0.1, backend=backend)
    d.forward(np.ones((2, 3)))
    d.backward(np.ones((2, 2)))
    opt.zero_grad()
    before = d.state_dict()
    opt.step()
    for n, v in d.state_dict().items():
        np.testing.assert_array_equal(v, before[n])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_below_the_smallest_normal_are_flushed(backend, dtype):
    """Dead units: g = 0 and tiny moments. They become exactly 0, never subnormal."""
    from npvae.kernels import get
    tiny = np.finfo(dtype).tiny
    p = np.ones(8, dtype)
    g = np.zeros(8, dtype)
    m = np.full(8, tiny / 2, dtype)           # already subnormal
    v = np.full(8, tiny * 1.0005, dtype)      # 0.999 * v decays below tiny this step
    m[0], v[0] = 1e-3, 1e-6                    # a live unit stays live
    c = [dtype(x) for x in (1e-3, 0.9, 0.999, 1e-8, 0.0, 0.5, 0.25, tiny)]
    get(backend).adam_update(p, g, m, v, *c)
    assert (m[1:] == 0).all() and (v[1:] == 0).all()
    assert m[0] != 0 and v[0] != 0
    np.testing.assert_array_equal(p[1:], 1)   # a zero moment moves nothing
    buf = np.full(8, tiny * 1.05, dtype)
    get(backend).sgd_update(p, g, buf, dtype(0.1), dtype(0.9), dtype(0.0), False, dtype(tiny))
    assert (buf == 0).all()


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_reads_a_column_gradient_as_the_full_one(backend, dtype, wd):
    """Dense hands Adam only its live columns (dead units); same steps as from .grad."""
    x = np.random.default_rng(3).uniform(-1, 1, (30, 6)).astype(dtype)
    runs = []
    for read_grad in (False, True):
        d = Dense(6, 20, dtype=dtype, rng=0, backend=backend)
        d.bias.data[:12] = -100.0                   # 12 of 20 units off: the column path
        opt = Adam(d.parameters(), lr=0.01, weight_decay=wd, backend=backend)
        for step in range(4):
            opt.zero_grad()
            d.forward(x, relu=True)
            d.backward(np.random.default_rng(step).standard_normal((30, 20)).astype(dtype), input_grad=False)
            assert d.weight.column_grad() is not None
            if read_grad:
                d.weight.grad                       # writes the columns out: the dense update
                assert d.weight.column_grad() is None
            opt.step()
        runs.append([p.data.copy() for p in d.parameters()] + [a.copy() for a in opt.state["m"]])
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=0)
    assert (runs[0][0][:, :12] == Dense(6, 20, dtype=dtype, rng=0).weight.data[:, :12]).all() == (wd == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sgd_writes_a_column_gradient_out(backend):
    """SGD has no column kernel: it reads the gradient the Dense layer left as columns in full."""
    d = Dense(6, 20, dtype=np.float64, rng=0, backend=backend)
    d.bias.data[:12] = -100.0
    x = np.random.default_rng(3).uniform(-1, 1, (30, 6))
    d.zero_grad()                               # a fresh gradient: the layer hands over columns
    d.forward(x, relu=True)
    d.backward(np.random.default_rng(4).standard_normal((30, 20)), input_grad=False)
    assert d.weight.column_grad() is not None
    expected = d.weight.data - 0.1 * (x.T @ (np.random.default_rng(4).standard_normal((30, 20)) * (d._y > 0)))
    SGD(d.parameters(), lr=0.1, backend=backend).step()
    np.testing.assert_allclose(d.weight.data, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [Adam, SGD])
def test_a_copied_optimizer_updates_the_copied_parameters(make):
    import copy
    d = Dense(3, 2, dtype=np.float64, rng=0)
    opt = make(d.parameters(), lr=0.1)
    d.forward(np.ones((2, 3)))
    d.backward(np.ones((2, 2)))
    opt.step()                                    # the optimizer has made its flat views
    d2, opt2 = copy.deepcopy((d, opt))
    before = d.weight.data.copy()
    opt2.step()                                   # moves the copy's weights, not the original's
    assert not np.array_equal(d2.weight.data, before)
    np.testing.assert_array_equal(d.weight.data, before)
    opt.step()                                    # the same step on the original: the same result
    np.testing.assert_array_equal(d.weight.data, d2.weight.data)
