r"""Evaluating a VAE: the test ELBO and the importance-weighted NLL.

Both estimates are in nats per image and use their own noise: a fresh
``np.random.default_rng(seed)`` per call, so the same model and data give the
same number every time, and evaluating never consumes the training streams.

The ELBO (:func:`evaluate_elbo`) follows the PyTorch VAE example: one ``z`` per
image, BCE summed over pixels plus the analytic KL, averaged over images.

The importance-weighted estimate (:func:`iw_nll`, Burda et al., 2016) draws
:math:`z_1..z_k \sim q(z \mid x)` and averages the weights
:math:`w_i = p(x \mid z_i)\, p(z_i) / q(z_i \mid x)`:

.. math::

    -\log p(x) \approx -\Big(\operatorname{logsumexp}_i \log w_i - \log k\Big),
    \qquad \log w = \log p(x \mid z) + \log \mathcal N(z; 0, I)
                    - \log \mathcal N(z; \mu, \sigma^2).

Its expectation is a lower bound on :math:`\log p(x)` that tightens as ``k``
grows; at ``k = 1`` it is the single-sample ELBO with the Monte Carlo KL
:math:`\log q(z|x) - \log p(z)`, which ``evaluate_elbo(kl="sample")`` computes
from the very same draws.

This module also holds the batch conversion that :func:`npvae.train.fit`
shares (:class:`Batches`).
"""

import numpy as np

from . import kernels
from .data import to_float
from .errors import InputError, InputTypeError
from .model import VAE, LossParts
from .validate import check_images, check_positive_float, check_positive_int, check_seed

__all__ = ["evaluate_elbo", "iw_nll", "check_images", "Batches", "binarize_inplace"]


# -- inputs -------------------------------------------------------------------------
def check_model(model, name="model"):
    if not isinstance(model, VAE):
        raise InputTypeError(f"{name} must be an npvae.VAE, got {type(model).__name__}")
    return model


class Batches:
    """Turns rows of ``images`` into float batches in arrays allocated once.

    ``uint8`` rows are gathered into a ``uint8`` buffer and scaled into a float
    buffer by the back end's ``scale_pixels`` kernel (the values of
    :func:`npvae.data.to_float`, faster); float rows are gathered
    (and cast if needed) straight into the float buffer. The returned batch is
    a view of that buffer, overwritten by the next call: the training loop
    allocates nothing of batch size per step.
    """

    def __init__(self, images, batch_size, dtype, backend=None):
        self.images = images
        self.backend = backend   # kernels for take_column_major (npvae.kernels.resolve)
        n = min(batch_size, len(images))
        self.x = np.empty((n, images.shape[1]), dtype)
        # gather buffer in the images' dtype, unless we can gather into x directly
        self.raw = None if images.dtype == dtype else np.empty((n, images.shape[1]), images.dtype)
        self.column_major = {}   # batch size -> (float, uint8 or None) column-major arrays

    def _scale(self, pixels, x):
        """x = pixels / 255, by the back end's kernel."""
        if pixels.flags.writeable:
            kernels.get(self.backend).scale_pixels(pixels, x)
        else:   # read-only images (e.g. memory-mapped): to Numba another signature to
            to_float(pixels, out=x)   # compile in this process; the same values
        return x

    def _convert(self, raw, n):
        x = self.x[:n]
        if raw.dtype == np.uint8:
            return self._scale(raw, x)
        np.copyto(x, raw)                         # float64 -> float32 (or back)
        return x

    def take(self, idx):
        """The rows ``images[idx]`` as floats, ``idx`` an int array of at most batch_size."""
        n = len(idx)
        # mode="clip": with the default mode="raise", np.take writes through a
        # temporary copy of ``out``; our indices are always in range.
        if self.raw is None:
            return np.take(self.images, idx, axis=0, out=self.x[:n], mode="clip")
        return self._convert(np.take(self.images, idx, axis=0, out=self.raw[:n], mode="clip"), n)

    def take_column_major(self, idx):
        """:meth:`take`, but into a column-major array kept per batch size (the training
        step's layout). Raw pixels are transposed before they are scaled (a quarter of the
        bytes to move)."""
        n = len(idx)
        bufs = self.column_major.get(n)
        if bufs is None:
            shape = (n, self.images.shape[1])
            uint8 = self.images.dtype == np.uint8
            bufs = self.column_major[n] = (np.empty(shape, self.x.dtype, order="F"),
                                           np.empty(shape, np.uint8, order="F") if uint8 else None)
        x, pixels = bufs
        rows = np.take(self.images, idx, axis=0, out=(self.x if self.raw is None else self.raw)[:n], mode="clip")
        if pixels is None:
            np.copyto(x, rows)                    # transposed (and cast) in one pass
            return x
        np.copyto(pixels, rows)
        return self._scale(pixels, x)

    def slice(self, start, stop):
        """The rows ``images[start:stop]`` as floats (a view when no conversion is needed)."""
        raw = self.images[start:stop]
        if self.raw is None:
            return np.ascontiguousarray(raw)
        return self._convert(raw, stop - start)


