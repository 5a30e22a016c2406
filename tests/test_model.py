"""The VAE: composition, dtypes, reproducibility, back ends agreeing, user-facing methods."""
import numpy as np
import pytest

from npvae import KL, VAE, Adam, BCEWithLogits, LossParts
from npvae.errors import InputError, InputTypeError, StateError

BACKENDS = ["numpy", "numba"]
DTYPES = [np.float32, np.float64]
D_IN, HID, LAT, B = 12, (7, 5), 3, 6


def _data(dtype, seed=0, rows=B):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(rows, D_IN)).astype(dtype), rng.standard_normal((rows, LAT)).astype(dtype)


def _vae(dtype=np.float64, backend="numpy", seed=0, hidden=HID):
    return VAE(D_IN, hidden, LAT, dtype=dtype, rng=seed, backend=backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_is_the_composition(backend, dtype):
    x, eps = _data(dtype)
    m = _vae(dtype, backend)
    parts = m.loss(x, beta=0.5, eps=eps)
    assert isinstance(parts, LossParts)
    assert parts.total == pytest.approx(parts.recon + 0.5 * parts.kl, rel=1e-12)
    h = m.encoder.forward(x).copy()
    d = LAT
    z = h[:, :d] + np.exp(h[:, d:] / 2) * eps
    logits = m.decoder.forward(z.astype(dtype))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert parts.recon == pytest.approx(BCEWithLogits().set_backend(backend).forward(logits, x), rel=rtol)
    assert parts.kl == pytest.approx(KL().set_backend(backend).forward(h), rel=rtol)
    assert m.loss(x, beta=0.0, eps=eps).total == parts.recon


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_keep_dtype_and_shape(backend, dtype):
    x, eps = _data(dtype)
    m = _vae(dtype, backend)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_user_facing_methods_return_fresh_arrays(backend):
    x, eps = _data(np.float64)
    m = _vae(backend=backend)
    mu, logvar = m.encode(x)
    rec = m.decode(eps)
    keep = (mu.copy(), logvar.copy(), rec.copy())
    m.encode(x[::-1].copy())
    m.decode(-eps)
    m.loss(x)
    for a, b in zip((mu, logvar, rec), keep):
        np.testing.assert_array_equal(a, b)


def test_forward_encode_decode_are_consistent():
    x, eps = _data(np.float64)
    m = _vae()
    x_hat, mu, logvar = m.forward(x, eps)
    mu2, logvar2 = m.encode(x)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(logvar, logvar2)
    np.testing.assert_allclose(x_hat, m.decode(mu + np.exp(logvar / 2) * eps), rtol=1e-14)
    np.testing.assert_array_equal(m.reconstruct(x), m.decode(mu))


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_is_reproducible_with_rng(backend):
    m = _vae(backend=backend)
    np.testing.assert_array_equal(m.sample(3, rng=1), m.sample(3, rng=1))
    assert not np.array_equal(m.sample(3), m.sample(3))


def _train(dtype, backend, seed, steps=4):
    m = _vae(dtype, backend, seed)
    opt = Adam(m.parameters(), lr=1e-2, backend=backend)
    x, _ = _data(dtype, seed=42, rows=8)
    losses = []
    for _ in range(steps):
        m.zero_grad()
        losses.append(m.loss(x).total)               # eps drawn from the model's seeded rng
        m.backward()
        opt.step()
    return m.state_dict(), losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_bits_different_seed_differs(backend):
    a, la = _train(np.float32, backend, seed=1)
    b, lb = _train(np.float32, backend, seed=1)
    c, _ = _train(np.float32, backend, seed=2)
    assert la == lb and la[-1] < la[0]
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert all(not np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_backends_agree_on_the_whole_vae(dtype, rtol):
    x, eps = _data(dtype)
    results = {}
    for backend in BACKENDS:
        m = _vae(dtype, backend, seed=3)
        m.zero_grad()
        parts = m.loss(x, beta=0.7, eps=eps)
        m.backward()
        x_hat, mu, logvar = m.forward(x, eps)
        results[backend] = (parts, {n: p.grad.copy() for n, p in m.named_parameters()},
                            (x_hat, mu, logvar, m.sample(5, rng=0)))
    (pa, ga, oa), (pb, gb, ob) = results["numpy"], results["numba"]
    np.testing.assert_allclose(pb, pa, rtol=rtol)
    for a, b in zip(oa, ob):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())
    for n in ga:
        scale = np.abs(ga[n]).max()
        np.testing.assert_allclose(gb[n], ga[n], rtol=rtol, atol=rtol * scale, err_msg=n)


def test_backends_agree_after_training_float64():
    a, la = _train(np.float64, "numpy", seed=5, steps=3)
    b, lb = _train(np.float64, "numba", seed=5, steps=3)
    np.testing.assert_allclose(lb, la, rtol=1e-12)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_mode_gives_the_same_loss(backend):
    x, eps = _data(np.float64)
    m = _vae(backend=backend)
    train = m.loss(x, eps=eps)
    m.eval()
    assert m.loss(x, eps=eps).total == pytest.approx(train.total, rel=1e-12)


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


def test_backward_before_loss_is_a_state_error():
    with pytest.raises(StateError, match="before forward"):
        _vae().backward()


def test_config_and_architecture():
    m = VAE(784, 400, 20, rng=0)
    assert m.config() == dict(input_dim=784, hidden_dims=[400], latent_dim=20, dtype="float32")
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert shapes == {"encoder.0.weight": (784, 400), "encoder.0.bias": (400,),
                      "encoder.2.weight": (400, 40), "encoder.2.bias": (40,),
                      "decoder.0.weight": (20, 400), "decoder.0.bias": (400,),
                      "decoder.2.weight": (400, 784), "decoder.2.bias": (784,)}
    assert m.dtype == np.float32


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_workspaces_follow_the_batch_layout(backend):
    """Row- and column-major batches give the same loss and gradients, in their own layout."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (16, 12)).astype(np.float32)
    eps = rng.standard_normal((16, 3)).astype(np.float32)
    results = {}
    for order in "CF":
        model = VAE(12, (9, 7), 3, rng=0, backend=backend)
        xo = np.asarray(x, order=order)
        loss = model.loss(xo, eps=eps).total
        model.backward()
        flag = "f_contiguous" if order == "F" else "c_contiguous"
        for m in (model.encoder[0], model.decoder[2]):
            assert getattr(m._y.flags, flag), (order, m)
        assert getattr(model.bce._dlogits.flags, flag)
        results[order] = loss, {n: p.grad.copy() for n, p in model.named_parameters()}
    assert results["C"][0] == pytest.approx(results["F"][0], rel=1e-6)
    for n, g in results["C"][1].items():
        np.testing.assert_allclose(results["F"][1][n], g, rtol=1e-5, atol=1e-6, err_msg=n)


def test_fit_trains_on_column_major_batches():
    from npvae.train import fit
    model = VAE(12, 8, 2, rng=0)
    images = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    fit(model, images, epochs=1, batch_size=16, rng=0, progress=False)
    x = model.encoder[0]._x                      # the last batch the model saw
    assert x.shape == (8, 12) and x.flags.f_contiguous and not x.flags.c_contiguous
