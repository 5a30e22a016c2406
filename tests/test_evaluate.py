"""Tests of npvae.evaluate: the test ELBO and the importance-weighted NLL, on both back ends
(``backend="numpy"``: the model's own layers; ``"numba"``: npvae.fast.Evaluator)."""
import os


import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

import npvae
from npvae import VAE
from npvae.data import binarize, load_idx_split
from npvae.errors import DivergenceError, InputError, InputTypeError
from npvae.evaluate import binarize_inplace, evaluate_elbo, iw_nll
from numpy_warnings import warned_on_the_reference_only
from npvae.train import fit

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "mnist-sample")
BACKENDS = ["numba", "numpy"]


@pytest.fixture(scope="module")
def data():
    images, _ = load_idx_split(SAMPLE, "t10k")
    return images[:800], images[800:]


@pytest.fixture(scope="module")
def trained(data):
    """A small model trained briefly on the real sample (float32)."""
    train, test = data
    model = VAE(784, 64, 4, rng=0)
    fit(model, train, test, epochs=3, batch_size=64, rng=0, progress=False)
    return model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("binarized", [False, True])
def test_k1_equals_sampled_kl_elbo(data, backend, binarized):
    _, test = data
    model = VAE(784, 32, 3, rng=1)
    elbo = evaluate_elbo(model, test, batch_size=64, seed=3, kl="sample", binarize=binarized, backend=backend)
    nll = iw_nll(model, test, k=1, batch_size=64, seed=3, binarize=binarized, backend=backend)
    assert nll == pytest.approx(elbo.total, rel=1e-13, abs=0)
    assert elbo.total == pytest.approx(elbo.recon + elbo.kl)


def test_sampled_kl_averages_to_analytic_kl(trained, data):
    """E_q[log q - log p] is the analytic KL: the two estimates agree over many draws."""
    _, test = data
    x = np.repeat(test[:20], 200, axis=0)
    analytic = evaluate_elbo(trained, x, kl="analytic", seed=1)
    sampled = evaluate_elbo(trained, x, kl="sample", seed=2)
    assert sampled.kl == pytest.approx(analytic.kl, rel=0.02)
    assert sampled.recon == pytest.approx(analytic.recon, rel=0.02)


def test_iw_bound_tightens_with_k(trained, data):
    _, test = data
    elbo = evaluate_elbo(trained, test, seed=0)
    nll = {k: iw_nll(trained, test, k=k, seed=0) for k in (1, 5, 50)}
    assert nll[50] < nll[5] < nll[1]
    # the IW bound on log p(x) is above the ELBO: its NLL estimate is below the negative ELBO
    assert nll[5] < elbo.total and nll[50] < elbo.total
    assert nll[50] > elbo.total - 50  # and not absurdly far from it