def binarize_inplace(x, rng, u):
    """Dynamic binarization in place: ``x = (u < x)`` with ``u ~ U[0, 1)`` drawn into ``u``.

    Same draws and result as :func:`npvae.data.binarize` (``rng.random`` of
    ``x``'s shape), without allocating: ``u`` is a scratch array like ``x``.
    """
    rng.random(out=u, dtype=u.dtype)
    np.less(u, x, out=x)                          # bool -> 0.0 / 1.0
    return x


def _prepare(model, images, batch_size, seed, binarize):
    check_model(model)
    images = check_images(images, "images", model.input_dim)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed, "seed")
    if not isinstance(binarize, bool):
        raise InputTypeError(f"binarize must be True or False, got {binarize!r}")
    batches = Batches(images, batch_size, model.dtype, model.backend)
    # A second, fixed stream for binarizing the test images: the same 0/1
    # images at every evaluation, independent of the eps stream.
    bin_rng = np.random.default_rng([seed, 1]) if binarize else None
    scratch = np.empty_like(batches.x) if binarize else None
    return images, batch_size, batches, np.random.default_rng(seed), bin_rng, scratch


def _iter_batches(images, batch_size, batches, bin_rng, scratch):
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        x = batches.slice(start, stop)
        if bin_rng is not None:
            x = binarize_inplace(x if x.base is batches.x else x.copy(), bin_rng, scratch[:stop - start])
        yield x


def _log_terms(model, xt, ht, eps):
    r"""For ``eps`` (c, n, d): ``-log p(x|z)`` and ``log q(z|x) - log p(z)``, each (c, n) float64.

    ``xt`` (c*n, D) and ``ht`` (c*n, 2d) hold the n images and their encodings once
    per sample, sample-major (rows i*n .. i*n+n-1 are sample i). ``z = mu + sigma * eps``
    goes through the model's own sampler (the training kernel). With
    :math:`(z - \mu)/\sigma = \varepsilon` the log densities' constants cancel:
    :math:`\log q - \log p = \tfrac12 \sum_j (z_j^2 - \varepsilon_j^2 - \log\sigma_j^2)`.
    """
    c, n, d = eps.shape
    z = model.sampler.forward(ht, eps.reshape(c * n, d))
    model.bce.forward(model.decoder.forward(z), xt)
    nll_x = model.bce.rows.astype(np.float64)                          # -log p(x|z), (c*n,)
    z64, e64, lv = z.astype(np.float64), eps.reshape(c * n, d).astype(np.float64), ht[:, d:]
    log_q_p = 0.5 * (z64 * z64 - e64 * e64 - lv).sum(axis=1)          # log q(z|x) - log p(z)
    return nll_x.reshape(c, n), log_q_p.reshape(c, n)


