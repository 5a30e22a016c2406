r"""First-layer units proven dead on every training image, so that training can skip them.

About half of the tutorial encoder's 400 ReLU units die early in training: they output 0
for every image. Most of them stay dead for good, and that can be *proven*, not guessed,
for the first layer, whose input is the training images themselves:

* at the start of an epoch the optimizer is **at rest** for unit :math:`j`'s parameters
  :math:`(W_{:,j}, b_j)`: a zero gradient leaves them unchanged, at every step from now on
  (Adam without weight decay: its next update, the largest of those to come, rounds away
  against the parameter's float; :meth:`npvae.optim.Optimizer.at_rest`);
* during the epoch the unit outputs 0 for **every** image (each image is in one batch).

Its gradient is then 0 at every step (ReLU passes none back), so by induction its parameters
never moved during the epoch, and :math:`x W_{:,j} + b_j \le 0` holds for every training image
``x`` with these very parameters. Nothing changes afterwards: same images, same parameters,
zero gradient, optimizer still at rest. The unit is 0 on every training image for the rest
of the run, and computing it is wasted. :func:`npvae.train.fit` retires such units: during
its training steps the first layer computes only the others (:attr:`npvae.layers.Dense.units`),
which shrinks the largest forward GEMM and the encoder head's products (about 165 of 400
units from the third epoch on Fashion-MNIST, 185 from the seventh). For the length of an
epoch the units are reordered, computed ones first (a permutation of hidden units changes
nothing else), so the layers take slices of the weights rather than gathering columns at
every step, and the optimizer holds the retired units' weight columns
(:meth:`npvae.optim.Optimizer.hold`).
Results are those of the full computation to round-off: BLAS sums the smaller products in
another order.

Safeguards. Nothing is retired with dynamic binarization (the images change every epoch),
weight decay, or an optimizer that cannot say when it is at rest. At each epoch's start a
retired unit whose parameters changed (a ``fit`` callback edited the model, a state dict was
loaded between two ``fit`` calls) or whose optimizer is no longer at rest is computed again.
Evaluation never skips anything: a test image may well excite a unit that every training
image leaves at 0. The record is kept on the model for the next ``fit`` call on the very same
images (checked by a CRC-32 of their bytes) and saved in ``fit``'s checkpoints, so a resumed
run takes exactly the steps of an uninterrupted one.
"""
import zlib

import numpy as np

from .errors import CheckpointError
from .layers import Dense, ReLU


def fingerprint(images):
    """Shape, dtype and CRC-32 of the bytes: tells the same training set from another."""
    data = images if images.flags.c_contiguous else np.ascontiguousarray(images)
    return images.shape, images.dtype.str, zlib.crc32(data)


