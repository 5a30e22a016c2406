"""PyTorch state-dict conversion: names, orientation, both layouts, validation."""
import numpy as np
import pytest

import npvae
from npvae import VAE
from npvae.errors import InputError, InputTypeError, StateDictError
from npvae.interop import (LAYOUTS, detect_layout, from_torch_state_dict, load_torch_state_dict,
                           to_torch_state_dict)


@pytest.fixture(scope="module")
def tutorial():
    return VAE(784, 400, 20, rng=0)


def _relu(a):
    return np.maximum(a, 0)


def _linear(sd, name, x):
    """PyTorch's Linear: x W^T + b with W stored (out, in)."""
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def test_sequential_layout_names_and_shapes(tutorial):
    sd = to_torch_state_dict(tutorial)
    assert {k: v.shape for k, v in sd.items()} == {
        "encoder.0.weight": (400, 784), "encoder.0.bias": (400,),
        "encoder.2.weight": (40, 400), "encoder.2.bias": (40,),
        "decoder.0.weight": (400, 20), "decoder.0.bias": (400,),
        "decoder.2.weight": (784, 400), "decoder.2.bias": (784,)}
    np.testing.assert_array_equal(sd["encoder.0.weight"], tutorial.encoder[0].weight.data.T)
    np.testing.assert_array_equal(sd["decoder.2.bias"], tutorial.decoder[2].bias.data)
    for k, v in sd.items():
        assert v.dtype == np.float32 and v.flags.c_contiguous
        assert not any(np.shares_memory(v, p.data) for p in tutorial.parameters()), k


def test_examples_layout_names_and_shapes(tutorial):
    sd = to_torch_state_dict(tutorial, layout="examples")
    assert {k: v.shape for k, v in sd.items()} == {
        "fc1.weight": (400, 784), "fc1.bias": (400,), "fc21.weight": (20, 400), "fc21.bias": (20,),
        "fc22.weight": (20, 400), "fc22.bias": (20,), "fc3.weight": (400, 20), "fc3.bias": (400,),
        "fc4.weight": (784, 400), "fc4.bias": (784,)}
    w = tutorial.encoder[2].weight.data
    np.testing.assert_array_equal(sd["fc21.weight"], w[:, :20].T)     # mu head: first d outputs
    np.testing.assert_array_equal(sd["fc22.weight"], w[:, 20:].T)     # logvar head: last d
    assert all(v.flags.c_contiguous for v in sd.values())
    for k, v in sd.items():
        assert not any(np.shares_memory(v, p.data) for p in tutorial.parameters()), k


@pytest.mark.parametrize("layout", LAYOUTS)
def test_exported_weights_compute_the_same_model(layout):
    """Run the PyTorch models' forward passes in NumPy on the exported dict."""
    m = VAE(784, 400, 20, dtype=np.float64, rng=1)
    sd = to_torch_state_dict(m, layout)
    x = np.random.default_rng(0).uniform(size=(3, 784))
    z = np.random.default_rng(1).standard_normal((3, 20))
    if layout == "examples":       # pytorch/examples: fc1 -> relu -> (fc21, fc22); fc3 -> relu -> fc4
        h1 = _relu(_linear(sd, "fc1", x))
        mu, logvar = _linear(sd, "fc21", h1), _linear(sd, "fc22", h1)
        logits = _linear(sd, "fc4", _relu(_linear(sd, "fc3", z)))
    else:                          # nn.Sequential(Linear, ReLU, Linear); mu, logvar = h.chunk(2)
        h = _linear(sd, "encoder.2", _relu(_linear(sd, "encoder.0", x)))
        mu, logvar = h[:, :20], h[:, 20:]
        logits = _linear(sd, "decoder.2", _relu(_linear(sd, "decoder.0", z)))
    mu2, logvar2 = m.encode(x)
    np.testing.assert_allclose(mu, mu2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logvar, logvar2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), m.decode(z), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(layout, dtype):
    a, b = VAE(784, 400, 20, dtype=dtype, rng=0), VAE(784, 400, 20, dtype=dtype, rng=1)
    sd = to_torch_state_dict(a, layout)
    assert detect_layout(sd) == layout
    assert from_torch_state_dict(b, sd) is b                   # layout detected
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=n)
        assert not np.shares_memory(pa.data, pb.data)
    c = VAE(784, 400, 20, dtype=dtype, rng=2)
    load_torch_state_dict(c, sd, layout=layout)
    for k, v in to_torch_state_dict(c, layout).items():
        np.testing.assert_array_equal(v, sd[k])
    for v in sd.values():                                      # the loaded model holds copies
        v[...] = 0
    assert all(p.data.any() for p in c.parameters())


