"""The hot path: small Numba kernels, one loop nest each, same signatures as
:mod:`npvae.kernels.numpy_kernels` (read that module for what each one means).

Importing this module compiles nothing: each kernel compiles (or loads from the
on-disk cache, ``cache=True``) on its first call with a given set of dtypes.
"""
import math

import numba
import numpy as np

from .flags import JIT_OPTIONS

njit = numba.njit(**JIT_OPTIONS)


@njit
def add_bias(y, b):
    B, N = y.shape
    for i in range(B):
        for j in range(N):
            y[i, j] += b[j]


@njit
def bias_relu_forward(y, b):
    B, N = y.shape
    for i in range(B):
        for j in range(N):
            y[i, j] = max(y[i, j] + b[j], 0.0)


@njit
def bias_grad(dy, db, beta):
    B, N = dy.shape
    for j in range(N):
        db[j] *= beta  # beta is 0 or 1; 0 * stale grad is 0 since grads are finite
    for i in range(B):
        for j in range(N):
            db[j] += dy[i, j]


@njit
def relu_forward(x, y):
    B, N = x.shape
    for i in range(B):
        for j in range(N):
            y[i, j] = max(x[i, j], 0.0)


@njit
def relu_backward(dy, y, dx):
    B, N = dy.shape
    for i in range(B):
        for j in range(N):
            dx[i, j] = dy[i, j] if y[i, j] > 0 else 0.0


@njit
def relu_bias_backward(dy, y, dx, db, beta):
    B, N = dy.shape
    for j in range(N):
        db[j] *= beta
    for i in range(B):
        for j in range(N):
            g = dy[i, j] if y[i, j] > 0 else 0.0
            dx[i, j] = g
            db[j] += g


@njit
def sigmoid_forward(x, y):
    B, N = x.shape
    for i in range(B):
        for j in range(N):
            e = math.exp(-abs(x[i, j]))
            s = 1.0 / (1.0 + e)
            y[i, j] = s if x[i, j] >= 0 else e * s


@njit
def sigmoid_backward(dy, y, dx):
    B, N = dy.shape
    for i in range(B):
        for j in range(N):
            dx[i, j] = dy[i, j] * y[i, j] * (1.0 - y[i, j])


@njit
def bce_logits_forward(logits, target, rows):
    B, N = logits.shape
    for i in range(B):
        acc = 0.0
        for j in range(N):
            l = logits[i, j]
            acc += max(l, 0.0) - l * target[i, j] + math.log1p(math.exp(-abs(l)))
        rows[i] = acc


@njit
def bce_logits_forward_backward(logits, target, scale, rows, dlogits):
    B, N = logits.shape
    for i in range(B):
        acc = 0.0
        for j in range(N):
            l = logits[i, j]
            t = target[i, j]
            e = math.exp(-abs(l))  # one exp serves both the loss and the sigmoid
            acc += max(l, 0.0) - l * t + math.log1p(e)
            s = 1.0 / (1.0 + e)
            s = s if l >= 0 else e * s
            dlogits[i, j] = scale * (s - t)
        rows[i] = acc


@njit
def sampler_forward(h, eps, z, std):
    B, d = z.shape
    for i in range(B):
        for j in range(d):
            s = math.exp(0.5 * h[i, d + j])
            std[i, j] = s
            z[i, j] = h[i, j] + s * eps[i, j]


@njit
def sampler_backward(dz, eps, std, dh):
    B, d = dz.shape
    for i in range(B):
        for j in range(d):
            dh[i, j] = dz[i, j]
            dh[i, d + j] = 0.5 * dz[i, j] * eps[i, j] * std[i, j]


@njit
def kl_forward(h, rows):
    B, d2 = h.shape
    d = d2 // 2
    for i in range(B):
        acc = 0.0
        for j in range(d):
            mu = h[i, j]
            lv = h[i, d + j]
            acc += math.exp(lv) + mu * mu - 1.0 - lv
        rows[i] = 0.5 * acc


@njit
def kl_backward(h, scale, dh):
    B, d2 = h.shape
    d = d2 // 2
    for i in range(B):
        for j in range(d):
            dh[i, j] = scale * h[i, j]
            dh[i, d + j] = 0.5 * scale * (math.exp(h[i, d + j]) - 1.0)


@njit
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2, tiny):
    step = lr / bc1
    inv_sqrt_bc2 = 1.0 / math.sqrt(bc2)
    pf, gf, mf, vf = p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1)
    for k in range(pf.size):
        gk = gf[k] + weight_decay * pf[k]
        mk = beta1 * mf[k] + (1.0 - beta1) * gk
        vk = beta2 * vf[k] + (1.0 - beta2) * gk * gk
        mk = mk if abs(mk) >= tiny else 0.0  # keep dead units' moments out of subnormals
        vk = vk if vk >= tiny else 0.0
        mf[k] = mk
        vf[k] = vk
        pf[k] -= step * mk / (math.sqrt(vk) * inv_sqrt_bc2 + eps)


@njit
def sgd_update(p, g, buf, lr, momentum, weight_decay, first, tiny):
    pf, gf, bf = p.reshape(-1), g.reshape(-1), buf.reshape(-1)
    for k in range(pf.size):
        gk = gf[k] + weight_decay * pf[k]
        if momentum != 0.0:
            bk = gk if first else momentum * bf[k] + gk
            bk = bk if abs(bk) >= tiny else 0.0
            bf[k] = bk
            gk = bk
        pf[k] -= lr * gk
