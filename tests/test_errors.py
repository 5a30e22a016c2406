"""Bad input to the model, layers and optimizers: npvae's own error, naming the argument.

Each case asserts the exception type (an npvae error, which is also a ValueError or
TypeError) and that the message names the argument and says what arrived.
"""
import warnings

import numpy as np
import pytest
from cli_util import SAMPLE

import npvae
from npvae.errors import InputError, InputTypeError, NpvaeError, StateDictError, StateError


@pytest.fixture(scope="module")
def model():
    return npvae.VAE(12, 8, 3, rng=0)


def good(n=4, d=12):
    return np.random.default_rng(0).random((n, d)).astype(np.float32)


@pytest.mark.parametrize("x, exc, words", [
    (np.zeros((4, 11), np.float32), InputError, ["x", "12 features", "(4, 11)"]),
    (np.zeros(12, np.float32), InputError, ["x", "2-D", "x[None, :]"]),
    (np.zeros((4, 3, 4), np.float32), InputError, ["x", "2-D", "reshape"]),
    (np.zeros((4, 1, 3, 4), np.float32), InputError, ["x", "2-D", "x.reshape(len(x), -1)"]),   # (N, C, H, W)
    (np.zeros((0, 12), np.float32), InputError, ["x", "empty"]),
    (np.full((4, 12), np.nan, np.float32), InputError, ["x", "NaN"]),
    (np.full((4, 12), np.inf, np.float32), InputError, ["x", "inf"]),
    (np.full((4, 12), 2.0, np.float32), InputError, ["x", "[0, 1]"]),
    (np.full((4, 12), -0.5, np.float32), InputError, ["x", "[0, 1]"]),
    (np.zeros((4, 12), np.uint8), InputTypeError, ["x", "uint8", "255"]),
    (np.zeros((4, 12), np.int64), InputTypeError, ["x", "int64", "255"]),
    (np.zeros((4, 12), bool), InputTypeError, ["x"]),
    ("not an array", InputTypeError, ["x", "str"]),
    (None, InputTypeError, ["x", "NoneType"]),
])
def test_loss_rejects_bad_batches(model, x, exc, words):
    with pytest.raises(exc) as info:
        model.loss(x)
    assert isinstance(info.value, NpvaeError)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_loss_rejects_bad_beta(model):
    with pytest.raises(InputError, match="beta"):
        model.loss(good(), beta=-1.0)
    with pytest.raises(InputTypeError, match="beta"):
        model.loss(good(), beta="1")


def test_float64_input_is_converted_not_broadcast(model):
    parts = model.loss(good().astype(np.float64))
    assert np.isfinite(parts.total)


@pytest.mark.parametrize("method", ["encode", "reconstruct", "forward"])
def test_inference_methods_validate(model, method):
    with pytest.raises(InputError, match="12 features"):
        getattr(model, method)(np.zeros((2, 13), np.float32))
    with pytest.raises(InputTypeError, match="255"):
        getattr(model, method)(np.zeros((2, 12), np.uint8))


def test_decode_validates_latent_width(model):
    with pytest.raises(InputError, match="z must have 3 features"):
        model.decode(np.zeros((2, 4), np.float32))


def test_a_finite_value_beyond_the_models_float_range_is_not_called_nan(model):
    assert model.dtype == np.float32
    with pytest.raises(InputError, match=r"z contains a value beyond float32's range \(first at row 1, column 2\)"):
        model.decode(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1e300]]))
    with pytest.raises(InputError, match="z contains NaN or inf"):
        model.decode(np.array([[0.0, np.inf, 0.0]]))


@pytest.mark.parametrize("n, exc", [(0, InputError), (-3, InputError), (2.5, InputTypeError),
                                    ("8", InputTypeError), (True, InputTypeError)])
def test_sample_rejects_bad_counts(model, n, exc):
    with pytest.raises(exc, match="n must be a positive int"):
        model.sample(n)


def test_interpolate_validates(model):
    a, b = good(1)[0], good(1)[0]
    assert model.interpolate(a, b, steps=5).shape == (5, 12)
    with pytest.raises(InputError, match="steps"):
        model.interpolate(a, b, steps=1)
    with pytest.raises(InputError, match="x_b"):
        model.interpolate(a, good(2), steps=3)
    with pytest.raises(InputError, match="x_a"):
        model.interpolate(np.zeros(11, np.float32), b)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(input_dim=0), InputError, "input_dim"),
    (dict(latent_dim=-1), InputError, "latent_dim"),
    (dict(hidden_dims=(8, 0)), InputError, "hidden_dims"),
    (dict(hidden_dims=2.5), InputTypeError, "hidden_dims"),
    (dict(dtype=np.int32), InputTypeError, "dtype"),
    (dict(dtype="float16"), InputTypeError, "dtype"),
    (dict(rng="seed"), InputTypeError, "rng"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, word):
    args = dict(input_dim=12, hidden_dims=8, latent_dim=3, rng=0)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        npvae.VAE(**args)