def test_deeper_models_sequential_only():
    a, b = VAE(12, (7, 5), 3, rng=0), VAE(12, (7, 5), 3, rng=1)
    sd = to_torch_state_dict(a)
    assert sorted(sd) == sorted(f"{p}.{i}.{k}" for p in ("encoder", "decoder") for i in (0, 2, 4)
                                for k in ("weight", "bias"))
    assert sd["encoder.4.weight"].shape == (6, 5)
    from_torch_state_dict(b, sd)
    assert all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(InputError, match="one hidden layer.*hidden_dims=\\(7, 5\\).*sequential"):
        to_torch_state_dict(a, layout="examples")
    ex = to_torch_state_dict(VAE(12, 7, 3, rng=0), layout="examples")
    with pytest.raises(InputError, match="one hidden layer"):
        from_torch_state_dict(b, ex)
    odd = VAE(12, 7, 3, rng=0)       # an encoder head of 5 outputs: no [mu | logvar] halves
    odd.encoder[2] = npvae.Dense(7, 5, rng=0)
    with pytest.raises(InputError, match="the two halves of 2 \\* latent_dim outputs; this model's encoder.2 has 5 "
                                         "outputs, and its decoder takes 3 inputs"):
        to_torch_state_dict(odd, layout="examples")
    odd.encoder[2] = npvae.Dense(7, 8, rng=0)       # even, but 4 + 4 where the decoder takes 3
    with pytest.raises(InputError, match="encoder.2 has 8 outputs, and its decoder takes 3 inputs"):
        to_torch_state_dict(odd, layout="examples")


def _bad(sd, case):
    sd = dict(sd)
    if case == "missing":
        del sd["fc22.bias"]
    elif case == "unexpected":
        sd["fc5.weight"] = np.zeros((2, 2), np.float32)
    elif case == "transposed":
        sd["fc1.weight"] = np.ascontiguousarray(sd["fc1.weight"].T)
    elif case == "shape":
        sd["fc21.bias"] = np.zeros(19, np.float32)
    elif case == "dtype":
        sd["fc4.weight"] = sd["fc4.weight"].astype(np.float64)
    elif case == "not an array":
        sd["fc3.bias"] = sd["fc3.bias"].tolist()
    elif case == "nan":
        sd["fc4.bias"] = np.full_like(sd["fc4.bias"], np.nan)
    return sd


@pytest.mark.parametrize("case, words", [
    ("missing", "missing \\['fc22.bias'\\]"), ("unexpected", "unexpected \\['fc5.weight'\\]"),
    ("transposed", "\\(784, 400\\).*PyTorch's Linear stores \\(out, in\\)"), ("shape", "\\(19,\\)"),
    ("dtype", "float64.*float32"), ("not an array", "numpy array"), ("nan", "NaN"),
])
def test_bad_state_dicts_are_refused_and_change_nothing(case, words):
    src = to_torch_state_dict(VAE(784, 400, 20, rng=5), "examples")
    m = VAE(784, 400, 20, rng=6)
    before = m.state_dict()
    with pytest.raises(StateDictError, match=words):
        from_torch_state_dict(m, _bad(src, case))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_layout_errors():
    m = VAE(12, 7, 3, rng=0)
    sd = to_torch_state_dict(m)
    with pytest.raises(InputError, match="layout"):
        to_torch_state_dict(m, layout="keras")
    with pytest.raises(InputError, match="layout"):
        from_torch_state_dict(m, sd, layout="keras")
    with pytest.raises(StateDictError, match="module\\."):
        from_torch_state_dict(m, {"module." + k: v for k, v in sd.items()})
    with pytest.raises(StateDictError, match="cannot tell"):
        from_torch_state_dict(m, {})
    with pytest.raises(StateDictError, match="dict"):
        from_torch_state_dict(m, list(sd.items()))
    with pytest.raises(StateDictError, match="missing"):        # sequential names, examples layout
        from_torch_state_dict(m, sd, layout="examples")
    with pytest.raises(InputTypeError, match="Module"):
        to_torch_state_dict(object())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_entry_of_no_layout_is_named_among_good_ones(layout):
    """A PyTorch VAE with a buffer of its own (a KL weight, say): the one name that fits no
    layout is named, not six good ones."""
    m = VAE(12, 7, 3, rng=0)
    sd = {**to_torch_state_dict(m, layout), "kl_weight": np.float32(1.0)}
    with pytest.raises(StateDictError, match=rf"of the '{layout}' layout but for \['kl_weight'\].*leave those out"):
        from_torch_state_dict(m, sd)


