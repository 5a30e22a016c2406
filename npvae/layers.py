r"""Layers: Dense, ReLU, Sigmoid and Sequential, each a forward/backward pair.

Shapes: ``B`` is the batch size, ``I`` and ``O`` a Dense layer's input and output
widths, ``N`` the width of what an elementwise layer (ReLU, Sigmoid) is given.
Elementwise layers keep their input's shape and dtype. The derivations are written
out end to end, with a worked example, in ``docs/derivation.md``.
"""
import math
import operator
import warnings

import numpy as np

from .errors import InputError, InputTypeError
from .module import Module, Parameter, given_as_text, one_place_each
from .validate import (FLOAT_DTYPES, check_dtype, check_grad, check_positive_int, check_rng, describe_dtype,
                       refuse_array_subclass, warn_backend_argument)


def check_input(x, owner, n_features=None, dtype=None):
    """``x`` is a 2-D float array (B, n_features) of ``dtype``; else an error naming ``owner``."""
    if not isinstance(x, np.ndarray):
        raise InputTypeError(f"{owner}: x must be a numpy array, got {type(x).__name__}")
    refuse_array_subclass(x, "x", owner)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"(batch, {n_features})" if n_features is not None else "2-D (batch, features)"
        raise InputError(f"{owner}: x must have shape {want}, got {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise InputTypeError(f"{owner}: x has dtype {x.dtype}, the layer's dtype is {dtype}; "
                             f"convert with x.astype(np.{dtype})")
    if x.dtype not in FLOAT_DTYPES:     # float16 and longdouble too: not what npvae computes in
        raise InputTypeError(f"{owner}: x must be float32 or float64, got {describe_dtype(x.dtype)}")


class Dense(Module):
    r"""Fully connected layer :math:`y = x W + b`.

    Parameters
    ----------
    in_features, out_features : int
        Widths ``I`` and ``O``. ``weight`` has shape ``(I, O)``, so the forward pass
        is one matrix product ``x @ W``; PyTorch's ``Linear`` stores the transpose.
    dtype : float32 or float64
    rng : np.random.Generator, int or None
        Draws the initial values as PyTorch's ``Linear`` does: weights and biases
        uniform in :math:`\pm 1/\sqrt{I}`.
    backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error)
    """

    def __init__(self, in_features, out_features, *, dtype=np.float32, rng=None, backend=None):
        super().__init__()
        if backend is not None:
            warn_backend_argument("Dense(backend=...)", backend)
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.dtype = check_dtype(dtype)
        rng = check_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        # drawn in float64 and rounded once, so float32 and float64 models start alike
        self.weight = Parameter(rng.uniform(-bound, bound, (self.in_features, self.out_features))
                                .astype(self.dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, self.out_features).astype(self.dtype))

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}, dtype={self.dtype}"

    def forward(self, x):
        """``y = x W + b``, one row per sample. Keeps ``x`` for backward (``dW`` needs it).

        Parameters
        ----------
        x : ndarray (B, I), the layer's dtype

        Returns
        -------
        y : ndarray (B, O)
        """
        check_input(x, "Dense.forward", self.in_features, self.dtype)
        self.keep(x=x)                                      # (B, I): dW needs it
        return x @ self.weight.data + self.bias.data        # (B, O)

    def backward(self, grad_out):
        r"""Add :math:`\partial L/\partial W` and :math:`\partial L/\partial b` into the
        gradients; return :math:`\partial L/\partial x`.

        With :math:`y_{no} = \sum_i x_{ni} W_{io} + b_o` (:math:`n` the sample, :math:`b` the
        bias) and the upstream gradient :math:`g = \partial L/\partial y` (B, O), the chain
        rule sums over every output an entry touches:

        .. math::

            \frac{\partial L}{\partial W_{io}} = \sum_n x_{ni}\, g_{no}, \qquad
            \frac{\partial L}{\partial b_o} = \sum_n g_{no}, \qquad
            \frac{\partial L}{\partial x_{ni}} = \sum_o g_{no}\, W_{io},

        that is ``dW = x.T @ g`` (I, O), ``db = g.sum(0)`` (O,), ``dx = g @ W.T`` (B, I).
        The transposes are where the index being summed over sits: the sample index
        :math:`n` for ``dW``, the output index :math:`o` for ``dx``.

        Parameters
        ----------
        grad_out : ndarray (B, O)

        Returns
        -------
        ndarray (B, I)
        """
        x = self.saved("x")
        check_grad(grad_out, (x.shape[0], self.out_features), self.dtype, "Dense.backward")
        self.weight.grad += x.T @ grad_out                  # (I, O) = (I, B) @ (B, O)
        self.bias.grad += grad_out.sum(axis=0)              # (O,)
        return grad_out @ self.weight.data.T                # (B, I) = (B, O) @ (O, I)


