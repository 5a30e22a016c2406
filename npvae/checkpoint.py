"""Checkpoints: one ``.npz`` file, written atomically, read back with every check.

Layout of the zip (``np.savez``, uncompressed, no pickles)::

    model/<parameter name>      e.g. model/encoder.0.weight, one array each
    optimizer/<state key>       the optimizer's state_dict(): t, hyper-parameters, moments
                                ("<moment>.<i>": i counts the model's parameters, in
                                model.parameters() order, whatever order the optimizer
                                lists them in)
    __meta__                    0-d unicode array holding one JSON object:
        format, version         "npvae-checkpoint", 2 (1: no model class in architecture, see below)
        model_config            VAE.config(): input_dim, hidden_dims, latent_dim, dtype
        optimizer               the optimizer's class name, or null
        epoch, step             completed epochs, and steps done in the next one (mid-epoch)
        rng_states              {name: Generator.bit_generator.state}; "model" is the sampler's
        fit_config, history     fit()'s settings and its per-epoch records so far
        partial                 a mid-epoch checkpoint's running sums, else null
        dead_units              fit's record of retired first-layer units (npvae.fast.dead_units),
                                or null; optional (older checkpoints lack it)
        architecture            ["(the model): VAE(784-400-20, dtype=float32)", "encoder: Sequential",
                                "encoder.0: Dense(784 -> 400, dtype=float32)", ...]: the model's
                                class and each sub-module's, with its extra_repr(); optional (older
                                checkpoints lack it, list the sub-modules alone, or their classes alone)

Loading (:func:`load_checkpoint`) never executes code (``allow_pickle=False``,
metadata is JSON) and turns every way a file can be wrong (missing, not a zip,
truncated, bit-flipped, someone else's zip, a missing key, a model of another
shape) into a :class:`~npvae.errors.CheckpointError` naming the file.
"""
import json
import math
import os
import stat
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_write
from .errors import (CheckpointError, CheckpointNotFoundError, DivergenceError, InputError, InputTypeError,
                     NoGeneratorError, StateDictError)
from .model import VAE, check_vae
from .module import Module, Parameter
from .optim import SGD, Adam, Optimizer
from .validate import (check_non_negative_int, check_optimizer_params, check_output_path, check_params_list,
                       warn_backend_argument)

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "load_model", "checkpoint_file", "FORMAT", "VERSION"]

FORMAT = "npvae-checkpoint"
VERSION = 2                 # 2: the architecture begins with the model's class
META_KEY = "__meta__"
MODEL_PREFIX = "model/"
OPTIM_PREFIX = "optimizer/"
_OPTIMIZERS = {"Adam": Adam, "SGD": SGD}
# Bit generators whose state we accept; names are looked up here, never with getattr.
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")}
_CONFIG_KEYS = ("input_dim", "hidden_dims", "latent_dim", "dtype")
# deflate cannot expand more than ~1032:1; anything claiming more is corrupt
_MAX_RATIO = 1032


