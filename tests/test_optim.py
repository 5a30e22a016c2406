"""Adam and SGD: steps worked out by hand, against their update rules written out in float64,
weight decay, state dicts, deprecated spellings, arguments."""
import copy
import warnings

import numpy as np
import pytest

from npvae import SGD, Adam, Dense, Parameter
from npvae.errors import InputError, InputTypeError, NpvaeError, StateDictError

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
STEPS = 6


def _params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in ((3, 4), (4,))]


def _grads(step, dtype=np.float64):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(dtype) for s in ((3, 4), (4,))]


def _set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad[...] = g


def adam_reference(p, grads, lr, b1, b2, eps, wd):
    """Algorithm 1 of Kingma & Ba with PyTorch's L2 weight decay (added to the gradient)."""
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


# -- Adam ------------------------------------------------------------------------------------
def test_adam_steps_by_hand():
    """Three steps of Algorithm 1 worked out by hand, lr = 0.1, betas = (1/2, 3/4).

    Element 0 sees g = 2, -2, 2; element 1 the same divided by 4 (Adam's step does not
    depend on the gradient's scale, apart from eps).

    ====================  ======  ======  =======
    step t                1       2       3
    m = b1 m + (1-b1) g   1       -1/2    3/4
    v = b2 v + (1-b2) g^2 1       7/4     37/16
    1 - b1^t              1/2     3/4     7/8
    1 - b2^t              1/4     7/16    37/64
    m_hat                 2       -2/3    6/7
    v_hat                 4       4       4
    step lr m_hat / 2     0.1     -1/30   3/70
    ====================  ======  ======  =======

    Without the bias correction the first step would be the same (m = v = 1) but the
    second 0.1 * 0.5 / sqrt(7/4) = 0.0378 instead of 1/30; with the correction one step
    ahead (1 - beta^(t+1)) the first would already be 0.1 * (4/3) / sqrt(16/7) = 0.0882.
    """
    lr, eps = 0.1, 1e-8
    p = Parameter(np.array([1.0, -2.0]))
    opt = Adam([p], lr=lr, betas=(0.5, 0.75), eps=eps)
    table = [(2.0, 1.0, 1.0, 2.0, 4.0), (-2.0, -1 / 2, 7 / 4, -2 / 3, 4.0), (2.0, 3 / 4, 37 / 16, 6 / 7, 4.0)]
    scale = np.array([1.0, 0.25])
    expected = p.data.copy()
    for t, (g, m, v, m_hat, v_hat) in enumerate(table, start=1):
        p.grad[...] = g * scale
        opt.step()
        assert opt.t == t
        np.testing.assert_allclose(opt.state[p]["m"], m * scale, rtol=1e-15, err_msg=f"m at t={t}")
        np.testing.assert_allclose(opt.state[p]["v"], v * scale ** 2, rtol=1e-15, err_msg=f"v at t={t}")
        expected -= lr * (m_hat * scale) / (np.sqrt(v_hat * scale ** 2) + eps)
        np.testing.assert_allclose(p.data, expected, rtol=1e-15, err_msg=f"parameter at t={t}")
    np.testing.assert_allclose(p.data, [1 - 0.1 + 1 / 30 - 3 / 70, -2 - 0.1 + 1 / 30 - 3 / 70], rtol=1e-7)


