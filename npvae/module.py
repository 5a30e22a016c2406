"""Module and Parameter: the protocol every layer, the sampler and the losses follow.

In the spirit of PyTorch's ``nn.Module``, but with the backward pass written by hand:

* ``forward(x)`` computes the output and keeps exactly what ``backward`` needs, with
  ``self.keep(x=x)`` (``backward`` reads it back with ``self.saved("x")``). Each forward
  replaces what the last one kept; ``keep`` counts them in ``passes``, so that a model can see
  that one of its ops ran again between its loss and its backward (``VAE.backward`` refuses).
  It keeps the arrays themselves, not copies (see :class:`Module`);
* ``backward(grad_out)`` returns the gradient with respect to the input, **adds**
  (``+=``) into each parameter's ``.grad``, and never writes into ``grad_out``: the
  caller owns that array and may read it again (one ``dh`` handed to two branches
  that share an input, a ``dz`` kept to look at). The VAE reads each one once, so
  nothing breaks there today; the rule is what makes ops safe to combine, and
  ``python -m gradcheck`` checks every op keeps it;
* two kinds of op differ from a layer. The sampler's ``forward(h, eps=None)``
  takes its noise as data (or draws it) and its ``backward`` returns only ``dh``. A loss's
  ``forward(pred, target)`` (``KL.forward(h)`` has no target) returns a float and keeps
  each sample's loss in ``rows``; its ``backward(grad=1.0)`` takes the scalar
  ``dL/dloss`` of whatever the loss feeds and returns the gradient
  for ``pred`` only (the target is data);
* ``parameters()``, ``named_parameters()``, ``zero_grad()``, ``state_dict()`` /
  ``load_state_dict()``, ``train()`` / ``eval()``.

This is the reference: plain NumPy, every unit computed. ``VAE.loss`` works in C order
(it copies a column-major batch); an op used on its own computes on its input as given.
The fast path (:mod:`npvae.fast`) keeps its own copy of the parameters in the
layout it likes and is tested against this code.
"""
from collections.abc import Mapping

import numpy as np

from .errors import InputError, InputTypeError, StateDictError, StateError
from .validate import (FLOAT_DTYPES, check_bool, check_not_a_checkpoint, check_state_entry, check_writable,
                       is_transposed, nothing_matches_message, refuse_array_subclass, warn_backend_argument)


def one_place_each(named, places):
    """``{name: module}`` from ``(name, module)`` pairs, refusing a module met twice: its forward
    keeps one pass's values (:meth:`Module.keep`), so backward would be wrong for the other place.
    ``places`` names the two, e.g. ``"model.{} and model.{}"``."""
    modules, seen = {}, {}
    for name, m in named:
        if id(m) in seen:
            kind = type(m).__name__
            raise InputError(f"{places.format(seen[id(m)], name)} are one {kind} object: its forward keeps "
                             f"one pass's values, so backward would be wrong for the other place; give "
                             f"each place a {kind} of its own")
        modules[name], seen[id(m)] = m, name
    return modules


def _npvaes_own(module):
    """npvae's own layers are built for their parameters; a module of one's own may resize or drop its own."""
    return type(module).__module__.startswith("npvae.")


def given_as_text(value):
    """What an error says was given: the type's name, or for a class of Module (``ReLU`` for
    ``ReLU()``), that class and how to make one."""
    if isinstance(value, type) and issubclass(value, Module):
        return f"the class {value.__name__} (make one: {value.__name__}(...))"
    return type(value).__name__