def test_a_vae_with_heads_for_mu_and_logvar_is_told_how_to_join_them():
    """A common hand-written PyTorch VAE (fc_mu, fc_logvar): not taken for the 'examples' layout
    (whose names also begin with "fc"), but told what npvae's encoder ends in."""
    m = VAE(12, 7, 3, rng=0)
    sd = to_torch_state_dict(m)
    w, b = sd.pop("encoder.2.weight"), sd.pop("encoder.2.bias")
    sd.update({"fc_mu.weight": w[:3], "fc_mu.bias": b[:3], "fc_logvar.weight": w[3:], "fc_logvar.bias": b[3:]})
    with pytest.raises(StateDictError, match=r"a head for the mean \(fc_mu.weight.*log-variance \(fc_logvar"
                                             r".*the mean's outputs first \(np.concatenate") as e:
        from_torch_state_dict(m, sd)
    assert "'examples' layout" not in str(e.value)
    nested = {"encoder." + k if k.startswith("fc_") else k: v for k, v in sd.items()}     # encoder.fc_mu.weight
    with pytest.raises(StateDictError, match=r"a head for the mean \(encoder.fc_mu.weight"):
        from_torch_state_dict(m, nested)
    joined = dict(sd)                  # what the message says to do, as the 'sequential' layout names it
    joined["encoder.2.weight"] = np.concatenate([joined.pop("fc_mu.weight"), joined.pop("fc_logvar.weight")], axis=0)
    joined["encoder.2.bias"] = np.concatenate([joined.pop("fc_mu.bias"), joined.pop("fc_logvar.bias")])
    fresh = VAE(12, 7, 3, rng=1)
    from_torch_state_dict(fresh, joined)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(fresh.parameters(), m.parameters()))


def test_a_torch_compile_prefix_is_named():
    m = VAE(12, 7, 3, rng=0)
    sd = {"_orig_mod." + k: v for k, v in to_torch_state_dict(m).items()}
    with pytest.raises(StateDictError, match=r"start with '_orig_mod\.' \(a torch.compile model\): strip"):
        from_torch_state_dict(m, sd)


def test_batchnorm_buffers_are_named_as_extra_entries_not_as_mean_and_variance_heads():
    m = VAE(12, 7, 3, rng=0)
    sd = {**to_torch_state_dict(m), "encoder.1.running_mean": np.zeros(7, np.float32),
          "encoder.1.running_var": np.ones(7, np.float32)}
    with pytest.raises(StateDictError, match=r"unexpected \['encoder.1.running_mean', 'encoder.1.running_var'\]") as e:
        from_torch_state_dict(m, sd)
    assert "head for the mean" not in str(e.value)


def _examples_without_fc2x(m):
    sd = to_torch_state_dict(m, "examples")
    heads = [sd.pop(k) for k in ("fc21.weight", "fc21.bias", "fc22.weight", "fc22.bias")]
    return sd, heads


def test_a_mean_head_alone_is_not_taken_for_two_heads():
    m = VAE(12, 7, 3, rng=0)
    sd, (w1, b1, w2, b2) = _examples_without_fc2x(m)
    sd.update({"fc_mu.weight": w1, "fc_mu.bias": b1, "fc_sigma.weight": w2, "fc_sigma.bias": b2})
    with pytest.raises(StateDictError, match=r"missing \['fc21.weight'.*unexpected \['fc_mu.weight'") as e:
        from_torch_state_dict(m, sd)
    assert "head for the mean" not in str(e.value)


@pytest.mark.parametrize("mean, var", [("fc_mean", "fc_var"), ("fc_mean", "fc_logvar"), ("mean_head", "logvar_head")])
def test_heads_named_mean_and_var_are_told_how_to_join_them(mean, var):
    m = VAE(12, 7, 3, rng=0)
    sd, (w1, b1, w2, b2) = _examples_without_fc2x(m)
    sd.update({f"{mean}.weight": w1, f"{mean}.bias": b1, f"{var}.weight": w2, f"{var}.bias": b2})
    with pytest.raises(StateDictError, match=rf"a head for the mean \({mean}\.weight.*log-variance \({var}\."):
        from_torch_state_dict(m, sd)


def test_the_prefix_hint_is_given_only_when_every_name_has_the_prefix():
    m = VAE(12, 7, 3, rng=0)
    w = np.zeros((7, 12), np.float32)
    for prefix in ("module.", "_orig_mod."):
        with pytest.raises(StateDictError, match="cannot tell the layout") as e:
            from_torch_state_dict(m, {prefix + "encoder.0.weight": w, "extra.weight": w})
        assert "start with" not in str(e.value)


