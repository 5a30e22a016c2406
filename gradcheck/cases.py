"""The cases: each builds an op (or a whole model) with fixed inputs and returns Problems.

A case is ``build(dtype, rng, h) -> [Problem, ...]``; everything random comes from
``rng``, so a seed fixes the table. Shapes are small (B = 3, widths 3-12) because
every element is perturbed. :data:`CASES` maps each name to ``(backend, build)``:

* ``"numpy"``: the reference, op by op (each layer, the sampler, the losses), a
  ``Sequential``, whole VAEs, and the optimizers' update rules;
* ``"numba"``: the fast path's fused step (:class:`npvae.fast.FastVAE`) on whole VAEs,
  including the paths it takes only for speed (live columns, retired units): its gradients
  against finite differences of its own loss, and its loss and gradients against the
  reference's (``VAE.loss``, ``VAE.backward``) to round-off; and its fused optimizers
  against the reference's closed forms.

Square layers (``in == out``) are in the op cases and in a whole-model case: a
transposed weight gradient has the right shape there, so only the numbers catch it.

ReLU kinks: the numerical derivative is meaningless if a step crosses ``max(x, 0)``'s
kink, so ReLU inputs are kept at least ``20 h`` from 0 (for networks, by the smallest
shift of each hidden unit's bias that achieves it).
"""
import numbers
import types

import numpy as np

from npvae import (BCE, KL, SGD, VAE, Adam, BCEWithLogits, Dense, Module, Parameter, ReLU, Sampler, Sequential,
                   Sigmoid)

from .core import ContractBroken, Problem

B = 3


def _dot(R, y):
    """``sum(R * y)`` in float64, for one output or a tuple of them."""
    ys = y if isinstance(y, tuple) else (y,)
    return float(sum(np.dot(r.ravel().astype(np.float64), v.ravel().astype(np.float64))
                     for r, v in zip(R, ys)))


def op_problem(module, forward, backward, inputs, rng, tag=""):
    """Check ``L = sum(R * forward())`` w.r.t. ``inputs`` and ``module``'s parameters.

    ``backward(R)`` runs the module's backward and returns ``{input name: grad}`` (input
    names other than the parameters' names). The module's forward must return the inputs'
    dtype, and its backward must leave ``R`` (its incoming gradient) as it was, return each
    input's gradient as an ndarray of that input's dtype (a float64 gradient from a float32
    input shows in ``run(cases, dtype=np.float32)``, whose tolerances are float32's), and add
    (``+=``) into each parameter's ``.grad`` (a second backward without ``zero_grad`` doubles
    it); the module's ``zero_grad`` must set every ``.grad`` to 0 (a gradient is left behind
    first, as the last step's is in training); and no forward or backward may replace a
    parameter or its ``.data`` (an optimizer updates that array in place): else
    :class:`ContractBroken`.

    Keep the inputs away from kinks (ReLU's or a LeakyReLU's 0): a step of ``h`` (the case's
    third argument: 1e-5 in float64, 1e-2 in float32) across one makes the finite difference
    meaningless, and a right gradient fails. The stock cases keep ReLU inputs ``20 h`` away;
    for a layer's own input, draw it so: ``rng.choice([-1, 1], shape) * rng.uniform(20 * h, 2, shape)``.
    Forward and backward must leave their inputs as they were (else :class:`ContractBroken`).
    ``tag`` is added to the tensors' names in the table (``"[beta=0.5]"``, say).

    Your own layer (a :class:`npvae.Module` with ``forward(x)`` and ``backward(grad_out)``)
    is checked the same way::

        import numpy as np
        import npvae
        from gradcheck import op_problem, run, format_table

        class Tanh(npvae.Module):
            def forward(self, x):
                y = np.tanh(x)
                self.keep(y=y)                          # what backward needs
                return y

            def backward(self, grad_out):
                return grad_out * (1 - self.saved("y") ** 2)   # a new array: grad_out is the caller's

        def tanh_case(dtype, rng, h):
            layer, x = Tanh(), rng.standard_normal((3, 5)).astype(dtype)
            return [op_problem(layer, lambda: layer.forward(x),
                               lambda R: {"x": layer.backward(R)}, {"x": x}, rng)]

        rows = run({"tanh": ("numpy", tanh_case)})
        print(format_table(rows))
    """
    originals = {n: np.array(v, copy=True) for n, v in inputs.items() if isinstance(v, np.ndarray)}
    y = forward()
    params = _parameters(module, inputs, "op_problem")     # after a forward: a layer may make them there
    ys = y if isinstance(y, tuple) else (y,)
    for v in ys:
        if isinstance(v, np.ndarray) and v.ndim > 0:
            continue
        if v is None:
            raise TypeError("op_problem: forward() returned None where a layer returns an array (a return "
                            "statement missing?)")
        if isinstance(v, numbers.Number) or isinstance(v, np.ndarray):      # a float, or a 0-d array
            raise TypeError(f"op_problem: forward() returned a number ({type(v).__name__}) where a layer returns "
                            f"an array: a loss is checked with gradcheck.loss_problem, whose docstring shows how")
        raise TypeError(f"op_problem: forward() returned a {type(v).__name__} where a layer returns an array "
                        f"(or a tuple of arrays)")
    R = [rng.standard_normal(v.shape).astype(v.dtype) for v in ys]

    floats = {v.dtype for v in inputs.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}

    def grads():
        upstream = [r.copy() for r in R]
        arg = upstream if isinstance(y, tuple) else upstream[0]
        out = forward()
        for v in (out if isinstance(out, tuple) else (out,)):   # the next layer takes the inputs' dtype
            if len(floats) == 1 and isinstance(v, np.ndarray) and v.dtype != next(iter(floats)):
                raise ContractBroken(f"forward returned {v.dtype} from {next(iter(floats))} inputs")
        backward(arg)            # leave gradients behind: zero_grad must really discard them
        for n, v in originals.items():   # (since op_problem's own forward) else the math is blamed for it
            if not np.array_equal(inputs[n], v, equal_nan=True):
                raise ContractBroken(f"forward or backward wrote into {n}")
        _check_kept(module, params, tensors)
        _check_zero_grad(module, params)
        forward()
        out = backward(arg)
        if not isinstance(out, dict):
            raise TypeError(f"op_problem: backward(R) must return {{input name: gradient}}, got "
                            f"{type(out).__name__}")
        if any(not np.array_equal(u, r) for u, r in zip(upstream, R)):
            raise ContractBroken("backward wrote into its grad_out")
        _check_kept(module, params, tensors)
        out = {n: _gradient(g, n, inputs.get(n)) for n, g in out.items()}
        out.update({n: None if p.grad is None else p.grad.copy() for n, p in params.items()})
        forward()
        backward([r.copy() for r in R] if isinstance(y, tuple) else R[0].copy())
        _check_added(params, out)
        return out

    tensors = {**inputs, **{n: p.data for n, p in params.items()}}
    return Problem(tensors, lambda: _dot(R, forward()), grads, tag)


