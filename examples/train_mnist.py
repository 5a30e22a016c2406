"""Train a VAE on MNIST (or Fashion-MNIST) and draw what it learned.

The model and optimizer are the classic PyTorch example's: a 784-400-20 VAE in
float32, Adam with lr 1e-3, batches of 128 (it trains 10 epochs with seed 1; the
defaults here are 20 epochs, seed 0; a float64 model trains in Python: npvae.fit).
Run from the repository root:

    python examples/train_mnist.py                              # MNIST (downloaded if missing)
    python examples/train_mnist.py --dataset fashion-mnist --data-dir /path/to/fashion-mnist
    python examples/train_mnist.py --dataset mnist-test-split   # only the MNIST test set on disk:
                                                                # 8,000 to train, 2,000 held out
    python examples/train_mnist.py --latent-dim 2               # adds the decoded 2-D manifold
    python examples/train_mnist.py --resume runs/<run>          # after Ctrl-C, or to train longer

Everything goes into --out (default runs/<dataset>-<YYYYmmdd-HHMMSS>/): metrics.jsonl
(one line per epoch, then a summary with the importance-weighted NLL), checkpoint.npz,
run.json (the run's settings), reconstruction_before.png, reconstruction_after.png,
samples.png, interpolation.png, loss.png and latent.png. Every argument, data file and
the output folder are checked before anything is written; one run at a time writes
into a folder, and a new run never replaces one there (continue it with --resume).

Resuming (--resume CHECKPOINT, or the run's folder) continues the run with its
own settings. A flag given again with the same value is fine; a different value
is refused, naming both, except for these, which may change:
  --epochs N             the total number of epochs: a larger N extends the run
  --data-dir DIR         where the data are (checked: the same data as before)
  --nll-k, --nll-images  the final evaluation
  --backend              (it goes on correctly, if not to the last bit)
  --no-progress, --no-figures, --debug
  --out NEW              continue in NEW: a copy of the run; its folder is kept
A refused resume changes nothing. Resuming a run that has finished its epochs
computes the NLL again and, without --no-figures, draws its figures again (all
of them, also for a run made with --no-figures: the untrained model's
reconstructions are rebuilt from the run's seed, which the checkpoint tells).
"""
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C or SIGTERM (or Windows' Ctrl-Break) while Python loads NumPy and npvae (the imports
    # below come after this on purpose): end quietly, not with a traceback of an import (SIGHUP's
    # default action already does). cli.run takes over in main.
    for _signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)):
        if _signum is not None:
            signal.signal(_signum, lambda signum, frame: sys.exit(128 + signum))

import argparse
import datetime
import json
import os
import shutil
import time
import warnings
from types import SimpleNamespace

import numpy as np

try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import npvae  # noqa: F401
from npvae import VAE, cli, footprint, jsonio, plots
from npvae.atomic import append_line, atomic_write
from npvae.backend import resolve
from npvae.checkpoint import load_checkpoint
from npvae.data import ENV_VAR, binarize, fingerprint, load_dataset, load_split, locate, split
from npvae.errors import (CheckpointError, DataFileError, DatasetNotFoundError, DivergenceError,
                          InputError, RunFolderInUseError)
from npvae.evaluate import evaluate_elbo, iw_nll
from npvae.progress import Bar, emit
from npvae.runfolder import RunFolder, holder
from npvae.train import fit, warmup_beta

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
INTERPOLATE = {"mnist": (0, 6), "fashion-mnist": (0, 9)}   # from the first test image of class a to b
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "mnist-test-split": "MNIST test-set split"}
MIN_HELD_OUT = 10           # test images the figures need (a row of 10 reconstructions)
DEFAULTS = dict(dataset="mnist", data_dir=None, split=8000, epochs=20, batch_size=128, latent_dim=20,
                hidden_dim=400, lr=1e-3, beta=1.0, warmup=0, binarize=False, seed=0, backend=None,
                nll_k=800, nll_images=None, progress=True, figures=True)
# The run's settings, kept in run.json; a resumed run takes them from there.
SAVED = ("dataset", "data_dir", "split", "epochs", "batch_size", "latent_dim", "hidden_dim", "lr", "beta",
         "warmup", "seed", "backend", "nll_k", "nll_images", "binarize")
# Settings a resumed run may change (see the docstring); the others must match the run's. The last
# two are set by flags that say "no" (--no-progress, --no-figures), and are named so in messages.
CHANGEABLE = ("epochs", "data_dir", "nll_k", "nll_images", "backend", "progress", "figures")
# Files a run writes before it trains (copied ones included); one that fails before its first
# checkpoint removes them again.
START_FILES = ("run.json", "metrics.jsonl", "checkpoint.npz", "reconstruction_before.png")
AFTER_FIGURES = ("reconstruction_after.png", "samples.png", "interpolation.png", "loss.png", "latent.png")
RUN_FILES = START_FILES + AFTER_FIGURES


def say(line):
    emit(sys.stderr, line + "\n")     # a terminal that has closed (nohup, a pipe gone) does not stop the run


def result(line):
    """The run's results, on stdout (``> log.txt`` keeps them); the progress goes to stderr."""
    emit(sys.stdout, line + "\n")


