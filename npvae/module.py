"""The module protocol, in the spirit of PyTorch's ``nn.Module`` but by hand.

A :class:`Module` has ``forward(x)`` and ``backward(grad_out)``:

* ``forward`` computes the output and keeps exactly what ``backward`` needs;
* ``backward(grad_out)`` returns the gradient with respect to the input,
  **adds** (``+=``) into each parameter's ``.grad``, and never writes into
  ``grad_out``;
* ``parameters()``, ``named_parameters()``, ``zero_grad()``,
  ``state_dict()`` / ``load_state_dict()``, ``train()`` / ``eval()``.

Workspace arrays: a layer writes its output and its input gradient into arrays
it keeps between calls (one per batch shape), so the training loop allocates
nothing. What ``forward``/``backward`` return is therefore overwritten by the
next call with the same batch shape: copy it (``y.copy()``) to keep it. The
model's user-facing methods (``VAE.encode``, ``sample``, ...) return fresh arrays.

Memory layout follows the data: a row-major batch gives row-major activations
and gradients, a column-major one (what :func:`npvae.train.fit` feeds) gives
column-major ones, and every kernel loops in the order of its inputs. For this
model's shapes BLAS computes the training step's products faster writing
column-major results (README, Speed); evaluation stays row-major and so skips a
transposing copy of the data.
"""
import math

import numpy as np

from . import kernels
from .errors import InputError, StateDictError, StateError
from .memory import packed_zeros


def check_state_entry(name, value, like, hint=""):
    """``value`` may replace ``like`` in a state dict: array, same shape and dtype, finite.

    ``hint`` is added to a shape mismatch (e.g. a transposed PyTorch weight).
    """
    if not isinstance(value, np.ndarray):
        raise StateDictError(f"state_dict[{name!r}] must be a numpy array, got {type(value).__name__} "
                             "(for a torch tensor use t.detach().cpu().numpy())")
    if value.shape != like.shape:
        raise StateDictError(f"state_dict[{name!r}] has shape {value.shape}, the model expects "
                             f"{like.shape}{hint}")
    if value.dtype != like.dtype:
        raise StateDictError(f"state_dict[{name!r}] has dtype {value.dtype}, the model expects "
                             f"{like.dtype} (convert with .astype(np.{like.dtype}))")
    if not np.isfinite(value).all():
        raise StateDictError(f"state_dict[{name!r}] contains NaN or inf")


class Parameter:
    """A tensor the optimizer updates: ``data`` and its gradient ``grad``.

    ``zero_grad()`` does not touch memory: it marks the gradient stale, and
    the next backward *overwrites* it instead of adding to it (``beta = 0`` in
    :meth:`grad_target`). Reading ``grad`` while stale gives zeros, as expected.

    A layer may also give a gradient that is 0 outside a few columns
    (:meth:`set_column_grad`): it is written into ``grad`` only when ``grad`` is
    read, and :class:`npvae.optim.Adam` reads the columns directly instead. So
    read ``p.grad`` after each backward rather than keeping the array from an
    earlier read (as in PyTorch, whose ``zero_grad`` replaces ``.grad`` by None).
    """

    def __init__(self, data):
        self.data = data
        self._grad = np.zeros_like(data)
        self._stale = False
        self._columns = None  # (values, idx, scatter) from set_column_grad, not yet written

    @property
    def grad(self):
        if self._stale:
            self._grad.fill(0)
            self._stale = False
        elif self._columns is not None:
            values, idx, scatter = self._columns
            self._columns = None
            scatter(values, idx, self._grad, 0.0)
        return self._grad

    def zero_grad(self):
        self._stale = True
        self._columns = None

    def grad_target(self):
        """``(array, beta)`` for a backward pass: it must set ``array = beta * array + g``."""
        if self._columns is not None:
            self.grad  # a backward adds onto a column gradient: write it out first
        beta = 0.0 if self._stale else 1.0
        self._stale = False
        return self._grad, beta

    def set_column_grad(self, values, idx, scatter):
        """Make the gradient ``values[:, k]`` in column ``idx[k]`` and 0 in every other column.

        Instead of :meth:`grad_target` with ``beta = 0``. Nothing is written until
        ``grad`` is read, which calls ``scatter(values, idx, grad, 0)`` (the kernel
        :func:`~npvae.kernels.numpy_kernels.scatter_columns`). ``values`` (R, n) and
        ``idx`` (n,), increasing, must not change until then: the next backward
        writes the gradient out before it reuses them.
        """
        self._stale = False
        self._columns = (values, idx, scatter)

    def column_grad(self):
        """``(values, idx)`` if the gradient is still held as columns, else None."""
        return None if self._columns is None else self._columns[:2]

    def __getstate__(self):
        self.grad  # copies and pickles hold the gradient written out, not a kernel
        return self.__dict__.copy()

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


# Bumped whenever any module registers a Parameter or a sub-Module, so a cached
# parameter list (see Module.zero_grad) knows when it may be out of date.
_structure_version = [0]


