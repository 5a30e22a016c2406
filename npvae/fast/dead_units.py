r"""First-layer units proven dead on every training image, so that training can skip them.

About half of the tutorial encoder's 400 ReLU units die early in training: they output 0
for every image. Most of them stay dead for good, and that can be *proven*, not guessed,
for the first layer, whose input is the training images themselves:

* at the start of an epoch the optimizer is **at rest** for unit :math:`j`'s parameters
  :math:`(W_{:,j}, b_j)`: a zero gradient leaves them unchanged, at every step from now on
  (Adam without weight decay: its next update, the largest of those to come, rounds away
  against the parameter's float; :meth:`npvae.fast.optim.FusedAdam.at_rest`);
* during the epoch the unit outputs 0 for **every** image (each image is in one batch).

Its gradient is then 0 at every step (ReLU passes none back), so by induction its parameters
never moved during the epoch, and :math:`x W_{:,j} + b_j \le 0` holds for every training image
``x`` with these very parameters. Nothing changes afterwards: same images, same parameters,
zero gradient, optimizer still at rest. The unit is 0 on every training image for the rest
of the run, and computing it is wasted. The fast path's training (``fit(..., backend="numba")``,
:class:`npvae.fast.Trainer`) retires such units: its steps compute only the others
(:attr:`npvae.fast.step.FastVAE.n_units`), which shrinks the largest forward product and the
encoder head's products (on Fashion-MNIST, ``VAE(784, 400, 20, rng=0)`` and ``fit(..., rng=0)``:
166 of 400 units are retired after epoch 2, 190 after epoch 5, 193-196 after epoch 10, as the
CPU rounds). For the length of an epoch the units are reordered, computed ones first (a
permutation of hidden units changes nothing else), so the layers take slices of the weights
rather than gathering columns at every step, and the optimizer holds the retired units' weight columns
(:meth:`npvae.fast.optim.FusedOptimizer.hold`). Results are those of the full computation
to round-off: BLAS sums the smaller products in another order.

Safeguards. Nothing is retired with dynamic binarization (the images change every epoch),
weight decay, or an optimizer that cannot say when it is at rest, and ``retire_dead_units=False``
switches it off (to measure it). At each epoch's start a retired unit whose parameters changed
(a ``fit`` callback edited the model) or whose optimizer is no longer at rest is computed
again; so is one after a pause inside an epoch (``Trainer.sync``), and a candidate whose
parameters changed during such a pause, or that is no longer at rest, stops being one.
Evaluation never skips anything: a test image may well excite a unit that every
training image leaves at 0. The record is saved in ``fit``'s checkpoints, so a resumed run
takes exactly the steps of an uninterrupted one.
"""
import numpy as np

from ..errors import CheckpointError


