r"""The two terms of the VAE loss, each a forward/backward pair.

For one sample :math:`x` the VAE minimises the negative evidence lower bound

.. math::

    -\mathrm{ELBO}(x) = \underbrace{-\mathbb{E}_{q(z|x)} \log p(x \mid z)}_{\text{reconstruction (BCE)}}
      + \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{KL}}
      \;\ge\; -\log p(x),

estimated with one sample :math:`z` from the sampler. Every loss here returns the
**mean over the batch of the per-sample sums** (over pixels, over latents),
which is PyTorch's example total divided by the number of samples; ``backward``
therefore scales by :math:`1/B`.

KL between two Gaussians
------------------------
:math:`q = \mathcal{N}(\mu, \sigma^2)` per latent, :math:`p = \mathcal{N}(0, 1)`:

.. math::

    \mathrm{KL}(q \| p) = \mathbb{E}_q[\log q - \log p]
      = \mathbb{E}_q\Big[-\tfrac12 \log 2\pi\sigma^2 - \tfrac{(z-\mu)^2}{2\sigma^2}
                         + \tfrac12 \log 2\pi + \tfrac{z^2}{2}\Big]
      = -\tfrac12 \log\sigma^2 - \tfrac12 + \tfrac12 (\sigma^2 + \mu^2),

using :math:`\mathbb{E}(z-\mu)^2 = \sigma^2` and :math:`\mathbb{E} z^2 = \sigma^2 + \mu^2`.
Summed over the :math:`d` independent latents:
:math:`\mathrm{KL} = \tfrac12 \sum_j (\sigma_j^2 + \mu_j^2 - 1 - \log\sigma_j^2)`,
exact, no sampling needed. It is 0 exactly when :math:`\mu = 0, \sigma = 1`.

Bernoulli likelihood, binary cross-entropy
-------------------------------------------
With pixel probabilities :math:`p = \mathrm{sigmoid}(l)` from decoder logits
:math:`l` and targets :math:`t \in [0, 1]`,
:math:`-\log p(x|z) = -\sum_j t_j \log p_j + (1 - t_j) \log(1 - p_j)`.
"""
import numpy as np

from .errors import InputError, InputTypeError
from .memory import order_of
from .module import Module


