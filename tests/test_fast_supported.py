"""The fast path trains the VAE as its constructor builds it, and refuses what it would compute wrongly.

The fused step computes the stock VAE from the model's parameters; it does not run the
model's code. A model that computes something else must get a clear error that names the
reference (which runs the model's own code), never a silently different training.
"""
import types

import numpy as np
import pytest

import npvae
from npvae import VAE, Adam, fit, evaluate_elbo, iw_nll
from npvae.errors import InputTypeError
from npvae.fast import Evaluator, Trainer
from npvae.layers import Dense, Sigmoid, Sequential
from npvae.losses import KL
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


class NamingItsOwn(VAE):
    """A subclass that names VAE's own methods as its own: the same code."""
    loss, backward, encode = VAE.loss, VAE.backward, VAE.encode


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


class OwnEncode(VAE):
    """A subclass whose encoder output is post-processed: evaluation runs encode."""

    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu, logvar - 1.0


class ClippedBackward(VAE):
    """A subclass whose backward clips the gradients: training runs backward."""

    def backward(self):
        out = super().backward()
        for p in self.parameters():
            np.clip(p.grad, -1e-3, 1e-3, out=p.grad)
        return out


class Doubled(Sequential):
    """A Sequential that computes something else of the same layers."""

    def forward(self, x):
        return 2 * super().forward(x)

    def backward(self, grad_out):
        return super().backward(2 * grad_out)


def doubled_encoder():
    model = VAE(784, 16, 2, rng=0)
    model.encoder = Doubled(*model.encoder.layers)
    return model


def loss_on_the_instance():
    model = VAE(784, 16, 2, rng=0)
    model.loss = lambda x, beta=1.0, eps=None: VAE.loss(model, x, 10.0 * beta, eps)
    return model


def relu_leaking_on_the_instance(part="encoder"):
    model = VAE(784, 16, 2, rng=0)
    seen = {}

    def forward(x):
        seen["x"] = x
        return np.where(x > 0, x, 0.5 * x)

    relu = getattr(model, part)[1]
    relu.forward = forward                  # on the object, not the class: a leaky ReLU
    relu.backward = lambda grad_out: np.where(seen["x"] > 0, grad_out, 0.5 * grad_out)
    return model


def kl_doubled_on_the_instance():
    model = VAE(784, 16, 2, rng=0)
    kl = model.kl
    model.kl.forward = lambda h: 2.0 * KL.forward(kl, h)
    return model


def sampler_set_on_the_instance():
    model = VAE(784, 16, 2, rng=0)
    stock = model.sampler.forward
    model.sampler.forward = lambda h, eps=None: 0.5 * stock(h, eps)
    return model


def bce_doubled_on_the_instance():
    model = VAE(784, 16, 2, rng=0)
    stock = model.bce.forward
    model.bce.forward = lambda logits, x: 2.0 * stock(logits, x)
    return model


def relu_backward_alone_on_the_instance():
    model = VAE(784, 16, 2, rng=0)
    stock = model.encoder[1].backward
    model.encoder[1].backward = lambda grad_out: np.clip(stock(grad_out), -1e-3, 1e-3)   # clipped
    return model


class GradientsKept(VAE):
    """A subclass whose zero_grad keeps the gradients (accumulating them): the reference calls it."""

    def zero_grad(self):
        pass


def parameter_zero_grad_on_the_object():
    model = VAE(784, 16, 2, rng=0)
    model.decoder[2].weight.zero_grad = lambda: None         # keeps this weight's gradients
    return model


def tied_weights():
    model = VAE(784, 16, 2, rng=0)
    model.decoder[2].weight.data = model.encoder[0].weight.data.T     # a writable view: allowed
    return model


