"""The fast path's forward pass for evaluation: encoder, decoder and BCE, nothing kept for backward.

:class:`Evaluator` answers the two questions :mod:`npvae.evaluate` asks of a model
(the encoding ``h = [mu | logvar]`` of a batch, and ``-log p(x | z)`` per row) on a
copy of the model's parameters in the fast layout, with the training step's kernels.
"""
import numpy as np

from ..errors import InputTypeError
from ..validate import check_shape
from .step import FastVAE, quiet_numpy_warnings
from .supported import EVALUATION_METHODS, check_supported
from . import kernels as k


class Evaluator:
    """Forward passes of ``model`` (a VAE) on the fast path; the parameters are copied once, here."""

    def __init__(self, model):
        check_supported(model, EVALUATION_METHODS)
        self.net = FastVAE(model)
        self.net.load(model)

    def prepare(self, x):
        """``x`` (B, D) floats in [0, 1] as the column-major batch the other methods take (reused
        per shape). Its shape and type are checked here, not its values: evaluate_elbo and
        iw_nll have checked the images already."""
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            got = f"a {x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
            raise InputTypeError(f"x must be a float array in [0, 1] (npvae.data.to_float converts pixels), "
                                 f"got {got}")
        check_shape(x, "x", self.net.enc[0])
        return self.net.workspace(x.shape[0], training=False).batch(x)

    def encode(self, x):
        """``h = [mu | logvar]`` (B, 2d) of a prepared batch (overwritten by the next call)."""
        return self.net.encode(x, self.net.workspace(x.shape[0], training=False))

    def recon_rows(self, z, x):
        """``-log p(x | z)`` (the BCE) of each row (B,) for codes ``z`` (B, d) and a prepared ``x``."""
        ws = self.net.workspace(x.shape[0], training=False)
        k.bce_logits_forward(self.net.decode(z, ws), x, ws.recon_rows)
        return ws.recon_rows

    def numpy_warnings(self):
        """Around an evaluation on the fast path: NumPy's warnings off for a NaN or inf, which
        the evaluation functions report themselves (:func:`~npvae.fast.step.quiet_numpy_warnings`)."""
        return quiet_numpy_warnings()
