"""Which models and optimizers the fast path can run: the VAE exactly as its constructor
builds it, and npvae's own Adam or SGD.

The fused step (:mod:`npvae.fast.step`) does not run the model's code: it computes, from
the model's parameters, what the stock :class:`~npvae.model.VAE` computes. A model that
computes something else (a subclass with its own ``loss``, a ReLU swapped for a
Sigmoid, an extra parameter) would be trained as if it were the stock one, so
:func:`check_supported` refuses it and names the reference, which runs the model's own code.
Likewise the fused update does not call ``optimizer.step``: :func:`check_supported_optimizer`
refuses any optimizer but npvae's Adam and SGD themselves (a subclass could change what a step
does), and one with a ``step`` set on the object.
"""
import numpy as np

from ..errors import InputTypeError
from ..layers import Dense, ReLU, Sequential
from ..losses import KL, BCEWithLogits
from ..model import VAE, check_vae, loss_ops
from ..validate import same_class, same_type
from ..optim import SGD, Adam, Optimizer
from ..sampler import Sampler

#: The VAE methods whose results each use of the fast path computes itself (the reference's
#: training runs ``zero_grad``, ``loss`` and ``backward``; its evaluation runs ``encode``, then
#: the decoder, and computes the loss terms itself).
TRAINING_METHODS = ("zero_grad", "loss", "backward")
EVALUATION_METHODS = ("encode",)

_USE_REFERENCE = "; use backend='numpy' (the reference), which runs the model's own code"
OWN_LOOP = ("; train it on the reference, which runs the model's own code, in a loop of your own: "
            "model.zero_grad, model.loss, model.backward and optimizer.step")


def check_supported(model, methods, name="model", instead=_USE_REFERENCE):
    """Return ``model`` if the fast path computes exactly what it computes; else InputTypeError.

    Parameters
    ----------
    model : VAE
        Supported: a :class:`~npvae.model.VAE` (or a subclass) that leaves ``methods``
        as VAE defines them, whose encoder and decoder are the constructor's
        ``Sequential`` of ``Dense`` and ``ReLU`` layers, with the stock ``Sampler``,
        ``KL`` and ``BCEWithLogits``, and whose parameters are those layers' weights
        and biases, of the model's dtype. No ``forward`` or ``backward`` may be set on one
        of its modules' objects: the fast path computes the stock ones. For training, no module
        may sit in two places (one ReLU object in the encoder and the decoder): the reference
        refuses that, and so does the fast path, though it could compute it.
    methods : sequence of str
        The methods the caller would otherwise run: :data:`TRAINING_METHODS` or
        :data:`EVALUATION_METHODS`.
    name : str
        The argument's name, for the message.
    instead : str
        The end of the message: what to use instead (``backend='numpy'``, or :data:`OWN_LOOP`).

    Raises
    ------
    InputTypeError
        Naming what differs, and what to use instead (``instead``).
    """
    check_vae(model, name)
    cls = type(model).__name__
    for method in methods:
        if method in vars(model):
            raise InputTypeError(f"{name}.{method} is set on the model itself, and the fast path does not "
                                 f"run it" + instead)
        own = getattr(type(model), method)
        if own is not getattr(VAE, method) and not same_type(_owner(type(model), method), _owner(VAE, method)):
            raise InputTypeError(f"{name}: {cls} overrides VAE.{method}, which the fast path does not run"
                                 + instead)
    for part, kind in (("sampler", Sampler), ("kl", KL), ("bce", BCEWithLogits)):
        got = getattr(model, part, None)
        if not same_class(got, kind):
            raise InputTypeError(f"{name}.{part} is a {type(got).__name__}, but the "
                                 f"fast path computes npvae's {kind.__name__}" + instead)
    runs = ("encoder", "decoder", "sampler", "kl", "bce") if "loss" in methods else ("encoder", "decoder")
    for path, module in model.named_modules():      # a layer's own code set on the object: never run either
        for method in ("forward", "backward"):
            if path.split(".")[0] in runs and method in vars(module):
                raise InputTypeError(f"{name}.{path}.{method} is set on the {type(module).__name__} itself, "
                                     f"and the fast path does not run it" + instead)
    if "loss" in methods:       # refused by the reference's loss() (its modules keep one pass each): here too
        loss_ops(model, name)
    enc = [model.input_dim, *model.hidden_dims, 2 * model.latent_dim]
    dec = [model.latent_dim, *model.hidden_dims[::-1], model.input_dim]
    dense = _check_stack(model, "encoder", enc, name, instead) + _check_stack(model, "decoder", dec, name, instead)
    expected = [p for layer in dense for p in (layer.weight, layer.bias)]
    if [id(p) for p in model.parameters()] != [id(p) for p in expected]:
        raise InputTypeError(f"{name}.parameters() are not exactly its Dense layers' weights and biases, "
                             "in order, which is all the fast path trains" + instead)
    named = list(model.named_parameters())
    for a, p in named:
        if "zero_grad" in methods and "zero_grad" in vars(p):     # model.zero_grad calls it, training
            raise InputTypeError(f"{name}.{a}.zero_grad is set on the Parameter itself, and the fast path "
                                 f"does not run it" + instead)
    for i, (a, p) in enumerate(named):           # tied weights: the fast path keeps a copy of each
        for b, q in named[i + 1:]:
            if np.may_share_memory(p.data, q.data):
                raise InputTypeError(f"{name}: {a} and {b} share memory (tied weights), which the fast path "
                                     f"would hold as two copies" + instead)
    return model


