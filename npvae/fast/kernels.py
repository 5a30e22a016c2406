"""The fast path's Numba kernels: the elementwise work around the matrix products.

Every kernel computes what a few lines of the reference compute (named in its
docstring), or, for the few that exist only for speed (which units fired, which gradient
columns are not 0, the decay of moments left out for a while), says so; each writes into
arrays it is given. Every 2-D array but the noise ``eps`` (row-major: the Generator
fills C order) is column-major (``order="F"``, see :mod:`npvae.fast.layout`): the loops
run down the columns, so the inner loop is contiguous and LLVM vectorises it.

Importing this module compiles nothing: each kernel compiles (or loads from
Numba's on-disk cache, ``cache=True``) on its first call with a given set of
dtypes, so a second run starts warm. Where Numba has no folder to cache in, the
kernels compile in every process instead, with a warning (:data:`CACHED`).
"""
import math
import os
import sys
import warnings

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

# Numba's disk cache checks a kernel against this file only (from Numba 0.68 its contents, before
# its mtime and size): everything the compiled code depends on (these options, the helpers,
# constants) is defined here, so that a change to any of it compiles the kernels anew. This
# module imports nothing from npvae (tests/test_fast_kernels.py checks).

# fastmath lets LLVM vectorise reductions and fuse multiply-adds (``reassoc``, ``contract``,
# ``arcp``, ``nsz``, ``afn``) but never assumes away NaN or inf (no ``nnan``/``ninf``): a
# diverging run must still be seen as diverging.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
# Without fused multiply-adds, for a kernel whose every element must round the same way
# wherever it sits in the array: LLVM 14 (Numba 0.59) fused the scalar tail of a loop but not
# its vector body, so an element's last bit depended on the array's length.
FASTMATH_NO_FMA = FASTMATH - {"contract"}
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")


def _probe():
    return 0


def _can_cache():
    """Whether Numba finds a folder to keep this file's kernels in.

    It tries ``$NUMBA_CACHE_DIR``, ``__pycache__`` beside this file, then the user's cache
    (:func:`user_cache`, ``~/.cache/numba`` on Linux):
    a read-only install used with no writable home (a container run as another user) has
    none, and ``cache=True`` would then fail at the first kernel.
    """
    try:
        numba.njit(cache=True)(_probe)          # finds the cache folder; compiles nothing
    except RuntimeError as e:
        if "no locator available" not in str(e):    # Numba's words for "no folder": anything else is not ours
            raise
        warnings.warn(f"Numba finds no writable folder to keep npvae's fast-path kernels in ({cache_places()}): "
                      f"they are compiled again in every process, 10-25 s each time; set "
                      f"NUMBA_CACHE_DIR to a folder you can write to keep them", UserWarning, stacklevel=2)
        return False
    return True


def cache_places():
    """Where Numba looks for a folder to keep the kernels in, as a user would name them."""
    given = [f"NUMBA_CACHE_DIR={numba.config.CACHE_DIR}"] if numba.config.CACHE_DIR else []
    return ", ".join([*given, os.path.join(os.path.dirname(__file__), "__pycache__"), user_cache()])


def user_cache():
    """Numba's last resort, the user's cache folder, as its ``appdirs`` names it on each system."""
    if sys.platform == "darwin":
        return "~/Library/Caches/numba"
    if os.name == "nt":
        return r"%LOCALAPPDATA%\numba\Cache"
    return os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "numba")    # set but empty: "numba", here


_interpreted_said = False


def warn_if_interpreted():
    """Say it once a process when ``NUMBA_DISABLE_JIT`` has the kernels run as plain Python (for
    tests and coverage): a training run then takes many times as long as the reference's."""
    global _interpreted_said
    if numba.config.DISABLE_JIT and not _interpreted_said:
        _interpreted_said = True
        warnings.warn("NUMBA_DISABLE_JIT is set: the fast path's kernels run as plain Python, many times "
                      "slower than compiled (and than backend='numpy', the reference)", UserWarning, stacklevel=3)


#: Whether the kernels are kept in Numba's disk cache (see :func:`_can_cache`; True under
#: ``NUMBA_DISABLE_JIT=1`` too, where nothing is compiled).
CACHED = _can_cache()
njit = numba.njit(**{**JIT_OPTIONS, "cache": CACHED})
inline = numba.njit(inline="always", **{**JIT_OPTIONS, "cache": CACHED})  # helpers compiled into their callers
njit_no_fma = numba.njit(**{**JIT_OPTIONS, "cache": CACHED, "fastmath": FASTMATH_NO_FMA})