def test_the_backend_is_checked_where_it_is_chosen(monkeypatch, model):
    """The switch lives in fit and the evaluation functions: a bad name, or a bad
    $NPVAE_BACKEND, is refused there before any work, naming where it came from."""
    x = (np.random.default_rng(0).random((8, 12)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match=r"backend must be one of \('numba', 'numpy'\).*got 'cuda'"):
        npvae.fit(model, x, epochs=1, progress=False, backend="cuda")
    with pytest.raises(InputError, match="backend.*'gpu'"):
        npvae.evaluate_elbo(model, x, backend="gpu")
    monkeypatch.setenv("NPVAE_BACKEND", "fortran")
    with pytest.raises(InputError, match="NPVAE_BACKEND.*'fortran'"):
        npvae.fit(model, x, epochs=1, progress=False)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(lr=0), InputError, "lr"),
    (dict(lr=-1e-3), InputError, "lr"),
    (dict(lr=float("nan")), InputError, "lr"),
    (dict(lr="fast"), InputTypeError, "lr"),
    (dict(betas=(1.0, 0.999)), InputError, "betas"),
    (dict(betas=(0.9, -0.1)), InputError, "betas"),
    (dict(eps=0), InputError, "eps"),
    (dict(weight_decay=-1), InputError, "weight_decay"),
])
def test_adam_rejects_bad_hyperparameters(model, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        npvae.Adam(model.parameters(), **kwargs)


def test_optimizers_reject_bad_params(model):
    with pytest.raises(InputError, match="empty"):
        npvae.Adam([])
    with pytest.raises(InputTypeError, match="Parameter"):
        npvae.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(InputError, match="momentum"):
        npvae.SGD(model.parameters(), lr=0.1, momentum=-0.5)


def test_optimizer_state_dict_mismatch(model):
    opt = npvae.Adam(model.parameters())
    sd = opt.state_dict()
    sd["m.0"] = sd["m.0"][:-1]
    with pytest.raises(StateDictError, match="m.0"):
        opt.load_state_dict(sd)
    with pytest.raises(StateDictError, match=r"missing \['betas', 'eps', 'lr', 'm\.0',"):
        opt.load_state_dict({"t": np.array(0)})


def test_layer_errors_name_the_layer():
    dense = npvae.Dense(4, 3, rng=0)
    with pytest.raises(InputError, match=r"Dense.forward: x must have shape \(batch, 4\)"):
        dense.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(InputTypeError, match="float64.*float32"):
        dense.forward(np.zeros((2, 4), np.float64))
    with pytest.raises(StateError, match="before forward"):
        npvae.Dense(4, 3, rng=0).backward(np.zeros((2, 3), np.float32))
    dense.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="grad_out"):
        dense.backward(np.zeros((2, 4), np.float32))


def test_losses_check_shapes():
    with pytest.raises(InputError, match="same shape"):
        npvae.BCEWithLogits().forward(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(InputTypeError, match="dtype"):
        npvae.BCE().forward(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float64))
    with pytest.raises(InputError, match="mu | logvar"):
        npvae.KL().forward(np.zeros((2, 3), np.float32))


def test_sampler_checks_eps():
    s = npvae.Sampler(0)
    h = np.zeros((2, 6), np.float32)
    with pytest.raises(InputError, match=r"eps must have shape \(2, 3\).*got \(2, 2\)"):   # a ValueError
        s.forward(h, eps=np.zeros((2, 2), np.float32))
    with pytest.raises(InputTypeError, match="eps has dtype float64"):
        s.forward(h, eps=np.zeros((2, 3)))
    with pytest.raises(InputTypeError, match="eps must be a numpy array"):
        s.forward(h, eps=[[0.0] * 3] * 2)
    with pytest.raises(ValueError, match="eps must have shape"):         # through the model, too
        npvae.VAE(784, 16, 4).loss(np.zeros((8, 784), np.float32), eps=np.zeros((8, 3), np.float32))


