r"""The fused optimizer update: Adam's or SGD's rule over the whole parameter block.

:class:`FusedAdam` and :class:`FusedSGD` apply ``npvae.optim.Adam.step`` and
``SGD.step`` to a :class:`~npvae.fast.layout.ParameterBlock` in one kernel call
(``adam_step``, ``sgd_step``), which updates the first layer's weight, whose gradient
comes as its live columns (:meth:`npvae.fast.step.FastVAE.backward`), then every other
parameter, which lie back to back in the block, then counts the step: one call, so that
a Ctrl-C lands before an update or after it, never half way. They take their hyper-parameters and step count from
the reference optimizer (:meth:`load`; the hyper-parameters again when they change:
:meth:`settings_changed` tells, :meth:`apply_settings` takes them) and give the step
count back (:meth:`store`); the moments travel with the block.

Where they differ from the reference, it is below round-off:

* state that decays below the dtype's smallest normal number ``tiny`` is set to 0
  (units off for good get exactly-zero gradients, and their state would otherwise
  drift into slow subnormal arithmetic). Adam flushes its moments, whose update would
  have been under ``lr * tiny / eps``, only while ``eps * sqrt(1 - beta2) >= sqrt(tiny) *
  2**(nmant + 1)`` (float32 and ``beta2 = 0.999``: ``eps`` above about 6e-11; the default
  is 1e-8); SGD always flushes its momentum buffer, whose update would have been under
  ``lr * tiny``;
* Adam's update is computed as ``(lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)``, PyTorch's
  arrangement of Algorithm 1's ``lr * m_hat / (sqrt(v_hat) + eps)``.

For :mod:`npvae.fast.dead_units` they also say where a zero gradient would leave a
parameter unchanged for good (:meth:`at_rest`) and can leave the first weight's last
columns alone for a while (:meth:`hold`, :meth:`release`).
"""
import numpy as np

from ..optim import SGD, Adam
from . import kernels as k


def fused(optimizer, block, params):
    """The fused twin of ``optimizer`` (an ``Adam`` or ``SGD``) over ``block``, which holds
    ``params`` (the model's parameters, in the block's order)."""
    if type(optimizer) is Adam:
        return FusedAdam(optimizer, block, params)
    if type(optimizer) is SGD:
        return FusedSGD(optimizer, block, params)
    raise TypeError(f"the fast path runs Adam and SGD, not {type(optimizer).__name__}")


class FusedOptimizer:
    """What :class:`FusedAdam` and :class:`FusedSGD` share: the reference optimizer they follow
    (``source``), the block they update, and the first weight's held columns (:meth:`hold`)."""

    state_names = ()

    def __init__(self, optimizer, block, params):
        self.source, self.block, self.params = optimizer, block, list(params)
        self.held = None            # (n, t at hold): the first weight's columns from n on sit out the steps
        self.count = np.zeros(1, np.int64)      # the step count, counted by the update's kernel
        self.load()

    @property
    def t(self):
        """The number of steps taken (as ``Adam.t``)."""
        return int(self.count[0])

    @t.setter
    def t(self, value):
        self.count[0] = value

    def load(self):
        """Take the hyper-parameters and the step count from the reference optimizer."""
        self.t = self.source.t
        self.held = None
        self.apply_settings()

    def settings_changed(self):
        """True if the reference optimizer's hyper-parameters (``hyper()``) are no longer those
        applied, e.g. a learning-rate schedule set ``lr``; :meth:`apply_settings` takes them."""
        return self.source.hyper() != self.settings

    def apply_settings(self):
        """Take the reference optimizer's current hyper-parameters."""
        settings = self.source.hyper()
        self._use(settings)
        self.settings = settings            # last: a Ctrl-C before it leaves them to take again

    def _use(self, settings):  # pragma: no cover - abstract
        raise NotImplementedError

    def store(self):
        """Give the step count back (the moments are stored with the block)."""
        self.source.t = self.t

    def states(self):
        """``{state name: [array per parameter]}`` of the reference optimizer, in the block's order."""
        return {name: [self.source.state[p][name] for p in self.params] for name in self.state_names}

    def _first_columns(self):
        """How many of the first weight's columns are updated (all but the held ones)."""
        return self.block.shapes[0][1] if self.held is None else self.held[0]

    def _rows(self, start):
        """Every row of the block from column ``start`` on: the flat arrays of one call."""
        return [row[start:] for row in self.block.rows]

    def hold(self, n):
        """Until :meth:`release`, update only the first ``n`` columns of the first weight: the
        others have zero gradients and are :meth:`at_rest`, so a step would not move them."""
        self.release()
        self.held = (n, self.t)

    def release(self):
        """Update every column again, after replaying what the held steps would have done."""
        if self.held is not None:
            n, t0 = self.held
            self.held = None
            self._catch_up(n, self.t - t0)

    def _catch_up(self, n, steps):
        """What the held columns' state would have become over ``steps`` zero-gradient steps.
        Nothing, here: held columns are at rest, and for SGD that means a momentum buffer of 0
        (or none), which such steps leave at 0. :class:`FusedAdam`'s moments still decay."""

    def at_rest(self, i):
        """Bool array of parameter i's shape: where a zero gradient leaves it unchanged at every
        step from now on; None if this optimizer cannot tell (then nothing is)."""
        return None