class DeadUnits:
    """Which units of ``layer`` are retired, and the evidence gathered in the current epoch.

    Parameters
    ----------
    layer : Dense
        The encoder's first layer (fused with the ReLU after it).
    images : ndarray (N, I)
        The training images the proofs are about.
    next_layer : Dense
        The layer that takes ``layer``'s units as input (its weight rows move with them).
    """

    def __init__(self, layer, images, next_layer):
        self.layer, self.next_layer = layer, next_layer
        self.images = fingerprint(images)
        n = layer.out_features
        self.retired = np.zeros(n, bool)      # proven dead: skipped by training steps
        self.candidates = np.zeros(n, bool)   # at rest at this epoch's start, not retired
        self.live = np.zeros(n, bool)         # fired for some image so far this epoch
        self._proof = (np.zeros(0, np.intp), None, None)  # retired units, and their parameters then
        self._order = None                    # while skipping: position k holds unit _order[k]
        self._fired = np.zeros(n, bool)       # what forward marks, by position

    @classmethod
    def for_fit(cls, model, images, binarize):
        """The model's record for these images (a new one if they differ), or None if none applies."""
        enc = model.encoder.layers
        if binarize or len(enc) < 3 or not (isinstance(enc[0], Dense) and type(enc[1]) is ReLU
                                              and isinstance(enc[2], Dense)):
            return None
        kept = model.__dict__.get("_dead_units")
        if kept is None or kept.layer is not enc[0] or kept.images != fingerprint(images):
            kept = cls(enc[0], images, next_layer=enc[2])
            object.__setattr__(model, "_dead_units", kept)
        return kept

    def begin_epoch(self, optimizer, resumed=False):
        """Re-check the retired units, pick this epoch's candidates, and start skipping.

        ``resumed``: the epoch continues from a checkpoint, whose candidates and live
        units (loaded by :meth:`load_state_dict`) cover the steps already taken.
        """
        w, b = self.layer.weight, self.layer.bias
        at_w, at_b = optimizer.at_rest(w), optimizer.at_rest(b)
        if at_w is None or at_b is None:
            at_rest = np.zeros_like(self.retired)
        else:
            at_rest = at_w.all(axis=0) & at_b
        self.retired &= at_rest & self._unchanged()
        if not resumed:
            self.candidates = at_rest & ~self.retired
            self.live[:] = False
        self._keep_proof()
        if self.retired.any():
            # the computed units first, so that the layers take slices of W, b and the
            # next layer's W instead of gathering their columns at every step
            order = np.concatenate([np.flatnonzero(~self.retired), np.flatnonzero(self.retired)])
            self._reorder(order, optimizer)
            self._order, self._optimizer = order, optimizer
            self.layer.units = np.arange(len(order) - self.retired.sum())
            optimizer.hold(self.layer.weight, len(self.layer.units))   # no update for the rest either
        self.layer.live = self._fired if self.candidates.any() else None

    def end_epoch(self):
        """After the epoch's last step: retire the candidates that never fired; stop skipping."""
        self.pause()
        self.retired |= self.candidates & ~self.live
        self.candidates[:] = False
        self._keep_proof()

    def pause(self):
        """Compute every unit again, in the original order (evaluation, callbacks, checkpoints,
        the end of ``fit``); what forward marked is added to :attr:`live`."""
        order = np.arange(len(self.live)) if self._order is None else self._order
        self.live[order[self._fired]] = True
        self._fired[:] = False
        if self._order is not None:
            self._optimizer.release(self.layer.weight)
            self._reorder(np.argsort(self._order), self._optimizer)
            self._order = self._optimizer = None
        self.layer.units = None
        self.layer.live = None

    def _reorder(self, order, optimizer):
        """Permute the units: position k gets unit ``order[k]``, in the parameters indexed by
        unit (the layer's weight columns and bias, the next layer's weight rows), their
        gradients and the optimizer's state for them. A permutation of hidden units leaves
        the network's function unchanged."""
        for p, axis in ((self.layer.weight, 1), (self.layer.bias, 0), (self.next_layer.weight, 0)):
            i = optimizer._index(p)
            for a in (p.data, p.grad, *(arrays[i] for arrays in optimizer.state.values())):
                a[...] = np.take(a, order, axis=axis)

    def _keep_proof(self):
        """Remember the retired units' parameters, to notice if anything changes them."""
        idx = np.flatnonzero(self.retired)
        if not np.array_equal(idx, self._proof[0]):
            self._proof = (idx, self.layer.weight.data[:, idx].copy(), self.layer.bias.data[idx].copy())

    def _unchanged(self):
        """False for retired units whose parameters are no longer those they were retired with."""
        idx, w, b = self._proof
        ok = np.ones_like(self.retired)
        if len(idx):
            same = (self.layer.weight.data[:, idx] == w).all(axis=0) & (self.layer.bias.data[idx] == b)
            ok[idx] = same
        return ok

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self):
        """JSON-ready: the unit indices of each set."""
        return {name: np.flatnonzero(getattr(self, name)).tolist() for name in ("retired", "candidates", "live")}

    def check_state(self, state, path="checkpoint"):
        """The sets of :meth:`state_dict` as masks, checked; a CheckpointError if malformed."""
        n = len(self.retired)
        masks = {}
        for name in ("retired", "candidates", "live"):
            units = state.get(name) if isinstance(state, dict) else None
            if not (isinstance(units, list) and all(isinstance(u, int) and not isinstance(u, bool)
                                                    and 0 <= u < n for u in units)):
                raise CheckpointError(f"{path}: dead_units[{name!r}] must be a list of unit indices "
                                      f"in [0, {n}), got {units!r}")
            masks[name] = np.zeros(n, bool)
            masks[name][units] = True
        return masks

    def load_state_dict(self, state, path="checkpoint"):
        """Restore :meth:`state_dict`'s sets (a checkpoint's), once the checkpoint's
        parameters are loaded: they are what the retired units were proven with."""
        masks = self.check_state(state, path)
        self.retired, self.candidates, self.live = masks["retired"], masks["candidates"], masks["live"]
        self._proof = (np.zeros(0, np.intp), None, None)
        self._keep_proof()