def test_the_pytorch_examples_vae_with_renamed_heads_is_told_to_rename_them():
    """fc1, fc3, fc4 and heads called fc_mu/fc_logvar: renaming the heads is the whole fix."""
    m = VAE(12, 7, 3, rng=0)
    sd = to_torch_state_dict(m, "examples")
    heads = [k for k in sd if k.startswith(("fc21", "fc22"))]
    sd.update({k.replace("fc21", "fc_mu").replace("fc22", "fc_logvar"): sd.pop(k) for k in heads})
    with pytest.raises(StateDictError, match=r"rename the heads fc21 \(the mean\) and fc22 \(the log-variance\)"):
        from_torch_state_dict(m, sd)
    renamed = {k.replace("fc_mu", "fc21").replace("fc_logvar", "fc22"): v for k, v in sd.items()}
    fresh = from_torch_state_dict(VAE(12, 7, 3, rng=1), renamed)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(fresh.parameters(), m.parameters()))


def test_a_checkpoint_given_as_a_state_dict_is_named(tmp_path):
    m = VAE(12, 7, 3, rng=0)
    path = npvae.save_checkpoint(tmp_path / "c.npz", m)
    with np.load(path) as z:
        entries = dict(z)
    for load in (lambda: from_torch_state_dict(VAE(12, 7, 3, rng=1), entries),
                 lambda: VAE(12, 7, 3, rng=1).load_state_dict(entries)):
        with pytest.raises(StateDictError, match=r"an npvae checkpoint.*npvae.load_model\(path\)"):
            load()


def test_npvae_load_state_dict_of_a_pytorch_orientation_names_the_transpose():
    """The 'sequential' layout uses npvae's own names: a PyTorch export loaded as npvae's own."""
    m = VAE(12, 7, 3, rng=0)
    with pytest.raises(StateDictError, match=r"has shape \(7, 12\), the model expects \(12, 7\).*transposed"
                                             r".*from_torch_state_dict"):
        VAE(12, 7, 3, rng=1).load_state_dict(to_torch_state_dict(m))


def test_a_module_or_swapped_arguments_are_named():
    m = VAE(12, 7, 3, rng=0)
    with pytest.raises(StateDictError, match=r"state_dict is an npvae VAE, not a state dict: the arguments are "
                                             r"\(model, state_dict\)"):
        from_torch_state_dict(to_torch_state_dict(m), m)
    with pytest.raises(StateDictError, match=r"the method state_dict, not its result: call it"):
        from_torch_state_dict(m, VAE(12, 7, 3, rng=1).state_dict)

    class Module:                      # what a torch.nn.Module offers, without torch
        def state_dict(self):
            return {}

    with pytest.raises(StateDictError, match=r"state_dict is a Module, not its state dict: pass "
                                             r"\{k: v.detach\(\).cpu\(\).numpy\(\) for k, v in "):
        from_torch_state_dict(m, Module())


@pytest.mark.parametrize("layout", [None, "examples"])
def test_a_wrapped_state_dict_is_told_what_wraps_it_whether_or_not_the_layout_is_given(layout):
    model = VAE(12, 8, 3, rng=0)
    sd = to_torch_state_dict(model, "examples")
    with pytest.raises(StateDictError, match=r"; the names start with 'module\.' \(a DataParallel model\): strip "
                                             r"that prefix first$"):
        from_torch_state_dict(model, {"module." + k: v for k, v in sd.items()}, layout=layout)
    with pytest.raises(StateDictError, match=r"; it holds a dict under 'model' \(a training checkpoint\?\): pass "
                                             r"state_dict\['model'\]$"):
        from_torch_state_dict(model, {"model": sd, "epoch": 3}, layout=layout)
    assert from_torch_state_dict(model, sd, layout=layout) is model


def test_only_an_entry_holding_a_models_names_is_pointed_at():
    """A PyTorch optimizer's state dict ({"state": ..., "param_groups": ...}) has no such entry; a
    checkpoint listing its optimizer first is pointed at its model."""
    model = VAE(12, 8, 3, rng=0)
    sd = to_torch_state_dict(model, "examples")
    with pytest.raises(StateDictError) as info:
        from_torch_state_dict(model, {"state": {0: {"step": 1}}, "param_groups": [{"lr": 1e-3}]})
    assert "pass state_dict[" not in str(info.value)
    with pytest.raises(StateDictError, match=r"pass state_dict\['model'\]$"):
        from_torch_state_dict(model, {"optimizer": {"state": {}, "param_groups": []}, "model": sd})