class FusedAdam(FusedOptimizer):
    """:class:`npvae.optim.Adam` over the block (see the module docstring)."""

    state_names = Adam.state_names

    def _use(self, s):
        dt = self.block.rows.dtype.type
        self.lr, self.betas, self.eps, self.weight_decay = s["lr"], s["betas"], s["eps"], s["weight_decay"]
        beta1, beta2 = self.betas
        rates = tuple(map(dt, (beta1, 1 - beta1, beta2, 1 - beta2)))     # rounded once, as Adam.step's
        self._constants = (dt(self.lr), rates, dt(self.eps), dt(self.weight_decay))
        # Flushing moments below tiny (see above) is below round-off only while eps is far above
        # sqrt(tiny) / sqrt(1 - beta2) (the largest bias-corrected sqrt(v) it drops); else flush nothing.
        finfo = np.finfo(dt)
        negligible = self.eps * np.sqrt(1 - self.betas[1]) >= np.sqrt(finfo.tiny) * 2.0 ** (finfo.nmant + 1)
        self.tiny = dt(finfo.tiny if negligible else 0)

    def step(self, first_grad):
        """One update; ``first_grad = (values, columns)`` is the first weight's gradient."""
        t = self.t + 1
        dt = self.block.rows.dtype.type
        beta1, beta2 = self.betas
        c = (*self._constants, dt(1.0 - beta1 ** t), dt(1.0 - beta2 ** t), self.tiny)
        p, _, m, v = self.block.views(0)
        n = self._first_columns()
        k.adam_step(p[:, :n], *first_grad, m[:, :n], v[:, :n], *self._rows(self.block.starts[1]), *c, self.count)

    def _catch_up(self, n, steps):
        """The held columns' moments decay a step at a time (m by beta1, v by beta2), rounded as
        the steps would have rounded them; their parameters stay where they are."""
        _, _, m, v = self.block.views(0)
        dt = self.block.rows.dtype.type
        for moment, decay in zip((m, v), self.betas):
            k.decay_moment(moment[:, n:].ravel(order="F"), dt(decay), steps, self.tiny)

    def at_rest(self, i):
        r"""With no weight decay, where the next update, and so every later one, is too small
        to move the parameter's float.

        With a zero gradient from now on, step :math:`s = 1, 2, \ldots` moves it by
        :math:`\frac{\mathrm{lr}}{1-\beta_1^{t+s}} \cdot \frac{\beta_1^s m}{\sqrt{\beta_2^s v} / \sqrt{1-\beta_2^{t+s}} + \epsilon}`:
        the first step's is the largest, since :math:`\beta_1 < \sqrt{\beta_2}` (and once
        :math:`\sqrt{v}` is below :math:`\epsilon`, only :math:`\beta_1^s` changes). If it is
        under a quarter of the spacing of floats at the parameter's value, rounding gives
        the parameter back unchanged, at every step. A first moment of exactly 0 is the
        simplest case; a unit that stopped firing some 150 steps ago is at rest long before
        its moment decays to 0 (about 800 steps). The bound is computed in the parameter's
        dtype with room for its own roundings and the update's.
        """
        beta1, beta2 = self.betas
        if self.weight_decay or not beta1 < np.sqrt(beta2):
            return None
        p, _, m, v = self.block.views(i)
        dt, finfo = p.dtype.type, np.finfo(p.dtype)
        room = 1 + 64 * float(finfo.eps)   # the update's few roundings, and this bound's own
        bound = v * dt(beta2 / room)                    # v after the next step, rounded down...
        bound[bound < finfo.tiny] = 0                   # ...or flushed to 0: then only eps is left
        np.sqrt(bound, out=bound)
        np.maximum(bound, dt(self.eps), out=bound)
        with np.errstate(over="ignore"):                # a huge m: inf, i.e. not at rest
            np.divide(np.abs(m), bound, out=bound)
            bound *= dt(self.lr / (1 - beta1 ** (self.t + 1)) * beta1 * room)   # the next update
        quarter = np.abs(p)
        normal = quarter >= finfo.tiny                  # 0 and subnormal p: only m = 0 keeps them
        np.spacing(quarter, out=quarter)
        quarter /= 4
        return (m == 0) | (normal & (bound < quarter))


class FusedSGD(FusedOptimizer):
    """:class:`npvae.optim.SGD` over the block."""

    state_names = SGD.state_names

    def _use(self, s):
        dt = self.block.rows.dtype.type
        self.lr, self.momentum, self.weight_decay = s["lr"], s["momentum"], s["weight_decay"]
        self._constants = tuple(map(dt, (self.lr, self.momentum, self.weight_decay)))
        self.tiny = dt(np.finfo(dt).tiny)

    def step(self, first_grad):
        """One update; ``first_grad = (values, columns)`` is written out into the first weight's
        gradient, then one call covers the first weight's updated columns and the rest."""
        values, columns = first_grad
        _, g, _ = self.block.views(0)
        n = self._first_columns()
        # values: a view of g (every unit computed), or the live columns' own array, the others'
        # gradient being 0 (see FastVAE._first_layer_backward)
        if not np.shares_memory(values, g):
            g[...] = 0
            g[:, columns] = values
        first = self.t == 0
        rows = self.block.rows
        size = self.block.shapes[0][0] * n            # the first n columns: a prefix of the segment
        k.sgd_step(*(row[:size] for row in rows), *self._rows(self.block.starts[1]), *self._constants,
                   first, self.tiny, self.count)

    def at_rest(self, i):
        """With no weight decay, where the momentum buffer is 0 (everywhere without momentum)."""
        if self.weight_decay:
            return None
        _, _, buf = self.block.views(i)
        return np.ones(buf.shape, bool) if self.momentum == 0 else buf == 0