def evaluate_elbo(model, images, *, batch_size=1000, seed=0, beta=1.0, kl="analytic", binarize=False):
    """The loss on ``images`` with one sampled ``z`` per image: ``(total, recon, kl)``.

    Parameters
    ----------
    model : VAE
    images : ndarray (N, input_dim)
        ``uint8`` pixels or floats in [0, 1].
    batch_size : int
        Images per forward pass. The result does not depend on it beyond
        round-off (each image gets the same noise whatever the batches). Larger
        batches are faster, through fewer and larger GEMMs (10k images: 8% less
        time at 1000 than at 500 on the development machine). 1000 images need
        about 10 MB, 7 MB of which stay in the model's workspaces.
    seed : int
        Seed of the noise ``eps``: a fresh Generator per call, so the value is
        reproducible and the model's own sampler stream is untouched.
    beta : float
        ``total = recon + beta * kl``; 1 gives the negative ELBO.
    kl : {"analytic", "sample"}
        ``"analytic"``: the closed-form KL (the training loss). ``"sample"``:
        the Monte Carlo estimate ``log q(z|x) - log p(z)`` at the sampled ``z``,
        which makes ``total`` equal ``iw_nll(..., k=1)`` (same seed and
        batch size) up to round-off.
    binarize : bool
        Binarize the images first with a fixed stream (seeded by ``seed``),
        as for a model trained with dynamic binarization.

    Returns
    -------
    LossParts
        ``(total, recon, kl)``, each the mean over images, in nats.
    """
    if kl not in ("analytic", "sample"):
        raise InputError(f"kl must be 'analytic' or 'sample', got {kl!r}")
    beta = check_positive_float(beta, "beta", allow_zero=True)
    images, batch_size, batches, rng, bin_rng, scratch = _prepare(model, images, batch_size, seed, binarize)
    was_training = model.training
    model.eval()
    recon_sum = kl_sum = 0.0
    try:
        for x in _iter_batches(images, batch_size, batches, bin_rng, scratch):
            if kl == "analytic":
                eps = rng.standard_normal((len(x), model.latent_dim), dtype=model.dtype)
                model._loss(x, beta, eps)
                recon_sum += model.bce.rows.sum(dtype=np.float64)
                kl_sum += model.kl.rows.sum(dtype=np.float64)
            else:
                eps = rng.standard_normal((1, len(x), model.latent_dim), dtype=model.dtype)
                h = model.encoder.forward(x).copy()
                nll_x, log_q_p = _log_terms(model, x, h, eps)
                recon_sum += nll_x.sum()
                kl_sum += log_q_p.sum()
    finally:
        model.train(was_training)
    recon, kl_mean = recon_sum / len(images), kl_sum / len(images)
    recon, kl_mean = float(recon), float(kl_mean)
    return LossParts(recon + beta * kl_mean, recon, kl_mean)


def iw_nll(model, images, k=100, *, batch_size=500, seed=0, binarize=False, chunk_rows=1024,
           per_image=False):
    """Importance-weighted estimate of ``-log p(x)`` in nats (Burda et al., 2016).

    Parameters
    ----------
    model : VAE
    images : ndarray (N, input_dim)
        ``uint8`` pixels or floats in [0, 1].
    k : int
        Importance samples per image (>= 1). Cost grows linearly in ``k``;
        the estimate decreases towards ``-log p(x)`` on average as ``k`` grows.
    batch_size : int
        Images encoded at a time.
    seed : int
        Seed of a fresh Generator for the noise (and the binarization).
    binarize : bool
        As for :func:`evaluate_elbo`.
    chunk_rows : int
        Memory bound: at most this many ``(sample, image)`` rows go through the
        decoder at once (at least one sample of a whole batch). Does not change
        the draws for ``k = 1``.
    per_image : bool
        Return the (N,) array of per-image estimates instead of their mean.

    Returns
    -------
    float or ndarray
        The mean over images (or every image's value) of
        ``-(logsumexp_i log w_i - log k)``.
    """
    k = check_positive_int(k, "k")
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    images, batch_size, batches, rng, bin_rng, scratch = _prepare(model, images, batch_size, seed, binarize)
    d = model.latent_dim
    out = np.empty(len(images))
    was_training = model.training
    model.eval()
    try:
        start = 0
        for x in _iter_batches(images, batch_size, batches, bin_rng, scratch):
            n = len(x)
            h = model.encoder.forward(x).copy()          # the encoder runs once per image
            per_chunk = max(1, min(k, chunk_rows // n))
            # the batch repeated once per sample of a chunk, made once per batch; a prefix
            # serves the last, shorter chunk since the layout is sample-major
            xt = np.broadcast_to(x, (per_chunk,) + x.shape).reshape(per_chunk * n, -1)
            ht = np.broadcast_to(h, (per_chunk,) + h.shape).reshape(per_chunk * n, -1)
            # Streaming log-sum-exp over the k samples: running max m and sum s of exp(lw - m).
            m = np.full(n, -np.inf)
            s = np.zeros(n)
            for done in range(0, k, per_chunk):
                c = min(per_chunk, k - done)
                eps = rng.standard_normal((c, n, d), dtype=model.dtype)
                nll_x, log_q_p = _log_terms(model, xt[:c * n], ht[:c * n], eps)
                lw = -nll_x - log_q_p                       # (c, n) log weights
                m_new = np.maximum(m, lw.max(axis=0))
                s = s * np.exp(m - m_new) + np.exp(lw - m_new).sum(axis=0)
                m = m_new
            out[start:start + n] = -(m + np.log(s) - np.log(k))
            start += n
    finally:
        model.train(was_training)
    return out if per_image else float(out.mean())
