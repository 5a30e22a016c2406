r"""Training: :func:`fit`, its per-epoch :class:`History`, and clean stops.

One step is what your own loop would do::

    model.zero_grad(); parts = model.loss(x, beta_t); model.backward(); optimizer.step()

That is the reference (``backend="numpy"``). The fast path (``backend="numba"``, the
default) runs the same step fused, on a copy of the model's parameters in its own
layout (:class:`npvae.fast.Trainer`), and writes the result back into the model and
the optimizer at the end of every epoch. Around the steps, ``fit`` adds:

* **KL warm-up.** With ``warmup = W`` epochs of ``S`` steps each, step ``t``
  (1-based, counted over the whole run) uses
  :math:`\beta_t = \beta \cdot \min(1, t / (W S))`: it rises linearly from
  :math:`\beta / (WS)` to :math:`\beta`, reached at the last step of epoch ``W``.
  An epoch's record keeps the weights of its first and last steps (``beta_start``,
  ``beta``); its ``train_loss`` is the mean over the epoch's images of ``recon + beta_t * kl``
  (each step's mean weighted by its batch size: a short last batch counts for what it holds).
* **Evaluation** after each epoch on ``test_images`` with a fixed noise seed
  (:func:`npvae.evaluate.evaluate_elbo`), comparable between epochs and runs.
  The test loss is ``recon + beta * kl`` with the *target* ``beta`` (the
  negative ELBO when ``beta = 1``), not the warm-up's ``beta_t``.
* **Checkpoints** (atomic) after every epoch, and on SIGINT/SIGTERM/SIGHUP (Windows: SIGBREAK) after the
  current step; ``resume=path`` continues bit for bit, mid-epoch included.
* **Divergence**: a NaN/inf loss stops training with :class:`DivergenceError`
  before that step is applied, and so does a NaN/inf test loss after an epoch; the last
  good checkpoint is never overwritten.
* **Dead units skipped** (fast path only; ``retire_dead_units=False`` switches it off).
  First-layer units proven dead on every training image are left out of the training
  steps (:mod:`npvae.fast.dead_units`): same results to round-off, fewer FLOPs.
"""
import contextlib
import copy
import inspect
import json
import math
import numbers
import os
import reprlib
import signal
import time
import warnings

import numpy as np

from . import footprint, jsonio
from .atomic import append_line, atomic_write
from .backend import describe, resolve
from .checkpoint import check_savable, checkpoint_file, load_checkpoint, save_checkpoint
from .data import fingerprint, to_float
from .errors import CheckpointError, DivergenceError, InputError, InputTypeError
from .evaluate import binarize_inplace, check_evaluation_memory, check_model, check_stock_terms, evaluate_elbo
from .optim import SGD, Adam, Optimizer
from .progress import EpochProgress
from .signals import StopFlag, catch_signals
from .validate import (check_bool, check_file_path, check_finite_parameters, check_images, check_layer_dtypes,
                       check_optimizer_params, check_output_path, check_positive_float, check_positive_int,
                       check_rng, check_seed, pixel_scale_said)

__all__ = ["fit", "History", "TrainingInterrupted", "warmup_beta"]

#: Keys of every per-epoch record. ``beta_start`` and ``beta`` are the KL weights of the
#: epoch's first and last steps: they differ only during a warm-up.
FIELDS = ("epoch", "steps", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
          "test_kl", "train_seconds", "eval_seconds", "beta_start", "beta")
DEFAULT_LR = 1e-3          # the default optimizer's learning rate (Adam's own default)
# fit settings a resumed run must share with the checkpoint to continue exactly
_TEST_KEYS = ("n_test", "test_data", "eval_seed")       # so that the History's test losses compare
_RESUME_KEYS = ("batch_size", "beta", "warmup", "binarize", "n_train", "train_data") + _TEST_KEYS
_PARTIAL_SUMS = ("loss", "recon", "kl", "n", "seconds")    # an epoch's running sums, in mid-epoch checkpoints


