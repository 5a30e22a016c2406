"""Every kernel: the Numba version against its NumPy twin, random inputs, both dtypes.

Also runs under ``NUMBA_DISABLE_JIT=1`` (the kernels as plain Python, as CI does),
so the arrays are kept small.
"""
import inspect
import math
import warnings
import zlib
from fractions import Fraction

import numba
import numpy as np
import pytest

from npvae.kernels import flags
from npvae.kernels import numba_kernels as nb
from npvae.kernels import numpy_kernels as npk

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
B, N = 5, 7


def _public(module):
    return {n: f for n, f in inspect.getmembers(module, inspect.isfunction) if not n.startswith("_")
            and f.__module__ == module.__name__}


def _mat(r, dt, scale=1.0, shape=(B, N)):
    return (scale * r.standard_normal(shape)).astype(dt)


def _relu_out(r, dt):
    y = np.maximum(r.standard_normal((B, N)), 0).astype(dt)
    y[0, 0] = 0.0
    return y


def _unit(r, dt, shape=(B, N)):
    return r.uniform(0, 1, shape).astype(dt)


def _h(r, dt, d=3):
    """[mu | logvar] with logvar in [-3, 2]."""
    return np.concatenate([r.standard_normal((B, d)), r.uniform(-3, 2, (B, d))], axis=1).astype(dt)


def _relu_out_dead(r, dt):
    y = _relu_out(r, dt)
    y[:, [1, 4, 5]] = 0                       # three units off for the whole batch
    return y


def _columns(r):
    return np.array([0, 2, 3, 6], np.intp)   # increasing, as relu_bias_backward writes them


def _adam(r, dt, wd):
    # the optimizer kernels take flat 1-D views (npvae.optim.flat)
    p, g, m = _mat(r, dt, shape=24), _mat(r, dt, shape=24), _mat(r, dt, 0.1, 24)
    v = r.uniform(0, 0.1, 24).astype(dt)
    c = (1e-3, 0.9, 0.999, 1e-8, wd, 1 - 0.9 ** 3, 1 - 0.999 ** 3, np.finfo(dt).tiny)
    return (p, g, m, v, *(dt(x) for x in c)), (0, 2, 3)


def _moment(r, dt):
    """A second moment: some entries near the normal range's end, so that they flush to 0."""
    v = r.uniform(0, 0.1, 24).astype(dt)
    v[:4] = np.finfo(dt).tiny * np.array([1.0, 1.5, 1e3, 0.0])
    return v


def _adam_columns(r, dt, wd):
    # a (B, N) column-major weight whose gradient is nonzero only in the columns _columns()
    p, m = _mat(r, dt), _mat(r, dt, 0.1)
    v = r.uniform(0, 0.1, (B, N)).astype(dt)
    m[:, 5] = 0                                  # a long-dead unit: its first moment has flushed to 0
    c = (1e-3, 0.9, 0.999, 1e-8, wd, 1 - 0.9 ** 3, 1 - 0.999 ** 3, np.finfo(dt).tiny)
    return (p, _mat(r, dt, shape=(B, 4)), _columns(r), m, v, *(dt(x) for x in c)), (0, 3, 4)


def _sgd(r, dt, momentum, first):
    p, g, buf = (_mat(r, dt, shape=24) for _ in range(3))
    return (p, g, buf, dt(0.1), dt(momentum), dt(0.01), first, dt(np.finfo(dt).tiny)), (0, 2)


