r"""Optimizers: Adam and SGD with momentum, with PyTorch's update rules, in plain NumPy.

An optimizer holds the model's parameters and, per parameter, its own state
(``state[p]``: Adam's two moments, SGD's momentum buffer). ``step()`` updates every
parameter from its ``.grad``; ``zero_grad()`` clears the gradients for the next
backward pass. The fast path (:mod:`npvae.fast`) runs the same rules in one fused
kernel and is tested against these.
"""
import copy
import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np

from .errors import InputError, InputTypeError, NpvaeError, StateDictError
from .module import Module, Parameter
from .validate import (Setting, check_decay_rates, check_non_negative_number, check_positive_number,
                       masked_array_problem, warn_backend_argument)


_DEFAULT_BETAS = (0.9, 0.999)    # Adam's decay rates, as in PyTorch and the paper (private: see Adam)
_FITS = lambda opt, value, name: opt.check_fits(value, name)     # noqa: E731  (a Setting's check_for)


def check_params(params):
    """``params`` as a non-empty list of Parameters, or a clear error."""
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
    first = {}
    for i, p in enumerate(params):
        if id(p) in first:
            raise InputError(f"params lists the same Parameter twice (params[{first[id(p)]}] and params[{i}]); "
                             f"list each once (a weight shared by two layers is one parameter): "
                             f"list({{id(p): p for p in params}}.values())")
        first[id(p)] = i
    return params