# ---------------------------------------------------------------------------------
# Scalar math that LLVM can vectorise. (Kept in this file on purpose: Numba's disk
# cache is invalidated only when the file defining a kernel changes.)
#
# ``math.exp`` and ``math.log1p`` compile to calls into the C library, one
# element at a time (``log1pf`` costs about 18 ns here): the sigmoid + BCE kernel
# spent 3 ms a step in them, the sampler and KL kernels 10-15 us each. For float32
# these replacements are plain arithmetic (polynomials, one bit-cast), so a loop
# over them becomes SIMD code; they are accurate to float32 round-off (``exp_neg``
# and ``exp_any`` within 1 ulp as written, 5 ulp once fastmath reassociates them;
# ``expm1_any`` within 2 and 5 ulp likewise; ``log1p_unit`` within 3 ulp;
# tests/test_fast_kernels.py checks). float64 (the gradient checks) keeps the C
# library's correctly rounded functions.
#
# Each helper is a plain Python function with a Numba ``overload``; both pick the
# implementation by the argument's type, so under ``NUMBA_DISABLE_JIT=1`` a float32
# argument runs the same polynomial, line by line, as the compiled kernels do.


def typed(value, like):
    """``value`` as a scalar of the same float type as ``like`` (float32 stays float32)."""
    return type(like)(value)


@overload(typed, inline="always")
def _typed(value, like):
    if like == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


def exp_neg(x):
    """``exp(x)`` for ``x <= 0``, the only exponent the sigmoid and BCE need."""
    return _exp_neg_f32(x) if isinstance(x, np.float32) else type(x)(math.exp(x))


def exp_any(x):
    """``exp(x)`` for any ``x``: the sampler's and the KL's ``exp(logvar)``."""
    return _exp_any_f32(x) if isinstance(x, np.float32) else type(x)(np.exp(x))   # inf past the range


# Cephes expf in two steps, plain Python that Numba compiles into the kernels
# (register_jitable), so the tests can also run the algorithm without fastmath.
@register_jitable(inline="always")
def _expf_reduce(x):
    # x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial: (exp(r), n)
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))  # float32 floor: vectorises
    r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)  # ln2 in two parts: n*ln2_hi exact
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return p * r * r + r + np.float32(1.0), n


@register_jitable(inline="always")
def _times_pow2(p, n):
    # p * 2^n, 2^n built in the exponent bits as 2^n1 * 2^n2 (each a normal float, for
    # -150 <= n <= 127), so results down to the subnormal range come out right
    n1 = np.floor(n * np.float32(0.5))
    n2 = n - n1
    pow1 = np.int32((np.int32(n1) + np.int32(127)) << np.int32(23)).view(np.float32)
    pow2 = np.int32((np.int32(n2) + np.int32(127)) << np.int32(23)).view(np.float32)
    return (p * pow1) * pow2


def _exp_neg_f32(x):
    p, n = _expf_reduce(max(x, np.float32(-104.0)))  # below -104 exp rounds to 0
    return _times_pow2(p, n)


def _exp_any_f32(x):
    p, n = _expf_reduce(min(max(x, np.float32(-104.0)), np.float32(89.0)))
    # n = 128 (x > 88.38): 2^128 is no float32, so move a factor 2 into p; the product
    # stays finite up to float32's largest number (x = 88.72) and is inf beyond
    big = n > np.float32(127.0)
    p = p * np.float32(2.0) if big else p
    n = n - np.float32(1.0) if big else n
    e = _times_pow2(p, n)
    return e if x == x else x  # NaN stays NaN (the clamps would turn it into a number)


def expm1_any(x):
    """``exp(x) - 1`` for any ``x``, accurate also near 0: the KL's ``exp(logvar) - 1``."""
    return _expm1_any_f32(x) if isinstance(x, np.float32) else type(x)(np.expm1(x))


