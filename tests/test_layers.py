"""Dense, ReLU, Sigmoid and Sequential: values by hand, gradients against finite differences,
dtypes, arguments. The module protocol (accumulation, grad_out untouched) is in test_module.py
and checked again by every gradient check here."""
import warnings

import numpy as np
import pytest

from finite_differences import check_op
from npvae import Dense, ReLU, Sequential, Sigmoid
from npvae.errors import InputError, InputTypeError, StateError

DTYPES = [np.float32, np.float64]


def _dense(W, b, dtype=np.float64):
    d = Dense(W.shape[0], W.shape[1], dtype=dtype, rng=0)
    d.load_state_dict({"weight": np.asarray(W, dtype), "bias": np.asarray(b, dtype)})
    return d


W = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
b = np.array([0.5, -1.0, -20.0])
X = np.array([[1.0, 2.0], [-1.0, 0.5]])
# x W + b by hand: [1+8+.5, 2+10-1, 3+12-20] and [-1+2+.5, -2+2.5-1, -3+3-20]
Y = np.array([[9.5, 11.0, -5.0], [1.5, -0.5, -20.0]])


# -- Dense ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_by_hand(dtype):
    d = _dense(W, b, dtype)
    y = d.forward(X.astype(dtype))
    assert y.dtype == dtype and y.shape == (2, 3)
    assert y.tolist() == Y.tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_by_hand(dtype):
    d = _dense(W, b, dtype)
    g = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]], dtype)
    g0 = g.copy()
    d.forward(X.astype(dtype))
    dx = d.backward(g)
    # dx = g W^T (2, 2); dW = x^T g (2, 3); db = sum over the batch of g (3,)
    assert dx.tolist() == [[1 + 6, 4 + 12], [0.5 - 2 + 3, 2 - 5 + 6]]
    assert d.weight.grad.tolist() == [[1 - 0.5, 0 + 1, 2 - 1], [2 + 0.25, 0 - 0.5, 4 + 0.5]]
    assert d.bias.grad.tolist() == [1.5, -1.0, 3.0]
    assert np.array_equal(g, g0)


def test_square_dense_backward_by_hand():
    """On a square layer dW and its transpose have the same shape: only the numbers tell them apart."""
    d = _dense(np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros(2))
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    g = np.array([[1.0, 3.0], [5.0, 7.0]])
    d.forward(x)
    dx = d.backward(g)
    # dW[i, o] = sum_b x[b, i] g[b, o]: row i of x^T times g
    # i = 0: x[:, 0] = (1, 0) -> (1, 3);  i = 1: x[:, 1] = (0, 2) -> (10, 14)
    assert d.weight.grad.tolist() == [[1.0, 3.0], [10.0, 14.0]]
    # dx[b, i] = sum_o g[b, o] W[i, o]: (1*1 + 3*2, 1*3 + 3*4) and (5*1 + 7*2, 5*3 + 7*4)
    assert dx.tolist() == [[7.0, 15.0], [19.0, 43.0]]
    assert d.bias.grad.tolist() == [6.0, 10.0]


@pytest.mark.parametrize("n_in, n_out", [(5, 3), (3, 5), (4, 4)], ids=["wide-in", "wide-out", "square"])
def test_dense_gradients_match_finite_differences(n_in, n_out):
    rng = np.random.default_rng(n_in * 10 + n_out)
    d = Dense(n_in, n_out, dtype=np.float64, rng=rng)
    d.bias.data[...] = rng.standard_normal(n_out)          # a bias that is not ~0, so db means something
    check_op(d, rng.standard_normal((3, n_in)))


