r"""The reparameterization trick.

The encoder outputs, for each sample, :math:`h = [\mu \mid \log\sigma^2]`
(B, 2d). We need :math:`z \sim \mathcal{N}(\mu, \sigma^2)`, but sampling is not
differentiable in :math:`\mu, \sigma`. Write the sample as a deterministic
function of the parameters and of noise that does not depend on them:

.. math::

    \varepsilon \sim \mathcal{N}(0, I), \qquad
    \sigma = \exp(\tfrac12 \log\sigma^2), \qquad
    z = \mu + \sigma \odot \varepsilon .

Then :math:`z` has mean :math:`\mu` and variance :math:`\sigma^2` (the noise is
scaled by the *standard deviation*, not the variance), and for a fixed
:math:`\varepsilon` the gradients follow from the chain rule:

.. math::

    \frac{\partial z}{\partial \mu} = 1, \qquad
    \frac{\partial z}{\partial \log\sigma^2}
      = \varepsilon \, \frac{\partial \sigma}{\partial \log\sigma^2}
      = \varepsilon \cdot \tfrac12 \exp(\tfrac12 \log\sigma^2) = \tfrac12 \varepsilon \sigma .

Predicting :math:`\log\sigma^2` rather than :math:`\sigma^2` lets the layer
output any real number while the variance stays positive.
"""
import numpy as np

from .errors import InputError, InputTypeError
from .module import Module
from .validate import FLOAT_DTYPES, check_grad, check_noise, check_rng, describe_dtype, refuse_array_subclass


def split_h(h, owner):
    """``(mu, logvar)``, each (B, d), from ``h = [mu | logvar]`` (B, 2d); else a clear error."""
    wanted = f"{owner}: h must be a float32 or float64 array (batch, 2 * latent_dim) holding [mu | logvar], got"
    if not isinstance(h, np.ndarray):                       # a wrong type or dtype: a TypeError, as errors.py says
        raise InputTypeError(f"{wanted} {type(h).__name__}")
    if h.dtype not in FLOAT_DTYPES or h.ndim != 2 or h.shape[1] % 2:
        error = InputTypeError if h.dtype not in FLOAT_DTYPES else InputError
        raise error(f"{wanted} {h.shape} {describe_dtype(h.dtype)}")
    refuse_array_subclass(h, "h", owner)
    d = h.shape[1] // 2
    return h[:, :d], h[:, d:]


class Sampler(Module):
    r"""``z = mu + exp(logvar / 2) * eps`` from ``h = [mu | logvar]``.

    Parameters
    ----------
    rng : np.random.Generator, int or None
        Source of the noise when ``forward`` gets no ``eps``.
    """

    def __init__(self, rng=None):
        super().__init__()
        self.rng = check_rng(rng)

    def forward(self, h, eps=None):
        """Draw ``z`` (B, d) from ``h`` (B, 2d).

        Parameters
        ----------
        h : ndarray (B, 2d)
            ``[mu | logvar]``.
        eps : ndarray (B, d), optional
            The noise to use, to reproduce a pass exactly; drawn from ``rng``
            (standard normal, in ``h``'s dtype) when omitted.

        Returns
        -------
        z : ndarray (B, d)
        """
        mu, logvar = split_h(h, "Sampler.forward")
        if eps is None:
            eps = self.rng.standard_normal(mu.shape, dtype=h.dtype)
        else:
            check_noise(eps, mu.shape, h.dtype, "Sampler.forward")
            eps = eps.copy()            # backward reads it: your array may change before then
        std = np.exp(0.5 * logvar)                  # (B, d): the standard deviation, not the variance
        self.keep(eps=eps, std=std)                 # what backward needs
        return mu + std * eps

    def backward(self, grad_out):
        r"""Return ``dh = [dz | dz * eps * std / 2]`` (B, 2d) for ``dz = grad_out`` (B, d).

        .. math::

            \delta_\mu^{(z)} = \frac{\partial L}{\partial z}, \qquad
            \delta_{\log\sigma^2}^{(z)}
              = \frac{\partial L}{\partial z} \cdot \tfrac12 \varepsilon \sigma ,

        with :math:`\varepsilon` and :math:`\sigma` kept from forward (nothing recomputed).
        The superscript says that this is only the road through ``z`` (the notation of
        ``docs/derivation.md``, section 3.4): the KL term adds its own gradient with
        respect to ``mu`` and ``logvar`` (:meth:`npvae.losses.KL.backward`), and
        :meth:`npvae.model.VAE.backward` sums the two.

        Parameters
        ----------
        grad_out : ndarray (B, d)
            :math:`\partial L/\partial z`.

        Returns
        -------
        dh : ndarray (B, 2d)
            ``[dL/dmu | dL/dlogvar]`` through ``z``.
        """
        eps, std = self.saved("eps", "std")
        check_grad(grad_out, eps.shape, eps.dtype, "Sampler.backward")   # z's shape and dtype
        dmu = grad_out                              # dz/dmu = 1
        dlogvar = grad_out * eps * std * 0.5        # dz/dlogvar = eps * std / 2
        return np.concatenate([dmu, dlogvar], axis=1)
