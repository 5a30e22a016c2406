"""Training on the fast path: the reference's training step, fused, for ``fit`` and your own loop.

A step of the reference is::

    model.zero_grad()
    parts = model.loss(x, beta)      # draws eps from model.rng
    model.backward()
    optimizer.step()

and :meth:`Trainer.step` computes the same (to round-off; the tests compare them step
by step) on a copy of the model's parameters and the optimizer's state in the fast
layout. The copy is taken when the trainer is made (and at :meth:`begin_epoch`, which syncs
first) and written back by :meth:`sync`; in between, the trainer owns the training state::

    trainer = npvae.fast.Trainer(model, optimizer)
    for x in batches:                # float batches (B, input_dim) in [0, 1]
        parts = trainer.step(x)
    trainer.sync()                   # the model and the optimizer now hold the result

After :meth:`sync` the model and the optimizer are yours again: the next :meth:`step`
takes them back as they are then (edited, loaded from a state dict, trained by a
reference step), checked again as when the trainer was made (and at each step until it
applies an update): a layer swapped or an optimizer wrapped since is refused there, not
trained as the stock model. Until then they still hold what the trainer took: call
:meth:`sync` before evaluating, saving or loading them inside the loop. A change made
before the trainer's first step (a checkpoint loaded right after making it) is taken by
that step. If something else changes them after that (a second trainer, ``fit``,
``load_checkpoint``, a hand edit), the trainer keeps that change and raises ``StateError``
rather than overwrite it: at the next :meth:`step` if the optimizer's step count moved,
else at :meth:`sync` (or :meth:`begin_epoch`), which also checks again what the trainer
computes (a layer swapped after its first update: its steps computed the model as it was).
A changed value is found by comparing with what the trainer took, so a change that puts back
exactly those values (a reset to the starting state) cannot be told from no change: sync first.
The optimizer's hyper-parameters are read at every step, so a learning-rate schedule
that sets ``optimizer.lr`` works inside the loop. One trainer per model at a time.
A Ctrl-C lands before an update or after it, never half way (the update is one kernel
call; not so under ``NUMBA_DISABLE_JIT``), and a write-back it cuts short is finished when
the ``with`` block ends, or at the trainer's next call if the loop catches the interrupt.
With dead-unit retirement, units are moved in many calls (an epoch's start and end, a
sync): a Ctrl-C there drops the trainer's torn copy, so the model keeps the state of the
last sync, and says how many steps that drops (a note on the interrupt, or a ``StateError``
at the next call if the loop catches the interrupt and goes on).
``model.parameters()``' ``.grad`` are not touched: the gradients stay in the fast layout.
``fit(..., backend="numba")`` drives a trainer epoch by epoch, with dead-unit retirement
(:mod:`npvae.fast.dead_units`) switched on.
"""
import contextlib
import gc
import math
import warnings
import weakref

import numpy as np

from ..errors import InputError, NpvaeError, StateError
from ..validate import (check_batch, check_bool, check_finite_parameters, check_images, check_indices,
                        check_optimizer_params, check_positive_float, check_positive_int, check_writable)
from .batches import ColumnBatches
from .dead_units import DeadUnits
from .optim import fused
from .step import FastVAE, quiet_numpy_warnings
from .supported import OWN_LOOP, TRAINING_METHODS, check_supported, check_supported_optimizer

# model -> the Trainers made for it (weakly): a new one on a model another still holds
# unwritten steps of is warned about (a notebook cell run again, say)
_TRAINERS = weakref.WeakKeyDictionary()


