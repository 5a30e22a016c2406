"""Training batches in the fast path's layout, gathered into arrays made once.

``images[idx]`` as a column-major float batch (:mod:`npvae.fast.layout`): the rows
are gathered (``np.take`` into a buffer), copied into column-major order while still
``uint8`` (a quarter of the bytes of a float32 batch), then scaled by a kernel
(:func:`npvae.fast.kernels.scale_pixels`, exactly ``x / 255`` as the reference's
``to_float``). Float images are gathered, then transposed and cast in one copy. A batch
is overwritten by the next one of its size (the arrays of up to 17 sizes are kept). It is
handed out read-only: the trainer steps on it unchecked (and, retiring dead units, relies
on its being training images), so a batch to be changed is changed in a copy, which the
trainer checks like any other.
"""
import numpy as np

from . import kernels as k


class ColumnBatches:
    """Column-major float batches of rows of ``images`` (N, D): uint8 pixels or floats in [0, 1]."""

    def __init__(self, images, batch_size, dtype):
        self.images, self.dtype = images, np.dtype(dtype)
        self.batch_size = n = min(batch_size, len(images))                # the largest batch
        self.rows = np.empty((n, images.shape[1]), images.dtype)   # gathered, row-major
        # batch size -> (float batch, uint8 batch or None, the float batch read-only), column-major
        self.buffers = {}
        self.indices = {}               # batch size -> the indices of the batch it holds now

    def made(self, x):
        """``(float batch, its indices)`` if ``x`` is a batch :meth:`take` handed out (so known to
        be valid), else None."""
        return next(((bufs[0], self.indices[n]) for n, bufs in self.buffers.items() if x is bufs[2]), None)

    def take(self, idx):
        """``images[idx]`` as a column-major float batch; ``idx`` holds at most batch_size indices."""
        n = len(idx)
        bufs = self.buffers.get(n)
        if bufs is None:
            if len(self.buffers) > 16:          # batches of many sizes: start over, as the workspaces do
                self.buffers.clear()
                self.indices.clear()
            shape = (n, self.images.shape[1])
            pixels = np.empty(shape, np.uint8, order="F") if self.images.dtype == np.uint8 else None
            x = np.empty(shape, self.dtype, order="F")
            handed_out = x.view()
            handed_out.flags.writeable = False
            bufs = self.buffers[n] = (x, pixels, handed_out)
        x, pixels, handed_out = bufs
        self.indices[n] = np.array(idx)             # a copy: the caller may reuse its array
        # idx is checked (Trainer.batch); mode="clip" because with the default "raise" np.take
        # writes through a temporary copy
        rows = np.take(self.images, idx, axis=0, out=self.rows[:n], mode="clip")
        if pixels is None:
            np.copyto(x, rows)          # transposed and cast in one pass
        else:
            np.copyto(pixels, rows)     # transposed as bytes...
            k.scale_pixels(pixels, x)   # ...then scaled
        return handed_out