@pytest.mark.parametrize("backend", BACKENDS)
def test_iw_matches_brute_force_with_full_densities(trained, data, backend):
    """Independent check: every density written out with its constants, then scipy's logsumexp."""
    _, test = data
    x = test[:30].astype(np.float64) / 255
    k, seed = 40, 5
    eps = np.random.default_rng(seed).standard_normal((k, len(x), 4), dtype=np.float32)
    mu, logvar = (a.astype(np.float64) for a in trained.encode(x.astype(np.float32)))
    sigma = np.exp(0.5 * logvar)
    log_w = np.empty((k, len(x)))
    for i in range(k):
        z = mu + sigma * eps[i]
        p = trained.decode(z.astype(np.float32)).astype(np.float64)
        log_px_z = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1)
        log_pz = norm.logpdf(z).sum(1)
        log_qz = norm.logpdf(z, loc=mu, scale=sigma).sum(1)
        log_w[i] = log_px_z + log_pz - log_qz
    expected = -(logsumexp(log_w, axis=0) - np.log(k))
    got = iw_nll(trained, test[:30], k=k, seed=seed, per_image=True, chunk_rows=10 ** 6, backend=backend)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunking_does_not_change_the_estimate(trained, data, backend):
    _, test = data
    a = iw_nll(trained, test[:50], k=7, batch_size=50, chunk_rows=100, backend=backend)      # 2 samples a chunk
    b = iw_nll(trained, test[:50], k=7, batch_size=50, chunk_rows=10 ** 6, backend=backend)  # all 7 at once
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logsumexp_is_stable_for_very_unlikely_images(trained, backend):
    # Inverted images: log w around -1e3 .. -1e4, exp() of which underflows to 0 in float64.
    x = np.ones((8, 784), np.float32)
    values = iw_nll(trained, x, k=20, per_image=True, backend=backend)
    assert np.isfinite(values).all() and (values > 700).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_image_and_float64(data, backend):
    _, test = data
    model = VAE(784, 16, 2, dtype=np.float64, rng=0)
    per = iw_nll(model, test[:20], k=3, per_image=True, backend=backend)
    assert per.shape == (20,) and per.dtype == np.float64
    assert per.mean() == pytest.approx(iw_nll(model, test[:20], k=3, backend=backend))
    elbo = evaluate_elbo(model, test[:20], kl="sample", seed=0, backend=backend)
    assert iw_nll(model, test[:20], k=1, seed=0, backend=backend) == pytest.approx(elbo.total, rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_elbo_is_the_training_loss_with_fixed_noise(trained, data, backend):
    _, test = data
    x = test[:50].astype(np.float32) / 255
    eps = np.random.default_rng(9).standard_normal((50, 4), dtype=np.float32)
    by_hand = trained.loss(x, 1.0, eps)
    got = evaluate_elbo(trained, test[:50], batch_size=50, seed=9, backend=backend)
    assert got.total == pytest.approx(by_hand.total, rel=1e-6)
    assert got.kl == pytest.approx(by_hand.kl, rel=1e-6)


def test_elbo_reproducible_independent_of_batching_and_leaves_model_alone(trained, data):
    _, test = data
    state = trained.rng.bit_generator.state
    a = evaluate_elbo(trained, test, batch_size=64, seed=0)
    assert evaluate_elbo(trained, test, batch_size=64, seed=0) == a
    assert evaluate_elbo(trained, test, batch_size=37, seed=0).total == pytest.approx(a.total, rel=1e-6)
    assert evaluate_elbo(trained, test, seed=1).total != a.total
    assert trained.rng.bit_generator.state == state           # the sampler stream is untouched
    assert trained.training                                    # back in training mode
    trained.eval()
    iw_nll(trained, test[:10], k=2)
    assert not trained.training                                # ... or left in eval mode
    trained.train()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_input_equals_uint8(trained, data, backend):
    _, test = data
    a = evaluate_elbo(trained, test[:40], backend=backend)
    assert evaluate_elbo(trained, test[:40].astype(np.float32) / 255, backend=backend) == a
    assert evaluate_elbo(trained, test[:40] / 255.0, backend=backend) == a


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_images_give_the_same_loss(trained, data, backend):
    _, test = data
    images = test[:40].copy()
    a = evaluate_elbo(trained, images, backend=backend), iw_nll(trained, images, k=3, backend=backend)
    images.flags.writeable = False               # as a memory-mapped data set would be
    assert (evaluate_elbo(trained, images, backend=backend), iw_nll(trained, images, k=3, backend=backend)) == a


# -- the two back ends -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_both_back_ends_give_the_same_estimates_to_round_off(data, dtype, tol):
    train, test = data
    model = VAE(784, 32, 4, dtype=dtype, rng=0)
    fit(model, train[:200], epochs=1, batch_size=50, rng=0, progress=False)   # not a fresh model
    for binarized in (False, True):
        kwargs = dict(batch_size=64, seed=2, binarize=binarized)
        for kl in ("analytic", "sample"):
            fast = evaluate_elbo(model, test, kl=kl, backend="numba", **kwargs)
            ref = evaluate_elbo(model, test, kl=kl, backend="numpy", **kwargs)
            assert np.allclose(fast, ref, rtol=tol, atol=0), (kl, binarized)
        fast = iw_nll(model, test, k=7, chunk_rows=200, per_image=True, backend="numba", **kwargs)
        ref = iw_nll(model, test, k=7, chunk_rows=200, per_image=True, backend="numpy", **kwargs)
        assert np.allclose(fast, ref, rtol=tol, atol=0), binarized


def test_the_back_end_defaults_to_npvae_backend_then_numba(trained, data, monkeypatch):
    _, test = data
    by_name = {b: (evaluate_elbo(trained, test, backend=b), iw_nll(trained, test, k=2, backend=b)) for b in BACKENDS}
    assert by_name["numba"] != by_name["numpy"]          # (float32: the two differ in the last bits)
    monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    assert (evaluate_elbo(trained, test), iw_nll(trained, test, k=2)) == by_name["numba"]
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    assert (evaluate_elbo(trained, test), iw_nll(trained, test, k=2)) == by_name["numpy"]
    monkeypatch.setenv("NPVAE_BACKEND", "cuda")
    with pytest.raises(InputError, match="NPVAE_BACKEND must be one of"):
        evaluate_elbo(trained, test)
    with pytest.raises(InputError, match=r"backend must be one of \('numba', 'numpy'\).*got 'torch'"):
        iw_nll(trained, test, backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_iw_nll_reports_progress_after_each_batch(trained, data, backend):
    _, test = data
    calls = []
    value = iw_nll(trained, test[:130], k=3, batch_size=50, seed=4, backend=backend,
                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(50, 130), (100, 130), (130, 130)]
    assert value == iw_nll(trained, test[:130], k=3, batch_size=50, seed=4, backend=backend)
    with pytest.raises(InputTypeError, match="progress must be callable"):
        iw_nll(trained, test, progress="yes")


def test_iw_nll_reports_progress_within_a_batch_when_its_samples_come_in_chunks(trained, data):
    """A large k takes long per batch: the bar moves with each chunk of samples, not each batch."""
    _, test = data
    calls = []
    iw_nll(trained, test[:130], k=8, batch_size=50, chunk_rows=100,      # 2 samples a chunk (3 for the last 30)
           progress=lambda done, total: calls.append(done))
    assert calls == [12, 25, 37, 50, 62, 75, 87, 100, 111, 122, 130]


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_leaves_the_model_alone(trained, data, backend):
    _, test = data
    state = {k: v.copy() for k, v in trained.state_dict().items()}
    rng = trained.rng.bit_generator.state
    evaluate_elbo(trained, test[:100], backend=backend)
    iw_nll(trained, test[:100], k=3, backend=backend)
    assert all(np.array_equal(state[k], v) for k, v in trained.state_dict().items())
    assert trained.rng.bit_generator.state == rng


def test_binarize_inplace_matches_data_binarize():
    x = np.random.default_rng(0).random((5, 9)).astype(np.float32)
    expected = binarize(x, np.random.default_rng(4))
    got = x.copy()
    binarize_inplace(got, np.random.default_rng(4), np.empty_like(x))
    assert np.array_equal(got, expected) and set(np.unique(got)) <= {0.0, 1.0}


@pytest.mark.parametrize("k, error", [(0, InputError), (-3, InputError), (1.5, InputTypeError),
                                      (True, InputTypeError)])
def test_k_must_be_positive(trained, data, k, error):
    with pytest.raises(error, match="k"):
        iw_nll(trained, data[1], k=k)


def test_argument_errors(trained, data):
    _, test = data
    with pytest.raises(InputError, match="kl must be"):
        evaluate_elbo(trained, test, kl="exact")
    with pytest.raises(InputError, match="images.*784"):
        evaluate_elbo(trained, np.zeros((3, 10), np.uint8))
    with pytest.raises(InputError, match="images.*empty"):
        iw_nll(trained, np.zeros((0, 784), np.uint8))
    with pytest.raises(InputTypeError, match="VAE"):
        iw_nll(object(), test)
    with pytest.raises(InputError, match="batch_size"):
        evaluate_elbo(trained, test, batch_size=0)
    with pytest.raises(InputTypeError, match="binarize"):
        iw_nll(trained, test, binarize="no")


def test_odd_arguments_of_the_evaluation_functions_are_clear_errors():
    model = VAE(784, 16, 2, rng=0)
    images = np.zeros((4, 784), np.uint8)
    with pytest.raises(InputError, match="kl must be 'analytic' or 'sample'"):
        evaluate_elbo(model, images, kl=np.array(["analytic", "x"]))
    with pytest.raises(InputTypeError, match="per_image must be True or False, got 'yes'"):
        iw_nll(model, images, k=2, per_image="yes")
    with pytest.raises(InputError, match="chunk_rows.*is available"):
        iw_nll(model, images, k=10**12, chunk_rows=10**15)


def test_iw_nll_refuses_a_chunk_by_what_it_adds_not_by_a_training_step(monkeypatch):
    """A 784-400-20 chunk of 1,000 rows adds about 20 MB (every decoder layer's output, the rows'
    images, eps and z, the fast path's workspace); counting a training step's parameters, gradients and
    Adam moments (~53 MB) refused the NLL of runs that had just trained under a ulimit -v."""
    model = VAE(784, 400, 20, rng=0)
    images = np.zeros((50, 784), np.uint8)                  # k=20 samples of 50 images: 1,000 rows a chunk
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 30 * 10**6)
    assert np.isfinite(iw_nll(model, images, k=20, backend="numpy"))
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 5 * 10**6)
    with pytest.raises(InputError, match=r"sends 1,000 rows through the model at once, about 2\d\.\d MB, but "
                                         r"5\.0 MB is available: free some memory, or pass a smaller chunk_rows"):
        iw_nll(model, images, k=20, backend="numpy")
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 10**6)
    with pytest.raises(InputError, match=r"k=1, batch_size=50 and chunk_rows=1024 sends 50 rows .* smaller "
                                         r"batch_size \(default 500\): one sample of a whole batch"):
        iw_nll(model, images, k=1, backend="numpy", chunk_rows=1024)     # chunk_rows cannot help