class Optimizer:
    """What the optimizers share: parameters, per-parameter state, ``zero_grad``, state dicts.

    Attributes
    ----------
    params : list of Parameter
    state : dict
        ``state[p]`` is a dict of arrays, one per name in ``state_names`` (Adam's ``{"m": ...,
        "v": ...}``, each shaped and typed like ``p``).
    t : int
        Steps taken.

    Notes
    -----
    An optimizer of your own subclasses this one: its ``__init__`` calls
    ``super().__init__(params)`` first, it names its per-parameter arrays in ``state_names``
    (made as zeros like each parameter; it may replace them with arrays of its own shape), and
    it defines ``step()``, which updates every ``p.data`` from ``p.grad`` and adds 1 to ``t``.
    It trains on the reference (``fit(..., backend="numpy")``, or a loop of your own); the fast
    path runs only Adam and SGD. To be saved in a checkpoint and resumed bit for bit, it also
    defines ``hyper()``, returning every setting its update reads (``{"lr": self.lr, ...}``:
    numbers, or tuples of them, which come back as floats), and ``set_hyper(**hyper)``, setting
    them: a setting left out of ``hyper()`` is not saved.
    """

    state_names = ()   # the per-parameter arrays, in state-dict order
    never_negative = ()  # those of them that cannot be negative (a loaded state is checked)

    def __init__(self, params, backend=None):
        if backend is not None:
            # stacklevel 4: via Adam/SGD.__init__
            warn_backend_argument(f"{type(self).__name__}(backend=...)", backend, stacklevel=4)
        self.params = check_params(params)
        self.t = 0
        self.state = {p: {name: np.zeros_like(p.data) for name in self.state_names} for p in self.params}

    def __repr__(self):
        try:
            settings = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items()) + "; "
        except NotImplementedError:         # a subclass of one's own that has not said its settings
            settings = ""
        return f"{type(self).__name__}({settings}{len(self.params)} parameters, t={self.t})"

    def zero_grad(self):
        """Set every parameter's gradient to 0."""
        for p in self.params:
            p.zero_grad()

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def hyper(self):
        """The hyper-parameters, as keyword arguments of :meth:`set_hyper`."""
        raise NotImplementedError(f"{type(self).__name__} does not define hyper() and set_hyper(), which a "
                                  f"checkpoint needs to save and restore its settings (see npvae.optim.Optimizer)")

    def set_hyper(self, **hyper):
        """Set the hyper-parameters that :meth:`hyper` returns (all checked before any is set)."""
        raise NotImplementedError(f"{type(self).__name__} does not define set_hyper(), which a checkpoint "
                                  f"needs to restore its settings (see npvae.optim.Optimizer)")

    def _first_lr(self, lr):
        """The constructor's ``lr``: above 0 in the parameters' dtype. 0 would train nothing: a
        mistake when building (a schedule may bring ``optimizer.lr`` down to 0 later). A rate
        above 0 but too small to move the weights is not caught (in float32, a step under
        about 6e-8 of a weight's size rounds away)."""
        lr = check_positive_number(lr, "lr")
        self.check_fits(lr, "lr")
        dtype = self._narrowest_dtype()
        if dtype.type(lr) == 0:
            raise InputError(f"lr={lr} is 0 in the parameters' {dtype}: no step would change them "
                             f"(a usual learning rate is 1e-4 to 1e-2)")
        return lr

    def check_fits(self, value, name):
        """Refuse a hyper-parameter that is inf in the parameters' dtype: every step would be
        NaN or inf, or (an ``eps`` of 1e39 in float32) nothing would move, silently."""
        dtype = self._narrowest_dtype()
        if value > float(np.finfo(dtype).max):         # (a float32 maximum would cast value to float32)
            raise InputError(f"{name}={value:g} overflows the parameters' {dtype} (largest "
                             f"{np.finfo(dtype).max:.3g}): it would be inf in every step")

    def _narrowest_dtype(self):
        """The least precise of the parameters' dtypes: a value 0 there is 0 for some of them."""
        return max((p.data.dtype for p in self.params), key=lambda dtype: np.finfo(dtype).eps)

    def _set_checked(self, **hyper):
        """Set hyper-parameters together: every value is checked before any is set, so a
        refused call changes nothing (each is a :class:`~npvae.validate.Setting`)."""
        checked = {name: getattr(type(self), name).checked(self, value) for name, value in hyper.items()}
        for name, value in checked.items():
            self.__dict__[name] = value         # where Setting keeps it; already checked

    # -- state dicts ---------------------------------------------------------------------
    def state_dict(self):
        """``{"t", hyper-parameters, "<state name>.<parameter index>": array copy}``."""
        sd = {"t": np.array(self.t), **{k: np.array(v) for k, v in self.hyper().items()}}
        for name in self.state_names:
            for i, p in enumerate(self.params):
                sd[f"{name}.{i}"] = self.state[p][name].copy()
        return sd

    def load_state_dict(self, sd):
        """Restore what :meth:`state_dict` returned, checking every entry before changing anything."""
        if isinstance(sd, Mapping):
            sd = dict(sd)                       # np.load's file reads an entry at each access
        sd = self._upgrade(sd)
        if type(self).set_hyper is Optimizer.set_hyper:     # one of your own that cannot restore its settings
            raise StateDictError(f"cannot load a state dict into {type(self).__name__}: it does not define "
                                 f"set_hyper(), which restores its settings (see npvae.optim.Optimizer)")
        expected = {"t", *self.hyper(), *(f"{n}.{i}" for n in self.state_names for i in range(len(self.params)))}
        if not isinstance(sd, dict):
            raise StateDictError(f"{type(self).__name__} state dict must be a dict of names to arrays (what "
                                 f"state_dict() returns), got {type(sd).__name__}")
        if "__meta__" in sd:                # np.load of a checkpoint (npvae.checkpoint.META_KEY)
            raise StateDictError(f"{type(self).__name__} state dict: that holds an npvae checkpoint's entries "
                                 f"('__meta__', 'model/...', 'optimizer/...'), not an optimizer's state dict: "
                                 f"npvae.load_checkpoint(path, model, optimizer) loads both")
        if set(sd) != expected:
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            raise StateDictError(f"{type(self).__name__} state dict does not fit this optimizer (over "
                                 f"{len(self.params)} parameters): missing {missing}, unexpected {unexpected}")
        for name in self.state_names:
            for i, p in enumerate(self.params):
                v, like = sd[f"{name}.{i}"], self.state[p][name]
                if not isinstance(v, np.ndarray) or v.shape != like.shape or v.dtype != like.dtype:
                    got = (v.shape, str(v.dtype)) if isinstance(v, np.ndarray) else type(v).__name__
                    raise StateDictError(f"optimizer state {name}.{i} must be {like.shape} {like.dtype}, got {got}")
                if problem := masked_array_problem(v, f"optimizer state {name}.{i}"):
                    raise StateDictError(problem)
                if not np.isfinite(v).all():
                    raise StateDictError(f"optimizer state {name}.{i} contains NaN or inf")
                if name in self.never_negative and (v < 0).any():
                    raise StateDictError(f"optimizer state {name}.{i} has negative values (min {v.min():.4g}); "
                                         f"it is a mean of squares")
        try:
            t = _step_count(sd["t"])
        except InputTypeError as e:
            raise StateDictError(f"{type(self).__name__} state dict: {e}") from e
        try:  # check the hyper-parameters on a scratch copy before changing anything
            hyper = {k: _plain(sd[k], k) for k in self.hyper()}
            type(self).set_hyper(copy.copy(self), **hyper)
        except (NpvaeError, TypeError, ValueError) as e:
            raise StateDictError(f"{type(self).__name__} state dict has a bad hyper-parameter: {e}") from e
        if t < 0:
            raise StateDictError(f"{type(self).__name__} state dict has a negative step count t={t}")
        for name in self.state_names:
            for i, p in enumerate(self.params):
                self.state[p][name][...] = sd[f"{name}.{i}"]
        self.t = t
        self.set_hyper(**hyper)
        return self

    def _upgrade(self, sd):
        """A state dict in an older spelling, in today's (see :class:`Adam`)."""
        return sd


