"""The Module/Parameter protocol: parameters, zero_grad, state dicts, order of calls, back ends."""
import numpy as np
import pytest

import npvae
from npvae import BCE, KL, VAE, BCEWithLogits, Dense, Module, Parameter, ReLU, Sampler, Sequential, Sigmoid
from npvae.errors import InputError, StateDictError, StateError

BACKENDS = ["numpy", "numba"]


def _mlp(dtype=np.float64, backend="numpy"):
    seq = Sequential(Dense(4, 5, dtype=dtype, rng=0), ReLU(), Dense(5, 3, dtype=dtype, rng=1))
    return seq.set_backend(backend)


def _grads(m):
    return {n: p.grad.copy() for n, p in m.named_parameters()}


# -- parameters -------------------------------------------------------------------------
def test_parameter_grad_reads_zero_after_zero_grad():
    p = Parameter(np.ones(3))
    assert p.grad.tolist() == [0, 0, 0] and p.shape == (3,) and p.dtype == np.float64
    p.grad[:] = 5.0
    p.zero_grad()
    assert p.grad.tolist() == [0, 0, 0]
    p.grad[:] = 2.0
    p.zero_grad()
    arr, beta = p.grad_target()
    assert beta == 0.0 and arr is p._grad
    assert p.grad_target()[1] == 1.0


def test_parameter_column_grad_is_written_when_read():
    from npvae.kernels.numpy_kernels import scatter_columns
    p = Parameter(np.ones((2, 4)))
    p.grad[:] = 9.0
    p.zero_grad()
    vals, idx = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 3])
    p.set_column_grad(vals, idx, scatter_columns)
    assert p.column_grad()[0] is vals and p._grad[0, 0] == 9.0          # nothing written yet
    assert p.grad.tolist() == [[0, 1, 0, 2], [0, 3, 0, 4]]
    assert p.column_grad() is None
    p.set_column_grad(vals, idx, scatter_columns)
    arr, beta = p.grad_target()                  # a second backward adds onto the columns
    assert beta == 1.0 and arr.tolist() == [[0, 1, 0, 2], [0, 3, 0, 4]] and p.column_grad() is None
    p.set_column_grad(vals, idx, scatter_columns)
    p.zero_grad()                                # drops the columns
    assert p.column_grad() is None and p.grad.tolist() == [[0] * 4] * 2


def test_named_parameters_modules_and_modes():
    m = VAE(6, (5, 4), 2, rng=0)
    names = [n for n, _ in m.named_parameters()]
    assert names == [f"{part}.{i}.{k}" for part in ("encoder", "decoder") for i in (0, 2, 4)
                     for k in ("weight", "bias")]
    assert len(m.parameters()) == 12 and all(isinstance(p, Parameter) for p in m.parameters())
    mods = list(m.modules())
    assert mods[0] is m and any(isinstance(x, Sampler) for x in mods)
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    assert "Dense" in repr(m) and "6-5-4-2" in repr(m)


def test_subclass_must_call_super_init():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(2))

    with pytest.raises(StateError, match="super"):
        Bad()