def _gradient(g, name, x):
    """A copy of backward's gradient ``g`` of input ``name`` (``x``: that input), or ContractBroken."""
    if g is None:
        return None
    if not isinstance(g, np.ndarray):   # else a list passes here, and fails in a model
        raise ContractBroken(f"backward returned the gradient of {name} as a {type(g).__name__}; it must be "
                             f"an ndarray, as the layer before it takes")
    if isinstance(x, np.ndarray) and g.dtype != x.dtype:     # else the layer before it is blamed, in training
        raise ContractBroken(f"backward returned the gradient of {name} in {g.dtype}, but {name} is {x.dtype}")
    return np.array(g, copy=True)


def _check_zero_grad(module, params):
    """``module.zero_grad()`` sets every ``.grad`` of ``params`` to 0 (a gradient is left behind first)."""
    module.zero_grad()
    for n, p in params.items():
        if p.grad is not None and np.any(p.grad):
            raise ContractBroken(f"zero_grad left {n}.grad non-zero (it must set every entry to 0)")


def _check_added(params, out):
    """After a second forward and backward with no ``zero_grad``, each ``.grad`` is twice ``out``'s."""
    for n, p in params.items():
        if p.grad is None:
            raise ContractBroken(f"backward left {n}.grad None (it must add its gradient into it)")
        scale = np.max(np.abs(out[n]), initial=0.0)    # per tensor: a sum in another order may
        off = np.max(np.abs(p.grad - 2 * out[n]), initial=0.0)   # cancel to ~0 in one element
        if np.isfinite(scale) and not off <= 64 * np.finfo(p.grad.dtype).eps * scale:
            raise ContractBroken(f"backward set {n}.grad instead of adding into it (+=)")


def _parameters(module, inputs, caller):
    """``{name: Parameter}`` of ``module``, all of which ``parameters()`` sees, named apart from ``inputs``
    (none for an object that is no :class:`npvae.Module` and holds no Parameter: a plain loss)."""
    if not isinstance(module, Module):
        held = [a for a, v in getattr(module, "__dict__", {}).items() if _holds_parameters(v)]
        if held:
            raise TypeError(f"{caller}: {type(module).__name__} holds Parameters ({', '.join(held)}) but is no "
                            f"npvae.Module, so neither this check nor an optimizer sees them: subclass npvae.Module")
        return {}
    hidden = _hidden_parameters(module)
    if hidden:
        raise TypeError(f"{caller}: {hidden} holds Parameters where parameters() does not see them (neither "
                        f"this check nor an optimizer would): give each Parameter or layer an attribute of its own")
    params = dict(module.named_parameters())
    clash = sorted(set(params) & set(inputs))
    if clash:
        raise TypeError(f"{caller}: {clash} name both an input and a parameter of the module; give the "
                        f"input another name (each is a row of its own)")
    return params