def test_evaluate_elbo_refuses_a_batch_this_machine_cannot_hold(monkeypatch):
    """As iw_nll does: a bare MemoryError came after minutes of paging."""
    model = VAE(784, 400, 20, rng=0)
    images = np.broadcast_to(np.uint8(3), (10**6, 784))
    monkeypatch.setattr(npvae.footprint, "available_bytes", lambda: 10**9)
    with pytest.raises(InputError, match=r"evaluate_elbo with batch_size=1000000000 sends 1,000,000 rows through "
                                         r"the model at once, about 2\d\.\d GB, but 1\.0 GB is available: free "
                                         r"some memory, or pass a smaller batch_size \(default 1000\)"):
        evaluate_elbo(model, images, batch_size=10**9, backend="numpy")
    assert np.isfinite(evaluate_elbo(model, images[:200], backend="numpy").total)
    before = [p.data.copy() for p in model.parameters()]         # fit evaluates in its batch_size:
    with pytest.raises(InputError, match=r"^fit\(test_images=\) with batch_size=1000000 sends 1,000,000 rows .* "
                                         r"smaller batch_size \(default 128\)$"):        # before an epoch trains
        fit(model, images[:100], images, epochs=1, batch_size=10**6, progress=False, backend="numpy")
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


def test_the_memory_a_chunk_adds_counts_each_array_its_docstring_lists_once():
    """evaluation_bytes per row: the decoder's outputs (z is the sampler's, counted there; hidden
    outputs twice), the images five times, the encoder's outputs repeated and eps, std, z (five
    code widths), room for the encoder's layers."""
    from npvae.footprint import evaluation_bytes
    assert evaluation_bytes(784, 400, 20, 1000) == 4 * 1000 * ((400 + 784) + 400 + 5 * 784 + 5 * 20 + (400 + 40))
    assert evaluation_bytes(784, (64, 32), 5, 10, np.float64) == \
        8 * 10 * ((32 + 64 + 784) + (32 + 64) + 5 * 784 + 5 * 5 + (64 + 32 + 10))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dims", [(784, 64, 8), (784, 400, 20)])