class Parameter:
    """A tensor the optimizer updates: its values ``data`` and its gradient ``grad``.

    ``grad`` has the shape and dtype of ``data``; backward passes add into it and
    :meth:`zero_grad` sets it back to 0. Either may be replaced by another writable array
    of the same shape and dtype (the layers and the optimizers rely on all three: they write
    into both in place); anything else is refused when it is assigned, not later inside a layer.
    """

    def __init__(self, data):
        if not isinstance(data, np.ndarray) or data.dtype not in FLOAT_DTYPES:
            got = f"a {data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
            raise InputTypeError(f"Parameter(data): data must be a float32 or float64 numpy array, got {got}")
        refuse_array_subclass(data, "data", "Parameter(data)")
        check_writable(data, "Parameter(data): data")
        self._data = data
        self._grad = np.zeros_like(data)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = self._same_kind("data", value)

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = self._same_kind("grad", value)

    def _same_kind(self, name, value):
        if not isinstance(value, np.ndarray):
            hint = "; to clear the gradient call zero_grad()" if name == "grad" and value is None else ""
            raise InputTypeError(f"Parameter.{name} must be a numpy array of shape {self.shape} and "
                                 f"dtype {self.dtype}, got {type(value).__name__}{hint}")
        refuse_array_subclass(value, name, f"Parameter.{name}")
        if value.dtype != self.dtype:
            raise InputTypeError(f"Parameter.{name} must keep the dtype {self.dtype}, got {value.dtype}: "
                                 f"convert the values (value.astype(np.{self.dtype})), or, to change the "
                                 f"model's dtype, build it with dtype= (a model has one dtype)")
        if value.shape != self.shape:
            raise InputError(f"Parameter.{name} must keep the shape {self.shape}, got {value.shape}")
        check_writable(value, f"Parameter.{name}")
        return value

    def zero_grad(self):
        self.grad[...] = 0

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"

    def __setstate__(self, state):
        # A pickle holds the private attributes of the npvae that wrote it: an older one's
        # Parameter kept others (``data``, ``_stale``), and would load as a broken object.
        attributes, slots = state if isinstance(state, tuple) else (state, None)   # slots: a subclass's
        if not {"_data", "_grad"} <= set(attributes or ()):
            raise StateDictError(f"cannot unpickle a Parameter written by another version of npvae (it holds "
                                 f"{sorted(attributes or ())}); pickles do not carry over between versions: with "
                                 f"the npvae that wrote it, save the model with npvae.save_checkpoint, or "
                                 f"np.savez(file, **model.state_dict()), and load that here")
        self.__dict__.update(attributes)
        for name, value in (slots or {}).items():
            setattr(self, name, value)