@dataclass(repr=False)
class Checkpoint:
    """A checkpoint's content, checked by :func:`load_checkpoint`.

    Attributes
    ----------
    path : str
        The file read (for a run folder, its ``checkpoint.npz``), ``~`` expanded.
    model_config : dict
        ``VAE.config()``; :meth:`build_model` makes a VAE from it.
    model_state, optimizer_state : dict of ndarray
        ``state_dict()`` of the model and of the optimizer (None if none was saved).
    optimizer : str or None
        The optimizer's class name.
    epoch, step : int
        Completed epochs, and steps done in the next one (> 0 only mid-epoch).
    history : list of dict
        Per-epoch records of :func:`npvae.train.fit`.
    rng_states : dict
        JSON form of each Generator's state; get one back with :meth:`generator`.
    fit_config, partial : dict or None
        ``fit``'s settings, and a mid-epoch checkpoint's running sums.
    dead_units : dict or None
        ``fit``'s retired units and this epoch's evidence (:mod:`npvae.fast.dead_units`).
    version : int
        The file's format version: :data:`VERSION` (2), or 1 (no model class in ``architecture``).
    architecture : list of str or None
        The saved model's class and layers (:func:`architecture`); None in older checkpoints.
    """

    path: str
    model_config: dict
    model_state: dict
    optimizer: str = None
    optimizer_state: dict = None
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    rng_states: dict = field(default_factory=dict)
    fit_config: dict = None
    partial: dict = None
    dead_units: dict = None
    version: int = VERSION
    architecture: list = None

    def __repr__(self):
        """One line (the arrays, Adam's moments and the streams' states would fill a screen)."""
        records = self.history if isinstance(self.history, list) else []      # one made by hand: anything
        last = records[-1] if records and isinstance(records[-1], dict) else {}
        value = last.get("test_loss")
        loss = f", test_loss={value:.2f}" if isinstance(value, float) else ""    # None without test images
        at = f"epoch={self.epoch}" + (f", step={self.step}" if self.step else "")
        return (f"Checkpoint({self.path!r}, {at}, model={self.model_config}, optimizer={self.optimizer}, "
                f"{len(records)} epoch record(s){loss})")

    def generator(self, name):
        """A new ``np.random.Generator`` in a saved state.

        Parameters
        ----------
        name : str
            A key of :attr:`rng_states`, e.g. ``"shuffle"`` (``fit``'s); ``"model"`` is the sampler's.

        Returns
        -------
        numpy.random.Generator
        """
        if name not in self.rng_states:
            raise CheckpointError(f"{self.path}: no random generator state named {name!r} "
                                  f"(has {sorted(self.rng_states)})")
        return _generator_from_state(self.rng_states[name], self.path, name)

    def check_model(self, model):
        """Check that ``model`` has the saved config and layers.

        Parameters
        ----------
        model : VAE

        Raises
        ------
        CheckpointError
            If it has another config (the differing dimensions are named), class or layers.
        """
        check_vae(model)
        diff = _config_diff(self.model_config, model.config())
        if diff:
            saved = self.model_config["dtype"]
            hint = ("" if len(diff) > 1 or saved == model.config()["dtype"] else     # the dtype alone
                    f". To take its weights into a {model.dtype} model: model.load_state_dict({{k: "
                    f"v.astype(np.{model.dtype}) for k, v in npvae.load_model({self.path!r}).state_dict().items()}}) "
                    f"(and the optimizer's moments converted the same way, or the optimizer started "
                    f"anew: docs/checkpoints.md)")
            raise CheckpointError(f"{self.path}: the checkpoint's model does not match the given model: "
                                  + "; ".join(diff) + hint)
        diff = _layers_diff(self.architecture, model)
        if diff:
            raise CheckpointError(f"{self.path}: the checkpoint's model has another class or other layers "
                                  f"than the given model: {diff}")

    def load_into(self, model=None, optimizer=None):
        """Copy the parameters (and sampler state) into ``model``, the state into ``optimizer``.

        Both are checked first (config, optimizer class and shapes); nothing is
        changed unless everything fits.

        Parameters
        ----------
        model : VAE, optional
            As for :func:`load_checkpoint`, which calls this.
        optimizer : Optimizer, optional
            As for :func:`load_checkpoint`.

        Returns
        -------
        Checkpoint
            This checkpoint.
        """
        path = self.path
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            kind = type(optimizer)
            raise InputTypeError(f"optimizer must be an npvae optimizer (to load the checkpoint's state "
                                 f"into), got {kind.__module__}.{kind.__qualname__}")
        if model is not None:
            self.check_model(model)
        if optimizer is not None:
            check_params_list(optimizer)
            if self.optimizer != type(optimizer).__name__:
                raise CheckpointError(f"{path}: the checkpoint holds {self.optimizer or 'no'} optimizer "
                                      f"state, got {type(optimizer).__name__} to load it into")
            state = self.optimizer_state
            if model is not None:       # saved by the model's parameter order: renumber by the optimizer's
                index = check_optimizer_params(optimizer, model, for_checkpoint="load")
                state = _renumber(state, optimizer, {j: i for i, j in enumerate(index)})
            try:
                optimizer.load_state_dict(state)
            except StateDictError as e:
                order = ("" if model is not None else "; without model=, the optimizer is taken to list the "
                         "parameters in model.parameters() order: if it lists them otherwise, pass the model "
                         "too, and each parameter gets its own state")
                raise CheckpointError(f"{path}: optimizer state does not fit: {e}{order}") from None
        if model is not None:
            model.load_state_dict(self.model_state)
            if "model" in self.rng_states:
                try:
                    rng = model.rng
                except NoGeneratorError:    # a sampler whose Generator was taken away gets the saved one
                    rng = None
                model.rng = restore_generator(rng, self.rng_states["model"], path, "model")
        return self

    def build_model(self, backend=None):
        """A new :class:`VAE` from the saved config, with its parameters and sampler state.

        Parameters
        ----------
        backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error)
            Models no longer carry one.

        Returns
        -------
        VAE
        """
        if backend is not None:
            warn_backend_argument("build_model(backend=...)", backend)
        return _build_model(self)


