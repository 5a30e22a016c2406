r"""The variational autoencoder: encoder, sampler, decoder and the two losses.

One training step, as data (d = latent_dim)::

    x (B, 784) in [0, 1]
     -> encoder: Dense(784, 400) -> ReLU -> Dense(400, 2d)     h = [mu | logvar] (B, 2d)
     -> sampler: z = mu + exp(logvar / 2) * eps                 z (B, d)
     -> decoder: Dense(d, 400) -> ReLU -> Dense(400, 784)       logits (B, 784)
     -> loss = BCEWithLogits(logits, x) + beta * KL(h)          mean over the batch
    backward: dlogits -> decoder -> dz -> sampler -> dh (+ beta * KL's dh) -> encoder

The decoder's final Sigmoid is fused into the loss (:class:`BCEWithLogits`),
which is exact and stable; :meth:`VAE.decode` applies it to give pixel
probabilities.
"""
from typing import NamedTuple

import numpy as np

from .errors import InputError, InputTypeError, StateError
from .layers import Dense, ReLU, Sequential, Sigmoid
from .losses import KL, BCEWithLogits
from .module import Module
from .sampler import Sampler
from .validate import check_batch, check_dtype, check_positive_float, check_positive_int, check_rng


class LossParts(NamedTuple):
    """A loss and its two parts, each the mean per sample: ``total = recon + beta * kl``."""
    total: float
    recon: float
    kl: float