def test_dense_init_like_pytorch():
    d = Dense(16, 5, dtype=np.float64, rng=0)
    assert d.weight.shape == (16, 5) and d.bias.shape == (5,)
    assert d.weight.data.flags.c_contiguous
    assert np.abs(d.weight.data).max() <= 0.25 and np.abs(d.bias.data).max() <= 0.25
    assert np.abs(d.weight.data).max() > 0.2            # really uses the range +-1/sqrt(in)
    d32 = Dense(16, 5, dtype=np.float32, rng=0)
    assert d32.weight.dtype == np.float32 and d32.weight.grad.dtype == np.float32
    np.testing.assert_array_equal(d32.weight.data, d.weight.data.astype(np.float32))
    np.testing.assert_array_equal(Dense(16, 5, rng=np.random.default_rng(3)).weight.data,
                                  Dense(16, 5, rng=3).weight.data)


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
    with pytest.raises(InputError, match="in_features"):
        Dense(0, 2)
    with pytest.raises(InputTypeError, match="dtype"):
        Dense(3, 2, dtype=np.int32)


def test_dense_backend_argument_is_deprecated_and_ignored():
    with pytest.warns(DeprecationWarning, match="backend"):
        d = Dense(3, 2, dtype=np.float64, rng=0, backend="numba")
    plain = Dense(3, 2, dtype=np.float64, rng=0)
    x = np.ones((2, 3))
    np.testing.assert_array_equal(d.forward(x), plain.forward(x))


# -- ReLU and Sigmoid --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_by_hand(dtype):
    r = ReLU()
    x = np.array([[-2.0, -0.0, 0.0, 3.0], [1e-30, -1e-30, 5.0, -7.0]], dtype)
    y = r.forward(x)
    assert y.dtype == dtype and y.tolist() == [[0, 0, 0, 3], [dtype(1e-30), 0, 5, 0]]
    g = np.arange(1.0, 9.0, dtype=dtype).reshape(2, 4)
    g0 = g.copy()
    dx = r.backward(g)                      # slope 1 where x > 0, else 0 (0 at the kink too)
    assert dx.dtype == dtype and dx.tolist() == [[0, 0, 0, 4], [5, 0, 7, 0]]
    assert np.array_equal(g, g0), "ReLU.backward modified grad_out"
    assert not np.shares_memory(dx, g)


def test_relu_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.choice([-1.0, 1.0], (3, 6)) * rng.uniform(0.1, 2.0, (3, 6))     # away from the kink
    check_op(ReLU(), x)


def test_sigmoid_known_values():
    s = Sigmoid()
    assert s.forward(np.zeros((1, 3))).tolist() == [[0.5, 0.5, 0.5]]
    with np.errstate(all="raise"):
        y = s.forward(np.array([[-100.0, 100.0, 2.0]])).copy()
    assert y[0, 1] == 1.0
    assert y[0, 0] == pytest.approx(3.720075976020836e-44, rel=1e-12)     # exp(-100) / (1 + exp(-100))
    assert y[0, 2] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-15)
    dx = s.backward(np.full((1, 3), 2.0))
    # dy/dx = y (1 - y) at the output y = 0.8808 (0.105), not at the input x = 2 (which gives -2)
    assert dx[0, 2] == pytest.approx(2 * y[0, 2] * (1 - y[0, 2]), rel=1e-15)
    assert dx[0, 2] == pytest.approx(0.20998717080701323, rel=1e-14)


def test_sigmoid_gradient_matches_finite_differences():
    x = 2.0 * np.random.default_rng(2).standard_normal((3, 6))
    check_op(Sigmoid(), x)


