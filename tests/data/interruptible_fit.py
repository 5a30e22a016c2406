"""A small training run for tests/test_signals.py, meant to be interrupted and resumed.

    python tests/data/interruptible_fit.py CHECKPOINT RESULT [--resume] [--backend numba|numpy]

Trains a 784-32-4 VAE on the shipped MNIST sample (800 images, batch 16: 50
steps per epoch) for EPOCHS epochs with a checkpoint at CHECKPOINT, printing
"epoch N" on stdout after each epoch. On SIGINT/SIGTERM fit saves and raises
TrainingInterrupted; this script then exits with 128 + the signal number.
At the end the parameters and the history go to RESULT (an .npz).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import numpy as np  # noqa: E402

from npvae import VAE  # noqa: E402
from npvae.data import load_idx_split  # noqa: E402
from npvae.train import TrainingInterrupted, fit  # noqa: E402

EPOCHS = 12


def train(checkpoint, resume=False, backend="numba"):
    images, _ = load_idx_split(os.path.join(HERE, "mnist-sample"), "t10k")
    model = VAE(784, 32, 4, rng=0)
    history = fit(model, images[:800], images[800:], epochs=EPOCHS, batch_size=16, rng=1, binarize=True,
                  checkpoint=checkpoint, resume=checkpoint if resume else None, progress=False,
                  backend=backend, callback=lambda record, m: print(f"epoch {record['epoch']}", flush=True))
    return model, history


def save_result(path, model, history):
    arrays = {name: p.data for name, p in model.named_parameters()}
    metrics = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]
    np.savez(path, history=np.array(json.dumps(metrics)), **arrays)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("result")
    parser.add_argument("--resume", action="store_true", help="continue from CHECKPOINT")
    parser.add_argument("--backend", choices=["numba", "numpy"], default="numba")
    args = parser.parse_args()
    try:
        model, history = train(args.checkpoint, resume=args.resume, backend=args.backend)
    except TrainingInterrupted as e:
        print(f"interrupted at epoch {e.epoch} step {e.step}", flush=True)
        sys.exit(128 + e.signum)
    save_result(args.result, model, history)
