"""The VAE: the loss as the composition of its parts, whole-model gradients against finite
differences, the two roads into mu and logvar, inference methods, reproducibility."""
import os

import numpy as np
import pytest

from finite_differences import assert_gradient, numerical_gradient
from npvae import KL, VAE, Adam, BCEWithLogits, LossParts, Module, ReLU, evaluate_elbo, fit, footprint, iw_nll
from npvae.errors import DivergenceError, InputError, InputTypeError, StateError

DTYPES = [np.float32, np.float64]
D_IN, HID, LAT, B = 12, (7, 5), 3, 6


def _data(dtype, seed=0, rows=B, d_in=D_IN, latent=LAT):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(rows, d_in)).astype(dtype), rng.standard_normal((rows, latent)).astype(dtype)


def _vae(dtype=np.float64, seed=0, hidden=HID):
    return VAE(D_IN, hidden, LAT, dtype=dtype, rng=seed)


def _gradients(model, x, beta, eps):
    model.zero_grad()
    model.loss(x, beta=beta, eps=eps)
    model.backward()
    return {n: p.grad.copy() for n, p in model.named_parameters()}


def assert_clear_of_kinks(model, x, eps, margin=1e-3):
    """Precondition of a finite-difference check: no ReLU input within ``margin`` of 0."""
    h = model.encoder.forward(x)
    z = h[:, :model.latent_dim] + np.exp(h[:, model.latent_dim:] / 2) * eps
    for net, a in ((model.encoder, x), (model.decoder, z)):
        for layer in net:
            if isinstance(layer, ReLU):
                assert np.abs(a).min() > margin, "pick another seed: a ReLU input sits on its kink"
            a = layer.forward(a)


# -- the loss and its gradient --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_is_the_composition(dtype):
    x, eps = _data(dtype)
    m = _vae(dtype)
    parts = m.loss(x, beta=0.5, eps=eps)
    assert isinstance(parts, LossParts)
    assert parts.total == pytest.approx(parts.recon + 0.5 * parts.kl, rel=1e-12)
    h = m.encoder.forward(x)
    z = h[:, :LAT] + np.exp(h[:, LAT:] / 2) * eps
    logits = m.decoder.forward(z.astype(dtype))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert parts.recon == pytest.approx(BCEWithLogits().forward(logits, x), rel=rtol)
    assert parts.kl == pytest.approx(KL().forward(h), rel=rtol)
    assert m.loss(x, beta=0.0, eps=eps).total == parts.recon