def test_the_memory_a_chunk_adds_is_no_more_than_its_estimate(dims, backend):
    """What a check of the memory available lets through must not then fail: NumPy reports its
    allocations to tracemalloc, and the peak of an iw_nll of 10,000 rows at once stays within
    evaluation_bytes (the reference BCE's per-pixel temporaries took 1.19 times the old estimate)."""
    import tracemalloc

    from npvae.footprint import evaluation_bytes
    model = VAE(*dims, rng=0)
    x = np.random.default_rng(0).random((50, dims[0])).astype(np.float32)
    iw_nll(model, x[:2], k=2, backend=backend)            # compiled, and the workspaces' first shapes
    tracemalloc.start()
    try:
        iw_nll(model, x, k=200, batch_size=50, chunk_rows=10**4, backend=backend)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= evaluation_bytes(*dims, 200 * 50)


def test_a_vae_of_another_class_of_that_name_is_told_why():
    """After importlib.reload(npvae.model) a notebook holds two VAE classes: "must be an npvae.VAE,
    got VAE" alone reads as a contradiction. (A class of that name stands in for the reloaded
    one: reloading here would leave the rest of the tests with two.)"""
    reloaded = type("VAE", (), {"__module__": "npvae.model"})()
    with pytest.raises(InputTypeError, match=r"got VAE of another class of that name: importlib.reload"):
        evaluate_elbo(reloaded, np.zeros((4, 784), np.float32))
    for other, got in ((type("VAE", (), {})(), "VAE"), (None, "NoneType")):     # a PyTorch user's own VAE, say
        with pytest.raises(InputTypeError, match=rf"model must be an npvae.VAE, got {got}$"):
            evaluate_elbo(other, np.zeros((4, 784), np.float32))


def test_the_fast_evaluator_checks_what_it_is_given():
    from npvae.fast import Evaluator
    with pytest.raises(InputTypeError, match="model must be an npvae.VAE"):
        Evaluator(None)
    ev = Evaluator(VAE(784, 16, 2, rng=0))
    with pytest.raises(InputTypeError, match="float array in \\[0, 1\\]"):
        ev.prepare(np.zeros((2, 784), np.uint8))
    with pytest.raises(InputTypeError, match="float array"):
        ev.prepare([[0.0] * 784])
    with pytest.raises(InputError, match="2-D"):
        ev.prepare(np.zeros(784))
    with pytest.raises(InputError, match="784 features"):
        ev.prepare(np.zeros((2, 100)))
    x = ev.prepare(np.full((2, 784), 0.5, np.float32))
    z = np.zeros((2, 2), np.float32)
    unprepared = {"C order": np.ascontiguousarray(x), "float64": np.asfortranarray(x, np.float64),
                  "one row": x[:1], "pixels": np.asfortranarray(x * 255).astype(np.uint8)}
    for what, bad in unprepared.items():            # numbers, but wrong ones: refused by both calls
        with pytest.raises(InputError, match=r"x must be prepare\(x\)'s batch of shape \(batch, 784\)"):
            ev.encode(bad)
    with pytest.raises(InputError, match=r"x must be prepare\(x\)'s batch of shape \(batch, 784\), got a float32 "
                                         r"array of shape \(2, 784\) not in the column-major layout prepare\(x\) "
                                         r"makes: pass prepare\(x\)'s result$"):
        ev.encode(unprepared["C order"])
    with pytest.raises(InputError, match=r"z must be a float32 array, a row per row of x, of shape \(2, 2\), "
                                         r"got a float32 array of shape \(1, 2\)$"):
        ev.recon_rows(z[:1], x)                     # one code for two images
    with pytest.raises(InputError, match=r"z must be a float32 array"):
        ev.recon_rows(z.astype(np.float64), x)