def check_supported_optimizer(optimizer, name="optimizer"):
    """Return ``optimizer`` if the fast path's fused update does what its ``step`` does; else
    InputTypeError, naming the reference.

    Supported: npvae's :class:`~npvae.optim.Adam` or :class:`~npvae.optim.SGD` itself (not a
    subclass), with no ``step`` of its own set on the optimizer (a wrapper that clips the
    gradients, or sets ``lr`` every step, would never be called). Its hyper-parameters may
    change between steps: the fused update takes them from ``optimizer.hyper()``.
    """
    instead = ("; other updates run on the reference, which calls optimizer.step: fit(backend='numpy'), "
               "or a loop of your own of model.zero_grad, model.loss, model.backward and optimizer.step")
    if not isinstance(optimizer, Optimizer):
        raise InputTypeError(f"{name} must be an npvae optimizer, got {type(optimizer).__name__}")
    if type(optimizer) not in (Adam, SGD):
        raise InputTypeError(f"{name}: the fast path runs npvae's Adam and SGD, not "
                             f"{type(optimizer).__name__}" + instead)
    t = optimizer.t     # the fused update counts in integers: 3.0 is 3, 2.5 would be cut to 2
    if not (np.ndim(t) == 0 and np.asarray(t).dtype.kind in "iuf" and np.isfinite(t) and t == np.round(t)
            and 0 <= t <= 2 ** 53):
        raise InputTypeError(f"{name}.t must be a whole number of steps taken, from 0 to 2**53, got {t!r}"
                             + instead)
    if "step" in vars(optimizer):
        raise InputTypeError(f"{name}.step is set on the optimizer itself, and the fast path does not run it "
                             f"(its fused update is {type(optimizer).__name__}'s own)" + instead)
    return optimizer


def _owner(cls, method):
    """The class whose own ``method`` ``cls`` runs (a reloaded npvae.model's VAE has methods of its
    own, the same code)."""
    return next(c for c in cls.__mro__ if method in vars(c))


def _check_stack(model, part, sizes, name, instead):
    """The Dense layers of ``model.<part>``, if it is Dense -> ReLU -> ... -> Dense through ``sizes``."""
    stack = getattr(model, part, None)
    want = " -> ".join(f"Dense({i}, {o})" for i, o in zip(sizes[:-1], sizes[1:]))
    layers = stack.layers if type(stack) is Sequential else None
    kinds = [Dense if i % 2 == 0 else ReLU for i in range(2 * len(sizes) - 3)]
    if layers is None or [type(layer) for layer in layers] != kinds:
        got = type(stack).__name__ if layers is None else " -> ".join(type(layer).__name__ for layer in layers)
        raise InputTypeError(f"{name}.{part} is {got}, but the fast path computes {want} with a ReLU "
                             "between each two" + instead)
    for k, i, o in zip(range(0, len(layers), 2), sizes[:-1], sizes[1:]):
        for attr, shape in (("weight", (i, o)), ("bias", (o,))):
            p = getattr(layers[k], attr)
            if p.shape != shape or p.dtype != model.dtype:
                raise InputTypeError(f"{name}.{part}[{k}].{attr} is {p.shape} {p.dtype}, but the fast path "
                                     f"computes {shape} {model.dtype} there ({want})" + instead)
    return layers[::2]