def _holds_parameters(value, seen=None):
    """``value`` is a Parameter or a Module with some, or holds one: in a list, tuple or dict, or
    in an attribute of a plain object (each object looked into once)."""
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (type, types.ModuleType, types.FunctionType, np.ndarray)):
        return False
    seen.add(id(value))
    if isinstance(value, Parameter):
        return True
    if isinstance(value, Module):
        return bool(value.parameters())
    items = (value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple))
             else vars(value).values() if hasattr(value, "__dict__") else ())
    return any(_holds_parameters(v, seen) for v in items)


def _check_kept(module, params, tensors):
    """The module still holds the Parameters taken, holding the arrays the check nudges (``tensors``)."""
    now = dict(module.named_parameters()) if params else {}
    for n, p in params.items():
        if now.get(n) is not p:
            raise ContractBroken(f"forward or backward replaced the Parameter {n}; update its array in place "
                                 f"({n}.data[...] = ...), as an optimizer's step does")
        if p.data is not tensors[n]:
            raise ContractBroken(f"forward or backward replaced {n}.data with another array; update it in place "
                                 f"({n}.data[...] = ...), as an optimizer's step does")


def _hidden_parameters(module):
    """Where ``module`` or a sub-module keeps a Parameter, or a layer with some, in a list, tuple
    or dict (PyTorch's pitfall too): ``"Name.attribute"``, or None."""
    seen = {id(p) for p in module.parameters()}
    for m in module.modules():
        for attr, held in vars(m).items():
            items = held.values() if isinstance(held, dict) else held if isinstance(held, (list, tuple)) else ()
            for item in items:
                params = ([item] if isinstance(item, Parameter) else
                          item.parameters() if isinstance(item, Module) else ())
                if any(id(p) not in seen for p in params):
                    return f"{type(m).__name__}.{attr} (a {type(held).__name__})"
    return None


def loss_problem(module, forward, name, x, g=1.0, tag="", part=None):
    """Check a loss ``L = g * forward()`` w.r.t. ``x`` and ``module``'s parameters (a learned
    variance, say) against ``module.backward(grad=g)``.

    For a module whose ``forward`` returns a float (a loss: :class:`npvae.KL`,
    :class:`npvae.BCEWithLogits`, ...) and whose ``backward(grad=1.0)`` returns the gradient
    of ``grad * loss`` w.r.t. one input, and adds (``+=``) ``grad`` times the loss's gradient
    into each of its parameters' ``.grad``, as :func:`op_problem` asks of a layer;
    :func:`op_problem` checks layers (arrays out). Check a ``g`` other than 1 too: a
    ``backward`` that forgets ``grad`` passes at 1.

    Parameters
    ----------
    module : npvae.Module
        The loss; ``backward()`` is called when ``g`` is 1, ``backward(grad=g)`` otherwise.
        (A plain object with those two methods, holding no Parameter, is checked w.r.t. ``x``.)
    forward : callable
        ``forward()`` runs ``module.forward`` on ``x`` (and any inputs held fixed) and
        returns the loss. It runs once when the problem is made (a loss may make its
        parameters at its first forward), and again at each check.
    name : str
        ``x``'s name in the table.
    x : ndarray
        The input checked: ``forward`` must read this very array, whose elements are
        nudged in place one at a time.
    g : float, default 1.0
        The incoming gradient.
    tag : str
        Added to the tensors' names in the table (before ``[grad=g]``).
    part : int, optional
        For a ``backward`` that returns a tuple (or a list of arrays) of a gradient per input,
        say ``(dmu, dlogvar)``: the index of ``x``'s. Check each input in a problem of its own,
        the others held fixed.

    A KL of your own (say, an exercise in its backward) is checked so::

        import numpy as np
        from npvae import KL
        from gradcheck import loss_problem, run, format_table

        class MyKL(KL):                   # the stock forward; this backward is yours
            def backward(self, grad=1.0):
                h = self.saved("h")                     # (B, 2d): [mu | logvar]
                d = h.shape[1] // 2
                mu, logvar = h[:, :d], h[:, d:]
                return grad / len(h) * np.concatenate([mu, 0.5 * np.expm1(logvar)], axis=1)

        def my_kl_case(dtype, rng, h):
            kl, x = MyKL(), rng.standard_normal((3, 8)).astype(dtype)
            return [loss_problem(kl, lambda: kl.forward(x), "h", x, g) for g in (1.0, -1.7)]

        print(format_table(run({"my_kl": ("numpy", my_kl_case)})))
    """
    g = float(g)        # as training passes it: an np.float64 would make a float32 gradient float64
    original = np.array(x, copy=True)
    try:
        forward()                       # a loss may make its parameters at its first forward
        failed = None
    except Exception as e:              # raised when the problem is checked: this problem's row
        failed = e
    wrote = not np.array_equal(x, original, equal_nan=True)
    if wrote and isinstance(x, np.ndarray):
        x[...] = original               # the caller's array as it was (another problem may share it)
    params = _parameters(module, {name: x}, "loss_problem")
    tensors = {name: x, **{n: p.data for n, p in params.items()}}

    def backward():
        forward()
        return module.backward() if g == 1.0 else module.backward(grad=g)

    def loss():
        value = forward()
        if value is None:
            raise TypeError("loss_problem: forward() returned None where a loss returns a number (a return "
                            "statement missing?)")
        if np.ndim(value) != 0:
            raise TypeError(f"loss_problem: forward() returned an array of shape {np.shape(value)} where a loss "
                            f"is one number (summed or averaged over the batch)")
        return g * value

    def grads():
        if failed is not None:
            raise failed
        if wrote:                       # before another forward writes into x again
            raise ContractBroken(f"forward or backward wrote into {name}")
        before = x.copy()
        if params:
            backward()                  # leave gradients behind: zero_grad must really discard them
            _check_kept(module, params, tensors)
            _check_zero_grad(module, params)
        dx = backward()
        several = (isinstance(dx, tuple) or isinstance(dx, list) and all(isinstance(d, np.ndarray) for d in dx)) \
            and len(dx) > 0
        if isinstance(dx, list) and not several:    # rows (.tolist()), not a gradient per input
            raise ContractBroken(f"backward returned a list; the gradient of {name} must be an ndarray (the "
                                 f"gradients of several inputs: a tuple of them, checked with part=)")
        if several:
            if part is None or not -len(dx) <= part < len(dx):
                raise TypeError(f"loss_problem: backward returned a {type(dx).__name__} of {len(dx)} gradient(s); "
                                f"pass part= (the index of {name}'s, 0 to {len(dx) - 1}; got {part}) and check "
                                f"each input in a problem of its own (if they are pieces of {name}'s gradient, "
                                f"return it as one ndarray of shape {np.shape(x)})")
            dx = dx[part]
        if not np.array_equal(x, before, equal_nan=True):      # else the math is blamed for it
            raise ContractBroken(f"forward or backward wrote into {name}")
        _check_kept(module, params, tensors)
        out = {name: _gradient(dx, name, x), **{n: p.grad.copy() for n, p in params.items() if p.grad is not None}}
        if params:
            backward()
            _check_added(params, out)
        return out
    return Problem(tensors, loss, grads, tag + (f"[grad={g:g}]" if g != 1.0 else ""))


