"""Quickstart: train a VAE on MNIST digits for two epochs, sample, save. Usage:

    python examples/quickstart.py [DATA_DIR]     # DATA_DIR: a folder holding the MNIST IDX files

Uses only the MNIST test split (downloaded if missing), cut into 80% train / 20% held out.
"""
import os
import sys

import numpy as np

try:
    import npvae  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npvae import VAE
from npvae.checkpoint import load_model, save_checkpoint
from npvae.data import load_split, split
from npvae.plots import plot_samples
from npvae.train import fit

images, labels = load_split("mnist", "t10k", data_dir=sys.argv[1] if len(sys.argv) > 1 else None)
(train, _), (test, _) = split(images, labels, int(0.8 * len(images)))   # uint8 (N, 784)

model = VAE(784, 400, 20, rng=0)                        # 784-400-20, as in the PyTorch example
history = fit(model, train, test, epochs=2, batch_size=128, lr=1e-3, rng=0)
print(f"test loss (negative ELBO) after 2 epochs: {history[-1]['test_loss']:.1f} nats per image")

save_checkpoint("quickstart.npz", model)                # atomic; reload with load_model
plot_samples(model.sample(64, rng=np.random.default_rng(0)), "quickstart_samples.png")
again = load_model("quickstart.npz")
print("reloaded model reconstructs the same:",
      np.allclose(again.reconstruct(test[:5] / 255.0), model.reconstruct(test[:5] / 255.0)))