def _check_pair(a, t, owner, a_name, t_name="target"):
    for name, arr in ((a_name, a), (t_name, t)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 2:
            got = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
            raise InputError(f"{owner}: {name} must be a 2-D array (batch, features), got {got}")
    if a.shape != t.shape:
        raise InputError(f"{owner}: {a_name} and {t_name} must have the same shape, got {a.shape} and {t.shape}")
    if a.dtype != t.dtype or a.dtype.kind != "f":
        raise InputTypeError(f"{owner}: {a_name} and {t_name} must share a float dtype, got {a.dtype} and {t.dtype}")


class _BatchMeanLoss(Module):
    """Shared by the losses: per-sample sums in ``rows`` (B,), mean as a float."""

    def _finish(self, rows):
        self._save(rows=rows)
        return float(np.add.reduce(rows, dtype=np.float64)) / rows.shape[0]

    def _scale(self, grad, B):
        if isinstance(grad, bool) or not isinstance(grad, (int, float, np.floating)):
            raise InputTypeError(f"{type(self).__name__}.backward: grad must be a number (dL/dloss), "
                                 f"got {type(grad).__name__}")
        return float(grad) / B


class BCEWithLogits(_BatchMeanLoss):
    r"""Binary cross-entropy on logits: the decoder's Sigmoid and the BCE in one stable op.

    Per pixel, with :math:`p = \mathrm{sigmoid}(l)`:

    .. math::

        \ell(l, t) = -t \log p - (1 - t)\log(1 - p) = \max(l, 0) - l t + \log(1 + e^{-|l|}),

    since :math:`-\log p = \log(1 + e^{-l})` and :math:`-\log(1-p) = l + \log(1 + e^{-l})`,
    and :math:`\log(1 + e^{-l}) = \max(-l, 0) + \log(1 + e^{-|l|})`. No exp ever
    overflows and no log ever sees 0, however saturated :math:`p` is.

    In training mode forward also computes the gradient (one ``exp`` per pixel
    serves both), so backward is a scale.
    """

    def forward(self, logits, target):
        """Mean over the batch of the per-sample BCE sums; ``logits``, ``target`` (B, N)."""
        _check_pair(logits, target, "BCEWithLogits.forward", "logits")
        B = logits.shape[0]
        order = order_of(logits)
        if order_of(target) != order:
            # one copy lets the fused kernel read both arrays in memory order
            copy = self._buffer("target", target.shape, target.dtype, order)
            np.copyto(copy, target)
            target = copy
        rows = self._buffer("rows", (B,), logits.dtype)
        if self.training:
            dl = self._buffer("dlogits", logits.shape, logits.dtype, order)
            self.k.bce_logits_forward_backward(logits, target, logits.dtype.type(1.0 / B), rows, dl)
        else:
            self.k.bce_logits_forward(logits, target, rows)
            dl = None
        self._save(_dlogits=dl, _logits=logits, _target=target)
        return self._finish(rows)

    def backward(self, grad=1.0):
        r"""Return :math:`\partial L/\partial l = \tfrac{g}{B} (\mathrm{sigmoid}(l) - t)` (B, N).

        Differentiating the stable form: :math:`\tfrac{d}{dl}[\log(1+e^{-l}) + (1-t)l]
        = -\tfrac{e^{-l}}{1+e^{-l}} + 1 - t = p - t`. The sigmoid's own
        derivative :math:`p(1-p)` cancels against the BCE's :math:`1/(p(1-p))`,
        which is why the fused op is both cheaper and better conditioned.
        """
        logits, target = self._cached("_logits", "_target")
        B = logits.shape[0]
        scale = self._scale(grad, B)
        dl = self._dlogits
        if dl is None:  # forward ran in eval mode: compute the gradient now
            dl = self._buffer("dlogits", logits.shape, logits.dtype, order_of(logits))
            self.k.sigmoid_forward(logits, dl)
            dl -= target
            dl *= logits.dtype.type(1.0 / B)
            self._dlogits = dl
        if grad == 1.0:
            return dl
        out = self._buffer("dlogits_scaled", dl.shape, dl.dtype, order_of(dl))
        np.multiply(dl, logits.dtype.type(scale * B), out=out)
        return out


class BCE(_BatchMeanLoss):
    r"""Binary cross-entropy on probabilities :math:`p` (e.g. after a :class:`Sigmoid`).

    .. math::

        L = \frac1B \sum_b \sum_j -t_{bj} \log \hat p_{bj} - (1 - t_{bj}) \log(1 - \hat p_{bj}),
        \qquad \hat p = \mathrm{clip}(p, \epsilon, 1 - \epsilon),

    with :math:`\epsilon` the dtype's machine epsilon (``np.finfo(dtype).eps``),
    so a saturated reconstruction (:math:`p = 0` or 1) gives a large but finite
    loss instead of inf/NaN. Prefer :class:`BCEWithLogits` when you have logits.
    """

    def forward(self, probs, target):
        _check_pair(probs, target, "BCE.forward", "probs")
        eps = np.finfo(probs.dtype).eps
        p = np.clip(probs, eps, 1 - eps)
        rows = -(target * np.log(p) + (1 - target) * np.log1p(-p)).sum(axis=1)
        self._p, self._target = p, target
        return self._finish(rows)

    def backward(self, grad=1.0):
        r"""Return :math:`\partial L/\partial p = \tfrac{g}{B}\,\tfrac{\hat p - t}{\hat p(1 - \hat p)}`.

        :math:`\tfrac{d}{dp}[-t\log p - (1-t)\log(1-p)] = -\tfrac tp + \tfrac{1-t}{1-p}
        = \tfrac{p - t}{p(1-p)}`; inside the clip range :math:`\hat p = p`.
        """
        p, target = self._cached("_p", "_target")
        scale = self._scale(grad, p.shape[0])
        return (scale * (p - target) / (p * (1 - p))).astype(p.dtype, copy=False)


class KL(_BatchMeanLoss):
    r"""KL(N(mu, exp(logvar)) || N(0, I)) from ``h = [mu | logvar]`` (B, 2d).

    :math:`L = \frac1B \sum_b \tfrac12 \sum_j (e^{\lambda_{bj}} + \mu_{bj}^2 - 1 - \lambda_{bj})`
    with :math:`\lambda = \log\sigma^2` (derivation in this module's docstring).
    """

    def forward(self, h):
        if not isinstance(h, np.ndarray) or h.ndim != 2 or h.shape[1] % 2 or h.dtype.kind != "f":
            got = (h.shape, h.dtype) if isinstance(h, np.ndarray) else type(h).__name__
            raise InputError(f"KL.forward: h must be a float array (batch, 2 * latent_dim) "
                             f"holding [mu | logvar], got {got}")
        rows = self._buffer("rows", (h.shape[0],), h.dtype)
        self.k.kl_forward(h, rows)
        self._save(_h=h)
        return self._finish(rows)

    def backward(self, grad=1.0):
        r"""Return ``dh = g/B * [mu | (exp(logvar) - 1) / 2]`` (B, 2d).

        .. math::

            \frac{\partial\, \mathrm{KL}}{\partial \mu_j} = \mu_j, \qquad
            \frac{\partial\, \mathrm{KL}}{\partial \lambda_j} = \tfrac12 (e^{\lambda_j} - 1).
        """
        h = self._cached("_h")
        scale = self._scale(grad, h.shape[0])
        dh = self._buffer("dh", h.shape, h.dtype, order_of(h))
        self.k.kl_backward(h, h.dtype.type(scale), dh)              # (B, 2d)
        return dh