def away_from_kinks(layers, x, margin):
    """Run ``layers`` (Dense, ReLU, Sigmoid) on ``x`` in float64, shifting the bias of each
    Dense before a ReLU by the least amount that puts every pre-activation at least
    ``margin`` from 0; return the output."""
    a = np.asarray(x, np.float64)
    layers = list(layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            b = layer.bias.data
            a = a @ layer.weight.data.astype(np.float64) + b
            if i + 1 < len(layers) and isinstance(layers[i + 1], ReLU):
                for j in range(a.shape[1]):
                    v = a[:, j] - b[j]                      # without the bias
                    cands = np.concatenate([[b[j]], -v + 1.5 * margin, -v - 1.5 * margin])
                    ok = [c for c in cands if np.min(np.abs(v + c)) >= margin]
                    b[j] = min(ok, key=lambda c: abs(c - b[j]))
                    a[:, j] = v + b[j]
        elif isinstance(layer, ReLU):
            a = np.maximum(a, 0.0)
        elif isinstance(layer, Sigmoid):
            a = 1.0 / (1.0 + np.exp(-a))
        else:           # passing it over would shift the next ReLU's inputs by the wrong values
            raise TypeError(f"away_from_kinks: layers[{i}] is a {type(layer).__name__}; it knows Dense, "
                            "ReLU and Sigmoid: add the new layer's forward here")
    return a


# -- the reference, op by op ------------------------------------------------------------
def _dense(n_in, n_out):
    def build(dtype, rng, h):
        d = Dense(n_in, n_out, dtype=dtype, rng=rng)
        x = rng.standard_normal((B, n_in)).astype(dtype)
        return [op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)]
    return build


def relu(dtype, rng, h):
    r = ReLU()
    x = (rng.choice([-1.0, 1.0], (B, 6)) * rng.uniform(max(0.1, 20 * h), 1.0, (B, 6))).astype(dtype)
    return [op_problem(r, lambda: r.forward(x), lambda R: {"x": r.backward(R)}, {"x": x}, rng)]


def sigmoid(dtype, rng, h):
    s = Sigmoid()
    x = (2.0 * rng.standard_normal((B, 6))).astype(dtype)
    return [op_problem(s, lambda: s.forward(x), lambda R: {"x": s.backward(R)}, {"x": x}, rng)]


def _mu_logvar(rng, dtype, d=4):
    """``h = [mu | logvar]`` with logvar in [-2, 1.5] (variances from 0.14 to 4.5: most far from 1)."""
    return np.concatenate([rng.standard_normal((B, d)), rng.uniform(-2.0, 1.5, (B, d))], axis=1).astype(dtype)