# what each model changes, and whether training and evaluation on the fast path refuse it
CASES = {
    "own loss": (lambda: HeavierKL(784, 16, 2, rng=0), r"HeavierKL overrides VAE\.loss", True, False),
    "loss set on the instance": (loss_on_the_instance, r"model\.loss is set on the model itself", True, False),
    "own encode": (lambda: OwnEncode(784, 16, 2, rng=0), r"OwnEncode overrides VAE\.encode", False, True),
    "own backward": (lambda: ClippedBackward(784, 16, 2, rng=0), r"ClippedBackward overrides VAE\.backward",
                     True, False),
    "a Sequential of its own": (doubled_encoder, r"model\.encoder is Doubled, but the fast path computes "
                                                 r"Dense\(784, 16\) -> Dense\(16, 4\)", True, True),
    "sigmoid for relu": (sigmoid_encoder, r"model\.encoder is Dense -> Sigmoid -> Dense", True, True),
    "a ReLU's own code on the object": (relu_leaking_on_the_instance,
                                        r"model\.encoder\.1\.forward is set on the ReLU itself", True, True),
    "the KL's own code on the object": (kl_doubled_on_the_instance, r"model\.kl\.forward is set on the KL itself",
                                        True, False),
    "the sampler's own code on the object": (sampler_set_on_the_instance,
                                             r"model\.sampler\.forward is set on the Sampler itself", True, False),
    "the BCE's own code on the object": (bce_doubled_on_the_instance,
                                         r"model\.bce\.forward is set on the BCEWithLogits itself", True, False),
    "a ReLU's own backward alone": (relu_backward_alone_on_the_instance,
                                    r"model\.encoder\.1\.backward is set on the ReLU itself", True, True),
    "a decoder ReLU's own code": (lambda: relu_leaking_on_the_instance("decoder"),
                                  r"model\.decoder\.1\.forward is set on the ReLU itself", True, True),
    "a weight's zero_grad on the object": (parameter_zero_grad_on_the_object,
                                           r"model\.decoder\.2\.weight\.zero_grad is set on the Parameter itself",
                                           True, False),
    "own zero_grad": (lambda: GradientsKept(784, 16, 2, rng=0), r"GradientsKept overrides VAE\.zero_grad", True, False),
    "extra layers": (wider_head, r"model\.decoder is Dense -> ReLU -> Dense -> ReLU -> Dense", True, True),
    "extra parameter": (lambda: WithAPrior(784, 16, 2, rng=0), r"parameters\(\) are not exactly", True, True),
    "tied weights": (tied_weights, r"encoder\.0\.weight and decoder\.2\.weight share memory", True, True),
}


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_refuses_what_it_would_compute_wrongly(case):
    make, message, training, evaluation = CASES[case]
    model = make()
    before = [p.data.copy() for p in model.parameters()]
    if training:
        with pytest.raises(InputTypeError, match=message + ".*backend='numpy'"):
            fit(model, X, backend="numba", **RUN)
        with pytest.raises(InputTypeError, match=message):
            Trainer(model, Adam(model.parameters()))
    if evaluation:
        with pytest.raises(InputTypeError, match=message + ".*backend='numpy'"):
            fit(model, X, X[:40], backend="numba", **RUN)   # fit evaluates too: refused before training
        with pytest.raises(InputTypeError, match=message):
            evaluate_elbo(model, X, backend="numba")
        with pytest.raises(InputTypeError, match=message):
            Evaluator(model)
    else:                                   # evaluation does not run what this model changes
        fast, ref = evaluate_elbo(model, X, backend="numba"), evaluate_elbo(model, X, backend="numpy")
        assert fast.total == pytest.approx(ref.total, rel=1e-5)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))   # nothing trained


@pytest.mark.parametrize("case", CASES)
def test_the_reference_runs_the_models_own_code(case):
    model = CASES[case][0]()
    history = fit(model, X, X[:40], backend="numpy", **RUN)
    assert np.isfinite(history[-1]["train_loss"]) and np.isfinite(history[-1]["test_loss"])
    assert np.isfinite(iw_nll(model, X[:10], k=2, backend="numpy"))