# -- settings ------------------------------------------------------------------------
def build_parser(exit_on_error=True):
    d = DEFAULTS
    doc = __doc__ or "Train a VAE on MNIST.\nResuming: see docs/reliability.md."    # python -OO strips docstrings
    p = cli.ArgumentParser(description=doc.split("\n")[0] + "\nThe model is float32 (a float64 one trains in "
                           "Python: npvae.fit).",
                           epilog=doc[doc.index("Resuming"):] + "\n" + cli.EXIT_STATUS,
                           argument_default=argparse.SUPPRESS,   # unset flags stay unset: see settings()
                           exit_on_error=exit_on_error)
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-test-split"],
                   help=f"mnist-test-split: train on the MNIST test set's first --split images, hold out "
                        f"the rest (for machines with only the test set) (default: {d['dataset']})")
    p.add_argument("--data-dir", type=cli.user_path, metavar="DIR",
                   help=f"folder holding the IDX files (or a <dataset>/ folder with them; mnist/ for "
                        f"mnist-test-split) "
                        f"(default: ${ENV_VAR}, the cache, else download)")
    p.add_argument("--split", type=cli.whole_number(1), metavar="N",
                   help=f"mnist-test-split: train on the first N images, hold out the rest (the "
                        f"file's last 5,000 are harder digits) (default: {d['split']})")
    p.add_argument("--epochs", type=cli.whole_number(1), metavar="N",
                   help=f"total epochs; with --resume, a larger N extends the run (default: {d['epochs']})")
    p.add_argument("--batch-size", type=cli.whole_number(1), metavar="N", help=f"(default: {d['batch_size']})")
    p.add_argument("--latent-dim", type=cli.whole_number(1), metavar="N", help=f"(default: {d['latent_dim']})")
    p.add_argument("--hidden-dim", type=cli.whole_number(1), metavar="N", help=f"(default: {d['hidden_dim']})")
    p.add_argument("--lr", type=cli.learning_rate,
                   help=f"Adam's learning rate (default: {d['lr']})")
    p.add_argument("--beta", type=cli.real_number(0), help=f"KL weight (beta-VAE) (default: {d['beta']})")
    p.add_argument("--warmup", type=cli.whole_number(0), metavar="N",
                   help=f"epochs of linear KL warm-up: each step's KL weight rises from "
                        f"beta/(N*steps per epoch) to --beta, reached at the end of epoch N; the "
                        f"epoch line shows each epoch's ramp, and the test loss always uses "
                        f"--beta (default: {d['warmup']})")
    p.add_argument("--binarize", action="store_true",
                   help="0/1 pixels: the training images drawn anew each epoch, the test images once "
                        "(the test loss then bounds, and the IW NLL estimates, -log p(x))")
    p.add_argument("--seed", type=cli.whole_number(0), metavar="N",
                   help=f"the run's seed (default: {d['seed']}). In Python: model_seed, data_seed = "
                        f"np.random.SeedSequence(N).spawn(2), then VAE(..., rng=np.random.default_rng(model_seed)) "
                        f"and fit(..., rng=np.random.default_rng(data_seed)); samples.png draws from "
                        f"np.random.default_rng(N)")
    p.add_argument("--backend", choices=["numba", "numpy"],
                   help="numba: the fast path; numpy: the plain NumPy reference (default: a resumed run's "
                        "own, else $NPVAE_BACKEND, else numba)")
    p.add_argument("--nll-k", type=cli.whole_number(1), metavar="K",
                   help=f"importance samples per image for the final NLL estimate (default: {d['nll_k']}: "
                        f"one to two minutes for 10,000 test images on 2 cores)")
    p.add_argument("--nll-images", type=cli.whole_number(1), metavar="N",
                   help="the NLL on the first N test images (default: all); their own negative "
                        "ELBO is then printed beside it")
    p.add_argument("--out", type=cli.user_path, metavar="DIR", help="output folder (default: runs/<dataset>-<time>/)")
    p.add_argument("--resume", type=cli.user_path, metavar="CHECKPOINT",
                   help="continue a run: its checkpoint.npz or its folder (see below for what may change)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="print no bars and no per-epoch lines (metrics.jsonl still records every epoch)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="draw no figures (matplotlib is not loaded): the checkpoint, metrics and NLL only; "
                        "a later --resume without it draws them")
    return p


class Resumed:
    """The run that --resume continues: its checkpoint, folder, settings and data record."""

    def __init__(self, path):
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        who = holder(folder) if os.path.isdir(folder) else None
        if who is not None:             # first: a run in its first epoch has no checkpoint yet
            raise RunFolderInUseError(f"--resume {path}: its run is still going ({who}); wait for it to end "
                                      f"or stop it first")
        if not os.path.exists(path):
            raise CheckpointError(f"--resume {path}: no such file or folder")
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.npz")
            if not os.path.isfile(path):
                raise CheckpointError(f"--resume {os.path.dirname(path)} is a folder without a checkpoint.npz")
        self.ckpt = load_checkpoint(path)   # every way the file can be wrong is a CheckpointError
        self.path, self.folder = path, os.path.dirname(os.path.abspath(path))
        c, fc = self.ckpt.model_config, self.ckpt.fit_config
        if fc is None or not {"shuffle", "binarize"} <= set(self.ckpt.rng_states):
            raise CheckpointError(f"{path} was not written by training (fit), so it cannot be resumed")
        if self.ckpt.optimizer != "Adam":
            raise CheckpointError(f"{path} was trained with {self.ckpt.optimizer or 'no'} optimizer; this "
                                  f"program continues runs trained with Adam")
        if c["dtype"] != "float32":
            raise CheckpointError(f"{path} holds a {c['dtype']} model; this program trains float32 models: "
                                  f"continue it in Python: npvae.fit(npvae.load_model({path!r}), images, "
                                  f"epochs=TOTAL, resume={path!r})")
        if len(c["hidden_dims"]) != 1 or c["input_dim"] != 784:
            raise CheckpointError(f"{path} holds a {'-'.join(map(str, [c['input_dim'], *c['hidden_dims']]))}-"
                                  f"{c['latent_dim']} model; this program trains 784-H-d models")
        self.has_run_json = os.path.exists(os.path.join(self.folder, "run.json"))
        record = self._run_json()
        self.data = record.get("data") if isinstance(record.get("data"), dict) else None
        saved = saved_settings(record, os.path.join(self.folder, "run.json"))
        # the checkpoint records what it trained with; run.json the rest
        from_ckpt = dict(latent_dim=c["latent_dim"], hidden_dim=c["hidden_dims"][0])
        trained = ("batch_size", "lr", "beta", "warmup", "binarize", "epochs")
        from_ckpt.update({k: fc[k] for k in trained if k in fc})
        for key, value in from_ckpt.items():
            if key in saved and saved[key] != value and key != "epochs":
                say(f"note: {self.folder}/run.json says {key} {saved[key]}, but the checkpoint was trained "
                    f"with {value}: continuing with {value}")
        if "seed" in saved and seed_matches(saved["seed"], self.ckpt) is False:   # the checkpoint knows better
            say(f"note: {self.folder}/run.json says seed {saved['seed']}, but the checkpoint was not started "
                f"from it: the run's seed is taken as not known")
            del saved["seed"]
        self.settings = {**saved, **from_ckpt}
        self.settings["epochs"] = max(saved.get("epochs", 0), fc.get("epochs", 0), self.ckpt.epoch)

    def uncompared(self):
        """What of the data cannot be checked without run.json: the checkpoint has the training
        images' fingerprint (fit records it), but not the held-out images'."""
        return "the held-out images" if self.ckpt.fit_config.get("train_data") else "the images"

    def _run_json(self):
        path = os.path.join(self.folder, "run.json")
        if not self.has_run_json:
            say(f"note: no run.json beside {self.path}: the settings come from the checkpoint and the flags, "
                f"and {self.uncompared()} cannot be checked against the run's")
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                record = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise InputError(f"{path} cannot be read ({e}); it holds the run's settings: restore it, or "
                             f"remove it to resume with the checkpoint's settings and your flags") from None
        if not isinstance(record, dict):
            raise InputError(f"{path} does not hold the run's settings (a JSON object); restore or remove it")
        return record


