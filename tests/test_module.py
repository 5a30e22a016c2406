"""The Module/Parameter protocol: backward adds into .grad, returns dx and never writes grad_out;
zero_grad; order of calls; parameters and names; state dicts; copies."""
import copy
import pickle

import numpy as np
import pytest

import npvae
from npvae import BCE, KL, VAE, BCEWithLogits, Dense, Module, Parameter, ReLU, Sampler, Sequential, Sigmoid
from npvae.errors import InputError, InputTypeError, StateDictError, StateError


def _mlp(seed=0):
    return Sequential(Dense(4, 5, dtype=np.float64, rng=seed), ReLU(), Dense(5, 3, dtype=np.float64, rng=seed + 1))


def _grads(m):
    return {n: p.grad.copy() for n, p in m.named_parameters()}


# -- parameters -------------------------------------------------------------------------
def test_parameter_holds_data_and_a_zero_gradient_of_its_shape():
    p = Parameter(np.ones((2, 3), np.float32))
    assert p.shape == (2, 3) and p.dtype == np.float32
    assert p.grad.shape == (2, 3) and p.grad.dtype == np.float32 and not p.grad.any()
    assert not np.shares_memory(p.grad, p.data)
    p.grad[...] = np.nan                            # what a diverged step leaves behind
    p.zero_grad()
    assert not p.grad.any()
    assert "(2, 3)" in repr(p)


def test_named_parameters_modules_and_modes():
    m = VAE(6, (5, 4), 2, rng=0)
    names = [n for n, _ in m.named_parameters()]
    assert names == [f"{part}.{i}.{k}" for part in ("encoder", "decoder") for i in (0, 2, 4)
                     for k in ("weight", "bias")]
    assert m.parameters() == [p for _, p in m.named_parameters()]
    assert len(m.parameters()) == 12 and all(isinstance(p, Parameter) for p in m.parameters())
    mods = list(m.modules())
    assert mods[0] is m and any(isinstance(x, Sampler) for x in mods)
    assert m.eval() is m and not any(x.training for x in m.modules())
    assert m.train() is m and all(x.training for x in m.modules())
    assert "Dense" in repr(m) and "6-5-4-2" in repr(m)


def test_subclass_must_call_super_init():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(2))

    with pytest.raises(StateError, match="super"):
        Bad()


def test_a_user_module_registers_its_parameters_and_submodules():
    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.s = Parameter(np.array([2.0]))
            self.inner = Dense(2, 2, dtype=np.float64, rng=0)

    m = Scale()
    assert [n for n, _ in m.named_parameters()] == ["s", "inner.weight", "inner.bias"]
    assert set(m.state_dict()) == {"s", "inner.weight", "inner.bias"}


@pytest.mark.parametrize("value", [None, np.zeros(2), 3.0])
def test_a_parameter_replaced_by_something_else_is_refused_not_left_behind(value):
    """parameters() and state_dict() must not go on holding a parameter its attribute no longer shows."""
    d = Dense(3, 2, dtype=np.float64, rng=0)
    with pytest.raises(InputTypeError, match=r"Dense.bias is a parameter: assign a Parameter \(new values go into "
                                             r"its .data\), got \w+$"):      # Dense has no form without one
        d.bias = value
    assert isinstance(d.bias, Parameter)
    assert [n for n, _ in d.named_parameters()] == ["weight", "bias"]


def test_a_layers_parameter_replaced_by_one_of_another_shape_or_dtype_is_refused_there():
    """Else the error came at the next forward pass, from numpy or blaming the next layer's input."""
    d = Dense(3, 2, rng=0)
    weight = d.weight
    with pytest.raises(InputTypeError, match=r"^Dense.weight is a parameter of shape \(3, 2\) and dtype float32: .* "
                                             r"got shape \(3, 2\) and dtype float64 \(new values of its own .*\.data"):
        d.weight = Parameter(np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"got shape \(2, 3\) and dtype float32 \(new values"):
        d.weight = Parameter(np.zeros((2, 3), np.float32))
    assert d.weight is weight and d.parameters()[0] is weight
    tied = Parameter(np.ones((3, 2), np.float32))
    d.weight = tied                                    # the same shape and dtype: tying weights, say
    np.testing.assert_array_equal(d(np.ones((1, 3), np.float32)), 3.0 + d.bias.data[None])

    class Growing(Module):                             # one's own module may resize its own
        def __init__(self):
            super().__init__()
            self.w = Parameter(np.zeros(2))
    g = Growing()
    g.w = Parameter(np.zeros(5, np.float32))
    assert g.parameters()[0].shape == (5,)


