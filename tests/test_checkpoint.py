"""Tests of npvae.checkpoint: round trips, atomic saves, and every way a file can be wrong."""
import fractions
import io
import json
import os
import pickle
import re
import struct
import traceback
import warnings
import zipfile

import numpy as np
import pytest

import npvae
from npvae import SGD, VAE, Adam
from npvae.checkpoint import (META_KEY, Checkpoint, expected_shapes, load_checkpoint, load_model,
                              save_checkpoint)
from npvae.errors import CheckpointError, DivergenceError, InputError, InputTypeError, StateDictError
from npvae.optim import Optimizer
from npvae.train import fit


def trained_pair(seed=0, latent=4):
    """A small model and its Adam optimizer after a few real steps."""
    model = VAE(784, 32, latent, rng=seed)
    opt = Adam(model.parameters(), lr=2e-3)
    x = np.random.default_rng(seed).random((64, 784)).astype(np.float32)
    for _ in range(3):
        model.zero_grad()
        model.loss(x)
        model.backward()
        opt.step()
    return model, opt


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real checkpoint (model, optimizer, streams, history) and the model it came from."""
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    model, opt = trained_pair()
    shuffle = np.random.default_rng(11)
    save_checkpoint(path, model, opt, epoch=2, step=3, history=[{"epoch": 1, "test_loss": 500.5}],
                    rngs={"shuffle": shuffle, "binarize": np.random.Generator(np.random.Philox(3))},
                    fit_config={"batch_size": 64}, partial={"loss": 1.5, "n": 3})
    return path, model, opt


def test_round_trip(good):
    path, model, opt = good
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert (ckpt.epoch, ckpt.step, ckpt.optimizer, ckpt.version) == (2, 3, "Adam", npvae.checkpoint.VERSION)
    assert ckpt.model_config == model.config()
    assert ckpt.history == [{"epoch": 1, "test_loss": 500.5}]
    assert ckpt.fit_config == {"batch_size": 64} and ckpt.partial == {"loss": 1.5, "n": 3}
    for name, p in model.named_parameters():
        assert np.array_equal(ckpt.model_state[name], p.data) and ckpt.model_state[name].dtype == p.dtype
    sd = opt.state_dict()
    assert set(ckpt.optimizer_state) == set(sd)
    assert all(np.array_equal(ckpt.optimizer_state[k], sd[k]) for k in sd)
    assert ckpt.generator("shuffle").random() == np.random.default_rng(11).random()
    assert isinstance(ckpt.generator("binarize").bit_generator, np.random.Philox)
    assert ckpt.rng_states["model"] == model.rng.bit_generator.state


def test_load_into_model_and_optimizer(good):
    path, model, opt = good
    other = VAE(784, 32, 4, rng=5)
    other_opt = Adam(other.parameters(), lr=0.1)
    load_checkpoint(path, model=other, optimizer=other_opt)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), other.parameters()))
    assert other_opt.lr == 2e-3 and other_opt.t == 3
    assert other.rng.bit_generator.state == model.rng.bit_generator.state
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(other.decode(z), model.decode(z))


def test_build_model_from_config(good):
    path, model, _ = good
    for rebuilt in (load_model(path), load_checkpoint(path).build_model()):
        assert rebuilt.config() == model.config()
        x = np.random.default_rng(1).random((3, 784)).astype(np.float32)
        np.testing.assert_allclose(rebuilt.reconstruct(x), model.reconstruct(x), rtol=1e-5, atol=1e-6)
        assert rebuilt.rng.bit_generator.state == model.rng.bit_generator.state


def test_a_run_folder_is_read_as_its_checkpoint(good, tmp_path):
    path, model, _ = good
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(path.read_bytes())
    rebuilt = load_model(run)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(rebuilt.state_dict()[n], p.data, err_msg=n)
    assert load_checkpoint(run).path == str(run / "checkpoint.npz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="folder without a checkpoint.npz: give the checkpoint file"):
        load_model(empty)


def test_load_model_given_a_model_points_at_load_checkpoint(good):
    """load_model(path, model) is load_checkpoint(path, model) mixed up: said, not taken as a back end."""
    path, model, _ = good
    mine = VAE(784, 32, 4, rng=1)
    before = {n: a.copy() for n, a in mine.state_dict().items()}
    with pytest.raises(InputTypeError, match=r"load_model\(path\) builds a new model and takes none, got a VAE "
                                             r"as its second argument: .*use load_checkpoint\(path, model\)"):
        load_model(path, mine)
    for n, a in mine.state_dict().items():
        np.testing.assert_array_equal(a, before[n], err_msg=n)


@pytest.mark.parametrize("make", [lambda: VAE(6, 4, 2, backend="bogus"), lambda: npvae.Dense(3, 2, backend=1),
                                  lambda: npvae.Adam(VAE(6, 4, 2).parameters(), backend="NumPy"),
                                  lambda: VAE(6, 4, 2).set_backend("gpu")])
def test_a_deprecated_backend_argument_no_npvae_took_is_an_error_not_ignored(make):
    with pytest.raises(InputError, match=r"backend, deprecated and ignored, was once 'numba', 'numpy' or None, "
                                         r"got .*; leave it out"):
        make()
    model = VAE(6, 4, 2)
    with pytest.warns(DeprecationWarning, match="set_backend"):
        assert model.set_backend(None) is model      # None once meant $NPVAE_BACKEND, else numba


def test_load_model_backend_argument_is_deprecated_and_ignored(good):
    path, model, _ = good
    with pytest.warns(DeprecationWarning, match="backend"):
        rebuilt = load_model(path, backend="numba")
    with pytest.warns(DeprecationWarning, match="backend"):
        built = load_checkpoint(path).build_model(backend="numba")
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(rebuilt.state_dict()[n], p.data, err_msg=n)
        np.testing.assert_array_equal(built.state_dict()[n], p.data, err_msg=n)


@pytest.mark.parametrize("config", [dict(input_dim=784, hidden_dims=400, latent_dim=20),
                                    dict(input_dim=10, hidden_dims=(7, 5, 3), latent_dim=2),
                                    dict(input_dim=6, hidden_dims=[4], latent_dim=1, dtype=np.float64)])
def test_expected_shapes_match_the_model(config):
    model = VAE(**config)
    assert expected_shapes(model.config()) == {n: p.shape for n, p in model.named_parameters()}


def test_float64_and_sgd_round_trip(tmp_path):
    model = VAE(20, [8, 6], 3, dtype=np.float64, rng=0)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(tmp_path / "c.npz", model, opt)
    fresh = VAE(20, [8, 6], 3, dtype=np.float64, rng=1)
    ckpt = load_checkpoint(tmp_path / "c.npz", model=fresh, optimizer=SGD(fresh.parameters(), lr=1.0))
    assert ckpt.optimizer == "SGD" and ckpt.model_config["dtype"] == "float64"
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), fresh.parameters()))
    save_checkpoint(tmp_path / "m.npz", model)             # model only
    assert load_checkpoint(tmp_path / "m.npz").optimizer_state is None


def test_fit_checkpoint_contents(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 784), dtype=np.uint8)
    fit(VAE(784, 16, 2, rng=0), x, epochs=2, batch_size=16, rng=0, progress=False, checkpoint=tmp_path / "c.npz",
        backend="numpy")
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert ckpt.epoch == 2 and ckpt.step == 0 and len(ckpt.history) == 2 and ckpt.partial is None
    assert {"model", "shuffle", "binarize"} <= set(ckpt.rng_states)
    assert ckpt.fit_config["batch_size"] == 16 and ckpt.fit_config["n_train"] == 40
    assert ckpt.fit_config["backend"] == "numpy"
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        names = zf.namelist()
    assert META_KEY + ".npy" in names and "model/encoder.0.weight.npy" in names
    assert "optimizer/m.0.npy" in names


def test_a_mid_epoch_checkpoint_past_its_epoch_or_without_its_sums_is_refused_on_resume(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    run = dict(batch_size=16, rng=0, progress=False, backend="numpy")
    fit(VAE(12, 8, 2, rng=0), x, epochs=1, checkpoint=tmp_path / "c.npz", **run)
    partial = dict(loss=1.0, recon=1.0, kl=0.0, n=16, seconds=0.1)
    for step in (3, 10**6):                          # an epoch of 40 images in batches of 16 has 3 steps
        bad = rewrite(tmp_path / "c.npz", tmp_path / "bad.npz", meta=lambda m: m.update(step=step, partial=partial))
        with pytest.raises(CheckpointError, match=f"cannot resume at step {step} of an epoch: an epoch here has 3"):
            fit(VAE(12, 8, 2, rng=0), x, epochs=2, resume=bad, **run)
    bad = rewrite(tmp_path / "c.npz", tmp_path / "bad.npz", meta=lambda m: m.update(step=2, partial={"loss": 1.0}))
    with pytest.raises(CheckpointError, match=r"its running sums \(partial\) must hold \['loss', 'recon'"):
        fit(VAE(12, 8, 2, rng=0), x, epochs=2, resume=bad, **run)
    for sums in (None, partial, dict(partial, n=0), dict(partial, n=-5), dict(partial, n=32, seconds=-3.0)):
        bad = rewrite(tmp_path / "c.npz", tmp_path / "bad.npz", meta=lambda m: m.update(step=2, partial=sums))
        with pytest.raises(CheckpointError, match=r"cannot resume inside an epoch: its running sums \(partial\) "):
            fit(VAE(12, 8, 2, rng=0), x, epochs=2, resume=bad, **run)   # its train_loss would be wrong
    partial["n"] = 32                                # two steps of 16 images
    ok = rewrite(tmp_path / "c.npz", tmp_path / "ok.npz", meta=lambda m: m.update(step=2, partial=partial))
    assert len(fit(VAE(12, 8, 2, rng=0), x, epochs=2, resume=ok, **run)) == 2


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_optimizer_listing_the_parameters_in_another_order_resumes_bit_for_bit(tmp_path, backend):
    """The checkpoint counts the model's parameters, so each gets its own moments back
    whatever order the optimizers list them in."""
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    run = dict(batch_size=16, rng=0, progress=False, backend=backend)

    def model_and_adam(order):
        model = VAE(12, 8, 3, dtype=np.float64, rng=0)
        return model, Adam(order(model.parameters()))

    straight, opt = model_and_adam(list)
    fit(straight, x, epochs=2, optimizer=opt, **run)
    model, opt = model_and_adam(lambda ps: ps[::-1])
    fit(model, x, epochs=1, optimizer=opt, checkpoint=tmp_path / "c.npz", **run)
    for order in (list, lambda ps: ps[::-1], lambda ps: ps[1:] + ps[:1]):
        resumed, opt = model_and_adam(order)
        fit(resumed, x, epochs=2, optimizer=opt, resume=tmp_path / "c.npz", **run)
        for (name, p), q in zip(resumed.named_parameters(), straight.parameters()):
            assert np.array_equal(p.data, q.data), name


def test_save_refuses_an_optimizer_of_other_parameters_than_the_models(tmp_path):
    model = VAE(12, 8, 3, rng=0)
    with pytest.raises(InputError, match=r"optimizer must hold exactly model.parameters\(\).*4 of them the model's 8, "
                                         r"lacking encoder\.0\.weight, encoder\.0\.bias, encoder\.2\.weight, \.\.\.;"):
        save_checkpoint(tmp_path / "c.npz", model, Adam(model.decoder.parameters()))
    assert not (tmp_path / "c.npz").exists()


def test_an_optimizer_made_before_a_layer_with_a_parameter_was_put_in_names_the_one_it_lacks():
    """A learned slope put in after the optimizer was built: the refusal names it."""
    class Scale(npvae.Module):
        def __init__(self):
            super().__init__()
            self.a = npvae.Parameter(np.ones(1, np.float32))

        def forward(self, x):
            return x * self.a.data

    model = VAE(12, 8, 3, rng=0)
    opt = Adam(model.parameters())
    model.encoder[1] = Scale()
    with pytest.raises(InputError, match=r"it holds 8 parameters, 8 of them the model's 9, lacking encoder\.1\.a; build"):
        fit(model, np.zeros((4, 12), np.float32), epochs=1, optimizer=opt, backend="numpy", progress=False)


def test_an_optimizer_of_some_parameters_is_told_how_to_save_and_its_way_works(tmp_path):
    """A frozen encoder: the refusal gives a way to save that is not 'write your own loop'."""
    model = VAE(12, 8, 3, rng=0)
    opt = Adam(model.decoder.parameters(), lr=0.01)
    x = np.random.default_rng(0).random((16, 12)).astype(np.float32)
    for _ in range(3):
        model.zero_grad()
        model.loss(x)
        model.backward()
        opt.step()
    with pytest.raises(InputError, match=r"save_checkpoint\(path, model\) and np.savez\(file, "
                                         r"\*\*optimizer.state_dict\(\)\)") as info:
        save_checkpoint(tmp_path / "c.npz", model, opt)
    assert "write your own loop" not in str(info.value)
    save_checkpoint(tmp_path / "c.npz", model)                  # the way the message gives
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    restored = load_model(tmp_path / "c.npz")
    again = Adam(restored.decoder.parameters(), lr=0.01)
    again.load_state_dict(dict(np.load(tmp_path / "opt.npz")))
    assert again.t == opt.t == 3
    for a, b in zip(again.state_dict().values(), opt.state_dict().values()):
        assert np.array_equal(a, b)
    save_checkpoint(tmp_path / "full.npz", model, Adam(model.parameters()))
    with pytest.raises(InputError, match=r"load the model alone with load_checkpoint\(path, model\)"):
        load_checkpoint(tmp_path / "full.npz", model, Adam(model.decoder.parameters()))


# -- saving is atomic and refuses diverged models ------------------------------------
def test_save_refuses_nan_parameters_and_keeps_old_file(tmp_path, good):
    path = tmp_path / "c.npz"
    model, opt = trained_pair()
    save_checkpoint(path, model, opt)
    before = path.read_bytes()
    model.encoder[0].bias.data[3] = np.inf
    with pytest.raises(DivergenceError, match="encoder.0.bias"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before


def test_failed_save_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    model, opt = trained_pair()
    save_checkpoint(path, model, opt)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]              # no temporary file left behind


def test_save_argument_types(tmp_path):
    with pytest.raises(InputTypeError, match="model"):
        save_checkpoint(tmp_path / "c.npz", "model")
    model, _ = trained_pair()
    with pytest.raises(InputTypeError, match="rngs"):
        save_checkpoint(tmp_path / "c.npz", model, rngs={"shuffle": 3})
    # a state that names a bit generator but could not be restored: refused now, not at loading
    with pytest.raises(InputError, match=r"rngs\['x'\] is not a bit generator state that can be restored"):
        save_checkpoint(tmp_path / "c.npz", model, rngs={"x": {"bit_generator": "PCG64", "state": 5}})
    assert not (tmp_path / "c.npz").exists()


# -- every corrupt case is a CheckpointError ----------------------------------------
def expect_error(path, match=None, **kwargs):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    assert str(path) in str(info.value)
    if match:
        assert info.match(match)


def test_missing_and_empty_and_random(tmp_path):
    expect_error(tmp_path / "nope.npz", "no such checkpoint")
    (tmp_path / "empty.npz").write_bytes(b"")
    expect_error(tmp_path / "empty.npz", "not a zip")
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    expect_error(tmp_path / "random.npz", "not a zip")
    (tmp_path / "dir.npz").mkdir()
    expect_error(tmp_path / "dir.npz", "folder without a checkpoint.npz")


@pytest.mark.parametrize("fraction", [0.0001, 0.1, 0.5, 0.9, 0.999])
def test_truncated(good, tmp_path, fraction):
    data = good[0].read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[:max(1, int(len(data) * fraction))])
    expect_error(path)


def test_cut_short_by_a_few_bytes(good, tmp_path):
    data = good[0].read_bytes()
    for n in (1, 10, 22, 100):
        path = tmp_path / f"cut{n}.npz"
        path.write_bytes(data[:-n])
        expect_error(path)


def test_foreign_zip_and_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    expect_error(tmp_path / "other.zip", "not an npvae checkpoint")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    expect_error(tmp_path / "arrays.npz", "not an npvae checkpoint")
    np.save(tmp_path / "array.npy", np.zeros(3))
    expect_error(tmp_path / "array.npy", "not a zip")
    np.savez(tmp_path / "marker.npz", **{META_KEY: np.array(json.dumps({"format": "something-else"}))})
    expect_error(tmp_path / "marker.npz", "format marker")
    np.savez(tmp_path / "notjson.npz", **{META_KEY: np.array("{not json")})
    expect_error(tmp_path / "notjson.npz", "not JSON")
    np.savez(tmp_path / "number.npz", **{META_KEY: np.array(3.0)})
    expect_error(tmp_path / "number.npz", "0-d string")


def rewrite(src, dst, drop=(), meta=None, add=None):
    """Copy a checkpoint, dropping keys, editing the metadata dict and adding arrays."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    if meta is not None:
        m = json.loads(str(arrays[META_KEY][()]))
        meta(m)
        arrays[META_KEY] = np.array(json.dumps(m))
    arrays.update(add or {})
    np.savez(dst, **arrays)
    return dst


