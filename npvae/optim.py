r"""Optimizers: Adam and SGD with momentum, PyTorch's update rules, fused kernels.

Each ``step()`` runs a fused kernel that reads the gradient once and updates the
parameter and the optimizer's moments in the same pass. The kernels see flat 1-D
views of the arrays' memory (weights are column-major, see
:class:`npvae.layers.Dense`), which is all an elementwise update needs; since the
model packs its parameters and gradients back to back and the optimizer its
moments in the same layout (:mod:`npvae.memory`), one call covers all of them. On
the Numba path Adam also reads a weight gradient that a Dense layer left as its
nonzero columns (:meth:`npvae.module.Parameter.set_column_grad`) without writing
it out: that weight gets a call of its own.
"""
import copy

import numpy as np

from . import kernels
from .errors import InputError, InputTypeError, NpvaeError, StateDictError, StateError
from .memory import packed_zeros, span
from .module import Module, Parameter
from .validate import check_positive_float


def flat(a):
    """A 1-D view of a contiguous array's memory, in memory order (never a copy)."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise StateError(f"the optimizer needs contiguous parameter arrays, got strides {a.strides} "
                         f"for shape {a.shape}")
    return a.ravel(order="K")


def _flat_group(p, *state):
    """Flat views of a parameter, its gradient and its state arrays, all of one layout."""
    arrays = (p.data, p.grad, *state)
    if any(a.strides != p.data.strides or a.shape != p.data.shape for a in arrays):
        raise StateError(f"parameter {p} changed shape or memory layout after the optimizer was made "
                         "(assign into it with p.data[...] = new, do not replace p.data)")
    return [flat(a) for a in arrays]


def _column_major(p, m, v):
    """True if ``p`` and its moments ``m``, ``v`` are (R, N) column-major arrays of one shape."""
    return (p.ndim == 2 and p.flags.f_contiguous and m.flags.f_contiguous and v.flags.f_contiguous
            and p.shape == m.shape == v.shape)


def _check_params(params):
    if isinstance(params, Module):
        raise InputTypeError("params must be the model's parameters: use Adam(model.parameters()), "
                             f"not the {type(params).__name__} itself")
    try:
        params = list(params)
    except TypeError:
        raise InputTypeError(f"params must be a list of Parameters (model.parameters()), "
                             f"got {type(params).__name__}") from None
    if not params:
        raise InputError("the optimizer got an empty parameter list")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise InputTypeError(f"params[{i}] must be an npvae Parameter (use model.parameters()), "
                                 f"got {type(p).__name__}")
    return params


class Optimizer:
    """Shared parts: parameters, ``zero_grad``, per-parameter state, state dicts."""

    _state_names = ()

    def __init__(self, params, backend=None):
        self.params = _check_params(params)
        self.backend = kernels.resolve(backend)
        self.t = 0  # steps taken
        # all moments in one block (npvae.memory): the step streams through them on huge pages
        arrays = packed_zeros([p.data for _ in self._state_names for p in self.params])
        n = len(self.params)
        self.state = {name: arrays[i * n:(i + 1) * n] for i, name in enumerate(self._state_names)}
        self._views = [None] * len(self.params)
        self._held = {}  # parameter index -> (columns updated, step count when held)
        self._run_cache = None

    def _flat_views(self, i):
        """Flat views of parameter i's data, gradient and state arrays, made once and reused."""
        p = self.params[i]
        p.grad  # write out a stale gradient's zeros, or one held as columns
        cached = self._views[i]
        if cached is None or cached[0] is not p.data:
            cached = self._views[i] = (p.data, _flat_group(p, *(self.state[n][i] for n in self._state_names)))
        return cached[1]

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def at_rest(self, param):
        """Where a zero gradient leaves ``param`` unchanged, at this step and every later one.

        A bool array of the parameter's shape, or None if this optimizer cannot tell
        (then nothing is ever taken as at rest). :mod:`npvae.dead_units` relies on it.
        """
        return None

    def hold(self, param, n):
        """Until :meth:`release`, update only the first ``n`` columns of the column-major
        ``param``: the others have zero gradients and are :meth:`at_rest`, so a step
        would leave them where they are, except for state that decays on its own (Adam's
        moments), which :meth:`release` brings up to date.

        :mod:`npvae.dead_units` holds the weight columns of the units it skips.
        """
        i = self._index(param)
        if param.data.ndim != 2 or not param.data.flags.f_contiguous or not 0 < n <= param.shape[1]:
            raise InputError(f"hold needs a column-major 2-D parameter and 0 < n <= {param.shape[-1]}, "
                             f"got {param} and n={n}")
        self.release(param)
        self._held[i] = (n, self.t)

    def release(self, param):
        """Update every column again, after catching up with the steps the held ones skipped."""
        i = self._index(param)
        if i in self._held:
            n, t0 = self._held.pop(i)
            self._catch_up(i, n, self.t - t0)

    def _catch_up(self, i, n, steps):
        """Bring the state of columns ``n:`` of parameter i to ``steps`` zero-gradient steps later."""

    def _runs(self, skip=()):
        """Flat views (data, gradient, state...) for one update kernel call each, covering
        every parameter whose index is not in ``skip``: consecutive parameters whose arrays
        lie back to back as :func:`npvae.memory.packed_zeros` leaves them (the model packs
        its parameters and gradients, the optimizer its state) share one call.
        """
        for i, p in enumerate(self.params):
            if i not in skip:
                p.grad  # write out a stale gradient's zeros, or one held as columns
        owners = [(p.data, p._grad) for p in self.params]
        cached = self._run_cache
        if cached is None or cached[0] != skip or any(
                a is not b or g is not h for (a, g), (b, h) in zip(owners, cached[1])):
            cached = self._run_cache = (skip, owners, self._make_runs(skip))
        return cached[2]

    def _make_runs(self, skip):
        runs, group = [], []
        for i in range(len(self.params) + 1):
            if i < len(self.params) and i not in skip:
                group.append(i)
                continue
            if group:
                kinds = list(zip(*(self._flat_views(j) for j in group)))   # data, grad, state: the group's
                spans = [span(kind) for kind in kinds]
                same_layout = len({tuple(a.ctypes.data - kind[0].ctypes.data for a in kind) for kind in kinds}) == 1
                if all(s is not None for s in spans) and same_layout:
                    runs.append(spans)
                else:
                    runs.extend(self._flat_views(j) for j in group)
                group = []
        return runs

    def _arrays(self, i):
        """Parameter i's (data, gradient, state...) as flat views: the first columns only while held."""
        held = self._held.get(i)
        if held is None:
            return self._flat_views(i)
        p = self.params[i]
        return [flat(a[:, :held[0]]) for a in (p.data, p.grad, *(self.state[n][i] for n in self._state_names))]

    def _index(self, param):
        for i, p in enumerate(self.params):
            if p is param:
                return i
        raise InputError(f"{param} is not one of this optimizer's parameters")

    def __getstate__(self):
        # a copy must not keep flat views of the original's arrays: they are remade on use
        return dict(self.__dict__, _views=[None] * len(self.params), _run_cache=None)

    def _consts(self, cache, dtype, *values):
        """Scalars in the parameters' dtype (float32 kernels stay float32), made once per dtype a step."""
        c = cache.get(dtype)
        if c is None:
            c = cache[dtype] = tuple(map(dtype.type, (*values, np.finfo(dtype).tiny)))
        return c

    def state_dict(self):
        """Hyper-parameters, step count and moment arrays (copies)."""
        sd = {"t": np.array(self.t), **{k: np.array(v) for k, v in self.hyper().items()}}
        for n, arrays in self.state.items():
            for i, a in enumerate(arrays):
                sd[f"{n}.{i}"] = a.copy()
        return sd

    def load_state_dict(self, sd):
        """Restore what :meth:`state_dict` returned, checking every array's shape and dtype."""
        expected = {"t", *self.hyper(), *(f"{n}.{i}" for n in self.state for i in range(len(self.params)))}
        if not isinstance(sd, dict) or set(sd) != expected:
            got = sorted(sd) if isinstance(sd, dict) else type(sd).__name__
            raise StateDictError(f"{type(self).__name__} state dict must have keys {sorted(expected)}, got {got}")
        for n, arrays in self.state.items():
            for i, a in enumerate(arrays):
                v = sd[f"{n}.{i}"]
                if not isinstance(v, np.ndarray) or v.shape != a.shape or v.dtype != a.dtype:
                    got = (v.shape, v.dtype) if isinstance(v, np.ndarray) else type(v).__name__
                    raise StateDictError(f"optimizer state {n}.{i} must be {a.shape} {a.dtype}, got {got}")
        try:  # validate the hyper-parameters on a scratch copy before changing anything
            hyper = {k: float(np.asarray(sd[k])) for k in self.hyper()}
            t = int(np.asarray(sd["t"]))
            type(self).set_hyper(copy.copy(self), **hyper)
        except (NpvaeError, TypeError, ValueError) as e:
            raise StateDictError(f"{type(self).__name__} state dict has a bad hyper-parameter: {e}") from e
        if t < 0:
            raise StateDictError(f"{type(self).__name__} state dict has a negative step count t={t}")
        for n, arrays in self.state.items():
            for i, a in enumerate(arrays):
                a[...] = sd[f"{n}.{i}"]
        self.t = t
        self.set_hyper(**hyper)
        return self


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with PyTorch's defaults and update rule.

    For step :math:`t` with gradient :math:`g`:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \\
        \theta &\leftarrow \theta - \frac{\mathrm{lr}}{1 - \beta_1^t}
                 \cdot \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon} .

    Moments that decay below the dtype's smallest normal number are set to 0
    (dead ReLU units get exactly-zero gradients and would otherwise drift into
    slow subnormal arithmetic); the update they would have made is negligible.
    """

    _state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend=None):
        super().__init__(params, backend)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise InputTypeError(f"betas must be a pair (beta1, beta2), e.g. (0.9, 0.999), got {betas!r}")
        self.set_hyper(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    def hyper(self):
        return dict(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps, weight_decay=self.weight_decay)

    def set_hyper(self, lr, beta1, beta2, eps, weight_decay):
        self.lr = check_positive_float(lr, "lr")
        for name, b in (("betas[0]", beta1), ("betas[1]", beta2)):
            if not 0.0 <= check_positive_float(b, name, allow_zero=True) < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {b}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)

    def at_rest(self, param):
        r"""With no weight decay, where the next update, and so every later one, is too small
        to move the parameter's float.

        With a zero gradient from now on, step :math:`s = 1, 2, \ldots` moves it by
        :math:`\frac{\mathrm{lr}}{1-\beta_1^{t+s}} \cdot \frac{\beta_1^s m}{\sqrt{\beta_2^s v} / \sqrt{1-\beta_2^{t+s}} + \epsilon}`:
        the first step's is the largest, since :math:`\beta_1 < \sqrt{\beta_2}` (and once
        :math:`\sqrt{v}` is below :math:`\epsilon`, only :math:`\beta_1^s` changes). If it is
        under a quarter of the spacing of floats at the parameter's value, rounding gives
        the parameter back unchanged, at every step. A first moment of exactly 0 is the
        simplest case; a unit that stopped firing some 150 steps ago is at rest long before
        its moment decays to 0 (about 800 steps). The bound is computed in the parameter's
        dtype with room for its own roundings and the update's.
        """
        if self.weight_decay:
            return None
        i = self._index(param)
        p, m, v = self.params[i].data, self.state["m"][i], self.state["v"][i]
        dt, finfo = p.dtype.type, np.finfo(p.dtype)
        room = 1 + 64 * float(finfo.eps)   # the update's few roundings, and this bound's own
        # in p's dtype, in place: a few arrays of p's size (at the start of each epoch of fit)
        bound = v * dt(self.beta2 / room)               # v after the next step, rounded down...
        bound[bound < finfo.tiny] = 0                   # ...or flushed to 0: then only eps is left
        np.sqrt(bound, out=bound)
        np.maximum(bound, dt(self.eps), out=bound)
        with np.errstate(over="ignore"):                # a huge m: inf, i.e. not at rest
            np.divide(np.abs(m), bound, out=bound)
            bound *= dt(self.lr / (1 - self.beta1 ** (self.t + 1)) * self.beta1 * room)   # the next update
        quarter = np.abs(p)
        normal = quarter >= finfo.tiny                  # 0 and subnormal p: only m = 0 keeps them
        np.spacing(quarter, out=quarter)
        quarter /= 4
        return (m == 0) | (normal & (bound < quarter))

    def step(self):
        """One update of every parameter from its current ``.grad``."""
        self.t += 1
        bc1, bc2 = 1.0 - self.beta1 ** self.t, 1.0 - self.beta2 ** self.t
        k, cache = kernels.get(self.backend), {}
        m, v = self.state["m"], self.state["v"]
        hyper = (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, bc1, bc2)
        numba, held = self.backend == "numba", self._held
        apart = []   # parameters updated on their own; all others in runs
        for i, p in enumerate(self.params):
            # A gradient held as its nonzero columns (npvae.layers.Dense) is read as such by
            # the Numba kernel. The NumPy path writes it out and takes the plain update:
            # the reference stays simple, and a full-size scratch array per step is slow.
            columns = p.column_grad() if numba else None
            if columns is not None and _column_major(p.data, m[i], v[i]):
                n = held[i][0] if i in held else None     # held: the first n columns only
                c = self._consts(cache, p.dtype, *hyper)
                k.adam_update_columns(p.data[:, :n], *columns, m[i][:, :n], v[i][:, :n], *c)
                apart.append(i)
            elif i in held:
                k.adam_update(*self._arrays(i), *self._consts(cache, p.dtype, *hyper))
                apart.append(i)
        for views in self._runs(tuple(apart)):             # mostly one call for all the rest
            k.adam_update(*views, *self._consts(cache, views[0].dtype, *hyper))

    def _catch_up(self, i, n, steps):
        """The held columns' moments decay a step at a time (m by beta1, v by beta2); their
        parameters stay where they are (:meth:`at_rest`)."""
        k = kernels.get(self.backend)
        for name, beta in (("m", self.beta1), ("v", self.beta2)):
            a = self.state[name][i][:, n:]
            dt = a.dtype.type
            k.decay_moment(flat(a), dt(beta), steps, dt(np.finfo(a.dtype).tiny))


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum (PyTorch's rule, no dampening).

    .. math::

        b \leftarrow \mu\, b + g \;(b = g \text{ at the first step}), \qquad
        \theta \leftarrow \theta - \mathrm{lr} \cdot b .
    """

    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0, backend=None):
        super().__init__(params, backend)
        self.set_hyper(lr=lr, momentum=momentum, weight_decay=weight_decay)

    def hyper(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def set_hyper(self, lr, momentum, weight_decay):
        self.lr = check_positive_float(lr, "lr")
        self.momentum = check_positive_float(momentum, "momentum", allow_zero=True)
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)

    def at_rest(self, param):
        """With no weight decay, where the momentum buffer is 0 (everywhere without momentum)."""
        if self.weight_decay:
            return None
        buf = self.state["momentum_buffer"][self._index(param)]
        return np.ones(buf.shape, bool) if self.momentum == 0 else buf == 0

    def step(self):
        self.t += 1
        k, cache = kernels.get(self.backend), {}
        hyper = (self.lr, self.momentum, self.weight_decay)
        held = tuple(sorted(self._held))
        for i in held:
            lr, mom, wd, tiny = self._consts(cache, self.params[i].dtype, *hyper)
            k.sgd_update(*self._arrays(i), lr, mom, wd, self.t == 1, tiny)
        for views in self._runs(held):                      # mostly one call for all the rest
            lr, mom, wd, tiny = self._consts(cache, views[0].dtype, *hyper)
            k.sgd_update(*views, lr, mom, wd, self.t == 1, tiny)