def test_state_dict_errors_leave_model_unchanged():
    m = npvae.VAE(12, 8, 3, rng=0)
    before = m.state_dict()
    bad = dict(before)
    bad["decoder.2.bias"] = np.full(12, np.nan, np.float32)
    with pytest.raises(StateDictError, match="NaN"):
        m.load_state_dict(bad)
    bad = dict(before)
    bad["encoder.0.weight"] = bad["encoder.0.weight"].astype(np.float64)
    with pytest.raises(StateDictError, match="dtype"):
        m.load_state_dict(bad)
    with pytest.raises(StateDictError, match="missing"):
        m.load_state_dict({k: v for k, v in before.items() if k != "encoder.0.bias"})
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_inference_between_loss_and_backward_is_caught():
    m = npvae.VAE(12, 8, 3, rng=0)
    m.loss(good())
    m.encode(good(4))            # runs the layers again: what backward needs is gone
    with pytest.raises(StateError, match=r"needs the loss\(\) call right before it"):
        m.backward()
    m.loss(good())
    m.backward()                 # the normal order still works


@pytest.mark.parametrize("hidden, exc", [([], InputError), ((), InputError), (None, InputTypeError)])
def test_hidden_dims_must_name_a_width(hidden, exc):
    with pytest.raises(exc, match="hidden_dims"):
        npvae.VAE(12, hidden, 3, rng=0)


def test_hidden_dims_accepts_numpy_scalars():
    assert npvae.VAE(12, np.array(8), 3, rng=0).hidden_dims == (8,)
    assert npvae.VAE(12, np.int64(8), 3, rng=0).hidden_dims == (8,)


def test_sampler_rejects_non_finite_eps(model):
    eps = np.full((4, 3), np.nan, np.float32)
    with pytest.raises(InputError, match="eps contains NaN"):
        model.loss(good(), eps=eps)


def test_pytorchs_positional_arguments_that_npvae_lacks_are_refused(model):
    """torch.optim.Adam's sixth positional argument is amsgrad, SGD's fifth weight_decay."""
    with pytest.raises(TypeError, match="positional"):
        npvae.Adam(model.parameters(), 1e-3, (0.9, 0.999), 1e-8, 0.0, True)
    with pytest.raises(TypeError, match="positional"):
        npvae.SGD(model.parameters(), 0.1, 0.9, 0.0, 1e-4)


def test_a_non_strict_load_that_would_load_nothing_is_refused():
    m, other = npvae.VAE(12, 8, 3, rng=0), npvae.VAE(12, 8, 3, rng=1)
    before = m.state_dict()
    torch_names = npvae.interop.to_torch_state_dict(other, "examples")
    with pytest.raises(StateDictError, match="no name.*fc1.weight.*from_torch_state_dict"):
        m.load_state_dict(torch_names, strict=False)
    for name, value in m.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    partial = {"encoder.0.bias": other.state_dict()["encoder.0.bias"], "junk": np.zeros(2)}
    assert m.load_state_dict(partial, strict=False) is m
    np.testing.assert_array_equal(m.state_dict()["encoder.0.bias"], partial["encoder.0.bias"])
    assert m.load_state_dict({}, strict=False) is m                # nothing asked, nothing done
    with pytest.raises(StateDictError) as info:                    # npvae's names, for a part of it
        m.encoder.load_state_dict(other.state_dict(), strict=False)
    assert "expected names such as ['0.weight', '0.bias']" in str(info.value)
    assert "PyTorch" not in str(info.value)
    relu = npvae.ReLU()                                            # nothing to load into: as PyTorch
    assert relu.load_state_dict({"x": np.zeros(2)}, strict=False) is relu


def test_optimizer_argument_mistakes(model):
    with pytest.raises(InputTypeError, match="model.parameters\\(\\)"):
        npvae.Adam(model)
    with pytest.raises(InputTypeError, match="betas must be a pair"):
        npvae.Adam(model.parameters(), betas=0.9)
    with pytest.raises(InputTypeError, match="betas must be a pair"):
        npvae.Adam(model.parameters(), betas=(0.9,))