def test_sigmoid_float32_saturates_quietly():
    s = Sigmoid()
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
def test_layers_keep_dtype_and_shape(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(dtype)
    seq = Sequential(Dense(5, 6, dtype=dtype, rng=0), ReLU(), Dense(6, 3, dtype=dtype, rng=1), Sigmoid())
    for layer in [Dense(5, 3, dtype=dtype, rng=0), ReLU(), Sigmoid(), seq]:
        y = layer.forward(x)
        g = rng.standard_normal(y.shape).astype(dtype)
        dx = layer.backward(g)
        assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
        for name, p in layer.named_parameters():
            assert p.grad.dtype == dtype and p.grad.shape == p.shape, name


# -- Sequential -----------------------------------------------------------------------------
def _stack(rng):
    """Dense(5, 7) -> ReLU -> Dense(7, 7) (square) -> ReLU -> Dense(7, 4) -> Sigmoid, float64."""
    return Sequential(Dense(5, 7, dtype=np.float64, rng=rng), ReLU(), Dense(7, 7, dtype=np.float64, rng=rng),
                      ReLU(), Dense(7, 4, dtype=np.float64, rng=rng), Sigmoid())


def test_sequential_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    seq = _stack(rng)
    x = rng.standard_normal((3, 5))
    # precondition: no ReLU input within a finite-difference step of its kink
    a = x
    for layer in seq:
        if isinstance(layer, ReLU):
            assert np.abs(a).min() > 1e-3, "pick another seed: a ReLU input sits on its kink"
        a = layer.forward(a)
    check_op(seq, x)


def test_sequential_backward_is_each_layer_backward_in_reverse():
    rng = np.random.default_rng(5)
    seq = _stack(rng)
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 4))
    seq.forward(x)
    dx = seq.backward(g)
    grads = {n: p.grad.copy() for n, p in seq.named_parameters()}
    seq.zero_grad()
    a = x
    for layer in seq:
        a = layer.forward(a)
    np.testing.assert_array_equal(a, seq.forward(x))
    by_hand = g
    for layer in reversed(seq.layers):
        by_hand = layer.backward(by_hand)
    np.testing.assert_array_equal(dx, by_hand)
    for n, p in seq.named_parameters():
        np.testing.assert_array_equal(p.grad, grads[n], err_msg=n)


def test_sequential_names_and_indexing():
    d1, r, d2 = Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1)
    seq = Sequential(d1, r, d2)
    assert len(seq) == 3 and seq[0] is d1 and seq[1] is r and seq[2] is d2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq.parameters()[0] is d1.weight
    with pytest.raises(InputError, match="at least one layer"):
        Sequential()
    with pytest.raises(InputTypeError, match="layer 1"):
        Sequential(Dense(3, 4), "relu")


def test_an_index_past_a_sequentials_layers_says_how_many_it_has():
    """An IndexError still (what ends a loop over seq[i]), but about the Sequential, not a tuple
    or a range inside it; negative indices count from the end, as in a list."""
    seq = Sequential(Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1))
    assert seq[-3] is seq[0] and seq[np.int64(1)] is seq[np.array(1)] is seq[1] and list(seq) == list(seq.layers)
    for i in (3, -4):
        with pytest.raises(IndexError, match=rf"^Sequential index {i} is out of range: it has 3 layers \(0-2\)$"):
            seq[i]
        with pytest.raises(IndexError, match=rf"^Sequential index {i} is out of range: it has 3 layers \(0-2\)$"):
            seq[i] = ReLU()
    assert [type(layer).__name__ for layer in seq] == ["Dense", "ReLU", "Dense"]
    with pytest.raises(IndexError, match=r"^Sequential index 1 is out of range: it has 1 layer \(0\)$"):
        Sequential(ReLU())[1]
    for index in ("a", 1.0, True):
        with pytest.raises(InputTypeError, match=rf"^Sequential: a layer's index must be an int \(or a slice\), "
                                                 rf"got {index!r}$"):
            seq[index]


def test_a_slice_of_a_sequential_is_a_sequential_of_the_same_layers():
    """As in PyTorch: seq[:2] runs the first two layers (it was a tuple, which cannot be called)."""
    d1, r, d2 = Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1)
    seq = Sequential(d1, r, d2)
    head = seq[:2]
    assert isinstance(head, Sequential) and head.layers == (d1, r) and seq[-1:].layers == (d2,)
    assert seq[::2].layers == (d1, d2)
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(head(x), r(d1(x)))
    assert [n for n, _ in head.named_parameters()] == ["0.weight", "0.bias"]
    with pytest.raises(InputError, match="at least one layer"):
        seq[3:]