# kernel name -> {variant label: make(rng, dtype) -> (args, indices of the arrays it writes)}
CASES = {
    "add_bias": {"": lambda r, dt: ((_mat(r, dt), _mat(r, dt, shape=N)), (0,))},
    "bias_relu_forward": {"": lambda r, dt: ((_mat(r, dt), _mat(r, dt, shape=N)), (0,))},
    "bias_grad": {f"beta={beta}": (lambda r, dt, beta=beta: ((_mat(r, dt), _mat(r, dt, shape=N), beta), (1,)))
                  for beta in (0.0, 1.0)},
    "relu_forward": {"": lambda r, dt: ((_mat(r, dt), np.empty((B, N), dt)), (1,))},
    "relu_backward": {"": lambda r, dt: ((_mat(r, dt), _relu_out(r, dt), np.empty((B, N), dt)), (2,))},
    "relu_bias_backward": {
        f"beta={beta}": (lambda r, dt, beta=beta: (
            (_mat(r, dt), _relu_out_dead(r, dt), np.empty((B, N), dt), _mat(r, dt, shape=N), beta,
             np.zeros(N, np.intp)), (2, 3, 5)))
        for beta in (0.0, 1.0)},
    "gather_columns": {"": lambda r, dt: ((_mat(r, dt), _columns(r), np.empty((B, 4), dt)), (2,))},
    "scale_pixels": {"": lambda r, dt: ((r.integers(0, 256, (B, N), dtype=np.uint8), np.empty((B, N), dt)), (1,))},
    "scatter_columns": {f"beta={beta}": (lambda r, dt, beta=beta: (
        (_mat(r, dt, shape=(B, 4)), _columns(r), _mat(r, dt), beta), (2,))) for beta in (0.0, 1.0)},
    "mark_live_columns": {"": lambda r, dt: ((_relu_out_dead(r, dt)[:, :6], np.array([6, 0, 3, 4, 2, 1], np.intp),
                                              np.array([False, True] + [False] * (N - 2))), (2,))},
    "sigmoid_forward": {"": lambda r, dt: ((_mat(r, dt, 5.0), np.empty((B, N), dt)), (1,))},
    "sigmoid_backward": {"": lambda r, dt: ((_mat(r, dt), _unit(r, dt), np.empty((B, N), dt)), (2,))},
    "bce_logits_forward": {"": lambda r, dt: ((_mat(r, dt, 4.0), _unit(r, dt), np.empty(B, dt)), (2,))},
    "bce_logits_forward_backward": {f"width={n}": (lambda r, dt, n=n: (   # odd and even: two columns a pass
        (_mat(r, dt, 4.0, (B, n)), _unit(r, dt, (B, n)), dt(1.0 / B), np.empty(B, dt), np.empty((B, n), dt)),
        (3, 4))) for n in (N, N - 1)},
    "sampler_forward": {"": lambda r, dt: (
        (_h(r, dt), _mat(r, dt, shape=(B, 3)), np.empty((B, 3), dt), np.empty((B, 3), dt)), (2, 3))},
    "sampler_backward": {"": lambda r, dt: (
        (_mat(r, dt, shape=(B, 3)), _mat(r, dt, shape=(B, 3)), r.uniform(0.1, 3, (B, 3)).astype(dt),
         np.empty((B, 6), dt)), (3,))},
    "kl_forward": {"": lambda r, dt: ((_h(r, dt), np.empty(B, dt)), (1,))},
    "kl_backward": {"": lambda r, dt: ((_h(r, dt), dt(-0.7), np.empty((B, 6), dt)), (2,))},
    "adam_update": {f"wd={wd}": (lambda r, dt, wd=wd: _adam(r, dt, wd)) for wd in (0.0, 0.01)},
    "decay_moment": {"": lambda r, dt: ((_moment(r, dt), dt(0.999), 700, dt(np.finfo(dt).tiny)), (0,))},
    "adam_update_columns": {f"wd={wd}": (lambda r, dt, wd=wd: _adam_columns(r, dt, wd)) for wd in (0.0, 0.01)},
    "sgd_update": {f"momentum={m},first={f}": (lambda r, dt, m=m, f=f: _sgd(r, dt, m, f))
                   for m, f in ((0.0, True), (0.9, True), (0.9, False))},
}
PARAMS = [pytest.param(name, make, id=f"{name}-{label}" if label else name)
          for name, variants in CASES.items() for label, make in variants.items()]


def test_both_backends_define_the_same_kernels():
    ref = _public(npk)
    assert set(ref) == set(CASES), "every NumPy kernel needs inputs in CASES (and nothing else)"
    for name, f in ref.items():
        twin = getattr(nb, name)
        py = getattr(twin, "py_func", twin)
        assert list(inspect.signature(py).parameters) == list(inspect.signature(f).parameters), name