def _expm1_any_f32(x):
    # exp(x) - 1 keeps only the round-off of 1 near x = 0 (the KL of a latent at the prior):
    # there, x + x^2 (1/2! + x/3! + ... + x^8/10!), whose remainder x^11/11! is below float32's
    # round-off for |x| < 1; elsewhere exp(x) - 1, which cancels at most a factor 1.6.
    # x + x^2 P(x) with P > 0 is never below x, so expm1(x) - x (the KL) is never negative.
    y = min(max(x, np.float32(-1.0)), np.float32(1.0))    # serves |x| < 1 only; clamped, it never overflows
    p = np.float32(1.0 / 3628800.0)
    p = p * y + np.float32(1.0 / 362880.0)
    p = p * y + np.float32(1.0 / 40320.0)
    p = p * y + np.float32(1.0 / 5040.0)
    p = p * y + np.float32(1.0 / 720.0)
    p = p * y + np.float32(1.0 / 120.0)
    p = p * y + np.float32(1.0 / 24.0)
    p = p * y + np.float32(1.0 / 6.0)
    p = p * y + np.float32(0.5)
    near = y + y * y * p
    far = exp_any(x) - np.float32(1.0)
    return near if abs(x) < np.float32(1.0) else far


@overload(exp_neg, inline="always")
def _exp_neg(x):
    if x == types.float32:
        return _exp_neg_f32
    return lambda x: math.exp(x)


@overload(exp_any, inline="always")
def _exp_any(x):
    if x == types.float32:
        return _exp_any_f32
    return lambda x: math.exp(x)


@overload(expm1_any, inline="always")
def _expm1_any(x):
    if x == types.float32:
        return _expm1_any_f32
    return lambda x: math.expm1(x)


def log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1``, accurate also for tiny ``e``."""
    return _log1p_unit_f32(e) if isinstance(e, np.float32) else type(e)(math.log1p(e))


def _log1p_unit_f32(e):
    # log(1 + e) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = e / (2 + e) in [0, 1/3]:
    # no cancellation for small e, and 8 terms reach float32 precision since s^2 <= 1/9.
    s = e / (np.float32(2.0) + e)
    s2 = s * s
    p = np.float32(1.0 / 15.0)
    p = p * s2 + np.float32(1.0 / 13.0)
    p = p * s2 + np.float32(1.0 / 11.0)
    p = p * s2 + np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    p = p * s2 + np.float32(1.0)
    return np.float32(2.0) * s * p


@overload(log1p_unit, inline="always")
def _log1p_unit(e):
    if e == types.float32:
        return _log1p_unit_f32
    return lambda e: math.log1p(e)


# x / 255 for a pixel x in 0..255, correctly rounded (what np.divide gives). fastmath's
# ``arcp`` turns a division by 255 into a product with 1/255, which is not: for float32,
# the product is taken in float64, whose one rounding to float32 agrees with the division
# for all 256 pixels (and vectorises); float64 looks the quotient up. Tests check all 256.
_PIXEL_QUOTIENTS = np.arange(256) / 255.0   # float64; a global array is a constant to Numba


def unit_pixel(x, like):
    """``x / 255`` for a ``uint8`` pixel ``x``, in the float type of ``like``."""
    return _unit_pixel_f32(x, like) if isinstance(like, np.float32) else type(like)(_PIXEL_QUOTIENTS[x])


def _unit_pixel_f32(x, like):
    return np.float32(np.float64(x) * (1.0 / 255.0))


@overload(unit_pixel, inline="always")
def _unit_pixel(x, like):
    if like == types.float32:
        return _unit_pixel_f32
    return lambda x, like: _PIXEL_QUOTIENTS[x]


# ---------------------------------------------------------------------------------
# The kernels. (B, N) arrays are column-major: j (the column) outside, i inside.


@inline
def _sigmoid_from(x, e):
    """sigmoid(x) from e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) below (no overflow)."""
    s = typed(1.0, e) / (typed(1.0, e) + e)
    return s if x >= 0 else e * s


@inline
def _bce_term(l, t):
    """(softplus(l) - l t, e = exp(-|l|)): one pixel's BCE and the exp its sigmoid reuses."""
    e = exp_neg(-abs(l))
    # max(l, 0) - l t as l (1 - t) or -l t: a product, which fastmath cannot reorder into
    # max(l, 0) + log1p(e) - l t (that lost the tiny log1p(e) of a confident white pixel)
    linear = l * (typed(1.0, l) - t) if l > 0 else -l * t
    return linear + log1p_unit(e), e


@njit
def add_bias(y, b):
    """``y += b`` (B, N) + (N,): the bias of a Dense layer with no ReLU after it."""
    B, N = y.shape
    for j in range(N):
        for i in range(B):
            y[i, j] += b[j]