class ReLU(Module):
    r"""Rectified linear unit :math:`y = \max(x, 0)`, elementwise."""

    def forward(self, x):
        """``y = max(x, 0)``. Keeps ``y`` for backward (its sign is all backward needs).

        Parameters
        ----------
        x : ndarray (B, N), float

        Returns
        -------
        y : ndarray (B, N)
        """
        check_input(x, "ReLU.forward")
        y = np.maximum(x, 0)                                # (B, N)
        self.keep(y=y)
        return y

    def backward(self, grad_out):
        r""":math:`\partial L/\partial x = g \odot [y > 0]` (B, N).

        :math:`\max(x, 0)` has slope 1 for :math:`x > 0` and 0 for :math:`x < 0` (at 0
        we take 0). Since :math:`y > 0` exactly when :math:`x > 0`, the output is all
        backward needs. The result is a new array: ``grad_out`` is not modified.

        Parameters
        ----------
        grad_out : ndarray (B, N)

        Returns
        -------
        ndarray (B, N)
        """
        y = self.saved("y")
        check_grad(grad_out, y.shape, y.dtype, "ReLU.backward")
        return grad_out * (y > 0)


class Sigmoid(Module):
    r"""Logistic sigmoid :math:`y = 1/(1 + e^{-x})`, elementwise and overflow-free."""

    def forward(self, x):
        r"""``y = sigmoid(x)`` (B, N), computed from :math:`e = e^{-|x|} \le 1`.

        :math:`y = 1/(1+e)` for :math:`x \ge 0` and :math:`y = e/(1+e)` for
        :math:`x < 0`: ``exp`` never overflows and small outputs keep full relative
        precision down to the smallest normal float (from logits of about -87 in float32,
        -708 in float64, the output is subnormal, then 0). Keeps ``y`` for backward.

        Parameters
        ----------
        x : ndarray (B, N), float

        Returns
        -------
        y : ndarray (B, N), in [0, 1] (exactly 0 or 1 once the float rounds: 1 from x = 24 ln 2 ~ 16.64 in float32)
        """
        check_input(x, "Sigmoid.forward")
        y = sigmoid(x)
        self.keep(y=y)
        return y

    def backward(self, grad_out):
        r""":math:`\partial L/\partial x = g \odot y (1 - y)` (B, N).

        From :math:`y = (1+e^{-x})^{-1}`:
        :math:`dy/dx = e^{-x}(1+e^{-x})^{-2} = y (1 - y)`, taken at the *output* ``y``
        (the forward value), not at the input ``x``.

        Parameters
        ----------
        grad_out : ndarray (B, N)

        Returns
        -------
        ndarray (B, N)
        """
        y = self.saved("y")
        check_grad(grad_out, y.shape, y.dtype, "Sigmoid.backward")
        return grad_out * y * (1 - y)