class Trainer:
    """The fast path's training steps for ``model`` and ``optimizer``.

    Parameters
    ----------
    model : VAE
        As its constructor builds it (:func:`~npvae.fast.supported.check_supported`):
        the fast path computes the stock VAE, not a subclass's own ``loss``.
    optimizer : Adam or SGD
        Over ``model.parameters()``; npvae's own, with no ``step`` set on it
        (:func:`~npvae.fast.supported.check_supported_optimizer`): the trainer runs the fused
        update, not ``optimizer.step``.
    images : ndarray (N, input_dim), optional
        The training set, for :meth:`batch` (uint8 pixels or floats in [0, 1]).
    batch_size : int, optional
        The largest batch :meth:`batch` makes (default: all images).
    retire_dead_units : bool, default False
        Leave out first-layer units proven dead on every image of ``images``
        (:mod:`npvae.fast.dead_units`). Needs ``images``, and epochs that visit each
        of them once between :meth:`begin_epoch` and :meth:`end_epoch` (one that leaves
        some out retires nothing, with a ``UserWarning``). If you change
        ``images`` in place, call ``load_dead_units(None)`` before the next :meth:`begin_epoch`:
        the proofs were about the old ones. ``fit`` passes True (its own default; False
        with ``binarize``).

    Notes
    -----
    The trainer trains a copy of the model's parameters and the optimizer's state (this
    module's docstring says more):

    * ``with Trainer(model, opt) as trainer:`` writes the result back when the block ends,
      and (the outermost block) closes the trainer: a step after it is a ``StateError``
      (enter it again, or make a new trainer). Without ``with``, call :meth:`sync` at the end.
    * Inside the loop, call :meth:`sync` before evaluating, saving or loading the model.
    * A step whose loss is not finite is not applied (the returned parts show the NaN or
      inf); ``fit`` raises ``DivergenceError`` there, a loop of your own should check.
    * ``optimizer.lr`` (and the other hyper-parameters) may change between steps.
    * A Ctrl-C keeps every whole step and no half one (with ``retire_dead_units``, one
      that cuts a move of units short drops the steps since the last sync, and says so).
    * ``p.grad`` is not touched; one trainer per model at a time.
    """

    def __init__(self, model, optimizer, *, images=None, batch_size=None, retire_dead_units=False):
        _check_computable(model, optimizer)
        retire_dead_units = check_bool(retire_dead_units, "retire_dead_units")
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        if images is not None:
            images = check_images(images, "images", model.input_dim, dtype=model.dtype)
            batch_size = len(images) if batch_size is None else batch_size
        if retire_dead_units and images is None:
            raise InputError("retire_dead_units=True needs the training images (images=...)")
        others = _TRAINERS.setdefault(model, weakref.WeakSet())
        unsynced = sorted((n for n in (other._unsynced_steps() for other in others) if n), reverse=True)
        if unsynced:
            who, advice = (("another Trainer holds", "call the other's sync() first") if len(unsynced) == 1 else
                           (f"{len(unsynced)} other Trainers hold", "only one of them can be written back, with "
                                                                    "its sync()"))
            warnings.warn(f"Trainer: {who} {', '.join(map(str, unsynced))} step(s) of this model that no sync() "
                          f"wrote back; this one starts from the model as it is, without them ({advice}: one "
                          f"Trainer per model at a time)", UserWarning, stacklevel=2)
        self.model, self.optimizer = model, optimizer
        # the fast twins of the two, which the steps train: the parameters in the fast layout
        # (self.net), the optimizer's state beside them and its fused update (self.fused)
        self.net = FastVAE(model, type(optimizer).state_names)
        self.fused = fused(optimizer, self.net.block, model.parameters())
        self.batches = None if images is None else ColumnBatches(images, batch_size, model.dtype)
        self.dead = DeadUnits(self.net, self.fused) if retire_dead_units else None
        self.closed = False                 # by the end of a with block (see __exit__)
        self._depth = 0                     # with blocks entered and not yet ended
        self.visited = None                 # with retirement: the images this epoch's steps saw
        self.storing = False                # see sync
        self.torn = False                   # see _may_tear
        self.synced = True                  # nothing taken yet, so nothing to write back
        self.refused = False                # see load
        self.load()
        others.add(self)                    # made: see the warning above

    @contextlib.contextmanager
    def _may_tear(self):
        """Around a change of the trainer's copy made in many calls (dead-unit retirement's moves
        of units, :meth:`load`'s copies): a Ctrl-C part-way leaves the copy torn. No ``finally``:
        the flag stays up, :meth:`sync` keeps the model's own state (whole) instead of writing
        the torn copy back, and :meth:`load` starts afresh."""
        self.torn = True
        yield
        self.torn = False

    def load(self):
        """Copy the model's parameters and the optimizer's state into the trainer, as they are now.

        Steps taken since the last :meth:`sync` are dropped, with a ``UserWarning``: call
        :meth:`sync` first to keep them. A model the fast path cannot run is refused, taking
        nothing: the trainer keeps its steps, and each step refuses the model until it can."""
        if self.storing:                    # a Ctrl-C cut the last write-back short: finish it first
            self.sync()
        self.refused = True                 # until the check passes: steps kept, each step checks again
        _check_computable(self.model, self.optimizer)     # the user's until now: edited, perhaps
        self.refused = False
        dropped = self._unsynced_steps()
        if dropped:
            warnings.warn(f"Trainer.load: drops the {dropped} step(s) taken since the last sync(), and takes "
                          f"the model and the optimizer as they are now (call sync() first to keep them)",
                          UserWarning, stacklevel=2)
        self.synced = True                  # the copy is given up: a Ctrl-C below leaves nothing of ours to lose
        self.checked = False                # finite parameters: checked at the next step (see step)
        torn = self.torn
        with self._may_tear():
            if self.dead is not None and not torn:
                self.dead.pause()           # units back in the model's order; resumed by the next step
            self.net.load(self.model, self.fused.states())
            self.fused.load()
            if self.dead is not None and torn:
                self.dead.reloaded()        # its moves were cut short: start again from the model's order
        # the optimizer's step count and copies of the values taken: to tell, at sync, whether anything
        # else changed them, and how many steps the trainer has taken since
        self.taken_t, self.taken_values = self._snapshot()
        self.synced = False

    def _unsynced_steps(self):
        """Steps taken since the model's values were taken, that no sync wrote back yet."""
        return 0 if self.synced else self.fused.t - self.taken_t

    def _arrays(self):
        """The model's parameters and the optimizer's state, as they are now (no copies)."""
        arrays = [p.data for p in self.model.parameters()]
        for per_parameter in self.fused.states().values():
            arrays += per_parameter
        return arrays

    def _snapshot(self):
        """The optimizer's step count, and copies of :meth:`_arrays`."""
        return int(self.optimizer.t), [np.array(a) for a in self._arrays()]

    def _changed_elsewhere(self, or_ours=False):
        """True if the model or the optimizer no longer hold what :meth:`load` took from them.
        ``or_ours``, after a write-back cut short: what the trainer writes back is no change either."""
        t, then = self.taken_t, self.taken_values
        ours = self.net.block.stored(self.fused.state_names) if or_ours else then
        if self.optimizer.t not in (t, self.fused.t if or_ours else t):
            return True
        return any(not _same(a, b) and not _same(a, o) for a, b, o in zip(self._arrays(), then, ours))

    def sync(self):
        """Write the parameters and the optimizer's state back into the model and the optimizer,
        which are then yours until the next :meth:`step` takes them back. A second sync with no
        step between does nothing: it never undoes what you changed since the first.

        Raises
        ------
        StateError
            If something else changed the model or the optimizer after the trainer took them
            (a value, or what it computes: a layer swapped, a ``step`` set on the optimizer) and
            the trainer has stepped since: their change is kept, the trainer's steps are not.
        """
        if self.torn and self.dead is not None:     # moves cut short (here, or in load: then synced)
            self.dead.drop_evidence()       # what this epoch saw fire is not whole
        if self.synced:
            return
        if self.torn:
            steps = self.fused.t - self.taken_t
            self.synced = True              # dropped; the next step takes the model as it is
            if steps == 0:                  # nothing of the trainer's to lose
                return
            raise StateError(
                f"Trainer.sync: an exception stopped this Trainer part-way through moving units (for "
                f"dead-unit retirement) or taking the model's values, which left its copy of the "
                f"parameters torn. The model and the optimizer keep the state the trainer took from "
                f"them (step {self.taken_t}), without its {steps} step(s) since: sync now and then "
                f"in the loop to keep them.")
        if self.dead is not None:           # whatever follows: what fired is evidence, kept
            with self._may_tear():
                self.dead.pause()           # the units back in order, and what fired recorded
        # a changed value, or a change of what to compute (a layer swapped, a step set: the steps
        # check that only until their first update, the check costing about a twentieth of a step)
        changed = self._changed_elsewhere(or_ours=self.storing)
        cut_short = self.storing            # a Ctrl-C cut the last write-back short: the model holds part of it
        uncomputable = None if changed or cut_short else _why_not_computable(self.model, self.optimizer)
        steps = self.fused.t - self.taken_t
        if (changed or uncomputable) and not cut_short:
            self.synced, self.storing = True, False     # theirs is kept; the next step takes it as it is
            if steps == 0:                  # nothing of the trainer's to lose
                return
            what = (f", into what its steps did not compute: {uncomputable}" if uncomputable else
                    " (a second Trainer, fit, load_checkpoint, load_state_dict or a hand edit)")
            raise StateError(
                f"Trainer.sync: the model or the optimizer changed while this Trainer held them{what}. That "
                f"change is kept and the trainer's {steps} step(s) since it took them are dropped. Inside the "
                "loop, call trainer.sync() before anything else uses the model; one Trainer per model at a time.")
        if self.fused.t == self.taken_t:     # no step since it took them: the model holds them all
            self.synced = True
            return
        # A Ctrl-C in the write-back leaves the model half written: the next sync writes it
        # whole, taking what the trainer had written so far for its own (and not a change), and
        # over any change made since (never half of it: the next step checks the rest).
        self.storing = True
        try:
            self.net.store(self.model, self.fused.states())
            self.fused.store()
        except ValueError as e:             # an array made read-only (say) since a write-back was cut short
            raise StateError(f"Trainer.sync: cannot finish writing this Trainer's {steps} step(s) back, which a "
                             f"Ctrl-C cut short, so the model and the optimizer hold part of them ({e}): undo "
                             f"what was changed since (make the arrays writable again, say) and call "
                             f"trainer.sync()") from None
        self.synced, self.storing = True, False    # in one line: no Ctrl-C between the two
        if changed:                         # (cut_short: else refused above)
            raise StateError(f"Trainer.sync: the model or the optimizer changed after a Ctrl-C cut this Trainer's "
                             f"write-back short, while they held part of its {steps} step(s); the write-back is "
                             f"finished over that change, which is lost: make it again (inside the loop, call "
                             f"trainer.sync() before anything else uses the model)")

    def _ready(self):
        """Before a step or an epoch's end: after :meth:`sync`, load the model and the optimizer
        as they are now, else check that nothing else took them over
        (:meth:`_check_not_taken_over`); take the optimizer's current hyper-parameters; inside
        an epoch with dead-unit retirement, go on with it (its evidence re-checked) if it was
        paused."""
        if self.storing or self.torn:       # a Ctrl-C cut the last write-back or moves short
            self.sync()
        if self.synced:
            self.load()
        else:
            self._check_not_taken_over()
        if self.fused.settings_changed():
            if self.dead is not None:
                with self._may_tear():
                    self.dead.pause()
            self.fused.apply_settings()
        if self.dead is not None and self.dead.in_epoch and self.dead.paused:
            with self._may_tear():
                self.dead.resume()

    def _check_not_taken_over(self):
        """A change to the model or the optimizer before the trainer's first update since it took
        them is taken (a checkpoint loaded after the trainer was made): until then every value
        is compared, once an epoch in ``fit``. After that only the optimizer's step count is
        (comparing every value would cost more than the step): a new one is an error at once,
        not at :meth:`sync` after the whole loop; other changes are found at :meth:`sync`."""
        if self.fused.t == self.taken_t:
            if self._changed_elsewhere():
                self.load()
        elif self.optimizer.t != self.taken_t:
            steps = self.fused.t - self.taken_t
            self.synced = True              # theirs is kept; the next step takes it as it is
            raise StateError(
                f"Trainer.step: the optimizer changed while this Trainer held it (its step count is now "
                f"{self.optimizer.t}, it was {self.taken_t} when the Trainer took it: a checkpoint or "
                f"state dict loaded, or a reference step). That change is kept, the trainer's {steps} "
                f"step(s) since it took them are dropped, and its next step starts from the model and "
                f"the optimizer as they are now. Inside the loop, call trainer.sync() before anything "
                f"else uses them; one Trainer per model at a time.")

    def __enter__(self):
        self._depth += 1
        self.closed = False
        return self

    def __exit__(self, exc_type, exc, tb):
        """Sync, and close the trainer: a step after the block would train a copy that no later
        sync writes back, so it is refused until the trainer is entered again.

        A Ctrl-C during the write-back is answered by finishing it. (One that lands on the very
        first line, before the ``try`` can catch it, leaves the trainer open with its steps:
        ``trainer.sync()`` still writes them back.)"""
        try:
            # an inner block syncs; only the outermost closes (one line: no Ctrl-C between the two)
            self._depth, self.closed = self._depth - 1, self._depth == 1
            self._sync_noting(exc)
        except BaseException as stop:       # a Ctrl-C cut this write-back short: finish it, then stop
            self._sync_noting(stop)         # (what it drops, if anything, is said on the Ctrl-C itself)
            raise

    def _sync_noting(self, exc):
        """Sync; a ``StateError`` while ``exc`` is on its way out becomes a note on ``exc``
        (the exception to see) instead of replacing it."""
        try:
            self.sync()
        except StateError as e:
            if exc is None:
                raise
            exc.add_note(str(e))

    def _check_open(self, method):
        if self.closed:
            raise StateError(f"Trainer.{method}: this Trainer's with block has ended, and the model and "
                             f"the optimizer hold its result; a step after it would train a copy that "
                             f"only another sync would write back. Step inside the block, enter it again "
                             f"(with trainer: ...), or make a new Trainer")

    # -- epochs (fit) ------------------------------------------------------------------------
    def begin_epoch(self, resumed=False):
        """Write back the steps since the last :meth:`sync` (if any), load the model's current
        state and, with dead-unit retirement, start skipping.

        ``resumed``: the epoch continues from a checkpoint mid-way (see
        :meth:`load_dead_units`); the steps before it are not known here, so :meth:`end_epoch`
        takes the epoch as whole (``fit``'s epochs are: it visits every image once)."""
        self._check_open("begin_epoch")
        if not self.synced:                 # steps taken before the epoch (a warm-up, say) are kept
            self.sync()
        self.load()
        if self.dead is not None:
            with self._may_tear():
                self.dead.begin_epoch(resumed)
            self.visited = None if resumed else np.zeros(len(self.batches.images), bool)

    def end_epoch(self):
        """After an epoch that visited every image once: retire what never fired, and :meth:`sync`.

        An epoch that left images out proves nothing about them: it retires no unit, and a
        ``UserWarning`` says so."""
        self._check_open("end_epoch")
        self._ready()
        seen, proven = self.visited, True
        if self.dead is not None:
            proven = seen is None or bool(seen.all())
            with self._may_tear():
                self.dead.end_epoch(proven)
            self.visited = None
        self.sync()
        if not proven:      # said last: under warnings-as-errors the epoch is still ended and synced
            warnings.warn(f"Trainer.end_epoch: this epoch's steps saw {int(seen.sum()):,} of the "
                          f"{len(seen):,} training images, so no unit was retired (one quiet on "
                          f"these may fire on the others); with retire_dead_units=True, step on "
                          f"every image once between begin_epoch and end_epoch", UserWarning, stacklevel=2)

    @contextlib.contextmanager
    def frozen_gc(self):
        """Yield ``freeze()`` for fit's epochs: called at each epoch's start, it collects what is
        garbage, then keeps the objects alive so far out of Python's full garbage collections
        until the block ends.

        Once Numba is loaded some 100k objects are tracked, and the full collection an epoch
        triggers walks them all: ~50 ms an epoch, 2% of its time. The collection first frees
        what a callback left (a figure is a cycle), which freezing would keep to the end; it
        walks only what the last freeze left out. Left alone if the caller froze objects of
        its own."""
        owned = gc.get_freeze_count() == 0

        def freeze():
            gc.collect()
            gc.freeze()
        try:
            yield freeze if owned else (lambda: None)
        finally:
            if owned:
                gc.unfreeze()

    def dead_units(self):
        """The dead-unit record (JSON-ready) for a checkpoint, or None without retirement."""
        return None if self.dead is None else self.dead.state_dict()

    def load_dead_units(self, state, path="checkpoint"):
        """Restore :meth:`dead_units`' record from a checkpoint (after loading its parameters
        into the model and :meth:`load`). ``state=None`` starts a fresh record. Between epochs
        only: inside one, the units it retired are already left out of its steps. Its retired
        units and candidates are checked once against the images and the parameters: one that
        fires (a record saved with other parameters) is computed again, or not retired."""
        if self.dead is not None and self.dead.in_epoch:
            raise StateError("Trainer.load_dead_units: called inside an epoch, whose steps already leave "
                             "out the units retired so far; call it before begin_epoch() or after "
                             "end_epoch()")
        if self.dead is not None:
            self.dead.load_state_dict(state or dict(retired=[], candidates=[], live=[]), path)
            self.dead.recheck(self.batches.images)

    def check_dead_units(self, state, path="checkpoint"):
        """Raise CheckpointError if a checkpoint's record does not fit this model."""
        if self.dead is not None and state is not None:
            self.dead.check_state(state, path)

    # -- steps -------------------------------------------------------------------------------
    def batch(self, idx):
        """``images[idx]`` as a float batch in the trainer's layout. :meth:`step` takes it unchecked;
        to change it (augmentation, say), step a changed copy, checked like any batch.

        Parameters
        ----------
        idx : sequence of int
            1 to ``batch_size`` indices into ``images`` (negative ones count from the end).

        Returns
        -------
        ndarray (len(idx), input_dim), the model's dtype
            Column-major and read-only; the next call with as many indices overwrites it.
        """
        self._check_open("batch")
        if self.batches is None:
            raise StateError("Trainer.batch needs the training images: make the Trainer with images=...")
        return self.batches.take(check_indices(idx, "idx", len(self.batches.images), self.batches.batch_size))

    def step(self, x, beta=1.0):
        """One training step on ``x``: loss, backward, update.

        The noise is drawn from ``model.sampler.rng`` (``model.rng``) as the reference draws it.
        The update is applied only if the loss is finite. A Ctrl-C keeps the step whole or drops
        it, the noise it drew included.

        Parameters
        ----------
        x : ndarray (B, input_dim), floats in [0, 1]
            Any B >= 1; another float dtype is converted. With ``retire_dead_units``: a
            batch of :meth:`batch`, unchanged.
        beta : float >= 0, default 1.0
            Weighs the KL, as in ``model.loss(x, beta)``: a KL warm-up passes each step's
            weight (:func:`npvae.train.warmup_beta` gives ``fit``'s).

        Returns
        -------
        LossParts
            ``(total, recon, kl)``, floats, as ``model.loss`` returns them; a ``total`` that
            is not finite says the update was skipped.
        """
        self._check_open("step")
        if not self.synced and (self.refused or self.fused.t == self.taken_t):     # edited since it took them?
            _check_computable(self.model, self.optimizer)       # (synced: load checks)
            self.refused = False
        beta = check_positive_float(beta, "beta", allow_zero=True)
        x, idx = self._step_batch(x)
        self._ready()
        if not self.checked:                # not when made: fit loads a checkpoint into the model first
            check_finite_parameters(self.model, "training it cannot work")
            self.checked = True
        ws = self.net.workspace(x.shape[0])
        rng = self.model.sampler.rng                    # what Sampler.forward draws from
        drawn_from, t = rng.bit_generator.state, self.fused.t
        try:
            rng.standard_normal(out=ws.eps, dtype=ws.eps.dtype)
            with quiet_numpy_warnings():                   # the loss tells (see there)
                parts = self.net.forward(x, beta, ws.eps)
            if idx is not None and self.visited is not None:    # computed: its evidence is in
                self.visited[idx] = True
            if math.isfinite(parts.total):
                self.net.backward()
                self.fused.step(self.net.first_grad)     # one kernel counts the step as it updates
        except BaseException:
            if self.fused.t == t:     # a Ctrl-C before the update dropped the step: its noise goes back too
                rng.bit_generator.state = drawn_from
            raise
        return parts

    def _step_batch(self, x):
        """``(batch, idx)``: a batch of :meth:`batch` as it is, with its indices into ``images``;
        any other ``x`` checked and copied into the fast layout, with ``idx`` None."""
        ours = self.batches.made(x) if self.batches is not None else None
        if ours is not None:                            # our own (read-only) batches are known good
            return ours
        if self.dead is not None:
            raise InputError("with retire_dead_units=True, Trainer.step takes the batches of "
                             "trainer.batch(idx), unchanged: units proven dead on the training "
                             "images may not be on other data")
        x = check_batch(x, "x", self.model.input_dim, self.model.dtype, unit_interval=True, c_order=False)
        return self.net.workspace(x.shape[0]).batch(x), None     # column-major


def _check_computable(model, optimizer):
    """The fast path computes what ``model`` and ``optimizer`` compute, and can write its steps
    back; checked when the trainer is made, when it takes them back (:meth:`Trainer.load`), at
    each step until it has applied an update since, and at each :meth:`Trainer.sync`."""
    check_supported(model, TRAINING_METHODS, instead=OWN_LOOP)
    check_supported_optimizer(optimizer)
    check_optimizer_params(optimizer, model)
    for name, p in model.named_parameters():
        check_writable(p.data, f"model.{name}.data")
        for state in type(optimizer).state_names:
            check_writable(optimizer.state[p][state], f"optimizer.state[model.{name}][{state!r}]")


def _why_not_computable(model, optimizer):
    """What :func:`_check_computable` says of ``model`` and ``optimizer`` now, or None."""
    try:
        _check_computable(model, optimizer)
    except NpvaeError as refusal:
        return str(refusal).rstrip(".")
    return None


def _same(a, b):
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
