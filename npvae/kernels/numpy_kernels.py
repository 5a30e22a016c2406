"""The NumPy twins of the Numba kernels: same signatures, same results to round-off.

These are the reference path (``backend="numpy"``) and the readable statement of
what each kernel computes. Every function writes into the output arrays it is
given and allocates nothing of batch size where NumPy lets it avoid that.
"""
import numpy as np


def add_bias(y, b):
    """y += b, broadcast over rows.  y: (B, N), b: (N,)."""
    np.add(y, b, out=y)


def bias_relu_forward(y, b):
    """y = max(y + b, 0) in place: a Dense layer's bias and the ReLU after it."""
    np.add(y, b, out=y)
    np.maximum(y, 0, out=y)


def bias_grad(dy, db, beta):
    """db = beta * db + sum over rows of dy.  beta is 0 (overwrite) or 1 (accumulate)."""
    if beta == 0:
        np.sum(dy, axis=0, out=db)
    else:
        db += dy.sum(axis=0)


def relu_forward(x, y):
    """y = max(x, 0)."""
    np.maximum(x, 0, out=y)


def relu_backward(dy, y, dx):
    """dx = dy where y > 0, else 0.  Reads dy, never writes it."""
    np.multiply(dy, y > 0, out=dx)


def relu_bias_backward(dy, y, dx, db, beta, live):
    """dx = dy * (y > 0) and db = beta * db + sum over rows of dx, in one pass.

    Also writes to ``live`` the indices of dx's columns with a nonzero entry
    (the others belong to units that are off for the whole batch) and returns
    how many there are.
    """
    relu_backward(dy, y, dx)
    bias_grad(dx, db, beta)
    nz = np.flatnonzero(np.any(dx != 0, axis=0))
    live[:len(nz)] = nz
    return len(nz)


def gather_columns(a, idx, out):
    """out[:, k] = a[:, idx[k]] for the out.shape[1] first entries of idx."""
    np.take(a, idx[:out.shape[1]], axis=1, out=out)


def scale_pixels(pixels, out):
    """out = pixels / 255 (uint8 pixels to floats in [0, 1]), correctly rounded."""
    np.divide(pixels, 255, out=out, dtype=out.dtype)


def scatter_columns(src, idx, out, beta):
    """out[:, idx[k]] = beta * out[:, idx[k]] + src[:, k] (idx increasing); with beta = 0
    the other columns of out are set to 0, with beta = 1 they are left alone."""
    cols = idx[:src.shape[1]]
    if beta == 0:
        out[...] = 0
        out[:, cols] = src
    else:
        out[:, cols] += src


def mark_live_columns(y, idx, live):
    """live[idx[k]] = True where column k of y has a positive entry (a ReLU unit that fired)."""
    live[idx[:y.shape[1]][(y > 0).any(axis=0)]] = True


def sigmoid_forward(x, y):
    """y = 1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    e = np.exp(-np.abs(x))
    np.divide(1.0, 1.0 + e, out=y)          # sigmoid(|x|)
    np.multiply(y, e, out=y, where=x < 0)   # sigmoid(-a) = e / (1 + e), no cancellation


def sigmoid_backward(dy, y, dx):
    """dx = dy * y * (1 - y)."""
    np.multiply(dy, y * (1 - y), out=dx)


def bce_logits_forward(logits, target, rows):
    """rows[i] = sum_j softplus(l) - t l, with softplus(l) = max(l, 0) + log1p(exp(-|l|))."""
    per = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    np.sum(per, axis=1, out=rows)


def bce_logits_forward_backward(logits, target, scale, rows, dlogits):
    """Loss rows as in :func:`bce_logits_forward` and dlogits = scale * (sigmoid(l) - t)."""
    bce_logits_forward(logits, target, rows)
    sigmoid_forward(logits, dlogits)
    dlogits -= target
    dlogits *= scale


def sampler_forward(h, eps, z, std):
    """std = exp(logvar / 2); z = mu + std * eps, with h = [mu | logvar] (B, 2d)."""
    d = z.shape[1]
    np.exp(0.5 * h[:, d:], out=std)
    np.multiply(std, eps, out=z)
    z += h[:, :d]


def sampler_backward(dz, eps, std, dh):
    """dh = [dz | dz * eps * std / 2]."""
    d = dz.shape[1]
    dh[:, :d] = dz
    np.multiply(dz, eps, out=dh[:, d:])
    dh[:, d:] *= std
    dh[:, d:] *= 0.5


def kl_forward(h, rows):
    """rows[i] = 1/2 sum_j (exp(logvar) + mu^2 - 1 - logvar)."""
    d = h.shape[1] // 2
    mu, lv = h[:, :d], h[:, d:]
    np.sum(np.exp(lv) + mu * mu - 1.0 - lv, axis=1, out=rows)
    rows *= 0.5


def kl_backward(h, scale, dh):
    """dh = scale * [mu | (exp(logvar) - 1) / 2]."""
    d = h.shape[1] // 2
    np.multiply(h[:, :d], scale, out=dh[:, :d])
    np.exp(h[:, d:], out=dh[:, d:])
    dh[:, d:] -= 1.0
    dh[:, d:] *= 0.5 * scale


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2, tiny):
    """One Adam step in place (PyTorch's rule); moments below ``tiny`` are flushed to 0.

    ``bc1 = 1 - beta1**t`` and ``bc2 = 1 - beta2**t`` are the bias corrections.
    Flushing keeps dead units' decaying moments out of the slow subnormal range;
    the update they would have made is below ``lr * tiny / eps``, far below round-off.
    """
    if weight_decay != 0:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    m[np.abs(m) < tiny] = 0
    v[v < tiny] = 0
    denom = np.sqrt(v)
    denom /= np.sqrt(bc2)
    denom += eps
    p -= (lr / bc1) * (m / denom)


def decay_moment(a, beta, steps, tiny):
    """``steps`` Adam steps of a zero gradient on a moment ``a`` (1-D: m with beta1, v with
    beta2), in place: ``a = beta a`` each time, flushed to 0 below ``tiny`` in magnitude,
    rounded as every step rounds."""
    for _ in range(steps):
        a *= beta
        a[np.abs(a) < tiny] = 0


def adam_update_columns(p, vals, idx, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2, tiny):
    """:func:`adam_update` of 2-D ``p``, ``m``, ``v`` with a gradient given by columns:
    ``vals[:, k]`` in column ``idx[k]`` (idx increasing) and 0 in every other column."""
    g = np.empty_like(p)
    scatter_columns(vals, idx, g, 0.0)                   # writes every entry
    flat = [a.ravel(order="K") for a in (p, g, m, v)]   # views in memory order, as the optimizer passes
    adam_update(*flat, lr, beta1, beta2, eps, weight_decay, bc1, bc2, tiny)


def sgd_update(p, g, buf, lr, momentum, weight_decay, first, tiny):
    """One SGD step in place (PyTorch's rule, no dampening): buf = momentum buf + g; p -= lr buf."""
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum == 0:
        p -= lr * g
        return
    if first:
        buf[...] = g
    else:
        buf *= momentum
        buf += g
    buf[np.abs(buf) < tiny] = 0
    p -= lr * buf