class Module:
    """Base class: registers Parameters and sub-Modules assigned as attributes."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_workspace", {})
        object.__setattr__(self, "backend", kernels.resolve(None))
        object.__setattr__(self, "_k", None)  # the kernel module, loaded on first use

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise StateError(f"{type(self).__name__}.__init__ must call super().__init__() "
                             "before assigning attributes")
        if isinstance(value, Parameter):
            self._params[name] = value
            _structure_version[0] += 1
        elif isinstance(value, Module):
            self._modules[name] = value
            _structure_version[0] += 1
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __getstate__(self):
        # copy.deepcopy and pickle: drop the kernel module (reloaded on first use)
        # and the workspaces (reallocated on the next call)
        return dict(self.__dict__, _k=None, _workspace={})

    # -- the protocol ------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def _save(self, **values):
        """Keep what ``backward`` needs, as plain attributes (read back by :meth:`_cached`).

        One dict update instead of an attribute assignment each, which goes through
        :meth:`__setattr__`'s registration checks: some 20 us a training step.
        """
        self.__dict__.update(values)

    def _cached(self, *names):
        """Values ``forward`` stored for ``backward``; a clear error if forward never ran."""
        try:
            if len(names) == 1:
                return self.__dict__[names[0]]
            return tuple(map(self.__dict__.__getitem__, names))
        except KeyError:
            raise StateError(f"{type(self).__name__}.backward called before forward: "
                             "run forward on a batch first") from None

    def _buffer(self, key, shape, dtype, order="C", capacity=None):
        """A workspace array for ``key``, one per shape, dtype and layout (``order``
        "C" or "F"), reused across calls.

        An epoch's short last batch gets its own arrays instead of evicting the
        full-size ones, so a training run allocates each array once. A width that
        changes from run to run (the units ``fit`` skips) passes ``capacity``, a
        shape at least as large: every such array is then the front of one
        allocation of that size.
        """
        # the key as the caller spells it: one lookup a step (this runs some 20 times a step)
        fast_key = (key, shape, dtype, order, capacity)
        buf = self._workspace.get(fast_key)
        if buf is None:
            buf = self._workspace[fast_key] = self._new_buffer(key, shape, np.dtype(dtype), order, capacity)
        return buf

    def _new_buffer(self, key, shape, dtype, order, capacity):
        full_key = (key, shape, dtype, order, capacity)   # np.float32 and np.dtype("float32"): one array
        buf = self._workspace.get(full_key)
        if buf is not None:
            return buf
        if len(self._workspace) > 128:  # many batch sizes (e.g. inference): start over
            self._workspace.clear()     # (128 keys: an array can have two, as spelt and normalised)
        if capacity is not None:      # the front of the one allocation for this key
            flat = self._buffer(key, (math.prod(capacity),), dtype)
            buf = flat[:math.prod(shape)].reshape(shape, order=order)
        else:
            buf = np.empty(shape, dtype, order=order)
        self._workspace[full_key] = buf
        return buf

    @staticmethod
    def _check_grad_out(grad_out, expected_shape, name="grad_out"):
        if not isinstance(grad_out, np.ndarray) or grad_out.shape != expected_shape:
            got = grad_out.shape if isinstance(grad_out, np.ndarray) else type(grad_out).__name__
            raise InputError(f"{name} must have the forward output's shape {expected_shape}, got {got}")

    @property
    def k(self):
        """The kernel module of this module's back end (Numba or NumPy)."""
        if self._k is None:
            object.__setattr__(self, "_k", kernels.get(self.backend))
        return self._k

    def set_backend(self, backend):
        """Switch this module and its sub-modules to ``"numba"`` or ``"numpy"`` kernels."""
        name = kernels.resolve(backend)
        for m in self.modules():
            object.__setattr__(m, "backend", name)
            object.__setattr__(m, "_k", None)
        return self

    # -- parameters ----------------------------------------------------------------
    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` pairs, depth first, e.g. ``encoder.0.weight``."""
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self):
        """All Parameters, in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def pack_parameters(self):
        """Move every parameter's values and gradient into one memory block.

        Values are kept; arrays obtained from ``p.data`` before this call are no longer
        the parameter's. The optimizer's step then streams through memory that can sit on
        huge pages (:mod:`npvae.memory`). :class:`npvae.VAE` does this when it is built.
        """
        params = self.parameters()
        packed = packed_zeros([p.data for p in params] + [p._grad for p in params])
        for p, data, grad in zip(params, packed, packed[len(params):]):
            data[...], grad[...] = p.data, p._grad
            p.data, p._grad = data, grad
        return self

    def zero_grad(self):
        # called every training step: walk the module tree only when it has changed
        cached = self.__dict__.get("_zero_grad_list")
        if cached is None or cached[0] != _structure_version[0]:
            cached = (_structure_version[0], self.parameters())
            object.__setattr__(self, "_zero_grad_list", cached)
        for p in cached[1]:
            p.zero_grad()

    def modules(self):
        """This module and every sub-module, depth first."""
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def train(self, mode=True):
        """Training mode (the default): losses keep what backward needs."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: forward only, no backward caches beyond the outputs."""
        return self.train(False)

    # -- state -------------------------------------------------------------------
    def state_dict(self):
        """``{name: array copy}`` for every parameter."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, checking names, shapes and dtypes first.

        Nothing is changed unless every entry fits. With ``strict=False``,
        missing and unexpected names are allowed (shapes still must match).
        """
        if not isinstance(state_dict, dict):
            raise StateDictError(f"state_dict must be a dict of arrays, got {type(state_dict).__name__}")
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            raise StateDictError(f"state_dict does not match {type(self).__name__}: "
                                 f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        for name, value in state_dict.items():
            if name not in params:
                continue
            check_state_entry(name, value, params[name].data)
        for name, value in state_dict.items():
            if name in params:
                params[name].data[...] = value
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