def test_fit_rejects_bad_paths_before_training(tmp_path, model):
    x = (np.random.default_rng(0).random((8, 12)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match="checkpoint must be a file path.*folder"):
        npvae.fit(model, x, epochs=1, checkpoint=tmp_path, progress=False)
    with pytest.raises(InputTypeError, match="metrics_path must be a file path"):
        npvae.fit(model, x, epochs=1, metrics_path=5, progress=False)
    with pytest.raises(InputTypeError, match="checkpoint file path"):
        npvae.load_checkpoint(None)


# -- found by a review of users' own code --------------------------------------------------------
def test_boolean_and_zero_one_images_get_the_right_advice():
    model = npvae.VAE(784, 16, 4)
    with pytest.raises(InputTypeError, match=r"astype\(np\.float32\) \(True/False are already"):
        npvae.fit(model, np.zeros((10, 784), bool), epochs=1, progress=False)
    with pytest.raises(InputTypeError, match=r"x has boolean dtype bool.*astype\(np\.float32\) \(True"):
        model.loss(np.zeros((3, 784), bool))
    with pytest.raises(InputTypeError, match=r"z has integer dtype int64; the model takes floats: convert with "
                                             r"z\.astype\(np\.float32\)$"):
        model.decode(np.zeros((2, 4), np.int64))          # a latent code: no "/ 255"
    zero_one = (np.arange(10 * 784).reshape(10, 784) % 2).astype(np.uint8)
    with pytest.warns(npvae.PixelScaleWarning, match=r"images are uint8 pixels of 0 and 1 only.*astype\(np\.float32\)"):
        npvae.evaluate_elbo(model, zero_one, backend="numpy")
    with pytest.warns(npvae.PixelScaleWarning, match=r"astype\(np\.float64\)"):   # the model's dtype
        npvae.evaluate_elbo(npvae.VAE(784, 16, 4, dtype=np.float64), zero_one, backend="numpy")
    ints = zero_one.astype(np.int64)                    # 0/1 images as integers: no "/ 255"
    for call in (lambda: model.loss(ints), lambda: npvae.evaluate_elbo(model, ints)):
        with pytest.raises(InputTypeError, match=r"convert with (x|images)\.astype\(np\.float32\) \(its values, "
                                                 r"0 and 1, are already probabilities\)$"):
            call()
    with pytest.raises(InputTypeError, match=r"images\.astype\(np\.uint8\) or images\.astype\(np\.float32\) / 255$"):
        npvae.evaluate_elbo(model, ints * 255)


@pytest.mark.parametrize("images", [np.zeros(4, dtype=[("pixels", "u1", (12,))]), np.zeros((4, 12), "U1"),
                                    np.full((4, 12), None), np.zeros((4, 12), "datetime64[s]")],
                         ids=["record", "str", "None", "datetime"])
def test_image_sets_of_things_that_are_not_numbers_get_an_npvae_error(model, images):
    for call in (lambda: npvae.evaluate_elbo(model, images), lambda: npvae.iw_nll(model, images, k=2),
                 lambda: npvae.fit(model, images, epochs=1, progress=False)):
        with pytest.raises(InputTypeError, match=r"images must be uint8 pixels \(0..255\) or floats in \[0, 1\], "
                                                 r"got dtype"):
            call()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fit_warns_once_about_each_array_of_zero_one_uint8_at_the_users_line(backend):
    zero_one = (np.arange(20 * 16).reshape(20, 16) % 2).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        npvae.fit(npvae.VAE(16, 8, 2, rng=0), zero_one, zero_one[:8], epochs=2, batch_size=8,
                  progress=False, backend=backend, rng=0)
    scale = [w for w in caught if issubclass(w.category, npvae.PixelScaleWarning)]
    assert [str(w.message).split(" ")[0] for w in scale] == ["train_images", "test_images"]
    assert all(w.filename == __file__ for w in scale)


def test_paths_that_name_no_file_are_refused(tmp_path):
    from npvae.data import read_idx
    with pytest.raises(InputTypeError, match="path must be an IDX file's path"):
        read_idx(None)
    with pytest.raises(InputError, match="which is a folder"):
        read_idx(tmp_path)
    with pytest.raises(InputError, match="ends with a slash"):
        npvae.save_checkpoint(str(tmp_path / "missing" / "dir") + "/", npvae.VAE(4, 3, 2))


def test_save_checkpoint_refuses_what_load_checkpoint_would_refuse(tmp_path):
    model, path = npvae.VAE(4, 3, 2, rng=0), tmp_path / "c.npz"
    bad = [(dict(epoch=-1), InputError, "epoch must be a non-negative int"),
           (dict(epoch=1.9), InputTypeError, "epoch must be a non-negative int, got 1.9"),
           (dict(step="a"), InputTypeError, "step must be"),
           (dict(history=[1, 2]), InputTypeError, "history must be a sequence of dicts"),
           (dict(history=None), InputTypeError, "history must be a sequence"),
           (dict(fit_config=[1]), InputTypeError, "fit_config must be a dict or None"),
           (dict(dead_units=5), InputTypeError, "dead_units must be a dict or None"),
           (dict(rngs=[1]), InputTypeError, "rngs must be a dict"),
           (dict(history=[{"when": object()}]), InputTypeError, "must hold JSON values")]
    for kwargs, error, words in bad:
        with pytest.raises(error, match=words):
            npvae.save_checkpoint(path, model, **kwargs)
    assert not path.exists()
    npvae.save_checkpoint(path, model, history=[{"loss": np.float32(1.5), "n": np.int64(3)}])   # NumPy numbers
    assert npvae.load_checkpoint(path).history == [{"loss": 1.5, "n": 3}]


def test_adam_refuses_a_negative_second_moment():
    model = npvae.VAE(4, 3, 2, rng=0)
    opt = npvae.Adam(model.parameters())
    state = opt.state_dict()
    state["v.0"] = state["v.0"] - 1
    with pytest.raises(StateDictError, match=r"optimizer state v\.0 has negative values"):
        opt.load_state_dict(state)
    assert not opt.state_dict()["v.0"].any()             # unchanged


def test_pytorch_weights_load_from_an_npz_file_and_keys_must_be_names(tmp_path):
    model, other = npvae.VAE(784, 16, 4, rng=0), npvae.VAE(784, 16, 4, rng=1)
    np.savez(tmp_path / "w.npz", **npvae.interop.to_torch_state_dict(model))   # npvae.interop after import npvae
    npvae.interop.from_torch_state_dict(other, np.load(tmp_path / "w.npz"))
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), other.parameters()))
    with pytest.raises(StateDictError, match=r"keys must be parameter names \(str\)"):
        npvae.interop.from_torch_state_dict(other, {0: np.zeros(3)})


