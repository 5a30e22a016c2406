"""The fast path trains the VAE as its constructor builds it, and refuses what it would compute wrongly.

The fused step computes the stock VAE from the model's parameters; it does not run the
model's code. A model that computes something else must get a clear error that names the
reference (which runs the model's own code), never a silently different training.
"""
import numpy as np
import pytest

import npvae
from npvae import VAE, Adam, fit, evaluate_elbo, iw_nll
from npvae.errors import InputTypeError
from npvae.fast import Evaluator, Trainer
from npvae.layers import Dense, Sigmoid, Sequential
from npvae.module import Parameter

X = np.random.default_rng(0).random((120, 784)).astype(np.float32)
RUN = dict(epochs=1, batch_size=40, rng=0, progress=False)


class HeavierKL(VAE):
    """A beta-VAE written as a subclass: its own loss."""

    def loss(self, x, beta=1.0, eps=None):
        return super().loss(x, 10.0 * beta, eps)


class WithAHelper(VAE):
    """A subclass that adds a method and computes nothing differently."""

    def describe(self):
        return f"{self.input_dim}-{self.latent_dim}"


class WithAPrior(VAE):
    """A subclass with a parameter of its own (a learned prior's mean)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prior_mu = Parameter(np.zeros(self.latent_dim, self.dtype))


def sigmoid_encoder():
    model = VAE(784, 16, 2, rng=0)
    model.encoder = Sequential(model.encoder[0], Sigmoid(), model.encoder[2])
    return model


def wider_head():
    model = VAE(784, 16, 2, rng=0)
    model.decoder = Sequential(Dense(2, 16, rng=0), npvae.ReLU(), Dense(16, 784, rng=0), npvae.ReLU(),
                               Dense(784, 784, rng=0))
    return model


REFUSED = {
    "own loss": (lambda: HeavierKL(784, 16, 2, rng=0), r"HeavierKL overrides VAE\.loss"),
    "sigmoid for relu": (sigmoid_encoder, r"model\.encoder is Dense -> Sigmoid -> Dense"),
    "extra layers": (wider_head, r"model\.decoder is Dense -> ReLU -> Dense -> ReLU -> Dense"),
    "extra parameter": (lambda: WithAPrior(784, 16, 2, rng=0), "parameters besides its Dense layers"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_fit_on_the_fast_path_refuses_a_model_it_would_compute_wrongly(case):
    make, message = REFUSED[case]
    model = make()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(InputTypeError, match=message + ".*backend='numpy'"):
        fit(model, X, backend="numba", **RUN)
    with pytest.raises(InputTypeError, match=message):
        Trainer(model, Adam(model.parameters()))
    with pytest.raises(InputTypeError, match=message):
        evaluate_elbo(model, X, backend="numba")
    with pytest.raises(InputTypeError, match=message):
        Evaluator(model)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))   # nothing trained


@pytest.mark.parametrize("case", REFUSED)
def test_the_reference_runs_the_models_own_code(case):
    model = REFUSED[case][0]()
    history = fit(model, X, X[:40], backend="numpy", **RUN)
    assert np.isfinite(history[-1]["train_loss"]) and np.isfinite(history[-1]["test_loss"])
    assert np.isfinite(iw_nll(model, X[:10], k=2, backend="numpy"))


def test_a_subclass_that_computes_the_same_runs_on_both_paths_alike():
    runs = {}
    for backend in ("numpy", "numba"):
        model = WithAHelper(784, 16, 2, dtype=np.float64, rng=0)
        runs[backend] = fit(model, X, backend=backend, **RUN)[-1]["train_loss"]
    assert runs["numba"] == pytest.approx(runs["numpy"], rel=1e-10)


def test_the_subclass_loss_is_what_the_reference_trains():
    """The reason for the refusal: the subclass's loss differs from the stock one."""
    stock = fit(VAE(784, 16, 2, rng=0), X, backend="numpy", **RUN)[-1]
    heavy = fit(HeavierKL(784, 16, 2, rng=0), X, backend="numpy", **RUN)[-1]
    assert heavy["train_loss"] == pytest.approx(heavy["train_recon"] + 10 * heavy["train_kl"], rel=1e-6)
    assert heavy["train_loss"] != pytest.approx(stock["train_loss"], rel=1e-4)