def _plain(value, name):
    """A state-dict entry as a Python float, or a tuple of floats for an array (``betas``);
    a bool is refused, as it is when a hyper-parameter is set."""
    a = np.asarray(value)
    if a.dtype.kind not in "iuf":           # a bool, and a str: refused as when the setting is set
        raise InputTypeError(f"{name} must be a number, got {value!r}")
    return float(a) if a.ndim == 0 else tuple(float(v) for v in a)


def _step_count(value):
    """The state dict's ``t``: a whole number below 2**63 (an int, or a float with no fraction)."""
    a = np.asarray(value)
    t = a.item() if a.ndim == 0 else None   # a Python int of any size, a float, a bool, ...
    if isinstance(t, float) and math.isfinite(t) and t == round(t):
        t = int(t)
    if not isinstance(t, int) or isinstance(t, bool):
        raise InputTypeError(f"the step count t must be a whole number, got {value!r}")
    if t >= 2**63:                          # state_dict() could not give it back as an int64
        raise InputTypeError(f"the step count t must be below 2**63, got {value!r}")
    return t


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with PyTorch's defaults and update rule.

    Parameters
    ----------
    params : list of Parameter
    lr : float
        The step size :math:`\alpha`, > 0 (a schedule may set ``optimizer.lr``, down to 0, between steps).
    betas : (float, float)
        :math:`(\beta_1, \beta_2)`, the decay rates of the two moments (default (0.9, 0.999)).
    eps : float
        Added to :math:`\sqrt{\hat v}` so that the step stays finite.
    weight_decay : float
        :math:`w`, an L2 penalty: :math:`w\theta` is added to the gradient before the moments
        (PyTorch's ``Adam(weight_decay=...)``; not AdamW's decoupled decay).
    beta1, beta2 : deprecated (warns)
        The two decay rates apart, named as the deprecated attributes ``Adam.beta1``/``beta2``
        are; one given alone keeps the other's default.
    backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error)
        Keyword only, so that PyTorch's sixth positional argument (``amsgrad``, which npvae
        does not have) is refused.

    Notes
    -----
    For step :math:`t = 1, 2, \ldots` with gradient :math:`g` (plus :math:`w\theta`):

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, &
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, g^2, \\
        \hat m &= m / (1 - \beta_1^t), &
        \hat v &= v / (1 - \beta_2^t), \\
        \theta &\leftarrow \theta - \alpha\, \hat m / (\sqrt{\hat v} + \epsilon).

    The moments start at 0: after :math:`t` steps the weights
    :math:`(1-\beta_1)\beta_1^{t-s}` that :math:`m` gives the gradients sum to
    :math:`1 - \beta_1^t`, not 1; the missing :math:`\beta_1^t` is the weight still on the
    initial 0 (for :math:`v`, :math:`1 - \beta_2^t` and :math:`\beta_2^t`). Dividing each
    moment by its sum of weights (the bias correction) makes it a weighted mean of the
    gradients seen. The rule is Algorithm 1 of the paper, and PyTorch's ``Adam`` (without
    ``amsgrad``, with ``weight_decay`` as an L2 term); in float32 the two can differ by a
    rounding, as PyTorch folds the corrections into the step size and the denominator.
    """

    state_names = ("m", "v")
    never_negative = ("v",)   # a running mean of squares
    # the hyper-parameters, each checked whenever it is set (npvae.validate.Setting)
    lr = Setting(check_non_negative_number, _FITS)     # >= 0: a schedule may bring it down to 0
    betas = Setting(check_decay_rates)
    eps = Setting(check_positive_number, check_for=lambda adam, eps, name: adam.check_eps(eps))
    weight_decay = Setting(check_non_negative_number, _FITS)

    def __init__(self, params, lr=1e-3, betas=_DEFAULT_BETAS, eps=1e-8, weight_decay=0.0, *,
                 beta1=None, beta2=None, backend=None):
        super().__init__(params, backend)
        if beta1 is not None or beta2 is not None:
            given = None if betas is _DEFAULT_BETAS else betas     # the default object: not given
            betas = _betas_from_old_spelling(given, beta1, beta2, _DEFAULT_BETAS, "Adam(beta1=, beta2=)")
        self._set_checked(lr=self._first_lr(lr), betas=betas, eps=eps, weight_decay=weight_decay)

    def step(self):
        """One Adam update of every parameter from its ``.grad`` (Algorithm 1 of the paper)."""
        self.t += 1
        beta1, beta2 = self.betas
        for p in self.params:
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            m, v = self.state[p]["m"], self.state[p]["v"]
            m[...] = beta1 * m + (1 - beta1) * g           # first moment: a running mean of g
            v[...] = beta2 * v + (1 - beta2) * (g * g)     # second moment: a running mean of g^2
            m_hat = m / (1 - beta1 ** self.t)              # bias corrections
            v_hat = v / (1 - beta2 ** self.t)
            p.data -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def hyper(self):
        return dict(lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    def check_eps(self, eps):
        """Refuse an ``eps`` that is 0 in the parameters' dtype: a zero gradient's step would be 0 / 0."""
        self.check_fits(eps, "eps")
        dtype = self._narrowest_dtype()
        if dtype.type(eps) == 0:
            raise InputError(f"eps={eps} is 0 in the parameters' {dtype}; use at least "
                             f"{np.finfo(dtype).tiny:.3g}")

    def set_hyper(self, lr=None, betas=None, *more, eps=None, weight_decay=None, beta1=None, beta2=None):
        """Set the hyper-parameters given (None keeps one as it is): ``set_hyper(lr, betas, eps,
        weight_decay)``, by position or keyword. All or nothing: every value is checked before
        any is set.

        The spelling before ``betas`` still works, with a ``DeprecationWarning``: keywords
        ``beta1=, beta2=``, or ``(lr, beta1, beta2, eps, weight_decay)`` by position (the last
        two may be keywords).
        """
        given = dict(eps=eps, weight_decay=weight_decay)
        spelling = "Adam.set_hyper(beta1=, beta2=)"
        if _a_number(betas) and beta1 is None:          # the old order: (lr, beta1, beta2, ...)
            if beta2 is not None:                       # beta2 as a keyword
                beta1, betas = betas, None
                spelling = "Adam.set_hyper(lr, beta1, beta2=)"
            elif more and len(more) + sum(v is not None for v in given.values()) == 3:
                beta1, beta2, betas, more = betas, more[0], None, more[1:]
                spelling = "Adam.set_hyper(lr, beta1, beta2, eps, weight_decay) by position"
        if len(more) > 2:
            raise InputTypeError(f"set_hyper takes (lr, betas, eps, weight_decay), got {2 + len(more)} "
                                 "positional arguments")
        for name, value in zip(given, more):
            if given[name] is not None:
                raise InputTypeError(f"set_hyper got {name} twice, by position and as a keyword")
            given[name] = value
        if beta1 is not None or beta2 is not None:
            betas = _betas_from_old_spelling(betas, beta1, beta2, self.betas, spelling)
        hyper = dict(lr=lr, betas=betas, **given)
        self._set_checked(**{name: value for name, value in hyper.items() if value is not None})

    def _upgrade(self, sd):
        # state dicts written before betas was one pair held beta1 and beta2 apart
        if isinstance(sd, dict) and {"beta1", "beta2"} <= set(sd) and "betas" not in sd:
            sd = dict(sd)
            sd["betas"] = (sd.pop("beta1"), sd.pop("beta2"))
        return sd

    # -- the older spellings, before betas was one pair --------------------------------------
    @property
    def beta1(self):
        warnings.warn("Adam.beta1 is deprecated: use Adam.betas[0]", DeprecationWarning, stacklevel=2)
        return self.betas[0]

    @beta1.setter
    def beta1(self, value):
        warnings.warn("Adam.beta1 is deprecated: set Adam.betas = (beta1, beta2)", DeprecationWarning,
                      stacklevel=2)
        self.betas = (value, self.betas[1])

    @property
    def beta2(self):
        warnings.warn("Adam.beta2 is deprecated: use Adam.betas[1]", DeprecationWarning, stacklevel=2)
        return self.betas[1]

    @beta2.setter
    def beta2(self, value):
        warnings.warn("Adam.beta2 is deprecated: set Adam.betas = (beta1, beta2)", DeprecationWarning,
                      stacklevel=2)
        self.betas = (self.betas[0], value)


def _a_number(value):
    """A real number or a 0-d array: in ``set_hyper``'s second place, the old spelling's beta1."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or \
        (isinstance(value, np.ndarray) and value.ndim == 0)