class History(list):
    """The per-epoch records of :func:`fit`: a list of dicts with :data:`FIELDS`.

    ``history[i]`` is a record; ``history["test_loss"]`` is that column as a
    list (``None`` where there was no test set); ``history[1:]`` is a History too.
    """

    def __getitem__(self, key):
        if isinstance(key, str):
            return [record.get(key) for record in self._known(key)]
        if isinstance(key, slice):          # history[5:]["test_loss"]: the later epochs' column
            return History(super().__getitem__(key))
        return super().__getitem__(key)

    def _known(self, key):
        """The records, if ``key`` is a field of them; else KeyError naming the fields."""
        if key not in FIELDS and not any(key in record for record in self):
            raise KeyError(f"history has no field {key!r}; its fields are {', '.join(FIELDS)}")
        return self

    @property
    def last(self):
        """The latest record, or None before the first epoch."""
        return self[-1] if self else None

    def best(self, key="test_loss"):
        """The record with the smallest ``key``, ignoring missing values (on a tie, the first).

        Parameters
        ----------
        key : str, default "test_loss"
            A field of :data:`FIELDS`, or one the records hold; another is a ``KeyError``.

        Returns
        -------
        dict or None
            None if no record has a value for ``key``.
        """
        scored = [r for r in self._known(key) if r.get(key) is not None]
        return min(scored, key=lambda r: r[key]) if scored else None

    def __repr__(self):
        return f"History({len(self)} epochs, last={self.last})"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM/SIGHUP (or Windows' SIGBREAK) after finishing a step.

    Attributes
    ----------
    signum : int
        The signal received.
    epoch, step : int
        Completed epochs, and steps done in the unfinished one.
    checkpoint : str or None
        Where the state was saved (None if ``fit`` had no checkpoint path).
    history : History
        The completed epochs' records.
    """

    def __init__(self, message, signum, epoch, step, checkpoint, history):
        super().__init__(message)
        self.signum, self.epoch, self.step = signum, epoch, step
        self.checkpoint, self.history = checkpoint, history

    def __reduce__(self):       # pickled whole (a fit in a process pool stopped by a signal)
        return type(self), (str(self), self.signum, self.epoch, self.step, self.checkpoint, self.history)


def warmup_beta(global_step, beta, warmup, steps_per_epoch):
    """The KL weight at ``global_step`` (1-based): linear from ~0 to ``beta`` over ``warmup`` epochs
    of ``steps_per_epoch`` steps."""
    if warmup == 0:
        return beta
    return beta * min(1.0, global_step / (warmup * steps_per_epoch))


def warmup_note(warmup, epochs, beta, steps_per_epoch):
    """What a warm-up longer than the run means: the KL weight never reaches ``beta``."""
    end = warmup_beta(epochs * steps_per_epoch, beta, warmup, steps_per_epoch)
    return (f"warmup={warmup} epochs is longer than epochs={epochs}: the KL weight ends at {end:.3g}, "
            f"not beta={beta:g} (resuming with more epochs continues the ramp)")


# -- metrics file ------------------------------------------------------------------
def _start_metrics(path, history):
    """Start ``path`` afresh, or (resuming) make it hold the checkpoint's epochs, ``history``: its
    lines for them, and the record of any it lacks (a run stopped between writing its checkpoint
    and the line, or a new file). Lines of later epochs, which the checkpoint never saw, go."""
    epochs = {rec["epoch"] for rec in history}
    lines = {}
    if epochs and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:   # a line in another encoding is
            for line in f:                                            # no record of ours: passed over
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and rec["epoch"] in epochs \
                            and not rec.get("summary"):
                        lines.setdefault(rec["epoch"], line.rstrip("\n") + "\n")
    for rec in history:
        lines.setdefault(rec["epoch"], jsonio.dumps(rec) + "\n")
    with atomic_write(path, "w") as f:
        f.write("".join(lines[epoch] for epoch in sorted(lines)))


class _MetricsFile:
    """``fit``'s ``metrics_path``. A fresh run starts it (:func:`_start_metrics`) right after it
    first writes its checkpoint (or, with none, its first line): a run that fails before then
    leaves the earlier pair as it was. A resume makes it the checkpoint's at once."""

    def __init__(self, path, history):
        self.path, self.history, self.started = path, history, path is None

    def start(self):
        if not self.started:
            _start_metrics(self.path, self.history)
            self.started = True

    def append(self, record):
        if self.path is not None:
            self.start()
            append_line(self.path, jsonio.dumps(record))


# -- fit ---------------------------------------------------------------------------
def _check_args(model, epochs, batch_size, optimizer, lr, beta, warmup, binarize, eval_seed, callback,
                progress, retire_dead_units):
    check_model(model)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer):
            raise InputTypeError(f"optimizer must be an npvae optimizer (e.g. Adam(model.parameters()), or "
                                 f"your own subclass of npvae.optim.Optimizer), got {type(optimizer).__name__}")
        check_optimizer_params(optimizer, model)
    if lr is not None:
        check_positive_float(lr, "lr")
        if optimizer is not None:
            raise InputError(f"fit: lr={lr!r} sets the default optimizer's rate, but optimizer= was given "
                             f"(its lr is {getattr(optimizer, 'lr', '?')}): set the rate on that optimizer, "
                             f"or leave out optimizer=")
    check_positive_float(beta, "beta", allow_zero=True)
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral):
        raise InputTypeError(f"warmup must be a non-negative int (epochs of KL warm-up), got {warmup!r}")
    if warmup < 0:
        raise InputError(f"warmup must be a non-negative int (epochs of KL warm-up), got {warmup}")
    for name, value in (("binarize", binarize), ("progress", progress), ("retire_dead_units", retire_dead_units)):
        check_bool(value, name)
    check_seed(eval_seed, "eval_seed")
    if callback is not None and not callable(callback):
        raise InputTypeError(f"callback must be callable(record, model) or None, got {type(callback).__name__}")
    if callback is not None:
        try:                                    # refused now, not after an epoch of training
            inspect.signature(callback).bind(None, None)
        except TypeError as e:
            raise InputTypeError(f"callback must take two arguments, (record, model): {e}") from None
        except ValueError:                      # no signature to read (some builtins): called as it is
            pass


def _check_paths(checkpoint, metrics_path, resume):
    """The three files as str (or None), checked before any training: the two written can be
    written, and the metrics are not the checkpoint's file."""
    checkpoint = check_output_path(checkpoint, "checkpoint")
    metrics_path = check_output_path(metrics_path, "metrics_path")
    resume = check_file_path(_checkpoint_in_run_folder(resume), "resume")
    for other, name in ((checkpoint, "checkpoint"), (resume, "resume")):
        if None in (metrics_path, other):
            continue
        a, b = os.path.realpath(metrics_path), os.path.realpath(other)
        # compared without case too: macOS's and Windows' usual file systems take run.npz and RUN.npz as one
        if a.casefold() == b.casefold():
            which = metrics_path if a == b else (f"{metrics_path} and {other}: names that differ only in case "
                                                 f"are one file on macOS and Windows")
            raise InputError(f"metrics_path and {name} are the same file ({which}): the metrics would "
                             f"overwrite the checkpoint; give each a file of its own")
    return checkpoint, metrics_path, resume


def _checkpoint_in_run_folder(resume):
    """A run folder given as ``resume`` stands for the checkpoint in it, as load_checkpoint has it."""
    if not isinstance(resume, (str, bytes, os.PathLike)):     # (check_file_path says what it is)
        return resume
    return checkpoint_file(resume)


def _check_file_to_replace(path, warn_if_stopped):
    """The file at ``path``, which fit replaces at its first save, must be an npvae checkpoint (or
    empty). A new run about to replace a run that stopped part-way there (a notebook cell run
    again after a Ctrl-C, say) is told so, and how to continue it instead."""
    if not os.path.isfile(path) or not os.path.getsize(path):
        return
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:        # a data file's name mistyped, say: not replaced unasked
        raise InputError(f"checkpoint={os.fspath(path)!r} is a file that fit would replace at its first save, "
                         f"but it does not load as an npvae checkpoint ({e}); remove it first if it may "
                         f"go, or give another path") from None
    except (OSError, ValueError):
        return
    total = (ckpt.fit_config or {}).get("epochs")
    if warn_if_stopped and (ckpt.step or (isinstance(total, int) and ckpt.epoch < total)):
        at = f"epoch {ckpt.epoch + 1}, step {ckpt.step}" if ckpt.step else f"the end of epoch {ckpt.epoch}"
        warnings.warn(f"fit(checkpoint={os.fspath(path)!r}): that file holds a run stopped at {at} of its "
                      f"{total} epochs, which this new run replaces at its first save; to continue it "
                      f"instead, pass resume={os.fspath(path)!r}", UserWarning, stacklevel=3)