def test_flags_take_bools_and_pairs_keep_their_order():
    from npvae.data import iterate_indices, to_float
    model = npvae.VAE(4, 3, 2, rng=0)
    read_only = np.zeros((2, 4), np.float32)
    read_only.flags.writeable = False
    cases = [(lambda: npvae.Adam(model.parameters(), betas={0.9, 0.999}), InputTypeError, "betas must be a pair"),
             (lambda: npvae.VAE(4, 3, 2, dtype=None), InputTypeError, "dtype must be float32 or float64, got None"),
             (lambda: model.load_state_dict(model.state_dict(), strict="no"), InputTypeError, "strict must be True"),
             (lambda: iterate_indices(5, 2, shuffle="no"), InputTypeError, "shuffle must be True or False"),
             (lambda: iterate_indices(5, 2, shuffle=False, drop_last=1), InputTypeError, "drop_last must be"),
             (lambda: to_float(np.zeros((2, 4), np.uint8), out=read_only), InputError, "out is read-only")]
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
    assert len(list(iterate_indices(5, 2, shuffle=np.bool_(False)))) == 3    # NumPy bools are bools


def test_adam_refuses_an_eps_that_is_zero_in_the_parameters_dtype():
    with pytest.raises(InputError, match=r"eps=1e-300 is 0 in the parameters' float32"):
        npvae.Adam(npvae.VAE(4, 3, 2, rng=0).parameters(), eps=1e-300)
    npvae.Adam(npvae.VAE(4, 3, 2, rng=0, dtype=np.float64).parameters(), eps=1e-300)   # float64 holds it


def test_flags_take_numpy_bools_as_they_take_python_ones():
    """np.True_ is what a NumPy comparison gives; "must be True or False, got np.True_" would be absurd."""
    model = npvae.VAE(16, 8, 2, rng=0)
    x = (np.arange(32 * 16).reshape(32, 16) % 256).astype(np.uint8)
    history = npvae.fit(model, x, epochs=1, rng=0, progress=np.False_, binarize=np.True_,
                        retire_dead_units=np.True_)
    assert history[0]["epoch"] == 1
    assert np.isfinite(npvae.evaluate_elbo(model, x, binarize=np.True_).total)
    assert npvae.iw_nll(model, x, k=2, per_image=np.True_).shape == (32,)
    with npvae.fast.Trainer(model, npvae.Adam(model.parameters()), retire_dead_units=np.False_) as trainer:
        trainer.step(x[:8] / 255)


def test_a_ragged_list_and_floats_npvae_does_not_compute_in_get_npvae_errors():
    model = npvae.VAE(4, 3, 2, rng=0)
    with pytest.raises(InputError, match=r"x is a list that is not a table of numbers"):
        model.loss([[0.5] * 4, [0.5] * 3])
    with pytest.raises(InputTypeError, match=r"h must be a float32 or float64 array .*float16"):
        npvae.Sampler(0).forward(np.zeros((2, 4), np.float16))
    with pytest.raises(InputTypeError, match=r"ReLU.forward: x must be float32 or float64, got float16"):
        npvae.ReLU().forward(np.zeros((2, 4), np.float16))