def test_missing_key(good, tmp_path):
    path = rewrite(good[0], tmp_path / "c.npz", drop=["model/decoder.2.bias"])
    expect_error(path, "missing key 'model/decoder.2.bias'")
    path = rewrite(good[0], tmp_path / "d.npz", drop=["optimizer/v.3"])
    expect_error(path, "Adam optimizer state")
    path = rewrite(good[0], tmp_path / "e.npz", meta=lambda m: m.pop("rng_states"))
    expect_error(path, "missing key 'rng_states'")
    path = rewrite(good[0], tmp_path / "f.npz", add={"model/extra.weight": np.zeros(2, np.float32)})
    expect_error(path, "unexpected parameter")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(version=99), "newer"),
    (lambda m: m.update(epoch=-1), "epoch"),
    (lambda m: m.update(epoch="2"), "epoch"),
    (lambda m: m.update(history={"a": 1}), "history"),
    (lambda m: m["model_config"].update(latent_dim=5), "implies"),
    (lambda m: m["model_config"].update(dtype="int8"), "dtype"),
    (lambda m: m["model_config"].update(hidden_dims=[]), "sizes"),
    (lambda m: m["model_config"].pop("input_dim"), "model_config"),
    (lambda m: m["rng_states"].update(shuffle={"bit_generator": "os.system"}), "unknown bit generator"),
    (lambda m: m["rng_states"]["model"].update(state={"state": "x"}), "invalid"),
    (lambda m: m.update(optimizer=None), "optimizer"),
    (lambda m: m.update(partial=[1]), "partial"),
])
def test_bad_metadata(good, tmp_path, edit, match):
    expect_error(rewrite(good[0], tmp_path / "c.npz", meta=edit), match)