def test_a_sub_module_replaced_by_something_else_is_refused_and_del_removes_it():
    m = VAE(12, 5, 2, rng=0)
    with pytest.raises(InputTypeError, match=r"VAE.decoder is a sub-module: assign a Module, got object"):
        m.decoder = object()
    with pytest.raises(InputTypeError, match=r"VAE.kl is a sub-module: assign a Module, got the class KL \(make"):
        m.kl = KL                                 # the class, not one made of it
    assert any(n.startswith("decoder.") for n, _ in m.named_parameters())
    del m.decoder
    assert not any(n.startswith("decoder.") for n in [*dict(m.named_parameters()), *m.state_dict()])
    d = Dense(3, 2, dtype=np.float64, rng=0)
    del d.bias
    assert [n for n, _ in d.named_parameters()] == ["weight"] and list(d.state_dict()) == ["weight"]
    seq = m.encoder
    with pytest.raises(InputTypeError, match=r"layer 1 cannot be deleted; replace it with seq\[1\] = layer"):
        delattr(seq, "1")                           # a gap in a Sequential: seq[1] = x would append
    with pytest.raises(InputTypeError, match=r"layer 2 cannot be deleted"):
        del seq[2]
    with pytest.raises(InputTypeError, match=r"layer 2 cannot be deleted; replace it with seq\[2\] = layer"):
        del seq[-1]                                 # counted from the end, as seq[-1] is
    for index in (slice(1, None), 5, -5):
        with pytest.raises(InputTypeError, match=r"layers cannot be deleted \(got del seq\["):
            del seq[index]
    assert len(seq) == 3


def test_a_name_that_changes_kind_is_registered_once():
    class Slot(Module):
        def __init__(self):
            super().__init__()
            self.x = Parameter(np.ones(2))

    m = Slot()
    with pytest.raises(InputTypeError, match=r"Slot.x is a parameter: .*; to remove it, del slot.x$"):
        m.x = None                                  # a layer of your own may do without it
    m.x = Dense(2, 1, dtype=np.float64, rng=0)      # a parameter's slot now holds a layer
    assert [n for n, _ in m.named_parameters()] == ["x.weight", "x.bias"]
    m.x = Parameter(np.zeros(3))                    # and back
    assert [n for n, _ in m.named_parameters()] == ["x"]