@pytest.mark.parametrize("part, kind", [("sampler", "Sampler"), ("kl", "KL"), ("bce", "BCEWithLogits")])
def test_a_sampler_or_loss_term_of_its_own_is_not_trained_as_the_stock_one(part, kind):
    """Training alone (no test images): the fused step would draw and score as the stock VAE."""
    model = VAE(784, 16, 2, rng=0)
    own = type("Own" + kind, (getattr(npvae, kind),), {})      # a subclass: it may compute its own
    setattr(model, part, own(0) if part == "sampler" else own())
    words = rf"model\.{part} is a Own{kind}, but the fast path computes npvae's {kind}"
    with pytest.raises(InputTypeError, match=r"^fit\(backend='numba'\): " + words + ".*backend='numpy'"):
        fit(model, X, backend="numba", **RUN)
    with pytest.raises(InputTypeError, match=words):
        Trainer(model, Adam(model.parameters()))


def test_a_stock_vae_of_hidden_layers_of_different_widths_runs_on_the_fast_path():
    model = VAE(784, (32, 16), 2, rng=0)            # the decoder's widths are the encoder's, reversed
    assert np.isfinite(fit(model, X, X[:40], backend="numba", **RUN)[-1]["test_loss"])
    Trainer(model, Adam(model.parameters()))


def test_one_module_in_two_places_is_refused_for_training_by_both_back_ends_alike():
    model = VAE(784, 16, 2, rng=0)
    model.decoder[1] = model.encoder[1]                 # one ReLU object, encoder and decoder
    words = r"model.encoder.1 and model.decoder.1 are one ReLU object: .*give each place a ReLU of its own"
    for backend in ("numpy", "numba"):
        with pytest.raises(npvae.errors.InputError, match=words):
            fit(model, X, backend=backend, **RUN)
    with pytest.raises(npvae.errors.InputError, match=words):
        Trainer(model, Adam(model.parameters()))
    evaluate_elbo(model, X, backend="numba")            # evaluation keeps nothing for a backward: both run it
    evaluate_elbo(model, X, backend="numpy")


@pytest.mark.parametrize("cls", [WithAHelper, NamingItsOwn])
def test_a_subclass_that_computes_the_same_runs_on_both_paths_alike(cls):
    runs = {}
    for backend in ("numpy", "numba"):
        model = cls(784, 16, 2, dtype=np.float64, rng=0)
        runs[backend] = fit(model, X, X[:40], backend=backend, **RUN)[-1]
    assert runs["numba"]["train_loss"] == pytest.approx(runs["numpy"]["train_loss"], rel=1e-10)
    assert runs["numba"]["test_loss"] == pytest.approx(runs["numpy"]["test_loss"], rel=1e-10)


def test_the_subclass_loss_is_what_the_reference_trains():
    """The reason for the refusal: the subclass's loss differs from the stock one."""
    stock = fit(VAE(784, 16, 2, rng=0), X, backend="numpy", **RUN)[-1]
    heavy = fit(HeavierKL(784, 16, 2, rng=0), X, backend="numpy", **RUN)[-1]
    assert heavy["train_loss"] == pytest.approx(heavy["train_recon"] + 10 * heavy["train_kl"], rel=1e-6)
    assert heavy["train_loss"] != pytest.approx(stock["train_loss"], rel=1e-4)


def test_a_refusal_says_how_the_fast_path_was_chosen(monkeypatch):
    """A user who passed no back end is told it was the default (or $NPVAE_BACKEND), not
    quoted an argument they never wrote."""
    model = sigmoid_encoder()
    monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    with pytest.raises(InputTypeError, match=r"^fit \(on the default back end, numba\): model\.encoder"):
        fit(model, X, **RUN)
    with pytest.raises(InputTypeError, match=r"^evaluate_elbo \(on the default back end, numba\): model\.encoder"):
        evaluate_elbo(model, X)
    with pytest.raises(InputTypeError, match=r"^iw_nll\(backend='numba'\): model\.encoder"):
        iw_nll(model, X[:10], k=2, backend="numba")
    monkeypatch.setenv("NPVAE_BACKEND", "numba")
    with pytest.raises(InputTypeError, match=r"^fit \(on \$NPVAE_BACKEND=numba\): .*backend='numpy'"):
        fit(model, X, **RUN)