def flag(key):
    return "--" + key.replace("_", "-")


def saved_settings(record, path):
    """The settings in a run.json, checked as if they were given on the command line."""
    values = {k: record[k] for k in SAVED if k in record}
    argv = []
    for key, value in values.items():
        if key == "binarize" and isinstance(value, bool):
            argv += ["--binarize"] if value else []
        elif value is not None or key not in ("data_dir", "backend", "nll_images"):    # these may be unset
            argv.append(f"{flag(key)}={value}")
    try:
        parsed = vars(build_parser(exit_on_error=False).parse_args(argv))
    except argparse.ArgumentError as e:
        raise InputError(f"{path} holds a setting no run can have ({e}); restore the run's run.json, or "
                         f"remove it to resume with the checkpoint's settings and your flags") from None
    return {**values, **parsed}


def settings(given, resumed):
    """The run's settings: defaults < the resumed run's own < flags given (refused if they differ)."""
    if resumed is None:
        return {**DEFAULTS, **given}
    own = resumed.settings
    differ = [k for k in given if k in own and k not in CHANGEABLE and given[k] != own[k]]
    if differ:
        def said(k, v):             # as it is written on the command line (--binarize takes no value)
            return (flag(k) if v else f"no {flag(k)}") if isinstance(v, bool) else f"{flag(k)} {v}"
        now = ", ".join(said(k, given[k]) for k in differ)
        was = ", ".join(said(k, own[k]) for k in differ)
        raise InputError(f"cannot resume {resumed.path} with {now}: the run was trained with {was}. A resumed "
                         f"run keeps its settings (only {', '.join(flag(k) for k in CHANGEABLE[:-2])}, --out, "
                         f"--debug, --no-progress and --no-figures may change): drop "
                         f"{'them' if len(differ) > 1 else 'it'}, or start a new run without --resume")
    merged = {**DEFAULTS, **own, **given}
    told = "model" in resumed.ckpt.rng_states      # the checkpoint tells the seed (seed_matches): no guess to note
    unrecorded = ("dataset",) + (() if told else ("seed",)) + (("split",) if merged["dataset"] == "mnist-test-split"
                                                               else ())
    assumed = [k for k in unrecorded if k not in own and k not in given]
    if assumed:                         # no run.json: the checkpoint does not record these
        say(f"note: {resumed.path} does not record {', '.join(flag(k) for k in assumed)}: taken as the defaults "
            f"({', '.join(f'{flag(k)} {DEFAULTS[k]}' for k in assumed)}); give the run's own if it had others")
    ckpt = resumed.ckpt
    if merged["epochs"] < ckpt.epoch or (merged["epochs"] == ckpt.epoch and ckpt.step):
        least = ckpt.epoch + (1 if ckpt.step else 0)
        raise InputError(f"--epochs {merged['epochs']} is the total number of epochs, but {resumed.path} has "
                         f"done {ckpt.epoch}{' and part of the next' if ckpt.step else ''}: ask for "
                         f"--epochs {least} or more")
    return merged


# -- data ----------------------------------------------------------------------------
def suggest_test_split(e, s):
    """Offline with only the MNIST test set at hand: say how to train on it (or on what else)."""
    if s["dataset"] == "mnist":
        try:
            folder = locate("mnist", "t10k", s["data_dir"], download=False)
        except DatasetNotFoundError:
            e.add_note("Offline, train on local copies: --dataset fashion-mnist --data-dir DIR, or, with only "
                       "the MNIST test files, --dataset mnist-test-split --data-dir DIR")
            return
        e.add_note(f"The MNIST test set is in {folder}: to train on it (8,000 images, 2,000 held out) "
                   f"use --dataset mnist-test-split --data-dir {folder}")