def _mlp(sizes, dtype, rng):
    """Dense -> ReLU -> ... -> Dense through ``sizes`` (no activation after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, dtype=dtype, rng=rng))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


class VAE(Module):
    """The classic VAE with a Bernoulli decoder (Kingma & Welling, 2014).

    Parameters
    ----------
    input_dim : int
        Pixels per image (784 for 28x28).
    hidden_dims : int or sequence of int
        Widths of the hidden layers of the encoder; the decoder mirrors them.
    latent_dim : int
        ``d``, the size of ``z``.
    dtype : float32 (training) or float64 (gradient checks)
    rng : np.random.Generator, int or None
        Draws the initial weights, then the sampler's noise: one seed fixes everything.
    backend : "numba", "numpy" or None ($NPVAE_BACKEND, else numba)
    """

    def __init__(self, input_dim=784, hidden_dims=400, latent_dim=20, *,
                 dtype=np.float32, rng=None, backend=None):
        super().__init__()
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        if np.ndim(hidden_dims) == 0:
            hidden_dims = (hidden_dims.item() if isinstance(hidden_dims, np.ndarray) else hidden_dims,)
        try:
            hidden = tuple(hidden_dims)
        except TypeError:
            raise InputTypeError(f"hidden_dims must be an int or a sequence of ints, got {hidden_dims!r}") from None
        if not hidden:
            raise InputError("hidden_dims needs at least one width, e.g. 400 or (400, 200)")
        self.hidden_dims = tuple(check_positive_int(h, "hidden_dims") for h in hidden)
        self.dtype = check_dtype(dtype)
        rng = check_rng(rng)
        self.encoder = _mlp((self.input_dim, *self.hidden_dims, 2 * self.latent_dim), self.dtype, rng)
        self.decoder = _mlp((self.latent_dim, *self.hidden_dims[::-1], self.input_dim), self.dtype, rng)
        self.sampler = Sampler(rng)
        self.kl = KL()
        self.bce = BCEWithLogits()
        self.sigmoid = Sigmoid()
        self.set_backend(backend)
        self.pack_parameters()

    def config(self):
        """The constructor arguments that fix the architecture (saved in checkpoints)."""
        return dict(input_dim=self.input_dim, hidden_dims=list(self.hidden_dims),
                    latent_dim=self.latent_dim, dtype=str(self.dtype))

    def extra_repr(self):
        return f"{self.input_dim}-{'-'.join(map(str, self.hidden_dims))}-{self.latent_dim}, dtype={self.dtype}"

    @property
    def rng(self):
        """The sampler's Generator (its state is saved with checkpoints)."""
        return self.sampler.rng

    # -- the training step (no input checks: fit() feeds it clean batches) ---------
    def _loss(self, x, beta=1.0, eps=None):
        h = self.encoder.forward(x)                        # (B, 2d)
        z = self.sampler.forward(h, eps)                   # (B, d)
        logits = self.decoder.forward(z)                   # (B, 784)
        recon = self.bce.forward(logits, x)
        kl = self.kl.forward(h)
        self._save(_beta=beta)
        return LossParts(recon + beta * kl, recon, kl)

    def loss(self, x, beta=1.0, eps=None):
        """Forward pass and loss; call :meth:`backward` next to get the gradients.

        Parameters
        ----------
        x : ndarray (B, input_dim), floats in [0, 1]
        beta : float
            Weight on the KL term (1 is the VAE; other values give a beta-VAE).
        eps : ndarray (B, latent_dim), optional
            The sampler's noise, to reproduce a pass exactly.

        Returns
        -------
        LossParts
            ``(total, recon, kl)``, each the mean over the batch of per-sample sums.
        """
        x = check_batch(x, "x", self.input_dim, self.dtype, unit_interval=True)
        beta = check_positive_float(beta, "beta", allow_zero=True)
        return self._loss(x, beta, eps)

    def backward(self):
        """Accumulate every parameter's gradient of the last :meth:`loss`'s total.

        It must follow :meth:`loss` directly: ``encode``, ``decode``, ``sample`` and the
        other inference methods reuse the layers' workspaces and invalidate it.
        """
        beta = self._cached("_beta")
        if beta is None:
            raise StateError("VAE.backward: an inference call (encode, decode, sample, forward, "
                             "reconstruct or interpolate) ran after loss() and overwrote what backward "
                             "needs; call loss() again right before backward()")
        dlogits = self.bce.backward()                      # (B, 784)
        dz = self.decoder.backward(dlogits)                # (B, d)
        dh = self.sampler.backward(dz)                     # (B, 2d): through z
        dh += self.kl.backward(beta)                       # (B, 2d): mu, logvar's second source
        self.encoder.backward(dh, input_grad=False)        # no gradient for the data

    # -- using a trained model ---------------------------------------------------------
    def _inference(self):
        """Inference reuses the training workspaces: the pending backward is no longer valid."""
        if "_beta" in self.__dict__:
            self._beta = None

    def _batch(self, x, name="x"):
        self._inference()
        return check_batch(x, name, self.input_dim, self.dtype)

    def forward(self, x, eps=None):
        """``(x_hat, mu, logvar)`` for a batch, with ``z`` sampled; fresh arrays."""
        x = self._batch(x)
        h = self.encoder.forward(x)
        z = self.sampler.forward(h, eps)
        x_hat = self.sigmoid.forward(self.decoder.forward(z)).copy()
        d = self.latent_dim
        return x_hat, h[:, :d].copy(), h[:, d:].copy()

    def encode(self, x):
        """``(mu, logvar)``, each (B, latent_dim), of ``q(z | x)``."""
        h = self.encoder.forward(self._batch(x))
        d = self.latent_dim
        return h[:, :d].copy(), h[:, d:].copy()

    def decode(self, z):
        """Pixel probabilities (B, input_dim) for latent codes ``z`` (B, latent_dim)."""
        self._inference()
        z = check_batch(z, "z", self.latent_dim, self.dtype)
        return self.sigmoid.forward(self.decoder.forward(z)).copy()

    def reconstruct(self, x, sample=False):
        """Decode the encoding of ``x``: from the mean ``mu`` (default) or a sampled ``z``."""
        if sample:
            return self.forward(x)[0]
        return self.decode(self.encode(x)[0])

    def sample(self, n, rng=None):
        """``n`` images decoded from ``z ~ N(0, I)``; ``rng`` defaults to the model's."""
        n = check_positive_int(n, "n")
        rng = self.rng if rng is None else check_rng(rng)
        return self.decode(rng.standard_normal((n, self.latent_dim)).astype(self.dtype))

    def interpolate(self, x_a, x_b, steps=9):
        """Decode ``z_i = (i / (steps-1)) z_b + (1 - i / (steps-1)) z_a`` for i = 0..steps-1.

        ``z_a``, ``z_b`` are the means of ``q(z | x)`` of two images (each (input_dim,)
        or (1, input_dim)). Returns (steps, input_dim): the first row reconstructs
        ``x_a``, the last ``x_b``.
        """
        steps = check_positive_int(steps, "steps")
        if steps < 2:
            raise InputError(f"steps must be at least 2 (both end points), got {steps}")
        ends = []
        for name, x in (("x_a", x_a), ("x_b", x_b)):
            x = np.asarray(x) if isinstance(x, (list, tuple)) else x
            if isinstance(x, np.ndarray) and x.ndim == 1:
                x = x[None, :]
            x = self._batch(x, name)
            if x.shape[0] != 1:
                raise InputError(f"{name} must be one image ({self.input_dim},), got shape {x.shape}")
            ends.append(self.encode(x)[0][0])
        w = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        return self.decode(w * ends[1] + (1 - w) * ends[0])