class DeadUnits:
    """Which first-layer units are retired, and the evidence gathered in the current epoch.

    Parameters
    ----------
    net : FastVAE
        The network whose first layer's units are retired (moved behind its
        ``n_units`` computed ones for the length of an epoch).
    fused : FusedOptimizer
        Says where the parameters are at rest; holds the retired units' columns.
    """

    def __init__(self, net, fused):
        self.net, self.fused = net, fused
        n = net.units
        self.retired = np.zeros(n, bool)      # proven dead: skipped by training steps
        self.candidates = np.zeros(n, bool)   # at rest at this epoch's start, not retired
        self.live = np.zeros(n, bool)         # fired for some image so far this epoch
        self.fired = np.zeros(n, bool)        # what forward marks, by position
        self._proof = (np.zeros(0, np.intp), None, None)  # retired units, and their parameters then
        self.skipping = False
        self.in_epoch = False                 # between begin_epoch and end_epoch
        self.paused = True                    # not skipping nor gathering evidence (pause)
        self._at_pause = None                 # the first layer's (W, b) when paused inside an epoch

    def begin_epoch(self, resumed=False):
        """Re-check the retired units, pick this epoch's candidates, and start skipping.

        ``resumed``: the epoch continues from a checkpoint, whose candidates and live
        units (loaded by :meth:`load_state_dict`) cover the steps already taken.
        """
        self._start(resumed, self._at_rest())

    def _start(self, resumed, at_rest):
        self.retired &= at_rest & self._unchanged()
        if not resumed:
            self.candidates = at_rest & ~self.retired
            self.live[:] = False
        self._keep_proof()
        self.in_epoch, self.paused = True, False
        if self.retired.any():
            # the computed units first, so that the layers take slices of the weights
            order = np.concatenate([np.flatnonzero(~self.retired), np.flatnonzero(self.retired)])
            self.net.reorder(order)
            self.net.n_units = int((~self.retired).sum())
            self.fused.hold(self.net.n_units)       # no update for the others either
            self.skipping = True
        self.net.fired = self.fired if self.candidates.any() else None

    def end_epoch(self, proven=True):
        """After the epoch's last step: retire the candidates that never fired (unless not
        ``proven``: the steps left training images out); stop skipping."""
        self.in_epoch = False
        self.pause()
        if proven:
            self.retired |= self.candidates & ~self.live
        self.candidates[:] = False
        self._keep_proof()

    def pause(self):
        """Compute every unit again, in the model's order (before the values go back to the
        model: evaluation, callbacks, checkpoints); what forward marked is added to :attr:`live`.
        Inside an epoch, :meth:`resume` goes on with it."""
        if self.paused:
            return
        self.paused = True
        order = self.net.all_positions if self.net.order is None else self.net.order
        self.live[order[self.fired]] = True
        self.fired[:] = False
        if self.skipping:
            self.fused.release()
            self.net.restore_order()        # a no-op if the retired units were the last ones already
            self.net.n_units = self.net.units
            self.skipping = False
        self.net.fired = None
        if self.in_epoch:
            W, b = self._first_layer()
            self._at_pause = (W.copy(), b.copy())

    def reloaded(self):
        """After the trainer took the model's values again because a Ctrl-C cut a move of units
        short (:meth:`pause`, :meth:`resume`, an epoch's start or end): every unit computed, in
        the model's order, and nothing retired at this epoch's end (its evidence is not whole)."""
        self.fired[:] = False
        self.net.fired = None
        self.skipping, self.paused = False, True
        self.drop_evidence()
        if self.in_epoch:
            W, b = self._first_layer()
            self._at_pause = (W.copy(), b.copy())

    def drop_evidence(self):
        """Retire nothing at this epoch's end: a Ctrl-C cut a move of units short, so what the
        epoch saw fire is not whole."""
        self.candidates[:] = False

    def resume(self):
        """Go on with the epoch after :meth:`pause`, once the values are back in the block (the
        model and the optimizer may have been changed meanwhile: a unit whose parameters changed,
        or that is no longer at rest, stops being a candidate; retired ones are re-checked)."""
        W, b = self._first_layer()
        W0, b0 = self._at_pause
        at_rest = self._at_rest()
        self.candidates &= (W == W0).all(axis=0) & (b == b0) & at_rest
        self._start(True, at_rest)

    def _at_rest(self):
        """Bool per unit: the optimizer is at rest for all of its first-layer parameters."""
        at_w, at_b = self.fused.at_rest(0), self.fused.at_rest(1)
        return np.zeros_like(self.retired) if at_w is None or at_b is None else at_w.all(axis=0) & at_b

    def _keep_proof(self):
        """Remember the retired units' parameters, to notice if anything changes them."""
        idx = np.flatnonzero(self.retired)
        if not np.array_equal(idx, self._proof[0]):
            W, b = self._first_layer()
            self._proof = (idx, W[:, idx].copy(), b[idx].copy())

    def _unchanged(self):
        """False for retired units whose parameters are no longer those they were retired with, or
        were not recorded (a Ctrl-C between retiring them and :meth:`_keep_proof`)."""
        idx, w, b = self._proof
        ok = ~self.retired
        if len(idx):
            W, bias = self._first_layer()
            ok[idx] = (W[:, idx] == w).all(axis=0) & (bias[idx] == b)
        return ok

    def _first_layer(self):
        """The first layer's weight and bias in the block, in the model's unit order."""
        if self.net.order is not None:
            raise RuntimeError("DeadUnits: the proof is about units in the model's order")
        rows = self.net.block.rows
        return self.net.block.view(rows[0], 0), self.net.block.view(rows[0], 1)

    # -- checkpoints ----------------------------------------------------------------------
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

    def recheck(self, images):
        """Check a loaded record once against ``images`` (N, D), uint8 or floats, and the
        parameters in the block: a unit it calls retired or a candidate that fires on a row is
        computed again or marked live, so that a record saved with other parameters cannot leave
        out a unit that fires (computing a dead one is exact)."""
        idx = np.flatnonzero(self.retired | self.candidates)
        if len(idx) == 0:
            return
        W, b = self._first_layer()
        w, bias = W[:, idx], b[idx]                                 # (D, R), (R,)
        fires = np.zeros(len(idx), bool)
        for start in range(0, len(images), 4096):                  # a float copy of 4096 rows at a time
            rows = images[start:start + 4096]
            # the batches' pixels (npvae.data.to_float's x / 255; the fast path may not import npvae.data)
            x = rows.astype(w.dtype) / (255 if rows.dtype == np.uint8 else 1)
            fires |= (x @ w + bias > 0).any(axis=0)
        self.retired[idx[fires]] = False
        self.live[idx[fires]] = True        # a candidate that fires is no longer one to retire
        self._keep_proof()

    def load_state_dict(self, state, path="checkpoint"):
        """Restore :meth:`state_dict`'s sets (a checkpoint's), once the checkpoint's parameters
        are in the block: they are what the retired units were proven with."""
        masks = self.check_state(state, path)
        self.retired, self.candidates, self.live = masks["retired"], masks["candidates"], masks["live"]
        self._proof = (np.zeros(0, np.intp), None, None)
        self._keep_proof()