class Module:
    """Base class: registers the Parameters and sub-Modules assigned as attributes.

    A layer of your own calls ``super().__init__()`` first, then::

        def forward(self, x):
            check_input(x, "MyLayer.forward")       # npvae.layers.check_input: 2-D float array
            y = ...
            self.keep(x=x)          # exactly what backward needs
            return y

        def backward(self, grad_out):
            x = self.saved("x")
            check_grad(grad_out, out_shape, x.dtype, "MyLayer.backward")    # npvae.validate.check_grad:
                                    # grad_out has forward's output shape (out_shape) and dtype
            self.w.grad += ...      # add into each Parameter's grad, never assign
            return ...              # dL/dx, a new array: never write into grad_out

        def extra_repr(self):
            return f"slope={self.slope}"    # its settings, if any: checkpoints compare them

    ``keep`` holds the arrays themselves, not copies: an op used on its own reads your input
    again in ``backward``, so change that array only after it (``VAE.loss`` copies your batch
    and noise for you). ``gradcheck.op_problem``'s docstring shows how to check a layer
    (``gradcheck.loss_problem``'s, a loss); docs/adding-a-layer.md lists what a layer added
    to npvae itself needs.

    A name that holds a Parameter (or sub-Module) takes only another one; ``del m.name``
    removes it from ``parameters()`` and ``state_dict()``.
    """

    passes = 0      # forward passes that kept values (see keep); 0 until the first

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise StateError(f"{type(self).__name__}.__init__ must call super().__init__() "
                             "before assigning attributes")
        if isinstance(value, Parameter):
            old = self._params.get(name)
            if old is not None and (value.shape, value.dtype) != (old.shape, old.dtype) and _npvaes_own(self):
                # else the error comes at the next forward pass, from numpy or from the next layer
                error = InputError if value.dtype == old.dtype else InputTypeError    # as Parameter.data's
                raise error(f"{type(self).__name__}.{name} is a parameter of shape {old.shape} and dtype "
                            f"{old.dtype}: a Parameter in its place must have both, got shape {value.shape} "
                            f"and dtype {value.dtype} (new values of its own shape go into its .data)")
            self._modules.pop(name, None)
            self._params[name] = value
        elif isinstance(value, Module):
            self._params.pop(name, None)
            self._modules[name] = value
        elif name in self._params or name in self._modules:
            # else parameters() and state_dict() would go on holding the old one unseen
            kind, cls = ("parameter", "Parameter") if name in self._params else ("sub-module", "Module")
            hint = " (new values go into its .data)" if kind == "parameter" else ""
            drop = "" if _npvaes_own(self) else f"; to remove it, del {type(self).__name__.lower()}.{name}"
            raise InputTypeError(f"{type(self).__name__}.{name} is a {kind}: assign a {cls}{hint}, got "
                                 f"{given_as_text(value)}{drop}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._params.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- the protocol ------------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def keep(self, **values):
        """Keep ``values`` for ``backward`` as attributes of those names (``keep(x=x)``: ``self.x``),
        replacing the last forward's, and count the pass in :attr:`passes`.

        A pass is counted when a name comes again: a subclass's forward may keep more after
        ``super().forward(x)`` kept its own, and that is still one pass. So keep the same names
        on every call (what backward needs): a forward keeping ``mask`` on one call and only ``y``
        on the next would not be seen running twice, and a model's guards would miss it."""
        this_pass = self.__dict__.get("_kept_this_pass", set())
        if self.passes == 0 or not this_pass.isdisjoint(values):
            object.__setattr__(self, "passes", self.passes + 1)
            this_pass = set()
        object.__setattr__(self, "_kept_this_pass", this_pass | set(values))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def saved(self, *names):
        """What ``forward`` kept for ``backward`` (one value or a tuple); a clear error if
        ``forward`` has not run yet."""
        try:
            values = tuple(self.__dict__[name] for name in names)
        except KeyError:
            missing = [n for n in names if n not in self.__dict__]
            raise StateError(f"{type(self).__name__}.backward called before forward, or a forward that "
                             f"did not keep {missing[0]!r}: run forward on a batch first (a forward keeps "
                             f"what backward needs with self.keep({missing[0]}=...))") from None
        return values[0] if len(values) == 1 else values

    # -- parameters --------------------------------------------------------------------
    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` pairs, depth first, e.g. ``encoder.0.weight``.

        Parameters
        ----------
        prefix : str, default ""
            Put before every name: ``"enc."`` gives ``enc.0.weight``.
        """
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self):
        """All Parameters, in the order of :meth:`named_parameters`."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        """Set every parameter's gradient to 0 (backward passes add into it)."""
        for p in self.parameters():
            p.zero_grad()

    def modules(self):
        """This module and every sub-module, depth first."""
        for _, m in self.named_modules():
            yield m

    def named_modules(self, prefix=""):
        """Yield ``(name, Module)`` pairs, depth first: ``("", self)``, then e.g. ``("encoder.0", Dense)``."""
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m.named_modules(prefix + name + ".")

    def train(self, mode=True):
        """Set training mode or evaluation mode, on this module and every sub-module.

        No npvae layer behaves differently in the two modes (there is no dropout or
        batch norm); the flag is kept for code written against PyTorch's API, and for a
        layer of one's own that looks at ``self.training``. :func:`npvae.evaluate_elbo` and
        :func:`npvae.iw_nll` (so ``fit``'s test loss too) run a model in evaluation mode and
        give each module its mode back; ``fit`` puts the model in training mode at each epoch's start.

        Parameters
        ----------
        mode : bool, default True
            True: training mode; False: evaluation mode.

        Returns
        -------
        Module
            The module itself, as in PyTorch.
        """
        if not isinstance(mode, (bool, np.bool_)):
            raise InputTypeError(f"train(mode): mode must be True or False, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def set_backend(self, backend):
        """Deprecated: models no longer carry a back end (see :func:`npvae.fit`)."""
        warn_backend_argument(f"{type(self).__name__}.set_backend", backend)
        return self

    # -- state ---------------------------------------------------------------------------
    def state_dict(self):
        """``{name: array copy}`` for every parameter."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, checking names, shapes, dtypes and values first.

        Nothing is changed unless every entry fits.

        Parameters
        ----------
        state_dict : mapping of str to ndarray
            Any mapping of names to arrays will do: a dict, or what ``np.load`` returns for a
            file that ``np.savez(path, **model.state_dict())`` wrote.
        strict : bool, default True
            False allows missing and unexpected names (shapes still must match), but a non-empty
            ``state_dict`` for a module with parameters must name at least one of them.

        Returns
        -------
        Module
            The module itself, not PyTorch's named tuple ``(missing_keys, unexpected_keys)``
            (with ``strict=False``, compare ``set(model.state_dict())`` with your mapping's names
            to find those).
        """
        if not isinstance(state_dict, Mapping):
            raise StateDictError(f"state_dict must be a mapping (a dict) of names to arrays, "
                                 f"got {type(state_dict).__name__}")
        strict = check_bool(strict, "strict")
        check_not_a_checkpoint(state_dict)
        state_dict = dict(state_dict)           # read each entry once (an .npz file reads on access)
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            raise StateDictError(f"state_dict does not match {type(self).__name__}: "
                                 f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        if params and state_dict and len(unexpected) == len(state_dict):   # strict=False, and it would load nothing
            raise StateDictError(nothing_matches_message(type(self).__name__, list(params), unexpected))
        for name, value in state_dict.items():
            if name in params:
                like = params[name].data
                check_state_entry(name, value, like, " (transposed: PyTorch's Linear stores (out, in); "
                                  "npvae.interop.from_torch_state_dict converts a PyTorch state dict)"
                                  if is_transposed(value, like) else "")
        for name, value in state_dict.items():
            if name in params:
                params[name].data[...] = value
        return self

    def extra_repr(self):
        """The module's settings as a string (``"slope=0.1"``), shown by ``repr`` and compared by
        checkpoints: a layer with settings returns them. ``""`` here: no settings."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