@pytest.mark.parametrize("input_dim, hidden, latent", [(12, (7, 5), 3), (8, (8,), 4)], ids=["7-5", "square"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_whole_model_gradients_match_finite_differences(input_dim, hidden, latent, beta):
    """Every parameter's gradient of the total loss, against central differences in float64.

    The "square" model (8-8-4) has square Dense layers (8x8) in the encoder and decoder,
    where a transposed weight gradient has the right shape.
    """
    model = VAE(input_dim, hidden, latent, dtype=np.float64, rng=1)
    x, eps = _data(np.float64, seed=2, rows=3, d_in=input_dim, latent=latent)
    assert_clear_of_kinks(model, x, eps)
    analytic = _gradients(model, x, beta, eps)

    def loss():
        return model.loss(x, beta=beta, eps=eps).total

    for name, p in model.named_parameters():
        assert_gradient(analytic[name], numerical_gradient(loss, p.data), f"{name} (beta={beta})")


def _encoder_bias_grad(model, x, beta, eps):
    """The gradient of the encoder's last bias: its entries are sum_b dL/dmu and sum_b dL/dlogvar."""
    return _gradients(model, x, beta, eps)[f"encoder.{len(model.encoder) - 1}.bias"]


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_the_kl_road_into_mu_and_logvar(beta):
    """dL/dh = (the road through z: sampler, decoder, BCE) + beta * (the KL's own road).

    The gradients are linear in beta, so the difference between beta and 0 is the KL's road
    alone: for the encoder's last bias, sum_b [mu_b | (exp(logvar_b) - 1) / 2] * beta / B.
    The decoder never sees the KL: its gradients do not depend on beta.
    """
    model = _vae()
    x, eps = _data(np.float64)
    with_kl, without = _gradients(model, x, beta, eps), _gradients(model, x, 0.0, eps)
    mu, logvar = model.encode(x)
    kl_road = np.concatenate([mu.sum(0), 0.5 * (np.exp(logvar) - 1).sum(0)]) * beta / B
    last = f"encoder.{len(model.encoder) - 1}.bias"
    np.testing.assert_allclose(with_kl[last] - without[last], kl_road, rtol=1e-10, atol=1e-14)
    for name in with_kl:
        if name.startswith("decoder."):
            np.testing.assert_array_equal(with_kl[name], without[name], err_msg=name)


def test_the_sampler_road_into_logvar_vanishes_without_noise():
    """With eps = 0, z = mu: logvar reaches the loss only through the KL, so with beta = 0
    its gradient is exactly 0, and with beta = 1 it is sum_b (exp(logvar_b) - 1) / (2B)."""
    model = _vae()
    x, _ = _data(np.float64)
    eps = np.zeros((B, LAT))
    assert not _encoder_bias_grad(model, x, 0.0, eps)[LAT:].any()
    _, logvar = model.encode(x)
    np.testing.assert_allclose(_encoder_bias_grad(model, x, 1.0, eps)[LAT:],
                               0.5 * (np.exp(logvar) - 1).sum(0) / B, rtol=1e-12)


def test_backward_needs_the_loss_right_before_it():
    with pytest.raises(StateError, match=r"loss\(\)"):
        _vae().backward()


def test_a_second_backward_of_one_loss_is_refused_and_the_gradients_stay_once():
    m = _vae()
    x, _ = _data(np.float64)
    eps = np.zeros((B, LAT))
    m.zero_grad()
    m.loss(x, eps=eps)
    m.backward()
    once = [p.grad.copy() for p in m.parameters()]
    with pytest.raises(StateError, match="already ran for this loss"):
        m.backward()
    assert all(np.array_equal(p.grad, g) for p, g in zip(m.parameters(), once))
    m.loss(x, eps=eps)
    m.backward()                               # a new loss: its gradients add in, as documented
    assert all(np.allclose(p.grad, 2 * g, rtol=1e-15, atol=0) for p, g in zip(m.parameters(), once))
    m.encode(x)                                # an inference call since: its own message
    with pytest.raises(StateError, match="inference call"):
        m.backward()


@pytest.mark.parametrize("call", [
    lambda m, x, z: m.encode(x), lambda m, x, z: m.decode(z), lambda m, x, z: m.forward(x),
    lambda m, x, z: m.reconstruct(x), lambda m, x, z: m.sample(2), lambda m, x, z: m.interpolate(x[0], x[1]),
    lambda m, x, z: m.decode_logits(z),
    lambda m, x, z: evaluate_elbo(m, x, backend="numpy"), lambda m, x, z: iw_nll(m, x, k=2, backend="numpy"),
], ids=["encode", "decode", "forward", "reconstruct", "sample", "interpolate", "decode_logits",
        "evaluate_elbo", "iw_nll"])
def test_an_inference_call_between_loss_and_backward_is_a_state_error(call):
    m = _vae()
    x, z = _data(np.float64)
    m.loss(x)
    call(m, x, z)
    with pytest.raises(StateError, match="inference call"):
        m.backward()
    m.loss(x)
    m.backward()                               # the normal order still works


def _layer_by_layer(seq, x):
    for layer in seq.layers:
        x = layer.forward(x)
    return x


H = np.zeros((B, 2 * LAT))          # codes [mu | logvar] of some other batch


@pytest.mark.parametrize("call, name", [
    (lambda m, x, z: m.encoder(x), "encoder.0"), (lambda m, x, z: m.decoder.forward(z), "decoder.0"),
    (lambda m, x, z: m.encoder[0](x), "encoder.0"), (lambda m, x, z: _layer_by_layer(m.decoder, z), "decoder.0"),
    (lambda m, x, z: m.encoder[-1].forward(np.ones((B, 5))), "encoder.4"),
    (lambda m, x, z: m.sampler.forward(H), "sampler"), (lambda m, x, z: m.kl(H), "kl"),
    (lambda m, x, z: m.bce.forward(np.zeros_like(x), x), "bce"),
], ids=["encoder", "decoder.forward", "a Dense", "the decoder layer by layer", "the last Dense's forward",
        "sampler", "kl", "bce"])
def test_an_op_of_the_model_run_between_loss_and_backward_is_a_state_error(call, name):
    """As in a PyTorch loop, one may look at another batch's codes, say, with the model's own
    ops: here that replaces what backward needs, so backward refuses, naming the op, instead
    of adding wrong gradients (the same batch size once gave no error at all)."""
    m = _vae()
    x, z = _data(np.float64)
    other = np.random.default_rng(5).random(x.shape)
    m.zero_grad()
    m.loss(x, eps=z)
    m.backward()
    clean = [p.grad.copy() for p in m.parameters()]
    m.zero_grad()
    m.loss(x, eps=z)
    call(m, other, z)
    with pytest.raises(StateError, match=rf"model\.{name} ran forward since loss\(\).*Call loss\(\) again"):
        m.backward()
    assert all(not p.grad.any() for p in m.parameters())   # nothing added
    call(m, other, z)                                       # before loss(): no harm done
    m.loss(x, eps=z)
    m.backward()
    assert all(np.array_equal(p.grad, g) for p, g in zip(m.parameters(), clean))
    call(m, other, z)                                       # after backward: no harm done
    assert all(np.array_equal(p.grad, g) for p, g in zip(m.parameters(), clean))


def test_a_subclass_may_run_a_module_of_its_own_between_loss_and_backward():
    """Only the ops loss() runs are watched: a subclass's own extra module is its business."""
    class WithProbe(VAE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.probe = ReLU()

        def loss(self, x, beta=1.0, eps=None):
            parts = super().loss(x, beta, eps)
            self.probe.forward(x)                          # kept values of its own
            return parts

    m = WithProbe(D_IN, HID, LAT, dtype=np.float64, rng=0)
    x, z = _data(np.float64)
    m.loss(x, eps=z)
    m.backward()
    assert m.probe.passes == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("change", ["x[:] = 1 - x", "x.fill(0)", "eps.fill(0)", "eps *= 3"])
def test_changing_your_batch_or_noise_after_loss_leaves_the_gradients_of_that_loss(dtype, change):
    """backward reads the batch again (the BCE's target, the first layer's input) and the noise:
    it must read what loss() was given, not the caller's array as it is by then (a reused
    buffer, say). The gradients moved by up to 0.97 against a largest one of 0.75."""
    model = _vae(dtype)
    x, eps = _data(dtype)
    want = _gradients(model, x.copy(), 1.0, eps.copy())
    model.zero_grad()
    model.loss(x, eps=eps)
    exec(change)
    model.backward()
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, want[n], err_msg=n)


def test_each_forward_keeps_what_backward_needs_and_counts_the_pass():
    layer = ReLU()
    x = np.array([[-1.0, 2.0]])
    assert layer.passes == 0
    layer.forward(x)
    assert layer.passes == 1 and np.array_equal(layer.saved("y"), [[0.0, 2.0]])
    layer(x)
    assert layer.passes == 2


# -- inference ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_keep_dtype_and_shape(dtype):
    x, eps = _data(dtype)
    m = _vae(dtype)
    m.zero_grad()
    m.loss(x)
    m.backward()
    assert all(p.grad.dtype == dtype and p.grad.shape == p.shape for p in m.parameters())
    assert all(p.dtype == dtype for p in m.parameters())
    x_hat, mu, logvar = m.forward(x, eps)
    assert (x_hat.dtype, mu.dtype, logvar.dtype) == (dtype,) * 3
    assert x_hat.shape == (B, D_IN) and mu.shape == logvar.shape == (B, LAT)
    outs = [m.encode(x)[0], m.encode(x)[1], m.decode(eps), m.sample(4), m.reconstruct(x),
            m.reconstruct(x, sample=True), m.interpolate(x[0], x[1], steps=5)]
    assert [o.dtype for o in outs] == [dtype] * len(outs)
    assert [o.shape for o in outs[2:]] == [(B, D_IN), (4, D_IN), (B, D_IN), (B, D_IN), (5, D_IN)]
    assert all(np.all((o >= 0) & (o <= 1)) for o in outs[2:])


def test_inference_methods_return_fresh_arrays():
    x, eps = _data(np.float64)
    m = _vae()
    mu, logvar = m.encode(x)
    rec = m.decode(eps)
    x_hat = m.forward(x, eps)[0]
    keep = (mu.copy(), logvar.copy(), rec.copy(), x_hat.copy())
    m.encode(x[::-1].copy())
    m.decode(-eps)
    m.forward(x[::-1].copy(), eps)
    m.loss(x)
    for a, b in zip((mu, logvar, rec, x_hat), keep):
        np.testing.assert_array_equal(a, b)
    assert not np.shares_memory(mu, logvar)


def test_forward_encode_decode_are_consistent():
    x, eps = _data(np.float64)
    m = _vae()
    x_hat, mu, logvar = m.forward(x, eps)
    mu2, logvar2 = m.encode(x)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(logvar, logvar2)
    np.testing.assert_allclose(x_hat, m.decode(mu + np.exp(logvar / 2) * eps), rtol=1e-14)
    np.testing.assert_array_equal(m.reconstruct(x), m.decode(mu))
    logits = m.decoder.forward(mu)
    np.testing.assert_allclose(m.decode(mu), 1 / (1 + np.exp(-logits)), rtol=1e-14)


def test_interpolate_ends_and_middle():
    x, _ = _data(np.float64)
    m = _vae()
    path = m.interpolate(x[0], x[1:2], steps=3)
    mu, _ = m.encode(x[:2])
    np.testing.assert_allclose(path[0], m.decode(mu[:1])[0], rtol=1e-14)
    np.testing.assert_allclose(path[-1], m.decode(mu[1:2])[0], rtol=1e-14)
    np.testing.assert_allclose(path[1], m.decode((mu[:1] + mu[1:2]) / 2)[0], rtol=1e-12)
    with pytest.raises(InputError, match="steps"):
        m.interpolate(x[0], x[1], steps=1)
    with pytest.raises(InputError, match="one image"):
        m.interpolate(x[:2], x[1])


def test_sample_decodes_standard_normal_codes():
    m = _vae()
    np.testing.assert_array_equal(m.sample(3, rng=1), m.sample(3, rng=1))
    z = np.random.default_rng(1).standard_normal((3, LAT))
    np.testing.assert_array_equal(m.sample(3, rng=1), m.decode(z))
    assert not np.array_equal(m.sample(3), m.sample(3))


def test_more_codes_than_memory_holds_are_refused_before_any_allocation():
    m = VAE(784, 400, 20, rng=0)
    with pytest.raises(InputError, match=r"sample\(1000000000000\) decodes 1,000,000,000,000 codes at once, about 9.6 PB"):
        m.sample(10**12)
    x = np.zeros(784, np.float32)
    with pytest.raises(InputError, match=r"interpolate\(steps=10000000000000\) decodes .* is available"):
        m.interpolate(x, x, steps=10**13)


def test_a_model_whose_parameters_and_gradients_do_not_fit_in_memory_is_refused(monkeypatch):
    """Parameters and their gradients: 2 x 4 bytes per float32 parameter, refused beyond what is
    available; with no way to tell what is available, only what no machine could hold."""
    n = footprint.parameter_count(784, (400,), 20)
    monkeypatch.setattr(footprint, "available_bytes", lambda: 2 * 4 * n - 1)
    with pytest.raises(InputError, match="parameters, .* with their gradients, more than this machine can give"):
        VAE(784, 400, 20, rng=0)
    monkeypatch.setattr(footprint, "available_bytes", lambda: 2 * 4 * n)
    VAE(784, 400, 20, rng=0)
    monkeypatch.setattr(footprint, "available_bytes", lambda: None)
    with pytest.raises(InputError, match=r"more than this machine can give \(unknown\)"):
        VAE(784, 10**30, 20, rng=0)


# -- training, reproducibility ----------------------------------------------------------------------
def _train(dtype, seed, steps=4):
    """The user's loop on the reference: zero_grad, loss, backward, step."""
    m = _vae(dtype, seed)
    opt = Adam(m.parameters(), lr=1e-2)
    x, _ = _data(dtype, seed=42, rows=8)
    losses = []
    for _ in range(steps):
        m.zero_grad()
        losses.append(m.loss(x).total)               # eps drawn from the model's seeded rng
        m.backward()
        opt.step()
    return m.state_dict(), losses


def test_same_seed_same_bits_different_seed_differs():
    a, la = _train(np.float32, seed=1)
    b, lb = _train(np.float32, seed=1)
    c, _ = _train(np.float32, seed=2)
    assert la == lb and la[-1] < la[0]
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert all(not np.array_equal(a[k], c[k]) for k in a)


def test_eval_mode_gives_the_same_loss():
    x, eps = _data(np.float64)
    m = _vae()
    train = m.loss(x, eps=eps)
    m.eval()
    assert m.loss(x, eps=eps) == train


def test_column_major_batches_give_the_same_loss_and_gradients():
    x, eps = _data(np.float64)
    m = _vae()
    loss_c, grads_c = m.loss(x, eps=eps), _gradients(m, x, 1.0, eps)
    loss_f, grads_f = m.loss(np.asfortranarray(x), eps=eps), _gradients(m, np.asfortranarray(x), 1.0, eps)
    assert loss_f == loss_c
    for n in grads_c:
        np.testing.assert_array_equal(grads_f[n], grads_c[n], err_msg=n)


def test_loss_checks_its_input():
    m = _vae(np.float32)
    x, _ = _data(np.float32)
    with pytest.raises(InputTypeError, match="integer"):
        m.loss((x * 255).astype(np.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        m.loss(x * 2)
    with pytest.raises(InputError, match="12 features"):
        m.loss(x[:, :5])
    with pytest.raises(InputError, match="NaN"):
        m.loss(np.where(x > 0.5, np.nan, x))
    with pytest.raises(InputError, match="beta"):
        m.loss(x, beta=-1.0)
    with pytest.raises(InputTypeError, match="eps"):
        m.loss(x, eps=np.zeros((B, LAT)))                 # float64 noise for a float32 model
    assert m.loss(x.astype(np.float64)).total > 0         # other float dtype: converted


def test_config_and_architecture():
    m = VAE(784, 400, 20, rng=0)
    assert m.config() == dict(input_dim=784, hidden_dims=[400], latent_dim=20, dtype="float32")
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert shapes == {"encoder.0.weight": (784, 400), "encoder.0.bias": (400,),
                      "encoder.2.weight": (400, 40), "encoder.2.bias": (40,),
                      "decoder.0.weight": (20, 400), "decoder.0.bias": (400,),
                      "decoder.2.weight": (400, 784), "decoder.2.bias": (784,)}
    assert m.dtype == np.float32
    for width in (np.int64(400), np.array(400), [400], np.array([400])):     # one width, however given
        assert VAE(784, width, 20, rng=0).config() == m.config()
    with pytest.raises(InputError, match="hidden_dims needs at least one width"):
        VAE(784, [], 20, rng=0)                     # not an encoder of one layer
    with pytest.raises(InputTypeError, match=r"hidden_dims must be a positive int, got \[1, 2\] \(list\)"):
        VAE(784, [[1, 2], [3]], 20, rng=0)          # ragged: not NumPy's "inhomogeneous shape"


def test_backend_argument_is_deprecated_and_ignored():
    x, eps = _data(np.float64)
    with pytest.warns(DeprecationWarning, match="backend"):
        old = VAE(D_IN, HID, LAT, dtype=np.float64, rng=0, backend="numba")
    assert old.loss(x, eps=eps) == _vae().loss(x, eps=eps)


def test_the_old_sigmoid_attribute_still_works_with_a_deprecation_warning():
    m = _vae()
    z = np.linspace(-3, 3, 2 * LAT).reshape(2, LAT)
    with pytest.warns(DeprecationWarning, match="VAE.sigmoid"):
        old = m.sigmoid
    assert np.array_equal(old.forward(m.decode_logits(z)), m.decode(z))


def test_decode_is_the_sigmoid_of_decode_logits():
    m = _vae()
    _, z = _data(np.float64)
    logits = m.decode_logits(z)
    assert logits.shape == (B, D_IN) and logits.dtype == np.float64
    np.testing.assert_allclose(m.decode(z), 1 / (1 + np.exp(-logits)), rtol=1e-14)
    with pytest.raises(InputError, match="z must have 3 features"):
        m.decode_logits(np.zeros((2, 4)))


def test_the_rng_can_be_replaced_and_is_checked():
    m, twin = _vae(), _vae()
    x, _ = _data(np.float64)
    m.rng = np.random.default_rng(7)
    twin.rng = 7                                   # an int seed, as in the constructor
    assert m.loss(x) == twin.loss(x)
    assert isinstance(twin.rng, np.random.Generator)
    with pytest.raises(InputTypeError, match="rng must be a numpy.random.Generator"):
        m.rng = "seven"


@pytest.mark.parametrize("call", ["forward", "encode", "reconstruct", "interpolate"])
def test_images_not_divided_by_255_are_refused_by_every_call_that_takes_images(call):
    model = VAE(6, 5, 2, rng=0)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 6)).astype(np.float32)   # forgot / 255
    calls = {"forward": lambda x: model.forward(x), "encode": lambda x: model.encode(x),
             "reconstruct": lambda x: model.reconstruct(x), "interpolate": lambda x: model.interpolate(x[0], x[1])}
    name = "x_a" if call == "interpolate" else "x"
    with pytest.raises(InputError, match=rf"{name} must lie in \[0, 1\].*divide by 255"):
        calls[call](pixels)
    calls[call](pixels / 255)                                     # as asked: fine
    over = pixels / 255
    over[:, 0] = 1.01
    with pytest.raises(InputError, match=r", 1\.01\]$"):            # slightly over 1: no advice to divide
        calls[call](over)


def test_a_pixel_a_rounding_error_above_1_gets_the_same_answer_from_every_entry():
    """Checked as given, not after the cast to float32 (which makes 1 + 1e-12 exactly 1): loss
    and the fast path's step answer as fit and the evaluations do; the message says to clip."""
    model = VAE(6, 5, 2, rng=0)
    x = np.full((3, 6), 0.5)
    x[1, 2] = 1 + 1e-12
    clip = r"must lie in \[0, 1\].*1\.000000000001\]; if these are rounding errors: np\.clip\(x, 0, 1\)"
    from npvae.fast import Trainer      # here: importing it loads Numba
    trainer = Trainer(model, Adam(model.parameters()))
    for call in (lambda: model.loss(x), lambda: model.forward(x), lambda: evaluate_elbo(model, x),
                 lambda: iw_nll(model, x, k=2), lambda: fit(model, x, epochs=1, progress=False, backend="numpy"),
                 lambda: trainer.step(x)):
        with pytest.raises(InputError, match=clip.replace("(x", "((x|images|train_images)")):
            call()
    model.loss(np.clip(x, 0, 1))                                  # as advised
    half = np.full((3, 6), 0.5, np.float16)
    half[0, 0] = np.nextafter(np.float16(1), np.float16(2))      # 1.001: a hint in float16 too
    with pytest.raises(InputError, match=r"1\.001\]; if these are rounding errors: np\.clip\(x, 0, 1\)$"):
        model.loss(half)
    with pytest.raises(InputError, match=r"^BCEWithLogits\.forward: target .*: np\.clip\(target, 0, 1\)$"):
        BCEWithLogits().forward(np.zeros((3, 6)), x)              # the variable's name, not the message's


def test_codes_are_any_real_numbers():
    model = VAE(6, 5, 2, rng=0)
    assert model.decode(np.array([[40.0, -7.5]], np.float32)).shape == (1, 6)


@pytest.mark.parametrize("sample", [1, "yes", None])
def test_reconstruct_takes_sample_as_true_or_false_only(sample):
    x, _ = _data(np.float64)
    with pytest.raises(InputTypeError, match="sample must be True or False"):
        _vae().reconstruct(x, sample=sample)


def test_a_sampled_reconstruction_with_rng_leaves_the_models_generator_alone():
    """reconstruct(sample=True, rng=) draws eps as the sampler does with that generator, so it
    equals the reconstruction of a model whose own generator is in that state."""
    x, _ = _data(np.float32)
    model = VAE(x.shape[1], 5, 2, rng=0)
    before = model.rng.bit_generator.state
    got = model.reconstruct(x, sample=True, rng=7)
    assert model.rng.bit_generator.state == before
    assert np.array_equal(got, model.reconstruct(x, sample=True, rng=np.random.default_rng(7)))
    model.rng = 7
    assert np.array_equal(got, model.reconstruct(x, sample=True))
    assert model.rng.bit_generator.state != np.random.default_rng(7).bit_generator.state   # this one advanced
    assert not np.array_equal(got, model.reconstruct(x, sample=True, rng=8))
    with pytest.raises(InputError, match=r"rng draws the noise of sample=True"):
        model.reconstruct(x, rng=7)
    with pytest.raises(InputTypeError, match=r"rng must be"):
        model.reconstruct(x, sample=True, rng=np.random.RandomState(0))


@pytest.mark.parametrize("share", [
    lambda m: m.decoder.__setitem__(1, m.encoder[1]),          # one ReLU in both halves
    lambda m: m.encoder.__setitem__(3, m.encoder[1]),          # twice in the encoder
], ids=["encoder and decoder", "twice in the encoder"])
def test_one_layer_object_in_two_places_is_refused_by_name(share):
    """Its forward would keep its second pass's values only, and backward would be wrong for
    the first place (64% off with a ReLU), with no error."""
    m = _vae()
    share(m)
    x, z = _data(np.float64)
    with pytest.raises(InputError, match=r"model\.encoder\.1 and model\.(decoder\.1|encoder\.3) are one ReLU "
                                         r"object.*give each place a ReLU of its own"):
        m.loss(x, eps=z)


def test_a_layer_your_module_runs_twice_in_one_loss_is_refused_by_backward():
    """PyTorch's habit: one ``self.act = ReLU()``, called after each layer. Only one place holds
    it, but it ran forward twice, kept the second pass's values, and backward was wrong for the
    first (0.039 off, the largest gradient 0.040), silently. The loss itself, only to look, is
    fine; with a ReLU for each place, so is backward."""
    from npvae import Dense, Module

    class MLP(Module):
        def __init__(self, acts):
            super().__init__()
            self.a, self.b, self.c = (Dense(i, o, dtype=np.float64, rng=k) for k, (i, o) in
                                      enumerate([(D_IN, 7), (7, 5), (5, 2 * LAT)]))
            self.act = ReLU()
            self.act2 = ReLU() if acts == 2 else None

        def forward(self, x):
            second = self.act2 or self.act
            return self.c.forward(second.forward(self.b.forward(self.act.forward(self.a.forward(x)))))

        def backward(self, g):
            second = self.act2 or self.act
            return self.a.backward(self.act.backward(self.b.backward(second.backward(self.c.backward(g)))))

    x, z = _data(np.float64)
    m = _vae()
    m.encoder = MLP(acts=1)
    assert np.isfinite(m.loss(x, eps=z).total)
    for _ in range(2):                                  # refused: nothing added, the same said again
        with pytest.raises(InputError, match=r"model\.encoder\.act ran forward 2 times in one loss\(\).*"
                                             r"give each place a layer of its own"):
            m.backward()
    assert not any(p.grad.any() for p in m.parameters())
    m.encoder = MLP(acts=2)
    m.loss(x, eps=z)
    m.backward()


def test_a_layer_that_keeps_more_after_its_parents_forward_is_one_pass():
    """A subclass extending forward (``super().forward(x)``, then ``self.keep(...)`` of its own)
    runs once a loss: the twice-in-one-loss refusal must not take its two keeps for two passes."""
    from npvae import Dense

    class Watched(Dense):
        def forward(self, x):
            y = super().forward(x)
            self.keep(y=y)                              # kept to look at, say
            return y

    m = _vae()
    x, z = _data(np.float64)
    want = _gradients(m, x, 1.0, z)
    m.encoder[0] = Watched(D_IN, HID[0], dtype=np.float64, rng=0)
    m.encoder[0].load_state_dict(_vae().encoder[0].state_dict())
    got = _gradients(m, x, 1.0, z)
    for n in want:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    assert m.encoder[0].passes == 1                     # one loss, one pass
    for _ in range(2):                                  # and so every time
        _gradients(m, x, 1.0, z)
    assert m.encoder[0].passes == 3
    m.loss(x, eps=z)
    m.encoder(x)                                        # a pass since the loss is still seen
    with pytest.raises(StateError, match=r"model\.encoder\.0 ran forward since loss\(\)"):
        m.backward()


def test_an_inference_call_refused_for_its_input_leaves_the_loss_to_differentiate():
    """Nothing ran, so nothing was replaced: backward used to be refused after it."""
    m = _vae()
    x, z = _data(np.float64)
    want = _gradients(m, x, 1.0, z)
    m.zero_grad()
    m.loss(x, eps=z)
    with pytest.raises(InputError, match=r"x must have 12 features per row"):
        m.encode(x[:, :5])
    with pytest.raises(InputError, match=r"x_a must be one image"):
        m.interpolate(x[:2], x[2])
    with pytest.raises(InputError, match=r"x_b must have 12 features"):
        m.interpolate(x[2], x[3, :5])                   # both ends are checked before either runs
    m.backward()
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.grad, want[n], err_msg=n)


def test_a_refused_backward_changes_nothing_and_says_the_same_again():
    m = VAE(12, 7, 3, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).random((4, 12))
    m.zero_grad()
    m.loss(x)
    m.encoder(np.random.default_rng(1).random((4, 12)))          # another batch's codes
    for _ in range(2):                                          # not "already ran": no gradient was added
        with pytest.raises(StateError, match=r"model\.encoder\.0 ran forward since loss\(\)"):
            m.backward()
    assert all(not p.grad.any() for p in m.parameters())


def test_a_deep_copy_draws_the_same_noise_until_given_its_own_rng():
    """As VAE's docstring says: the Generator is copied with the model."""
    import copy
    m = VAE(12, 8, 3, rng=0)
    twin = copy.deepcopy(m)
    np.testing.assert_array_equal(twin.sample(4), m.sample(4))
    twin.rng = 5
    assert not np.array_equal(twin.sample(4), m.sample(4))


class _MeanSampler(Module):
    """A sampler of one's own, ``z = mu``, that keeps no Generator (or something else as ``rng``)."""

    def __init__(self, rng=None):
        super().__init__()
        if rng is not None:
            self.rng = rng

    def forward(self, h, eps=None):
        d = h.shape[1] // 2
        return h[:, :d].copy()

    def backward(self, dz):
        return np.concatenate([dz, np.zeros_like(dz)], axis=1)


@pytest.mark.parametrize("rng, said", [(None, "has no rng"), (42, "has rng 'int'")])
def test_a_sampler_of_ones_own_without_a_generator_is_named_by_what_needs_it(tmp_path, rng, said):
    import npvae
    model = VAE(12, 8, 2, rng=0)
    model.sampler = _MeanSampler(rng)
    x = np.random.default_rng(0).random((16, 12)).astype(np.float32)
    calls = [lambda: model.rng, lambda: model.sample(3),
             lambda: fit(model, x, epochs=1, backend="numpy", progress=False, checkpoint=tmp_path / "fit.npz"),
             lambda: npvae.save_checkpoint(str(tmp_path / "run.npz"), model)]
    for call in calls:
        with pytest.raises(InputTypeError, match=rf"model.sampler \(_MeanSampler\) {said}: a sampler of one's own "
                                                 r"keeps the model's np.random.Generator as self.rng .*; give it one "
                                                 r"with model.rng = seed$"):
            call()
    assert os.listdir(tmp_path) == []                   # fit refused before training
    assert not hasattr(model, "rng") and getattr(model, "rng", None) is None    # no rng: as Python asks it
    fit(model, x, epochs=1, backend="numpy", progress=False)       # its training needs no Generator of the model
    model.rng = 0                                       # as the message says
    assert model.sample(3).shape == (3, 12)


class _OwnLoss(VAE):
    """A subclass whose loss runs the ops itself, without VAE.loss."""

    def loss(self, x, beta=1.0, eps=None):
        h = self.encoder(x)
        z = self.sampler(h, eps)
        return self.bce(self.decoder(z), x) + beta * self.kl(h)


def test_backward_after_a_subclass_loss_that_skips_vae_loss_says_to_call_it():
    model = _OwnLoss(12, 8, 2, rng=0)
    model.loss(np.random.default_rng(0).random((4, 12)).astype(np.float32))
    with pytest.raises(StateError, match=r"or _OwnLoss.loss did not call super\(\).loss\(\), which tells backward "
                                         r"what to differentiate: call it, or give _OwnLoss a backward of its own"):
        model.backward()
    plain = VAE(12, 8, 2, rng=0)                        # the stock loss: no word of a subclass
    with pytest.raises(StateError, match=r"ran since and replaced what backward needs$"):
        plain.backward()


def test_sample_is_refused_when_the_memory_left_is_just_short_of_what_it_decodes(monkeypatch):
    """Not only petabytes (the test above): here the memory left is what the decoder's last
    layer alone holds (its logits and its probabilities: twice the images), with nothing for
    the codes and the hidden layer: not enough, so refused up front."""
    model = VAE(784, 400, 20, rng=0)
    monkeypatch.setattr(footprint, "available_bytes", lambda: 2 * 1000 * 784 * 4)
    with pytest.raises(InputError, match=r"sample\(1000\) decodes 1,000 codes at once"):
        model.sample(1000)
    monkeypatch.setattr(footprint, "available_bytes", lambda: 10 ** 9)
    assert model.sample(1000).shape == (1000, 784)


def _inference_calls(model, x):
    return {"forward": lambda: model.forward(x), "encode": lambda: model.encode(x),
            "decode": lambda: model.decode(np.zeros((2, model.latent_dim), model.dtype)),
            "decode_logits": lambda: model.decode_logits(np.zeros((2, model.latent_dim), model.dtype)),
            "reconstruct": lambda: model.reconstruct(x), "sampled": lambda: model.reconstruct(x, sample=True, rng=0),
            "sample": lambda: model.sample(2, rng=0), "interpolate": lambda: model.interpolate(x[0], x[1])}


@pytest.mark.parametrize("call", list(_inference_calls(VAE(6, 4, 2), np.zeros((2, 6)))))
def test_inference_with_a_nan_parameter_is_refused_naming_it_as_evaluation_does(call):
    """Not NaN pixels or codes, silently, nor an error about an argument the caller never gave."""
    model = VAE(12, 5, 3, rng=0)
    where = "encoder" if call == "encode" else "decoder"        # one that the call computes with
    getattr(model, where)[0].bias.data[1] = np.nan
    with pytest.raises(InputError, match=rf"^model parameter {where}\.0\.bias holds NaN or inf, so the model's codes and images are NaN"):
        _inference_calls(model, np.full((4, 12), 0.5, np.float32))[call]()


@pytest.mark.filterwarnings("ignore:overflow encountered in matmul:RuntimeWarning")    # NumPy's, before the error
@pytest.mark.parametrize("call", ["forward", "encode", "reconstruct", "sampled", "interpolate"])
def test_inference_whose_codes_overflow_from_finite_parameters_blames_the_model(call):
    """As in a model that diverged in training: a DivergenceError that says so, not "z contains NaN"."""
    model = VAE(12, 5, 3, rng=0)
    model.encoder[0].bias.data[:] = 10.0            # every hidden unit on, at 10 or more
    model.encoder[2].weight.data[:, 0] = 3e38       # so mu's first code overflows
    with pytest.raises(DivergenceError, match=r"^the model's codes or logits overflow .* "
                                              r"though its parameters and the values given are finite"):
        _inference_calls(model, np.full((4, 12), 0.5, np.float32))[call]()


@pytest.mark.filterwarnings("ignore:overflow encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("call", ["forward", "sampled", "decode", "reconstruct", "sample"])
def test_inference_whose_logits_overflow_is_refused_by_every_call_alike(call):
    """An inf logit is 1 after the sigmoid: forward must not return it where decode refuses it."""
    model = VAE(12, 5, 3, rng=0)
    model.decoder[2].weight.data[:] = 3e38          # the ReLU'd hidden units make +inf logits, never NaN
    model.decoder[0].bias.data[:] = 1.0             # every hidden unit on
    with pytest.raises(DivergenceError, match=r"^the model's codes or logits overflow to NaN or inf though"):
        _inference_calls(model, np.full((4, 12), 0.5, np.float32))[call]()
