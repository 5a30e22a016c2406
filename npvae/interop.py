"""Move weights between npvae and PyTorch VAEs, as plain NumPy arrays (no torch import).

Two PyTorch layouts are understood:

``"sequential"``
    The tutorial VAE written with ``nn.Sequential`` encoder and decoder, named like
    npvae's own modules::

        encoder.0.weight (400, 784)   encoder.0.bias (400,)     Linear(784, 400), then ReLU (index 1)
        encoder.2.weight (40, 400)    encoder.2.bias (40,)      Linear(400, 2d): [mu | logvar]
        decoder.0.weight (400, 20)    ...                       Linear(d, 400), ReLU, Linear(400, 784)
        decoder.2.weight (784, 400)   decoder.2.bias (784,)

    Any depth works (``encoder.4.*`` ... for more hidden layers).

``"examples"``
    The original ``pytorch/examples`` VAE: ``fc1`` (784 -> 400), ``fc21`` and ``fc22``
    (400 -> d, the mu and logvar heads), ``fc3`` (d -> 400), ``fc4`` (400 -> 784).
    npvae's ``encoder.2`` is the two heads side by side, ``[mu | logvar]``, so
    ``fc21`` is its first ``d`` outputs and ``fc22`` the last ``d``. Only models
    with one hidden layer can be written in this layout.

PyTorch's ``Linear`` stores its weight as ``(out_features, in_features)`` and
npvae's ``Dense`` as ``(in_features, out_features)``: every weight is transposed
on the way (into a fresh contiguous array). To go from a torch model::

    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    npvae.interop.from_torch_state_dict(model, sd)        # layout detected from the names

and back: ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in
to_torch_state_dict(model, layout).items()})``.
"""
import os
from collections.abc import Mapping

import numpy as np

from .errors import InputError, InputTypeError, StateDictError
from .module import Module
from .validate import check_not_a_checkpoint, check_state_entry, is_transposed

LAYOUTS = ("sequential", "examples")
_EXAMPLES_OURS = ("encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
                  "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias")


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def _params(model, layout):
    """``{name: array}`` of the model's parameters, after checking the layout can express it."""
    if not isinstance(model, Module):
        hint = (": npvae.load_model(path) reads a checkpoint's model first" if isinstance(model, (str, os.PathLike))
                or type(model).__name__ == "Checkpoint" else "")
        raise InputTypeError(f"model must be an npvae Module (e.g. npvae.VAE), got {type(model).__name__}{hint}")
    params = {n: p.data for n, p in model.named_parameters()}
    for name, a in params.items():
        leaf = name.rsplit(".", 1)[-1]
        if not ((leaf == "weight" and a.ndim == 2) or (leaf == "bias" and a.ndim == 1)):
            raise InputError(f"parameter {name!r} {a.shape} is not a Dense weight or bias; "
                             f"it has no PyTorch Linear equivalent")
    if layout == "examples":
        if sorted(params) != sorted(_EXAMPLES_OURS):
            hidden = getattr(model, "hidden_dims", None)
            raise InputError(
                "the 'examples' layout (fc1, fc21, fc22, fc3, fc4) describes a VAE with exactly one "
                f"hidden layer, encoder.0/encoder.2 and decoder.0/decoder.2; this model has "
                f"hidden_dims={hidden} and parameters {sorted(params)}: use layout='sequential'")
        head, latent = params["encoder.2.weight"].shape[1], params["decoder.0.weight"].shape[0]
        if head != 2 * latent:
            raise InputError(
                f"the 'examples' layout splits the encoder's head into fc21 (the mean) and fc22 (the "
                f"log-variance), the two halves of 2 * latent_dim outputs; this model's encoder.2 has {head} "
                f"outputs, and its decoder takes {latent} inputs: use layout='sequential'")
    return params


