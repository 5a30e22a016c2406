"""One case per op: each builds its modules and fixed inputs and returns Problems.

A case is ``build(dtype, backend, rng, h) -> [Problem, ...]``; everything random
comes from ``rng``, so a seed fixes the table. Shapes are small (B = 3, widths
4-7) because every element is perturbed.

ReLU kinks: the numerical derivative is meaningless if a step crosses
``max(x, 0)``'s kink, so ReLU inputs are kept at least ``20 h`` from 0 (for
networks, by the smallest shift of each hidden unit's bias that achieves it).
"""
import numpy as np

from npvae import BCE, KL, VAE, BCEWithLogits, Dense, ReLU, Sampler, Sequential, Sigmoid

from .core import Problem

B = 3


def _on(module, backend):
    """``module`` switched to ``backend``, checked on every sub-module."""
    module.set_backend(backend)
    wrong = [type(m).__name__ for m in module.modules() if m.backend != backend]
    if wrong:
        raise AssertionError(f"set_backend({backend!r}) missed {wrong}")
    return module


def _dot(R, y):
    """``sum(R * y)`` in float64, for one output or a tuple of them (reduced at once)."""
    ys = y if isinstance(y, tuple) else (y,)
    return float(sum(np.dot(r.ravel().astype(np.float64), v.ravel().astype(np.float64))
                     for r, v in zip(R, ys)))


def _op_problem(module, forward, backward, inputs, rng, tag=""):
    """Check ``L = sum(R * forward())`` w.r.t. ``inputs`` and ``module``'s parameters.

    ``backward(R)`` runs the module's backward and returns ``{input name: grad}``.
    """
    y = forward()
    ys = y if isinstance(y, tuple) else (y,)
    R = [rng.standard_normal(v.shape).astype(v.dtype) for v in ys]
    R_arg = R if isinstance(y, tuple) else R[0]
    params = dict(module.named_parameters())

    def grads():
        forward()
        backward(R_arg)          # leave gradients behind: zero_grad must really discard them
        module.zero_grad()
        forward()
        out = {n: np.array(g, copy=True) for n, g in backward(R_arg).items()}
        out.update({n: p.grad.copy() for n, p in params.items()})
        return out

    tensors = {**inputs, **{n: p.data for n, p in params.items()}}
    return Problem(tensors, lambda: _dot(R, forward()), grads, tag)


def _loss_problem(module, forward, name, x, g=1.0, tag=""):
    """Check ``L = g * loss`` w.r.t. ``x`` against ``backward(grad=g)`` (``backward()`` if g is 1)."""
    def grads():
        forward()
        dx = module.backward() if g == 1.0 else module.backward(grad=g)
        return {name: np.array(dx, copy=True)}
    return Problem({name: x}, lambda: g * forward(), grads, tag + (f"[grad={g:g}]" if g != 1.0 else ""))