def sampler(dtype, rng, h):
    s = Sampler(rng)
    hin = _mu_logvar(rng, dtype)
    eps = rng.standard_normal((B, 4)).astype(dtype)
    return [op_problem(s, lambda: s.forward(hin, eps), lambda R: {"h": s.backward(R)}, {"h": hin}, rng)]


def kl(dtype, rng, h):
    k = KL()
    hin = _mu_logvar(rng, dtype)
    return [loss_problem(k, lambda: k.forward(hin), "h", hin, g) for g in (1.0, -1.7)]


def bce_logits(dtype, rng, h):
    """Logits around 0, and saturated ones, +-8 to +-35 (a decoder's background pixels: p within 3.4e-4
    of 0 or 1, at +-35 within round-off), where a slip such as a clamp in backward alone would show."""
    problems = []
    for g in (1.0, -1.7):
        m = BCEWithLogits()
        logits = (2.0 * rng.standard_normal((B, 7))).astype(dtype)
        logits[0, :6] = [8.0, -8.0, 20.0, -20.0, 35.0, -35.0]
        t = rng.uniform(0.0, 1.0, (B, 7)).astype(dtype)
        problems.append(loss_problem(m, lambda m=m, l=logits, t=t: m.forward(l, t), "logits", logits, g))
    return problems


def bce(dtype, rng, h):
    out = []
    for g in (1.0, -1.7):
        m = BCE()
        lo = min(0.3, max(0.05, 30 * h))     # inside the clip range, and -log p's 3rd derivative small
        p = rng.uniform(lo, 1 - lo, (B, 7)).astype(dtype)
        t = rng.uniform(0.0, 1.0, (B, 7)).astype(dtype)
        out.append(loss_problem(m, lambda m=m, p=p, t=t: m.forward(p, t), "probs", p, g))
    return out


def sequential(dtype, rng, h):
    """Dense(5, 7) -> ReLU -> Dense(7, 7) (square) -> ReLU -> Dense(7, 4) -> Sigmoid."""
    seq = Sequential(Dense(5, 7, dtype=dtype, rng=rng), ReLU(), Dense(7, 7, dtype=dtype, rng=rng), ReLU(),
                     Dense(7, 4, dtype=dtype, rng=rng), Sigmoid())
    x = rng.standard_normal((B, 5)).astype(dtype)
    away_from_kinks(seq.layers, x, 20 * h)
    return [op_problem(seq, lambda: seq.forward(x), lambda R: {"x": seq.backward(R)}, {"x": x}, rng)]


def _vae_problems(model, rng, h, loss, grads_of, prepare=lambda x: x):
    """Problems for ``model``'s total loss (beta 1 and 0.5) w.r.t. every parameter.

    ``loss(x, beta, eps)`` and ``grads_of(x, beta, eps)`` compute the total and
    ``{name: gradient}``; ``x`` goes through ``prepare`` first (a layout, say).
    """
    dtype, d, betas = model.dtype, model.latent_dim, (1.0, 0.5)
    draws = [(rng.uniform(0.0, 1.0, (B, model.input_dim)).astype(dtype), rng.standard_normal((B, d)).astype(dtype))
             for _ in betas]
    # one shift of the ReLU biases for both batches (a shift for the second alone could put the
    # first's pre-activations on a kink)
    x_both, eps_both = (np.concatenate(parts) for parts in zip(*draws))
    hcode = away_from_kinks(model.encoder.layers, x_both, 20 * h)          # [mu | logvar]
    away_from_kinks(model.decoder.layers, hcode[:, :d] + np.exp(0.5 * hcode[:, d:]) * eps_both, 20 * h)
    out = []
    for beta, (x, eps) in zip(betas, draws):
        x = prepare(x)
        out.append(Problem({n: p.data for n, p in model.named_parameters()},
                           lambda x=x, beta=beta, eps=eps: loss(x, beta, eps),
                           lambda x=x, beta=beta, eps=eps: grads_of(x, beta, eps),
                           "" if beta == 1.0 else f"[beta={beta:g}]"))
    return out


def _vae(hidden, input_dim=12, latent_dim=3):
    def build(dtype, rng, h):
        model = VAE(input_dim, hidden, latent_dim, dtype=dtype, rng=rng)

        def grads_of(x, beta, eps):
            model.loss(x, beta=beta, eps=eps)
            model.backward()                     # stale gradients that zero_grad must discard
            model.zero_grad()
            model.loss(x, beta=beta, eps=eps)
            model.backward()
            return {n: p.grad.copy() for n, p in model.named_parameters()}

        return _vae_problems(model, rng, h, lambda x, beta, eps: model.loss(x, beta=beta, eps=eps).total,
                             grads_of)
    return build