def _betas_from_old_spelling(betas, beta1, beta2, current, spelling):
    """``(beta1, beta2)`` from the keywords before ``betas`` was one pair; one given alone
    keeps the other's ``current`` value."""
    warnings.warn(f"{spelling} is deprecated: pass betas=(beta1, beta2)", DeprecationWarning, stacklevel=3)
    if betas is not None:
        raise InputError(f"give betas={betas!r} or the deprecated beta1=, beta2=, not both")
    return (current[0] if beta1 is None else beta1), (current[1] if beta2 is None else beta2)


def _weight_decay_from_old_spelling(deprecated, weight_decay):
    """``SGD(params, lr, momentum, weight_decay)``: the fourth positional argument, taken
    before ``weight_decay`` became keyword only (PyTorch's fourth is ``dampening``)."""
    if len(deprecated) > 1:
        raise InputTypeError(f"SGD takes at most 4 positional arguments (params, lr, momentum and the deprecated "
                             f"weight_decay), got {3 + len(deprecated)}; pass the others by name")
    if weight_decay != 0.0:
        raise InputTypeError(f"SGD got weight_decay twice: {deprecated[0]!r} as its fourth positional argument "
                             f"and weight_decay={weight_decay!r}")
    # a FutureWarning, shown wherever the call is (a DeprecationWarning is hidden outside __main__):
    # code ported from PyTorch would train with another penalty than its author meant
    warnings.warn("SGD's fourth positional argument is deprecated (PyTorch's SGD takes dampening there, which "
                  "npvae does not have): pass weight_decay= by name", FutureWarning, stacklevel=3)
    return deprecated[0]


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum (PyTorch's rule, without dampening or Nesterov).

    .. math::

        g \leftarrow g + w\theta, \qquad
        b \leftarrow \rho\, b + g \;(b = g \text{ at the first step}), \qquad
        \theta \leftarrow \theta - \mathrm{lr} \cdot b

    (without momentum, :math:`\theta \leftarrow \theta - \mathrm{lr} \cdot g`).

    Parameters
    ----------
    params : list of Parameter
    lr : float
        The step size, > 0 (a schedule may set ``optimizer.lr``, down to 0, between steps).
        Default 0.01, where PyTorch's ``SGD`` defaults to 0.001: code ported from PyTorch
        should pass ``lr``.
    momentum : float
        :math:`\rho \ge 0`, how much of the buffer :math:`b` each step keeps (0: plain SGD).
    weight_decay : float
        :math:`w \ge 0`, an L2 penalty: :math:`w\theta` is added to the gradient first.
        By name: given as the fourth positional argument, where PyTorch's ``SGD`` takes
        ``dampening`` (which npvae does not have), it is still taken, with a
        ``FutureWarning`` (shown wherever the call is).
    backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error); keyword only
    """

    state_names = ("momentum_buffer",)
    # the hyper-parameters, each checked whenever it is set (npvae.validate.Setting)
    lr = Setting(check_non_negative_number, _FITS)     # >= 0: a schedule may bring it down to 0
    momentum = Setting(check_non_negative_number, _FITS)
    weight_decay = Setting(check_non_negative_number, _FITS)

    def __init__(self, params, lr=1e-2, momentum=0.0, *deprecated, weight_decay=0.0, backend=None):
        super().__init__(params, backend)
        if deprecated:
            weight_decay = _weight_decay_from_old_spelling(deprecated, weight_decay)
        self._set_checked(lr=self._first_lr(lr), momentum=momentum, weight_decay=weight_decay)

    def hyper(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def set_hyper(self, lr=None, momentum=None, weight_decay=None):
        """Set the hyper-parameters given (None keeps one as it is). All or nothing: every
        value is checked before any is set."""
        hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
        self._set_checked(**{name: value for name, value in hyper.items() if value is not None})

    def step(self):
        """One SGD update of every parameter from its ``.grad``."""
        self.t += 1
        for p in self.params:
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = self.state[p]["momentum_buffer"]
                # b = g at the first step (PyTorch makes the buffer then), as the fast path has it too
                buf[...] = g if self.t == 1 else self.momentum * buf + g
                g = buf
            p.data -= self.lr * g