def test_the_fast_evaluator_prepares_each_batch_from_its_own_values():
    """A float64 batch after a float32 one of the same shape is prepared from its own values, not
    rounded into the batch the first left behind (and the other way round); both in the model's type."""
    from npvae.fast import Evaluator
    ev = Evaluator(VAE(784, 16, 2, rng=0, dtype=np.float64))
    x = np.random.default_rng(0).random((3, 784))
    for first, then in ((np.float32, np.float64), (np.float64, np.float32)):
        ev.prepare(x.astype(first))
        prepared = ev.prepare(x.astype(then))
        assert prepared.dtype == np.float64
        np.testing.assert_array_equal(prepared, x.astype(then).astype(np.float64))
    full = ev.recon_rows(np.zeros((3, 2)), ev.prepare(x)).copy()
    ev.prepare(x.astype(np.float32))
    np.testing.assert_array_equal(ev.recon_rows(np.zeros((3, 2)), ev.prepare(x)), full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_whose_variance_overflows_evaluates_alike_on_both_paths(backend):
    """Not an error naming an argument the user never passed: the same non-finite loss as the fast path."""
    model = VAE(784, 8, 3, rng=0)
    model.encoder[2].bias.data[3:] = 200.0              # logvar = 200: exp(100) overflows float32
    x = np.random.default_rng(0).random((20, 784)).astype(np.float32)
    with warned_on_the_reference_only(backend):
        parts = evaluate_elbo(model, x, backend=backend, check_finite=False)
    assert not np.isfinite(parts.total)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_whose_codes_overflow_is_an_error_not_a_nan(backend):
    """Finite weights, codes whose variance overflows: what a diverged fast-path loop can leave."""
    model = VAE(12, 8, 2, rng=0)
    model.encoder[2].bias.data[2:] = 200.0          # logvar = 200: exp overflows float32
    images = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    with warned_on_the_reference_only(backend):
        with pytest.raises(DivergenceError, match=r"evaluate_elbo: the loss on these images is (nan|inf) .*"
                                                  r"parameters are finite.*check_finite=False"):
            evaluate_elbo(model, images, backend=backend)
        with pytest.raises(DivergenceError, match=r"iw_nll: the estimate for image 0 is (nan|inf) \(10 of 10"):
            iw_nll(model, images, k=3, backend=backend)
        assert not np.isfinite(evaluate_elbo(model, images, backend=backend, check_finite=False).total)
        assert not np.isfinite(iw_nll(model, images, k=3, backend=backend, check_finite=False))


def test_the_progress_callback_runs_under_the_callers_numpy_settings():
    """The fast path's evaluation is quiet about its own NaN and inf, not about the caller's code."""
    model = VAE(12, 8, 2, rng=0)
    images = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="overflow"):
        iw_nll(model, images, k=3, backend="numba", progress=lambda done, total: np.exp(np.float32(100)))


def test_a_value_just_outside_0_1_is_shown_as_it_is_not_rounded_into_the_range():
    model = VAE(12, 8, 2, rng=0)
    x = np.full((2, 12), 0.5, np.float32)
    x[0, 0] = np.nextafter(np.float32(1), np.float32(2))       # round-off after a normalisation
    with pytest.raises(InputError, match=r"got values in \[0\.5, 1\.0000001\]; if these are rounding errors"):
        model.loss(x)
    x[0, 0] = np.float32(-1e-8)
    with pytest.raises(InputError, match=r"got values in \[-1e-08, 0\.5\]; if these are rounding errors"):
        model.loss(x)
    x[0, 0], x[1, 0] = -2.3250307, 1.9602583             # far outside: four digits say it
    with pytest.raises(InputError, match=r"got values in \[-2\.325, 1\.96\]; standardized or in \[-1, 1\]\?"):
        model.loss(x)
    x[1, 0] = 0.5                                         # far below 0, the top in range: no rounding error
    with pytest.raises(InputError, match=r"got values in \[-2\.325, 0\.5\]; standardized or in \[-1, 1\]\?"):
        model.loss(x)


def test_the_divide_by_255_hint_comes_only_for_what_looks_like_pixels():
    model = VAE(12, 8, 2, rng=0)
    images = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    with pytest.raises(InputError, match=r"got values in \[.*\]; for 0\.\.255 pixels pass uint8 or divide by 255"):
        evaluate_elbo(model, images * 255)
    with pytest.raises(InputError, match=r"got values in \[[0-9.]+, 1\.[0-9]+\]$"):
        evaluate_elbo(model, images * 1.5)


