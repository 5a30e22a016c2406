"""The fast path: the reference's training step and forward pass, at the speed of the CPU.

Everything here exists for speed, and everything here is checked against the plain
NumPy reference (``npvae/layers.py`` ... ``npvae/optim.py``), which defines what is
correct; the reference never imports this package. Read it in this order:

* :mod:`~npvae.fast.kernels` (and :mod:`~npvae.fast.flags`): Numba kernels for the
  elementwise work around the matrix products, each fusing a few lines of the reference;
* :mod:`~npvae.fast.layout`: the parameters, gradients and optimizer state in one block,
  weights and batches column-major;
* :mod:`~npvae.fast.workspace`: every array a step needs, made once per batch size;
* :mod:`~npvae.fast.step`: the fused forward and backward passes (:class:`FastVAE`);
* :mod:`~npvae.fast.optim`: Adam's and SGD's update over the whole block in two calls;
* :mod:`~npvae.fast.dead_units`: first-layer units proven dead, left out of training;
* :mod:`~npvae.fast.batches`, :mod:`~npvae.fast.trainer`: what ``fit`` drives, and what you
  can drive in your own loop (:class:`Trainer`);
* :mod:`~npvae.fast.supported`: the models it computes (the VAE as built; a subclass
  with its own ``loss`` trains on the reference);
* :mod:`~npvae.fast.inference`: the forward pass for evaluation (:class:`Evaluator`);
* :mod:`~npvae.fast.compile`: ``python -m npvae.fast.compile`` fills Numba's disk cache ahead of time.

The switch between the two paths is made in one place: ``fit(..., backend=)`` and
``evaluate_elbo``/``iw_nll(..., backend=)`` (:mod:`npvae.backend`).
"""
from .inference import Evaluator
from .step import FastVAE
from .trainer import Trainer

__all__ = ["Trainer", "Evaluator", "FastVAE"]