def test_wrong_array_shape_dtype_and_nan(good, tmp_path):
    expect_error(rewrite(good[0], tmp_path / "a.npz", add={"model/encoder.0.bias": np.zeros(5, np.float32)}),
                 r"encoder.0.bias is \(5,\)")
    expect_error(rewrite(good[0], tmp_path / "b.npz", add={"model/encoder.0.bias": np.zeros(32)}), "float64")
    expect_error(rewrite(good[0], tmp_path / "c.npz",
                         add={"model/encoder.0.bias": np.full(32, np.nan, np.float32)}), "NaN")


@pytest.mark.parametrize("key, value", [("m.0", np.nan), ("v.3", np.inf), ("v.1", -np.inf)])
def test_non_finite_optimizer_moments_are_refused_by_name(good, tmp_path, key, value):
    with np.load(good[0], allow_pickle=False) as f:
        moment = f["optimizer/" + key].copy()
    moment.flat[1] = value
    path = rewrite(good[0], tmp_path / "c.npz", add={"optimizer/" + key: moment})
    expect_error(path, rf"{key.replace('.', '[.]')} contains NaN or inf")
    model = VAE(784, 32, 4, rng=3)
    opt = Adam(model.parameters())
    before = model.state_dict()
    expect_error(path, model=model, optimizer=opt)           # nothing loaded
    assert opt.t == 0 and all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_save_refuses_non_finite_optimizer_moments_and_keeps_old_file(tmp_path):
    path = tmp_path / "c.npz"
    model, opt = trained_pair()
    save_checkpoint(path, model, opt)
    before = path.read_bytes()
    opt.state[opt.params[0]]["v"][0, 0] = np.inf          # e.g. a float32 gradient above 1.8e19, squared
    with pytest.raises(DivergenceError, match="v.0"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before


def test_save_refuses_optimizer_state_that_could_not_be_loaded_and_keeps_old_file(tmp_path):
    """A moment put back by hand in another dtype: the file could never be loaded, so it is not written."""
    path = tmp_path / "c.npz"
    model, opt = trained_pair()
    save_checkpoint(path, model, opt)
    before = path.read_bytes()
    p = model.encoder[0].bias
    opt.state[p]["m"] = opt.state[p]["m"].astype(np.float64)
    with pytest.raises(StateDictError, match=r"the optimizer's state 'm' of parameter encoder.0.bias is \(32,\) "
                                             r"float64, but the parameter is \(32,\) float32, so the file could "
                                             r"not be loaded.*\.astype\(np.float32\)"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fit_refuses_optimizer_state_a_checkpoint_could_not_give_back_before_training(tmp_path, backend):
    model = VAE(12, 8, 3, rng=0)
    opt = Adam(model.parameters())
    p = model.decoder[0].weight
    opt.state[p]["v"] = opt.state[p]["v"].astype(np.float64)
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    with pytest.raises(StateDictError, match=r"the optimizer's state 'v' of parameter decoder\.0\.weight is "
                                             r"\(3, 8\) float64"):
        fit(model, x, epochs=1, optimizer=opt, checkpoint=tmp_path / "c.npz", backend=backend, progress=False)
    assert opt.t == 0 and not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("setting", [True, None, "sign"], ids=["a bool", "None", "a name"])
def test_an_optimizer_setting_a_checkpoint_cannot_give_back_is_refused_before_training(tmp_path, setting):
    class Tagged(SignDescent):
        def hyper(self):
            return {"lr": self.lr, "mode": setting}
    model = VAE(12, 8, 3, rng=0)
    opt = Tagged(model.parameters(), lr=0.01)
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    with pytest.raises(InputTypeError, match=rf"Tagged.hyper\(\) gives mode={re.escape(repr(setting))}, but a "
                                             r"checkpoint keeps numbers"):
        fit(model, x, epochs=1, optimizer=opt, checkpoint=tmp_path / "c.npz", backend="numpy", progress=False)
    assert opt.t == 0 and not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("put", [lambda v: v.T.copy(), lambda v: v.tolist()],
                         ids=["another shape", "a list"])
def test_save_refuses_optimizer_state_of_another_shape_or_not_an_array_and_keeps_old_file(tmp_path, put):
    """Any moment of Adam's, of any parameter, put back by hand unlike its parameter: refused in words."""
    path = tmp_path / "c.npz"
    model, opt = trained_pair()
    save_checkpoint(path, model, opt)
    before = path.read_bytes()
    p = model.decoder[2].weight                          # (32, 784), the second moment
    opt.state[p]["v"] = put(opt.state[p]["v"])
    got = r"list" if isinstance(opt.state[p]["v"], list) else r"\(784, 32\) float32"
    with pytest.raises(StateDictError, match=rf"the optimizer's state 'v' of parameter decoder\.2\.weight is {got}, "
                                             rf"but the parameter is \(32, 784\) float32, so the file could not "
                                             rf"be loaded"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before


class RowScaledSGD(SGD):
    """A subclass of SGD (one's own) with a state of its own not shaped as its parameter: a scale a row."""
    state_names = ("momentum_buffer", "scale")

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, momentum=0.9)
        for p in self.params:
            self.state[p]["scale"] = np.ones(p.shape[0], p.dtype)

    def step(self):
        for p in self.params:
            rows = np.sqrt((p.grad.reshape(p.shape[0], -1) ** 2).mean(axis=1))
            self.state[p]["scale"][...] = 0.9 * self.state[p]["scale"] + 0.1 * rows
            p.grad[...] = p.grad / (self.state[p]["scale"].reshape(-1, *[1] * (len(p.shape) - 1)) + 1e-3)
        super().step()


def test_a_subclass_of_sgd_keeps_state_of_its_own_shape_in_checkpoints(tmp_path):
    """Only npvae's own Adam and SGD must keep state shaped as the parameters, not a subclass."""
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    run = dict(batch_size=16, rng=0, progress=False, backend="numpy")
    straight = VAE(12, 8, 3, rng=0)
    fit(straight, x, epochs=2, optimizer=RowScaledSGD(straight.parameters(), lr=0.01), **run)
    model = VAE(12, 8, 3, rng=0)
    fit(model, x, epochs=1, optimizer=RowScaledSGD(model.parameters(), lr=0.01), checkpoint=tmp_path / "c.npz",
        **run)
    resumed = VAE(12, 8, 3, rng=0)
    fit(resumed, x, epochs=2, optimizer=RowScaledSGD(resumed.parameters(), lr=0.01), resume=tmp_path / "c.npz",
        **run)
    for (name, p), q in zip(resumed.named_parameters(), straight.parameters()):
        assert np.array_equal(p.data, q.data), name


class RowRMS(Optimizer):
    """An optimizer of one's own whose state is not shaped as its parameters: one mean square a row."""
    state_names = ("v",)

    def __init__(self, params, lr=0.01):
        super().__init__(params)
        self.lr = lr
        self.state = {p: {"v": np.zeros(p.shape[0], np.float64)} for p in self.params}

    def step(self):
        self.t += 1
        for p in self.params:
            g = p.grad.reshape(p.shape[0], -1)
            v = self.state[p]["v"]
            v[...] = 0.9 * v + 0.1 * (g * g).mean(axis=1)
            p.data -= (self.lr * g / (np.sqrt(v)[:, None] + 1e-8)).reshape(p.shape).astype(p.dtype)

    def hyper(self):
        return {"lr": self.lr}

    def set_hyper(self, lr):
        self.lr = lr


def straight_and_resumed(tmp_path, make_optimizer, epochs, dtype=np.float32, schedule=None):
    """A model trained ``epochs`` epochs straight, and one trained ``epochs - 1`` with a checkpoint,
    then resumed from it for the last; ``make_optimizer(params, resuming)``, and ``schedule(opt)``
    after every epoch. Returns both models and the resumed run's optimizer."""
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    run = dict(batch_size=16, rng=0, progress=False, backend="numpy")
    opts, models = [], []
    callback = None if schedule is None else (lambda record, model: schedule(opts[-1]))
    for stop, how in ((epochs, {}), (epochs - 1, {"checkpoint": tmp_path / "c.npz"}),
                      (epochs, {"resume": tmp_path / "c.npz"})):
        models.append(VAE(12, 8, 3, dtype=dtype, rng=0))
        opts.append(make_optimizer(models[-1].parameters(), "resume" in how))
        fit(models[-1], x, epochs=stop, optimizer=opts[-1], callback=callback, **how, **run)
    return models[0], models[-1], opts[-1]


def test_an_optimizer_of_ones_own_keeps_state_of_its_own_shape_in_checkpoints(tmp_path):
    straight, resumed, _ = straight_and_resumed(tmp_path, lambda params, resuming: RowRMS(params), epochs=2)
    for (name, p), q in zip(resumed.named_parameters(), straight.parameters()):
        assert np.array_equal(p.data, q.data), name


class SignDescent(Optimizer):
    """An optimizer of one's own, written as npvae.optim.Optimizer's docstring says."""
    state_names = ()

    def __init__(self, params, lr):
        super().__init__(params)
        self.lr = lr

    def step(self):
        for p in self.params:
            p.data -= self.lr * np.sign(p.grad)
        self.t += 1

    def hyper(self):
        return {"lr": self.lr}

    def set_hyper(self, lr):
        self.lr = lr


def test_an_optimizer_of_ones_own_checkpoints_and_resumes_bit_for_bit_with_its_settings(tmp_path):
    def halve(opt):                                         # a schedule
        opt.lr /= 2
    straight, resumed, opt = straight_and_resumed(
        tmp_path, lambda params, resuming: SignDescent(params, lr=123.0 if resuming else 0.01), epochs=3,
        dtype=np.float64, schedule=halve)
    assert opt.lr == 0.01 / 8                               # the checkpoint's setting, not 123
    for (name, p), q in zip(resumed.named_parameters(), straight.parameters()):
        assert np.array_equal(p.data, q.data), name


@pytest.mark.parametrize("missing", ["hyper() and set_hyper()", "set_hyper()"])
def test_an_optimizer_of_ones_own_without_its_settings_is_refused_before_training(tmp_path, missing):
    class Bare(SignDescent):
        set_hyper = Optimizer.set_hyper
        if missing.startswith("hyper"):
            hyper = Optimizer.hyper
    x = np.random.default_rng(0).integers(0, 256, (40, 12), dtype=np.uint8)
    model = VAE(12, 8, 3, rng=0)
    opt = Bare(model.parameters(), lr=0.01)
    for call in (lambda: fit(model, x, epochs=1, optimizer=opt, checkpoint=tmp_path / "c.npz", backend="numpy",
                             progress=False),
                 lambda: save_checkpoint(tmp_path / "c.npz", model, opt)):
        with pytest.raises(InputTypeError, match=rf"cannot checkpoint to .*c\.npz: Bare does not define "
                                                 rf"{re.escape(missing)}, which a checkpoint needs") as caught:
            call()
        shown = "".join(traceback.format_exception(type(caught.value), caught.value, caught.tb))
        assert "NotImplementedError" not in shown and "During handling" not in shown      # the refusal alone
    assert opt.t == 0 and not (tmp_path / "c.npz").exists()
    with pytest.raises(StateDictError, match=r"cannot load a state dict into Bare: it does not define set_hyper"):
        opt.load_state_dict({"t": np.array(0), "lr": np.array(0.01)})
    fit(model, x, epochs=1, optimizer=opt, backend="numpy", progress=False)      # without a checkpoint it trains
    assert opt.t == 1


def test_a_mistake_in_an_optimizers_own_hyper_is_raised_as_itself_not_as_a_refusal(tmp_path):
    """Only an optimizer that does not define hyper() and set_hyper() is refused: an error inside
    one's own hyper() is the user's to see, with the line it comes from (not suppressed)."""
    class Misspelt(SignDescent):
        def hyper(self):
            return {"lr": self.learning_rate}
    model = VAE(12, 8, 3, rng=0)
    with pytest.raises(AttributeError, match="learning_rate"):
        save_checkpoint(tmp_path / "c.npz", model, Misspelt(model.parameters(), lr=0.01))
    assert not (tmp_path / "c.npz").exists()


def test_model_of_another_shape(good):
    path = good[0]
    expect_error(path, r"latent_dim: checkpoint 4, model 8", model=VAE(784, 32, 8))
    expect_error(path, r"hidden_dims: checkpoint \[32\], model \[64\]", model=VAE(784, 64, 4))
    expect_error(path, "dtype", model=VAE(784, 32, 4, dtype=np.float64))
    model = VAE(784, 32, 4, rng=3)
    expect_error(path, "holds Adam optimizer state, got SGD", model=model,
                 optimizer=SGD(model.parameters()))


def test_nothing_loaded_when_optimizer_does_not_fit(good):
    model = VAE(784, 32, 4, rng=3)
    before = model.state_dict()
    expect_error(good[0], model=model, optimizer=SGD(model.parameters()))
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


class Boom:
    """Unpickling this would create a file: the loader must never get that far."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickles_are_never_executed(good, tmp_path):
    target = tmp_path / "pwned"
    evil = np.empty((), dtype=object)
    evil[()] = Boom(str(target))
    with np.load(good[0], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[META_KEY] = evil
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "evil.npz").write_bytes(buf.getvalue())
    expect_error(tmp_path / "evil.npz")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Boom(str(target))))
    expect_error(tmp_path / "evil.pkl")
    assert not target.exists()


def test_fuzz_byte_level_corruptions(good, tmp_path):
    """~200 random corruptions of a real checkpoint: each loads cleanly (same content) or is a CheckpointError."""
    data = good[0].read_bytes()
    ref = load_checkpoint(good[0])
    rng = np.random.default_rng(20240601)
    n = len(data)
    outcomes = {"error": 0, "clean": 0}
    for trial in range(200):
        b = bytearray(data)
        # half the hits land in the zip's structures (local headers, npy headers, central directory)
        region = rng.integers(3)
        pos = int(rng.integers(n)) if region == 0 else int(rng.integers(min(n, 600))) if region == 1 \
            else n - 1 - int(rng.integers(min(n, 3000)))
        kind = trial % 5
        if kind == 0:
            b[pos] ^= 1 << int(rng.integers(8))                         # one bit flipped
        elif kind == 1:
            b[pos:pos + 8] = rng.bytes(len(b[pos:pos + 8]))             # a few bytes overwritten
        elif kind == 2:
            del b[pos:pos + int(rng.integers(1, 64))]                   # bytes lost
        elif kind == 3:
            b[pos:pos] = rng.bytes(int(rng.integers(1, 64)))            # bytes inserted
        else:
            b = b[:pos]                                                 # truncated
        path = tmp_path / f"fuzz{trial}.npz"
        path.write_bytes(bytes(b))
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
        else:
            outcomes["clean"] += 1
            # a clean load must be the original content (e.g. only a timestamp was hit)
            assert ckpt.model_config == ref.model_config and ckpt.epoch == ref.epoch
            assert all(np.array_equal(ckpt.model_state[k], v) for k, v in ref.model_state.items())
            assert all(np.array_equal(ckpt.optimizer_state[k], v) for k, v in ref.optimizer_state.items())
        path.unlink()
    assert outcomes["error"] > 150, outcomes


class _Tanh(npvae.Module):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_out):
        return grad_out * (1 - self.y ** 2)


def test_a_model_with_layers_of_your_own_is_not_rebuilt_as_the_stock_vae(tmp_path):
    """Its parameters have the stock names and shapes; what they mean differs."""
    model = npvae.VAE(6, 5, 2, rng=0)
    model.encoder[1] = _Tanh()
    path = npvae.save_checkpoint(tmp_path / "tanh.npz", model)
    with pytest.raises(CheckpointError, match=r"saved encoder\.1: _Tanh where the model has encoder\.1: ReLU.*"
                                              r"load_checkpoint\(path, model\)"):
        npvae.load_model(path)
    with pytest.raises(CheckpointError, match=r"other layers than the given model: saved encoder\.1: _Tanh"):
        npvae.load_checkpoint(path, npvae.VAE(6, 5, 2, rng=1))
    mine = npvae.VAE(6, 5, 2, rng=1)
    mine.encoder[1] = _Tanh()
    npvae.load_checkpoint(path, mine)                       # into the same layers: fine
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(mine.encode(x)[0], model.encode(x)[0])
    stock = npvae.save_checkpoint(tmp_path / "stock.npz", npvae.VAE(6, 5, 2, rng=0))
    with pytest.raises(CheckpointError, match=r"saved encoder\.1: ReLU where the model has encoder\.1: _Tanh"):
        npvae.load_checkpoint(stock, mine)


class _Scale(npvae.Module):
    """y = c x: a layer with a setting, which it states in extra_repr() as PyTorch's layers do."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def extra_repr(self):
        return "" if self.c == 1.0 else f"c={self.c}"      # the default unsaid, as PyTorch's layers do

    def forward(self, x):
        return x * x.dtype.type(self.c)

    def backward(self, grad_out):
        return grad_out * grad_out.dtype.type(self.c)


def test_a_layer_with_other_settings_is_another_model(tmp_path):
    model = npvae.VAE(6, 5, 2, rng=0)
    model.encoder[1] = _Scale(1.0)
    path = npvae.save_checkpoint(tmp_path / "scale.npz", model)
    other = npvae.VAE(6, 5, 2, rng=1)
    other.encoder[1] = _Scale(5.0)
    with pytest.raises(CheckpointError, match=r"saved encoder\.1: _Scale where the model has "
                                              r"encoder\.1: _Scale\(c=5\.0\)"):
        npvae.load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match=r"_Scale where the model has encoder\.1: _Scale\(c=5\.0\)"):
        fit(other, np.zeros((4, 6), np.float32), epochs=2, backend="numpy", progress=False, resume=path)
    model.encoder[1] = _Scale(2.0)
    npvae.save_checkpoint(path, model)
    with pytest.raises(CheckpointError, match=r"saved encoder\.1: _Scale\(c=2\.0\) where the model has "
                                              r"encoder\.1: _Scale\(c=5\.0\)"):
        npvae.load_checkpoint(path, other)
    same = npvae.VAE(6, 5, 2, rng=1)
    same.encoder[1] = _Scale(2.0)
    npvae.load_checkpoint(path, same)                       # the same settings: fine


def test_a_checkpoint_that_saved_only_the_layers_classes_still_loads(tmp_path):
    """Checkpoints of earlier versions list each layer's class without its settings."""
    path = npvae.save_checkpoint(tmp_path / "new.npz", npvae.VAE(6, 5, 2, rng=0))
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays[META_KEY]))
    meta["architecture"] = [entry.split("(")[0] for entry in meta["architecture"][1:]]   # no model class
    arrays[META_KEY] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    loaded = npvae.load_model(old)
    np.testing.assert_array_equal(loaded.encoder[0].weight.data, npvae.VAE(6, 5, 2, rng=0).encoder[0].weight.data)
    mine = npvae.VAE(6, 5, 2, rng=1)
    mine.encoder[1] = _Tanh()
    with pytest.raises(CheckpointError, match=r"saved encoder\.1: ReLU where the model has encoder\.1: _Tanh"):
        npvae.load_checkpoint(old, mine)


