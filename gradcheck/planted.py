"""The slips a learner makes, planted one at a time into the reference, for ``--self-test``.

Each entry of :data:`BUGS` is a context manager: while it is entered, one method of the
reference behaves as if written with that slip; on exit the method is restored. A
gradient check that cannot fail proves nothing: ``python -m gradcheck --self-test``
plants each bug in turn, runs every reference case, and reports which rows failed
(exit status 0 only if every bug is caught). ``tests/test_planted_bugs.py`` plants
them too and shows that the test suite catches each one.
"""
import contextlib

import numpy as np

from npvae import KL, SGD, Adam, BCEWithLogits, Dense, ReLU, Sampler, Sigmoid
from npvae.sampler import split_h


@contextlib.contextmanager
def _replaced(cls, name, method):
    old = cls.__dict__[name]
    setattr(cls, name, method)
    try:
        yield
    finally:
        setattr(cls, name, old)


def _dense_backward_transposed(self, grad_out):
    # dW = (x.T @ g).T where the shapes let it pass, i.e. on a square layer; elsewhere a
    # transposed dW is (O, I) and fails at once: square layers are the blind spot
    x = self.saved("x")
    dW = x.T @ grad_out
    self.weight.grad += dW.T if dW.shape[0] == dW.shape[1] else dW
    self.bias.grad += grad_out.sum(axis=0)
    return grad_out @ self.weight.data.T


def _dense_backward_assigns_grads(self, grad_out):
    # = where += belongs: right after zero_grad, wrong for a layer used twice or a second loss
    x = self.saved("x")
    self.weight.grad[...] = x.T @ grad_out
    self.bias.grad[...] = grad_out.sum(axis=0)
    return grad_out @ self.weight.data.T


def _kl_backward_without_dmu(self, grad=1.0):
    h = self.saved("h")
    mu, logvar = split_h(h, "KL.backward")
    scale = float(grad) / h.shape[0]
    return np.concatenate([0 * mu, 0.5 * np.expm1(logvar) * scale], axis=1)


def _kl_backward_double_batch_mean(self, grad=1.0):
    h = self.saved("h")
    mu, logvar = split_h(h, "KL.backward")
    scale = float(grad) / h.shape[0] / h.shape[0]
    return np.concatenate([mu * scale, 0.5 * np.expm1(logvar) * scale], axis=1)


def _sampler_forward_variance(self, h, eps=None):
    # noise scaled by the variance exp(logvar) instead of the standard deviation, in forward only:
    # backward, still at the std, no longer matches it. Made in both passes, the slip would be
    # consistent, and no gradient check sees that: tests/test_sampler.py's moment test does.
    mu, logvar = split_h(h, "Sampler.forward")
    if eps is None:
        eps = self.rng.standard_normal(mu.shape, dtype=h.dtype)
    self.eps, self.std = eps, np.exp(0.5 * logvar)
    return mu + np.exp(logvar) * eps


def _bce_backward_without_batch_mean(self, grad=1.0):
    logits, target = self.saved("logits", "target")
    return (1 / (1 + np.exp(-logits)) - target) * float(grad)


def _bce_backward_clamped(self, grad=1.0):
    # a "safety" clamp of the logits in backward alone: p - t is wrong wherever |logit| > 5
    logits, target = self.saved("logits", "target")
    return (1 / (1 + np.exp(-np.clip(logits, -5, 5))) - target) * (float(grad) / logits.shape[0])


def _relu_backward_in_place(self, grad_out):
    y = self.saved("y")
    grad_out[y <= 0] = 0
    return grad_out


def _adam_step_as_written(self, beta1, beta2, weight_decay, ahead=0, eps_inside=False):
    # Adam.step with its inputs in the open, so that each slip below is one changed argument;
    # ahead: how many steps early the bias corrections run; eps_inside: sqrt(v_hat + eps)
    self.t += 1
    for p in self.params:
        g = p.grad + weight_decay * p.data if weight_decay else p.grad
        m, v = self.state[p]["m"], self.state[p]["v"]
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** (self.t + ahead))
        v_hat = v / (1 - beta2 ** (self.t + ahead))
        denominator = np.sqrt(v_hat + self.eps) if eps_inside else np.sqrt(v_hat) + self.eps
        p.data -= self.lr * m_hat / denominator


def _adam_step_bias_correction_ahead(self):
    # the bias corrections of the step after this one: 1 - beta1 ** (t + 1), 1 - beta2 ** (t + 1)
    _adam_step_as_written(self, *self.betas, self.weight_decay, ahead=1)


def _adam_step_betas_swapped(self):
    # betas unpacked the wrong way round: m decays at beta2's rate, v at beta1's; with a
    # constant gradient the corrected moments are g and g^2 all the same
    beta2, beta1 = self.betas
    _adam_step_as_written(self, beta1, beta2, self.weight_decay)