def test_the_advice_for_integer_pixels_is_in_the_models_dtype():
    """float32 would round a float64 model's pixels (by 3e-8): the hint casts to the model's dtype."""
    pixels = np.full((3, 784), 200, np.uint8)
    with pytest.raises(InputTypeError, match=r"convert with x\.astype\(np\.float64\) / 255$"):
        npvae.VAE(784, 16, 4, dtype=np.float64).loss(pixels)
    with pytest.raises(InputTypeError, match=r"convert with x\.astype\(np\.float32\) / 255$"):
        npvae.VAE(784, 16, 4).loss(pixels)
    with pytest.raises(InputTypeError, match=r"train_images\.astype\(np\.uint8\) or train_images\.astype\(np\.float64\) / 255$"):
        npvae.fit(npvae.VAE(784, 16, 4, dtype=np.float64), pixels.astype(np.int64), epochs=1, progress=False)


@pytest.mark.parametrize("pixels, values", [
    (np.linspace(0, 4080, 3 * 784).astype(np.int64).reshape(3, 784), "run from 0 to 4080"),   # 12-bit: uint8 wraps 4080 to 240
    (np.full((3, 784), 255 * 256, np.uint16), "are all 65280"),       # 16-bit: uint8 would make every pixel 0
    (np.linspace(-100, 100, 3 * 784).astype(np.int8).reshape(3, 784), "run from -100 to 100"),      # signed
    (np.full((3, 784), 256, np.int64), "are all 256"),               # just past uint8's range
    (np.full((3, 784), -1, np.int64), "are all -1"),
])
def test_integer_pixels_beyond_0_to_255_are_not_told_to_become_uint8(pixels, values):
    """Following the advice must give the images back: uint8 wraps anything outside 0..255."""
    with pytest.raises(InputTypeError) as info:
        npvae.fit(npvae.VAE(784, 16, 4), pixels, epochs=1, progress=False)
    message = str(info.value)
    assert "np.uint8" not in message and "/ 255" not in message
    assert f"its values {values}, not 0..255" in message
    assert "(x - lowest) / (highest - lowest) for signed pixels" in message


def test_without_numba_the_fast_path_says_how_to_get_it_or_do_without(monkeypatch, model):
    """numba is a dependency, but a checkout put on sys.path by hand may find none: the default
    back end says so and names the way out, the reference still works."""
    import sys
    x = (np.random.default_rng(0).random((8, 12)) * 255).astype(np.uint8)
    monkeypatch.setitem(sys.modules, "numba", None)        # what "not installed" looks like to import
    monkeypatch.delenv("NPVAE_BACKEND", raising=False)
    with pytest.raises(InputError, match=r"the default back end, numba, needs Numba.*pip install numba.*"
                                         r"backend='numpy'"):
        npvae.evaluate_elbo(model, x)
    with pytest.raises(InputError, match=r"backend='numba' needs Numba"):
        npvae.fit(model, x, epochs=1, progress=False, backend="numba")
    monkeypatch.setenv("NPVAE_BACKEND", "numba")
    with pytest.raises(InputError, match=r"\$NPVAE_BACKEND=numba needs Numba"):
        npvae.iw_nll(model, x, k=2)
    assert np.isfinite(npvae.evaluate_elbo(model, x, backend="numpy").total)


def test_an_explicit_backend_is_named_even_with_the_variable_set(monkeypatch):
    import sys
    x = (np.random.default_rng(0).random((8, 12)) * 255).astype(np.uint8)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    with pytest.raises(InputError, match=r"^backend='numba' needs Numba"):
        npvae.fit(npvae.VAE(12, 7, 3, rng=0), x, epochs=1, progress=False, backend="numba")