def test_a_path_may_start_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    model = VAE(6, 4, 2, rng=0)
    save_checkpoint("~/c.npz", model)
    assert (tmp_path / "home" / "c.npz").exists() and not (tmp_path / "~").exists()
    assert load_checkpoint("~/c.npz").model_config == load_checkpoint(tmp_path / "home" / "c.npz").model_config


def test_missing_folders_above_the_path_are_created(tmp_path):
    model = VAE(6, 4, 2, rng=0)
    save_checkpoint(tmp_path / "runs" / "a" / "c.npz", model)
    assert sorted(os.listdir(tmp_path / "runs" / "a")) == ["c.npz"]          # no temporary file left beside it
    assert np.array_equal(load_model(tmp_path / "runs" / "a" / "c.npz").encoder[0].weight.data,
                          model.encoder[0].weight.data)


def test_a_name_too_long_for_the_temporary_file_is_refused_before_writing(tmp_path):
    model = VAE(6, 4, 2, rng=0)
    save_checkpoint(tmp_path / ("a" * 237 + ".npz"), model)                 # 241 bytes: the longest
    with pytest.raises(InputError, match=r"path: the file name is too long \(242 bytes; at most 241\)"):
        save_checkpoint(tmp_path / ("a" * 238 + ".npz"), model)
    assert os.listdir(tmp_path) == ["a" * 237 + ".npz"]