def _build_model(ckpt):
    """:meth:`Checkpoint.build_model`, one call below both ways in, so its warning points at their caller."""
    model = VAE(**_vae_kwargs(ckpt.model_config))
    if ckpt.architecture is None:       # the earliest files: nothing to check the layers against
        warnings.warn(f"{ckpt.path} records no layers (an npvae from before they were recorded wrote it), so "
                      f"they are taken to be the stock VAE's: if the saved model had layers of its own, build "
                      f"it and load the file into it with load_checkpoint(path, model)", UserWarning, stacklevel=3)
    diff = _layers_diff(ckpt.architecture, model)
    if diff:
        raise CheckpointError(f"{ckpt.path}: saved from a model of another class or with other layers "
                              f"than the stock VAE this rebuilds ({diff}); build that model yourself and load the "
                              f"checkpoint into it with load_checkpoint(path, model)")
    model.load_state_dict(ckpt.model_state)
    if "model" in ckpt.rng_states:
        model.rng = ckpt.generator("model")
    return model


_MODEL_ENTRY = "(the model): "


def architecture(model):
    """The model's class and each sub-module's name, class and settings (its ``extra_repr()``,
    when it has any), e.g. ``["(the model): VAE(784-400-20, dtype=float32)", "encoder: Sequential",
    "encoder.0: Dense(784 -> 400, dtype=float32)", "encoder.1: ReLU", ...]``: what a checkpoint's
    parameters mean (a subclass with a loss of its own, a Tanh where the stock VAE has a ReLU,
    or a layer with another setting, is another model)."""
    entries = []
    for name, m in model.named_modules():
        settings = m.extra_repr()
        entries.append(f"{name + ': ' if name else _MODEL_ENTRY}{_class_name(m, top=not name)}"
                       + (f"({settings})" if settings else ""))
    return entries


def _class_name(module, top):
    """The class's name; a model's class of its own named ``VAE`` is "VAE subclass" (not the
    stock model, whichever module it is imported from: ``__main__`` in a script)."""
    cls = type(module)
    if top and cls.__name__ == "VAE" and (cls.__module__, cls.__qualname__) != ("npvae.model", "VAE"):
        return "VAE subclass"
    return cls.__name__


def _layers_diff(saved, model):
    """'' if ``model`` has the ``saved`` architecture (or none was saved), else the first
    entry that differs, saved against the model's. Checkpoints of earlier versions saved the
    classes alone (no entry has settings, not even a Dense): those are compared by class; and
    before that, the sub-modules alone (not the model's class)."""
    if saved is None:
        return ""
    ours = architecture(model)
    if not (saved and saved[0].startswith(_MODEL_ENTRY)):
        ours = ours[1:]
    if not any("(" in entry for entry in saved):
        ours = [entry.split("(")[0] for entry in ours]
    for a, b in zip(saved + ["nothing"], ours + ["nothing"]):
        if a != b:
            return f"saved {a} where the model has {b}"
    return ""


def _vae_kwargs(config):
    return dict(input_dim=config["input_dim"], hidden_dims=tuple(config["hidden_dims"]),
                latent_dim=config["latent_dim"], dtype=np.dtype(config["dtype"]))


def _generator_from_state(state, path, name):
    bg_name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(bg_name, str) or bg_name not in _BIT_GENERATORS:
        raise CheckpointError(f"{path}: random generator state {name!r} has an unknown bit generator "
                              f"{bg_name!r}; expected one of {sorted(_BIT_GENERATORS)}")
    bg = _BIT_GENERATORS[bg_name]()
    try:
        bg.state = _from_json(state)
    except (ValueError, TypeError, KeyError, OverflowError, IndexError) as e:
        raise CheckpointError(f"{path}: random generator state {name!r} is invalid: {e}") from None
    return np.random.Generator(bg)


def restore_generator(rng, state, path="checkpoint", name="rng"):
    """Put ``rng`` in ``state`` in place if its bit generator is of the saved kind, else a new Generator."""
    if isinstance(rng, np.random.Generator) and type(rng.bit_generator).__name__ == state.get("bit_generator"):
        rng.bit_generator.state = _generator_from_state(state, path, name).bit_generator.state
        return rng
    return _generator_from_state(state, path, name)


def _to_json(value):
    """A bit generator state as JSON: arrays (Philox, MT19937 keys) become tagged integer lists."""
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.integer):
        return int(value)
    return value