@pytest.mark.parametrize("part", ["kl", "bce", "sampler"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_model_with_a_prior_or_likelihood_of_its_own_is_not_given_the_stock_vaes_numbers(part, backend):
    """Evaluation computes the stock BCE and the KL to N(0, I): for a model whose kl or bce is
    another, that is another model's number (14.9 nats of KL where its own is 3.6), so it is
    refused, on both back ends, and by fit before any training."""
    model = VAE(784, 16, 2, rng=0)
    own = {"kl": type("WiderPrior", (npvae.KL,), {}), "bce": type("GaussNLL", (npvae.BCEWithLogits,), {}),
           "sampler": type("StudentT", (npvae.Sampler,), {})}[part]
    setattr(model, part, own(0) if part == "sampler" else own())   # subclasses: they would compute their own
    x = np.random.default_rng(0).random((20, 784)).astype(np.float32)
    before = [p.data.copy() for p in model.parameters()]
    stock = {"kl": "KL", "bce": "BCEWithLogits", "sampler": "Sampler"}[part]
    words = (rf"model\.{part} is a {type(getattr(model, part)).__name__}, not the stock VAE's npvae\.{stock}: "
             rf".* samples and scores as the stock VAE")
    with pytest.raises(InputTypeError, match=r"evaluate_elbo: " + words):
        evaluate_elbo(model, x, backend=backend)
    with pytest.raises(InputTypeError, match=r"iw_nll: " + words):
        iw_nll(model, x, k=2, backend=backend)
    with pytest.raises(InputTypeError, match=r"fit\(test_images=\): " + words):
        fit(model, x, x[:5], epochs=1, progress=False, backend=backend)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    if backend == "numpy":                  # training alone runs the model's own terms
        fit(model, x, epochs=1, progress=False, backend="numpy")


def _model_and_uint8_images():
    model = VAE(12, 8, 2, rng=0)
    images = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    return model, images


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_elbo_total_is_recon_plus_beta_kl(backend):                        # E10
    model, images = _model_and_uint8_images()
    p = evaluate_elbo(model, images, beta=0.25, backend=backend)
    assert p.total == pytest.approx(p.recon + 0.25 * p.kl, rel=1e-12)
    assert evaluate_elbo(model, images, beta=0.0, backend=backend).total == pytest.approx(p.recon)   # E21


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_infinite_elbo_is_a_divergence_too(backend):                     # E11
    model, images = _model_and_uint8_images()
    model.encoder[2].bias.data[2:] = 100.0        # exp(logvar) overflows float32: KL = inf, recon finite
    assert evaluate_elbo(model, images, backend=backend, check_finite=False).total == np.inf
    with pytest.raises(DivergenceError):
        evaluate_elbo(model, images, backend=backend)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:divide by zero:RuntimeWarning")
@pytest.mark.parametrize("dtype, bias", [(np.float32, 1e36), (np.float64, 1e306)])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_image_no_sample_can_explain_has_an_infinite_nll_not_a_nan(backend, dtype, bias):
    """Every log weight -inf (each sample's BCE overflows): -log p(x) is +inf, as the sampled-KL ELBO says."""
    model = VAE(784, 32, 4, rng=0, dtype=dtype)
    model.decoder[-1].weight.data[...] = 0
    model.decoder[-1].bias.data[...] = bias       # logits of 1e36: the BCE of any pixel below 1 is inf
    images = np.random.default_rng(0).integers(0, 255, (6, 784), dtype=np.uint8)
    elbo = evaluate_elbo(model, images, kl="sample", check_finite=False, backend=backend).total
    assert elbo == np.inf
    for k in (1, 5):
        assert iw_nll(model, images, k=k, check_finite=False, backend=backend) == np.inf
    with pytest.raises(DivergenceError, match=r"iw_nll: the estimate for image 0 is inf \(6 of 6"):
        iw_nll(model, images, k=3, backend=backend)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_bad_image_among_good_ones_is_a_divergence(backend):            # E17
    model, images = _model_and_uint8_images()
    enc0, enc2 = model.encoder[0], model.encoder[2]
    enc0.weight.data[:, 0] = 0.0
    enc0.weight.data[3, 0] = 1.0                   # hidden unit 0 = relu(pixel 3)
    enc0.bias.data[0] = 0.0
    enc2.weight.data[0, 2:] = 1e4                  # logvar += 1e4 * unit 0: overflows where pixel 3 is on
    x = images.copy()
    x[:, 3] = 0
    x[7, 3] = 255
    with pytest.raises(DivergenceError, match=r"image 7 .*\(1 of 40"):
        iw_nll(model, x, k=3, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_evaluation_binarizes_with_its_own_stream(backend):                 # E02
    model, images = _model_and_uint8_images()
    pre = binarize(images / np.float32(255), np.random.default_rng([5, 1]))
    a = evaluate_elbo(model, images, binarize=True, seed=5, backend=backend)
    b = evaluate_elbo(model, pre, binarize=False, seed=5, backend=backend)
    assert a.total == pytest.approx(b.total, rel=1e-6)


def test_a_stock_vae_made_after_npvae_losses_was_reloaded_is_still_evaluated():
    """importlib.reload(npvae.losses) makes new KL and BCEWithLogits classes of the same code.
    (Classes of those names and modules stand in for them: reloading here would leave the
    rest of the tests with two.)"""
    model = VAE(12, 8, 2, rng=0)
    for part, kind in (("kl", npvae.KL), ("bce", npvae.BCEWithLogits), ("sampler", npvae.Sampler)):
        again = type(kind.__name__, (kind,), {"__module__": kind.__module__})
        setattr(model, part, again(0) if part == "sampler" else again())
    x = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    assert evaluate_elbo(model, x, backend="numpy") == evaluate_elbo(VAE(12, 8, 2, rng=0), x, backend="numpy")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_layer_of_another_dtype_is_named_before_anything_runs(backend):
    """A float64 Dense put into a float32 VAE refused its input on the reference ("x has dtype
    float32 ...; convert with x.astype(np.float64)"), an array the user never passed."""
    model = VAE(20, 8, 2, rng=0)
    model.decoder[2] = npvae.Dense(8, 20, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).random((10, 20)).astype(np.float32)
    words = r"model\.decoder\.2 is Dense\(8 -> 20, dtype=float64\), but the model computes in float32: " \
            r"make that layer with dtype=np\.float32"
    for call in (evaluate_elbo, iw_nll, lambda m, x, backend: fit(m, x, epochs=1, progress=False, backend=backend)):
        with pytest.raises(InputTypeError, match=words):
            call(model, x, backend=backend)


def test_a_layer_of_ones_own_with_no_dtype_is_not_refused_for_it():
    class Halved(npvae.ReLU):
        dtype = None                                # "any": it computes in its input's type

        def forward(self, x):
            return super().forward(x) * 0.5

        def backward(self, grad):
            return super().backward(grad * 0.5)
    model = VAE(20, 8, 2, rng=0)
    model.encoder[1] = Halved()
    x = np.random.default_rng(0).random((10, 20)).astype(np.float32)
    assert np.isfinite(evaluate_elbo(model, x, backend="numpy").total)
    assert np.isfinite(fit(model, x, epochs=1, progress=False, backend="numpy")["train_loss"][0])


def test_images_that_are_not_an_array_are_refused_saying_how_to_make_one():
    model = VAE(6, 4, 2, rng=0)
    rows = [[0.5] * 6, [0.25] * 6]
    for call, name in ((evaluate_elbo, "images"), (iw_nll, "images"),
                       (lambda m, x: fit(m, x, epochs=1, progress=False), "train_images")):
        with pytest.raises(InputTypeError, match=rf"^{name} must be a numpy array of shape \(N, 6\), got list "
                                                 rf"\(np\.asarray\({name}\) makes one, if every row has the "
                                                 rf"same length\)$"):
            call(model, rows)
        with pytest.raises(InputTypeError, match=rf"^{name} must be a numpy array of shape \(N, 6\), got NoneType$"):
            call(model, None)
    assert np.isfinite(evaluate_elbo(model, np.asarray(rows, np.float32)).total)


def test_the_hints_for_images_given_in_another_form_are_ones_that_work():
    """Each hint, followed, gives images the function takes; no hint where none would."""
    model = VAE(6, 4, 2, rng=0)
    images = np.random.default_rng(0).integers(0, 256, (5, 6), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    with pytest.raises(InputTypeError, match=r"got tuple \(a pair, such as load_split's \(images, labels\)\? "
                                             r"pass its images: images, labels = \.\.\.\)$"):
        evaluate_elbo(model, (images, labels))
    with pytest.raises(InputTypeError, match=r"got list \(a pair, such as load_split's"):
        evaluate_elbo(model, [images, labels])
    with pytest.raises(InputTypeError, match=r"got tuple \(np\.asarray\(images\) makes one, if every row has the "
                                             r"same length\)$"):
        evaluate_elbo(model, (images[0], images[1]))     # two images: asarray does make the set
    for sets in ((images, labels, labels), [images, images], [np.zeros((2, 3))] * 5):   # no np.asarray hint:
        with pytest.raises(InputTypeError, match=r"\(several arrays: join sets of rows with np\.concatenate, or "
                                                 r"np\.stack images and reshape them to rows\)$"):
            evaluate_elbo(model, sets)                                      # it fails, or makes a 3-D array
    assert np.isfinite(evaluate_elbo(model, np.concatenate([images, images])).total)
    assert np.isfinite(evaluate_elbo(model, np.asarray((images[0], images[1]))).total)
    with pytest.raises(InputTypeError, match=r"got float32$"):
        evaluate_elbo(model, np.float32(0.5))
    with pytest.raises(InputError, match=r"got shape \(5,\)$"):                      # labels: not "one sample"
        evaluate_elbo(model, labels)
    with pytest.raises(InputError, match=r"for one sample use images\[None, :\]"):
        evaluate_elbo(model, images[0])
    with pytest.raises(InputError, match=r"\(shape \(6, 5\)\); for one sample per column use images\.T$"):
        iw_nll(model, np.ascontiguousarray(images.T), k=2)
    assert np.isfinite(evaluate_elbo(model, images[0][None, :]).total)
    assert np.isfinite(iw_nll(model, np.ascontiguousarray(images.T).T, k=2))


def test_a_dataset_given_as_images_is_told_which_of_its_arrays_to_pass(tmp_path):
    from npvae.data import Dataset
    images = np.zeros((3, 4), np.uint8)
    data = Dataset("toy", images, np.zeros(3, np.uint8), images, np.zeros(3, np.uint8), str(tmp_path))
    with pytest.raises(InputTypeError, match=r"got Dataset \(a Dataset\? pass its \.train_images or \.test_images\)$"):
        evaluate_elbo(VAE(4, 3, 2, rng=0), data)


def test_a_probability_bce_in_place_of_the_logits_one_is_told_which_class_evaluation_needs():
    model = VAE(6, 4, 2, rng=0)
    model.bce = npvae.BCE()
    with pytest.raises(InputTypeError, match=r"^evaluate_elbo: model\.bce is a BCE, not the stock VAE's "
                                             r"npvae\.BCEWithLogits: "):
        evaluate_elbo(model, np.zeros((2, 6), np.float32))


class _Dropout(npvae.Module):
    """A dropout of one's own: on in training mode (drawing from its own Generator), off in evaluation mode."""

    def __init__(self, p, rng):
        super().__init__()
        self.p, self.rng, self.modes = p, rng, []

    def forward(self, x):
        self.modes.append(self.training)
        if not self.training:
            return x
        mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / (1 - self.p)
        self.keep(mask=mask)
        return x * mask

    def backward(self, grad_out):
        return grad_out * self.saved("mask")


def _with_dropout(model, rng):
    """``model`` with a dropout between its encoder's ReLU and its last Dense (the Dense layers shared)."""
    dropout = _Dropout(0.5, rng)
    model.encoder = npvae.Sequential(model.encoder[0], model.encoder[1], dropout, model.encoder[2])
    return dropout


def test_evaluation_runs_a_layer_of_ones_own_in_evaluation_mode_and_gives_each_module_its_mode_back(data):
    _, test = data
    plain = VAE(784, 32, 3, rng=0)
    model = VAE(784, 32, 3, rng=0)
    dropout = _with_dropout(model, np.random.default_rng(1))
    model.encoder[0].eval()                             # a module set apart stays as it was set
    drawn = dropout.rng.bit_generator.state
    # in evaluation mode the dropout is the identity: the model's numbers are the plain model's
    assert evaluate_elbo(model, test, backend="numpy") == evaluate_elbo(plain, test, backend="numpy")
    assert iw_nll(model, test[:50], k=3, backend="numpy") == iw_nll(plain, test[:50], k=3, backend="numpy")
    assert dropout.rng.bit_generator.state == drawn      # nothing drawn from a training stream
    assert model.training and dropout.training and model.encoder.training and not model.encoder[0].training


def test_fits_test_loss_is_the_evaluation_mode_loss_and_its_steps_run_in_training_mode(data):
    train, test = data
    model = VAE(784, 32, 3, rng=0)
    dropout = _with_dropout(model, np.random.default_rng(1))
    model.eval()                                        # fit trains in training mode whatever it is given
    history = fit(model, train, test, epochs=1, batch_size=100, backend="numpy", progress=False, rng=0)
    assert dropout.training                             # trained with the dropout on, and left in training mode
    expected = evaluate_elbo(model, test, batch_size=100, backend="numpy")
    assert history[-1]["test_loss"] == expected.total


def test_each_epoch_of_fit_trains_in_training_mode_whatever_a_callback_left(data):
    """A PyTorch habit: ``model.eval()`` in a callback to look at the model. The next epoch trains in
    training mode all the same."""
    train, _ = data
    model = VAE(784, 32, 3, rng=0)
    dropout = _with_dropout(model, np.random.default_rng(1))

    def look(record, model):
        model.eval()
    fit(model, train, epochs=2, batch_size=200, backend="numpy", progress=False, rng=0, callback=look)
    assert dropout.modes == [True] * 8                  # 2 epochs of 4 steps, each with the dropout on


class _Interrupted(npvae.Module):
    """A layer of one's own on which evaluation is interrupted (a Ctrl-C in a notebook)."""

    def forward(self, x):
        raise KeyboardInterrupt

    def backward(self, grad_out):
        return grad_out


@pytest.mark.parametrize("evaluate", [lambda m, x: evaluate_elbo(m, x, backend="numpy"),
                                      lambda m, x: iw_nll(m, x, k=2, backend="numpy")], ids=["elbo", "iw_nll"])
def test_an_interrupted_evaluation_gives_each_module_its_mode_back(evaluate):
    model = VAE(12, 8, 2, rng=0)
    model.encoder = npvae.Sequential(model.encoder[0], model.encoder[1], _Interrupted(), model.encoder[2])
    model.encoder[0].eval()
    x = np.random.default_rng(0).random((8, 12)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, x)
    assert model.training and model.encoder.training and model.encoder[2].training and not model.encoder[0].training


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_last_batch_of_one_image_counts(backend):
    """N % batch_size == 1: the last batch holds one image, which the mean must count."""
    model = VAE(784, 16, 2, rng=0)
    x = (np.random.default_rng(0).random((3, 784)) * 255).astype(np.uint8)
    by2, by3 = (evaluate_elbo(model, x, batch_size=b, backend=backend) for b in (2, 3))
    assert by2.total == pytest.approx(by3.total, rel=1e-5)
    one = evaluate_elbo(model, x[:1], kl="sample", backend=backend)     # k=1: the same number, documented
    assert one.recon > 100 and iw_nll(model, x[:1], k=1, backend=backend) == pytest.approx(one.total, rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_whose_codes_themselves_overflow_evaluates_alike_on_both_paths(backend):
    """Finite weights, codes (not only their variance) that overflow: model.encode refuses them,
    but evaluation gives check_finite the non-finite value, as the fast path does, and fit its
    own epoch's message."""
    model = VAE(12, 5, 3, rng=0)
    model.encoder[0].bias.data[:] = 10.0            # every hidden unit on, at 10 or more
    model.encoder[2].weight.data[:, 0] = 3e38       # so mu's first code overflows
    images = np.full((4, 12), 0.5, np.float32)
    with warned_on_the_reference_only(backend):
        assert not np.isfinite(evaluate_elbo(model, images, backend=backend, check_finite=False).total)
        assert not np.isfinite(iw_nll(model, images, k=2, backend=backend, check_finite=False))
        with pytest.raises(DivergenceError, match=r"^evaluate_elbo: the loss on these images is"):
            evaluate_elbo(model, images, backend=backend)


def test_a_subclass_encodes_own_divergence_error_is_not_taken_for_overflowing_codes():
    """The reference falls back to the encoder's codes only when they are what overflowed: a
    DivergenceError of a subclass's own encode, whose codes are finite, is the subclass's to say."""
    class Guarded(VAE):
        def encode(self, x):
            mu, logvar = super().encode(x)
            if (np.abs(mu) > 1e3).any():
                raise DivergenceError("Guarded.encode: a mean beyond 1e3")
            return mu, logvar
    model = Guarded(12, 5, 3, rng=0)
    model.encoder[2].bias.data[0] = 1e4             # finite codes, a mean Guarded refuses
    with pytest.raises(DivergenceError, match=r"^Guarded\.encode: a mean beyond 1e3$"):
        evaluate_elbo(model, np.full((4, 12), 0.5, np.float32), backend="numpy", check_finite=False)
