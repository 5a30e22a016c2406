"""Packed arrays (npvae.memory) and the models and optimizers that use them."""
import numpy as np
import pytest

from npvae import VAE, Adam, Dense, ReLU, Sequential
from npvae.memory import HUGE_PAGE, packed_zeros


def _block(a):
    while a.base is not None:
        a = a.base
    return a


@pytest.mark.parametrize("big", [False, True])
def test_packed_zeros_copies_shape_dtype_and_layout(big):
    like = [np.ones((5, 3), np.float32, order="F"), np.ones(7, np.float64), np.ones((2, 4), np.float32),
            np.ones((0, 3), np.float32)]
    if big:
        like.append(np.ones((784, 400), np.float32, order="F"))
    out = packed_zeros(like)
    for a, b in zip(like, out):
        assert (b.shape, b.dtype, b.flags.f_contiguous, b.flags.c_contiguous) == \
               (a.shape, a.dtype, a.flags.f_contiguous, a.flags.c_contiguous)
        assert b.flags.writeable and not b.any()
    assert len({id(_block(b)) for b in out}) == 1                   # one block
    if big:
        assert out[0].ctypes.data % HUGE_PAGE == 0                    # starting on a huge page
    else:                                                             # no 2 MB block for 100 bytes
        assert _block(out[0]).nbytes < 1024
    assert all(b.ctypes.data % 64 == 0 for b in out if b.size)        # each on a cache line
    for i, b in enumerate(out[:3]):                                   # no overlaps
        b[...] = i + 1
    for i, b in enumerate(out[:3]):
        assert (b == i + 1).all()


def test_vae_and_adam_keep_their_arrays_in_blocks():
    m = VAE(12, 16, 2, rng=0)
    opt = Adam(m.parameters())
    params = m.parameters()
    assert len({id(_block(p.data)) for p in params} | {id(_block(p.grad)) for p in params}) == 1
    assert len({id(_block(a)) for arrays in opt.state.values() for a in arrays}) == 1
    w = m.encoder[0].weight
    assert w.data.flags.f_contiguous and w.grad.flags.f_contiguous   # Dense's column-major weight
    assert opt.state["m"][0].strides == w.data.strides


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_pack_parameters_keeps_values_and_results(backend):
    def make():
        return Sequential(Dense(6, 9, rng=0), ReLU(), Dense(9, 4, rng=1)).set_backend(backend)

    plain, packed = make(), make()
    before = packed.state_dict()
    packed.pack_parameters()
    for name, p in packed.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)
    x = np.random.default_rng(2).random((5, 6), dtype=np.float32)
    g = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    opts = [Adam(model.parameters(), backend=backend) for model in (plain, packed)]
    for _ in range(3):
        for model, opt in zip((plain, packed), opts):
            opt.zero_grad()
            model.forward(x)
            model.backward(g)
            opt.step()
    for (name, a), b in zip(plain.named_parameters(), packed.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)


def test_span_covers_packed_arrays_and_nothing_else():
    from npvae.memory import span
    like = [np.ones((5, 3), np.float32, order="F"), np.ones(7, np.float32), np.ones((4, 4), np.float32)]
    a, b, c = packed_zeros(like)
    s = span([a, b, c])
    assert s.dtype == np.float32 and s.ctypes.data == a.ctypes.data
    assert s.size == (c.ctypes.data - a.ctypes.data) // 4 + c.size   # padding after b (7 floats -> 16) included
    s[...] = np.arange(s.size)
    assert a.ravel(order="K")[0] == 0 and c.ravel()[-1] == s.size - 1
    a2, b2, c2 = packed_zeros(like)
    assert span([b2]) is not None and span([b2, c2]) is not None
    assert span([a2, c2]) is None                                       # not neighbours
    assert span([b2, a2]) is None                                       # out of order
    assert span([a2, np.zeros(7, np.float32)]) is None                  # another block
    mixed = packed_zeros([np.ones(3, np.float32), np.ones(3, np.float64)])
    assert span(mixed) is None                                          # two dtypes
    block = _block(b2)
    block[b2.ctypes.data - block.ctypes.data + b2.nbytes] = 1          # a nonzero byte of padding
    assert span([b2, c2]) is None


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("opt_class", ["Adam", "SGD"])
def test_one_update_call_covers_a_packed_models_parameters_with_the_same_bits(backend, opt_class):
    """The model packs its parameters and gradients, the optimizer its state: one kernel call
    updates them all, with the numbers of one call per parameter (arrays not packed)."""
    import npvae
    from npvae.module import Parameter
    cls = getattr(npvae, opt_class)
    hyper = dict(lr=0.01, momentum=0.9) if opt_class == "SGD" else {}
    m = VAE(12, 16, 2, rng=0, backend=backend)
    loose = [Parameter(p.data.copy()) for p in m.parameters()]          # each in its own memory
    packed_opt, loose_opt = cls(m.parameters(), backend=backend, **hyper), cls(loose, backend=backend, **hyper)
    assert len(packed_opt._runs()) == 1 and len(loose_opt._runs()) == len(loose)
    r = np.random.default_rng(1)
    for _ in range(5):
        for p, q in zip(m.parameters(), loose):
            p.grad[...] = q.grad[...] = r.standard_normal(p.shape).astype(p.dtype)
        packed_opt.step()
        loose_opt.step()
    for p, q in zip(m.parameters(), loose):
        assert np.array_equal(p.data, q.data)