def _a(name):
    """``name`` with its article: "an SGD", "an Adam", "a Lion"."""
    return ("an " if name == "SGD" or name[:1] in "AEIOUaeiou" else "a ") + name


def _check_writable(model, optimizer):
    """Every array a step writes into is writable: the reference found a read-only one half-way
    through a step, some parameters moved already."""
    for name, p in model.named_parameters():
        arrays = [(f"model.{name}.data", p.data), (f"model.{name}.grad", p.grad)]
        if optimizer is not None and p in optimizer.state:
            arrays += [(f"optimizer.state[model.{name}][{key!r}]", a) for key, a in optimizer.state[p].items()]
        for what, a in arrays:
            if isinstance(a, np.ndarray) and not a.flags.writeable:
                raise InputError(f"{what} is read-only, but fit updates it in place: give it a writable copy "
                                 f"(.copy()); to freeze a layer, train in a loop of your own whose optimizer "
                                 f"leaves its parameters out")


def _check_training_memory(model, optimizer, batch, backend, saving):
    """Refuse training that this machine cannot hold (a bare MemoryError came inside the first
    step, or the operating system's out-of-memory killer), as the command line does. Counted:
    what fit adds to the model and a given optimizer, which exist already."""
    sizes = (model.input_dim, model.hidden_dims, model.latent_dim)
    one_copy = np.dtype(model.dtype).itemsize * footprint.parameter_count(*sizes)     # of every parameter
    copies = 2 if optimizer is None else len(optimizer.state_names)     # fit's own Adam: its two moments
    held = one_copy * (2 + (0 if optimizer is None else copies))        # values, gradients, a given optimizer's
    saved = one_copy * (1 + copies) if saving else 0                    # the copies a save makes

    def added(backend):
        return footprint.training_bytes(*sizes, batch, model.dtype, copies, backend=backend, nll_rows=0) - held \
            + saved
    need, have = added(backend), footprint.available_bytes()
    if have is not None and need > have:
        other = (f", or backend='numpy' (slower; about {footprint.format_bytes(added('numpy'))})"
                 if backend != "numpy" and added("numpy") <= have else "")
        raise InputError(f"fit: training a {'-'.join(map(str, (sizes[0], *sizes[1], sizes[2])))} {model.dtype} "
                         f"VAE on batches of {batch} needs about {footprint.format_bytes(need)} more memory, "
                         f"but {footprint.format_bytes(have)} is available: choose a smaller model or "
                         f"batch_size{other}")