def _from_json(value):
    """Undo :func:`_to_json`; only unsigned integer arrays are accepted."""
    if isinstance(value, dict):
        if set(value) == {"__array__", "dtype"}:
            if value["dtype"] not in ("<u4", "<u8", "|u1"):
                raise ValueError(f"unexpected array dtype {value['dtype']!r} in a generator state")
            return np.array(value["__array__"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _rng_state(rng, name):
    if isinstance(rng, np.random.Generator):
        return _to_json(rng.bit_generator.state)
    if isinstance(rng, dict) and rng.get("bit_generator") in _BIT_GENERATORS:
        state = _to_json(rng)
        try:              # what load_checkpoint will do with it: refused now, not then
            _generator_from_state(state, "save_checkpoint", name)
        except CheckpointError as e:
            raise InputError(f"rngs[{name!r}] is not a bit generator state that can be restored "
                             f"({str(e).split(': ', 1)[1]})") from None
        return state
    raise InputTypeError(f"rngs[{name!r}] must be a numpy Generator or its bit_generator.state dict, "
                         f"got {type(rng).__name__}")


# -- saving ------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer=None, *, epoch=0, step=0, history=(), rngs=None,
                    fit_config=None, partial=None, dead_units=None):
    """Write a checkpoint atomically: the old file stays intact until the new one is complete.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, conventionally ``*.npz``. Missing folders above it are created.
    model : VAE
        Its values as they are: inside a loop of :class:`npvae.fast.Trainer` steps, call
        ``trainer.sync()`` first (until then the model and the optimizer hold what it took).
    optimizer : Optimizer, optional
        Its ``state_dict()`` is saved (moments, step count, hyper-parameters). It must
        hold exactly ``model.parameters()``, in any order.
    epoch, step : int
        Completed epochs, and steps already taken in the next epoch (0 at an epoch boundary).
    history : sequence of dict
        Per-epoch records (JSON-serialisable).
    rngs : dict, optional
        ``{name: Generator or bit_generator.state}``; the model's sampler is
        always saved as ``"model"``.
    fit_config, partial, dead_units : dict, optional
        JSON-serialisable training settings, mid-epoch running sums, and
        :meth:`npvae.fast.Trainer.dead_units`.

    Returns
    -------
    str
        ``path`` as written (``~`` expanded).

    Raises
    ------
    DivergenceError
        If a parameter or the optimizer's state holds NaN or inf: a checkpoint is
        never overwritten with a diverged model.
    InputError
        If ``path`` is a folder or cannot be written there (its folder is a file, or read-only),
        or the optimizer holds other parameters than the model's.
    InputTypeError
        If the optimizer is one of your own that does not define ``hyper()`` and ``set_hyper()``,
        or its ``params`` were set to something that is not a list.
    StateDictError
        If an array of Adam's or SGD's state is not shaped and typed as its parameter.
    """
    path = check_output_path(path, "path")
    if path is None:
        raise InputTypeError("path must be a checkpoint file path (str or os.PathLike), got None")
    check_vae(model)
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise InputTypeError(f"optimizer must be an npvae optimizer or None, got {type(optimizer).__name__}")
    check_savable(model, path, optimizer)
    arrays = {}
    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise DivergenceError(f"refusing to save a checkpoint to {os.fspath(path)}: parameter "
                                  f"{name} contains NaN or inf")
        arrays[MODEL_PREFIX + name] = p.data
    if optimizer is not None:
        positions = check_optimizer_params(optimizer, model, for_checkpoint="save")
        in_model_order = _renumber(optimizer.state_dict(), optimizer, positions)
        for key, value in in_model_order.items():
            if not np.isfinite(value).all():
                raise DivergenceError(f"refusing to save a checkpoint to {os.fspath(path)}: optimizer state "
                                      f"{key} contains NaN or inf")
            arrays[OPTIM_PREFIX + key] = value
    if rngs is not None and not isinstance(rngs, dict):
        raise InputTypeError(f"rngs must be a dict of name -> Generator, got {type(rngs).__name__}")
    states = {"model": _to_json(model.rng.bit_generator.state)}
    for name, rng in (rngs or {}).items():
        state = _rng_state(rng, name)
        if name == "model" and state != states["model"]:    # a checkpoint's own rng_states pass
            raise InputError('rngs["model"] is not the model\'s sampler state, which is what is saved under '
                             '"model": give yours another name, or set model.rng')
        states[name] = state
    meta = dict(format=FORMAT, version=VERSION, model_config=model.config(),
                optimizer=None if optimizer is None else type(optimizer).__name__,
                epoch=check_non_negative_int(epoch, "epoch"), step=check_non_negative_int(step, "step"),
                history=_records(history), rng_states=states,
                fit_config=_record(fit_config, "fit_config"), partial=_partial_sums(partial),
                dead_units=_record(dead_units, "dead_units"), architecture=architecture(model))
    try:
        arrays[META_KEY] = np.array(json.dumps(meta, default=_plain_json))
    except (TypeError, ValueError) as e:
        raise InputTypeError(f"history, fit_config, partial and dead_units must hold JSON values "
                             f"(numbers, strings, lists, dicts): {e}") from None
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return os.fspath(path)


def _records(history):
    """``history`` as a list of dicts (what :func:`load_checkpoint` accepts), read once (a
    generator is consumed here)."""
    try:
        records = None if isinstance(history, (str, bytes, dict)) else list(history)
    except TypeError:
        records = None
    if records is None or not all(isinstance(r, dict) for r in records):
        raise InputTypeError(f"history must be a sequence of dicts (one record per epoch), got {history!r:.80}")
    return records


def _record(value, name):
    if value is not None and not isinstance(value, dict):
        raise InputTypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    return value


def _is_number(value):
    """A number JSON holds: an int or a float (NumPy's too), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_finite(value):
    try:
        return math.isfinite(float(value))
    except OverflowError:                   # an int past float's range
        return False


def _partial_sums(partial):
    """``partial`` checked as a load checks it (finite numbers), so no file is written that no
    loader would open."""
    for key, value in (_record(partial, "partial") or {}).items():
        if not _is_number(value) or not _is_finite(value):
            raise InputError(f"partial[{key!r}] must be a finite number (a running sum of an unfinished "
                             f"epoch), got {value!r}: a checkpoint holding it could not be loaded")
    return partial


def _plain_json(value):
    """NumPy numbers and arrays in a record, as JSON takes them."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _renumber(state, optimizer, new_index):
    """``state`` (an optimizer's state dict) with each ``"<moment>.<i>"`` key renamed
    ``"<moment>.<new_index[i]>"``; ``t`` and the hyper-parameters as they are."""
    out = {}
    for key, value in state.items():
        name, _, i = key.rpartition(".")
        if name in optimizer.state_names and i.isdigit() and int(i) < len(new_index):
            key = f"{name}.{new_index[int(i)]}"
        out[key] = value
    return out


# -- loading -----------------------------------------------------------------------
RUN_CHECKPOINT = "checkpoint.npz"   # the name a training run gives its checkpoint


def _look(path):
    """``os.stat(path)``, or None where nothing is; a folder that may not be looked into is a
    ``CheckpointError``, not "no such file" (code that starts afresh on FileNotFoundError would)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from e


def checkpoint_file(path):
    """The checkpoint file ``path`` names, as a str (``~`` expanded): ``path`` itself, or the run
    checkpoint inside it when ``path`` is a folder (a ``CheckpointNotFoundError`` if it holds none)."""
    try:
        path = os.path.expanduser(os.fsdecode(path))     # bytes too, as save_checkpoint takes them
    except TypeError:
        raise InputTypeError(f"path must be a checkpoint file path (str or os.PathLike), "
                             f"got {type(path).__name__}") from None
    st = _look(path)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return path
    inside = os.path.join(path, RUN_CHECKPOINT)
    st = _look(inside)
    if st is None or not stat.S_ISREG(st.st_mode):
        error = CheckpointError if st is not None else CheckpointNotFoundError
        raise error(f"{path} is a folder without a {RUN_CHECKPOINT}: give the checkpoint "
                    f"file itself, or a run folder that holds one")
    return inside


def _read_arrays(path):
    """Every array in the zip, after checking it is a sound zip (CRCs included)."""
    st = _look(path)
    if st is None:
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            size, head = os.fstat(f.fileno()).st_size, f.read(4)
    except OSError as e:           # no permission, an I/O error
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from e
    if head != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not an npvae checkpoint: not a zip/npz file "
                              f"({size} bytes, starts with {head!r})")
    # zipfile and numpy raise a zoo of types on damaged input (BadZipFile,
    # ValueError, EOFError, OSError, NotImplementedError, zlib.error, ...);
    # each means the file is damaged, so each becomes a CheckpointError.
    try:
        with zipfile.ZipFile(path) as zf:
            claimed = sum(info.file_size for info in zf.infolist())
            if claimed > _MAX_RATIO * size + (1 << 20):
                raise CheckpointError(f"{path}: corrupt checkpoint: members claim {claimed} bytes "
                                      f"in a {size}-byte file")
            bad = zf.testzip()                  # reads every member, checks its CRC-32
            if bad is not None:
                raise CheckpointError(f"{path}: corrupt checkpoint: member {bad!r} fails its CRC check")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - see above
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint "
                              f"({type(e).__name__}: {e})") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: not an npvae checkpoint: member {key!r} is not an array")
    return arrays


def _need(cond, path, what):
    if not cond:
        raise CheckpointError(f"{path}: malformed checkpoint metadata: {what}")


def _is_int(v, minimum=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _read_meta(arrays, path):
    raw = arrays.get(META_KEY)
    if raw is None:
        weights = arrays and all(k.endswith((".weight", ".bias")) for k in arrays)
        hint = ("; a state dict saved as .npz loads into a VAE you build: an npvae one with "
                "model.load_state_dict(dict(np.load(path))), a PyTorch one with "
                "npvae.interop.from_torch_state_dict(model, dict(np.load(path)))" if weights else "")
        raise CheckpointError(f"{path}: not an npvae checkpoint (no {META_KEY!r} entry; "
                              f"has {sorted(arrays)[:5]}{'...' if len(arrays) > 5 else ''}){hint}")
    if raw.shape != () or raw.dtype.kind != "U":
        raise CheckpointError(f"{path}: not an npvae checkpoint ({META_KEY!r} is not a 0-d string)")
    try:
        meta = json.loads(str(raw[()]))
    except ValueError as e:
        raise CheckpointError(f"{path}: not an npvae checkpoint (metadata is not JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not an npvae checkpoint (format marker {got!r}, expected {FORMAT!r})")
    version = meta.get("version")
    _need(_is_int(version, 1), path, f"version must be a positive int, got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this npvae "
                              f"reads ({VERSION}); upgrade npvae")
    for key in ("model_config", "optimizer", "epoch", "step", "history", "rng_states", "fit_config", "partial"):
        _need(key in meta, path, f"missing key {key!r}")
    _need(_is_int(meta["epoch"]) and _is_int(meta["step"]), path,
          f"epoch and step must be non-negative ints, got {meta['epoch']!r}, {meta['step']!r}")
    _need(isinstance(meta["history"], list) and all(isinstance(r, dict) for r in meta["history"]),
          path, "history must be a list of objects")
    _need(isinstance(meta["rng_states"], dict), path, "rng_states must be an object")
    meta.setdefault("dead_units", None)
    meta.setdefault("architecture", None)
    arch = meta["architecture"]
    _need(arch is None or (isinstance(arch, list) and all(isinstance(a, str) for a in arch)), path,
          "architecture must be a list of strings or null")
    for key in ("fit_config", "partial", "dead_units"):
        _need(meta[key] is None or isinstance(meta[key], dict), path, f"{key} must be an object or null")
    _need(meta["optimizer"] is None or isinstance(meta["optimizer"], str), path,
          "optimizer must be a class name or null")
    _check_config(meta["model_config"], path)
    return meta


def _check_config(config, path):
    _need(isinstance(config, dict) and set(config) == set(_CONFIG_KEYS), path,
          f"model_config must have exactly the keys {list(_CONFIG_KEYS)}, got "
          f"{sorted(config) if isinstance(config, dict) else type(config).__name__}")
    hidden = config["hidden_dims"]
    ok = (_is_int(config["input_dim"], 1) and _is_int(config["latent_dim"], 1)
          and isinstance(hidden, list) and len(hidden) >= 1 and all(_is_int(h, 1) for h in hidden))
    _need(ok, path, f"model_config sizes must be positive ints, got {config}")
    _need(config["dtype"] in ("float32", "float64"), path, f"model dtype must be float32 or float64, "
                                                            f"got {config['dtype']!r}")


def _check_state_like_parameters(optimizer, model, path):
    """Adam's and SGD's state as :func:`load_checkpoint` reads it: each array shaped and typed as
    its parameter. One put in place by hand (``opt.state[p]["m"] = ...``) may not be, and the file
    could then never be loaded."""
    names = {id(p): name for name, p in model.named_parameters()}
    for state in optimizer.state_names:
        for i, p in enumerate(optimizer.params):
            v = optimizer.state[p][state]
            if not isinstance(v, np.ndarray) or v.shape != p.shape or v.dtype != p.dtype:
                got = f"{v.shape} {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
                raise StateDictError(f"refusing to save a checkpoint to {os.fspath(path)}: the optimizer's state "
                                     f"{state!r} of parameter {names.get(id(p), i)} is {got}, but the parameter is "
                                     f"{p.shape} {p.dtype}, so the file could not be loaded; put back an array "
                                     f"like the parameter (.astype(np.{p.dtype}) converts one)")


def check_savable(model, path, optimizer=None):
    """An InputError, before anything is written, if ``model`` has parameters that a checkpoint
    cannot give back: a layer of your own with a Parameter (a learnable slope, say), or stock
    layers of other widths, depth or dtype than ``model.config()`` says. A checkpoint is read
    against the parameters its config implies, so such a file could never be loaded. An
    InputTypeError if ``optimizer`` (one of your own) cannot say and restore its settings
    (``hyper()`` and ``set_hyper()``, numbers), which a resume needs; StateDictError if Adam's
    or SGD's state is not shaped and typed as its parameters."""
    if optimizer is not None:
        check_params_list(optimizer)
        try:
            hyper = optimizer.hyper()
            if type(optimizer).set_hyper is Optimizer.set_hyper:
                optimizer.set_hyper()           # Optimizer's own: raises, naming what is missing
        except NotImplementedError as e:
            raise InputTypeError(f"cannot checkpoint to {os.fspath(path)}: {e}") from None
        for key, value in hyper.items():        # a file keeps numbers: None, a bool, a name cannot come back
            a = np.asarray(value)
            if a.dtype.kind not in "iuf" or a.ndim > 1:
                raise InputTypeError(f"cannot checkpoint to {os.fspath(path)}: {type(optimizer).__name__}.hyper() "
                                     f"gives {key}={value!r}, but a checkpoint keeps numbers (or a tuple of them), "
                                     f"given back to set_hyper() as floats; return a number for it")
        if type(optimizer) in (Adam, SGD):
            _check_state_like_parameters(optimizer, model, path)     # before an epoch of training, not after
    config = model.config()
    stock, dtype = expected_shapes(config), np.dtype(config["dtype"])
    params = dict(model.named_parameters())
    instead = ("Save model.state_dict() with np.savez and load it with "
               "model.load_state_dict(dict(np.load(file)))")
    extra = [name for name in params if name not in stock]
    if extra:
        raise InputError(f"cannot checkpoint to {os.fspath(path)}: parameter {extra[0]!r} is not one of the "
                         f"stock VAE's that a checkpoint holds: a layer of your own with a Parameter, a Dense "
                         f"added, or a Dense moved from where VAE(...) puts it (encoder.0, encoder.2, ..., "
                         f"the same in the decoder) by a layer put before it. A layer without parameters may "
                         f"take a ReLU's place or follow the last Dense. {instead}")
    for name, shape in stock.items():
        got = params.get(name)
        if got is None or got.shape != shape or got.dtype != dtype:
            found = "nothing" if got is None else f"{got.shape} {got.dtype}"
            raise InputError(f"cannot checkpoint to {os.fspath(path)}: the model's config implies {name} of "
                             f"shape {shape} {dtype}, but the model holds {found} there (a layer replaced "
                             f"by one of another width, depth or dtype), so the checkpoint could never be "
                             f"loaded. {instead}")


def expected_shapes(config):
    """``{parameter name: shape}`` of the VAE a config describes, without building it.

    Mirrors how :class:`npvae.VAE` builds its encoder and decoder: Dense layers at even indices of each
    Sequential, a ReLU between them (the tests check this against a real VAE).
    """
    shapes = {}
    hidden = list(config["hidden_dims"])
    for part, sizes in (("encoder", [config["input_dim"], *hidden, 2 * config["latent_dim"]]),
                        ("decoder", [config["latent_dim"], *hidden[::-1], config["input_dim"]])):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"{part}.{2 * i}.weight"] = (n_in, n_out)
            shapes[f"{part}.{2 * i}.bias"] = (n_out,)
    return shapes