@njit
def bias_relu_forward(y, b):
    """``y = max(y + b, 0)`` in place: a Dense layer's bias and the ReLU after it."""
    B, N = y.shape
    zero = typed(0.0, b[0])
    for j in range(N):
        for i in range(B):
            y[i, j] = max(y[i, j] + b[j], zero)


@njit
def mark_fired_columns(y, fired):
    """``fired[j] = True`` where column j of ``y`` has a positive entry: a ReLU unit that fired
    (j is the column's position, not the unit's number once units are reordered). Speed only:
    the evidence :mod:`npvae.fast.dead_units` retires units on; the reference has no such line."""
    B, N = y.shape
    for j in range(N):
        for i in range(B):
            if y[i, j] > 0:
                fired[j] = True
                break  # one is enough: most units that fire stop at the first rows


@njit
def bias_grad(dy, db):
    """``db = dy.sum(0)``: a Dense layer's bias gradient (written, not added)."""
    B, N = dy.shape
    for j in range(N):
        acc = typed(0.0, db[j])
        for i in range(B):
            acc += dy[i, j]
        db[j] = acc


@njit
def relu_bias_backward(dy, y, dx, db, live):
    """``dx = dy * (y > 0)`` and ``db = dx.sum(0)`` in one pass (ReLU's backward, then the
    bias gradient of the Dense layer before it). Writes the indices of dx's columns that
    are not all 0 to ``live`` and returns how many there are: the other units are off
    for the whole batch, and their columns of dW are exactly 0."""
    B, N = dy.shape
    n_live = 0
    for j in range(N):
        acc = typed(0.0, db[j])
        size = typed(0.0, db[j])  # sum of |g|: > 0 iff some g != 0 (a float sum vectorises best)
        for i in range(B):
            g = dy[i, j] if y[i, j] > 0 else typed(0.0, dy[i, j])
            dx[i, j] = g
            acc += g
            size += abs(g)
        db[j] = acc
        if size != 0:
            live[n_live] = j
            n_live += 1
    return n_live


@njit
def gather_columns(a, idx, out):
    """``out[:, k] = a[:, idx[k]]`` for the ``out.shape[1]`` first entries of ``idx``. Speed only:
    the first weight's gradient over its live columns (:mod:`npvae.fast.step`)."""
    B, n = out.shape
    for k in range(n):
        j = idx[k]  # read once: LLVM cannot tell that out does not overwrite idx
        for i in range(B):
            out[i, k] = a[i, j]


@njit
def scale_pixels(pixels, out):
    """``out = pixels / 255`` (uint8 to floats in [0, 1]), correctly rounded, as
    :func:`npvae.data.to_float`; ``pixels`` and ``out`` have one shape and layout."""
    B, N = out.shape
    if out.size == 0:
        return
    like = typed(0.0, out[0, 0])   # only its type: float32 or float64
    for j in range(N):
        for i in range(B):
            out[i, j] = unit_pixel(pixels[i, j], like)


@njit
def bce_logits_forward(logits, target, rows):
    """``rows = bce_with_logits_per_sample(logits, target)`` (:mod:`npvae.losses`)."""
    B, N = logits.shape
    rows[:] = 0
    for j in range(N):
        for i in range(B):
            rows[i] += _bce_term(logits[i, j], target[i, j])[0]


@njit
def bce_logits_forward_backward(logits, target, scale, rows, dlogits):
    """:func:`bce_logits_forward` and ``dlogits = scale * (sigmoid(logits) - target)``
    (``BCEWithLogits.backward`` with ``scale = 1/B``), one ``exp`` a pixel for both."""
    B, N = logits.shape
    # two columns a pass, so each row's sum is read and written half as often
    rows[:] = 0
    for j in range(0, N - 1, 2):
        for i in range(B):
            l0, t0, l1, t1 = logits[i, j], target[i, j], logits[i, j + 1], target[i, j + 1]
            loss0, e0 = _bce_term(l0, t0)
            loss1, e1 = _bce_term(l1, t1)
            rows[i] += loss0 + loss1
            dlogits[i, j] = scale * (_sigmoid_from(l0, e0) - t0)
            dlogits[i, j + 1] = scale * (_sigmoid_from(l1, e1) - t1)
    if N % 2:
        for i in range(B):
            loss, e = _bce_term(logits[i, N - 1], target[i, N - 1])
            rows[i] += loss
            dlogits[i, N - 1] = scale * (_sigmoid_from(logits[i, N - 1], e) - target[i, N - 1])