def _away_from_kinks(seq, x, margin):
    """Run ``seq`` on ``x`` in float64, shifting the bias of each Dense before a ReLU
    by the least amount that puts every pre-activation at least ``margin`` from 0."""
    a = np.asarray(x, np.float64)
    layers = list(seq.layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            b = layer.bias.data
            a = a @ layer.weight.data.astype(np.float64) + b
            if i + 1 < len(layers) and isinstance(layers[i + 1], ReLU):
                target = 1.5 * margin
                for j in range(a.shape[1]):
                    v = a[:, j] - b[j]                      # without the bias
                    cands = np.concatenate([[b[j]], -v + target, -v - target])
                    ok = [c for c in cands if np.min(np.abs(v + c)) >= margin]
                    b[j] = min(ok, key=lambda c: abs(c - b[j]))
                    a[:, j] = v + b[j]
                    assert np.min(np.abs(a[:, j])) >= margin
        elif isinstance(layer, ReLU):
            a = np.maximum(a, 0.0)
        elif isinstance(layer, Sigmoid):
            a = 1.0 / (1.0 + np.exp(-a))
    return a


# -- the cases ------------------------------------------------------------------------
def dense(dtype, backend, rng, h):
    d = _on(Dense(5, 4, dtype=dtype, rng=rng), backend)
    x = rng.standard_normal((B, 5)).astype(dtype)
    return [_op_problem(d, lambda: d.forward(x), lambda R: {"x": d.backward(R)}, {"x": x}, rng)]


def relu(dtype, backend, rng, h):
    r = _on(ReLU(), backend)
    x = (rng.choice([-1.0, 1.0], (B, 6)) * rng.uniform(max(0.1, 20 * h), 1.0, (B, 6))).astype(dtype)
    return [_op_problem(r, lambda: r.forward(x), lambda R: {"x": r.backward(R)}, {"x": x}, rng)]


def sigmoid(dtype, backend, rng, h, cls=Sigmoid):
    s = _on(cls(), backend)
    x = (2.0 * rng.standard_normal((B, 6))).astype(dtype)
    return [_op_problem(s, lambda: s.forward(x), lambda R: {"x": s.backward(R)}, {"x": x}, rng)]


def _mu_logvar(rng, dtype, d=4):
    """``h = [mu | logvar]`` with logvar in [-2, 1.5] (variance far from 1)."""
    return np.concatenate([rng.standard_normal((B, d)), rng.uniform(-2.0, 1.5, (B, d))], axis=1).astype(dtype)


def sampler(dtype, backend, rng, h, cls=Sampler):
    s = _on(cls(rng), backend)
    hin = _mu_logvar(rng, dtype)
    eps = rng.standard_normal((B, 4)).astype(dtype)
    return [_op_problem(s, lambda: s.forward(hin, eps), lambda R: {"h": s.backward(R)}, {"h": hin}, rng)]


def kl(dtype, backend, rng, h):
    k = _on(KL(), backend)
    hin = _mu_logvar(rng, dtype)
    return [_loss_problem(k, lambda: k.forward(hin), "h", hin, g) for g in (1.0, -1.7)]


def bce_logits(dtype, backend, rng, h):
    problems = []
    for g, training in ((1.0, True), (-1.7, True), (1.0, False)):
        m = _on(BCEWithLogits(), backend).train(training)
        logits = (2.0 * rng.standard_normal((B, 7))).astype(dtype)
        t = rng.uniform(0.0, 1.0, (B, 7)).astype(dtype)
        problems.append(_loss_problem(m, lambda m=m, l=logits, t=t: m.forward(l, t), "logits", logits, g,
                                   "" if training else "[eval]"))
    return problems


def bce(dtype, backend, rng, h):
    out = []
    for g in (1.0, -1.7):
        m = _on(BCE(), backend)
        lo = min(0.3, max(0.05, 30 * h))     # inside the clip range, and -log p's 3rd derivative small
        p = rng.uniform(lo, 1 - lo, (B, 7)).astype(dtype)
        t = rng.uniform(0.0, 1.0, (B, 7)).astype(dtype)
        out.append(_loss_problem(m, lambda m=m, p=p, t=t: m.forward(p, t), "probs", p, g))
    return out


def _sequential(dtype, backend, rng, h, fuse):
    seq = Sequential(Dense(5, 7, dtype=dtype, rng=rng), ReLU(), Dense(7, 6, dtype=dtype, rng=rng), ReLU(),
                     Dense(6, 4, dtype=dtype, rng=rng), Sigmoid(), fuse=fuse)
    _on(seq, backend)
    x = rng.standard_normal((B, 5)).astype(dtype)
    _away_from_kinks(seq, x, 20 * h)
    return [_op_problem(seq, lambda: seq.forward(x), lambda R: {"x": seq.backward(R)}, {"x": x}, rng)]


def sequential(dtype, backend, rng, h):
    return _sequential(dtype, backend, rng, h, fuse=True)


def sequential_nofuse(dtype, backend, rng, h):
    return _sequential(dtype, backend, rng, h, fuse=False)


def dead_units(dtype, backend, rng, h):
    """Dense + ReLU with 5 of 8 units off for the whole batch: backward multiplies only
    the live columns of the gradient (Dense._weight_grad_live_columns)."""
    seq = _on(Sequential(Dense(5, 8, dtype=dtype, rng=rng), ReLU(), Dense(8, 4, dtype=dtype, rng=rng)), backend)
    x = rng.standard_normal((B, 5)).astype(dtype)
    _away_from_kinks(seq, x, 20 * h)
    seq[0].bias.data[[0, 2, 3, 5, 7]] = -100.0      # far below any pre-activation: stays off
    if not (seq[0].forward(x, relu=True)[:, [0, 2, 3, 5, 7]] == 0).all():
        raise AssertionError("dead_units: the units meant to be off are not")
    return [_op_problem(seq, lambda: seq.forward(x), lambda R: {"x": seq.backward(R)}, {"x": x}, rng)]


def skipped_units(dtype, backend, rng, h, on=(1, 4, 6)):
    """As dead_units, but forward skips the 5 off units (Dense.units, as fit does once they
    are proven dead): the first layer computes 3 columns, the second uses 3 rows of W."""
    seq = _on(Sequential(Dense(5, 8, dtype=dtype, rng=rng), ReLU(), Dense(8, 4, dtype=dtype, rng=rng)), backend)
    x = rng.standard_normal((B, 5)).astype(dtype)
    _away_from_kinks(seq, x, 20 * h)
    seq[0].bias.data[np.setdiff1d(np.arange(8), on)] = -100.0
    seq[0].units = np.array(on)
    if seq.forward(x).shape != (B, 4) or seq[0]._y.shape != (B, 3):
        raise AssertionError("skipped_units: forward did not skip the off units")
    return [_op_problem(seq, lambda: seq.forward(x), lambda R: {"x": seq.backward(R)}, {"x": x}, rng)]


def skipped_units_first(dtype, backend, rng, h):
    """The units computed are the first three (as fit orders them): slices of W, no gathers."""
    return skipped_units(dtype, backend, rng, h, on=(0, 1, 2))


def _vae(dtype, backend, rng, h, hidden, order="C", skip=False):
    out = []
    for beta in (1.0, 0.5):
        model = VAE(12, hidden, 3, dtype=dtype, rng=rng, backend=backend)
        _on(model, backend)
        x = np.asarray(rng.uniform(0.0, 1.0, (B, 12)).astype(dtype), order=order)
        eps = rng.standard_normal((B, 3)).astype(dtype)
        if skip:   # units 0, 3, 5 of the first layer off (bias far below any pre-activation) and skipped
            model.encoder[0].bias.data[[0, 3, 5]] = -100.0
            model.encoder[0].units = np.array([1, 2, 4, 6])
        hcode = _away_from_kinks(model.encoder, x, 20 * h)         # [mu | logvar]
        z = hcode[:, :3] + np.exp(0.5 * hcode[:, 3:]) * eps
        _away_from_kinks(model.decoder, z, 20 * h)
        params = dict(model.named_parameters())

        def grads(model=model, x=x, eps=eps, beta=beta, params=params):
            model.loss(x, beta=beta, eps=eps)
            model.backward()                     # stale gradients that zero_grad must discard
            model.zero_grad()
            model.loss(x, beta=beta, eps=eps)
            model.backward()
            return {n: p.grad.copy() for n, p in params.items()}

        out.append(Problem({n: p.data for n, p in params.items()},
                           lambda model=model, x=x, eps=eps, beta=beta: model.loss(x, beta=beta, eps=eps).total,
                           grads, "" if beta == 1.0 else f"[beta={beta:g}]"))
    return out


def vae_1h(dtype, backend, rng, h):
    return _vae(dtype, backend, rng, h, (7,))


def vae_2h(dtype, backend, rng, h):
    return _vae(dtype, backend, rng, h, (7, 5))


def vae_2h_colmajor(dtype, backend, rng, h):
    """A column-major batch, as fit feeds: every workspace and kernel runs column-major."""
    return _vae(dtype, backend, rng, h, (7, 5), order="F")


def vae_2h_skipped_units(dtype, backend, rng, h):
    """Column-major, with three first-layer units off and skipped, as in fit's later epochs."""
    return _vae(dtype, backend, rng, h, (7, 5), order="F", skip=True)


CASES = {"dense": dense, "relu": relu, "sigmoid": sigmoid, "sampler": sampler, "kl": kl,
         "bce_logits": bce_logits, "bce": bce, "sequential": sequential,
         "sequential_nofuse": sequential_nofuse, "dead_units": dead_units, "skipped_units": skipped_units,
         "skipped_units_first": skipped_units_first,
         "vae_1h": vae_1h, "vae_2h": vae_2h, "vae_2h_colmajor": vae_2h_colmajor,
         "vae_2h_skipped_units": vae_2h_skipped_units}


# -- deliberately wrong backward passes, for the self-test ----------------------------
class WrongSigmoid(Sigmoid):
    """Sigmoid whose backward drops the ``(1 - y)`` factor: ``dx = g * y``."""

    def backward(self, grad_out, input_grad=True):
        return grad_out * self._cached("_y")


class WrongSampler(Sampler):
    """Sampler whose backward scales by the variance: ``dlogvar = dz * eps * sigma^2 / 2``."""

    def backward(self, grad_out, input_grad=True):
        dh = super().backward(grad_out).copy()
        dh[:, dh.shape[1] // 2:] *= self._cached("_std")
        return dh


BAD_CASES = {"wrong_sigmoid": lambda **kw: sigmoid(cls=WrongSigmoid, **kw),
             "wrong_sampler": lambda **kw: sampler(cls=WrongSampler, **kw)}
