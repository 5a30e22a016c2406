"""The fast path's forward pass for evaluation: encoder, decoder and BCE, nothing kept for backward.

:class:`Evaluator` answers the two questions :mod:`npvae.evaluate` asks of a model
(the encoding ``h = [mu | logvar]`` of a batch, and ``-log p(x | z)`` per row) on a
copy of the model's parameters in the fast layout, with the training step's layer kernels and a loss
kernel of its own (the per-row BCE, no gradient).
"""
import numpy as np

from ..errors import InputError, InputTypeError
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
        """``x`` (B, D) floats in [0, 1] as the column-major batch of the model's float type that
        the other methods take (reused per shape). Its shape and type are checked here, not its
        values: evaluate_elbo and iw_nll have checked the images already."""
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            got = f"a {x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
            raise InputTypeError(f"x must be a float array in [0, 1] (npvae.data.to_float converts pixels), "
                                 f"got {got}")
        check_shape(x, "x", self.net.enc[0])
        if x.dtype != self.net.dtype:        # the kernels compute in the model's type
            x = x.astype(self.net.dtype, order="F")
        return self.net.workspace(x.shape[0], training=False).batch(x)

    def encode(self, x):
        """``h = [mu | logvar]`` (B, 2d) of a prepared batch (overwritten by the next call)."""
        self._check_prepared(x)
        return self.net.encode(x, self.net.workspace(x.shape[0], training=False))

    def recon_rows(self, z, x):
        """``-log p(x | z)`` (the BCE) of each row (B,) for codes ``z`` (B, d) and a prepared ``x``."""
        self._check_prepared(x)
        self._check_prepared(z, "z", self.net.dec[0], rows=x.shape[0])
        ws = self.net.workspace(x.shape[0], training=False)
        k.bce_logits_forward(self.net.decode(z, ws), x, ws.recon_rows)
        return ws.recon_rows

    def _check_prepared(self, a, name="x", width=None, rows=None):
        """Pixels 0..255, one image or a batch of another type would give numbers, but wrong ones."""
        width = self.net.enc[0] if width is None else width
        ok = (isinstance(a, np.ndarray) and a.dtype == self.net.dtype and a.ndim == 2 and a.shape[1] == width
              and (rows is None or a.shape[0] == rows) and (a.flags.f_contiguous or name == "z"))
        if not ok:
            got = f"a {a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            if isinstance(a, np.ndarray) and name == "x" and a.dtype == self.net.dtype and a.shape[1:] == (width,):
                got += " not in the column-major layout prepare(x) makes: pass prepare(x)'s result"
            shape = f"({'batch' if rows is None else rows}, {width})"
            made = "prepare(x)'s batch" if name == "x" else f"a {self.net.dtype} array, a row per row of x,"
            raise InputError(f"{name} must be {made} of shape {shape}, got {got}")

    def numpy_warnings(self):
        """Around an evaluation on the fast path: NumPy's warnings off for a NaN or inf, which
        the evaluation functions report themselves (:func:`~npvae.fast.step.quiet_numpy_warnings`)."""
        return quiet_numpy_warnings()