def _copy(args, order="K"):
    return [a.copy(order=order) if isinstance(a, np.ndarray) else a for a in args]


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, make", PARAMS)
def test_numba_matches_numpy(name, make, dtype, order):
    """Column-major (the model's workspaces) and row-major (a user's arrays) alike."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    args, outputs = make(rng, dtype)
    args = _copy(args, order)
    a_np, a_nb = _copy(args), _copy(args)
    ret_np = getattr(npk, name)(*a_np)
    ret_nb = getattr(nb, name)(*a_nb)
    assert ret_np == ret_nb, f"{name} returned {ret_nb}, the NumPy twin {ret_np}"
    rtol = RTOL[dtype]
    for i, (orig, x, y) in enumerate(zip(args, a_np, a_nb)):
        if not isinstance(orig, np.ndarray):
            continue
        if orig.dtype.kind in "biu":   # column indices and flags: exact
            assert np.array_equal(x, y), f"{name}: argument {i}"
            continue
        assert x.dtype == y.dtype == dtype
        if i in outputs:
            assert np.all(np.isfinite(y)), f"{name}: output {i} not finite"
            scale = max(float(np.max(np.abs(x))), 1e-30)
            np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * scale, err_msg=f"{name}: argument {i}")
        else:   # inputs are read, never written
            assert np.array_equal(x, orig) and np.array_equal(y, orig), f"{name} wrote its input {i}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_kernels_by_hand(k, dtype):
    """A few values worked out on paper, for both back ends."""
    y = np.array([[1.0, -2.0], [-0.5, 3.0]], dtype)
    b = np.array([0.5, 1.0], dtype)
    k.bias_relu_forward(y, b)
    assert y.tolist() == [[1.5, 0.0], [0.0, 4.0]]
    db = np.array([9.0, 9.0], dtype)
    k.bias_grad(np.array([[1, 2], [3, 4]], dtype), db, 0.0)
    assert db.tolist() == [4.0, 6.0]
    k.bias_grad(np.array([[1, 2], [3, 4]], dtype), db, 1.0)
    assert db.tolist() == [8.0, 12.0]
    rows = np.empty(1, dtype)
    k.kl_forward(np.array([[1.0, 0.0]], dtype), rows)          # mu = 1, logvar = 0: (1 + 1 - 1 - 0) / 2
    assert rows[0] == pytest.approx(0.5, rel=RTOL[dtype])
    z, std = np.empty((1, 1), dtype), np.empty((1, 1), dtype)
    k.sampler_forward(np.array([[2.0, np.log(4.0)]], dtype), np.array([[-1.5]], dtype), z, std)
    assert std[0, 0] == pytest.approx(2.0, rel=RTOL[dtype]) and z[0, 0] == pytest.approx(-1.0, rel=RTOL[dtype])


@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_column_kernels_by_hand(k):
    dy = np.array([[5, 1, 6, 2], [7, -3, 0, 0]], np.float32, order="F")
    y = np.array([[0, 1, 0, 2], [0, 3, 0, 1]], np.float32, order="F")  # units 0 and 2 off
    a, db, idx = np.empty_like(dy), np.empty(4, np.float32), np.full(4, -1, np.intp)
    assert k.relu_bias_backward(dy, y, a, db, 0.0, idx) == 2 and idx[:2].tolist() == [1, 3]
    assert a.tolist() == [[0, 1, 0, 2], [0, -3, 0, 0]] and db.tolist() == [0, -2, 0, 2]
    packed = np.empty((2, 2), np.float32, order="F")
    k.gather_columns(a, idx, packed)
    assert packed.tolist() == [[1, 2], [-3, 0]]
    out = np.full((2, 4), 7, np.float32, order="F")
    k.scatter_columns(packed, idx, out, 1.0)              # accumulate: other columns untouched
    assert out.tolist() == [[7, 8, 7, 9], [7, 4, 7, 7]]
    k.scatter_columns(packed, idx, out, 0.0)              # overwrite: other columns zeroed
    np.testing.assert_array_equal(out, a)
    assert k.relu_bias_backward(dy, -y, a, db, 0.0, idx) == 0      # all off


@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_adam_on_columns_is_adam_on_the_scattered_gradient(k, dtype, wd):
    """adam_update_columns == scatter_columns into a zero gradient, then adam_update."""
    rng = np.random.default_rng(7)
    args, _ = _adam_columns(rng, dtype, wd)
    p, vals, idx, m, v, *c = (a.copy(order="F") if isinstance(a, np.ndarray) else a for a in args)
    m[:, 1] = 1e-3                                # a dead unit whose moment still moves it
    g = np.zeros_like(p)
    k.scatter_columns(vals, idx, g, 0.0)
    dense = [a.copy(order="F") for a in (p, m, v)]
    k.adam_update(*(a.ravel(order="K") for a in (dense[0], g, dense[1], dense[2])), *c)
    k.adam_update_columns(p, vals, idx, m, v, *c)
    for name, got, want in zip("pmv", (p, m, v), dense):
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=0, err_msg=name)
    if wd == 0:   # the long-dead unit does not move (with weight decay it does)
        assert (m[:, 5] == 0).all() and (p[:, 5] == args[0][:, 5]).all()
    assert (p[:, 1] != args[0][:, 1]).all()       # the dead unit with a moment left does


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_extreme_logits_are_finite_and_quiet(k, dtype):
    x = np.array([[-1000, -100, -88, -30, 0, 30, 88, 100, 1000]], dtype)
    t = np.array([[0, 1, 0, 1, 0.5, 0, 1, 0, 1]], dtype)
    y, dl, rows = np.empty_like(x), np.empty_like(x), np.empty(1, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # underflow (exp(-1000) -> 0) is not an error: NumPy ignores it by default
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            k.sigmoid_forward(x, y)
            k.bce_logits_forward_backward(x, t, dtype(1.0), rows, dl)
    assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))
    assert y[0, 4] == 0.5 and y[0, -1] == 1.0 and y[0, 7] == 1.0
    assert y[0, 0] <= np.finfo(dtype).tiny * 1.05          # 0, subnormal, or the float32 clamp
    assert np.all(np.isfinite(dl)) and np.isfinite(rows[0])
    # loss by hand: softplus(l) - l t is ~|l| where the target is on the wrong side, ~0 otherwise
    expected = 0 + 100 + 0 + 30 + math.log(2) + 30 + 0 + 100 + 0
    assert rows[0] == pytest.approx(expected, rel=RTOL[dtype] * 10)


def _njit_map(fn):
    """A compiled loop applying ``fn`` elementwise, with the kernels' own compile options."""
    @numba.njit(fastmath=flags.FASTMATH, error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    return apply


def _ulps(y, exact):
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(y.astype(np.float64) - exact) / spacing


def test_float32_exp_neg_accuracy():
    x = -np.linspace(0, 87.3, 200_001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    # the algorithm as written (plain Python on float32 scalars): within 1 ulp
    sub = x[::97]
    assert _ulps(np.array([nb._exp_neg_f32(v) for v in sub], np.float32), exact[::97]).max() <= 1.0
    # as compiled into the kernels (fastmath may reassociate the two-part ln 2): a few ulp
    y = np.empty_like(x)
    _njit_map(nb.exp_neg)(x, y)
    assert _ulps(y, exact).max() <= 5.0
    assert _ulps(y[x >= -10], exact[x >= -10]).max() <= 1.5
    # below -87.3 the result is subnormal: a few units of the smallest subnormal 2^-149 off at most
    tail = -np.linspace(87.3, 110.0, 20_001).astype(np.float32)
    out = np.empty_like(tail)
    _njit_map(nb.exp_neg)(tail, out)
    err = np.abs(out.astype(np.float64) - np.exp(tail.astype(np.float64))) / 2.0 ** -149
    assert err.max() <= 4.0
    assert np.all(out >= 0) and np.all(out[tail <= -104.0] == 0)


def test_float32_exp_any_accuracy():
    x = np.linspace(-87.3, 88.72, 200_001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    sub = x[::97]
    assert _ulps(np.array([nb._exp_any_f32(v) for v in sub], np.float32), exact[::97]).max() <= 1.0
    y = np.empty_like(x)
    _njit_map(nb.exp_any)(x, y)
    assert np.all(np.isfinite(y)) and _ulps(y, exact).max() <= 5.0
    # overflow to inf, underflow to 0, NaN kept: as the C library's expf
    edge = np.array([88.8, 100.0, 1e30, np.inf, -104.5, -1e30, -np.inf, np.nan], np.float32)
    out = np.empty_like(edge)
    with np.errstate(over="ignore"):             # NumPy's exp, under NUMBA_DISABLE_JIT=1
        _njit_map(nb.exp_any)(edge, out)
    assert out[:4].tolist() == [np.inf] * 4 and out[4:7].tolist() == [0.0] * 3 and np.isnan(out[7])


def test_float32_log1p_unit_accuracy():
    e = np.concatenate([np.linspace(0, 1, 100_001), np.logspace(-40, 0, 2001)]).astype(np.float32)
    exact = np.log1p(e.astype(np.float64))
    y = np.empty_like(e)
    _njit_map(nb.log1p_unit)(e, y)
    nz = exact > 0
    assert y[e == 0].tolist() == [0.0]
    assert _ulps(y[nz], exact[nz]).max() <= 3.0
    sub = e[::113]
    py = np.array([nb._log1p_unit_f32(v) for v in sub], np.float32)
    assert _ulps(py[sub > 0], exact[::113][sub > 0]).max() <= 3.0


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_scale_pixels_is_the_correctly_rounded_quotient_for_every_pixel(k, dtype, order):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16).copy(order=order)
    out = np.full((16, 16), np.nan, dtype, order=order)
    k.scale_pixels(pixels, out)
    # x / 255 rounded once to the nearest float of dtype (exact rationals: no double rounding)
    exact = np.array([float(Fraction(int(x), 255)) for x in range(256)]).reshape(16, 16)
    for i, x in np.ndenumerate(exact):
        lo = dtype(x)                           # nearest float64, rounded once more to dtype...
        cands = [lo, np.nextafter(lo, dtype(0)), np.nextafter(lo, dtype(1))]
        best = min(cands, key=lambda c: abs(Fraction(float(c)) - Fraction(int(pixels[i]), 255)))
        assert out[i] == best, f"{k.__name__}: pixel {pixels[i]} -> {out[i]!r}, the nearest is {best!r}"


def test_typed_keeps_the_float_type():
    @numba.njit
    def f(a):
        return nb.typed(0.5, a[0]) * a[0]
    assert f(np.array([3.0], np.float32)) == 1.5
    assert nb.typed(0.5, np.float32(1)).dtype == np.float32


@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
@pytest.mark.parametrize("order", ["F", "C"])
def test_mark_live_columns_flags_units_that_fired_and_keeps_earlier_flags(k, order):
    y = np.zeros((5, 4), np.float32, order=order)
    y[3, 0], y[0, 2], y[4, 3] = 1e-30, 2.0, -1.0          # columns 0 and 2 fired, 3 only negative
    live = np.array([False, False, False, False, False, True, False])
    k.mark_live_columns(y, np.array([2, 4, 0, 6], np.intp), live)
    assert np.flatnonzero(live).tolist() == [0, 2, 5]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_decay_moment_is_bit_for_bit_the_zero_gradient_steps_it_replays(k, dtype):
    """What Adam skips for held columns (Optimizer.hold) is replayed exactly: same bits."""
    r = np.random.default_rng(5)
    v = _moment(r, dtype)
    stepped = v.copy()
    zeros = np.zeros_like(v)
    c = (1e-3, 0.9, 0.999, 1e-8, 0.0, 1 - 0.9 ** 3, 1 - 0.999 ** 3, np.finfo(dtype).tiny)
    for _ in range(30):
        k.adam_update(np.ones_like(v), zeros, zeros.copy(), stepped, *(dtype(x) for x in c))
    k.decay_moment(v, dtype(0.999), 30, dtype(np.finfo(dtype).tiny))
    assert np.array_equal(v, stepped) and v[0] == 0 and v[2] > 0
    # the first moment, signed, decays by beta1 the same way
    m = _moment(r, dtype) * np.where(np.arange(24) % 2, 1, -1).astype(dtype)
    m[:2] = np.finfo(dtype).tiny * np.array([-1.05, 1.2])
    stepped = m.copy()
    for _ in range(30):
        k.adam_update(np.ones_like(m), zeros, stepped, r.uniform(0, 0.1, 24).astype(dtype), *(dtype(x) for x in c))
    k.decay_moment(m, dtype(0.9), 30, dtype(np.finfo(dtype).tiny))
    assert np.array_equal(m, stepped) and m[0] == m[1] == 0 and (m[2::2] < 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [npk, nb], ids=["numpy", "numba"])
def test_decay_moment_over_blocks_that_flush_at_different_steps(k, dtype):
    """The Numba kernel works block by block (1024 entries) and stops a block once all of it
    is 0: a block that flushes early, one that never does and a short last block."""
    tiny = np.finfo(dtype).tiny
    v = np.random.default_rng(6).uniform(0, 1e-3, 2500).astype(dtype)
    v[:1024] = tiny * np.linspace(1.0, 1.002, 1024, dtype=dtype)   # all 0 after 3 steps
    v[1500] = tiny                                                  # one early 0 among live values
    expected = v.copy()
    for _ in range(40):   # the definition: one zero-gradient step at a time
        expected *= dtype(0.999)
        expected[expected < tiny] = 0
    k.decay_moment(v, dtype(0.999), 40, dtype(tiny))
    assert np.array_equal(v, expected)
    assert not v[:1024].any() and v[1500] == 0 and (v[1024:1500] > 0).all() and (v[2000:] > 0).all()