# -- the optimizers' update rules -------------------------------------------------------
def _constant_gradient(make, expected_step, steps=8):
    """Run ``steps`` updates with one constant gradient and compare every step's displacement
    with ``expected_step(t, g, theta0)`` (``theta0`` the starting value): closed forms that bias
    correction, momentum and weight decay must meet."""
    def build(dtype, rng, h):
        p = Parameter(rng.standard_normal((3, 4)).astype(dtype))
        g = (rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.1, 2.0, (3, 4))).astype(dtype)
        opt = make(p)
        theta0 = p.data.astype(np.float64)
        moved, expected = [], []
        for t in range(1, steps + 1):
            before = p.data.copy()
            p.grad[...] = g
            opt.step()
            moved.append(before - p.data)
            expected.append(expected_step(t, g.astype(np.float64), theta0))
        exact = {f"step {t}": (m, e) for t, (m, e) in enumerate(zip(moved, expected), 1)}
        return [Problem({}, None, None, exact=exact)]
    return build


# Adam: with a constant g the bias-corrected moments are exactly g and g^2 at every step
# (whatever the betas: swapped betas pass here, and adam_varying catches them)
# (eps = 1e-3, not the default 1e-8, so that where eps goes shows above float32's round-off too)
adam = _constant_gradient(lambda p: Adam([p], lr=1e-2, eps=1e-3),
                          lambda t, g, _: 1e-2 * g / (np.abs(g) + 1e-3))
# plain SGD: every step moves lr * g
sgd = _constant_gradient(lambda p: SGD([p], lr=1e-2), lambda t, g, _: 1e-2 * g)
# SGD with momentum rho: the buffer after t steps is g (1 - rho^t) / (1 - rho)
sgd_momentum = _constant_gradient(lambda p: SGD([p], lr=1e-2, momentum=0.9),
                                  lambda t, g, _: 1e-2 * g * (1 - 0.9 ** t) / (1 - 0.9))


def _sgd_weight_decay_step(t, g, theta0, lr=0.1, w=0.5):
    r"""SGD with weight decay :math:`w` (no momentum) moves :math:`\mathrm{lr}(g + w\,\theta_{t-1})`,
    where :math:`\theta_{t-1} = a^{t-1} \theta_0 - \mathrm{lr}\, g\, (1 - a^{t-1}) / (1 - a)`
    and :math:`a = 1 - \mathrm{lr}\, w`."""
    a = 1 - lr * w
    theta = a ** (t - 1) * theta0 - lr * g * (1 - a ** (t - 1)) / (1 - a)
    return lr * (g + w * theta)


sgd_weight_decay = _constant_gradient(lambda p: SGD([p], lr=0.1, weight_decay=0.5), _sgd_weight_decay_step)


def _reference_steps(optimizer, **settings):
    """``start(values) -> step``: the reference ``optimizer`` (Adam or SGD) over parameters starting
    at ``values``; ``step(grads)`` takes one step with those gradients and returns the new values."""
    def start(values):
        params = [Parameter(v.copy()) for v in values]
        opt = optimizer(params, **settings)

        def step(grads):
            for p, g in zip(params, grads):
                p.grad[...] = g
            opt.step()
            return [p.data.copy() for p in params]
        return step
    return start


def _fused_steps(optimizer, **settings):
    """The same over the fast path's parameter block (:func:`npvae.fast.optim.fused`), with the
    first weight's gradient handed over as its nonzero columns, as the fused step hands it."""
    def start(values):
        from npvae.fast.layout import ParameterBlock     # imports Numba
        from npvae.fast.optim import fused
        params = [Parameter(v.copy()) for v in values]
        opt = optimizer(params, **settings)
        block = ParameterBlock([v.shape for v in values], values[0].dtype, optimizer.state_names)
        block.load(values)
        update = fused(opt, block, params)

        def step(grads):
            for i, g in enumerate(grads):
                block.view(block.rows[block.GRADS], i)[...] = g
            live = np.flatnonzero(np.any(grads[0] != 0, axis=0))        # (n_live,) increasing
            update.step((np.asfortranarray(grads[0][:, live]), live))
            return [block.view(block.rows[block.VALUES], i).copy() for i in range(len(values))]
        return step
    return start


def _random_gradients(rng, shapes, dtype, dead_columns, t):
    """A new gradient per parameter for step ``t``; the first weight's columns ``j`` with
    ``dead_columns[j] <= t`` are 0 (a ReLU unit off for the whole batch, from that step on),
    which the fast path's first weight handles apart."""
    grads = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    grads[0][:, [j for j, since in dict(dead_columns).items() if since <= t]] = 0
    return grads