def _model_state(arrays, config, path):
    expected = expected_shapes(config)
    dtype = np.dtype(config["dtype"])
    state = {k[len(MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}
    missing = [n for n in expected if n not in state]
    if missing:
        raise CheckpointError(f"{path}: missing key {MODEL_PREFIX + missing[0]!r}"
                              + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    unexpected = [n for n in state if n not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: unexpected parameter {unexpected[0]!r} for a model with config "
                              f"{config}")
    for name, shape in expected.items():
        a = state[name]
        if a.shape != shape or a.dtype != dtype:
            raise CheckpointError(f"{path}: parameter {name} is {a.shape} {a.dtype}, the saved config "
                                  f"{config} implies {shape} {dtype}")
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {name} contains NaN or inf")
    return {name: state[name] for name in expected}


def _optimizer_state(arrays, meta, model_state, path):
    state = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    name = meta["optimizer"]
    if name is None:
        _need(not state, path, "optimizer arrays present but no optimizer named")
        return None
    names = list(model_state)
    for key, value in state.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            # moments are stored as "<moment>.<parameter index>", in the model's parameter order
            index = key.rsplit(".", 1)[-1]
            of = f", of parameter {names[int(index)]}" if index.isdigit() and int(index) < len(names) else ""
            raise CheckpointError(f"{path}: optimizer state {key} contains NaN or inf ({name}'s state{of}); "
                                  f"the checkpoint cannot be resumed (use an earlier one)")
    cls = _OPTIMIZERS.get(name)
    if cls is not None:
        # Validate keys, shapes, dtypes and hyper-parameters by loading into a throwaway twin.
        twin = cls([Parameter(np.zeros_like(a)) for a in model_state.values()])
        try:
            twin.load_state_dict(state)
        except (StateDictError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: {name} optimizer state does not fit the model: {e}") from None
    return state


def _check_partial(partial, path):
    """A mid-epoch checkpoint's running sums must be finite numbers (they continue the epoch)."""
    for key, value in (partial or {}).items():
        _need(_is_number(value), path, f"partial sum {key!r} must be a number, got {value!r}")
        if not _is_finite(value):
            raise CheckpointError(f"{path}: the unfinished epoch's running sum {key!r} is {value}; the "
                                  f"checkpoint cannot be resumed (use an earlier one)")


def _config_diff(saved, current):
    return [f"{k}: checkpoint {saved[k]!r}, model {current.get(k)!r}"
            for k in _CONFIG_KEYS if saved[k] != current.get(k)]


def load_checkpoint(path, model=None, optimizer=None):
    """Read and check a checkpoint; optionally load it into ``model`` and ``optimizer``.

    Nothing is loaded into ``model``/``optimizer`` unless everything fits.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file, or a run folder that holds one named ``checkpoint.npz``
        (as ``examples/train_mnist.py --out`` writes it).
    model : VAE, optional
        Must have the saved config (else the differing dimensions are named);
        receives the parameters and the sampler's generator state (put into the Generator
        ``model.rng`` holds, in place, if it is of the saved kind (PCG64, say): one you passed
        as ``VAE(rng=g)`` moves with it; one of another kind, or none, is replaced by a new
        Generator).
    optimizer : Optimizer, optional
        Must be of the saved class; receives the saved state. With ``model``, it must hold
        exactly the model's parameters, in any order (each gets its own moments back);
        without, it is taken to list them in ``model.parameters()`` order.

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointNotFoundError
        No file at ``path``, or a folder without ``checkpoint.npz`` (a ``CheckpointError``
        and a ``FileNotFoundError``).
    CheckpointError
        For anything wrong with the file, or a model/optimizer that does not fit it.
    InputError
        ``optimizer`` given with ``model`` but not holding exactly its parameters.
    InputTypeError
        ``path`` not a path, ``model`` not a VAE, or ``optimizer`` not an npvae optimizer (or
        its ``params`` set to something that is not a list).
    """
    path = checkpoint_file(path)
    arrays = _read_arrays(path)
    meta = _read_meta(arrays, path)
    config = meta["model_config"]
    model_state = _model_state(arrays, config, path)
    optim_state = _optimizer_state(arrays, meta, model_state, path)
    for name, state in meta["rng_states"].items():
        _generator_from_state(state, path, name)
    _check_partial(meta["partial"], path)
    ckpt = Checkpoint(path=path, model_config=config, model_state=model_state, optimizer=meta["optimizer"],
                      optimizer_state=optim_state, epoch=meta["epoch"], step=meta["step"],
                      history=meta["history"], rng_states=meta["rng_states"], fit_config=meta["fit_config"],
                      partial=meta["partial"], dead_units=meta["dead_units"], version=meta["version"],
                      architecture=meta["architecture"])
    if model is not None or optimizer is not None:
        ckpt.load_into(model, optimizer)
    return ckpt


def load_model(path, backend=None):
    """A :class:`VAE` rebuilt from a checkpoint's config, parameters and sampler state.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint file, or a run folder holding ``checkpoint.npz``.
    backend : deprecated, ignored (warns; a value no npvae took, "gpu" say, is an error)
        Models no longer carry one. A model here (``load_model(path, model)``) is an
        ``InputTypeError``: :func:`load_checkpoint` loads into a model of one's own.

    Returns
    -------
    VAE
    """
    if isinstance(backend, Module):     # load_model(path, model), meant as load_checkpoint(path, model)
        raise InputTypeError(f"load_model(path) builds a new model and takes none, got a "
                             f"{type(backend).__name__} as its second argument: to load a checkpoint into a "
                             f"model of your own, use load_checkpoint(path, model)")
    if backend is not None:
        warn_backend_argument("load_model(backend=...)", backend)
    return _build_model(load_checkpoint(path))