def to_torch_state_dict(model, layout="sequential"):
    """The model's parameters as a PyTorch state dict of NumPy arrays.

    Parameters
    ----------
    model : npvae.VAE (or any Module made of Dense layers, for ``"sequential"``)
    layout : {"sequential", "examples"}
        PyTorch naming to produce (see the module docstring).

    Returns
    -------
    dict of str -> ndarray
        Fresh, contiguous arrays in the model's dtype; weights are ``(out, in)``.

    Raises
    ------
    InputError
        Unknown layout, or a model the layout cannot express (e.g. two hidden
        layers in the ``"examples"`` layout).
    InputTypeError
        ``model`` is no npvae model (a path, say: ``npvae.load_model`` reads one).
    """
    params = _params(model, _check_layout(layout))
    if layout == "sequential":
        return {n: a.T.copy() if a.ndim == 2 else a.copy() for n, a in params.items()}
    w2, b2 = params["encoder.2.weight"], params["encoder.2.bias"]
    d = w2.shape[1] // 2
    return {"fc1.weight": params["encoder.0.weight"].T.copy(),
            "fc1.bias": params["encoder.0.bias"].copy(),
            "fc21.weight": w2[:, :d].T.copy(), "fc21.bias": b2[:d].copy(),
            "fc22.weight": w2[:, d:].T.copy(), "fc22.bias": b2[d:].copy(),
            "fc3.weight": params["decoder.0.weight"].T.copy(),
            "fc3.bias": params["decoder.0.bias"].copy(),
            "fc4.weight": params["decoder.2.weight"].T.copy(),
            "fc4.bias": params["decoder.2.bias"].copy()}


def _check_mapping(state_dict):
    """``state_dict`` is a mapping of names to arrays, and not an npvae checkpoint's entries."""
    if isinstance(state_dict, Module):
        raise StateDictError(f"state_dict is an npvae {type(state_dict).__name__}, not a state dict: the "
                             "arguments are (model, state_dict); between two npvae models, "
                             "model.load_state_dict(other.state_dict())")
    if not isinstance(state_dict, Mapping):
        kind = type(state_dict).__name__
        if callable(state_dict) and getattr(state_dict, "__name__", "") == "state_dict":
            raise StateDictError("state_dict is the method state_dict, not its result: call it, "
                                 "module.state_dict()")
        if callable(getattr(state_dict, "state_dict", None)):       # a torch.nn.Module, say
            raise StateDictError(f"state_dict is a {kind}, not its state dict: pass {{k: v.detach().cpu()"
                                 f".numpy() for k, v in module.state_dict().items()}}")
        raise StateDictError(f"state_dict must be a mapping of names to arrays (a dict, an np.load of "
                             f".npz), got {kind}")
    check_not_a_checkpoint(state_dict)