@pytest.mark.parametrize("shared", ["ReLU", "Dense"])
def test_one_layer_object_in_two_places_of_a_sequential_is_refused_by_backward(shared):
    """A layer's forward keeps its last pass's values only, so with one object in two places
    backward was wrong for the other place, silently (the first weight's gradient was off by
    more than itself). backward refuses it by name; forward, which is right, is not refused;
    once each place has its own, the gradients are right."""
    rng = np.random.default_rng(6)
    r, d = ReLU(), Dense(4, 4, dtype=np.float64, rng=rng)
    if shared == "ReLU":
        seq = Sequential(Dense(3, 4, dtype=np.float64, rng=rng), r, d, r, Dense(4, 2, dtype=np.float64, rng=rng))
        (a, b), fix = (1, 3), (3, ReLU())
    else:
        seq = Sequential(Dense(3, 4, dtype=np.float64, rng=rng), ReLU(), d, ReLU(), d)
        (a, b), fix = (2, 4), (4, Dense(4, 4, dtype=np.float64, rng=rng))
    x = rng.standard_normal((5, 3))
    y = seq.forward(x)
    with pytest.raises(InputError, match=rf"Sequential layers {a} and {b} are one {shared} object.*"
                                         rf"give each place a {shared} of its own"):
        seq.backward(np.ones_like(y))
    nested = Sequential(Dense(2, 3, dtype=np.float64, rng=rng), seq)
    with pytest.raises(InputError, match=rf"layers 1\.{a} and 1\.{b} are one"):
        nested.backward(np.ones_like(nested.forward(x[:, :2])))
    if shared == "ReLU":                                # its own object in each place: the same output
        alone = Sequential(*seq.layers[:3], ReLU(), seq[4])
        np.testing.assert_array_equal(seq.forward(x), alone.forward(x))
    seq[fix[0]] = fix[1]
    check_op(seq, x)


class _Slipped(ReLU):
    """A student's layer with a slip: ``backward`` forgets its ``return``; ``forward`` leaks float64."""

    def __init__(self, slip):
        super().__init__()
        self.slip = slip

    def forward(self, x):
        y = super().forward(x)
        return y.astype(np.float64) if self.slip == "forward" else y

    def backward(self, grad_out):
        g = super().backward(grad_out)
        return None if self.slip == "backward" else g


@pytest.mark.parametrize("slip", ["forward", "backward"])
def test_an_error_in_a_sequential_names_the_layer_it_came_from_and_the_one_that_fed_it(slip):
    """A slip in a student's layer surfaces in the next layer (a Dense), whose message cannot say
    which Dense, nor whose output it was given. The Sequential's note says both: the encoder's
    and the decoder's Dense told apart by their widths."""
    seq = Sequential(Dense(6, 5, rng=0), _Slipped(slip), Dense(5, 3, rng=1))
    x = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    with pytest.raises((InputError, InputTypeError)) as info:
        y = seq.forward(x)
        seq.backward(np.ones_like(y))
    which, fed = ("2, Dense(5 -> 3, dtype=float32)", "x") if slip == "forward" else \
        ("0, Dense(6 -> 5, dtype=float32)", "grad_out")
    assert info.value.__notes__ == [f"in Sequential layer {which}: its {fed} is what layer 1, _Slipped(), "
                                    f"returned from its {slip}"]


def test_a_layer_whose_extra_repr_fails_does_not_hide_the_error_the_note_is_for():
    class Odd(ReLU):
        def extra_repr(self):
            return self.slope                   # a student's slip: no such setting

    seq = Sequential(Odd(), Dense(7, 5, rng=0))
    with pytest.raises(InputError, match=r"Dense\.forward: x must have shape") as info:
        seq.forward(np.zeros((4, 6), np.float32))
    assert info.value.__notes__ == ["in Sequential layer 1, Dense(7 -> 5, dtype=float32): its x is what layer 0, "
                                    "Odd, returned from its forward"]


def test_an_error_that_is_not_about_a_layers_input_names_the_layer_only():
    """backward before forward is the layer's own state, not what the layer after it returned."""
    seq = Sequential(Dense(6, 5, rng=0), ReLU(), Dense(5, 3, rng=1))
    seq[2].forward(np.zeros((4, 5), np.float32))        # the last layer has run; the first two have not
    with pytest.raises(StateError) as info:
        seq.backward(np.ones((4, 3), np.float32))
    assert info.value.__notes__ == ["in Sequential layer 1, ReLU()"]


