"""Layers: Dense, ReLU, Sigmoid and Sequential, each a forward/backward pair.

Shapes: ``B`` is the batch size, ``I`` and ``O`` a Dense layer's input and
output widths. Elementwise layers keep their input's shape and dtype.
"""
import math

import numpy as np

from .errors import InputError, InputTypeError, StateError
from .memory import order_of
from .module import Module, Parameter
from .validate import check_dtype, check_positive_int, check_rng


# Dense.backward multiplies only the gradient's nonzero columns (dead ReLU units
# give all-zero ones) when at most this fraction of them is nonzero; above it, the
# gather and scatter around the smaller GEMM cost more than they save.
LIVE_FRACTION_TO_SKIP = 0.75


def _check_2d(x, name, n_features=None, dtype=None, owner=""):
    if not isinstance(x, np.ndarray):
        raise InputTypeError(f"{owner}{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"(batch, {n_features})" if n_features is not None else "2-D (batch, features)"
        raise InputError(f"{owner}{name} must have shape {want}, got {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise InputTypeError(f"{owner}{name} has dtype {x.dtype}, the layer's dtype is {dtype}; "
                             f"convert with {name}.astype(np.{dtype})")
    if dtype is None and x.dtype.kind != "f":
        raise InputTypeError(f"{owner}{name} must be float32 or float64, got {x.dtype}")


def _check_units(units, n, name):
    """``units`` as an increasing intp array of unit indices in [0, n), or a clear error."""
    a = np.asarray(units)
    if a.ndim != 1 or a.dtype.kind not in "iu" or len(a) == 0:
        raise InputTypeError(f"{name} must be a non-empty 1-D array of unit indices, got "
                             f"{a.dtype} of shape {a.shape}")
    if a[0] < 0 or a[-1] >= n or (len(a) > 1 and not (np.diff(a) > 0).all()):
        raise InputError(f"{name} must be increasing unit indices in [0, {n}), got {a.tolist()}")
    return a if a.dtype == np.intp else a.astype(np.intp)


def _is_prefix(units):
    """True if the (checked, increasing) ``units`` are 0, 1, ..., n-1: slices, not gathers."""
    return units[-1] == len(units) - 1


class Dense(Module):
    r"""Fully connected layer :math:`y = x W + b`.

    Parameters
    ----------
    in_features, out_features : int
        Widths ``I`` and ``O``. ``weight`` has shape ``(I, O)`` (so the forward
        pass is one GEMM ``x @ W``); PyTorch's ``Linear`` stores its transpose.
        The array is column-major, i.e. the same memory as PyTorch's ``(O, I)``
        weight: BLAS is fastest this way for this model's products.
    dtype : float32 or float64
    rng : np.random.Generator, int or None
        Draws the initial values like PyTorch's ``Linear``: weights and biases
        uniform in :math:`\pm 1/\sqrt{I}`.
    backend : "numba", "numpy" or None ($NPVAE_BACKEND, else numba)

    Attributes
    ----------
    units : int array or None
        With ``relu=True`` only: compute just these output units (increasing);
        every other unit is known to be 0 after the ReLU on this data, so the
        output is ``(B, len(units))``, its column ``k`` being unit ``units[k]``,
        and the next layer takes it with ``in_units=units``. ``fit`` sets it to
        the units not proven dead on the training set, moved to the front so
        that they are ``0 .. n-1`` and W is sliced, not gathered
        (:mod:`npvae.dead_units`), and clears it before any evaluation.
    live : bool array (O,) or None
        If set, forward marks the units that fired (output > 0) for some sample.
    """

    def __init__(self, in_features, out_features, *, dtype=np.float32, rng=None, backend=None):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.dtype = check_dtype(dtype)
        rng = check_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        # draw in float64 and round once, so float32 and float64 models start alike
        w = rng.uniform(-bound, bound, (self.in_features, self.out_features))
        self.weight = Parameter(np.asfortranarray(w, dtype=self.dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, self.out_features).astype(self.dtype))
        if backend is not None:
            self.set_backend(backend)

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}, dtype={self.dtype}"

    @property
    def units(self):
        return self.__dict__.get("_unit_subset")

    @units.setter
    def units(self, value):
        object.__setattr__(self, "_unit_subset", None if value is None else
                           _check_units(value, self.out_features, "Dense.units"))

    @property
    def live(self):
        return self.__dict__.get("_live_flags")

    @live.setter
    def live(self, value):
        if value is not None and not (isinstance(value, np.ndarray) and value.dtype == bool
                                      and value.shape == (self.out_features,)):
            got = (value.dtype, value.shape) if isinstance(value, np.ndarray) else type(value).__name__
            raise InputTypeError(f"Dense.live must be a bool array of shape ({self.out_features},) "
                                 f"that forward updates in place, or None; got {got}")
        object.__setattr__(self, "_live_flags", value)

    def forward(self, x, relu=False, in_units=None):
        """``y = x W + b`` (B, O); with ``relu=True``, ``max(x W + b, 0)`` in the same pass.

        ``relu=True`` is how :class:`Sequential` fuses a Dense and the ReLU after it.
        ``in_units`` (increasing): ``x`` holds only these input features, the others
        being 0, i.e. ``x`` is the previous layer's output over its ``units``; the
        product then uses just those rows of ``W``.
        """
        units = self.units
        if units is not None and (not relu or in_units is not None):
            raise StateError("Dense.units skips units that are 0 after a ReLU: it needs relu=True "
                             "and a full input (in_units=None)")
        if in_units is not None and in_units is not self.__dict__.get("_in_units_checked"):
            in_units = _check_units(in_units, self.in_features, "Dense.forward: in_units")
            object.__setattr__(self, "_in_units_checked", in_units)   # the same array every step
        n_in = self.in_features if in_units is None else len(in_units)
        _check_2d(x, "x", n_in, self.dtype, "Dense.forward: ")
        W, b = self.weight.data, self.bias.data
        if units is not None and _is_prefix(units):            # the first n columns: views, no copy
            W, b = W[:, :len(units)], b[:len(units)]
        elif in_units is not None and _is_prefix(in_units):    # the first n rows: a view BLAS reads as is
            W = W[:len(in_units)]
        elif units is not None:                                # the columns of W, b for units
            W = self._buffer("W_units", (self.in_features, len(units)), self.dtype, "F", self.weight.shape)
            self.k.gather_columns(self.weight.data, units, W)  # (I, n)
            b = np.take(self.bias.data, units, out=self._buffer("b_units", (len(units),), self.dtype,
                                                                capacity=self.bias.shape))
        elif in_units is not None:                             # the rows of W for in_units
            Wt = self._buffer("W_in_units", (self.out_features, n_in), self.dtype, "C", self.weight.shape[::-1])
            self.k.gather_columns(self.weight.data.T, in_units, Wt)
            W = Wt.T                                           # (n, O), column-major
        y = self._buffer("y", (x.shape[0], W.shape[1]), self.dtype, order_of(x),
                         None if units is None else (x.shape[0], self.out_features))
        np.matmul(x, W, out=y)                                 # (B, O), BLAS
        if relu:
            self.k.bias_relu_forward(y, b)
        else:
            self.k.add_bias(y, b)
        if self.live is not None:
            self.k.mark_live_columns(y, self._unit_ids(units), self.live)
        self._save(_x=x, _y=y, _relu=relu, _W=W, _units=units, _in_units=in_units)
        return y

    def _unit_ids(self, units):
        """The output unit of each column of ``y``: ``units``, or all of them."""
        if units is not None:
            return units
        ids = self.__dict__.get("_all_units")
        if ids is None or len(ids) != self.out_features:
            ids = np.arange(self.out_features)
            object.__setattr__(self, "_all_units", ids)
        return ids

    def backward(self, grad_out, input_grad=True):
        r"""Accumulate :math:`\partial L/\partial W, \partial L/\partial b`; return :math:`\partial L/\partial x`.

        With :math:`y_{bo} = \sum_i x_{bi} W_{io} + b_o` and upstream gradient
        :math:`g = \partial L / \partial y` (B, O), the chain rule gives

        .. math::

            \frac{\partial L}{\partial W_{io}} = \sum_b x_{bi} g_{bo}, \quad
            \frac{\partial L}{\partial b_o} = \sum_b g_{bo}, \quad
            \frac{\partial L}{\partial x_{bi}} = \sum_o g_{bo} W_{io},

        i.e. ``dW = x.T @ g``, ``db = g.sum(0)``, ``dx = g @ W.T``. If forward ran
        with ``relu=True``, ``g`` is first masked by :math:`y > 0` (ReLU's backward).

        Skipped units (forward's ``units`` or ``in_units``) have exactly zero
        gradient columns (rows) of ``dW`` and ``db``; ``dx`` covers the input
        features forward got.

        Parameters
        ----------
        grad_out : ndarray (B, O), or (B, len(units))
        input_grad : bool
            False skips the ``dx`` GEMM (the first layer needs no gradient for
            the data) and returns None.
        """
        x, y, relu, W, units, in_units = self._cached("_x", "_y", "_relu", "_W", "_units", "_in_units")
        self._check_grad_out(grad_out, y.shape, "Dense.backward: grad_out")
        gW, beta_w = self.weight.grad_target()
        gb, beta_b = self.bias.grad_target()
        g = grad_out
        n_out = y.shape[1]
        if relu:
            full = None if units is None else (y.shape[0], self.out_features)   # varying widths: one array
            g = self._buffer("g", y.shape, self.dtype, order_of(y), full)
            live = self._buffer("live", (self.out_features,), np.intp)
            # g = grad_out * (y > 0); live[:n_live] = the columns of g that are not all 0
            if units is None or _is_prefix(units):                 # db: the first n_out entries of gb
                n_live = self.k.relu_bias_backward(grad_out, y, g, gb[:n_out], beta_b, live)
                if beta_b == 0:
                    gb[n_out:] = 0                                 # skipped units: no gradient
            else:
                db = self._buffer("db_units", (n_out,), self.dtype, capacity=gb.shape)
                n_live = self.k.relu_bias_backward(grad_out, y, g, db, 0.0, live)
                self.k.scatter_columns(db[None, :], units, gb[None, :], beta_b)   # (O,): 0 off units
        else:
            self.k.bias_grad(grad_out, gb, beta_b)                 # (O,)
            live, n_live = None, n_out                             # no ReLU: no dead units to skip
        if units is not None:
            self._weight_grad_live_columns(x, g, live, n_live, gW, beta_w, units)
        elif in_units is not None and _is_prefix(in_units):
            n = len(in_units)
            if beta_w == 0:
                np.matmul(x.T, g, out=gW[:n])                       # (n, O) = (n, B) @ (B, O)
                gW[n:] = 0                                          # skipped inputs: no gradient
            else:
                gW[:n] += x.T @ g
        elif in_units is not None:
            dW = self._buffer("dW_in_units", (len(in_units), self.out_features), self.dtype, "F", gW.shape)
            np.matmul(x.T, g, out=dW)                               # (n, O) = (n, B) @ (B, O)
            self.k.scatter_columns(dW.T, in_units, gW.T, beta_w)   # rows in_units of (I, O); 0 elsewhere
        elif n_live <= LIVE_FRACTION_TO_SKIP * n_out:
            self._weight_grad_live_columns(x, g, live, n_live, gW, beta_w)
        elif beta_w == 0:
            np.matmul(x.T, g, out=gW)                               # (I, O) = (I, B) @ (B, O)
        else:
            gW += x.T @ g
        if not input_grad:
            return None
        dx = self._buffer("dx", x.shape, self.dtype, order_of(y),
                          None if in_units is None else (x.shape[0], self.in_features))
        np.matmul(g, W.T, out=dx)                                   # (B, I) = (B, O) @ (O, I)
        return dx

    def _weight_grad_live_columns(self, x, g, live, n, gW, beta, units=None):
        """``dW = x.T @ g`` when only the ``n`` columns ``live[:n]`` of ``g`` are nonzero.

        A ReLU unit that is off for the whole batch (a *dead* unit: about half of
        the encoder's 400 once the tutorial model trains) passes back an all-zero
        column of ``g``, so its column of ``dW`` is exactly 0. Multiplying only the
        live columns and writing zeros for the rest gives the same ``dW`` (to
        round-off: BLAS blocks the smaller product differently) for about
        ``n / O`` of the GEMM's cost. A fresh gradient (after ``zero_grad``) is
        not even written out: the weight keeps the ``n`` columns, which Adam
        reads directly (:meth:`~npvae.module.Parameter.set_column_grad`).
        With ``units`` (forward computed only those), column ``k`` of ``g`` is
        unit ``units[k]``.
        """
        if n == g.shape[1] and g.flags.f_contiguous:
            g_live = g                   # every column live (as when skipping retired units, mostly)
        else:   # column-major scratch, so that the first n columns are one contiguous block
            g_live = self._buffer("g_live", (g.shape[0], self.out_features), self.dtype, "F")[:, :n]  # (B, n)
            self.k.gather_columns(g, live, g_live)
        dW_live = self._buffer("dW_live", gW.shape, self.dtype, "F")[:, :n]   # (I, n)
        np.matmul(x.T, g_live, out=dW_live)
        cols = live[:n]
        if units is not None and not _is_prefix(units):   # g's columns are units[0], units[1], ...
            cols = np.take(units, cols, out=self._buffer("live_units", (self.out_features,), np.intp)[:n])
        if beta == 0:
            # hand over the columns: Adam reads them as they are, and the full
            # (I, O) array is written only if someone reads weight.grad
            self.weight.set_column_grad(dW_live, cols, self.k.scatter_columns)
        else:
            self.k.scatter_columns(dW_live, cols, gW, beta)              # (I, O) += the columns