def _is_epoch_number(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _stream_from(rng):
    """A Generator of its own, fixed by ``rng``'s current state (not by its seed: a Generator
    restored from a state has none), leaving ``rng`` untouched."""
    seed = copy.deepcopy(rng).integers(2**63)
    return np.random.default_rng(seed)


def _or_none(value):
    """A setting in a message: its repr, or "none" (no test images)."""
    return "none" if value is None else repr(value)


def _resume(ckpt, path, model, opt, fit_config, rngs, steps):
    """Load the checkpoint ``ckpt`` (read from ``path``) into model, optimizer and ``steps``, and
    its streams into ``rngs``, checking everything first."""
    ckpt.check_model(model)                         # first: the other checks assume its shapes
    steps.check_dead_units(ckpt.dead_units, path)
    saved = ckpt.fit_config or {}
    for key in _RESUME_KEYS:
        if key == "eval_seed" and saved.get("n_test") is None and fit_config["n_test"] is None:
            continue                    # no test images, no test losses to compare
        if key in saved and saved[key] != fit_config[key]:
            what = {"train_data": "training images", "test_data": "test images",
                    "n_test": "number of test images"}.get(key, key)
            done = "evaluated" if key in _TEST_KEYS else "trained"
            why = (" (fingerprints of the images' dtype, shape and bytes: the same pixels as uint8 and "
                   "as floats differ, so give them as the run did)") if key.endswith("_data") else ""
            if key in _TEST_KEYS:
                why += ("; the History's test losses would not compare: give test_images and eval_seed "
                        "as the run did, or start a new run")
            raise InputError(f"cannot resume {path} exactly: {what} {_or_none(fit_config[key])} but the "
                             f"checkpoint was {done} with {_or_none(saved[key])}{why}")
    for name in ("shuffle", "binarize"):
        if name not in ckpt.rng_states:
            raise CheckpointError(f"{path}: cannot resume: no {name!r} generator state "
                                  f"(was it written by fit()?)")
    if "train_data" not in saved:       # written before fit recorded its images
        warnings.warn(f"{path} holds no fingerprint of the images it was trained on (an npvae from before fit "
                      f"recorded them wrote it), so fit cannot check that train_images are those; the "
                      f"checkpoints this run writes record the images given", UserWarning, stacklevel=3)
    per_epoch = math.ceil(fit_config["n_train"] / fit_config["batch_size"])
    if ckpt.step >= per_epoch:       # a checkpoint inside an epoch is written before its last step
        raise CheckpointError(f"{path}: cannot resume at step {ckpt.step} of an epoch: an epoch here "
                              f"has {per_epoch} steps")
    if ckpt.step:           # the epoch's running sums so far, without which its train_loss is wrong
        partial, seen = ckpt.partial or {}, ckpt.step * fit_config["batch_size"]
        if not set(_PARTIAL_SUMS) <= set(partial):
            raise CheckpointError(f"{path}: cannot resume inside an epoch: its running sums (partial) "
                                  f"must hold {list(_PARTIAL_SUMS)}, got {sorted(partial)}")
        if partial["n"] != seen:
            raise CheckpointError(f"{path}: cannot resume inside an epoch: its running sums (partial) count "
                                  f"{partial['n']} images, but step {ckpt.step} of batches of "
                                  f"{fit_config['batch_size']} has seen {seen}")
        if partial["seconds"] < 0:
            raise CheckpointError(f"{path}: cannot resume inside an epoch: its running sums (partial) give "
                                  f"the epoch's time so far as {partial['seconds']} s")
    bad = next((r for r in ckpt.history if not _is_epoch_number(r.get("epoch"))), None)
    if bad is not None:                 # (fit writes each; a hand-made record may lack it)
        raise CheckpointError(f"{path}: cannot resume: a history record has no epoch number (an int from 1): "
                              f"{reprlib.repr(bad)}")
    ckpt.load_into(model, opt)
    steps.load()
    steps.load_dead_units(ckpt.dead_units, path)   # none saved (another back end, an older file): afresh
    for name in ("shuffle", "binarize"):
        rngs[name] = ckpt.generator(name)       # new Generators: the caller's rng is left alone
    fit_config["lr"] = getattr(opt, "lr", fit_config["lr"])   # the checkpoint's optimizer settings win


class ReferenceSteps:
    """The reference training step (``backend="numpy"``): what a user's own loop does.

    :class:`npvae.fast.Trainer` has the same methods for the fast path.
    """

    def __init__(self, model, optimizer, images):
        self.model, self.optimizer, self.images = model, optimizer, images

    def batch(self, idx):
        """``images[idx]`` as floats in [0, 1]."""
        rows = self.images[idx]
        return to_float(rows, self.model.dtype) if rows.dtype == np.uint8 else rows.astype(self.model.dtype)

    def step(self, x, beta):
        """Loss, backward and update; the update only if the loss is finite."""
        self.model.zero_grad()
        parts = self.model.loss(x, beta)
        if math.isfinite(parts.total):
            self.model.backward()
            self.optimizer.step()
        return parts

    # the model and the optimizer always hold the state, and no unit is ever skipped
    def load(self):
        pass

    def sync(self):
        pass

    def begin_epoch(self, resumed=False):
        pass

    def end_epoch(self):
        pass

    def dead_units(self):
        return None

    def frozen_gc(self):
        return contextlib.nullcontext(lambda: None)     # the reference leaves the collector alone

    def load_dead_units(self, state, path=None):
        pass

    def check_dead_units(self, state, path=None):
        pass


def _training_steps(backend, model, opt, images, batch_size, binarize, retire_dead_units, evaluating, chosen):
    """The reference's steps or the fast path's, for ``backend`` (:mod:`npvae.backend`);
    ``evaluating``: the epochs end with an evaluation on the same back end; ``chosen``: how the
    back end was chosen, to begin a refusal (:func:`npvae.backend.describe`)."""
    if resolve(backend) == "numpy":
        return ReferenceSteps(model, opt, images)
    from .fast import Trainer       # imports Numba: only when the fast path is asked for
    from .fast.supported import EVALUATION_METHODS, TRAINING_METHODS, check_supported
    try:
        check_supported(model, TRAINING_METHODS)    # here, for fit's advice (Trainer's is for a loop)
        if evaluating:              # refused now, not after the first epoch's training
            check_supported(model, EVALUATION_METHODS)
        return Trainer(model, opt, images=images, batch_size=batch_size,
                       retire_dead_units=retire_dead_units and not binarize)
    except InputTypeError as e:     # a model or an optimizer the fast path does not run
        raise InputTypeError(f"{chosen}: {e}") from None


def fit(model, train_images, test_images=None, *, epochs=20, batch_size=128, optimizer=None, lr=None,
        beta=1.0, warmup=0, rng=None, binarize=False, checkpoint=None, resume=None, progress=True,
        eval_seed=0, callback=None, metrics_path=None, backend=None, retire_dead_units=True):
    """Train ``model`` on ``train_images`` with minibatch gradient descent.

    Parameters
    ----------
    model : VAE
    train_images : ndarray (N, input_dim)
        ``uint8`` pixels (preferred: converted per batch) or floats in [0, 1].
    test_images : ndarray (M, input_dim), optional
        Evaluated after every epoch (``test_loss``, ``test_recon``, ``test_kl``), by
        :func:`~npvae.evaluate.evaluate_elbo` with this ``batch_size`` and ``eval_seed`` (its
        default batch size sums in another order: other last digits): the stock VAE's loss,
        even for a subclass that trains with a ``loss`` of its own (then not comparable with
        ``train_loss``); a model whose ``sampler``, ``kl`` or ``bce`` is another is refused.
        Evaluated in evaluation mode (``model.eval()``); each module has its mode back after.
    epochs : int
        Total epochs. When resuming, training continues from the checkpoint's
        epoch up to this number.
    batch_size : int
        The last batch of an epoch holds the remainder.
    optimizer : Adam or SGD, optional
        Over ``model.parameters()``; default ``Adam(model.parameters(), lr)``. An
        optimizer of your own (a subclass of :class:`npvae.optim.Optimizer`) trains on
        ``backend="numpy"`` only.
        When resuming, its state (hyper-parameters included) comes from the checkpoint.
        A second ``fit`` on the same model starts a new default Adam and counts epochs
        (and the KL warm-up) from 1 again: to train on, pass the first call's optimizer (and another ``rng``,
        or its shuffles repeat), or use ``checkpoint=`` and ``resume=``.
    lr : float, optional
        Learning rate of the default optimizer (default 1e-3). With ``optimizer`` it is an
        error: that optimizer has its own (``Adam(params, lr=...)``). With ``resume``, the checkpoint's optimizer
        state and hyper-parameters are loaded (its learning rate wins over ``lr`` and over
        the given ``optimizer``'s, for an exact resume; a ``lr`` given that differs is warned of); to
        change it, pass an ``optimizer`` (whose settings the checkpoint's replace) and set its
        ``lr`` in a ``callback``.
    beta : float
        KL weight (1: the VAE; otherwise a beta-VAE).
    warmup : int
        Epochs of linear KL warm-up, per step (see the module docstring); 0: none. More
        than ``epochs`` warns (a ``UserWarning``): the weight would never reach ``beta``.
    rng : Generator, int or None
        Shuffles the data each epoch: ``rng.permutation(N)``, then batches of ``batch_size`` in
        its order (``uint8`` pixels as ``x / 255``). On the reference, a loop of your own over those
        batches (``model.zero_grad(); model.loss(x, beta); model.backward(); optimizer.step()``, with
        the default ``Adam``) trains the same bits from the same seed, without ``warmup``,
        ``binarize`` or ``rng=model.rng``. Dynamic binarization gets its own stream,
        derived from its state (the same state, the same streams). ``rng=model.rng``
        (the Generator of the sampler's noise) is allowed: the shuffle then draws from a
        stream derived from it, so the noise stream is not drawn from twice. Ignored when
        resuming (the checkpoint's streams continue).
    binarize : bool
        Draw each pixel as 0/1 with its intensity as probability, fresh per batch
        (test images are binarized once, with a fixed seed).
    checkpoint : path, optional
        Written atomically after every epoch and on SIGINT/SIGTERM/SIGHUP. A file already there
        must be an npvae checkpoint (or empty): anything else (a data file's name mistyped, say)
        is refused rather than replaced.
    resume : path, optional
        A checkpoint written by ``fit`` to continue from exactly, even mid-epoch (or a run folder
        holding one as ``checkpoint.npz``, as :func:`~npvae.load_checkpoint` takes it).
        The model must have its config; ``batch_size``, ``beta``, ``warmup``,
        ``binarize`` and the training images must be the same, and so must ``test_images``
        and ``eval_seed`` (the History's test losses compare). Checked before anything is loaded
        into the model and the optimizer, as is ``epochs`` against the checkpoint's.
    progress : bool
        Print a live progress line (on a terminal or in a Jupyter notebook) and one summary
        line per epoch, on stderr. A stop by a signal is reported there either way (one line: where it stopped and the
        checkpoint), as the raised :class:`TrainingInterrupted` is.
    eval_seed : int
        Seed of the evaluation noise: every evaluation uses a fresh Generator(eval_seed).
    callback : callable(record, model), optional
        Called after each epoch; return ``False`` to stop training early (None or
        True goes on). The epoch's checkpoint is written before it and again after
        it, so what it changes (``optimizer.lr``, say) is resumed too. It may change
        values, not the model's parameters or (on the fast path) its layers: an ``InputError``.
        The reference runs the model's own code, so it follows a layer swapped for one without
        parameters; while ``test_images`` are evaluated, a ``kl``, ``bce`` or ``sampler`` of
        another class is refused on both. The model's ``rng``
        is the training's noise: ``model.sample(16)`` here changes the rest of the run (which
        still resumes exactly); ``model.sample(16, rng=0)`` only looks. A ``model.eval()`` here
        lasts until the next epoch's start, which puts the model in training mode again. It
        may change ``train_images`` in place: the next epochs train on them, and the
        checkpoints record them as changed (a resume is then given the changed images).
    metrics_path : path, optional
        One JSON line per epoch is appended atomically, after the epoch's checkpoint. On a
        resume it is made to hold the checkpoint's epochs (a line it lacks is written from the
        checkpoint's History, later ones go); a fresh run restarts it when it first writes
        its checkpoint (or, with none, the file): one that fails before that leaves it as it was.
    backend : {"numba", "numpy"} or None
        The fast path (Numba) or the plain reference (:mod:`npvae.backend`); None: on a
        resume, the back end the run was on (an older npvae's checkpoint records none: a
        warning says which goes on), else ``$NPVAE_BACKEND``, else ``"numba"``. The
        same training: each step agrees to round-off, which in float64 stays at round-off over
        a run; in float32 training amplifies it over the epochs into a run of the same quality,
        not the same bits. The fast path computes the VAE as its constructor builds it and
        refuses anything else (a subclass with its own ``loss``, other layers:
        :mod:`npvae.fast.supported`), which the reference trains by running the model's own code.
    retire_dead_units : bool
        Fast path: leave out first-layer units proven dead on every training image
        (:mod:`npvae.fast.dead_units`). Never with ``binarize``. Off: to measure it. A
        ``callback`` that changes ``train_images`` in place starts the record afresh.

    Returns
    -------
    History
        One record per epoch (those from a resumed checkpoint included).

    Raises
    ------
    DivergenceError
        The loss became NaN or inf; names the epoch and step. That step is not
        applied and the last checkpoint is left as it was. Also when the test loss
        after an epoch is NaN or inf (finite parameters whose codes overflow): that
        epoch's checkpoint is not written, and the model is left as the epoch made it.
        Its ``history`` holds the records of the epochs completed (without ``checkpoint=``
        too: the run's only record of them).
    TrainingInterrupted
        (a ``KeyboardInterrupt``) on SIGINT/SIGTERM/SIGHUP (Windows: SIGBREAK), after the current step and a
        checkpoint; in the main thread only, where Python delivers signals (elsewhere, stop it with ``callback``).
    """
    _check_args(model, epochs, batch_size, optimizer, lr, beta, warmup, binarize, eval_seed, callback,
                progress, retire_dead_units)
    checkpoint, metrics_path, resume = _check_paths(checkpoint, metrics_path, resume)
    resumed = load_checkpoint(resume) if resume is not None else None
    resumed_backend = None if resumed is None else (resumed.fit_config or {}).get("backend")
    chosen = describe("fit", backend, resumed_backend)
    unknown = resumed is not None and backend is None and resumed_backend is None
    backend = resolve(backend, resumed_backend)
    train_images = check_images(train_images, "train_images", model.input_dim, dtype=model.dtype)
    if resume is None:                  # (resuming replaces them)
        check_finite_parameters(model, "training it cannot work")
        if optimizer is not None:
            _check_optimizer_state(optimizer)
    if checkpoint is not None:          # not after an epoch of training
        check_savable(model, checkpoint, optimizer)
        if resume is None or os.path.realpath(resume) != os.path.realpath(checkpoint):
            _check_file_to_replace(checkpoint, warn_if_stopped=resume is None)
    check_layer_dtypes(model)
    _check_writable(model, optimizer)
    if test_images is not None:
        test_images = check_images(test_images, "test_images", model.input_dim, dtype=model.dtype)
        check_stock_terms(model, "fit(test_images=)")
    # plain Python numbers from here on (numpy ints would not serialise to JSON)
    epochs, batch_size, warmup, eval_seed = int(epochs), int(batch_size), int(warmup), int(eval_seed)
    _check_training_memory(model, optimizer, min(batch_size, len(train_images)), backend,
                           saving=checkpoint is not None)
    if test_images is not None:         # evaluated in batches of batch_size: refused now, not after an epoch
        check_evaluation_memory(model, min(batch_size, len(test_images)),
                                f"fit(test_images=) with batch_size={batch_size}", "batch_size (default 128)")
    binarize, progress, retire_dead_units = bool(binarize), bool(progress), bool(retire_dead_units)
    lr_given = lr is not None
    lr, beta = (DEFAULT_LR if lr is None else float(lr)), float(beta)
    opt = optimizer if optimizer is not None else Adam(model.parameters(), lr=lr)
    lr = float(getattr(opt, "lr", lr))  # what actually trains, for the checkpoint's record
    n_train = len(train_images)
    steps = math.ceil(n_train / batch_size)
    if warmup > epochs and beta > 0:    # legal (a resumed run can finish the ramp), but likely a slip
        warnings.warn(warmup_note(warmup, epochs, beta, steps), UserWarning, stacklevel=2)
    fit_config = dict(epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, warmup=warmup,
                      binarize=binarize, eval_seed=eval_seed, n_train=n_train,
                      n_test=None if test_images is None else len(test_images), optimizer=type(opt).__name__,
                      backend=backend, train_data=fingerprint(train_images),
                      test_data=None if test_images is None else fingerprint(test_images))
    shuffle_rng = check_rng(rng)
    if shuffle_rng is getattr(model.sampler, "rng", None):   # one stream for both could not resume
        shuffle_rng = _stream_from(shuffle_rng)
    rngs = {"shuffle": shuffle_rng, "binarize": _stream_from(shuffle_rng)}
    with pixel_scale_said():     # fit has said it at its caller's line
        training = _training_steps(backend, model, opt, train_images, batch_size, binarize,
                                   retire_dead_units, evaluating=test_images is not None, chosen=chosen)

    history, epoch_done, step_done, partial = History(), 0, 0, None
    if resume is not None:
        epoch_done, step_done, partial = resumed.epoch, resumed.step, resumed.partial
        if epoch_done > epochs or (epoch_done == epochs and step_done):     # before anything is loaded
            raise InputError(f"epochs={epochs} is the total number of epochs, but {resume} is already "
                             f"at epoch {epoch_done + (step_done > 0)}; ask for more epochs")
        if optimizer is None and resumed.optimizer not in (None, "Adam"):     # not "got Adam": none was given
            raise InputError(f"{resume} holds the state of {_a(resumed.optimizer)} optimizer, but fit was given "
                             f"none and would make its default Adam: pass optimizer={resumed.optimizer}("
                             f"model.parameters()) (its settings come from the checkpoint)")
        _resume(resumed, resume, model, opt, fit_config, rngs, training)
        if lr_given and fit_config["lr"] != lr:     # given, and not what trains
            warnings.warn(f"fit(resume={resume!r}): lr={lr:g} is not used: a resume goes on with the "
                          f"checkpoint's optimizer settings (lr={fit_config['lr']:g}); to change it, pass an "
                          f"optimizer and set its lr in a callback", UserWarning, stacklevel=2)
        if unknown:                     # so "a resume keeps the run's back end" cannot hold
            warnings.warn(f"fit(resume={resume!r}): the checkpoint records no back end (an older npvae wrote "
                          f"it), so the run goes on with {backend}; pass backend='numpy' or 'numba' to choose",
                          UserWarning, stacklevel=2)
        history = History(resumed.history)
    metrics = _MetricsFile(metrics_path, list(history))      # a resume's records so far, or none
    if resume is not None:
        metrics.start()         # the run's own file: made the checkpoint's now, even with no epoch left to train
    run = _Run(model, opt, training, n_train, batch_size, beta, warmup, binarize, rngs, checkpoint,
               fit_config, history, EpochProgress(progress, epochs, steps), metrics, own_optimizer=optimizer is None)
    if backend == "numba":
        run.first_step = ("the step under way (a process's first step compiles the fast path's kernels when "
                          "Numba's cache is empty: 10-25 s on 2 cores, more on a busy machine)")
    if resume is not None:
        run.last_saved = f"{resume} (epoch {epoch_done}" + (f", step {step_done})" if step_done else ")")
    mid_epoch = False
    try:
        with catch_signals(run.flag), training.frozen_gc() as freeze:
            for epoch in range(epoch_done + 1, epochs + 1):
                model.train()           # each epoch: a callback may have left it in evaluation mode
                started = time.perf_counter()
                freeze()
                first = step_done if epoch == epoch_done + 1 else 0
                training.begin_epoch(resumed=first > 0)
                mid_epoch = True          # the steps' state is the trainer's until end_epoch
                setup = time.perf_counter() - started
                sums, beta_t = run.train_epoch(epoch, first, partial if first else None)
                steps_done = time.perf_counter()
                training.end_epoch()     # every image seen: retire what never fired; the model holds it all
                mid_epoch = False
                _check_finite(model, opt, epoch, run.last_saved, beta)
                t1 = time.perf_counter()
                sums["seconds"] += setup + (t1 - steps_done)   # an epoch's bookkeeping is training time too
                test = None
                if test_images is not None:
                    with pixel_scale_said():     # fit has said it at its caller's line
                        test = evaluate_elbo(model, test_images, batch_size=batch_size, seed=eval_seed,
                                             beta=beta, binarize=binarize, backend=backend, check_finite=False)
                    _check_test_loss(test, epoch, run.last_saved, opt, beta)
                record = dict(epoch=epoch, steps=epoch * steps,
                              train_loss=sums["loss"] / n_train, train_recon=sums["recon"] / n_train,
                              train_kl=sums["kl"] / n_train,
                              test_loss=None if test is None else test.total,
                              test_recon=None if test is None else test.recon,
                              test_kl=None if test is None else test.kl,
                              train_seconds=sums["seconds"], eval_seconds=time.perf_counter() - t1,
                              beta_start=warmup_beta((epoch - 1) * steps + 1, beta, warmup, steps),
                              beta=beta_t)
                history.append(record)
                run.save(epoch, 0)
                metrics.append(record)       # after the checkpoint: a resume writes any line it lacks
                run.show.summary(record)
                if callback is not None:
                    stop = _stop_asked(callback(record, model))
                    _check_make_up_kept(model, opt, backend, evaluating=test_images is not None)
                    if train_images.dtype.kind == "f":   # changed in place? refused as they would be at the start
                        check_images(train_images, "train_images (after the callback)", model.input_dim,
                                     dtype=model.dtype)
                    _take_images_as_changed(training, train_images, fit_config, saving=checkpoint is not None)
                    _check_finite(model, opt, epoch, run.last_saved, beta, after_callback=True)
                    run.save(epoch, 0)   # again: what the callback set (a learning-rate schedule) resumes too
                    if stop and run.flag.signum is None:     # a signal meanwhile is still reported
                        break
                if run.flag.signum is not None:
                    run.stop(epoch, 0)
    except DivergenceError as e:    # the epochs completed, as TrainingInterrupted carries them
        e.history = history
        raise
    finally:
        if mid_epoch:     # stopped inside an epoch: the model and the optimizer get the steps taken
            training.sync()
        run.show.close()
    return history


def _stop_asked(said):
    """A callback's answer: False (a NumPy one too) stops; None or True goes on; else an error."""
    if said is not None and not isinstance(said, (bool, np.bool_)):
        raise InputTypeError(f"callback must return None, True or False (False stops training), "
                             f"got {reprlib.repr(said)}")
    return said is not None and not said


def _check_make_up_kept(model, opt, backend, evaluating):
    """A callback may change values (``p.data[...]``, ``opt.lr``), not the model's layers or
    parameters: the optimizer, and the fast path, hold the ones training started with. Nor, on
    the fast path, the optimizer's ``step``, which the fused update does not call; nor, when
    ``evaluating`` the test images, the stock terms evaluation computes (``model.kl``, say)."""
    try:
        check_optimizer_params(opt, model)
        if evaluating:
            check_stock_terms(model, "fit(test_images=)")
        if backend == "numba":
            from .fast.supported import TRAINING_METHODS, check_supported
            check_supported(model, TRAINING_METHODS)
    except (InputError, InputTypeError) as e:
        raise InputError(f"the callback changed the model's layers or parameters, which this training cannot "
                         f"follow ({e}); change values in place instead (p.data[...] = ...), or train the new "
                         f"model with a new fit") from e
    if backend == "numba":              # e.g. a step of its own set on the optimizer, which the fast path skips
        from .fast.supported import check_supported_optimizer
        try:
            check_supported_optimizer(opt)
        except InputTypeError as e:
            raise InputTypeError(f"the callback changed the optimizer: {e}") from None


def _take_images_as_changed(training, images, fit_config, saving):
    """After a callback, which may change the training images in place: the checkpoints record
    the images as they are now (a resume is checked against them), and units retired as dead on
    the old ones are proven afresh. Telling takes ~50 ms for 60,000 images, so it is done only
    when there is a checkpoint to record them or a unit retired."""
    dead = training.dead_units()
    if not saving and not (dead is not None and dead["retired"]):
        return
    data = fingerprint(images)
    if data != fit_config["train_data"]:
        fit_config["train_data"] = data
        if dead is not None:
            training.load_dead_units(None)      # start the record afresh, on the images as they are


class _Run:
    """The state of one call to :func:`fit` that the epochs share."""

    def __init__(self, model, opt, training, n, batch_size, beta, warmup, binarize, rngs, checkpoint,
                 fit_config, history, show, metrics, own_optimizer=False):
        self.model, self.opt, self.training, self.n = model, opt, training, n
        self.own_optimizer = own_optimizer      # made by fit: the caller holds no reference to it
        self.batch_size, self.beta, self.warmup, self.binarize = batch_size, beta, warmup, binarize
        self.steps = math.ceil(n / batch_size)
        self.scratch = None      # binarization's uniform draws, made once
        self.rngs, self.checkpoint, self.fit_config = rngs, checkpoint, fit_config
        self.history, self.show, self.metrics = history, show, metrics
        self.flag = StopFlag()
        self.first_step = None   # what a signal during the first step is told that step is doing, if slow
        self.last_saved = None
        self.epoch_start = None

    def train_epoch(self, epoch, first, partial):
        """Steps ``first .. steps-1`` of ``epoch``; returns the epoch's sums and the last beta_t."""
        B, steps, training = self.batch_size, self.steps, self.training
        shuffle = self.rngs["shuffle"]
        # A mid-epoch checkpoint stores the shuffle state at the epoch's start:
        # resuming re-draws the same permutation and skips the steps done.
        self.epoch_start = shuffle.bit_generator.state
        order = shuffle.permutation(self.n)
        # running sums, Python floats (float64): loss, recon, kl (each x batch size), samples, seconds
        s = dict(partial) if partial else dict(loss=0.0, recon=0.0, kl=0.0, n=0, seconds=0.0)
        t0 = time.perf_counter() - s["seconds"]
        beta_t = self.beta
        self.show.start(epoch, first)
        for step in range(first, steps):
            idx = order[step * B:(step + 1) * B]
            self.flag.slow = self.first_step             # said at once if a signal comes in this step
            x = training.batch(idx)
            if self.binarize:
                if self.scratch is None or self.scratch.shape[0] < len(idx):
                    self.scratch = np.empty((min(B, self.n), x.shape[1]), x.dtype)   # B can exceed the data
                if not x.flags.writeable:   # the fast path's batches: binarized in a copy
                    x = np.array(x, order="C")
                binarize_inplace(x, self.rngs["binarize"], self.scratch[:len(idx)])
            beta_t = warmup_beta((epoch - 1) * steps + step + 1, self.beta, self.warmup, steps)
            parts = training.step(x, beta_t)
            self.flag.slow = self.first_step = None
            if not math.isfinite(parts.total) and (epoch, step) == (1, 0) and self.opt.t == 0:   # never trained
                raise DivergenceError(
                    f"the loss of the first batch is {parts.total} (recon {parts.recon}, KL {parts.kl}) before "
                    f"any training step: the model as given makes it (weights that overflow, such as a "
                    f"log-variance whose exp is inf), or the data; nothing was trained")
            if not math.isfinite(parts.total):
                back = (f"take the model back to the last good checkpoint, {self.last_saved}, with "
                        f"npvae.load_checkpoint(path, model)" if self.last_saved else "start again from a new model")
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {step + 1} of {steps}: the loss is "
                    f"{parts.total} (recon {parts.recon}, KL {parts.kl}); this step was not applied, but the steps "
                    f"before it, which the model holds, give this loss; {back}. {_advice(self.opt, beta_t)}")
            n = len(idx)
            s["loss"] += parts.total * n
            s["recon"] += parts.recon * n
            s["kl"] += parts.kl * n
            s["n"] += n
            s["seconds"] = time.perf_counter() - t0
            self.show.update(epoch, step + 1, s["loss"] / s["n"], s["n"], s["seconds"])
            if self.flag.signum is not None and step + 1 < steps:
                self.stop(epoch, step + 1, s)
        return s, beta_t

    def save(self, epoch, step, partial=None):
        """Checkpoint after ``epoch`` complete epochs and ``step`` steps of the next."""
        if self.checkpoint is None:
            return
        states = dict(self.rngs)
        if step:
            states["shuffle"] = self.epoch_start
        try:
            save_checkpoint(self.checkpoint, self.model, self.opt, epoch=epoch, step=step, history=self.history,
                            rngs=states, fit_config=self.fit_config, partial=partial,
                            dead_units=self.training.dead_units())
        except OSError as e:        # (a full disk, a read-only file): its message names the file only
            which = f"epoch {epoch}" + (f", step {step}" if step else "")
            if self.last_saved == self._described(epoch, step):     # the second save: after the callback
                kept = f"{self.last_saved} holds it as it was before the callback"
                which += " as the callback left it"
            else:
                kept = (f"the last good one is {self.last_saved}" if self.last_saved
                        else "no checkpoint was written before it")
            e.add_note(f"the checkpoint of {which} was not written; {kept}")
            raise
        self.metrics.start()        # a fresh run's first checkpoint: the earlier run's metrics go with it
        self.last_saved = self._described(epoch, step)

    def _described(self, epoch, step):
        """The checkpoint as messages name it: its path, epoch and step."""
        return f"{self.checkpoint} (epoch {epoch}" + (f", step {step})" if step else ")")

    def stop(self, epoch, step, sums=None):
        """Save (mid-epoch if ``sums``), report, and raise :class:`TrainingInterrupted`."""
        name = signal.Signals(self.flag.signum).name
        done = epoch - 1 if sums is not None else epoch
        if sums is not None:
            self.training.sync()      # the model and the optimizer hold the steps taken
            self.save(done, step, sums)
        at = f"epoch {epoch}, step {step} of {self.steps}" if sums is not None else f"the end of epoch {epoch}"
        if self.checkpoint is not None:
            msg = f"interrupted by {name} at {at}; checkpoint written to {self.checkpoint}"
            hint = f"; continue with fit(..., resume={os.fspath(self.checkpoint)!r})"
        else:
            msg = f"interrupted by {name} at {at}; no checkpoint path was given, so nothing was saved to disk"
            holders = "the model holds" if self.own_optimizer else "the model and the optimizer hold"
            gone = (". The Adam that fit made is gone, its moments with it: pass optimizer= to keep it, "
                    "or checkpoint= to be able to resume exactly" if self.own_optimizer else "")
            hint = f" ({holders} the steps taken, and this exception's .history the epochs done){gone}"
        self.show.message(msg)
        raise TrainingInterrupted(msg + hint, self.flag.signum, done, step if sums is not None else 0,
                                  None if self.checkpoint is None else os.fspath(self.checkpoint),
                                  self.history)