def detect_layout(state_dict):
    """``"examples"`` if the names are ``fc1...``, ``"sequential"`` if ``encoder.*``/``decoder.*``.

    Raises
    ------
    StateDictError
        If the names fit neither layout.
    """
    _check_mapping(state_dict)
    keys = list(state_dict)
    if not all(isinstance(k, str) for k in keys):
        raise StateDictError(f"state_dict keys must be parameter names (str), got {keys[:6]!r}")
    mean_heads = [k for k in keys if any(w in part for part in k.split(".")[:-1] for w in ("mu", "mean"))]
    var_heads = [k for k in keys if any("var" in part for part in k.split(".")[:-1])]
    if mean_heads and var_heads:        # a VAE of one's own, e.g. fc_mu and fc_logvar
        others = {k.split(".")[0] for k in keys if k not in mean_heads + var_heads}
        if others == {"fc1", "fc3", "fc4"}:         # the PyTorch example's VAE but for the heads' names
            fix = ("The other names are the 'examples' layout's: rename the heads fc21 (the mean) and fc22 "
                   "(the log-variance)")
        else:
            fix = ("npvae's encoder ends in one layer giving [mu | logvar]. Join the two heads into one "
                   "layer, the mean's outputs first (np.concatenate of their weights along axis 0, "
                   "PyTorch's output axis, and of their biases), and name the layers as in one of the two "
                   "layouts (npvae.interop's docstring shows them)")
        raise StateDictError(f"the state dict has a head for the mean ({mean_heads[0]}, ...) and one for the "
                             f"log-variance ({var_heads[0]}, ...). {fix}")
    if keys and all(k.startswith("fc") for k in keys):
        return "examples"
    if keys and all(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "sequential"
    outside = {"sequential": [k for k in keys if not k.startswith(("encoder.", "decoder."))],
               "examples": [k for k in keys if not k.startswith("fc")]}
    likely = min(outside, key=lambda name: len(outside[name]))
    if len(outside[likely]) < len(keys) / 2:       # most names fit one layout: name the others
        extra = outside[likely]
        raise StateDictError(f"the state dict's names are of the {likely!r} layout but for {extra[:6]}"
                             f"{'...' if len(extra) > 6 else ''}, which fit no npvae VAE (a buffer, "
                             f"another module's entries): leave those out")
    raise StateDictError(f"cannot tell the layout of a state dict with keys {sorted(keys)[:6]}"
                         f"{'...' if len(keys) > 6 else ''}: expected encoder.*/decoder.* "
                         f"('sequential') or fc1, fc21, fc22, fc3, fc4 ('examples'){_wrapping_hint(state_dict)}")


def _wrapping_hint(state_dict):
    """What wraps the names, where something does: a prefix (DataParallel, torch.compile), or a
    training checkpoint's dict holding the state dict under a key."""
    keys = list(state_dict)
    for prefix, source in (("module.", "a DataParallel model"), ("_orig_mod.", "a torch.compile model")):
        if keys and all(isinstance(k, str) and k.startswith(prefix) for k in keys):
            return f"; the names start with {prefix!r} ({source}): strip that prefix first"
    inner = next((k for k, v in state_dict.items() if isinstance(v, Mapping) and v
                  and all(isinstance(n, str) and n.startswith(("fc", "encoder.", "decoder.")) for n in v)), None)
    if inner is not None:           # {"model": model.state_dict(), "optimizer": ..., "epoch": 3}
        return f"; it holds a dict under {inner!r} (a training checkpoint?): pass state_dict[{inner!r}]"
    return ""


def _validate(model, state_dict, layout):
    """Check names, types, shapes, dtypes and values against what the model would export."""
    expected = to_torch_state_dict(model, layout)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise StateDictError(f"PyTorch state dict ({layout!r} layout) does not match the model: "
                             f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
                             f"{_wrapping_hint(state_dict)}")
    for key, want in expected.items():
        v = state_dict[key]
        check_state_entry(key, v, want, " (that is npvae's (in, out) orientation; PyTorch's Linear "
                                        "stores (out, in))" if is_transposed(v, want) else "")


def from_torch_state_dict(model, state_dict, layout=None):
    """Load a PyTorch VAE state dict (NumPy arrays) into ``model``.

    Everything is checked before anything is written: on any error the model
    is unchanged.

    Parameters
    ----------
    model : npvae.VAE
        The model to load into; its architecture and dtype must match the weights.
    state_dict : mapping of str -> ndarray
        PyTorch names and orientation (weights ``(out, in)``), e.g.
        ``{k: v.numpy() for k, v in torch_model.state_dict().items()}``.
    layout : {"sequential", "examples"} or None
        None detects it from the names (:func:`detect_layout`).

    Returns
    -------
    model
        The same model, for chaining.

    Raises
    ------
    StateDictError
        Missing or unexpected names, a value that is not an array, a wrong shape
        or dtype, NaN or inf, or names that fit no layout.
    InputError
        Unknown layout, or a model the layout cannot express.
    InputTypeError
        ``model`` is no npvae model.
    """
    _check_mapping(state_dict)
    state_dict = dict(state_dict)           # each value read once (an np.load reads on every access)
    layout = detect_layout(state_dict) if layout is None else _check_layout(layout)
    _validate(model, state_dict, layout)
    if layout == "sequential":
        ours = {k: v.T if v.ndim == 2 else v for k, v in state_dict.items()}
    else:
        sd = state_dict
        ours = {"encoder.0.weight": sd["fc1.weight"].T, "encoder.0.bias": sd["fc1.bias"],
                "encoder.2.weight": np.concatenate([sd["fc21.weight"], sd["fc22.weight"]], axis=0).T,
                "encoder.2.bias": np.concatenate([sd["fc21.bias"], sd["fc22.bias"]]),
                "decoder.0.weight": sd["fc3.weight"].T, "decoder.0.bias": sd["fc3.bias"],
                "decoder.2.weight": sd["fc4.weight"].T, "decoder.2.bias": sd["fc4.bias"]}
    return model.load_state_dict(ours)     # copies into the parameters


#: alias of :func:`from_torch_state_dict`
load_torch_state_dict = from_torch_state_dict