def _square_ops():
    """Ops whose every array is square (batch == features == latent), where np.matrix's * would
    be a matrix product that broadcasts without an error."""
    d = 6
    dense, kl = npvae.Dense(d, d, dtype=np.float64, rng=0), npvae.losses.KL()
    sampler, bce = npvae.Sampler(rng=0), npvae.losses.BCEWithLogits()
    h = np.random.default_rng(1).normal(size=(d, 2 * d))
    x, t = np.random.default_rng(2).normal(size=(d, d)), np.full((d, d), 0.5)
    relu, sig = npvae.ReLU(), npvae.Sigmoid()
    return {
        "Dense.forward x": lambda wrap: dense.forward(wrap(x)),
        "Dense.backward grad_out": lambda wrap: (dense.forward(x), dense.backward(wrap(x))),
        "ReLU.forward x": lambda wrap: relu.forward(wrap(x)),
        "ReLU.backward grad_out": lambda wrap: (relu.forward(x), relu.backward(wrap(x))),
        "Sigmoid.backward grad_out": lambda wrap: (sig.forward(x), sig.backward(wrap(x))),
        "BCEWithLogits target": lambda wrap: bce.forward(x, wrap(t)),
        "BCEWithLogits logits": lambda wrap: bce.forward(wrap(x), t),
        "KL h": lambda wrap: kl.forward(wrap(h[:, :2 * d])),
        "Sampler eps": lambda wrap: sampler.forward(h, wrap(np.ones((d, d)))),
        "Sampler h": lambda wrap: sampler.forward(wrap(h), np.ones((d, d))),
    }


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("name", list(_square_ops()))
@pytest.mark.parametrize("wrap, words", [
    (np.matrix, ["numpy.matrix", "matrix product", "np.asarray"]),
    (lambda a: np.ma.masked_array(a, mask=np.zeros(a.shape, bool)), ["masked array", ".filled("]),
])
def test_a_matrix_or_a_masked_array_is_refused_where_an_op_computes_on_it(name, wrap, words):
    """np.matrix's * multiplies matrices: with square arrays an op would give other numbers
    without an error (and Dense.backward would fail half-way, its weight.grad added to)."""
    op = _square_ops()[name]
    with pytest.raises(InputTypeError) as e:
        op(wrap)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_noise_given_as_a_matrix_is_refused_by_the_model():
    model = npvae.VAE(12, 8, 4, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).random((4, 12))
    eps = np.random.default_rng(1).normal(size=(4, 4))
    want = model.forward(x, eps)[0]
    for call in (lambda e: model.forward(x, e), lambda e: model.loss(x, eps=e)):
        with pytest.raises(InputTypeError, match=r"eps is a numpy.matrix"):
            call(np.matrix(eps))
    assert np.array_equal(model.forward(x, np.asarray(np.matrix(eps)))[0], want)


