r"""The two terms of the VAE loss, each a forward/backward pair.

For one image :math:`x` the VAE minimises the negative evidence lower bound

.. math::

    -\mathrm{ELBO}(x) = \underbrace{-\mathbb{E}_{q(z|x)} \log p(x \mid z)}_{\text{reconstruction}}
      + \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{KL}}
      \;\ge\; -\log p(x),

with the expectation estimated from one sample :math:`z` (:mod:`npvae.sampler`).
Every loss here returns the **mean over the batch of the per-sample sums** (over
pixels, over latents), which is PyTorch's example total divided by the batch size
``B``; each ``backward`` therefore carries a factor :math:`1/B`.

Notation (``docs/derivation.md``'s, where the page has a symbol): :math:`L` is always
the total loss (reconstruction + :math:`\beta` KL), and a term's ``backward(grad)`` takes
:math:`g = \partial L / \partial(\text{term})`; :math:`\overline{\mathrm{KL}}` and
:math:`\overline{\mathrm{BCE}}` (this module's) are a term's mean over the batch;
:math:`t` is the target image (the page's :math:`x`), :math:`l` the decoder's logits,
:math:`j` a pixel and :math:`k` a latent; in shapes, ``N`` is the pixels per image (the
page's :math:`D`).

KL between two Gaussians
------------------------
:math:`q = \mathcal{N}(\mu, \sigma^2)` per latent, :math:`p = \mathcal{N}(0, 1)`:

.. math::

    \mathrm{KL}(q \| p) = \mathbb{E}_q[\log q - \log p]
      = \mathbb{E}_q\Big[-\tfrac12 \log 2\pi\sigma^2 - \tfrac{(z-\mu)^2}{2\sigma^2}
                         + \tfrac12 \log 2\pi + \tfrac{z^2}{2}\Big]
      = \tfrac12 \big(\sigma^2 + \mu^2 - 1 - \log\sigma^2\big),

using :math:`\mathbb{E}(z-\mu)^2 = \sigma^2` and :math:`\mathbb{E} z^2 = \sigma^2 + \mu^2`.
Summed over the :math:`d` independent latents; exact, no sampling needed. It is 0
exactly when :math:`\mu = 0, \sigma^2 = 1`.

Reconstruction: binary cross-entropy
------------------------------------
With pixel probabilities :math:`p = \mathrm{sigmoid}(l)` from the decoder's logits
:math:`l` and targets :math:`t \in [0, 1]` (the image),

.. math::

    \mathrm{BCE}(l, t) = -\sum_j \big[\, t_j \log p_j + (1 - t_j) \log(1 - p_j) \,\big].

For binarized images (:math:`t \in \{0, 1\}`, ``--binarize``) this is exactly
:math:`-\log p(x \mid z)` under a Bernoulli decoder. For grey-level pixels, as in
the PyTorch example, it is the cross-entropy between the pixel intensities and the
decoder's probabilities: the same formula and gradient, but not the log-likelihood
of a distribution over grey-level images (it is not 0 even for a perfect
reconstruction), so the "negative ELBO" reported on grey-level data is a loss, not
a bound on :math:`-\log p(x)`.
"""
import numpy as np

from .errors import InputError, InputTypeError
from .validate import FLOAT_DTYPES, check_unit_interval, refuse_array_subclass
from .layers import sigmoid
from .module import Module
from .sampler import split_h


def check_pair(a, t, owner, a_name, t_name="target"):
    """``a`` and ``t`` are 2-D float arrays of one shape and dtype."""
    for name, arr in ((a_name, a), (t_name, t)):
        if not isinstance(arr, np.ndarray):         # a wrong type is a TypeError, as everywhere
            raise InputTypeError(f"{owner}: {name} must be a 2-D array (batch, features), got {type(arr).__name__}")
        if arr.ndim != 2:
            raise InputError(f"{owner}: {name} must be a 2-D array (batch, features), got {arr.shape}")
        refuse_array_subclass(arr, name, owner)
    if a.shape != t.shape:
        raise InputError(f"{owner}: {a_name} and {t_name} must have the same shape, got {a.shape} and {t.shape}")
    if a.dtype != t.dtype or a.dtype not in FLOAT_DTYPES:     # as every other op: float32 or float64
        raise InputTypeError(f"{owner}: {a_name} and {t_name} must share a float32 or float64 dtype, got {a.dtype} "
                             f"and {t.dtype}")


def check_grad_scalar(grad, owner):
    """``grad`` (dL/dloss) is a finite real number; returned as a float."""
    if isinstance(grad, bool) or not isinstance(grad, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"{owner}: grad must be a number (dL/dloss), got {type(grad).__name__}")
    if not np.isfinite(grad):
        raise InputError(f"{owner}: grad must be a finite number (dL/dloss), got {grad}")
    return float(grad)


def batch_mean(rows):
    """The mean of per-sample values, summed in float64: the loss as a Python float."""
    return float(rows.sum(dtype=np.float64)) / len(rows)