# -- backward: adds into .grad, returns dx, never writes grad_out ------------------------
def _op(name):
    """``(module, forward, x)`` for an op with a ``backward(grad_out)``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    if name == "Sampler":
        sampler, eps = Sampler(rng=0), rng.standard_normal((3, 2))
        return sampler, lambda h: sampler.forward(h, eps), x
    module = {"Dense": lambda: Dense(4, 4, dtype=np.float64, rng=0), "ReLU": ReLU, "Sigmoid": Sigmoid,
              "Sequential": _mlp}[name]()
    return module, module.forward, x


@pytest.mark.parametrize("name", ["Dense", "ReLU", "Sigmoid", "Sequential", "Sampler"])
def test_backward_leaves_grad_out_alone_and_returns_a_new_array(name):
    """In a VAE mu's gradient has two sources: an op that scribbled over its incoming gradient
    would corrupt the other one."""
    module, forward, x = _op(name)
    y = forward(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    g_kept = g.copy()
    dx = module.backward(g)
    np.testing.assert_array_equal(g, g_kept, err_msg=f"{name}.backward wrote into grad_out")
    assert dx.shape == x.shape and not np.shares_memory(dx, g)


def test_backward_accumulates_and_zero_grad_resets():
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    m = _mlp()
    m.forward(x)
    m.backward(g)
    once = _grads(m)
    assert all(np.any(v != 0) for v in once.values())
    m.forward(x)
    m.backward(g)
    for n, v in _grads(m).items():
        np.testing.assert_allclose(v, 2 * once[n], rtol=1e-14, err_msg=n)
    m.zero_grad()
    assert all(not v.any() for v in _grads(m).values())
    m.forward(x)
    m.backward(g)
    for n, v in _grads(m).items():
        np.testing.assert_array_equal(v, once[n], err_msg=n)


def test_vae_backward_twice_is_twice():
    x = np.random.default_rng(0).uniform(size=(4, 6))
    eps = np.random.default_rng(1).standard_normal((4, 2))
    m = VAE(6, 5, 2, dtype=np.float64, rng=0)
    m.loss(x, eps=eps)
    m.backward()
    once = _grads(m)
    m.loss(x, eps=eps)
    m.backward()
    for n, v in _grads(m).items():
        np.testing.assert_allclose(v, 2 * once[n], rtol=1e-13, atol=1e-15, err_msg=n)
    m.zero_grad()
    assert all(not v.any() for v in _grads(m).values())


def test_zero_grad_clears_non_finite_stale_gradients():
    """After a diverged step, zero_grad + backward gives clean gradients."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    m = _mlp()
    for p in m.parameters():
        p.grad[...] = np.nan
    m.zero_grad()
    m.forward(x)
    m.backward(g)
    assert all(np.isfinite(v).all() for v in _grads(m).values())


# -- order of calls -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, call, words", [
    (lambda: Dense(3, 2), lambda m: m.backward(np.zeros((1, 2), np.float32)), "before forward"),
    (ReLU, lambda m: m.backward(np.zeros((1, 2))), "before forward"),
    (Sigmoid, lambda m: m.backward(np.zeros((1, 2))), "before forward"),
    (lambda: Sequential(Dense(3, 2), ReLU()), lambda m: m.backward(np.zeros((1, 2), np.float32)), "before forward"),
    (Sampler, lambda m: m.backward(np.zeros((1, 2))), "before forward"),
    (KL, lambda m: m.backward(), "before forward"),
    (BCE, lambda m: m.backward(), "before forward"),
    (BCEWithLogits, lambda m: m.backward(), "before forward"),
    (lambda: VAE(6, 4, 2, rng=0), lambda m: m.backward(), r"loss\(\)"),
], ids=["Dense", "ReLU", "Sigmoid", "Sequential", "Sampler", "KL", "BCE", "BCEWithLogits", "VAE"])
def test_backward_before_forward_is_a_state_error(make, call, words):
    with pytest.raises(StateError, match=words):
        call(make())


# -- state dicts -------------------------------------------------------------------------------
def test_state_dict_round_trip_copies():
    a, b = _mlp(0), _mlp(7)
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for n, p in a.named_parameters():
        assert np.array_equal(sd[n], p.data) and not np.shares_memory(sd[n], p.data)
    sd["0.weight"][...] = 123.0                      # a copy: the model does not see this
    assert not np.any(a[0].weight.data == 123.0)
    sd = a.state_dict()
    assert b.load_state_dict(sd) is b
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
    inf = dict(sd, **{"2.bias": np.full(3, -np.inf)})
    return {"missing": (missing, r"missing \['2.bias'\]"),
            "unexpected": (dict(sd, extra=np.zeros(1)), r"unexpected \['extra'\]"),
            "shape": (shape, r"'2.weight'.*\(3, 5\).*\(5, 3\)"), "dtype": (dtype, "'2.bias'.*float32.*float64"),
            "list": (dict(sd, **{"0.bias": [0.0] * 5}), "'0.bias'.*numpy array"),
            "nan": (nan, "'2.bias'.*NaN"), "inf": (inf, "'2.bias'.*inf"),
            "not a dict": ([("0.bias", np.zeros(5))], "dict")}


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "dtype", "list", "nan", "inf", "not a dict"])
def test_load_state_dict_errors_name_the_entry_and_change_nothing(case):
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
    with pytest.raises(StateDictError, match="missing"):
        m.load_state_dict(sd)
    m.load_state_dict(dict(sd, junk=np.zeros(2)), strict=False)
    assert m[0].bias.data.tolist() == [0.5] * 5
    with pytest.raises(StateDictError, match="shape"):
        m.load_state_dict({"0.bias": np.zeros(4)}, strict=False)


