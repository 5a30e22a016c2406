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
from .memory import order_of
from .module import Module
from .validate import check_rng


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
        """
        if not isinstance(h, np.ndarray) or h.ndim != 2 or h.shape[1] % 2:
            got = h.shape if isinstance(h, np.ndarray) else type(h).__name__
            raise InputError(f"Sampler.forward: h must be a 2-D array (batch, 2 * latent_dim) "
                             f"holding [mu | logvar], got {got}")
        B, d = h.shape[0], h.shape[1] // 2
        if eps is None:
            eps = self._buffer("eps", (B, d), h.dtype, order="C")  # Generator fills C order only
            self.rng.standard_normal(out=eps, dtype=h.dtype)
        elif not isinstance(eps, np.ndarray) or eps.shape != (B, d) or eps.dtype != h.dtype:
            got = (eps.shape, eps.dtype) if isinstance(eps, np.ndarray) else type(eps).__name__
            raise InputTypeError(f"Sampler.forward: eps must be an array of shape {(B, d)} "
                                 f"and dtype {h.dtype}, got {got}")
        elif not np.isfinite(eps).all():
            raise InputError("Sampler.forward: eps contains NaN or inf")
        z = self._buffer("z", (B, d), h.dtype, order_of(h))
        std = self._buffer("std", (B, d), h.dtype, order_of(h))
        self.k.sampler_forward(h, eps, z, std)
        self._save(_eps=eps, _std=std)
        return z

    def backward(self, grad_out, input_grad=True):
        r"""Return ``dh = [dz | dz * eps * std / 2]`` (B, 2d).

        .. math::

            \frac{\partial L}{\partial \mu} = \frac{\partial L}{\partial z}, \qquad
            \frac{\partial L}{\partial \log\sigma^2} = \frac{\partial L}{\partial z} \cdot \tfrac12 \varepsilon \sigma ,

        with :math:`\varepsilon` and :math:`\sigma` kept from forward (nothing recomputed).
        """
        eps, std = self._cached("_eps", "_std")
        self._check_grad_out(grad_out, eps.shape, "Sampler.backward: grad_out")
        B, d = eps.shape
        dh = self._buffer("dh", (B, 2 * d), eps.dtype, order_of(grad_out))
        self.k.sampler_backward(grad_out, eps, std, dh)            # (B, 2d)
        return dh