def test_a_file_name_is_measured_in_bytes_not_characters(tmp_path):
    """The limit is the file system's, in bytes: 120 two-byte letters and ".npz" are 124 characters but 244 bytes."""
    model = VAE(6, 4, 2, rng=0)
    name = "\u00e9" * 120 + ".npz"
    with pytest.raises(InputError, match=r"path: the file name is too long \(244 bytes; at most 241\)"):
        save_checkpoint(tmp_path / name, model)
    assert os.listdir(tmp_path) == []


def test_a_bytes_path_loads_as_it_saves(tmp_path):
    model = VAE(6, 4, 2, rng=0)
    path = os.fsencode(tmp_path / "b.npz")
    save_checkpoint(path, model)
    assert np.array_equal(load_model(path).encoder[0].weight.data, model.encoder[0].weight.data)


def test_another_generator_under_the_models_own_name_is_refused(tmp_path):
    """It would replace the model's sampler state in the file, without a word."""
    model = VAE(6, 4, 2, rng=0)
    with pytest.raises(InputError, match=r'rngs\["model"\] is not the model\'s sampler state'):
        save_checkpoint(tmp_path / "c.npz", model, rngs={"model": np.random.default_rng(1)})
    assert os.listdir(tmp_path) == []
    save_checkpoint(tmp_path / "c.npz", model, rngs={"model": model.rng})     # the same state: as it would be
    again = load_checkpoint(tmp_path / "c.npz")
    save_checkpoint(tmp_path / "d.npz", again.build_model(), rngs=again.rng_states)   # a round trip passes


def test_a_missing_checkpoint_is_also_a_file_not_found_error(tmp_path):
    """``except FileNotFoundError:`` (start afresh) catches it, as it catches a missing data set."""
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "none.npz")
    with pytest.raises(npvae.CheckpointNotFoundError):
        load_model(tmp_path / "none.npz")
    (tmp_path / "run").mkdir()                          # a run folder without its checkpoint.npz
    with pytest.raises(FileNotFoundError, match="a folder without a checkpoint.npz"):
        load_model(tmp_path / "run")
    (tmp_path / "run" / "checkpoint.npz").mkdir()       # there, but not a file: not "not found"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "run")
    assert not isinstance(info.value, FileNotFoundError)


# -- found by a user of their own loop -------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", {"lr": 1e-3}], ids=["str", "a state dict"])
def test_what_is_not_an_optimizer_is_named_as_the_argument_not_blamed_on_the_file(good, optimizer):
    path, model, _ = good
    other = VAE(784, 32, 4, rng=5)
    before = other.state_dict()
    with pytest.raises(InputTypeError, match=f"optimizer must be an npvae optimizer .*got builtins.{type(optimizer).__name__}$"):
        load_checkpoint(path, other, optimizer)
    assert all(np.array_equal(v, other.state_dict()[k]) for k, v in before.items())


