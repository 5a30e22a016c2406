"""Central finite differences in float64: what the unit tests check every backward pass against.

Independent of ``gradcheck/`` on purpose (a few lines, no tables): the unit tests and
the gradient-check tool should not share a blind spot.
"""
import numpy as np

STEP = 1e-5      # central differences: truncation ~STEP**2, round-off ~1e-16 / STEP
TOL = 1e-6       # per tensor: max|a - n| / max(max|a|, max|n|); a slip of 1e-5 relative fails


def numerical_gradient(loss, tensor, h=STEP):
    """``dL/dT`` for every element of ``tensor`` (perturbed in place, then restored exactly)."""
    grad = np.empty(tensor.shape, np.float64)
    for i in np.ndindex(*tensor.shape):
        kept = tensor[i]
        tensor[i] = kept + h
        up = loss()
        tensor[i] = kept - h
        down = loss()
        tensor[i] = kept
        grad[i] = (up - down) / (2 * h)
    return grad


def assert_gradient(analytic, numerical, what, tol=TOL):
    """``analytic`` equals ``numerical`` to ``tol``, relative to the larger of the two (per tensor)."""
    analytic = np.asarray(analytic, np.float64)
    assert analytic.shape == numerical.shape, f"{what}: gradient shape {analytic.shape}, tensor {numerical.shape}"
    scale = max(np.abs(analytic).max(), np.abs(numerical).max(), 1e-12)
    err = np.abs(analytic - numerical).max() / scale
    assert err < tol, f"{what}: analytic and numerical gradients differ by {err:.2e} (relative)"


def check_op(module, x, forward=None, seed=0):
    """Check ``module.backward`` against central differences of ``L = sum(R * forward(x))``.

    Checks the input ``x`` and every parameter, and the module protocol on the way:
    ``backward(R)`` returns ``dL/dx``, adds into each ``p.grad`` (a second pass doubles
    it) and leaves ``R`` (its ``grad_out``) as it was. Returns the analytic gradients.
    """
    forward = forward or module.forward
    R = np.random.default_rng(seed).standard_normal(forward(x).shape)
    R_kept = R.copy()
    module.zero_grad()
    forward(x)
    dx = module.backward(R)
    assert np.array_equal(R, R_kept), f"{type(module).__name__}.backward wrote into its grad_out"
    analytic = {"x": np.array(dx), **{n: p.grad.copy() for n, p in module.named_parameters()}}
    tensors = {"x": x, **{n: p.data for n, p in module.named_parameters()}}

    def loss():
        return float(np.sum(R_kept * forward(x)))

    for name, tensor in tensors.items():
        assert_gradient(analytic[name], numerical_gradient(loss, tensor), f"{type(module).__name__}: d/d{name}")
    forward(x)
    module.backward(R)                              # a second pass adds: twice the gradient
    for name, p in module.named_parameters():
        assert np.allclose(p.grad, 2 * analytic[name], rtol=1e-14, atol=0), \
            f"{type(module).__name__}: backward must add into {name}.grad"
    return analytic


def check_loss(module, forward, x, grad=1.0):
    """Check ``module.backward(grad)`` against central differences of ``grad * forward()`` w.r.t. ``x``."""
    forward()
    analytic = module.backward(grad)
    numerical = numerical_gradient(lambda: grad * forward(), x)
    assert_gradient(analytic, numerical, f"{type(module).__name__}.backward(grad={grad})")
    return analytic
