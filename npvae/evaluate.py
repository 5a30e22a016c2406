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

With grey-level pixels (the default, no binarization) :math:`p(x \mid z)` is the
decoder's Bernoulli "likelihood" of intensities that are not 0/1: not a normalised
density over grey-level images, so the number is a loss that compares models on
the same data, not a negative log-likelihood comparable with the binarized-MNIST
figures in the literature. With ``binarize=True`` it is one.

Both run on the reference (``backend="numpy"``: the model's own layers) or on
the fast path (``backend="numba"``: :class:`npvae.fast.Evaluator`, the same
forward pass with the training step's layer kernels); the default is
``$NPVAE_BACKEND``, else ``"numba"`` (:mod:`npvae.backend`).
"""
import contextlib

import numpy as np

from . import footprint
from .backend import describe, resolve
from .data import to_float
from .errors import DivergenceError, InputError, InputTypeError
from .losses import KL, BCEWithLogits, bce_with_logits_per_sample, kl_per_sample
from .model import LossParts, check_vae
from .sampler import Sampler
from .validate import (check_bool, check_finite_parameters, check_images, check_layer_dtypes, check_positive_float,
                       check_positive_int, check_seed, same_class)

__all__ = ["evaluate_elbo", "iw_nll", "check_model", "check_evaluation_memory", "binarize_inplace", "forward_pass",
           "evaluation_mode"]


def check_model(model, name="model"):
    return check_vae(model, name)


class ReferencePass:
    """The two questions evaluation asks of a model, answered by its own (reference) layers.

    Each batch is encoded by :meth:`VAE.encode`, which, like any inference call, ends
    what a pending ``loss`` kept for ``backward``; the codes sampled from it go through
    the decoder unchecked (a diverged model's NaN gives NaN, as on the fast path). Codes
    that overflow, which ``encode`` refuses, are the encoder's as they are: ``check_finite``
    judges them, as on the fast path.

    :class:`npvae.fast.Evaluator` answers them on the fast path, with the same methods.
    """

    def __init__(self, model):
        self.model = model

    def prepare(self, x):
        """``x`` as :meth:`encode` and :meth:`recon_rows` take it (here: as it is)."""
        return x

    def encode(self, x):
        """``h = [mu | logvar]`` (B, 2d)."""
        try:
            return np.concatenate(self.model.encode(x), axis=1)
        except DivergenceError:     # finite parameters, codes that overflow: NaN or inf, for check_finite
            h = self.model.encoder.forward(x)
            if np.isfinite(h).all():    # not the codes: a subclass's own encode refused for a cause of its own
                raise
            return h

    def recon_rows(self, z, x):
        """``-log p(x | z)`` (the BCE) of each row (B,)."""
        return bce_with_logits_per_sample(self.model.decoder.forward(z), x)

    def numpy_warnings(self):
        """The reference warns as NumPy does (the fast path does not: see its Evaluator)."""
        return contextlib.nullcontext()


def check_stock_terms(model, caller):
    """Evaluation computes the stock VAE's sampling and terms from ``model.encode`` and
    ``model.decoder``: a model whose ``sampler``, ``kl`` or ``bce`` is another (a prior or a
    likelihood of its own) is refused, as its numbers would be another model's."""
    for part, kind in (("sampler", Sampler), ("kl", KL), ("bce", BCEWithLogits)):
        got = getattr(model, part, None)
        if not same_class(got, kind):
            raise InputTypeError(f"{caller}: model.{part} is a {type(got).__name__}, not the stock VAE's "
                                 f"npvae.{kind.__name__}: {caller} samples and scores as the stock VAE does "
                                 f"(z = mu + exp(logvar / 2) * eps, the BCE of its decoder, the KL to N(0, I)); "
                                 f"evaluate a model with a sampler, a likelihood or a prior of its own with its own "
                                 f"loss, e.g. model.loss(x, eps=eps) over the test images")


def forward_pass(model, backend=None, caller="forward_pass"):
    """The forward pass of ``model`` on ``backend`` (see :mod:`npvae.backend`); ``caller``
    begins the message if the model's terms are not the stock ones or the fast path refuses
    the model."""
    check_stock_terms(model, caller)
    if resolve(backend) == "numba":
        from .fast import Evaluator       # imports Numba: only when the fast path is asked for
        try:
            return Evaluator(model)
        except InputTypeError as e:       # a model the fast path does not run
            raise InputTypeError(f"{describe(caller, backend)}: {e}") from None
    return ReferencePass(model)


def binarize_inplace(x, rng, u):
    """Dynamic binarization in place: ``x = (u < x)`` with ``u ~ U[0, 1)`` drawn into ``u``.

    Same draws and result as :func:`npvae.data.binarize` (``rng.random`` of
    ``x``'s shape), without allocating: ``u`` is a scratch array of ``x``'s shape.
    """
    rng.random(out=u, dtype=u.dtype)
    np.less(u, x, out=x)                          # bool -> 0.0 / 1.0
    return x


@contextlib.contextmanager
def evaluation_mode(model):
    """``model.eval()`` for a ``with`` block, then each module's own mode back (an exception too).

    No npvae layer behaves differently in the two modes, but a layer of one's own may (a
    dropout): it is off while a model is evaluated, as after PyTorch's ``model.eval()``, and
    draws nothing from the training streams.

    Parameters
    ----------
    model : Module
        Put in evaluation mode with every sub-module for the block.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)         # as Module.train sets it, one module at a time


def _prepare(model, images, batch_size, seed, binarize, backend, caller):
    check_layer_dtypes(check_model(model))
    check_finite_parameters(model, "every loss it gives is NaN")
    images = check_images(images, "images", model.input_dim, stacklevel=4, dtype=model.dtype)   # at evaluate_elbo's caller
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed, "seed")
    check_bool(binarize, "binarize")
    return images, batch_size, forward_pass(model, backend, caller), np.random.default_rng(seed)


def _batches(model, images, batch_size, seed, binarize):
    """Float batches (row-major) of ``images`` in order; binarized with a fixed stream of their own
    (the same 0/1 images at every evaluation, independent of the noise ``eps``)."""
    bin_rng = np.random.default_rng([seed, 1]) if binarize else None
    n = min(batch_size, len(images))
    buf = np.empty((n, model.input_dim), model.dtype)
    scratch = np.empty_like(buf) if binarize else None
    for start in range(0, len(images), batch_size):
        rows = images[start:start + batch_size]
        x = buf[:len(rows)]
        if rows.dtype == np.uint8:
            to_float(rows, out=x)
        else:
            np.copyto(x, rows)
        if binarize:
            binarize_inplace(x, bin_rng, scratch[:len(rows)])
        yield x


def _sample_z(h, eps):
    """``z = mu + exp(logvar / 2) * eps`` (``Sampler.forward``) for ``h = [mu | logvar]``."""
    d = eps.shape[-1]
    return h[:, :d] + np.exp(0.5 * h[:, d:]) * eps


def _log_q_minus_log_p(z, eps, logvar):
    r""":math:`\log q(z|x) - \log p(z)` per row, float64: with :math:`(z - \mu)/\sigma = \varepsilon`
    the densities' constants cancel, leaving :math:`\tfrac12 \sum_j (z_j^2 - \varepsilon_j^2 - \log\sigma_j^2)`."""
    z, eps, logvar = (a.astype(np.float64) for a in (z, eps, logvar))
    return 0.5 * (z * z - eps * eps - logvar).sum(axis=1)


def evaluate_elbo(model, images, *, batch_size=1000, seed=0, beta=1.0, kl="analytic", binarize=False,
                  backend=None, check_finite=True):
    """The loss on ``images`` with one sampled ``z`` per image: ``(total, recon, kl)``.

    One draw per image makes it noisy: on 10,000 test images ``seed`` alone moves it by
    about 0.1 nats (a standard deviation of 0.05-0.07 on Fashion-MNIST). As for :func:`iw_nll`,
    it is a negative ELBO of the data only for binary images.

    Parameters
    ----------
    model : VAE
        Its ``encode`` and ``decoder`` run as they are; the sampling and the two terms are the
        stock VAE's (the BCE, the KL to N(0, I)) whatever ``model.loss`` computes. A model whose
        ``sampler``, ``kl`` or ``bce`` is another is refused. Inside a loop of
        :class:`npvae.fast.Trainer` steps, call ``trainer.sync()`` first: until then the model
        holds what the trainer took, not what it trained. On the reference, like any call of
        ``model.encode``, it ends what a pending ``model.loss`` kept for ``backward``. It runs
        in evaluation mode (``model.eval()``), and each module has its own mode back after.
    images : ndarray (N, input_dim)
        ``uint8`` pixels or floats in [0, 1].
    batch_size : int
        Images per forward pass. The result does not depend on it beyond round-off
        (each image gets the same noise whatever the batches); larger batches are
        faster, through fewer and larger matrix products.
    seed : int
        Seed of the noise ``eps``: a fresh Generator per call, so the value is
        reproducible and the model's own sampler stream is untouched. The draws are in the
        model's dtype, and NumPy's float32 and float64 normals are different streams: a
        float64 copy of a model gets other noise (0.06 nats apart on MNIST, all of it noise).
    beta : float
        ``total = recon + beta * kl``; 1 gives the negative ELBO.
    kl : {"analytic", "sample"}
        ``"analytic"``: the closed-form KL (the training loss). ``"sample"``: the Monte
        Carlo estimate ``log q(z|x) - log p(z)`` at the sampled ``z``, which makes
        ``total`` equal ``iw_nll(..., k=1)`` (same seed and batch size, ``beta=1``) up to round-off.
    binarize : bool
        Binarize the images first with a fixed stream (seeded by ``seed``), as for a
        model trained with dynamic binarization.
    backend : {"numba", "numpy"} or None
        The fast path or the reference (:mod:`npvae.backend`); the same number to round-off.
    check_finite : bool
        Raise :class:`DivergenceError` if the loss is NaN or inf (default); False returns it.

    Returns
    -------
    LossParts
        ``(total, recon, kl)``, each the mean over images, in nats.

    Raises
    ------
    DivergenceError
        With ``check_finite``: the loss is NaN or inf though the parameters are finite
        (NaN or inf in them is an InputError): a model that diverged, whose codes overflow.
    """
    if not isinstance(kl, str) or kl not in ("analytic", "sample"):
        raise InputError(f"kl must be 'analytic' or 'sample', got {kl!r}")
    beta = check_positive_float(beta, "beta", allow_zero=True)
    check_finite = check_bool(check_finite, "check_finite")
    images, batch_size, net, rng = _prepare(model, images, batch_size, seed, binarize, backend, "evaluate_elbo")
    rows = min(batch_size, len(images))
    check_evaluation_memory(model, rows, f"evaluate_elbo with batch_size={batch_size}", "batch_size (default 1000)")
    d = model.latent_dim
    recon_sum = kl_sum = 0.0
    with evaluation_mode(model), net.numpy_warnings():      # a NaN or inf is checked below, or by the caller
        for x in _batches(model, images, batch_size, seed, binarize):
            x = net.prepare(x)
            h = net.encode(x)                                   # (B, 2d)
            eps = rng.standard_normal((len(x), d), dtype=model.dtype)
            z = _sample_z(h, eps)                               # (B, d)
            recon_sum += float(net.recon_rows(z, x).sum(dtype=np.float64))
            if kl == "analytic":
                kl_sum += float(kl_per_sample(h[:, :d], h[:, d:]).sum(dtype=np.float64))
            else:
                kl_sum += float(_log_q_minus_log_p(z, eps, h[:, d:]).sum())
    recon, kl_mean = recon_sum / len(images), kl_sum / len(images)
    parts = LossParts(recon + beta * kl_mean, recon, kl_mean)
    if check_finite and not np.isfinite(parts.total):
        raise _diverged(f"evaluate_elbo: the loss on these images is {parts.total} (recon {recon}, "
                        f"KL {kl_mean})")
    return parts


def _diverged(what):
    """The DivergenceError of an evaluation whose result is NaN or inf from finite parameters."""
    return DivergenceError(f"{what} though the model's parameters are finite: its codes or its reconstructions "
                           f"overflow, as in a model that diverged in training. Load a good checkpoint, or pass "
                           f"check_finite=False to get the value")


def check_evaluation_memory(model, rows, caller, smaller):
    """Refuse sending ``rows`` rows through the model at once if this machine cannot hold them:
    a bare MemoryError would come later, after minutes of paging. ``caller`` begins the message,
    which ends "pass a smaller ``smaller``"."""
    need = footprint.evaluation_bytes(model.input_dim, model.hidden_dims, model.latent_dim, rows, model.dtype)
    have = footprint.available_bytes()
    if have is not None and need > have:
        raise InputError(f"{caller} sends {rows:,} rows through the model at once, about "
                         f"{footprint.format_bytes(need)}, but {footprint.format_bytes(have)} is available: "
                         f"free some memory, or pass a smaller {smaller}")


def _check_chunk_memory(model, k, chunk_rows, n):
    """Refuse a chunk (up to ``k`` samples of a batch of ``n``) that this machine cannot hold."""
    per_chunk = min(k, max(1, chunk_rows // n))
    smaller = ("chunk_rows (default 1024) or batch_size (default 500)" if per_chunk > 1 else
               "batch_size (default 500): one sample of a whole batch goes through at once, whatever chunk_rows")
    check_evaluation_memory(model, per_chunk * n, f"iw_nll with k={k}, batch_size={n} and chunk_rows={chunk_rows}",
                            smaller)


def iw_nll(model, images, k=100, *, batch_size=500, seed=0, binarize=False, chunk_rows=1024,
           per_image=False, backend=None, progress=None, check_finite=True):
    """Importance-weighted estimate of ``-log p(x)`` in nats (Burda et al., 2016).

    A negative log-likelihood only for binary images (``binarize=True``, or 0/1 pixels): on
    grey levels the decoder's Bernoulli is no density over images, and the number is a loss
    that compares models on the same data, not one to set beside NLLs in the literature.

    Parameters
    ----------
    model : VAE
        As for :func:`evaluate_elbo`: ``log p(x | z)`` is its decoder's Bernoulli, ``p(z)`` is
        N(0, I), whatever ``model.loss`` computes; a model whose ``sampler``, ``kl`` or ``bce`` is
        another is refused; inside a :class:`npvae.fast.Trainer` loop, ``sync()`` first.
    images : ndarray (N, input_dim)
        ``uint8`` pixels or floats in [0, 1].
    k : int
        Importance samples per image (>= 1). Cost grows linearly in ``k``;
        the estimate decreases towards ``-log p(x)`` on average as ``k`` grows.
    batch_size : int
        Images encoded at a time. The noise is drawn batch by batch, so another
        ``batch_size`` gives other draws: an estimate as good, not the same number
        (in :func:`evaluate_elbo` each image's one draw comes in image order whatever
        the batches; here a batch's ``k`` draws per image come sample by sample).
    seed : int
        Seed of a fresh Generator for the noise (and the binarization); the noise is drawn
        in the model's dtype, as for :func:`evaluate_elbo`.
    binarize : bool
        As for :func:`evaluate_elbo`.
    chunk_rows : int
        Memory bound: at most this many ``(sample, image)`` rows go through the
        decoder at once (at least one sample of a whole batch). Does not change
        the draws: the result is the same to round-off for any ``chunk_rows``.
    per_image : bool
        Return the (N,) float64 array of per-image estimates instead of their mean (the
        estimate is summed in float64 whatever the model's dtype).
    backend : {"numba", "numpy"} or None
        As for :func:`evaluate_elbo`.
    progress : callable(done, total), optional
        Called after each chunk of samples with the images done so far (a batch's images
        counted in proportion to its samples done, rounded down) and their total.
    check_finite : bool
        As for :func:`evaluate_elbo`: raise if an image's estimate is NaN or inf.

    Returns
    -------
    float or ndarray
        The mean over images (or every image's value) of
        ``-(logsumexp_i log w_i - log k)``.

    Raises
    ------
    DivergenceError
        As for :func:`evaluate_elbo`, naming the first such image.
    """
    k = check_positive_int(k, "k")
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    check_finite = check_bool(check_finite, "check_finite")
    per_image = check_bool(per_image, "per_image")
    if progress is not None and not callable(progress):
        raise InputTypeError(f"progress must be callable(done, total) or None, got {type(progress).__name__}")
    images, batch_size, net, rng = _prepare(model, images, batch_size, seed, binarize, backend, "iw_nll")
    _check_chunk_memory(model, k, chunk_rows, min(batch_size, len(images)))
    d = model.latent_dim
    out = np.empty(len(images))
    start = 0
    callers = np.geterr()            # NumPy's settings for the caller's own code: progress
    with evaluation_mode(model), net.numpy_warnings():      # a NaN or inf is checked below, or by the caller
        for x in _batches(model, images, batch_size, seed, binarize):
            n = len(x)
            h = net.encode(net.prepare(x)).copy()           # (n, 2d): the encoder runs once per image
            per_chunk = max(1, min(k, chunk_rows // n))
            # the batch repeated once per sample of a chunk, sample-major (rows i*n .. i*n+n-1
            # are sample i), made once per batch
            xt = net.prepare(np.broadcast_to(x, (per_chunk,) + x.shape).reshape(per_chunk * n, -1))
            ht = np.broadcast_to(h, (per_chunk,) + h.shape).reshape(per_chunk * n, -1)
            # streaming log-sum-exp over the k samples: running max m and sum s of exp(lw - m)
            m, s = np.full(n, -np.inf), np.zeros(n)
            for done in range(0, k, per_chunk):
                c = min(per_chunk, k - done)
                eps = rng.standard_normal((c, n, d), dtype=model.dtype).reshape(c * n, d)
                z = _sample_z(ht[:c * n], eps)
                x_c = xt if c == per_chunk else net.prepare(np.ascontiguousarray(xt[:c * n]))
                nll_x = net.recon_rows(z, x_c).astype(np.float64)               # -log p(x|z), (c*n,)
                lw = (-nll_x - _log_q_minus_log_p(z, eps, ht[:c * n, d:])).reshape(c, n)   # log weights
                m_new = np.maximum(m, lw.max(axis=0))
                # shift by 0 where every weight so far is 0 (log -inf): -inf - -inf is NaN, and s stays 0
                shift = np.where(np.isneginf(m_new), 0.0, m_new)
                s = s * np.exp(m - shift) + np.exp(lw - shift).sum(axis=0)
                m = m_new
                if progress is not None:                    # a large k takes long per batch: said as it goes
                    with np.errstate(**callers):
                        progress(start + n * (done + c) // k, len(images))
            out[start:start + n] = -(m + np.log(s) - np.log(k))
            start += n
    if check_finite and not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out))
        raise _diverged(f"iw_nll: the estimate for image {bad[0]} is {out[bad[0]]} ({len(bad)} of {len(out)} "
                        f"images are NaN or inf)")
    return out if per_image else float(out.mean())