@njit
def sampler_forward(h, eps, z, std):
    """``std = exp(logvar / 2)``, ``z = mu + std * eps`` from ``h = [mu | logvar]`` (B, 2d)
    (``Sampler.forward``)."""
    # Two passes per column: the exp vectorises over column-major h and std, while eps
    # (drawn row-major by the Generator) is read across its rows only in the second.
    B, d = z.shape
    for j in range(d):
        for i in range(B):
            std[i, j] = exp_any(typed(0.5, h[i, j]) * h[i, d + j])
        for i in range(B):
            z[i, j] = h[i, j] + std[i, j] * eps[i, j]


@njit
def kl_forward(h, rows):
    """``rows = kl_per_sample(mu, logvar)`` (:mod:`npvae.losses`) from ``h = [mu | logvar]``."""
    B, d2 = h.shape
    d = d2 // 2
    rows[:] = 0
    for j in range(d):
        for i in range(B):
            mu = h[i, j]
            lv = h[i, d + j]
            rows[i] += mu * mu + (expm1_any(lv) - lv)
    for i in range(B):
        rows[i] *= typed(0.5, rows[i])


@njit
def latent_backward(dz, eps, std, h, kl_scale, dh):
    """``dh`` (B, 2d): both roads into ``h = [mu | logvar]`` in one pass. Through z
    (``Sampler.backward``): ``[dz | dz * eps * std / 2]``; from the KL term
    (``KL.backward`` with ``kl_scale = beta / B``): ``kl_scale * [mu | (exp(logvar) - 1) / 2]``."""
    B, d = dz.shape
    half = typed(0.5, kl_scale)
    for j in range(d):
        for i in range(B):
            dh[i, j] = dz[i, j] + h[i, j] * kl_scale
            through_z = dz[i, j] * eps[i, j] * std[i, j] * half
            dh[i, d + j] = through_z + half * expm1_any(h[i, d + j]) * kl_scale


@inline
def _adam_moments(g, m, v, rates, tiny):
    """The new (m, v); those below the smallest normal number flush to 0 (see npvae.fast.optim).
    ``rates = (beta1, 1 - beta1, beta2, 1 - beta2)``, each rounded once from float64 as the
    reference's are (``1 - beta2`` worked out in float32 is off by 1e-5 for beta2 = 0.999).
    Written ``x < tiny`` so that NaN, which compares false, passes through as the reference's would."""
    beta1, rest1, beta2, rest2 = rates
    zero = typed(0.0, g)
    m = beta1 * m + rest1 * g
    v = beta2 * v + rest2 * (g * g)         # g^2 first, as the reference and PyTorch
    return (zero if abs(m) < tiny else m), (zero if v < tiny else v)


@inline
def _adam_step(m, v, step, inv_sqrt_bc2, eps):
    """How far Adam moves a parameter: step * m / (sqrt(v / bc2) + eps), step = lr / bc1."""
    return step * m / (math.sqrt(v) * inv_sqrt_bc2 + eps)


@njit
def adam_update(p, g, m, v, lr, rates, eps, weight_decay, bc1, bc2, tiny):
    """``Adam.step`` for 1-D ``p, g, m, v``; ``rates`` as for :func:`_adam_moments`,
    ``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t``."""
    step, inv_sqrt_bc2 = lr / bc1, typed(1.0, lr) / typed(math.sqrt(bc2), lr)
    for k in range(p.size):
        mk, vk = _adam_moments(g[k] + weight_decay * p[k], m[k], v[k], rates, tiny)
        m[k] = mk
        v[k] = vk
        p[k] -= _adam_step(mk, vk, step, inv_sqrt_bc2, eps)