def test_a_masked_array_cannot_slip_nan_into_parameters_or_optimizer_state():
    model = npvae.VAE(12, 8, 3, rng=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    sd = dict(before)
    weight = before["encoder.0.weight"].copy()
    weight[0, 0] = np.nan
    sd["encoder.0.weight"] = np.ma.masked_invalid(weight)
    with pytest.raises(StateDictError, match=r"encoder.0.weight.*masked array.*filled"):
        model.load_state_dict(sd)
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    opt = npvae.Adam(model.parameters())
    state = opt.state_dict()
    v0 = state["v.0"].copy()
    v0.flat[0] = np.nan
    state["v.0"] = np.ma.masked_invalid(v0)
    with pytest.raises(StateDictError, match=r"optimizer state v.0 is a masked array"):
        opt.load_state_dict(state)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_matrix_of_weights_still_loads():
    """np.matrix is harmless where it is only copied: a state dict's entries."""
    model = npvae.VAE(12, 8, 3, rng=0)
    sd = {k: np.matrix(v) if v.ndim == 2 else v for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    assert all(type(v) is np.ndarray for v in model.state_dict().values())


def test_a_dtype_in_the_other_byte_order_is_named_as_such():
    with pytest.raises(InputTypeError, match=r"got >f4 \(float32 in the other byte order: pass np\.float32\)"):
        npvae.VAE(12, 8, 3, dtype=">f4")
    with pytest.raises(InputTypeError, match=r"KL.forward: h .* got \(2, 4\) >f4 \(float32 in the other byte order"):
        npvae.KL().forward(np.zeros((2, 4), ">f4"))
    with pytest.raises(InputTypeError, match=r"got >f8 \(float64 in the other byte order"):
        npvae.ReLU().forward(np.zeros((2, 3), ">f8"))
    with pytest.raises(InputTypeError, match=r"got float16$"):
        npvae.ReLU().forward(np.zeros((2, 3), np.float16))


def test_one_image_of_the_models_size_in_two_dimensions_gets_the_reshape_hint(model):
    with pytest.raises(InputError, match=r"for one image of shape \(3, 4\) use x.reshape\(1, -1\)"):
        model.encode(np.zeros((3, 4), np.float32))
    with pytest.raises(InputError, match=r"for one image of shape \(3, 4\) use images.reshape\(1, -1\)"):
        npvae.evaluate_elbo(model, np.zeros((3, 4), np.float32))
    for call in (lambda: model.encode(np.zeros((3, 5), np.float32)),     # not one image's worth
                 lambda: model.decode(np.zeros((1, 3), np.float32).reshape(3, 1))):   # codes, not an image
        with pytest.raises(InputError) as e:
            call()
        assert "one image" not in str(e.value)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("op, arg", [
    (lambda w: npvae.Dense(4, 4, rng=0).forward(w(np.zeros((4, 4), np.float32))), "x"),
    (lambda w: npvae.losses.BCEWithLogits().forward(np.zeros((4, 4)), w(np.full((4, 4), .5))), "target"),
    (lambda w: npvae.losses.BCEWithLogits().forward(w(np.zeros((4, 4))), np.full((4, 4), .5)), "logits"),
])
def test_the_refused_array_is_the_one_named(op, arg):
    with pytest.raises(InputTypeError, match=rf": {arg} is a numpy\.matrix.*np\.asarray\({arg}\)"):
        op(np.matrix)


def test_a_sampled_reconstruction_of_no_array_is_an_input_type_error():
    with pytest.raises(InputTypeError, match=r"x must be a numpy array"):
        npvae.VAE(12, 8, 3, rng=0).reconstruct(None, sample=True, rng=0)


def test_only_a_float_dtype_is_said_to_be_in_the_other_byte_order():
    with pytest.raises(InputTypeError, match=r"got >i4$"):
        npvae.VAE(12, 8, 3, dtype=">i4")
    with pytest.raises(InputTypeError, match=r"got >i4$"):
        npvae.ReLU().forward(np.zeros((2, 3), ">i4"))


def test_the_one_image_hint_only_for_one_image_and_names_the_argument():
    model = npvae.VAE(12, 8, 3, rng=0)
    with pytest.raises(InputError) as e:
        model.encode(np.zeros((6, 4), np.float32))          # 24 values: two images' worth, not one
    assert "one image" not in str(e.value)
    with pytest.raises(InputError, match=r"use x_a\.reshape\(1, -1\)"):
        model.interpolate(np.zeros((3, 4), np.float32), np.zeros(12, np.float32))


def test_a_masked_batch_is_refused_by_the_models_methods():
    model = npvae.VAE(12, 8, 3, rng=0)
    x = np.ma.masked_array(np.full((2, 12), 0.5, np.float32), mask=np.zeros((2, 12), bool))
    x.mask[0, 0] = True
    for call in (model.encode, model.reconstruct, lambda a: model.loss(a)):
        with pytest.raises(InputTypeError, match=r"x is a masked array.*filled"):
            call(x)


def test_the_refusal_lists_the_first_four_names_given():
    m, other = npvae.VAE(12, 8, 3, rng=0), npvae.VAE(12, 8, 3, rng=1)
    with pytest.raises(StateDictError) as info:
        m.load_state_dict(npvae.interop.to_torch_state_dict(other, "examples"), strict=False)
    assert "(got ['fc1.weight', 'fc1.bias', 'fc21.weight', 'fc21.bias'], ...;" in str(info.value)


INF = float("inf")


@pytest.mark.parametrize("call, name", [
    (lambda tmp: npvae.VAE(4, 3, 2, rng=0).loss(np.full((2, 4), 0.5, np.float32), beta=INF), "beta"),
    (lambda tmp: npvae.evaluate_elbo(npvae.VAE(4, 3, 2, rng=0), np.full((2, 4), 0.5, np.float32), beta=INF), "beta"),
    (lambda tmp: npvae.data.load_split("mnist", "t10k", data_dir=SAMPLE, timeout=INF), "timeout"),
    (lambda tmp: npvae.data.download_dataset("mnist", tmp / "cache", files=[], timeout=INF), "timeout"),
])
def test_an_infinite_number_is_refused_where_a_finite_one_is_asked_for(tmp_path, call, name):
    """inf, not only NaN (which fails any comparison), is refused by name where a number must
    be finite: the KL weight and a download's timeout (the command line checks its own options
    before these are called)."""
    with pytest.raises(npvae.errors.InputError, match=rf"{name} must be a finite number (>|>=) 0, got inf"):
        call(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_image_set_with_nan_or_inf_says_where_the_first_one_is(bad):
    """Not only refused (the [0, 1] check would do that): the user is told which row and column
    to look at."""
    images = np.full((3, 4), 0.5, np.float32)
    images[1, 2] = bad
    with pytest.raises(npvae.errors.InputError, match=r"images contains NaN or inf \(first at row 1, column 2\)"):
        npvae.evaluate_elbo(npvae.VAE(4, 3, 2, rng=0), images)