def _adam_varying(start, steps=8, lr=1e-2, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.3, dead_columns=()):
    r"""Adam with a new random gradient every step, unequal betas and weight decay :math:`w`,
    each step's displacement against Algorithm 1 unrolled, in float64:

    .. math::

        g_s = \nabla_s + w\,\theta_{s-1}, \qquad
        m_t = (1-\beta_1) \sum_{s=1}^{t} \beta_1^{t-s} g_s, \qquad
        v_t = (1-\beta_2) \sum_{s=1}^{t} \beta_2^{t-s} g_s^2,

        \theta_{t-1} - \theta_t = \mathrm{lr}\, \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon},

    with :math:`\nabla_s` the gradient handed to step :math:`s` and :math:`\theta_{s-1}` the
    parameter before it. A constant gradient (``adam``) cannot tell the betas apart, nor see
    weight decay it does not use: this case can. ``start``: :func:`_reference_steps` or
    :func:`_fused_steps`.
    """
    def build(dtype, rng, h):
        theta = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
        step = start(Adam, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)(theta)
        beta1, beta2 = betas
        seen, exact = [], {}                    # seen[s - 1] = g_s, the decayed gradients of step s
        for t in range(1, steps + 1):
            grads = _random_gradients(rng, [a.shape for a in theta], dtype, dead_columns, t)
            seen.append([g.astype(np.float64) + weight_decay * a.astype(np.float64) for g, a in zip(grads, theta)])
            before, theta = theta, step(grads)
            age = [t - s for s in range(1, t + 1)]      # the power of beta1 (in m) and beta2 (in v) on step s
            for i, name in enumerate(("weight", "bias")):
                m = (1 - beta1) * sum(beta1 ** a * g[i] for a, g in zip(age, seen))
                v = (1 - beta2) * sum(beta2 ** a * g[i] * g[i] for a, g in zip(age, seen))
                expected = lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
                exact[f"step {t} {name}"] = (before[i] - theta[i], expected)
        return [Problem({}, None, None, exact=exact)]
    return build


def _sgd_varying(start, steps=8, lr=1e-2, momentum=0.9, weight_decay=0.3, dead_columns=()):
    r"""SGD with momentum :math:`\rho` and weight decay :math:`w` together, a new random gradient
    every step, each step's displacement against PyTorch's rule in float64:

    .. math::

        g_t = \nabla_t + w\,\theta_{t-1}, \qquad
        b_t = \rho\, b_{t-1} + g_t \;(b_1 = g_1), \qquad
        \theta_{t-1} - \theta_t = \mathrm{lr}\, b_t.

    Weight decay goes into the gradient before the buffer: added after it (to :math:`b_t`),
    the steps differ from the second on. The constant-gradient cases use one or the other.
    """
    def build(dtype, rng, h):
        theta = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(4).astype(dtype)]
        step = start(SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)(theta)
        buf, exact = None, {}
        for t in range(1, steps + 1):
            grads = _random_gradients(rng, [a.shape for a in theta], dtype, dead_columns, t)
            g = [d.astype(np.float64) + weight_decay * a.astype(np.float64) for d, a in zip(grads, theta)]
            buf = g if buf is None else [momentum * b + gi for b, gi in zip(buf, g)]
            before, theta = theta, step(grads)
            for i, name in enumerate(("weight", "bias")):
                exact[f"step {t} {name}"] = (before[i] - theta[i], lr * buf[i])
        return [Problem({}, None, None, exact=exact)]
    return build


adam_varying = _adam_varying(_reference_steps)
sgd_varying = _sgd_varying(_reference_steps)


# -- the fast path, whole models ------------------------------------------------------------
def _fast(hidden, input_dim=12, latent_dim=3, dead=(), retired=False):
    """The fast path's fused step on a whole VAE, checked against finite differences of its own
    forward pass. ``dead``: first-layer units switched off for the whole batch (bias far below
    any pre-activation), so the weight gradient takes the live-columns path; ``retired``: those
    units are also moved behind the others and left out, as after their retirement."""
    def build(dtype, rng, h):
        from npvae.fast import FastVAE           # imports Numba
        model = VAE(input_dim, hidden, latent_dim, dtype=dtype, rng=rng)
        net = FastVAE(model)

        def run(x, beta, eps):
            net.load(model)
            if retired:
                keep = np.setdiff1d(np.arange(net.units), dead)
                net.reorder(np.concatenate([keep, dead]))
                net.n_units = len(keep)
            return net.forward(x, beta, eps)

        def grads_of(x, beta, eps):
            run(x, beta, eps)
            net.backward()
            return net.gradients()

        if dead:
            model.encoder[0].bias.data[list(dead)] = -100.0
        return _vae_problems(model, rng, h, lambda x, beta, eps: run(x, beta, eps).total, grads_of,
                             prepare=lambda x: np.asfortranarray(x)) + [_as_the_reference(model, run, grads_of, rng)]
    return build


