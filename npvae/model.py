r"""The variational autoencoder: encoder, sampler, decoder and the two losses.

One training step, as data (d = latent_dim)::

    x (B, 784) in [0, 1]
     -> encoder: Dense(784, 400) -> ReLU -> Dense(400, 2d)     h = [mu | logvar] (B, 2d)
     -> sampler: z = mu + exp(logvar / 2) * eps                 z (B, d)
     -> decoder: Dense(d, 400) -> ReLU -> Dense(400, 784)       logits (B, 784)
     -> loss = BCEWithLogits(logits, x) + beta * KL(h)          mean over the batch
    backward: dlogits -> decoder -> dz -> sampler -> dh (+ beta * KL's dh) -> encoder

The decoder's final Sigmoid is fused into the loss (:class:`BCEWithLogits`), which
is exact and stable: where the usual picture of a VAE (as in ``docs/derivation.md``, section 2)
draws ``-> Sigmoid x_hat``, ``BCE(x_hat, x)`` and
``dL/dx_hat -> decoder.backward``, this is one op, ``BCEWithLogits(logits, x)``, whose backward gives
``dL/dlogits = (x_hat - x) / B`` directly. The unfused pair divides by
``x_hat (1 - x_hat)`` and multiplies by it again, and in float32 the two stop cancelling
as a pixel's probability nears 0 or 1 away from its target: the gradient of a pixel that is
confidently wrong vanishes (``docs/derivation.md``, 3.1).
:meth:`VAE.decode` applies the sigmoid to give pixel probabilities.
``docs/derivation.md`` follows the gradient through this file line by line.
"""
import warnings
from typing import NamedTuple

import numpy as np

from .errors import DivergenceError, InputError, InputTypeError, NoGeneratorError, StateError
from .footprint import check_model_fits, check_rows_fit
from .layers import Dense, ReLU, Sequential, Sigmoid, sigmoid
from .losses import KL, BCEWithLogits
from .module import Module, one_place_each
from .sampler import Sampler
from .validate import (check_batch, check_bool, check_dtype, check_finite_parameters, check_positive_float,
                       check_positive_int, check_rng, check_widths, warn_backend_argument)


class LossParts(NamedTuple):
    """A loss and its two parts, each the mean over the batch: ``total = recon + beta * kl``."""
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


def _halves(h):
    """``(mu, logvar)`` from ``h = [mu | logvar]``, as two arrays of their own."""
    d = h.shape[1] // 2
    return h[:, :d].copy(), h[:, d:].copy()