def test_a_refusal_on_resume_names_the_resumed_runs_back_end(tmp_path, monkeypatch):
    """A resume keeps its run's back end over $NPVAE_BACKEND: the refusal says which one ran."""
    monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    model = VAE(784, 16, 2, rng=0)
    path = tmp_path / "run.npz"
    fit(model, X, checkpoint=path, backend="numba", **RUN)
    model.encoder[1] = Sigmoid()
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    with pytest.raises(InputTypeError, match=r"^fit \(on the resumed run's back end, numba\): model\.encoder"):
        fit(model, X, resume=path, **dict(RUN, epochs=2))


def test_the_fast_path_names_the_reference_loop_in_full():
    model = VAE(12, 8, 3, rng=0)
    model.encoder[1] = npvae.Sigmoid()
    x = np.random.default_rng(0).random((20, 12)).astype(np.float32)
    with pytest.raises(InputTypeError, match=r"use backend='numpy' \(the reference\), which runs the model's own code$"):
        npvae.fit(model, x, epochs=1, progress=False, backend="numba")
    with pytest.raises(InputTypeError, match=r"in a loop of your own: model\.zero_grad, model\.loss, model\.backward and "
                                             r"optimizer\.step$"):
        Trainer(model, npvae.Adam(model.parameters()))
    with pytest.raises(InputTypeError, match=r"use backend='numpy' \(the reference\), which runs the model's own code$"):
        npvae.evaluate_elbo(model, x, backend="numba")      # evaluation: no training advice


def test_a_stock_vae_made_after_npvae_model_was_reloaded_is_trained_not_refused():
    """``importlib.reload(npvae.model)`` (a notebook's autoreload) makes a new VAE class of the
    same code, whose methods are new function objects: its models are the stock VAE, not one
    that "overrides VAE.loss". (A class of that name and module, with copies of VAE's own
    methods, stands in for it: reloading here would leave the rest of the tests with two.)"""
    def copied(f):
        g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
        g.__kwdefaults__ = f.__kwdefaults__
        return g
    own = {name: copied(f) for name, f in vars(VAE).items() if isinstance(f, types.FunctionType)}
    Reloaded = type("VAE", (VAE,), {**own, "__module__": "npvae.model", "__qualname__": "VAE"})
    fast, ref = Reloaded(784, 16, 2, rng=0, dtype=np.float64), VAE(784, 16, 2, rng=0, dtype=np.float64)
    got = fit(fast, X, backend="numba", **RUN)
    want = fit(ref, X, backend="numpy", **RUN)
    assert abs(got[-1]["train_loss"] - want[-1]["train_loss"]) <= 1e-10 * want[-1]["train_loss"]
    evaluate_elbo(fast, X, backend="numba")
    Mine = type("VAE", (VAE,), {**own, "__module__": "mine", "__qualname__": "VAE"})     # not npvae's
    with pytest.raises(InputTypeError, match=r"VAE overrides VAE\.loss"):
        fit(Mine(784, 16, 2, rng=0), X, backend="numba", **RUN)


def test_a_layer_of_another_width_is_named_with_the_shape_the_fast_path_computes():
    """A model the reference cannot run either: the fast path names the layer, not a kernel's error."""
    model = VAE(784, 16, 2, rng=0)
    model.decoder[0] = Dense(2, 17, rng=0)
    with pytest.raises(InputTypeError, match=r"model\.decoder\[0\]\.weight is \(2, 17\) float32, but the fast "
                                             r"path computes \(2, 16\) float32 there"):
        Trainer(model, Adam(model.parameters()))