def test_adam_constant_gradient_moves_lr_every_step():
    """With a constant g the bias-corrected moments are exactly g and g^2 at every step
    (m_t = g (1 - b1^t)), so each step is lr * g / (|g| + eps)."""
    g = np.array([3.0, -0.02, 1e3])
    p = Parameter(np.zeros(3))
    opt = Adam([p], lr=1e-2)
    for t in range(1, 11):
        before = p.data.copy()
        p.grad[...] = g
        opt.step()
        np.testing.assert_allclose(before - p.data, 1e-2 * g / (np.abs(g) + 1e-8), rtol=1e-12, err_msg=f"t={t}")


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_follows_the_update_rule(dtype, wd):
    params = _params(dtype)
    start = [p.data.copy() for p in params]
    opt = Adam(params, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    for t in range(STEPS):
        _set_grads(params, _grads(t, dtype))
        opt.step()
    assert opt.t == STEPS
    for i, p in enumerate(params):
        want, m, v = adam_reference(start[i], [_grads(t, dtype)[i] for t in range(STEPS)], 0.01, 0.8, 0.95, 1e-6, wd)
        assert p.data.dtype == dtype and opt.state[p]["m"].dtype == dtype
        np.testing.assert_allclose(p.data, want, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(opt.state[p]["m"], m, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
        np.testing.assert_allclose(opt.state[p]["v"], v, rtol=RTOL[dtype] * 10, atol=RTOL[dtype])


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    """PyTorch's Adam(weight_decay): g + wd * theta goes through the moments, so with g = 0 the
    first step is lr * sign(theta) (AdamW's decoupled decay would move theta by lr * wd * theta)."""
    p = Parameter(np.array([1.0, -2.0]))
    Adam([p], lr=0.1, weight_decay=0.1).step()
    np.testing.assert_allclose(p.data, [0.9, -1.9], rtol=1e-7)
    q = Parameter(np.array([1.0, -2.0]))
    Adam([q], lr=0.1).step()                       # no decay, no gradient: no step
    np.testing.assert_array_equal(q.data, [1.0, -2.0])


# -- SGD -------------------------------------------------------------------------------------------
def test_sgd_momentum_by_hand():
    """lr = 0.1, momentum 0.9, g = 1, -1, 2: buffer 1, 0.9 - 1 = -0.1, -0.09 + 2 = 1.91."""
    p = Parameter(np.array([0.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    for g, buf, theta in ((1.0, 1.0, -0.1), (-1.0, -0.1, -0.09), (2.0, 1.91, -0.281)):
        p.grad[...] = g
        opt.step()
        np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [buf], rtol=1e-14)
        np.testing.assert_allclose(p.data, [theta], rtol=1e-14)


def test_sgd_weight_decay_and_plain_step_by_hand():
    p = Parameter(np.array([1.0, -2.0]))
    SGD([p], lr=0.5, weight_decay=0.1).step()      # g = 0: theta -= lr * wd * theta
    np.testing.assert_allclose(p.data, [0.95, -1.9], rtol=1e-15)
    p.grad[...] = [2.0, 4.0]
    SGD([p], lr=0.5).step()                        # theta -= lr * g
    np.testing.assert_allclose(p.data, [-0.05, -3.9], rtol=1e-14)


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_follows_the_update_rule(dtype, momentum, wd):
    params = _params(dtype)
    start = [p.data.copy() for p in params]
    opt = SGD(params, lr=0.05, momentum=momentum, weight_decay=wd)
    for t in range(STEPS):
        _set_grads(params, _grads(t, dtype))
        opt.step()
    for i, p in enumerate(params):
        want = sgd_reference(start[i], [_grads(t, dtype)[i] for t in range(STEPS)], 0.05, momentum, wd)
        np.testing.assert_allclose(p.data, want, rtol=RTOL[dtype], atol=RTOL[dtype])


# -- both ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [Adam, SGD])
def test_step_after_zero_grad_sees_zero_gradient(make):
    d = Dense(3, 2, dtype=np.float64, rng=0)
    opt = make(d.parameters(), lr=0.1)
    d.forward(np.ones((2, 3)))
    d.backward(np.ones((2, 2)))
    opt.zero_grad()
    assert all(not p.grad.any() for p in d.parameters())
    before = d.state_dict()
    opt.step()
    for n, v in d.state_dict().items():
        np.testing.assert_array_equal(v, before[n])


@pytest.mark.parametrize("make", [Adam, SGD])
def test_a_copied_optimizer_updates_the_copied_parameters(make):
    d = Dense(3, 2, dtype=np.float64, rng=0)
    opt = make(d.parameters(), lr=0.1)
    d.forward(np.ones((2, 3)))
    d.backward(np.ones((2, 2)))
    opt.step()
    d2, opt2 = copy.deepcopy((d, opt))
    before = d.weight.data.copy()
    opt2.step()                                   # moves the copy's weights, not the original's
    assert not np.array_equal(d2.weight.data, before)
    np.testing.assert_array_equal(d.weight.data, before)
    opt.step()                                    # the same step on the original: the same result
    np.testing.assert_array_equal(d.weight.data, d2.weight.data)


# -- state dicts ---------------------------------------------------------------------------------------
MAKERS = {"Adam": lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.9), weight_decay=0.01),
          "SGD": lambda ps: SGD(ps, lr=0.01, momentum=0.9)}


@pytest.mark.parametrize("name", MAKERS)
def test_optimizer_state_dict_round_trip(name):
    make = MAKERS[name]
    a_params, b_params = _params(np.float32), _params(np.float32, seed=1)
    a = make(a_params)
    for t in range(3):
        _set_grads(a_params, _grads(t, np.float32))
        a.step()
    sd = a.state_dict()
    names = {"Adam": ("m", "v"), "SGD": ("momentum_buffer",)}[name]
    assert set(sd) == {"t", *a.hyper(), *(f"{n}.{i}" for n in names for i in range(2))}
    b = type(a)(b_params, lr=0.5)                     # other hyper-parameters: the dict sets them
    assert b.load_state_dict(sd) is b
    for i, (pa, pb) in enumerate(zip(a_params, b_params)):
        pb.data[...] = pa.data
        for n in names:                                   # copies, not views
            assert not np.shares_memory(sd[f"{n}.{i}"], a.state[pa][n])
            np.testing.assert_array_equal(b.state[pb][n], a.state[pa][n])
    for t in range(3, 6):                           # the two now step identically
        _set_grads(a_params, _grads(t, np.float32))
        _set_grads(b_params, _grads(t, np.float32))
        a.step()
        b.step()
    assert a.t == b.t == 6 and a.hyper() == b.hyper()
    for pa, pb in zip(a_params, b_params):
        np.testing.assert_array_equal(pa.data, pb.data)


def _adam_dict():
    params = _params()
    opt = Adam(params, lr=0.01)
    _set_grads(params, _grads(0))
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("case, words", [
    ("missing", r"missing \['v.1'\], unexpected \[\]"), ("extra", r"missing \[\], unexpected \['extra'\]"),
    ("shape", r"m.0 must be \(3, 4\)"), ("dtype", "m.0 must be.*float64"),
    ("nan", "v.1 contains NaN"), ("inf", "m.0 contains NaN or inf"), ("bad lr", "lr"), ("negative t", "t=-1"),
    ("not a dict", "must be a dict of names to arrays .* got list"), ("str lr", "lr must be a number, got '0.01'"),
    ("huge t", r"t must be below 2\*\*63"), ("huge int t", r"t must be below 2\*\*63"),
    ("a checkpoint", r"load_checkpoint\(path, model, optimizer\)"),
])
def test_optimizer_load_state_dict_refuses_and_changes_nothing(case, words):
    sd = _adam_dict()
    bad = {k: (v + 1 if k.startswith(("m.", "v.")) else v) for k, v in sd.items()}   # a partial load would show
    if case == "missing":
        del bad["v.1"]
    elif case == "extra":
        bad["extra"] = np.zeros(1)
    elif case == "shape":
        bad["m.0"] = np.zeros((4, 3))
    elif case == "dtype":
        bad["m.0"] = bad["m.0"].astype(np.float32)
    elif case == "nan":
        bad["v.1"] = np.full(4, np.nan)
    elif case == "inf":
        bad["m.0"] = np.full((3, 4), np.inf)
    elif case == "bad lr":
        bad["lr"] = np.array(-1.0)
    elif case == "negative t":
        bad["t"] = np.array(-1)
    elif case == "str lr":              # refused, as Adam(lr="0.01") and opt.lr = "0.01" are
        bad["lr"] = "0.01"
    elif case == "huge t":              # state_dict() would give it back as an object array
        bad["t"] = np.array(1e30)
    elif case == "huge int t":
        bad["t"] = 2**70
    elif case == "a checkpoint":        # dict(np.load(checkpoint.npz))
        bad = {"__meta__": np.array("{}"), **{"optimizer/" + k: v for k, v in bad.items()}}
    else:
        bad = list(bad.items())
    params = _params()
    opt = Adam(params, lr=0.02)
    with pytest.raises(StateDictError, match=words):
        opt.load_state_dict(bad)
    assert opt.t == 0 and opt.lr == 0.02
    assert all(not a.any() for p in params for a in opt.state[p].values())


def test_old_state_dict_with_beta1_and_beta2_still_loads():
    sd = _adam_dict()
    betas = sd.pop("betas")
    sd["beta1"], sd["beta2"] = np.array(0.8), np.array(0.99)
    assert tuple(betas) == (0.9, 0.999)
    opt = Adam(_params(), lr=0.5)
    opt.load_state_dict(sd)
    assert opt.betas == (0.8, 0.99) and opt.t == 1 and opt.lr == 0.01


# -- deprecated spellings and bad arguments -------------------------------------------------------------
def test_betas_is_a_pair_and_beta1_beta2_are_deprecated():
    opt = Adam(_params(), betas=(0.8, 0.99))
    assert opt.betas == (0.8, 0.99)
    with pytest.warns(DeprecationWarning, match="betas"):
        assert opt.beta1 == 0.8
    with pytest.warns(DeprecationWarning, match="betas"):
        assert opt.beta2 == 0.99


def test_setting_beta1_or_beta2_is_deprecated_and_sets_betas():
    opt = Adam(_params(), betas=(0.8, 0.99))
    with pytest.warns(DeprecationWarning, match="betas"):
        opt.beta1 = 0.5
    with pytest.warns(DeprecationWarning, match="betas"):
        opt.beta2 = 0.9
    assert opt.betas == (0.5, 0.9)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match=r"betas\[1\] must be in \[0, 1\)"):
        opt.beta2 = 1.0
    assert opt.betas == (0.5, 0.9)


def test_set_hyper_with_the_old_beta1_beta2_keywords_is_deprecated_and_sets_betas():
    opt = Adam(_params(), betas=(0.8, 0.99))
    with pytest.warns(DeprecationWarning, match=r"betas=\(beta1, beta2\)") as caught:
        opt.set_hyper(lr=0.01, beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.0)
    assert caught[0].filename == __file__          # it points at the caller's line
    assert opt.hyper() == dict(lr=0.01, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.0)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="not both"):
        opt.set_hyper(lr=0.01, betas=(0.9, 0.99), beta1=0.5, beta2=0.9, eps=1e-6, weight_decay=0.0)
    with pytest.warns(DeprecationWarning):                   # one alone keeps the other, as opt.beta1 = does
        opt.set_hyper(beta1=0.6)
    assert opt.betas == (0.6, 0.9)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match=r"betas\[1\] must be in \[0, 1\)"):
        opt.set_hyper(lr=0.5, beta2=1.0)
    assert opt.hyper() == dict(lr=0.01, betas=(0.6, 0.9), eps=1e-6, weight_decay=0.0)   # all or nothing


