"""The fast path's forward pass for evaluation: encoder, decoder and BCE, nothing kept for backward.

:class:`Evaluator` answers the two questions :mod:`npvae.evaluate` asks of a model
(the encoding ``h = [mu | logvar]`` of a batch, and ``-log p(x | z)`` per row) on a
copy of the model's parameters in the fast layout, with the training step's kernels.
"""
from .step import FastVAE
from . import kernels as k


class Evaluator:
    """Forward passes of ``model`` (a VAE) on the fast path; the parameters are copied once, here."""

    def __init__(self, model):
        self.net = FastVAE(model)
        self.net.load(model)

    def prepare(self, x):
        """``x`` (B, D) floats as the column-major batch the other methods take (reused per shape)."""
        return self.net.workspace(x.shape[0], training=False).batch(x)

    def encode(self, x):
        """``h = [mu | logvar]`` (B, 2d) of a prepared batch (overwritten by the next call)."""
        return self.net.encode(x, self.net.workspace(x.shape[0], training=False))

    def recon_rows(self, z, x):
        """``-log p(x | z)`` (the BCE) of each row (B,) for codes ``z`` (B, d) and a prepared ``x``."""
        ws = self.net.workspace(x.shape[0], training=False)
        k.bce_logits_forward(self.net.decode(z, ws), x, ws.recon_rows)
        return ws.recon_rows