def test_a_float64_checkpoint_refused_by_a_float32_model_says_how_to_take_its_weights(tmp_path):
    m64 = VAE(20, 16, 3, rng=0, dtype=np.float64)
    path = tmp_path / "f64.npz"
    save_checkpoint(path, m64, Adam(m64.parameters()))
    m32 = VAE(20, 16, 3, rng=1)
    with pytest.raises(CheckpointError, match="dtype: checkpoint 'float64', model 'float32'") as caught:
        load_checkpoint(path, m32)
    advice = str(caught.value).split("float32 model: ")[1].split(" (and the optimizer")[0]
    exec(advice, {"np": np, "npvae": npvae, "model": m32})          # the advice, as given, works
    for name, p in m64.named_parameters():
        np.testing.assert_array_equal(dict(m32.named_parameters())[name].data, p.data.astype(np.float32))
    with pytest.raises(CheckpointError) as caught:                 # other dimensions too: no such advice
        load_checkpoint(path, VAE(20, 8, 3))
    assert "load_state_dict" not in str(caught.value)


def test_optimizer_state_that_does_not_fit_without_the_model_suggests_passing_it(good):
    path, model, _ = good
    reordered = Adam(list(VAE(784, 32, 4).parameters())[::-1])
    with pytest.raises(CheckpointError, match="without model=.*pass the model too"):
        load_checkpoint(path, optimizer=reordered)


def test_a_pytorch_state_dict_saved_as_npz_points_to_interop(tmp_path):
    from npvae.interop import to_torch_state_dict
    np.savez(tmp_path / "torch.npz", **to_torch_state_dict(VAE(12, 7, 3, rng=0), "examples"))
    expect_error(tmp_path / "torch.npz", r"not an npvae checkpoint.*npvae.interop.from_torch_state_dict")
    model = VAE(12, 7, 3, rng=0)             # and an npvae one, as Module.load_state_dict's docstring saves it
    np.savez(tmp_path / "own.npz", **model.state_dict())
    expect_error(tmp_path / "own.npz", r"an npvae one with model.load_state_dict\(dict\(np.load\(path\)\)\)")
    VAE(12, 7, 3, rng=1).load_state_dict(dict(np.load(tmp_path / "own.npz")))


class _PReLU(npvae.Module):
    """A layer of your own with a Parameter: a learnable slope for x < 0."""

    def __init__(self, n):
        super().__init__()
        self.alpha = npvae.Parameter(np.full(n, 0.25, np.float32))

    def forward(self, x):
        self.keep(x=x)
        return np.where(x > 0, x, self.alpha.data * x)

    def backward(self, grad_out):
        x = self.saved("x")
        self.alpha.grad += (grad_out * np.minimum(x, 0)).sum(axis=0)
        return grad_out * np.where(x > 0, 1, self.alpha.data)


def test_a_layer_with_parameters_of_its_own_is_refused_before_anything_is_written(tmp_path):
    """A checkpoint is read against the stock VAE's parameters, so such a file could never be
    loaded: it is refused at once, and fit refuses before training, not after an epoch."""
    model = VAE(20, 8, 2, rng=0)
    model.encoder[1] = _PReLU(8)
    x = (np.random.default_rng(0).random((50, 20)) * 255).astype(np.uint8)
    words = r"parameter 'encoder.1.alpha' .*a layer of your own.*model.state_dict\(\)"
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(npvae.errors.InputError, match=words):
        save_checkpoint(tmp_path / "c.npz", model)
    with pytest.raises(npvae.errors.InputError, match=words):
        npvae.fit(model, x, epochs=1, progress=False, backend="numpy", checkpoint=tmp_path / "f.npz")
    assert os.listdir(tmp_path) == []
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())   # nothing trained
    history = npvae.fit(model, x, epochs=1, progress=False, backend="numpy")   # without a checkpoint: trains
    assert np.isfinite(history["train_loss"][0])


@pytest.mark.parametrize("decoder, words", [
    (lambda: npvae.Sequential(npvae.Dense(2, 20, rng=0)), r"implies decoder.0.weight of shape \(2, 8\) float32, "
                                                          r"but the model holds \(2, 20\) float32"),
    (lambda: npvae.Sequential(npvae.Dense(2, 16, rng=0), npvae.ReLU(), npvae.Dense(16, 20, rng=0)),
     r"decoder.0.weight of shape \(2, 8\) float32, but the model holds \(2, 16\) float32"),
    (lambda: npvae.Sequential(npvae.Dense(2, 8, rng=0, dtype=np.float64), npvae.ReLU(), npvae.Dense(8, 20, rng=0)),
     r"but the model holds \(2, 8\) float64"),
    (lambda: npvae.Sequential(npvae.Dense(2, 8, rng=0), npvae.ReLU(), npvae.Dense(8, 8, rng=0), npvae.ReLU(),
                              npvae.Dense(8, 20, rng=0)), r"parameter 'decoder.4.weight' is not one of the stock"),
    (lambda: npvae.Sequential(npvae.Dense(2, 8, rng=0), npvae.ReLU(), npvae.Sigmoid(), npvae.Dense(8, 20, rng=0)),
     r"parameter 'decoder.3.weight' is not one of the stock VAE's that a checkpoint holds: .*a Dense moved from "
     r"where VAE\(...\) puts it \(encoder.0, encoder.2, ..., the same in the decoder\) by a layer put before it\. "
     r"A layer without parameters may take a ReLU's place or follow the last Dense\. "),
    (lambda: npvae.Sequential(npvae.Dense(2, 8, rng=0), npvae.ReLU()),
     r"implies decoder.2.weight of shape \(8, 20\) float32, but the model holds nothing there"),
], ids=["linear", "wider", "float64 layer", "deeper", "a layer put before a Dense", "a layer short"])
def test_stock_layers_the_config_does_not_describe_are_refused_before_anything_is_written(tmp_path, decoder, words):
    """The checkpoint would be read against model.config()'s shapes and fail to load: refuse
    it at once, and in fit before training, not after a whole run of unloadable files."""
    model = VAE(20, 8, 2, rng=0)
    model.decoder = decoder()
    x = (np.random.default_rng(0).random((50, 20)) * 255).astype(np.uint8)
    with pytest.raises(npvae.errors.InputError, match=words + r".*model.state_dict\(\)"):
        save_checkpoint(tmp_path / "c.npz", model)
    with pytest.raises(npvae.errors.InputError, match=words):
        npvae.fit(model, x, epochs=1, progress=False, backend="numpy", checkpoint=tmp_path / "f.npz")
    assert os.listdir(tmp_path) == []


def test_a_layer_without_parameters_after_the_last_dense_saves_and_loads(tmp_path):
    model = VAE(20, 8, 2, rng=0)
    model.decoder = npvae.Sequential(*model.decoder, npvae.ReLU())     # as the message says a layer may go
    save_checkpoint(tmp_path / "c.npz", model)
    again = VAE(20, 8, 2, rng=1)
    again.decoder = npvae.Sequential(*again.decoder, npvae.ReLU())
    load_checkpoint(tmp_path / "c.npz", again)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


@pytest.mark.parametrize("arrays", [dict(images=np.zeros((2, 3)), labels=np.zeros(2)),
                                    {"images": np.zeros((2, 3)), "probe.weight": np.zeros(3)}],
                         ids=["data", "data and one weight"])
def test_an_npz_that_is_no_state_dict_is_not_told_to_load_one(tmp_path, arrays):
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(CheckpointError, match="not an npvae checkpoint") as e:
        load_checkpoint(tmp_path / "other.npz")
    assert "state dict" not in str(e.value) and "from_torch_state_dict" not in str(e.value)


def test_a_checkpoint_checks_that_it_is_given_a_vae(tmp_path):
    model = VAE(12, 8, 3, rng=0)
    save_checkpoint(tmp_path / "c.npz", model)
    with pytest.raises(npvae.errors.InputTypeError, match="model must be an npvae.VAE, got dict"):
        load_checkpoint(tmp_path / "c.npz").check_model({})