def test_the_constructor_takes_the_old_beta1_beta2_keywords_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"betas=\(beta1, beta2\)") as caught:
        opt = Adam(_params(), beta1=0.5, beta2=0.6)
    assert caught[0].filename == __file__
    assert opt.betas == (0.5, 0.6)
    with pytest.warns(DeprecationWarning):
        assert Adam(_params(), beta2=0.99).betas == (0.9, 0.99)     # the other keeps its default
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="not both"):
        Adam(_params(), betas=(0.9, 0.99), beta1=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Adam(_params()).betas == (0.9, 0.999)              # the default, no warning
    with pytest.raises(InputTypeError, match="betas must be a pair"):
        Adam(_params(), betas=None)                                # not a way to ask for the default


def test_set_hyper_in_the_old_positional_order_is_deprecated_and_sets_betas():
    """Before ``betas``: ``set_hyper(lr, beta1, beta2, eps, weight_decay)``."""
    opt = Adam(_params())
    with pytest.warns(DeprecationWarning, match=r"^Adam.set_hyper\(lr, beta1, beta2, eps, weight_decay\) by "
                                                r"position is deprecated.*betas=\(beta1, beta2\)") as caught:
        opt.set_hyper(0.01, 0.5, 0.6, 1e-6, 0.1)         # (the warning names the spelling used)
    with pytest.warns(DeprecationWarning, match=r"^Adam.set_hyper\(lr, beta1, beta2=\) is deprecated"):
        opt.set_hyper(0.01, 0.5, beta2=0.6, eps=1e-6, weight_decay=0.1)
    assert caught[0].filename == __file__
    assert opt.hyper() == dict(lr=0.01, betas=(0.5, 0.6), eps=1e-6, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.set_hyper(0.02, (0.9, 0.99), 1e-8, 0.0)               # the new order, no warning
    assert opt.hyper() == dict(lr=0.02, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    with pytest.raises(InputTypeError, match="got 6 positional"):
        opt.set_hyper(0.01, (0.9, 0.99), 1e-8, 0.0, 1, 2)
    with pytest.raises(InputTypeError, match=r"betas must be a pair"):   # a lone number is a slip, not the old order
        opt.set_hyper(0.01, 0.9, 1e-8, 0.0)
    with pytest.raises(InputTypeError, match=r"betas must be a pair"):
        Adam(_params(), betas=0.9, weight_decay=0.01)


def test_sgds_fourth_positional_argument_is_a_deprecated_weight_decay():
    """PyTorch's SGD takes dampening fourth, which npvae has not: the old spelling warns and naming it is quiet."""
    by_name, positional = _params(), _params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = SGD(by_name, 0.1, 0.9, weight_decay=0.5)
    with pytest.warns(FutureWarning, match=r"fourth positional.*dampening.*weight_decay= by name") as seen:
        opt = SGD(positional, 0.1, 0.9, 0.5)
    assert seen[0].filename == __file__         # the caller's line: Python shows it there (in __main__, say)
    assert opt.hyper() == expected.hyper() == dict(lr=0.1, momentum=0.9, weight_decay=0.5)
    with pytest.raises(InputTypeError, match=r"weight_decay twice: 0.5 .* and weight_decay=0.1"):
        SGD(_params(), 0.1, 0.9, 0.5, weight_decay=0.1)
    with pytest.raises(InputTypeError, match=r"at most 4 positional arguments .* got 5"):
        SGD(_params(), 0.1, 0.9, 0.5, False)


def test_an_optimizer_shows_its_settings():
    adam = Adam(_params(), lr=0.01, betas=(0.8, 0.99))
    assert repr(adam) == "Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-08, weight_decay=0.0; 2 parameters, t=0)"
    sgd = SGD(_params(), momentum=0.9)
    _set_grads(sgd.params, _grads(0))
    sgd.step()
    assert repr(sgd) == "SGD(lr=0.01, momentum=0.9, weight_decay=0.0; 2 parameters, t=1)"


def test_the_repr_of_an_optimizer_of_ones_own_without_settings():
    from npvae.optim import Optimizer

    class SignDescent(Optimizer):
        def step(self):
            for p in self.params:
                p.data -= 0.01 * np.sign(p.grad)
    assert repr(SignDescent(_params())) == "SignDescent(2 parameters, t=0)"


@pytest.mark.parametrize("make", [Adam, SGD])
def test_the_backend_warning_points_at_the_users_line(make):
    """Python shows a DeprecationWarning by default only when it is attributed to the user's code."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(_params(), backend="numpy")
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.parametrize("make", [Adam, SGD])
def test_backend_argument_is_deprecated_and_ignored(make):
    p, q = _params(), _params()
    with pytest.warns(DeprecationWarning, match="backend"):
        old = make(p, lr=0.1, backend="numba")
    new = make(q, lr=0.1)
    for params, opt in ((p, old), (q, new)):
        _set_grads(params, _grads(0))
        opt.step()
    for a, b in zip(p, q):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("kwargs, err", [
    (dict(lr=0.0), InputError), (dict(lr=-1e-3), InputError), (dict(lr=float("nan")), InputError),
    (dict(lr="0.1"), InputTypeError), (dict(betas=(1.0, 0.999)), InputError),
    (dict(betas=(0.9, -0.1)), InputError), (dict(eps=0.0), InputError), (dict(weight_decay=-1.0), InputError),
])
def test_adam_rejects_bad_hyper_parameters(kwargs, err):
    with pytest.raises(err, match=next(iter(kwargs))):
        Adam(_params(np.float32), **kwargs)


def test_bad_arguments_are_npvae_errors():
    for bad in (dict(lr=0.0), dict(lr=-1.0), dict(momentum=-0.5)):
        with pytest.raises(NpvaeError, match=next(iter(bad))):
            SGD(_params(np.float32), **bad)
    with pytest.raises(InputError, match="empty"):
        Adam([])
    with pytest.raises(InputTypeError, match="Parameter"):
        Adam([np.zeros(3)])
    p = _params()
    with pytest.raises(InputError, match=r"same Parameter twice \(params\[0\] and params\[2\]\); list each once"):
        Adam([p[1], p[0], p[1]])


@pytest.mark.parametrize("make, name, value, err", [
    (Adam, "lr", float("nan"), InputError), (Adam, "lr", -1.0, InputError), (Adam, "lr", "x", InputTypeError),
    (Adam, "betas", 0.9, InputTypeError), (Adam, "betas", (2.0, 0.5), InputError), (Adam, "eps", 0.0, InputError),
    (Adam, "betas", (0.9, (1, 2)), InputTypeError), (Adam, "betas", "ab", InputTypeError),
    (Adam, "weight_decay", -1.0, InputError), (SGD, "lr", float("inf"), InputError),
    (SGD, "momentum", -0.5, InputError),
])
def test_hyper_parameters_set_later_are_checked_too(make, name, value, err):
    """A schedule sets opt.lr between steps: a bad value is refused there, not turned into NaN weights."""
    opt = make(_params())
    before = getattr(opt, name)
    with pytest.raises(err, match=name):
        setattr(opt, name, value)
    assert getattr(opt, name) == before


@pytest.mark.parametrize("make", [Adam, SGD])
def test_a_schedule_may_bring_lr_down_to_zero_but_an_optimizer_is_not_built_with_it(make):
    params = _params()
    opt = make(params, lr=0.1)
    opt.lr = 0                                      # e.g. cosine annealing to eta_min = 0
    _set_grads(params, _grads(0))
    before = [p.data.copy() for p in params]
    opt.step()
    assert all(np.array_equal(p.data, b) for p, b in zip(params, before))
    opt.lr = np.array(1e-3)                         # a 0-d array counts as its number
    assert opt.lr == 1e-3
    with pytest.raises(InputError, match="lr must be a finite number > 0, got 0"):
        make(_params(), lr=0)


def test_hyper_parameters_read_before_they_are_set_are_attribute_errors():
    class Late(Adam):
        def __init__(self, params):
            self.had_lr = hasattr(self, "lr")       # before Adam.__init__ sets it
            super().__init__(params)
    assert Late(_params()).had_lr is False


def test_an_optimizer_loads_what_np_savez_wrote(tmp_path):
    params = _params()
    opt = Adam(params, lr=0.02)
    _set_grads(params, _grads(0))
    opt.step()
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    again = Adam(_params(), lr=0.5)
    with np.load(tmp_path / "opt.npz") as saved:
        again.load_state_dict(saved)
    assert again.t == 1 and again.lr == 0.02
    for p, q in zip(opt.params, again.params):
        np.testing.assert_array_equal(opt.state[p]["m"], again.state[q]["m"])


def test_betas_may_be_any_pair_of_numbers():
    opt = Adam(_params(), betas=np.array([0.8, 0.99]))
    assert opt.betas == (0.8, 0.99) and all(type(b) is float for b in opt.betas)
    opt.lr = np.float32(0.5)
    assert opt.lr == 0.5 and type(opt.lr) is float


def test_an_eps_that_is_0_in_the_dtype_is_refused_however_it_is_set():
    opt = Adam(_params(np.float32))
    with pytest.raises(InputError, match=r"eps=1e-300 is 0 in the parameters' float32"):
        opt.eps = 1e-300
    with pytest.raises(InputError, match=r"eps=1e-50 is 0"):
        opt.set_hyper(eps=1e-50)
    assert opt.eps == 1e-8


@pytest.mark.parametrize("make, name", [(Adam, "lr"), (Adam, "eps"), (Adam, "weight_decay"), (SGD, "lr"),
                                        (SGD, "momentum"), (SGD, "weight_decay")])
def test_a_setting_that_is_inf_in_the_dtype_is_refused_however_it_is_set(make, name):
    """Adam(eps=1e39) in float32 used to train nothing, with only a NumPy overflow warning to tell."""
    words = rf"{name}=1e\+39 overflows the parameters' float32 \(largest 3.4e\+38\)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # refused before any cast that would overflow
        with pytest.raises(InputError, match=words):
            make(_params(np.float32), **{name: 1e39})
        opt = make(_params(np.float32))
        with pytest.raises(InputError, match=words):
            setattr(opt, name, 1e39)
        state = {**opt.state_dict(), name: np.array(1e39)}
        with pytest.raises(StateDictError, match=words):
            opt.load_state_dict(state)
    make(_params(np.float64), **{name: 1e39})       # finite in float64


def test_eps_and_lr_are_checked_against_the_least_precise_of_mixed_dtypes():
    """float64 first, float32 after: 1e-50 is 0 for the float32 ones (their zero-gradient step 0 / 0)."""
    mixed = _params(np.float64) + _params(np.float32)
    with pytest.raises(InputError, match=r"eps=1e-50 is 0 in the parameters' float32"):
        Adam(mixed, eps=1e-50)
    with pytest.raises(InputError, match=r"lr=1e-300 is 0 in the parameters' float32"):
        SGD(mixed, lr=1e-300)


@pytest.mark.parametrize("make", [Adam, SGD])
def test_a_first_lr_that_is_0_in_the_dtype_is_refused(make):
    """It would train nothing, as lr=0 would; float64 parameters take it."""
    with pytest.raises(InputError, match=r"lr=1e-300 is 0 in the parameters' float32: no step would change"):
        make(_params(np.float32), lr=1e-300)
    p = Parameter(np.zeros(3))
    p.grad[...] = 1.0
    make([p], lr=1e-300).step()
    assert (p.data < 0).all()


@pytest.mark.parametrize("make, good, bad", [
    (Adam, dict(lr=0.5, betas=(0.5, 0.5)), dict(eps=-1.0)),
    (Adam, dict(lr=0.7, weight_decay=0.1), dict(betas=(0.9, 1.0))),
    (SGD, dict(lr=0.5, momentum=0.9), dict(weight_decay=float("nan"))),
])
def test_a_refused_set_hyper_changes_nothing(make, good, bad):
    opt = make(_params(np.float32))
    before = opt.hyper()
    with pytest.raises(InputError):
        opt.set_hyper(**good, **bad)
    assert opt.hyper() == before


def test_set_hyper_sets_only_what_it_is_given():
    adam = Adam(_params(), lr=1e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.01)
    adam.set_hyper(lr=1e-4)
    assert adam.hyper() == dict(lr=1e-4, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.01)
    adam.set_hyper(0.5, (0.5, 0.6))
    assert adam.hyper() == dict(lr=0.5, betas=(0.5, 0.6), eps=1e-6, weight_decay=0.01)
    sgd = SGD(_params(), lr=0.1, momentum=0.9)
    sgd.set_hyper(weight_decay=0.001)
    assert sgd.hyper() == dict(lr=0.1, momentum=0.9, weight_decay=0.001)


@pytest.mark.parametrize("call", [
    lambda o: o.set_hyper(0.01, 0.5, 0.6, eps=1e-6, weight_decay=0.1),
    lambda o: o.set_hyper(0.01, 0.5, 0.6, 1e-6, weight_decay=0.1),
    lambda o: o.set_hyper(0.01, 0.5, 0.6, 1e-6, 0.1),
    lambda o: o.set_hyper(0.01, 0.5, beta2=0.6, eps=1e-6, weight_decay=0.1),
    lambda o: o.set_hyper(0.01, np.array(0.5), 0.6, 1e-6, 0.1),
])
def test_the_old_positional_order_with_trailing_keywords_still_works(call):
    opt = Adam(_params())
    with pytest.warns(DeprecationWarning, match=r"betas=\(beta1, beta2\)"):
        call(opt)
    assert opt.hyper() == dict(lr=0.01, betas=(0.5, 0.6), eps=1e-6, weight_decay=0.1)


def test_an_argument_given_twice_is_refused_clearly():
    opt = Adam(_params())
    with pytest.raises(InputTypeError, match="eps twice"):
        opt.set_hyper(0.01, (0.9, 0.99), 1e-6, eps=1e-7)


@pytest.mark.parametrize("key, value, match", [
    ("t", np.array(3.7), "t must be a whole number"),
    ("t", np.array(True), "t must be a whole number"),
    ("t", np.array(np.inf), "t must be a whole number"),
    ("lr", np.array(True), "lr must be a number"),
])
def test_load_state_dict_refuses_values_it_used_to_truncate(key, value, match):
    opt = Adam(_params())
    sd = dict(opt.state_dict(), **{key: value})
    with pytest.raises(StateDictError, match=match):
        opt.load_state_dict(sd)
    assert opt.t == 0 and opt.lr == 1e-3
    opt.load_state_dict(dict(opt.state_dict(), t=np.array(3.0)))     # a whole float is fine
    assert opt.t == 3


def test_a_read_only_array_is_refused_as_a_parameters_data_or_grad():
    data = np.zeros((2, 3))
    data.flags.writeable = False
    with pytest.raises(InputError, match="Parameter.data must be a writable array"):
        Parameter(np.zeros((2, 3))).data = data
    with pytest.raises(InputError, match="Parameter.grad must be a writable array"):
        Parameter(np.zeros((2, 3))).grad = data
    with pytest.raises(InputError, match="writable"):
        Parameter(data)


def test_sgds_first_step_takes_its_gradient_as_the_buffer_whatever_a_loaded_one_holds():
    """As the fast path's update does (b = g at t = 1): the two once differed after a load of a
    hand-made state (step count 0, buffers not)."""
    p = Parameter(np.ones(3))
    opt = SGD([p], lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    sd["momentum_buffer.0"] = np.full(3, 5.0)
    opt.load_state_dict(sd)
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(p.data, np.full(3, 0.9))
