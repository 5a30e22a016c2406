"""The fast path: the reference's training step and forward pass, at the speed of the CPU.

Everything here exists for speed, and everything here is checked against the plain
NumPy reference (``npvae/layers.py`` ... ``npvae/optim.py``), which defines what is
correct; that core never imports this package (``fit`` and the evaluation functions
import it when ``backend="numba"`` asks for it). Read it in this order:

* :mod:`~npvae.fast.kernels`: Numba kernels (and their compile options) for the
  elementwise work around the matrix products, each fusing a few lines of the reference
  (the kernels start at "The kernels."; the float32 ``exp``/``log1p`` helpers before them
  can wait);
* :mod:`~npvae.fast.layout`: the parameters, gradients and optimizer state in one block,
  weights and batches column-major;
* :mod:`~npvae.fast.workspace`: every array a step needs, made once per batch size;
* :mod:`~npvae.fast.step`: the fused forward and backward passes (:class:`FastVAE`);
* :mod:`~npvae.fast.optim`: Adam's and SGD's update over the whole block in one call;
* :mod:`~npvae.fast.dead_units`: first-layer units proven dead, left out of training;
* :mod:`~npvae.fast.batches`, :mod:`~npvae.fast.trainer`: what ``fit`` drives, and what you
  can drive in your own loop (:class:`Trainer`);
* :mod:`~npvae.fast.supported`: the models it computes (the VAE as built; a subclass
  with its own ``loss`` is refused with an ``InputTypeError`` that points at ``backend="numpy"``);
* :mod:`~npvae.fast.inference`: the forward pass for evaluation (:class:`Evaluator`);
* :mod:`~npvae.fast.compile`: ``python -m npvae.fast.compile`` fills Numba's disk cache ahead of time.

The switch between the two paths is made in one place: ``fit(..., backend=)`` and
``evaluate_elbo``/``iw_nll(..., backend=)`` (:mod:`npvae.backend`).

One step of :meth:`Trainer.step`, and what each part stands for in the reference::

    trainer.batch(idx): gather, transpose, scale   to_float(images[idx])
    model.sampler.rng.standard_normal(out=ws.eps)  the draw in Sampler.forward
    FastVAE.encode: BLAS + bias_relu_forward       Dense.forward, ReLU.forward
    sampler_forward, FastVAE.decode                Sampler.forward, the decoder
    bce_logits_forward_backward                    BCEWithLogits.forward and .backward
    kl_forward                                     KL.forward
    FastVAE.backward: relu_bias_backward + BLAS    ReLU.backward, Dense.backward
    latent_backward                                Sampler.backward + KL.backward, summed
    first layer: its live columns, no dx           Dense.backward of the first layer
    FusedAdam.step: adam_step (one call)           Adam.step
    Trainer.sync: the block back into the model    (the model holds it already)

Gradients are written, not added (there is no ``zero_grad``), and ``mark_fired_columns``
(the evidence for retiring units) has no counterpart. A KL-weight schedule needs nothing
here: ``beta`` is a number passed to each step (``train.py``'s warm-up). A new kernel goes
in :mod:`~npvae.fast.kernels` (its helpers in the same file: Numba's disk cache follows
the file), with a test in ``tests/test_fast_kernels.py`` against the reference's lines on
small arrays, which also runs with ``NUMBA_DISABLE_JIT=1``, and a call in
:func:`~npvae.fast.compile.compile_kernels` (a test checks that it compiles every kernel).
A new layer also needs :mod:`~npvae.fast.supported` to accept it, and a look at
:mod:`~npvae.fast.dead_units`: retiring a unit is exact only behind a ReLU, which passes no
gradient back where it did not fire (a leaky ReLU always does).
"""
from .inference import Evaluator
from .step import FastVAE
from .trainer import Trainer

__all__ = ["Trainer", "Evaluator", "FastVAE"]