def test_running_out_of_memory_in_a_sequential_gets_no_note():
    """The machine's limit, not a layer's slip: the command line's "error: out of memory" stays one line."""
    class Hungry(ReLU):
        def forward(self, x):
            raise MemoryError()

    with pytest.raises(MemoryError) as info:
        Sequential(Dense(6, 5, rng=0), Hungry()).forward(np.zeros((4, 6), np.float32))
    assert not getattr(info.value, "__notes__", None)


def test_an_error_from_the_input_of_a_sequential_names_the_layer_alone():
    """The first layer's x (and the last layer's grad_out) came from the caller: the note names
    the layer only, and a Sequential inside another gets a note from each."""
    inner = Sequential(Dense(6, 5, rng=0), ReLU())
    outer = Sequential(inner, Dense(5, 3, rng=1))
    with pytest.raises(InputError) as info:
        outer.forward(np.zeros((4, 7), np.float32))
    assert info.value.__notes__ == ["in Sequential layer 0, Dense(6 -> 5, dtype=float32)",
                                    "in Sequential layer 0, Sequential(Dense(6 -> 5, dtype=float32), ReLU())"]


def test_replacing_a_layer_replaces_its_parameters_too():
    """``model.encoder[0] = Dense(...)``: what runs is what trains and what is saved."""
    seq = Sequential(Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1))
    new = Dense(3, 4, rng=5)
    seq[0] = new
    assert seq[0] is new and seq.layers[0] is new
    assert seq.parameters()[:2] == [new.weight, new.bias]
    np.testing.assert_array_equal(seq.state_dict()["0.weight"], new.weight.data)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    seq.forward(x)
    seq.backward(np.ones((2, 2), np.float32))
    assert new.weight.grad.any()                  # the layer that ran got the gradient
    seq[-1] = Dense(4, 2, rng=2)                  # negative indices, as in a list
    assert seq.parameters()[2] is seq[2].weight
    with pytest.raises(InputTypeError, match="layer 1 must be a Module"):
        seq[1] = "relu"
    with pytest.raises(InputTypeError, match=r"layer 1 must be a Module, got the class ReLU \(make one: ReLU\("):
        seq[1] = ReLU                             # the class, not one made of it
    with pytest.raises(InputTypeError, match=r"layer 1 must be a Module, got the class ReLU"):
        Sequential(Dense(3, 4), ReLU)
    with pytest.raises(IndexError):
        seq[3] = ReLU()
    with pytest.raises(InputTypeError, match="one layer at a time"):
        seq[0:1] = Dense(3, 4)
    assert len(seq) == 3 and [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError):                # not a second list that could drift apart
        seq.layers[0] = new


def test_sequential_fuse_argument_is_deprecated_and_ignored():
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((6, 5)), rng.standard_normal((6, 4))

    def layers():
        return Dense(5, 7, dtype=np.float64, rng=1), ReLU(), Dense(7, 4, dtype=np.float64, rng=2)

    with pytest.warns(DeprecationWarning, match="fuse"):
        old = Sequential(*layers(), fuse=True)
    new = Sequential(*layers())
    for seq in (old, new):
        seq.forward(x)
        seq.backward(g)
    np.testing.assert_array_equal(old.forward(x), new.forward(x))
    np.testing.assert_array_equal(old.backward(g), new.backward(g))
    for p, q in zip(old.parameters(), new.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


@pytest.mark.parametrize("make", [lambda: Dense(3, 2, dtype=np.float32, rng=0), ReLU, Sigmoid],
                         ids=["Dense", "ReLU", "Sigmoid"])
def test_backward_refuses_a_gradient_of_another_dtype(make):
    """A float64 gradient into a float32 layer would be narrowed silently in weight.grad += ..."""
    layer = make()
    y = layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(InputTypeError, match=r"backward: grad_out has dtype float64.*float32"):
        layer.backward(np.ones(y.shape))
    assert layer.backward(np.ones(y.shape, np.float32)).dtype == np.float32