def check_not_empty(a, owner):
    """A loss is a mean over the batch: over no rows it is not a number."""
    if len(a) == 0:
        raise InputError(f"{owner}: the batch is empty (0 rows): a mean over no images is not defined")


def kl_per_sample(mu, logvar):
    r""":math:`\tfrac12 \sum_k (e^{\lambda_k} + \mu_k^2 - 1 - \lambda_k)` for each row, with
    :math:`\lambda = \log\sigma^2`: ``mu``, ``logvar`` (B, d) -> (B,).

    :math:`e^\lambda - 1` is computed as ``expm1``: near the prior (:math:`\lambda \approx 0`)
    ``exp(logvar) - 1`` keeps only the round-off of 1 and can make a row negative, while
    ``expm1(logvar) - logvar`` is never below 0 and is accurate to the round-off of :math:`\lambda`.
    """
    return 0.5 * (mu * mu + (np.expm1(logvar) - logvar)).sum(axis=1)


class KL(Module):
    r"""KL(N(mu, exp(logvar)) || N(0, I)) from ``h = [mu | logvar]`` (B, 2d), mean over the batch."""

    def forward(self, h):
        r"""The KL's mean over the batch, with :math:`\lambda = \log\sigma^2`:

        .. math::

            \overline{\mathrm{KL}} = \frac1B \sum_n \tfrac12 \sum_k (e^{\lambda_{nk}} + \mu_{nk}^2 - 1 - \lambda_{nk}).

        Parameters
        ----------
        h : ndarray (B, 2d)
            ``[mu | logvar]``.

        Returns
        -------
        float
            The mean over the batch; ``self.rows`` (B,) keeps each sample's KL.
        """
        mu, logvar = split_h(h, "KL.forward")
        check_not_empty(h, "KL.forward")
        self.keep(h=h)
        self.rows = kl_per_sample(mu, logvar)               # (B,)
        return batch_mean(self.rows)

    def backward(self, grad=1.0):
        r"""Return ``dh = grad/B * [mu | (exp(logvar) - 1) / 2]`` (B, 2d).

        .. math::

            \frac{\partial\, \mathrm{KL}}{\partial \mu_k} = \mu_k, \qquad
            \frac{\partial\, \mathrm{KL}}{\partial \lambda_k} = \tfrac12 (e^{\lambda_k} - 1),

        times :math:`1/B` for the mean over the batch and ``grad`` (:math:`\partial L /
        \partial \overline{\mathrm{KL}}`, e.g. the KL weight ``beta``).

        Parameters
        ----------
        grad : float

        Returns
        -------
        dh : ndarray (B, 2d)
            ``[dL/dmu | dL/dlogvar]`` from the KL term.
        """
        h = self.saved("h")
        scale = check_grad_scalar(grad, "KL.backward") / h.shape[0]
        mu, logvar = split_h(h, "KL.backward")
        dmu = mu * scale                                    # (B, d)
        dlogvar = 0.5 * np.expm1(logvar) * scale            # (B, d); expm1: accurate near 0
        return np.concatenate([dmu, dlogvar], axis=1).astype(h.dtype, copy=False)


def bce_with_logits_per_sample(logits, target):
    r"""The BCE of each row, from logits: ``logits``, ``target`` (B, N) -> (B,).

    Per pixel, :math:`-t \log p - (1 - t)\log(1 - p) = \max(l, 0) - l t + \log(1 + e^{-|l|})`:
    since :math:`-\log p = \log(1 + e^{-l})`, :math:`-\log(1-p) = l + \log(1 + e^{-l})` and
    :math:`\log(1 + e^{-l}) = \max(-l, 0) + \log(1 + e^{-|l|})`. No ``exp`` overflows and
    no ``log`` sees 0, however saturated :math:`p` is.
    """
    return (np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1)


class BCEWithLogits(Module):
    r"""Binary cross-entropy on logits: the decoder's Sigmoid and the BCE in one stable op.

    Mean over the batch of the per-sample BCE sums (see the docstring of ``npvae/losses.py``); the stable
    form is derived in :func:`bce_with_logits_per_sample`, just above.
    """

    def forward(self, logits, target):
        """The mean over the batch of each sample's BCE summed over pixels.

        Parameters
        ----------
        logits : ndarray (B, N)
            The decoder's output before the sigmoid.
        target : ndarray (B, N)
            The image, in [0, 1].

        Returns
        -------
        float
            The loss; ``self.rows`` (B,) keeps each sample's BCE.
        """
        check_pair(logits, target, "BCEWithLogits.forward", "logits")
        check_not_empty(logits, "BCEWithLogits.forward")
        check_unit_interval(target, "BCEWithLogits.forward: target", "divide by 255")
        self.keep(logits=logits, target=target)
        self.rows = bce_with_logits_per_sample(logits, target)   # (B,)
        return batch_mean(self.rows)

    def backward(self, grad=1.0):
        r"""Return :math:`\partial L/\partial l = \tfrac{g}{B} (\mathrm{sigmoid}(l) - t)` (B, N).

        Differentiating an equivalent form of the per-pixel loss (the two logs of
        :func:`bce_with_logits_per_sample`'s derivation, before the :math:`|l|` rewrite):

        .. math::

            \tfrac{d}{dl}\big[t \log(1+e^{-l}) + (1-t)\big(l + \log(1+e^{-l})\big)\big]
            = \tfrac{d}{dl}\big[\log(1+e^{-l}) + (1-t)\,l\big]
            = -\tfrac{e^{-l}}{1+e^{-l}} + 1 - t = p - t.

        The sigmoid's derivative :math:`p(1-p)` cancels the BCE's :math:`1/(p(1-p))`, which
        is why the fused op is both cheaper and better conditioned than a Sigmoid followed
        by :class:`BCE`.

        Parameters
        ----------
        grad : float
            :math:`\partial L/\partial \overline{\mathrm{BCE}}`.

        Returns
        -------
        ndarray (B, N)
        """
        logits, target = self.saved("logits", "target")
        scale = check_grad_scalar(grad, "BCEWithLogits.backward") / logits.shape[0]
        return ((sigmoid(logits) - target) * scale).astype(logits.dtype, copy=False)