@njit
def adam_update_columns(p, vals, idx, m, v, lr, rates, eps, weight_decay, bc1, bc2, tiny):
    """:func:`adam_update` of (R, N) ``p``, ``m``, ``v`` whose gradient is ``vals[:, k]`` in
    column ``idx[k]`` (increasing) and 0 in every other column, never written out."""
    # One plain loop per kind of column: a select inside the loop would keep it from vectorising.
    step, inv_sqrt_bc2 = lr / bc1, typed(1.0, lr) / typed(math.sqrt(bc2), lr)
    zero = typed(0.0, lr)
    R, N = p.shape
    n = vals.shape[1]
    k = 0
    for j in range(N):
        if k < n and idx[k] == j:                       # a live column
            for i in range(R):
                mi, vi = _adam_moments(vals[i, k] + weight_decay * p[i, j], m[i, j], v[i, j], rates, tiny)
                m[i, j] = mi
                v[i, j] = vi
                p[i, j] -= _adam_step(mi, vi, step, inv_sqrt_bc2, eps)
            k += 1
        elif weight_decay != zero:                      # dead, but weight decay pulls it
            for i in range(R):
                mi, vi = _adam_moments(weight_decay * p[i, j], m[i, j], v[i, j], rates, tiny)
                m[i, j] = mi
                v[i, j] = vi
                p[i, j] -= _adam_step(mi, vi, step, inv_sqrt_bc2, eps)
        else:
            # g = 0: the moments only decay. Once m has flushed to 0 (a unit dead for
            # some 800 steps) it stays 0 and the parameter stays put: only v changes.
            # (A float sum of |m| tells: a boolean "any" would not vectorise.)
            moving = zero
            for i in range(R):
                moving += abs(m[i, j])
            if moving == zero:
                for i in range(R):
                    v[i, j] = _adam_moments(zero, zero, v[i, j], rates, tiny)[1]
            else:
                for i in range(R):
                    mi, vi = _adam_moments(zero, m[i, j], v[i, j], rates, tiny)
                    m[i, j] = mi
                    v[i, j] = vi
                    p[i, j] -= _adam_step(mi, vi, step, inv_sqrt_bc2, eps)


@njit
def adam_step(p1, vals, idx, m1, v1, p, g, m, v, lr, rates, eps, weight_decay, bc1, bc2, tiny, count):
    """A whole Adam update of a block: :func:`adam_update_columns` on the first weight
    (``p1, vals, idx, m1, v1``), :func:`adam_update` on the rest, then ``count[0] += 1``.

    One call, so that a signal (Ctrl-C) cannot stop the update half done: Python handles
    signals between the calls it makes, and compiled code runs to its end."""
    adam_update_columns(p1, vals, idx, m1, v1, lr, rates, eps, weight_decay, bc1, bc2, tiny)
    adam_update(p, g, m, v, lr, rates, eps, weight_decay, bc1, bc2, tiny)
    count[0] += 1


@njit
def decay_moment(a, decay, steps, tiny):
    """``steps`` Adam steps of a zero gradient on a 1-D moment ``a`` (m with ``decay = beta1``,
    v with ``beta2``), in place, rounded as every step rounds: ``a = decay * a``, flushed below ``tiny``.
    Speed only: the steps a retired unit's columns sat out (:meth:`npvae.fast.optim.FusedOptimizer.release`)."""
    # Step by step over a block that stays in L1 (4 KB): each pass over it vectorises,
    # where a loop over the steps of one element at a time would be a chain of dependent
    # multiplies (0.1 s for the retired units' 150k moments after an epoch's 469 steps).
    zero = typed(0.0, decay)
    for start in range(0, a.size, 1024):
        block = a[start:start + 1024]
        for _ in range(steps):
            left = zero                   # sum of |block|: 0 once all of it has flushed
            for k in range(block.size):
                # the update's own formula for m (for v >= 0 it is v's: same roundings)
                ak = _adam_moments(zero, block[k], zero, (decay, zero, zero, zero), tiny)[0]
                block[k] = ak
                left += abs(ak)
            if left == zero:
                break


@njit_no_fma     # a held unit's columns, stepped later in a shorter array, end in the same bits
def sgd_update(p, g, buf, lr, momentum, weight_decay, first, tiny):
    """``SGD.step`` for 1-D ``p, g, buf``; ``first``: the first step (``buf = g``)."""
    zero = typed(0.0, lr)
    for k in range(p.size):
        gk = g[k] + weight_decay * p[k]
        if momentum != zero:
            bk = gk if first else momentum * buf[k] + gk
            bk = zero if abs(bk) < tiny else bk        # NaN passes through
            buf[k] = bk
            gk = bk
        p[k] -= lr * gk


@njit
def sgd_step(p1, g1, buf1, p, g, buf, lr, momentum, weight_decay, first, tiny, count):
    """A whole SGD update of a block, in one call (as :func:`adam_step`): :func:`sgd_update`
    on the first weight's updated columns (``p1, g1, buf1``) and on the rest, then
    ``count[0] += 1``."""
    sgd_update(p1, g1, buf1, lr, momentum, weight_decay, first, tiny)
    sgd_update(p, g, buf, lr, momentum, weight_decay, first, tiny)
    count[0] += 1