def _adam_step_weight_decay_ignored(self):
    # weight_decay accepted, then never added to the gradient
    _adam_step_as_written(self, *self.betas, weight_decay=0.0)


def _adam_step_eps_inside_sqrt(self):
    # sqrt(v_hat + eps) for sqrt(v_hat) + eps: a relative change of about eps / (2 g^2) in the
    # step (with the default eps = 1e-8: 5e-7 at |g| = 0.1, but 5e-3 at |g| = 1e-3; gradcheck's
    # Adam cases use eps = 1e-3, and the optimizer rows round-off tolerances)
    _adam_step_as_written(self, *self.betas, self.weight_decay, eps_inside=True)


def _sgd_step_weight_decay_after_momentum(self):
    # weight decay added to the step, not to the gradient: it skips the momentum buffer
    self.t += 1
    for p in self.params:
        g = p.grad
        if self.momentum:
            buf = self.state[p]["momentum_buffer"]
            buf[...] = g if self.t == 1 else self.momentum * buf + g
            g = buf
        p.data -= self.lr * (g + self.weight_decay * p.data)


def _sigmoid_forward_keeping_x(self, x):
    y = 1 / (1 + np.exp(-x))
    self.keep(x=x, y=y)
    return y


def _sigmoid_backward_at_logit(self, grad_out):
    x = self.saved("x")
    return grad_out * x * (1 - x)            # y (1 - y) taken at the input instead of the output


@contextlib.contextmanager
def _sigmoid_at_logit():
    with _replaced(Sigmoid, "forward", _sigmoid_forward_keeping_x), \
            _replaced(Sigmoid, "backward", _sigmoid_backward_at_logit):
        yield


#: name -> (what the slip is, a context manager factory that plants it)
BUGS = {
    "dense_transposed_dW": ("Dense.backward: the weight gradient transposed (passes the shape check "
                            "on a square layer)", lambda: _replaced(Dense, "backward", _dense_backward_transposed)),
    "dense_assigns_grads": ("Dense.backward: sets weight.grad and bias.grad (=) instead of adding into "
                            "them (+=)", lambda: _replaced(Dense, "backward", _dense_backward_assigns_grads)),
    "kl_dmu_dropped": ("KL.backward: the KL's own term of dmu dropped",
                       lambda: _replaced(KL, "backward", _kl_backward_without_dmu)),
    "sampler_noise_times_variance": ("Sampler.forward: noise scaled by the variance, not the standard "
                                     "deviation (in forward only; made in backward too, it is consistent: "
                                     "gradcheck cannot see it, the sampler's moment test does)",
                                     lambda: _replaced(Sampler, "forward", _sampler_forward_variance)),
    "bce_missing_1_over_B": ("BCEWithLogits.backward: the 1/B of the batch mean missing",
                             lambda: _replaced(BCEWithLogits, "backward", _bce_backward_without_batch_mean)),
    "bce_logits_clamped": ("BCEWithLogits.backward: the logits clamped to [-5, 5] (wrong where a "
                           "decoder saturates)", lambda: _replaced(BCEWithLogits, "backward", _bce_backward_clamped)),
    "kl_doubled_1_over_B": ("KL.backward: the 1/B of the batch mean applied twice",
                            lambda: _replaced(KL, "backward", _kl_backward_double_batch_mean)),
    "relu_writes_grad_out": ("ReLU.backward: masks its incoming gradient in place (the caller's array, "
                             "which it may still need)", lambda: _replaced(ReLU, "backward", _relu_backward_in_place)),
    "adam_bias_correction_off_by_one": ("Adam.step: the bias correction one step ahead (1 - beta^(t+1))",
                                        lambda: _replaced(Adam, "step", _adam_step_bias_correction_ahead)),
    "adam_betas_swapped": ("Adam.step: betas unpacked the wrong way round (beta2 for m, beta1 for v; "
                           "invisible with a constant gradient)",
                           lambda: _replaced(Adam, "step", _adam_step_betas_swapped)),
    "adam_weight_decay_ignored": ("Adam.step: weight_decay never added to the gradient",
                                  lambda: _replaced(Adam, "step", _adam_step_weight_decay_ignored)),
    "adam_eps_inside_sqrt": ("Adam.step: eps under the square root, sqrt(v_hat + eps), not added to it",
                             lambda: _replaced(Adam, "step", _adam_step_eps_inside_sqrt)),
    "sgd_weight_decay_after_momentum": ("SGD.step: weight decay added to the step after the momentum "
                                        "buffer, not to the gradient before it",
                                        lambda: _replaced(SGD, "step", _sgd_step_weight_decay_after_momentum)),
    "sigmoid_derivative_at_logit": ("Sigmoid.backward: y (1 - y) taken at the logit x instead of the "
                                    "output y", _sigmoid_at_logit),
}