def _as_the_reference(model, run, grads_of, rng):
    """The fast path's loss and gradients against the reference's (``VAE.loss``, ``VAE.backward``)
    at one batch: a slip made alike in the fast forward and backward passes (a pixel left out
    of both) passes the finite differences, not this."""
    x = rng.uniform(0.0, 1.0, (B, model.input_dim)).astype(model.dtype)
    eps = rng.standard_normal((B, model.latent_dim)).astype(model.dtype)
    fast_loss = np.array(run(np.asfortranarray(x), 0.5, eps))          # (total, recon, kl)
    fast_grads = grads_of(np.asfortranarray(x), 0.5, eps)
    model.zero_grad()
    try:
        reference_loss = np.array(model.loss(x, beta=0.5, eps=eps))
        model.backward()
    except Exception as e:      # say whose code failed: the row is the fast path's case
        raise RuntimeError(f"the reference this case is compared with failed (VAE.loss/VAE.backward): "
                           f"{type(e).__name__}: {e}") from e
    exact = {"loss = VAE.loss": (fast_loss, reference_loss)}
    exact.update({f"{name} = VAE.backward": (fast_grads[name], p.grad) for name, p in model.named_parameters()})
    return Problem({}, None, None, tag="[beta=0.5]", exact=exact)


CASES = {
    "dense": ("numpy", _dense(5, 4)),
    "dense_square": ("numpy", _dense(4, 4)),
    "relu": ("numpy", relu),
    "sigmoid": ("numpy", sigmoid),
    "sampler": ("numpy", sampler),
    "kl": ("numpy", kl),
    "bce_logits": ("numpy", bce_logits),
    "bce": ("numpy", bce),
    "sequential": ("numpy", sequential),
    "vae_1h": ("numpy", _vae((7,))),
    "vae_2h": ("numpy", _vae((7, 5), input_dim=11)),        # odd widths, as the fast twin's below
    "vae_square": ("numpy", _vae((8,), input_dim=8, latent_dim=4)),
    "adam": ("numpy", adam),
    "adam_varying": ("numpy", adam_varying),
    "sgd": ("numpy", sgd),
    "sgd_momentum": ("numpy", sgd_momentum),
    "sgd_weight_decay": ("numpy", sgd_weight_decay),
    "sgd_varying": ("numpy", sgd_varying),
    "fast_vae_1h": ("numba", _fast((7,))),
    "fast_vae_2h": ("numba", _fast((7, 5), input_dim=11)),   # the kernels' odd tails
    "fast_vae_square": ("numba", _fast((8,), input_dim=8, latent_dim=4)),   # a transposed dW shows
    "fast_vae_dead_units": ("numba", _fast((8,), dead=(0, 2, 3, 5, 7))),
    "fast_vae_retired_units": ("numba", _fast((8,), dead=(0, 3, 5), retired=True)),
    # the fused optimizers, against the same closed forms as the reference's; the first weight's
    # gradient comes as its live columns: column 1 dead from the start, column 3 from step 4
    "fast_adam": ("numba", _adam_varying(_fused_steps, dead_columns={1: 1, 3: 4})),
    "fast_adam_no_decay": ("numba", _adam_varying(_fused_steps, weight_decay=0.0, dead_columns={1: 1, 3: 4})),
    "fast_sgd": ("numba", _sgd_varying(_fused_steps, dead_columns={1: 1, 3: 4})),
}

#: What each case checks, for ``python -m gradcheck --list``.
DESCRIPTIONS = {
    "dense": "Dense(5, 4): its input, weight and bias",
    "dense_square": "Dense(4, 4): a transposed dW has the right shape",
    "relu": "ReLU, inputs kept 20 h away from its kink",
    "sigmoid": "Sigmoid",
    "sampler": "z = mu + exp(logvar / 2) * eps: mu and logvar",
    "kl": "KL(q(z|x) || N(0, I)) of h = [mu | logvar]",
    "bce_logits": "the BCE on logits, saturated ones included",
    "bce": "the BCE on probabilities",
    "sequential": "Dense-ReLU-Dense-ReLU-Dense-Sigmoid",
    "vae_1h": "a whole VAE, one hidden layer, every parameter",
    "vae_2h": "a whole VAE, two hidden layers of odd widths",
    "vae_square": "a whole VAE, 8-8-4: a transposed dW shows",
    "adam": "Adam's steps for one constant gradient",
    "adam_varying": "Adam, a new gradient each step, weight decay",
    "sgd": "SGD's steps for one constant gradient",
    "sgd_momentum": "SGD with momentum, one constant gradient",
    "sgd_weight_decay": "SGD with weight decay",
    "sgd_varying": "SGD, new gradients, momentum and weight decay",
    "fast_vae_1h": "the fast path's fused step, one hidden layer",
    "fast_vae_2h": "the fused step, two hidden layers, odd widths",
    "fast_vae_square": "the fused step, 8-8-4: a transposed dW shows",
    "fast_vae_dead_units": "the fused step with 5 of its 8 units dead",
    "fast_vae_retired_units": "the fused step with 3 dead units retired",
    "fast_adam": "the fused Adam, columns of dead units left out",
    "fast_adam_no_decay": "the fused Adam without weight decay",
    "fast_sgd": "the fused SGD, columns of dead units left out",
}
