"""Preallocated arrays for the fast path: one set per batch size, made once and reused.

A training run allocates nothing of batch size per step (but the batch's row indices):
every activation, gradient and scratch array of the step lives here (an epoch's short last batch
gets a set of its own). Arrays are column-major (:mod:`npvae.fast.layout`).
Whatever a method of the fast path returns from here is overwritten by its next
call with the same batch size.
"""
import numpy as np

from .layout import column_major


class Workspace:
    """The arrays of one batch size ``B`` for a network with layer widths ``enc`` and ``dec``.

    Parameters
    ----------
    B : int
    enc, dec : list of int
        Widths through the encoder (``[D, H1, ..., 2d]``) and the decoder (``[d, ..., D]``).
    dtype : float32 or float64
    training : bool
        Also the backward pass's arrays (an evaluation needs only the forward's).
    """

    def __init__(self, B, enc, dec, dtype, training=True):
        self.enc = [column_major((B, n), dtype) for n in enc[1:]]     # each encoder layer's output
        self.dec = [column_major((B, n), dtype) for n in dec[1:]]     # each decoder layer's output
        d = dec[0]
        self.z, self.std = column_major((B, d), dtype), column_major((B, d), dtype)
        self.eps = np.zeros((B, d), dtype)              # row-major: the Generator fills C order
        self.recon_rows, self.kl_rows = np.zeros(B, dtype), np.zeros(B, dtype)
        self.x = None                                   # a batch copied into column-major order
        if not training:
            return
        self.dlogits = column_major((B, dec[-1]), dtype)
        self.dh = column_major((B, enc[-1]), dtype)
        # the gradient after each ReLU mask (g) and each layer's input gradient (dx)
        self.enc_g = [column_major((B, n), dtype) for n in enc[1:-1]]
        self.enc_dx = [column_major((B, n), dtype) for n in enc[1:-1]]
        self.dec_g = [column_major((B, n), dtype) for n in dec[1:-1]]
        self.dec_dx = [column_major((B, n), dtype) for n in dec[:-1]]
        # scratch for each ReLU's backward; after a step, the first layer's live units (first_grad)
        self.live = np.zeros(max(enc[1:] + dec[1:]), np.intp)
        # the first layer's weight gradient over its live units only (see FastVAE.backward)
        self.g_live = column_major((B, enc[1]), dtype)
        self.dw_live = column_major((enc[0], enc[1]), dtype)

    def batch(self, x):
        """``x`` (B, D) as a column-major array: ``x`` itself if it is one, else a copy here."""
        if x.flags.f_contiguous:
            return x
        if self.x is None or self.x.shape != x.shape or self.x.dtype != x.dtype:
            self.x = np.empty(x.shape, x.dtype, order="F")
        np.copyto(self.x, x)
        return self.x