def load_data(s):
    """The images, checked: ``train``, ``test``, ``test_labels``, ``kind`` (whose class names), ``source``."""
    try:
        with cli.reading_input("--data-dir"):
            if s["dataset"] == "mnist-test-split":
                source = locate("mnist", "t10k", s["data_dir"], progress=s["progress"])
                images, labels = load_split("mnist", "t10k", data_dir=source)
            else:
                source = locate(s["dataset"], None, s["data_dir"], progress=s["progress"])
                ds = load_dataset(s["dataset"], data_dir=source)
    except DatasetNotFoundError as e:
        suggest_test_split(e, s)
        raise
    if s["dataset"] == "mnist-test-split":
        if len(images) <= MIN_HELD_OUT:         # no --split could do
            raise DataFileError(f"{source} holds {len(images)} images; the split needs at least "
                                f"{MIN_HELD_OUT + 1}: one to train on and {MIN_HELD_OUT} held out")
        held = len(images) - s["split"]
        if held < MIN_HELD_OUT:
            raise InputError(f"--split {s['split']} leaves {max(held, 0)} of the {len(images):,} images held "
                             f"out; the evaluation and figures need at least {MIN_HELD_OUT}: use --split "
                             f"{len(images) - MIN_HELD_OUT} or less")
        (train, _), (test, test_labels) = split(images, labels, s["split"])
        return SimpleNamespace(train=train, test=test, test_labels=test_labels, kind="mnist", source=source)
    if len(ds.train_images) == 0:
        raise DataFileError(f"{source} holds no training images")
    if len(ds.test_images) < MIN_HELD_OUT:
        raise DataFileError(f"{source} holds {len(ds.test_images)} test images; the evaluation and figures "
                            f"need at least {MIN_HELD_OUT}")
    return SimpleNamespace(train=ds.train_images, test=ds.test_images, test_labels=ds.test_labels,
                           kind=s["dataset"], source=source)


def data_record(data):
    """What run.json keeps of the data, so that a resumed run can tell them from others."""
    return dict(train_images=len(data.train), test_images=len(data.test),
                train_fingerprint=fingerprint(data.train), test_fingerprint=fingerprint(data.test),
                source=os.path.abspath(data.source))     # a relative $NPVAE_DATA_DIR: from this folder