def _advice(opt, beta):
    """What to try after a divergence."""
    lr = getattr(opt, "lr", None)
    than = f" than lr={lr:g}" if isinstance(lr, numbers.Real) else ""
    weight = f", a smaller KL weight than beta={beta:g}" if beta > 1 else ""
    return f"Try a smaller learning rate{than}{weight}, or check the data"


def _check_test_loss(test, epoch, last_saved, opt, beta):
    """Finite parameters can still make codes that overflow (a huge log-variance): the test
    loss tells, and such a model is no model to save or go on from."""
    if test is not None and not math.isfinite(test.total):
        kept = f"; the last good checkpoint is {last_saved}" if last_saved else ""
        raise DivergenceError(f"training diverged in epoch {epoch}: the test loss after it is {test.total} "
                              f"(recon {test.recon}, KL {test.kl}), though every training step's loss was "
                              f"finite{kept}. {_advice(opt, beta)}")


def _check_optimizer_state(opt):
    """Refused before the first step: an optimizer whose state a diverged run left with inf (an
    inf v stops its parameter for good), or one whose state was edited by hand into another shape
    or a negative v, which would fail part-way or train into nonsense, and not alike on the two paths."""
    fix = "build a new one, or load a good state into it with optimizer.load_state_dict"
    stock = type(opt) in (Adam, SGD)   # one's own (a subclass too) may keep state of its own shape
    for name in opt.state_names:       # read in place (a state dict would copy every moment)
        for i, p in enumerate(opt.params):
            v = opt.state.get(p, {}).get(name)
            if v is None and not stock:         # one's own may make its state at its first step
                continue
            if v is None or (stock and (not isinstance(v, np.ndarray) or v.shape != p.shape)):
                got = f"shape {v.shape}" if isinstance(v, np.ndarray) else "nothing" if v is None else type(v).__name__
                raise InputError(f"optimizer state {name}.{i} must be an array of its parameter's shape {p.shape}, "
                                 f"got {got}; {fix}")
            if not np.isfinite(v).all():
                raise InputError(f"optimizer state {name}.{i} holds NaN or inf (left by a run that diverged?), "
                                 f"so training with this optimizer cannot work; {fix}")
            if name in opt.never_negative and np.any(np.asarray(v) < 0):
                raise InputError(f"optimizer state {name}.{i} has negative values (min {np.min(v):.4g}), but it is "
                                 f"a mean of squares; {fix}")


def _check_finite(model, opt, epoch, last_saved, beta, after_callback=False):
    """Parameters, and the optimizer's state, can turn inf on a step whose loss was still finite
    (or a callback can make them so): catch it before saving. (In float32 a gradient above 1.8e19
    squares to inf in Adam's v, on both back ends, and its parameter never moves again, silently.)"""
    names = {id(p): name for name, p in model.named_parameters()}
    arrays = [(f"parameter {name}", p.data) for name, p in model.named_parameters()]
    arrays += [(f"optimizer state {state}.{i} (of parameter {names.get(id(p), i)})", opt.state[p][state])
               for state in opt.state_names for i, p in enumerate(opt.params)]       # a state dict's names
    for what, a in arrays:
        if not np.isfinite(a).all():
            kept = f"; the last good checkpoint is {last_saved}" if last_saved else ""
            if after_callback:
                raise DivergenceError(f"the callback after epoch {epoch} left NaN or inf in {what}{kept}")
            raise DivergenceError(f"training diverged in epoch {epoch}: {what} holds NaN or inf "
                                  f"after the epoch's last step{kept}. {_advice(opt, beta)}")