class _GaussVAE(VAE):
    """Another likelihood, written as a subclass with a setting: another model."""

    def __init__(self, *args, sigma=0.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.sigma = sigma

    def extra_repr(self):
        return f"{super().extra_repr()}, sigma={self.sigma}"


def test_a_subclass_checkpoint_is_not_taken_for_the_stock_vae_nor_for_other_settings(tmp_path):
    path = npvae.save_checkpoint(tmp_path / "g.npz", _GaussVAE(6, 5, 2, rng=0))
    with pytest.raises(CheckpointError, match=r"saved \(the model\): _GaussVAE\(6-5-2, dtype=float32, sigma=0\.3\) "
                                              r"where the model has \(the model\): VAE\(6-5-2"):
        npvae.load_model(path)
    with pytest.raises(CheckpointError, match=r"_GaussVAE.*where the model has \(the model\): VAE"):
        npvae.load_checkpoint(path, VAE(6, 5, 2, rng=1))
    with pytest.raises(CheckpointError, match=r"sigma=0\.3\) where the model has .*sigma=0\.9\)"):
        npvae.load_checkpoint(path, _GaussVAE(6, 5, 2, rng=1, sigma=0.9))
    mine = _GaussVAE(6, 5, 2, rng=1)
    npvae.load_checkpoint(path, mine)
    assert np.array_equal(mine.encoder[0].weight.data, _GaussVAE(6, 5, 2, rng=0).encoder[0].weight.data)
    stock = npvae.save_checkpoint(tmp_path / "s.npz", VAE(6, 5, 2, rng=0))
    with pytest.raises(CheckpointError, match=r"saved \(the model\): VAE\(6-5-2.*where the model has "
                                              r"\(the model\): _GaussVAE"):
        npvae.load_checkpoint(stock, _GaussVAE(6, 5, 2, rng=1))


def test_a_subclass_run_does_not_resume_into_the_stock_vae(tmp_path):
    x = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    path = tmp_path / "run.npz"
    npvae.fit(_GaussVAE(6, 5, 2, rng=0), x, epochs=1, batch_size=20, rng=0, checkpoint=path, progress=False,
              backend="numpy")
    model = VAE(6, 5, 2, rng=0)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(CheckpointError, match=r"_GaussVAE.*where the model has \(the model\): VAE"):
        npvae.fit(model, x, epochs=2, batch_size=20, rng=0, resume=path, progress=False, backend="numpy")
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


def test_a_checkpoint_from_before_the_model_class_was_saved_still_loads(tmp_path):
    path = npvae.save_checkpoint(tmp_path / "new.npz", VAE(6, 5, 2, rng=0))
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays[META_KEY]))
    assert meta["architecture"][0] == "(the model): VAE(6-5-2, dtype=float32)"
    meta["architecture"], meta["version"] = meta["architecture"][1:], 1
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    assert np.array_equal(npvae.load_model(tmp_path / "old.npz").encoder[0].weight.data,
                          VAE(6, 5, 2, rng=0).encoder[0].weight.data)


def test_load_model_of_a_checkpoint_that_records_no_layers_warns_that_it_takes_the_stock_vae(tmp_path):
    """The earliest checkpoints have no architecture: a layer of the user's own cannot be told."""
    path = npvae.save_checkpoint(tmp_path / "new.npz", VAE(6, 5, 2, rng=0))
    old = rewrite(path, tmp_path / "old.npz", meta=lambda m: m.update(architecture=None, version=1))
    with pytest.warns(UserWarning, match=r"old\.npz records no layers.*taken to be the stock VAE's.*"
                                         r"load_checkpoint\(path, model\)") as said:
        loaded = npvae.load_model(old)
    assert said[0].filename == __file__             # at the caller's line
    with pytest.warns(UserWarning, match=r"records no layers") as said:
        npvae.load_checkpoint(old).build_model()
    assert said[0].filename == __file__             # called directly too
    np.testing.assert_array_equal(loaded.encoder[0].weight.data, VAE(6, 5, 2, rng=0).encoder[0].weight.data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the user's own model, or a file with its layers: nothing to say
        npvae.load_checkpoint(old, VAE(6, 5, 2, rng=1))
        npvae.load_model(path)


def test_a_checkpoint_keeps_an_mt19937_generator(tmp_path):                 # C05
    model = VAE(12, 8, 2, rng=0)
    g = np.random.Generator(np.random.MT19937(7))
    save_checkpoint(tmp_path / "c.npz", model, rngs={"mt": g})
    assert load_checkpoint(tmp_path / "c.npz").generator("mt").random() == g.random()


def test_a_newer_format_version_by_one_is_refused(tmp_path):                # C10
    import json
    from npvae.errors import CheckpointError
    model = VAE(12, 8, 2, rng=0)
    p = tmp_path / "c.npz"
    save_checkpoint(p, model)
    arrays = dict(np.load(p))
    meta = json.loads(str(arrays["__meta__"][()]))
    meta["version"] = npvae.checkpoint.VERSION + 1
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v2.npz", **arrays)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "v2.npz")


def test_a_float64_parameter_in_a_float32_checkpoint_is_a_checkpoint_error(tmp_path):   # C15
    from npvae.errors import CheckpointError
    model = VAE(12, 8, 2, rng=0)
    p = tmp_path / "c.npz"
    save_checkpoint(p, model)
    arrays = dict(np.load(p))
    arrays["model/encoder.0.weight"] = arrays["model/encoder.0.weight"].astype(np.float64)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(CheckpointError, match="float64"):
        load_checkpoint(tmp_path / "d.npz")


def test_a_trailing_module_the_checkpoint_lacks_is_refused(tmp_path):      # C04
    from npvae import Sigmoid
    from npvae.errors import CheckpointError
    p = save_checkpoint(tmp_path / "c.npz", VAE(12, 8, 2, rng=0))
    model = VAE(12, 8, 2, rng=0)
    model.post = Sigmoid()                       # one module more, after the last one saved
    with pytest.raises(CheckpointError, match="other layers"):
        load_checkpoint(p, model)


def test_a_retired_unit_index_out_of_range_is_a_checkpoint_error(tmp_path):
    x = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    path = tmp_path / "c.npz"
    npvae.fit(VAE(12, 8, 2, rng=0), x, epochs=1, batch_size=20, rng=0, checkpoint=path, progress=False,
              backend="numba")
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays[META_KEY]))
    meta["dead_units"] = {"retired": [8], "candidates": [], "live": list(range(8))}     # 8 units: 0..7
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match=r"bad\.npz: dead_units\['retired'\] must be a list of unit indices"):
        npvae.fit(VAE(12, 8, 2, rng=0), x, epochs=2, batch_size=20, rng=0, resume=tmp_path / "bad.npz",
                  progress=False, backend="numba")


def test_a_subclass_named_vae_is_not_taken_for_npvaes(tmp_path):
    class VAE(npvae.VAE):           # a user's own, of the same name
        def loss(self, x, beta=1.0, eps=None):
            return super().loss(x, 4.0 * beta, eps)
    path = npvae.save_checkpoint(tmp_path / "c.npz", VAE(6, 5, 2, rng=0))
    with pytest.raises(CheckpointError, match=r"saved \(the model\): VAE subclass\(6-5-2"):
        npvae.load_model(path)
    with pytest.raises(CheckpointError, match=r"where the model has \(the model\): VAE\(6-5-2"):
        npvae.load_checkpoint(path, npvae.VAE(6, 5, 2, rng=1))
    npvae.load_checkpoint(path, VAE(6, 5, 2, rng=1))


def test_an_empty_saved_architecture_is_a_checkpoint_error_not_an_index_error(tmp_path):
    path = npvae.save_checkpoint(tmp_path / "c.npz", VAE(6, 5, 2, rng=0))
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays[META_KEY]))
    meta["architecture"] = []
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(CheckpointError, match="saved nothing where the model has encoder: Sequential"):
        npvae.load_model(tmp_path / "e.npz")


def test_a_checkpoint_prints_as_one_line_saying_what_it_holds(good):
    """Its arrays, Adam's moments and the streams' states printed about 1,000 lines."""
    path, model, _ = good
    shown = repr(load_checkpoint(path))
    assert "\n" not in shown and len(shown) < 300, shown
    assert shown.startswith(f"Checkpoint({str(path)!r}, epoch=2, step=3, model={model.config()}, optimizer=Adam, "
                            f"1 epoch record(s), test_loss=500.50)")
    ckpt = load_checkpoint(path)
    for odd in (None, "n/a", [1.0], True):            # no test images, or a record edited by hand
        ckpt.history = [{"epoch": 1, "test_loss": odd}]
        assert repr(ckpt).endswith(", 1 epoch record(s))")
    ckpt.history, ckpt.optimizer = [], None
    assert repr(ckpt).endswith("optimizer=None, 0 epoch record(s))")
    for odd in (None, {"epoch": 1}):                   # a Checkpoint made by hand
        ckpt.history = odd
        assert repr(ckpt).startswith("Checkpoint(")