# -- zero_grad and accumulation ------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_accumulates_and_zero_grad_resets(backend):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    m = _mlp(backend=backend)
    m.forward(x)
    m.backward(g)
    once = _grads(m)
    assert all(np.any(v != 0) for v in once.values())
    m.forward(x)
    m.backward(g)
    for n, v in _grads(m).items():
        np.testing.assert_allclose(v, 2 * once[n], rtol=1e-14, err_msg=n)
    m.zero_grad()                       # then backward straight away: overwrites, no stale sum
    m.forward(x)
    m.backward(g)
    for n, v in _grads(m).items():
        np.testing.assert_allclose(v, once[n], rtol=1e-14, err_msg=n)
    m.zero_grad()
    assert all(not v.any() for v in _grads(m).values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_vae_backward_twice_is_twice(backend):
    x = np.random.default_rng(0).uniform(size=(4, 6))
    eps = np.random.default_rng(1).standard_normal((4, 2))
    m = VAE(6, 5, 2, dtype=np.float64, rng=0, backend=backend)
    m.loss(x, eps=eps)
    m.backward()
    once = _grads(m)
    m.loss(x, eps=eps)
    m.backward()
    for n, v in _grads(m).items():
        np.testing.assert_allclose(v, 2 * once[n], rtol=1e-13, atol=1e-15, err_msg=n)
    m.zero_grad()
    assert all(not v.any() for v in _grads(m).values())


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_zero_grad_clears_non_finite_stale_gradients(backend):
    """After a diverged step, zero_grad + backward must give clean gradients."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    m = _mlp(backend=backend)
    m.forward(x)
    m.backward(g)
    for p in m.parameters():
        p._grad[...] = np.nan                      # what a diverged step leaves behind
    m.zero_grad()
    m.forward(x)
    m.backward(g)
    bad = [n for n, v in _grads(m).items() if not np.all(np.isfinite(v))]
    assert not bad


# -- state dicts -------------------------------------------------------------------------------
def test_state_dict_round_trip_copies():
    a, b = _mlp(), Sequential(Dense(4, 5, dtype=np.float64, rng=7), ReLU(), Dense(5, 3, dtype=np.float64, rng=8))
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for n, p in a.named_parameters():
        assert np.array_equal(sd[n], p.data) and not np.shares_memory(sd[n], p.data)
    sd["0.weight"][...] = 123.0                      # a copy: the model does not see this
    assert not np.any(a[0].weight.data == 123.0)
    sd = a.state_dict()
    b.load_state_dict(sd)
    for n, p in b.named_parameters():
        assert np.array_equal(p.data, sd[n]) and not np.shares_memory(p.data, sd[n])
    sd["2.bias"][...] = -1.0                          # loading copied: b keeps its values
    assert not np.any(b[2].bias.data == -1.0)
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def _bad_dicts(m):
    sd = m.state_dict()
    missing = dict(sd)
    del missing["2.bias"]
    shape = dict(sd, **{"2.weight": np.zeros((3, 5))})
    dtype = dict(sd, **{"2.bias": sd["2.bias"].astype(np.float32)})
    nan = dict(sd, **{"2.bias": np.full(3, np.nan)})
    return {"missing": (missing, "missing"), "unexpected": (dict(sd, extra=np.zeros(1)), "unexpected"),
            "shape": (shape, "shape"), "dtype": (dtype, "dtype"), "list": (dict(sd, **{"0.bias": [0.0] * 5}), "array"),
            "nan": (nan, "NaN"), "not a dict": ([("0.bias", np.zeros(5))], "dict")}


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "dtype", "list", "nan", "not a dict"])
def test_load_state_dict_errors_change_nothing(case):
    m = _mlp()
    before = m.state_dict()
    bad, words = _bad_dicts(_mlp())[case]
    if isinstance(bad, dict):   # make the valid entries differ, so a partial load would show
        bad = {k: (v + 1 if isinstance(v, np.ndarray) and k != "2.bias" else v) for k, v in bad.items()}
    with pytest.raises(StateDictError, match=words):
        m.load_state_dict(bad)
    for n, v in m.state_dict().items():
        assert np.array_equal(v, before[n]), n


def test_load_state_dict_non_strict():
    m = _mlp()
    sd = {"0.bias": np.full(5, 0.5)}
    with pytest.raises(StateDictError):
        m.load_state_dict(sd)
    m.load_state_dict(dict(sd, junk=np.zeros(2)), strict=False)
    assert m[0].bias.data.tolist() == [0.5] * 5
    with pytest.raises(StateDictError, match="shape"):
        m.load_state_dict({"0.bias": np.zeros(4)}, strict=False)


# -- order of calls -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, call", [
    (lambda: Dense(3, 2), lambda m: m.backward(np.zeros((1, 2), np.float32))),
    (ReLU, lambda m: m.backward(np.zeros((1, 2)))),
    (Sigmoid, lambda m: m.backward(np.zeros((1, 2)))),
    (lambda: Sequential(Dense(3, 2), ReLU()), lambda m: m.backward(np.zeros((1, 2), np.float32))),
    (Sampler, lambda m: m.backward(np.zeros((1, 2)))),
    (KL, lambda m: m.backward()),
    (BCE, lambda m: m.backward()),
    (BCEWithLogits, lambda m: m.backward()),
    (lambda: VAE(6, 4, 2, rng=0), lambda m: m.backward()),
], ids=["Dense", "ReLU", "Sigmoid", "Sequential", "Sampler", "KL", "BCE", "BCEWithLogits", "VAE"])
def test_backward_before_forward_is_a_state_error(make, call):
    with pytest.raises(StateError, match="before forward"):
        call(make())


# -- back ends -------------------------------------------------------------------------------------
def test_set_backend_reaches_every_submodule(monkeypatch):
    m = VAE(6, 4, 2, rng=0, backend="numpy")
    assert {x.backend for x in m.modules()} == {"numpy"}
    assert m.set_backend("numba") is m
    assert {x.backend for x in m.modules()} == {"numba"}
    assert m.encoder[0].k.__name__.endswith("numba_kernels")
    with pytest.raises(InputError, match="backend"):
        m.set_backend("cuda")
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    assert Dense(2, 2).backend == "numpy"
    monkeypatch.setenv("NPVAE_BACKEND", "nope")
    with pytest.raises(InputError, match="NPVAE_BACKEND"):
        Dense(2, 2)


def test_errors_are_also_builtin_types():
    assert issubclass(npvae.StateDictError, ValueError) and issubclass(npvae.StateError, RuntimeError)
    assert issubclass(npvae.InputTypeError, TypeError) and issubclass(npvae.InputError, npvae.NpvaeError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_copies_and_pickles_of_a_trained_model(backend):
    """copy.deepcopy and pickle work mid-training (a gradient held as columns included)."""
    import copy
    import pickle
    m = VAE(12, 16, 2, dtype=np.float64, rng=0, backend=backend)
    m.encoder[0].bias.data[:10] = -100.0            # dead units: the weight keeps its gradient as columns
    x = np.random.default_rng(1).uniform(0, 1, (9, 12))
    m.zero_grad()
    m.loss(x, eps=np.zeros((9, 2)))
    m.backward()
    assert m.encoder[0].weight.column_grad() is not None
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert _grads(clone).keys() == _grads(m).keys()
        for n, g in _grads(clone).items():
            np.testing.assert_array_equal(g, _grads(m)[n], err_msg=n)
        assert clone.backend == backend
        np.testing.assert_array_equal(clone.reconstruct(x), m.reconstruct(x))
        assert clone.encoder[0].weight.data is not m.encoder[0].weight.data


def test_workspace_buffers_are_reused_however_the_dtype_is_spelt():
    m = Dense(3, 2, dtype=np.float32, rng=0)
    a = m._buffer("y", (4, 2), np.float32, "F")
    assert m._buffer("y", (4, 2), np.dtype("float32"), "F") is a and a.flags.f_contiguous
    assert m._buffer("y", (4, 2), np.float32, "C") is not a                  # another layout
    assert m._buffer("y", (5, 2), np.float32, "F") is not a                  # another batch size
    # varying widths with a capacity: fronts of one allocation
    v1 = m._buffer("g", (4, 1), np.float32, "F", (4, 3))
    v2 = m._buffer("g", (4, 3), np.dtype("float32"), "F", (4, 3))
    assert np.shares_memory(v1, v2) and v1.shape == (4, 1) and v2.shape == (4, 3)
    # many batch sizes: the workspace starts over instead of growing without bound
    for n in range(300):
        m._buffer("y", (n + 1, 2), np.float32)
    assert len(m._workspace) <= 130