class BCE(Module):
    r"""Binary cross-entropy on probabilities :math:`p` (e.g. after a :class:`~npvae.layers.Sigmoid`).

    .. math::

        \overline{\mathrm{BCE}} = \frac1B \sum_n \sum_j -\big[\, t_{nj} \log \hat p_{nj}
                                   + (1 - t_{nj}) \log(1 - \hat p_{nj}) \,\big],
        \qquad \hat p = \mathrm{clip}(p, \epsilon_{\mathrm{clip}}, 1 - \epsilon_{\mathrm{clip}}),

    with :math:`\epsilon_{\mathrm{clip}}` the dtype's machine epsilon (``np.finfo(dtype).eps``), so a
    saturated probability (0 or 1) gives a large but finite loss instead of inf or NaN.
    PyTorch's ``binary_cross_entropy`` bounds it differently (each log at -100), so the two
    agree for probabilities from :math:`\epsilon_{\mathrm{clip}}` to :math:`1 - \epsilon_{\mathrm{clip}}`
    only: in float32 that is from 1.19e-7 (a logit of about -15.9), and at ``p = 1e-8`` with
    target 1 npvae's term is 15.94 where PyTorch's is 18.42. Prefer :class:`BCEWithLogits` when you have
    logits: it matches ``binary_cross_entropy_with_logits`` at every logit.
    """

    def forward(self, probs, target):
        """The mean over the batch of each sample's BCE summed over pixels.

        Parameters
        ----------
        probs, target : ndarray (B, N)
            Probabilities (e.g. a Sigmoid's output) and the image, in [0, 1].

        Returns
        -------
        float
            The loss; ``self.rows`` (B,) keeps each sample's BCE.
        """
        check_pair(probs, target, "BCE.forward", "probs")
        check_not_empty(probs, "BCE.forward")
        check_unit_interval(probs, "BCE.forward: probs (a forgotten sigmoid? BCEWithLogits takes logits)", None)
        check_unit_interval(target, "BCE.forward: target", "divide by 255")
        eps_clip = np.finfo(probs.dtype).eps
        p = np.clip(probs, eps_clip, 1 - eps_clip)
        self.keep(p=p, target=target)
        self.rows = -(target * np.log(p) + (1 - target) * np.log1p(-p)).sum(axis=1)
        return batch_mean(self.rows)

    def backward(self, grad=1.0):
        r"""Return :math:`\partial L/\partial p = \tfrac{g}{B}\,\tfrac{\hat p - t}{\hat p(1 - \hat p)}` (B, N).

        :math:`\tfrac{d}{dp}\big[-t\log p - (1-t)\log(1-p)\big] = -\tfrac tp + \tfrac{1-t}{1-p}
        = \tfrac{p - t}{p(1-p)}`, evaluated at the clipped :math:`\hat p`. Inside the clip
        range :math:`\hat p = p` and this is the exact gradient. Outside it (a probability
        within :math:`\epsilon_{\mathrm{clip}}` of 0 or 1) the exact gradient of the clipped loss would be
        0; this passes the gradient at the clip boundary through instead, as large as about
        :math:`1/\epsilon_{\mathrm{clip}}` (8e6 in float32). A :class:`~npvae.layers.Sigmoid`'s backward then
        multiplies it by :math:`p(1-p)` of the unclipped :math:`p`: for a pixel saturated on the
        wrong side of its target the product is far below the true :math:`p - t`, or 0 once
        :math:`p` has rounded to 1, so the pixel stops learning (saturated on its target's side,
        the product is still :math:`p - t` to round-off). :class:`BCEWithLogits` gives :math:`p - t` for every logit.

        Parameters
        ----------
        grad : float

        Returns
        -------
        ndarray (B, N)
        """
        p, target = self.saved("p", "target")
        scale = check_grad_scalar(grad, "BCE.backward") / p.shape[0]
        return (scale * (p - target) / (p * (1 - p))).astype(p.dtype, copy=False)