def sigmoid(x):
    """The logistic sigmoid, stable for any ``x`` (see :meth:`Sigmoid.forward`); keeps the dtype."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _checked_layer(i, layer):
    if not isinstance(layer, Module):
        raise InputTypeError(f"Sequential layer {i} must be a Module, got {given_as_text(layer)}")
    return layer


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    Sub-modules are named ``"0"``, ``"1"``, ... as in PyTorch, so parameter names
    read ``encoder.0.weight``. ``seq[i]`` is layer i; ``seq[i] = layer`` replaces it (its
    parameters then replace the old ones in ``parameters()`` and ``state_dict()``).
    ``seq[a:b]`` is a Sequential of those layers, the same objects (as in PyTorch).

    Parameters
    ----------
    *layers : Module
        At least one, in the order forward runs them.
    fuse : deprecated, ignored (warns)
    """

    def __init__(self, *layers, fuse=None):
        super().__init__()
        if fuse is not None:
            warnings.warn("Sequential(fuse=...) is deprecated and ignored: the reference runs every "
                          "layer on its own; fusing is the fast path's business (npvae.fast)",
                          DeprecationWarning, stacklevel=2)
        if not layers:
            raise InputError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            setattr(self, str(i), _checked_layer(i, layer))

    @property
    def layers(self):
        """The layers, in order: a tuple (replace one with ``seq[i] = layer``)."""
        return tuple(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[self._position(i)]

    def __setitem__(self, i, layer):
        if isinstance(i, slice):
            raise InputTypeError(f"Sequential: replace one layer at a time, seq[i] = layer; got index {i!r}")
        setattr(self, str(self._position(i)), _checked_layer(i, layer))

    def _position(self, i):
        """``i`` (what a list takes as an index, but a bool) as a position from 0, negative ones
        from the end; an IndexError past the end (what ends a loop over ``seq[i]``)."""
        n = len(self)
        try:
            position = None if isinstance(i, bool) else operator.index(i)     # NumPy's integers too
        except TypeError:
            position = None
        if position is None:
            raise InputTypeError(f"Sequential: a layer's index must be an int (or a slice), got {i!r}")
        if not -n <= position < n:
            layers = "1 layer (0)" if n == 1 else f"{n} layers (0-{n - 1})"
            raise IndexError(f"Sequential index {i} is out of range: it has {layers}")
        return position % n

    def __len__(self):
        return len(self.layers)

    def __delattr__(self, name):
        if name in self._modules:       # a gap would renumber nothing, and seq[i] = layer would append
            raise InputTypeError(f"Sequential: layer {name} cannot be deleted; replace it with seq[{name}] = "
                                 f"layer, or build a new Sequential")
        super().__delattr__(name)

    def __delitem__(self, i):           # del seq[i]: as delattr(seq, "i"), seq[-1] as seq[len - 1]
        n = len(self.layers)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise InputTypeError(f"Sequential: layers cannot be deleted (got del seq[{i!r}]); build a new "
                                 f"Sequential of the layers to keep")
        delattr(self, str(i + n if i < 0 else i))

    def forward(self, x):
        """Each layer's forward in turn: ``x`` (B, I) -> the last layer's output (B, O).

        An error gets a note naming the layer, and the layer whose output it was given."""
        i = 0
        try:
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
        except Exception as e:
            self._explain(e, i, "x", i - 1, "forward")
            raise
        return x

    def backward(self, grad_out):
        """Each layer's backward in reverse order, the chain rule one link at a time:
        ``grad_out`` (B, O) -> the gradient with respect to the input (B, I).

        One layer object in two places is refused: its forward kept its last pass's values
        only, so backward would be wrong for the other place (a reused ``ReLU()``, say). An error
        gets a note naming the layer, and the layer whose gradient it was given."""
        one_place_each(self.named_modules(), "Sequential layers {} and {}")
        layers = self.layers
        g, i = grad_out, len(layers) - 1
        try:
            for i in reversed(range(len(layers))):
                g = layers[i].backward(g)
        except Exception as e:      # a student's slip in layer i + 1 surfaces in layer i: name both
            self._explain(e, i, "grad_out", i + 1, "backward")
            raise
        return g

    def _explain(self, error, i, arg, source, method):
        """Note on ``error``, raised in layer i, which layer that is; for an error about its input,
        whose output that ``arg`` was (layer ``source``, if one). Not on running out of memory:
        the machine's, not a layer's."""
        if isinstance(error, MemoryError):
            return
        note = f"in Sequential layer {i}, {_named(self.layers[i])}"
        if isinstance(error, (InputError, InputTypeError)) and 0 <= source < len(self):
            note += f": its {arg} is what layer {source}, {_named(self.layers[source])}, returned from its {method}"
        try:
            error.add_note(note)
        except Exception:       # an exception that takes no notes (a frozen one): raised as it is
            pass


def _named(layer):
    """A layer as a note names it, ``Dense(784 -> 400, dtype=float32)``; a Sequential by its layers."""
    if isinstance(layer, Sequential):
        return f"Sequential({', '.join(_named(inner) for inner in layer.layers)})"
    try:
        return f"{type(layer).__name__}({layer.extra_repr()})"
    except Exception:           # its own extra_repr failing: the note must not hide the error it explains
        return type(layer).__name__