# -- deprecated spelling, errors, copies ----------------------------------------------------------------
def test_set_backend_is_deprecated_and_changes_nothing():
    m = VAE(6, 4, 2, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).uniform(size=(3, 6))
    before = m.reconstruct(x)
    with pytest.warns(DeprecationWarning, match="set_backend"):
        assert m.set_backend("numba") is m
    np.testing.assert_array_equal(m.reconstruct(x), before)


@pytest.mark.parametrize("name, builtin", [
    ("InputError", ValueError), ("InputTypeError", TypeError), ("StateError", RuntimeError),
    ("StateDictError", ValueError), ("DataFileError", ValueError), ("DatasetNotFoundError", FileNotFoundError),
    ("DownloadError", OSError), ("CheckpointError", ValueError), ("CheckpointNotFoundError", FileNotFoundError),
    ("DivergenceError", FloatingPointError), ("RunFolderInUseError", RuntimeError),
])
def test_errors_are_also_builtin_types(name, builtin):
    """``except ValueError`` (or FloatingPointError, ...) keeps working in code that does not know npvae."""
    error = getattr(npvae.errors, name)
    assert issubclass(error, npvae.NpvaeError) and issubclass(error, builtin)


def test_the_pixel_scale_warning_is_a_user_warning():
    assert issubclass(npvae.PixelScaleWarning, UserWarning)    # shown by default, filtered as UserWarning


def test_copies_and_pickles_of_a_model_mid_training():
    """copy.deepcopy and pickle keep parameters and gradients, and the copy is independent."""
    m = VAE(12, 16, 2, dtype=np.float64, rng=0)
    x = np.random.default_rng(1).uniform(0, 1, (9, 12))
    m.loss(x, eps=np.zeros((9, 2)))
    m.backward()
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert _grads(clone).keys() == _grads(m).keys()
        for n, g in _grads(clone).items():
            np.testing.assert_array_equal(g, _grads(m)[n], err_msg=n)
        np.testing.assert_array_equal(clone.reconstruct(x), m.reconstruct(x))
        assert not np.shares_memory(clone.encoder[0].weight.data, m.encoder[0].weight.data)
        clone.encoder[0].weight.data[...] = 0
        assert m.encoder[0].weight.data.any()


class TaggedParameter(Parameter):
    __slots__ = ("tag",)


def test_a_parameter_subclass_with_slots_copies_and_pickles():
    p = TaggedParameter(np.arange(3.0))
    p.tag = "mine"
    for clone in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert clone.tag == "mine" and np.array_equal(clone.data, p.data) and clone.grad.shape == (3,)


def test_a_parameter_pickled_by_an_older_npvae_is_refused_in_words_not_loaded_broken():
    old = Parameter(np.ones(3))
    vars(old).clear()                   # what an older npvae's Parameter held: its values under data
    vars(old).update(data=np.ones(3), _grad=np.zeros(3), _stale=False, _columns=None)
    blob = pickle.dumps([old])
    with pytest.raises(StateDictError, match=r"cannot unpickle a Parameter written by another version of npvae "
                                             r"\(it holds \['_columns', '_grad', '_stale', 'data'\]\).*"
                                             r"npvae\.save_checkpoint"):
        pickle.loads(blob)


@pytest.mark.parametrize("data", [[1.0, 2.0], 3.0, np.arange(3), np.ones(2, np.float16)],
                         ids=["list", "scalar", "int array", "float16 array"])