def test_build_model_and_load_model_refuse_a_backend_no_npvae_took(good):
    """As VAE, Dense, Adam and set_backend do: "gpu" is a mistake, not the old spelling of a back end."""
    path, _, _ = good
    for call in (lambda b: load_checkpoint(path).build_model(backend=b), lambda b: load_model(path, backend=b)):
        with pytest.raises(InputError, match=r"backend, deprecated and ignored, was once 'numba', 'numpy' or None, "
                                             r"got 'gpu'; leave it out"):
            call("gpu")
        with pytest.warns(DeprecationWarning, match="no longer a property of models"):
            assert isinstance(call("numpy"), VAE)


@pytest.mark.parametrize("partial", [{"loss": float("nan")}, {"loss": float("inf")}, {"note": "x"},
                                     {"loss": True}, {"n": [1]}, {"loss": fractions.Fraction(1, 3)},
                                     {"n": 10**400}])
def test_running_sums_no_load_would_take_are_refused_at_the_save(tmp_path, partial):
    """Such a file was written, and then every loader (load_model too) refused it, weights and all."""
    model, opt = trained_pair()
    with pytest.raises(InputError, match=r"partial\[.*\] must be a finite number .* could not be loaded"):
        save_checkpoint(tmp_path / "p.npz", model, opt, partial=partial)
    assert os.listdir(tmp_path) == []
    save_checkpoint(tmp_path / "p.npz", model, opt, partial={"loss": np.float32(1.5), "n": np.int64(3)})
    assert load_checkpoint(tmp_path / "p.npz").partial == {"loss": 1.5, "n": 3}


def test_a_folder_that_may_not_be_looked_into_is_not_called_missing(tmp_path, monkeypatch):
    """os.path.exists is False where permission is lacking: "no such checkpoint file" (a
    FileNotFoundError, on which code may start afresh) was said of a checkpoint that is there."""
    model, opt = trained_pair()
    folder = tmp_path / "run"
    save_checkpoint(folder / "checkpoint.npz", model, opt)
    real_stat = os.stat

    def no_search_permission(path, *args, **kwargs):      # what a folder of mode 0600 gives (not to root)
        if os.fspath(path).startswith(str(folder) + os.sep):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)
    monkeypatch.setattr(os, "stat", no_search_permission)
    for given in (folder / "checkpoint.npz", folder):
        with pytest.raises(CheckpointError, match="cannot be read: Permission denied") as info:
            load_checkpoint(given)
        assert not isinstance(info.value, FileNotFoundError)


def test_a_checkpoint_under_a_file_is_not_found(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(npvae.CheckpointNotFoundError, match="no such checkpoint file"):
        npvae.load_checkpoint(tmp_path / "afile" / "c.npz")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_pipe_given_as_a_checkpoint_is_refused_without_waiting(tmp_path):
    from deadline import fail_after
    fifo = tmp_path / "c.npz"
    os.mkfifo(fifo)
    with fail_after(3, "load_checkpoint waited on a pipe"):
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_checkpoint(fifo)


def test_a_step_count_of_2_to_the_63_is_refused():
    model, opt = trained_pair()
    sd = opt.state_dict()
    sd["t"] = np.array(2.0**63)
    with pytest.raises(StateDictError, match=r"below 2\*\*63"):
        opt.load_state_dict(sd)


def test_interop_given_a_checkpoint_instead_of_a_model_says_to_load_the_model_first(tmp_path):
    from npvae.interop import to_torch_state_dict
    model, opt = trained_pair()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt)
    for value in (str(path), path, load_checkpoint(path)):
        with pytest.raises(InputTypeError, match=r"npvae\.load_model\(path\) reads a checkpoint's model first"):
            to_torch_state_dict(value)
    with pytest.raises(InputTypeError, match=r"got object$"):           # no such hint for anything else
        to_torch_state_dict(object())


def test_a_checkpoint_whose_zip_directory_claims_more_than_the_file_can_hold_is_corrupt(tmp_path):
    """A size field of the zip's central directory damaged (about 4 GB claimed): the members
    themselves are intact and pass their CRC, so only the check of the sizes the directory
    claims against the file's own size finds it. The file is called corrupt, as the module
    docstring promises, not loaded as if nothing were wrong."""
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, npvae.VAE(20, 8, 2, rng=0))
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")                  # the first central-directory entry
    struct.pack_into("<I", data, entry + 24, 0xFFFFFF00)   # its uncompressed size: ~4 GB
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: members claim \d+ bytes in a \d+-byte file"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"just some text\n", b"\x80\x02}q\x00.", b"\x93NUMPY\x01\x00"])
def test_a_file_that_is_no_zip_is_called_not_a_checkpoint_not_a_damaged_one(tmp_path, content):
    """A file that is no zip at all (empty, text, a pickle, a lone .npy) is "not an npvae
    checkpoint", with its size and first bytes, not a "corrupt or truncated checkpoint" (which
    sends the user looking for an earlier copy of a file that never was a checkpoint)."""
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"not an npvae checkpoint: not a zip/npz file \({len(content)} bytes"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_checkpoint_whose_running_sums_are_not_finite_is_refused_at_the_load(tmp_path, value):
    """save_checkpoint refuses such sums, so only a damaged or hand-edited file holds one; a
    resume from it would finish the epoch with a NaN or infinite loss in its record (json reads
    NaN and Infinity). The load refuses it, naming the sum, as the save does."""
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, npvae.VAE(20, 8, 2, rng=0), step=3, partial={"loss": 12.5, "n": 96})
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(str(arrays["__meta__"][()]))
    meta["partial"]["loss"] = value
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=r"running sum 'loss' is (nan|inf|-inf); the checkpoint cannot be resumed"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [0, -1, True, 2.0, "2"])
def test_a_checkpoint_whose_format_version_is_not_a_positive_int_is_malformed(tmp_path, version):
    """No npvae wrote version 0 (the first format is 1), nor a version that is not an int:
    such a file is damaged or someone else's."""
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, npvae.VAE(20, 8, 2, rng=0))
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(str(arrays["__meta__"][()]))
    meta["version"] = version
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=r"malformed checkpoint metadata: version must be a positive int"):
        load_checkpoint(path)


def test_a_sampler_without_a_generator_gets_the_saved_one_and_all_else_loads(tmp_path):
    saved = VAE(12, 8, 2, rng=0)
    save_checkpoint(tmp_path / "c.npz", saved, Adam(saved.parameters()))
    model = VAE(12, 8, 2, rng=1)
    model.sampler.rng = None                    # e.g. taken away to make sure nothing draws from it
    load_checkpoint(tmp_path / "c.npz", model, Adam(model.parameters()))
    np.testing.assert_array_equal(model.encoder[0].weight.data, saved.encoder[0].weight.data)
    np.testing.assert_array_equal(model.sample(3), saved.sample(3))     # the saved stream, not a fresh one


def test_a_subclass_keeping_its_own_generator_as_rng_gets_the_saved_state_in_it(tmp_path):
    """``model.rng`` is what a checkpoint saves and restores, whatever the subclass makes of it."""
    class OwnStream(VAE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.stream = np.random.default_rng(5)

        @property
        def rng(self):
            return self.stream

        @rng.setter
        def rng(self, rng):
            self.stream = rng
    saved = OwnStream(12, 8, 2, rng=3)
    save_checkpoint(tmp_path / "c.npz", saved)
    model = OwnStream(12, 8, 2, rng=4)
    kept = model.rng
    load_checkpoint(tmp_path / "c.npz", model)
    assert model.rng is kept and kept.random() == saved.rng.random()


def test_an_optimizer_whose_params_are_no_list_is_refused_by_name_saving_and_loading(tmp_path):
    model = VAE(12, 8, 2, rng=0)
    save_checkpoint(tmp_path / "c.npz", model, Adam(model.parameters()))
    opt = Adam(model.parameters())
    opt.params = None                       # set by hand
    for call in (lambda: save_checkpoint(tmp_path / "d.npz", model, opt),
                 lambda: load_checkpoint(tmp_path / "c.npz", optimizer=opt),
                 lambda: load_checkpoint(tmp_path / "c.npz", model, opt)):
        with pytest.raises(InputTypeError, match=r"optimizer\.params must be the list .*got NoneType"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_a_generator_named_by_no_string_is_a_checkpoint_error(tmp_path):
    import json
    path = tmp_path / "c.npz"
    npvae.save_checkpoint(path, npvae.VAE(12, 5, 2, rng=0))
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["__meta__"][()]))
    meta["rng_states"]["model"]["bit_generator"] = []
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(npvae.CheckpointError, match="bit generator"):
        npvae.load_checkpoint(path)