class ReLU(Module):
    r"""Rectified linear unit :math:`y = \max(x, 0)`, elementwise."""

    def forward(self, x):
        _check_2d(x, "x", owner="ReLU.forward: ")
        y = self._buffer("y", x.shape, x.dtype, order_of(x))
        self.k.relu_forward(x, y)
        self._save(_y=y)
        return y

    def backward(self, grad_out, input_grad=True):
        r""":math:`\partial L/\partial x = g \cdot [y > 0]`.

        The derivative of :math:`\max(x, 0)` is 1 for :math:`x > 0` and 0 for
        :math:`x < 0` (at 0 we take 0). :math:`y > 0` iff :math:`x > 0`, so the
        output is all backward needs. The result goes to a new array: ``grad_out``
        is not modified (in a VAE, :math:`\mu`'s gradient has two sources).
        """
        y = self._cached("_y")
        self._check_grad_out(grad_out, y.shape, "ReLU.backward: grad_out")
        dx = self._buffer("dx", y.shape, y.dtype, order_of(y))
        self.k.relu_backward(grad_out, y, dx)                      # (B, N)
        return dx


class Sigmoid(Module):
    r"""Logistic sigmoid :math:`y = 1/(1 + e^{-x})`, elementwise and overflow-free.

    Computed from :math:`e = e^{-|x|} \le 1`: :math:`y = 1/(1+e)` for
    :math:`x \ge 0` and :math:`y = e/(1+e)` for :math:`x < 0`, so ``exp`` never
    overflows (no warning at :math:`|x| = 100` in float32) and small outputs
    keep full relative precision.
    """

    def forward(self, x):
        _check_2d(x, "x", owner="Sigmoid.forward: ")
        y = self._buffer("y", x.shape, x.dtype, order_of(x))
        self.k.sigmoid_forward(x, y)
        self._save(_y=y)
        return y

    def backward(self, grad_out, input_grad=True):
        r""":math:`\partial L/\partial x = g \, y (1 - y)`.

        From :math:`y = (1+e^{-x})^{-1}`:
        :math:`dy/dx = e^{-x}(1+e^{-x})^{-2} = y \cdot (1 - y)`, so the cached
        output is all backward needs.
        """
        y = self._cached("_y")
        self._check_grad_out(grad_out, y.shape, "Sigmoid.backward: grad_out")
        dx = self._buffer("dx", y.shape, y.dtype, order_of(y))
        self.k.sigmoid_backward(grad_out, y, dx)                   # (B, N)
        return dx


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    A Dense followed directly by a ReLU is run as one fused step (bias, ReLU
    and, going back, the ReLU mask and bias gradient in one pass over the
    output): same numbers, fewer passes. ``fuse=False`` runs every layer alone.
    Sub-modules are named ``"0"``, ``"1"``, ... as in PyTorch, so parameter
    names read ``encoder.0.weight``.
    """

    def __init__(self, *layers, fuse=True):
        super().__init__()
        if not layers:
            raise InputError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise InputTypeError(f"Sequential layer {i} must be a Module, got {type(layer).__name__}")
            setattr(self, str(i), layer)
        self.layers = list(layers)
        # the plan: (layer, fuse_relu) steps; a fused ReLU gets no step of its own
        self._plan, i = [], 0
        while i < len(layers):
            fused = fuse and isinstance(layers[i], Dense) and i + 1 < len(layers) and type(layers[i + 1]) is ReLU
            self._plan.append((layers[i], fused))
            i += 2 if fused else 1

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        units = None   # set when the previous layer computed only some of its units
        for n, (layer, fused) in enumerate(self._plan):
            if units is not None:
                if not isinstance(layer, Dense):
                    raise StateError(f"Sequential: layer {n - 1} computes only some units (Dense.units), "
                                     "so the next layer must be a Dense")
                x = layer.forward(x, relu=fused, in_units=units)
            else:
                x = layer.forward(x, relu=True) if fused else layer.forward(x)
            units = layer.units if fused else None
        if units is not None:
            raise StateError("Sequential: its last layer cannot skip units (Dense.units): "
                             "the output must be whole")
        self._save(_ran=True)
        return x

    def backward(self, grad_out, input_grad=True):
        """Each layer's backward in reverse order; ``input_grad`` goes to the first."""
        self._cached("_ran")
        g = grad_out
        for n, (layer, _) in enumerate(reversed(self._plan)):
            g = layer.backward(g, input_grad=input_grad or n < len(self._plan) - 1)
        return g