class VAE(Module):
    """The classic VAE of Kingma & Welling (2014), with the PyTorch example's decoder and loss.

    The decoder gives each pixel a probability and the reconstruction loss is the
    binary cross-entropy: a Bernoulli negative log-likelihood for binarized images,
    a cross-entropy for grey-level ones (see :mod:`npvae.losses`).

    Parameters
    ----------
    input_dim : int
        Pixels per image (784 for 28x28).
    hidden_dims : int or sequence of int
        Widths of the hidden layers of the encoder; the decoder mirrors them.
    latent_dim : int
        ``d``, the size of ``z``.
    dtype : float32 (the default) or float64
        What every computation runs in: images of another float dtype are converted to it
        (float32 images round a float64 model's pixels: give it ``to_float(u8, np.float64)``).
        float64 trains too (the gradient checks, and the fast path's tests against the reference).
    rng : np.random.Generator, int or None
        Draws the initial weights, then the sampler's noise: one seed fixes both
        (``fit`` shuffles with its own ``rng``). ``copy.deepcopy(model)`` copies the
        Generator too, so the copy draws the same noise: give it ``copy.rng = seed``.
    backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error)

    Notes
    -----
    The inference methods (``forward``, ``encode``, ``decode``, ``sample``, ``reconstruct``,
    ``interpolate``) never return NaN or inf: a parameter that holds it is an ``InputError``
    naming it, and codes or logits that overflow from finite parameters (a model that diverged
    in training) a ``DivergenceError``. ``loss`` returns a total that is not finite, as it is.
    """

    def __init__(self, input_dim=784, hidden_dims=400, latent_dim=20, *,
                 dtype=np.float32, rng=None, backend=None):
        super().__init__()
        if backend is not None:
            warn_backend_argument("VAE(backend=...)", backend)
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden_dims = check_widths(hidden_dims, "hidden_dims")
        self.dtype = check_dtype(dtype)
        rng = check_rng(rng)
        check_model_fits(self.input_dim, self.hidden_dims, self.latent_dim, self.dtype)
        self.encoder = _mlp((self.input_dim, *self.hidden_dims, 2 * self.latent_dim), self.dtype, rng)
        self.decoder = _mlp((self.latent_dim, *self.hidden_dims[::-1], self.input_dim), self.dtype, rng)
        self.sampler = Sampler(rng)
        self.kl = KL()
        self.bce = BCEWithLogits()

    def config(self):
        """The constructor arguments that fix the architecture (saved in checkpoints)."""
        return dict(input_dim=self.input_dim, hidden_dims=list(self.hidden_dims),
                    latent_dim=self.latent_dim, dtype=str(self.dtype))

    def extra_repr(self):
        return f"{self.input_dim}-{'-'.join(map(str, self.hidden_dims))}-{self.latent_dim}, dtype={self.dtype}"

    @property
    def rng(self):
        """The sampler's Generator (its state is saved with checkpoints); assign a
        Generator (or an int seed) to replace it."""
        rng = getattr(self.sampler, "rng", None)
        if not isinstance(rng, np.random.Generator):      # a sampler of one's own: checkpoints and sample() need it
            raise NoGeneratorError(f"model.rng is model.sampler.rng, and model.sampler ({type(self.sampler).__name__}) "
                                   f"has {'no rng' if rng is None else 'rng ' + repr(type(rng).__name__)}: a sampler "
                                   f"of one's own keeps the model's np.random.Generator as self.rng (a checkpoint "
                                   f"saves it, sample() without rng= draws from it); give it one with model.rng = seed")
        return rng

    @rng.setter
    def rng(self, rng):
        self.sampler.rng = check_rng(rng)

    @property
    def sigmoid(self):
        """Deprecated: the VAE holds no ``Sigmoid`` any more (:meth:`decode` applies
        :func:`npvae.layers.sigmoid`); a new ``Sigmoid`` for code written before."""
        warnings.warn("VAE.sigmoid is deprecated: decode() applies npvae.layers.sigmoid; use "
                      "npvae.Sigmoid() for a module of your own", DeprecationWarning, stacklevel=2)
        return Sigmoid()

    # -- training ----------------------------------------------------------------------
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
        # a copy: backward reads x again (the BCE's target, the first layer's input), and your
        # array may change before then (a reused buffer, say)
        x = check_batch(x, "x", self.input_dim, self.dtype, unit_interval=True).copy()
        beta = check_positive_float(beta, "beta", allow_zero=True)
        before = self._passes()                            # for backward's checks of what ran since
        h = self.encoder.forward(x)                        # (B, 2d) = [mu | logvar]
        z = self.sampler.forward(h, eps)                   # (B, d)
        logits = self.decoder.forward(z)                   # (B, input_dim)
        recon = self.bce.forward(logits, x)                # mean over the batch of the BCE sums
        kl = self.kl.forward(h)                            # mean over the batch of the KL sums
        self._set_pending_loss(beta, before)               # backward differentiates this loss
        return LossParts(recon + beta * kl, recon, kl)

    def backward(self):
        """Add every parameter's gradient of the last :meth:`loss`'s total into ``p.grad``.

        It must follow :meth:`loss` directly, once: ``encode``, ``decode``, ``sample`` and
        the other inference methods run the same layers and replace what backward needs, as
        does any forward of the model's ops (``model.encoder(x)``, say), and a second backward
        of the same loss (which would add its gradients twice) is refused. A second ``loss()``
        in between (a test batch's, say) is the one backward then differentiates: take test
        losses after backward, or with :func:`npvae.evaluate.evaluate_elbo`. Change no weight
        in between either (an optimizer step, ``load_state_dict``): backward would use the new
        weights with the old pass's values, a gradient of neither (PyTorch refuses that; npvae
        does not check it). Your batch and noise may change: :meth:`loss` keeps copies. An op
        that ran forward twice in one loss (one ``ReLU`` your own module calls after two
        layers) is refused: it kept its second pass's values only.

        The gradient flows back down the road the data came up: the loss's
        ``dlogits`` (B, input_dim) through the decoder to ``dz`` (B, d), through the
        sampler to ``[dmu | dlogvar]`` (B, 2d), where the KL term's own gradient joins
        it, then through the encoder to every weight. ``docs/derivation.md`` derives
        each step.
        """
        beta = self._take_pending_loss()
        dlogits = self.bce.backward()                      # (B, input_dim): (sigmoid(l) - x) / B
        dz = self.decoder.backward(dlogits)                # (B, d)
        dh_z = self.sampler.backward(dz)                   # (B, 2d): the road through z
        dh_kl = self.kl.backward(beta)                     # (B, 2d): the KL's own road
        self.encoder.backward(dh_z + dh_kl)                # both roads meet at h = [mu | logvar]

    def _passes(self):
        """The ops loss() runs, and how many passes each has kept so far (:meth:`_set_pending_loss`)."""
        ops = loss_ops(self)
        return ops, {name: m.passes for name, m in ops.items()}

    def _set_pending_loss(self, beta, passes_before):
        """Make the loss just computed the one :meth:`backward` differentiates, with its beta and
        each op's passes: those it kept in this loss, and the count backward expects to find."""
        ops, before = passes_before
        self._pending_beta, self._differentiated = beta, False
        self._passes_at_loss = {name: m.passes for name, m in ops.items()}
        self._passes_in_loss = {name: self._passes_at_loss[name] - before[name] for name in ops}

    def _take_pending_loss(self):
        """The last loss()'s beta, once: refused (nothing changed) if there is none, if it was
        differentiated already, or if what its ops kept is not that loss's any more."""
        beta = self.__dict__.get("_pending_beta")
        if beta is None and self.__dict__.get("_differentiated"):
            raise StateError("VAE.backward already ran for this loss: a second call would add the same "
                             "gradients into p.grad again. Call loss() again first (PyTorch, too, "
                             "refuses a second backward through the same graph)")
        if beta is None:
            own = "" if type(self).loss is VAE.loss else (
                f"; or {type(self).__name__}.loss did not call super().loss(), which tells backward what to "
                f"differentiate: call it, or give {type(self).__name__} a backward of its own")
            raise StateError("VAE.backward needs the loss() call right before it: none ran, or an "
                             "inference call (encode, decode, decode_logits, sample, forward, reconstruct, "
                             "interpolate, or evaluation with backend='numpy') ran since and replaced what "
                             f"backward needs{own}")
        ran = [name for name, m in loss_ops(self).items() if m.passes != self._passes_at_loss.get(name)]
        if ran:
            raise StateError(f"VAE.backward: model.{ran[0]} ran forward since loss() and replaced what "
                             f"backward needs (another batch's codes, say). Call loss() again first; run "
                             f"other batches through the model after backward")
        twice = [name for name, n in self._passes_in_loss.items() if n > 1]
        if twice:
            raise InputError(f"VAE.backward: model.{twice[0]} ran forward {self._passes_in_loss[twice[0]]} times "
                             f"in one loss() (one layer your own module calls in two places, say): it keeps "
                             f"its last pass's values only, so backward would be wrong for the others; give "
                             f"each place a layer of its own")
        self._pending_beta, self._differentiated = None, True     # one backward per loss
        return beta

    # -- using a trained model -----------------------------------------------------------
    def _checked(self, x, name="x", n_features=None):
        pixels = n_features is None         # images in [0, 1]; else codes (any real numbers)
        return check_batch(x, name, n_features or self.input_dim, self.dtype, unit_interval=pixels, pixels=pixels)

    def _batch(self, x, name="x", n_features=None):
        """``x`` checked, for a forward pass about to run: a pending loss is then gone."""
        x = self._checked(x, name, n_features)
        self._pending_beta, self._differentiated = None, False   # the layers' saved values change now
        return x

    def forward(self, x, eps=None):
        """Encode, sample ``z = mu + exp(logvar / 2) * eps``, decode (inference: no backward after it).

        Parameters
        ----------
        x : ndarray (B, input_dim), floats in [0, 1]
        eps : ndarray (B, latent_dim), optional
            The sampler's noise; drawn from N(0, I) with the model's ``rng`` if omitted.

        Returns
        -------
        x_hat : ndarray (B, input_dim)
            Pixel probabilities decoded from the sampled ``z``.
        mu, logvar : ndarray (B, latent_dim)
            The mean and log-variance of ``q(z | x)``.
        """
        h = self._finite(self.encoder.forward(self._batch(x)))
        logits = self._finite(self.decoder.forward(self.sampler.forward(h, eps)))
        return (sigmoid(logits), *_halves(h))

    def encode(self, x):
        """The Gaussian ``q(z | x)`` of each image.

        Parameters
        ----------
        x : ndarray (B, input_dim), floats in [0, 1]

        Returns
        -------
        mu, logvar : ndarray (B, latent_dim)
            Its mean and log-variance.
        """
        return _halves(self._finite(self.encoder.forward(self._batch(x))))

    def decode(self, z):
        """Pixel probabilities for latent codes.

        Parameters
        ----------
        z : ndarray (B, latent_dim), floats

        Returns
        -------
        x_hat : ndarray (B, input_dim)
            ``sigmoid`` of the decoder's logits, in [0, 1].
        """
        return sigmoid(self.decode_logits(z))

    def decode_logits(self, z):
        """The decoder's logits (B, input_dim) for ``z`` (B, latent_dim): :meth:`decode`
        before the sigmoid, what the loss (:class:`~npvae.losses.BCEWithLogits`) takes."""
        return self._finite(self.decoder.forward(self._batch(z, "z", self.latent_dim)))

    def _finite(self, out):
        """``out`` of the encoder or the decoder (codes or logits), if finite. Its input was
        checked, so NaN or inf comes from the model: a parameter that holds it, or values that
        overflow (a model that diverged in training)."""
        if not np.isfinite(out).all():
            check_finite_parameters(self, "the model's codes and images are NaN")
            raise DivergenceError("the model's codes or logits overflow to NaN or inf though its parameters and "
                                  "the values given are finite: a model that diverged in training (load a good "
                                  "checkpoint or build a new model), or values far outside what it was trained on")
        return out

    def reconstruct(self, x, sample=False, rng=None):
        """Decode the encoding of ``x``.

        Parameters
        ----------
        x : ndarray (B, input_dim), floats in [0, 1]
        sample : bool
            Decode a sampled ``z = mu + exp(logvar / 2) * eps`` instead of the mean ``mu`` (the default).
        rng : np.random.Generator, int or None
            With ``sample=True``: draws ``eps`` as the sampler does; None uses (and advances) the
            model's ``rng``, as :meth:`forward` does.

        Returns
        -------
        x_hat : ndarray (B, input_dim)
        """
        if not check_bool(sample, "sample"):
            if rng is not None:
                raise InputError("reconstruct: rng draws the noise of sample=True; without it the mean "
                                 "is decoded and nothing is drawn")
            return self.decode(self.encode(x)[0])
        if rng is None:
            return self.forward(x)[0]
        x = self._checked(x)
        return self.forward(x, check_rng(rng).standard_normal((len(x), self.latent_dim), dtype=self.dtype))[0]

    def sample(self, n, rng=None):
        """New images: ``n`` codes drawn from the prior ``z ~ N(0, I)``, decoded.

        Parameters
        ----------
        n : int
        rng : np.random.Generator, int or None
            Draws ``z``; None uses (and advances) the model's ``rng``.

        Returns
        -------
        x_hat : ndarray (n, input_dim)
        """
        n = check_positive_int(n, "n")
        check_rows_fit(self, n, f"sample({n})")
        rng = self.rng if rng is None else check_rng(rng)
        return self.decode(rng.standard_normal((n, self.latent_dim)).astype(self.dtype))

    def interpolate(self, x_a, x_b, steps=9):
        """Decode ``z_i = (i / (steps-1)) z_b + (1 - i / (steps-1)) z_a`` for i = 0..steps-1.

        Parameters
        ----------
        x_a, x_b : ndarray (input_dim,) or (1, input_dim), floats in [0, 1]
            Two images; ``z_a``, ``z_b`` are the means of their ``q(z | x)``.
        steps : int
            Points on the line, at least 2 (both ends included).

        Returns
        -------
        ndarray (steps, input_dim)
            The first row reconstructs ``x_a``, the last ``x_b``.
        """
        steps = check_positive_int(steps, "steps")
        if steps < 2:
            raise InputError(f"steps must be at least 2 (both end points), got {steps}")
        check_rows_fit(self, steps, f"interpolate(steps={steps})")
        images = []                         # both checked before anything runs
        for name, x in (("x_a", x_a), ("x_b", x_b)):
            x = np.asarray(x) if isinstance(x, (list, tuple)) else x
            if isinstance(x, np.ndarray) and x.ndim == 1:
                x = x[None, :]
            x = self._checked(x, name)
            if x.shape[0] != 1:
                raise InputError(f"{name} must be one image ({self.input_dim},), got shape {x.shape}")
            images.append(x)
        ends = [self.encode(x)[0][0] for x in images]
        w = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        return self.decode(w * ends[1] + (1 - w) * ends[0])


def loss_ops(model, name="model"):
    """``{name: module}`` of the ops ``VAE.loss`` runs. Their ``passes`` (:meth:`Module.keep` counts
    them) tell backward whether one ran forward again since; and each must be an object of its
    own: one in two places would keep its second forward's values only (an InputError naming
    both places, in ``name``'s words; the fast path refuses the same for training)."""
    parts = ("encoder", "sampler", "decoder", "bce", "kl")
    return one_place_each((pair for part in parts for pair in getattr(model, part).named_modules(part + ".")),
                          name + ".{} and " + name + ".{}")


def check_vae(model, name="model"):
    """``model`` if it is a :class:`VAE`; else an InputTypeError saying what arrived."""
    if not isinstance(model, VAE):
        got = type(model).__name__
        reloaded = got == "VAE" and type(model).__module__ == __name__     # a second npvae.model.VAE
        again = (" of another class of that name: importlib.reload(npvae.model) makes a second VAE class; "
                 "restart Python (or the notebook's kernel) and build the model again") if reloaded else ""
        raise InputTypeError(f"{name} must be an npvae.VAE, got {got}{again}")
    return model