def new_run_folder(dataset):
    """``runs/<dataset>-<time>``; ``RunFolder(unique=True)`` makes it, or ``-2``, ``-3``, ... if other
    runs started in the same second."""
    return os.path.join("runs", f"{dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def check_same_data(resumed, now):
    """A resumed run must see the very data it was trained on (the same size is not enough)."""
    n_train = resumed.ckpt.fit_config.get("n_train")
    if n_train is not None and n_train != now["train_images"]:
        other = ("" if resumed.has_run_json else
                 " (without its run.json: or give its --dataset and, for mnist-test-split, --split)")
        raise InputError(f"cannot resume {resumed.path}: it was trained on {n_train:,} images, but these data "
                         f"have {now['train_images']:,} ({now['source']}): point --data-dir at the run's data{other}")
    was, parts = resumed.data, ("train", "test")
    if not was:
        if resumed.has_run_json:        # (without one, its note has said so)
            say(f"note: {resumed.folder}/run.json has no fingerprint of the run's data, so {resumed.uncompared()} "
                f"cannot be checked against the run's")
        if not resumed.ckpt.fit_config.get("train_data"):
            return
        # fit's own record of the training images: refused here, in this program's words
        was = dict(train_fingerprint=resumed.ckpt.fit_config["train_data"], train_images=n_train,
                   source="the checkpoint's record")
        parts = ("train",)
    for part in parts:
        key = f"{part}_fingerprint"
        if was.get(key) != now[key]:
            raise InputError(
                f"cannot resume {resumed.path}: these are not the {part} images it was trained on (fingerprint "
                f"{now[key][:12]}, {now[f'{part}_images']:,} images from {now['source']}; the run had "
                f"{str(was.get(key))[:12]}, {_count(was.get(f'{part}_images'))} images from {was.get('source')}): "
                f"point --data-dir at the run's data")


def _count(n):
    """A count as the messages write it (8,000), or as run.json had it if not a number."""
    return f"{n:,}" if isinstance(n, int) else n


# -- checks of the machine -----------------------------------------------------------
def check_memory(s, n_train):
    batch = min(s["batch_size"], n_train)
    need, reference = (footprint.training_bytes(784, s["hidden_dim"], s["latent_dim"], batch, backend=backend)
                       for backend in (s["backend"], "numpy"))
    have = footprint.available_bytes()
    if have is not None and need > have:
        other = (f", or --backend numpy (slower: it needs about {footprint.format_bytes(reference)})"
                 if s["backend"] == "numba" and reference <= have else "")
        raise InputError(f"a 784-{s['hidden_dim']}-{s['latent_dim']} VAE trained on batches of {batch} needs "
                         f"about {footprint.format_bytes(need)} of memory, but {footprint.format_bytes(have)} is "
                         f"available: choose a smaller --hidden-dim, --latent-dim or --batch-size{other}")


def output_bytes(s, folder=None):
    """What a run writes at most: the checkpoint twice (old and new while it is replaced), figures,
    metrics. A resume in its own ``folder`` replaces files already there: what they hold is counted
    as written, down to one new checkpoint and the figures (the disk was full once, say)."""
    params = footprint.parameter_count(784, s["hidden_dim"], s["latent_dim"])
    checkpoint, small = 3 * 4 * params, 4 << 20    # float32 weights and Adam's two moments; PNGs and JSON
    there = 0 if folder is None else sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
    return max(checkpoint + small, 2 * checkpoint + small - there)


# -- the run folder ------------------------------------------------------------------
def seed_matches(seed, ckpt):
    """Whether the run of ``ckpt`` was started with ``--seed seed``: the model's Generator (PCG64)
    keeps the increment its seed gave it, however far it has drawn. True, False (also for another
    kind of generator: a run started in Python), or None if the checkpoint saved no model stream."""
    saved = ckpt.rng_states.get("model")
    if saved is None:
        return None
    if saved.get("bit_generator") != "PCG64":
        return False
    model_seed = np.random.SeedSequence(seed).spawn(2)[0]
    return np.random.default_rng(model_seed).bit_generator.state["state"]["inc"] == saved["state"]["inc"]


def describe(model):
    return f"{model.input_dim}-{'-'.join(map(str, model.hidden_dims))}-{model.latent_dim}"


def resume_command(checkpoint, figures=True):
    """The command that continues the run; with --no-figures if this one had it (it would draw them)."""
    # absolute, as the checkpoint is: the command is pasted in whatever folder the terminal is in by then
    words = [sys.executable, os.path.abspath(sys.argv[0]), "--resume", os.path.abspath(checkpoint)]
    return cli.shell_command(words if figures else words + ["--no-figures"])


def copy_file(src, dst):
    with open(src, "rb") as f, atomic_write(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def refuse_earlier_run(out, resumed):
    """A new run never replaces one that is there: it is continued with --resume, or left alone."""
    own = os.path.join(out, "checkpoint.npz")
    if not os.path.exists(own):
        if resumed is not None and os.path.samefile(out, resumed.folder):
            return        # the files are this run's: its checkpoint has another name (a copy, say)
        left = [name for name in RUN_FILES if os.path.lexists(os.path.join(out, name))]
        metrics = os.path.join(out, "metrics.jsonl")
        if left and set(left) <= set(START_FILES) and not (os.path.exists(metrics) and os.path.getsize(metrics)):
            # what a run killed (kill -9, power lost) before its first epoch ended leaves: nothing to keep
            for name in left:
                os.remove(os.path.join(out, name))
            say(f"note: removed what a run stopped in its first epoch left in {out}: {', '.join(left)}")
            return
        if left:          # a run whose checkpoint was removed: its results are still worth keeping
            raise InputError(f"--out {out} holds files of an earlier run ({', '.join(left)}) but no "
                             f"checkpoint.npz to continue it from; this run would replace them: choose "
                             f"another --out, or remove those files to start over there")
        return
    if resumed is None:
        raise InputError(f"--out {out} already holds a run (checkpoint.npz): continue it with --resume {out}, "
                         f"or choose another --out (remove that folder to start it over)")
    if not os.path.samefile(own, resumed.path):     # another run's checkpoint copied in, or this one's, older
        raise InputError(f"--resume {resumed.path}: {out} holds another checkpoint, checkpoint.npz (of another run, "
                         f"or of a resume of this one), which this one would replace: continue that one with "
                         f"--resume {out}, or this one in a folder of its own with --out NEW")


def start_folder(folder, resumed, elsewhere):
    """Make ``folder`` hold this run's start: the resumed run copied in, or an earlier run's files gone."""
    if folder.stale:
        say(f"note: took over the lock of a run that ended without releasing it ({folder.stale})")
    if folder.swept:
        say(f"note: removed {len(folder.swept)} temporary file(s) a killed run left: {', '.join(folder.swept)}")
    if elsewhere:
        copy_file(resumed.path, folder.file("checkpoint.npz"))
        for name in ("metrics.jsonl", "reconstruction_before.png"):
            if os.path.exists(os.path.join(resumed.folder, name)):
                copy_file(os.path.join(resumed.folder, name), folder.file(name))
        say(f"continuing the run of {resumed.folder} in {folder.path} (the original folder is left as it was)")


def main(argv=None):
    # -- settings, data and machine: all checked before anything is written ---------------
    given = vars(build_parser().parse_args(argv))
    out, resume = given.pop("out", None), given.pop("resume", None)
    given.pop("debug", None)
    resumed = Resumed(resume) if resume is not None else None
    s = settings(given, resumed)
    if "split" in given and s["dataset"] != "mnist-test-split":
        raise InputError(f"--split applies to --dataset mnist-test-split only, not to --dataset {s['dataset']}")
    if s["data_dir"] == "":
        raise InputError("--data-dir must name a folder, got ''")
    if s["data_dir"] is not None:
        s["data_dir"] = os.path.abspath(s["data_dir"])      # run.json must work from any folder
    try:
        data = load_data(s)
    except DatasetNotFoundError as e:     # on a resume, leaving --data-dir out means run.json's folder
        if resumed is None:
            raise
        if s["data_dir"] is None:         # found without --data-dir ($NPVAE_DATA_DIR, the cache)
            found = (resumed.data or {}).get("source")
            if isinstance(found, str):
                e.add_note(f"This run found its data in {found} (its run.json): give --data-dir with that "
                           f"folder, or one that holds the same data")
            raise
        where = "--data-dir" if "data_dir" in given else "its data folder"
        source = "" if "data_dir" in given else " (from its run.json)"
        origin = "--data-dir" if "data_dir" in given else "run.json's data_dir"
        raise InputError("\n".join([
            f"cannot resume {resumed.path}: the {e.dataset} files are not found in {where} {s['data_dir']}{source}:",
            *cli.places_searched(e, data_dir=origin),
            "give --data-dir with the folder that holds the run's data (the same data: their fingerprint is "
            "checked)"])) from e
    record = data_record(data)
    if resumed is not None:
        check_same_data(resumed, record)
    # --backend, else the run's own (a resume keeps it: its checkpoint's, else its run.json's), else
    # $NPVAE_BACKEND or numba; run.json records it, and a bad $NPVAE_BACKEND is refused before
    # anything is written
    own = None if resumed is None else ((resumed.ckpt.fit_config or {}).get("backend")
                                        or resumed.settings.get("backend"))
    s["backend"] = resolve(given.get("backend"), resumed=own, flag="--backend")
    if resumed is not None and own is None and given.get("backend") is None:
        say(f"note: the run records no back end (an older npvae made it): it goes on with {s['backend']}; "
            f"choose with --backend")
    check_memory(s, len(data.train))
    # A resume knows the run's seed if the checkpoint's model stream says so (run.json may be gone);
    # from an older kind of checkpoint, if run.json or --seed gives it
    matched = None if resumed is None else seed_matches(s["seed"], resumed.ckpt)
    seed_known = resumed is None or bool(matched) or (matched is None and ("seed" in resumed.settings
                                                                          or "seed" in given))
    if matched is False and "seed" in given and "seed" not in resumed.settings:
        raise InputError(f"--seed {given['seed']} is not the seed of {resumed.path}: its model was not started "
                         f"from it; leave --seed out, or give the run's own (a run started in Python with a "
                         f"Generator of its own has none)")
    # One seed, two independent streams: initial weights (then the sampler's noise), and shuffling.
    model_seed, data_seed = np.random.SeedSequence(s["seed"]).spawn(2)
    model = VAE(784, s["hidden_dim"], s["latent_dim"], rng=np.random.default_rng(model_seed))
    # without --out the messages name the folder as the program chose it, and --out as the way out
    if out is None and resumed is not None:
        option, instead = "the run's folder", "continue it in another folder with --out NEW"
    elif out is None:
        option, instead = "the run folder", "choose one with --out DIR"
    else:
        option, instead = "--out", "choose another folder"
    named_here = out is None and resumed is None        # a new folder of our naming, not the user's
    if out is None:
        out = resumed.folder if resumed else new_run_folder(s["dataset"])
    elsewhere = resumed is not None and not (os.path.isdir(out) and os.path.samefile(out, resumed.folder))
    cli.check_output_folder(out, option, output_bytes(s, folder=None if resumed is None or elsewhere else out),
                            files=RUN_FILES, instead=instead)      # a folder named samples.png: before training
    if elsewhere and os.path.exists(os.path.join(out, "checkpoint.npz")):
        raise InputError(f"--out {out} already holds a run (checkpoint.npz); to continue {resumed.path} "
                         f"elsewhere, choose a new or empty folder")
    say(f"{s['dataset']}: {len(data.train)} training images, {len(data.test)} test images")
    say(f"model: {describe(model)}, {model.dtype}, backend {s['backend']}")
    if s["batch_size"] > len(data.train):       # allowed, but likely a slip: say what it means
        say(f"note: --batch-size {s['batch_size']} is more than the {len(data.train)} training images: "
            f"each epoch is one step over all of them")
    if resumed is not None and resumed.ckpt.epoch == s["epochs"] and not resumed.ckpt.step:
        to_do = "drawing its figures and estimating" if s["figures"] else "estimating"
        epochs = f"{s['epochs']} epoch{'s' if s['epochs'] > 1 else ''}"
        say(f"the run has done its {epochs}: {to_do} its NLL (ask for more with --epochs)")

    # -- the run folder: locked, a killed run's leftovers swept, this run's settings saved --
    with RunFolder(out, "--out", unique=named_here, files=RUN_FILES) as folder:
        out = folder.path                   # another run may have taken the name meanwhile: this is ours
        refuse_earlier_run(out, resumed)    # under the lock: a run still going is reported as such
        run_json = folder.file("run.json")
        in_place = resumed is not None and not elsewhere
        kept = None                         # the run's own run.json, put back if fit refuses to resume
        checkpoint = folder.file("checkpoint.npz")
        checkpoint_found = NOT_YET          # the checkpoint as training found it: a refusal leaves it so
        if in_place and os.path.exists(run_json):
            with open(run_json, "rb") as f:
                kept = f.read()
        try:
            start_folder(folder, resumed, elsewhere)
            settings_kept = [k for k in SAVED if k != "seed" or seed_known]     # a seed not known is not recorded
            with atomic_write(run_json, "w") as f:
                f.write(jsonio.dumps({**{k: s[k] for k in settings_kept}, "data": record}, indent=2) + "\n")
            say(f"writing to {out}")
            resume_from = None if resumed is None else checkpoint if elsewhere else resumed.path
            # the untrained model's reconstructions: a resume rebuilds that model from the run's seed
            draw_before = s["figures"] and seed_known
            if s["figures"] and not seed_known:     # samples.png draws from the seed too: not from a guessed one
                assumed = "" if "seed" in given else ", the default"
                why = (f"its checkpoint was not started from --seed {s['seed']}{assumed}" if matched is False else
                       "no run.json records it, and its checkpoint cannot tell")
                stale = "; the one there is left as drawn before" if os.path.exists(folder.file("samples.png")) else ""
                undrawn = [f"samples.png (drawn from the seed{stale})"]
                if not os.path.exists(folder.file("reconstruction_before.png")):
                    undrawn.append("reconstruction_before.png (the untrained model's)")
                say(f"note: the run's --seed is not known ({why}): {' and '.join(undrawn)} "
                    f"{'is' if len(undrawn) == 1 else 'are'} not drawn; give --seed if it had one")
            checkpoint_found = file_state(checkpoint)
            history, before = train(s, folder, model, data_seed, resume_from, data, draw_before)
        except BaseException as e:
            # refused (status 2) before training wrote anything; a write refused later keeps what it trained
            refused = cli.exit_code(e) == cli.EXIT_USAGE and checkpoint_found in (NOT_YET, file_state(checkpoint))
            if in_place:
                if refused and kept is None:
                    os.remove(run_json)
                elif refused:
                    with atomic_write(run_json, "wb") as f:
                        f.write(kept)
            elif refused or not os.path.exists(checkpoint):
                folder.discard(START_FILES)   # nothing worth keeping: a failed start leaves nothing behind
            raise
        # the training is saved from here on: whatever fails below keeps it, and says how to finish
        draw_and_evaluate(s, folder, model, history, before, data, seed_known)
    return 0


NOT_YET = "not yet"     # a checkpoint's state before training has begun


def file_state(path):
    """``(inode, mtime)`` of the file at ``path``, or None: an atomic write changes the inode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


# -- training, figures, evaluation ---------------------------------------------------
def images_shown(data, binarized):
    """The ten test images the reconstruction figures show, as the model takes them: with
    --binarize, the 0/1 pixels the test loss is computed on (evaluate_elbo binarizes with its
    own stream, default_rng([seed, 1]), and fit evaluates with seed 0)."""
    x = data.test[:10].astype(np.float32) / 255
    return binarize(x, np.random.default_rng([0, 1])) if binarized else x


def train(s, folder, model, data_seed, resume_from, data, draw_before):
    """fit, with what a stop should say; the history, and the untrained model's reconstructions (or None)."""
    checkpoint = folder.file("checkpoint.npz")
    # Reconstructions of the untrained model now (resuming: the same model, rebuilt from the seed),
    # drawn after training: matplotlib (about 30 MB) is loaded once the training images are let go.
    before = model.reconstruct(images_shown(data, s["binarize"])) if draw_before and not os.path.exists(
        folder.file("reconstruction_before.png")) else None
    if s["warmup"] > s["epochs"] and s["beta"] > 0:     # fit warns in Python's words; say it in the flags' ones
        steps = -(-len(data.train) // s["batch_size"])
        say(f"note: --warmup {s['warmup']} is longer than --epochs {s['epochs']}: the KL weight ends at "
            f"{warmup_beta(s['epochs'] * steps, s['beta'], s['warmup'], steps):.3g}, not --beta {s['beta']:g} "
            f"(--resume with more --epochs continues the ramp)")
        warnings.filterwarnings("ignore", message=r"warmup=\d+ epochs is longer", category=UserWarning)
    # check_same_data compared the run's data by run.json (or said it could not): fit need not say it again
    warnings.filterwarnings("ignore", message=r".* holds no fingerprint of the images", category=UserWarning)
    found = file_state(checkpoint)
    try:
        history = fit(model, data.train, data.test, epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                      beta=s["beta"], warmup=s["warmup"], binarize=s["binarize"],
                      rng=np.random.default_rng(data_seed), checkpoint=checkpoint, resume=resume_from,
                      metrics_path=folder.file("metrics.jsonl"), progress=s["progress"], backend=s["backend"])
    except (KeyboardInterrupt, OSError, MemoryError, InputError) as e:  # Ctrl-C, SIGTERM, a full disk, ...
        # (an InputError is a refusal: worth resuming only if training got as far as a checkpoint)
        if os.path.exists(checkpoint) and (not isinstance(e, InputError) or file_state(checkpoint) != found):
            e.add_note(f"to continue{'' if isinstance(e, KeyboardInterrupt) else ' once that is fixed'}, run:")
            e.add_note("  " + resume_command(checkpoint, s["figures"]))
        raise
    except DivergenceError as e:
        if resume_from is None:
            # past a checkpoint the folder keeps the run (resumable, with its own --lr): another is needed
            elsewhere = (f" and another --out ({folder.path} keeps this run, as far as its checkpoint)"
                         if os.path.exists(checkpoint) and not folder.unique else "")   # unique: a new one anyway
            beta = f" (or a smaller --beta than {s['beta']:g})" if s["beta"] > 1 else ""
            e.add_note(f"to try a smaller learning rate, run again with e.g. --lr {s['lr'] / 10:g}{beta}{elsewhere}")
        else:
            e.add_note(f"a resumed run keeps its learning rate: to try a smaller one, start a new run, "
                       f"e.g. with --lr {s['lr'] / 10:g}")
        raise
    data.train = None  # not needed any more: keeps the peak memory of what follows down
    return history, before


def draw_and_evaluate(s, folder, model, history, before, data, seed_known):
    """The figures (samples.png only from a known seed), then the test loss and NLL; a failure says
    how to finish (the training is saved)."""
    left_to_do = "to draw the figures and compute the NLL" if s["figures"] else "to compute the NLL"
    to_draw = s["figures"]          # what the command that finishes the run should draw
    try:
        if s["figures"]:
            say("drawing the figures ...")
            draw_figures(s, folder, model, history, before, data, seed_known)
            left_to_do, to_draw = "the figures are drawn; to compute the NLL", False
        else:
            note_figures_left(folder, len(history), seed_known)
        evaluate(s, folder, model, history, data)
    except BaseException as e:      # Ctrl-C (wrapped, if it landed in matplotlib's import), a full disk, a bug ...
        interrupted = cli.interruption(e)
        if interrupted or isinstance(e, Exception):
            checkpoint = folder.file("checkpoint.npz")
            then = "" if interrupted else " once that is fixed"     # (a bug's note too: the run is kept)
            e.add_note(f"the training is complete and saved in {checkpoint}; {left_to_do}{then}, run:")
            e.add_note("  " + resume_command(checkpoint, to_draw))
        raise


def note_figures_left(folder, epochs, seed_known):
    """--no-figures in a run folder that holds figures older than its checkpoint (of an earlier
    epoch): they are left as they were; say so (and that samples.png needs the run's --seed)."""
    saved = os.path.getmtime(folder.file("checkpoint.npz"))
    left = [name for name in AFTER_FIGURES
            if os.path.exists(folder.file(name)) and os.path.getmtime(folder.file(name)) < saved]
    if left:
        seed = "" if seed_known or "samples.png" not in left else " (samples.png only if given the run's --seed)"
        say(f"note: --no-figures: {', '.join(left)} in {folder.path} are left as drawn before; a resume "
            f"without --no-figures draws them after epoch {epochs}{seed}")


def draw_figures(s, folder, model, history, before, data, seed_known):
    out, names, x_show = folder.file, CLASS_NAMES[data.kind], images_shown(data, s["binarize"])
    show = x_show if s["binarize"] else data.test[:10]         # the images the model reconstructs
    shown = "Binarized test images" if s["binarize"] else "Test images"
    if before is not None:
        plots.plot_reconstructions(show, before, out("reconstruction_before.png"),
                                   title=f"{shown} (top) and reconstructions by the untrained model")
    plots.plot_reconstructions(show, model.reconstruct(x_show), out("reconstruction_after.png"),
                               title=f"{shown} (top) and reconstructions after {len(history)} "
                                     f"epoch{'' if len(history) == 1 else 's'}")
    if seed_known:                  # np.random.default_rng(--seed), as --help says
        plots.plot_samples(model.sample(64, rng=np.random.default_rng(s["seed"])), out("samples.png"),
                           title=f"64 samples decoded from z ~ N(0, I) (d = {s['latent_dim']})")
    a, b = INTERPOLATE[data.kind]
    if np.isin([a, b], data.test_labels).all():
        first_a, first_b = (np.flatnonzero(data.test_labels == c)[0] for c in (a, b))
        frames = model.interpolate(data.test[first_a] / 255.0, data.test[first_b] / 255.0, steps=9)
        plots.plot_interpolation(frames, out("interpolation.png"),
                                 title=f"Latent interpolation from the first test {names[a]} (left) to the first "
                                       f"test {names[b]} (right)\ndecode (1 \u2212 t)\u00b7\u03bc(left) + "
                                       f"t\u00b7\u03bc(right), \u03bc: the encoder's mean")
    else:
        missing = [names[c] for c in (a, b) if c not in data.test_labels]
        say(f"note: no test image of class {' or '.join(missing)}: interpolation.png is not drawn")
    plots.plot_loss(history, out("loss.png"), title=f"VAE {describe(model)} on {TITLES[s['dataset']]}")
    mu = np.concatenate([model.encode(data.test[i:i + 1000].astype(np.float32) / 255)[0]
                         for i in range(0, len(data.test), 1000)])
    plots.plot_latent(mu, data.test_labels, out("latent.png"), class_names=names, model=model,
                      title=f"Latent means \u03bc of the {len(mu):,} test images, {TITLES[s['dataset']]}")


def estimate_nll(model, images, k, binarize, progress, backend):
    """The importance-weighted NLL, with a progress bar."""
    bar = Bar(f"NLL (k={k})", len(images), "images", enabled=progress, log_every=15.0)
    try:
        return iw_nll(model, images, k=k, binarize=binarize, backend=backend, progress=lambda done, _: bar.update(done))
    finally:
        bar.close()                  # also on Ctrl-C: what follows starts on a line of its own


def evaluate(s, folder, model, history, data):
    """The test loss and the NLL (last: it takes a while), then the summary line of metrics.jsonl.

    ``test_loss`` is recon + beta * KL, as in the epoch records; ``test_neg_elbo`` is recon + KL,
    the negative ELBO (the same number when beta is 1); ``nll_images_neg_elbo`` is that of the
    NLL's images alone when ``--nll-images`` takes fewer than all (else null)."""
    test = evaluate_elbo(model, data.test, batch_size=s["batch_size"], beta=s["beta"], binarize=s["binarize"],
                         backend=s["backend"])
    neg_elbo = test.recon + test.kl
    n_nll = min(s["nll_images"] or len(data.test), len(data.test))
    which = f"{n_nll}" if n_nll == len(data.test) else f"the first {n_nll} of {len(data.test)}"
    say(f"importance-weighted NLL: k={s['nll_k']} samples on {which} test images ...")
    t0 = time.perf_counter()
    nll = estimate_nll(model, data.test[:n_nll], s["nll_k"], s["binarize"], s["progress"], s["backend"])
    seconds = time.perf_counter() - t0
    subset = None                   # the NLL's images' own negative ELBO, to set beside it
    if n_nll < len(data.test):
        part = evaluate_elbo(model, data.test[:n_nll], batch_size=s["batch_size"], binarize=s["binarize"],
                             backend=s["backend"])
        subset = part.recon + part.kl
    peak = footprint.peak_rss_bytes()            # of this process alone, not of what started it
    peak_rss_mb = None if peak is None else round(peak / 2**20, 1)
    summary = dict(summary=True, epochs=len(history), test_loss=test.total, test_recon=test.recon,
                   test_kl=test.kl, test_neg_elbo=neg_elbo, iw_nll=nll, nll_k=s["nll_k"], nll_images=n_nll,
                   nll_images_neg_elbo=subset, nll_seconds=seconds, peak_rss_mb=peak_rss_mb)
    append_line(folder.file("metrics.jsonl"), jsonio.dumps(summary))
    loss = (f"test loss (negative ELBO) {neg_elbo:.2f} nats" if s["beta"] == 1 else
            f"test loss (recon + {s['beta']:g} KL) {test.total:.2f} nats, negative ELBO {neg_elbo:.2f}")
    took = f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    result(f"{loss}; IW NLL (k={s['nll_k']}, {which} images) {nll:.2f} nats in {took}")
    if subset is not None:       # the IW NLL is set beside the ELBO of its own images, not of all
        result(f"  negative ELBO of those {n_nll} images {subset:.2f} nats (the IW NLL is at most this, on average)")
    if not s["binarize"]:        # a Bernoulli of grey levels is no density over images
        result("  grey-level pixels: compare these only between runs on the same data; "
               "they are not log-likelihoods (see --binarize)")
    memory = "" if peak_rss_mb is None else f" (peak memory {peak_rss_mb:.0f} MB)"
    written = "figures, metrics and checkpoint" if s["figures"] else "metrics and checkpoint (no figures)"
    result(f"done: {written} in {folder.path}{memory}")


if __name__ == "__main__":
    cli.run(main, then_exit=True)