def test_parameter_takes_a_float32_or_float64_array(data):
    with pytest.raises(InputTypeError, match="Parameter.*float32 or float64 numpy array"):
        Parameter(data)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_parameter_takes_a_new_array_of_its_own_shape_and_dtype_only():
    model = VAE(12, 5, 2, rng=0)
    x = np.random.default_rng(0).random((3, 12)).astype(np.float32)
    model.zero_grad(); model.loss(x); model.backward()
    w = model.encoder[0].weight
    w.grad = np.clip(w.grad, -1e-3, 1e-3)              # clipping by rebinding: allowed
    w.data = w.data.copy()
    npvae.Adam(model.parameters()).step()
    with pytest.raises(InputTypeError, match=r"Parameter.grad must be a numpy array.*NoneType; to clear "
                                             r"the gradient call zero_grad\(\)"):
        w.grad = None                                   # the PyTorch habit
    with pytest.raises(InputTypeError, match="Parameter.grad must keep the dtype float32, got float64"):
        w.grad = w.grad.astype(np.float64)
    with pytest.raises(InputTypeError, match=r"Parameter.data must keep the dtype float32, got float64: "
                                             r"convert the values \(value.astype\(np.float32\)\)"):
        w.data = w.data.astype(np.float64)
    with pytest.raises(InputError, match=r"Parameter.data must keep the shape \(12, 5\), got \(5, 12\)"):
        w.data = w.data.T.copy()
    for name in ("data", "grad"):        # a matrix's * is a matrix product: Adam's g * g would be wrong
        for other in (np.matrix(w.data), np.ma.masked_array(w.data.copy())):
            with pytest.raises(InputTypeError, match=rf"^Parameter.{name}: {name} is a (numpy.matrix|masked array)"):
                setattr(w, name, other)
    with pytest.raises(InputTypeError, match=r"^Parameter\(data\): data is a numpy.matrix"):
        Parameter(np.matrix(w.data))
    assert w.grad.dtype == w.data.dtype == np.float32 and w.data.shape == (12, 5)
    assert type(w.data) is type(w.grad) is np.ndarray


def test_a_model_loads_what_np_savez_wrote(tmp_path):
    model, other = VAE(12, 5, 2, rng=0), VAE(12, 5, 2, rng=1)
    np.savez(tmp_path / "w.npz", **model.state_dict())
    with np.load(tmp_path / "w.npz") as saved:
        other.load_state_dict(saved)
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_train_takes_a_bool():
    model = VAE(12, 5, 2, rng=0)
    with pytest.raises(InputTypeError, match="mode must be True or False"):
        model.train("no")
    assert model.training
    assert not model.train(False).training


def test_named_modules_names_every_sub_module_depth_first():
    m = VAE(6, 5, 2, rng=0)
    named = [(n, type(x).__name__) for n, x in m.named_modules()]
    assert named[:5] == [("", "VAE"), ("encoder", "Sequential"), ("encoder.0", "Dense"), ("encoder.1", "ReLU"),
                         ("encoder.2", "Dense")]
    assert [x for _, x in m.named_modules()] == list(m.modules())


def test_a_forward_keeping_a_name_again_is_a_new_pass_even_with_new_names_beside_it():
    """``keep`` counts a pass when a name comes again (so a subclass keeping more after its
    parent's forward is one pass): one old name among new ones is enough."""
    class Op(Module):
        def forward(self, x, mask=False):
            self.keep(x=x, **({"mask": x > 0} if mask else {}))
            return x

    op, x = Op(), np.ones((2, 3))
    op(x)
    op(x, mask=True)
    assert op.passes == 2


def test_a_weight_that_is_not_an_array_is_refused_as_such():
    """Not taken for a transposed weight (a list, or a torch tensor, has no .ndim to compare)."""
    m = VAE(6, 5, 2, rng=0)
    sd = m.state_dict()
    sd["encoder.0.weight"] = sd["encoder.0.weight"].tolist()
    with pytest.raises(StateDictError, match=r"state_dict\['encoder.0.weight'\] must be a numpy array, got list"):
        VAE(6, 5, 2, rng=1).load_state_dict(sd)
