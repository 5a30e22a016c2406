"""The fused training step: a VAE's forward and backward passes as the fast path runs them.

:class:`FastVAE` computes what ``VAE.loss`` and ``VAE.backward`` compute (and is
tested against them), on a copy of the model's parameters in the fast layout
(:mod:`npvae.fast.layout`), with workspaces made once (:mod:`npvae.fast.workspace`)
and the elementwise work in Numba kernels (:mod:`npvae.fast.kernels`):

* a Dense layer's bias and the ReLU after it are one pass, and so are, going back,
  the ReLU's mask and the bias gradient;
* the decoder's sigmoid and the BCE give the loss and ``dlogits`` in one pass;
* the two roads into ``[mu | logvar]`` (through ``z``, and the KL's own) meet in one pass;
* when at most ``LIVE_FRACTION`` of the first layer's computed units are *live*, its weight gradient
  is computed over those only: a ReLU unit that is off for the whole batch has an all-zero
  gradient column, so ``dW = x.T @ g`` multiplies only the others, and the optimizer reads
  those columns as they are (:meth:`npvae.fast.optim.FusedAdam.step`);
* the first layer computes only its first ``n_units`` units: units proven dead on
  every training image are moved behind them and left out
  (:mod:`npvae.fast.dead_units`).
"""
import numpy as np

from ..errors import StateError
from ..model import LossParts
from . import kernels as k
from .layout import ParameterBlock
from .workspace import Workspace

# The first layer's weight gradient goes through its live columns when at most this
# fraction of them is live: above it, the gather around the smaller product costs more
# than it saves.
LIVE_FRACTION = 0.75


def quiet_numpy_warnings():
    """``np.errstate`` with NumPy's overflow and invalid-value *warnings* off (a caller's
    ``"raise"`` stays), for the fast path's forward passes. Their loss shows a NaN or inf
    itself (a step then leaves its update out, ``fit`` raises ``DivergenceError``), as the
    Numba kernels, which never warn, already do: a warning would only come first, and under
    ``-W error`` it would replace that answer. The reference warns as NumPy does."""
    return np.errstate(**{kind: "ignore" for kind, how in np.geterr().items()
                          if kind in ("over", "invalid") and how == "warn"})


class Layer:
    """One Dense layer's views into the block: ``W`` (I, O), ``b`` (O,) and their gradients."""

    def __init__(self, block, i, relu):
        self.W, self.gW = block.view(block.rows[0], i), block.view(block.rows[1], i)
        self.b, self.gb = block.view(block.rows[0], i + 1), block.view(block.rows[1], i + 1)
        self.relu = relu


class FastVAE:
    """A VAE's parameters in the fast layout, and its fused forward and backward passes.

    Parameters
    ----------
    model : npvae.VAE
        Gives the architecture, the dtype and, through :meth:`load`, the values.
    state_names : sequence of str
        The optimizer's per-parameter arrays, kept in the same block (see
        :class:`~npvae.fast.layout.ParameterBlock`).
    """

    def __init__(self, model, state_names=()):
        k.warn_if_interpreted()
        self.names = [name for name, _ in model.named_parameters()]
        self.dtype = model.dtype
        self.block = ParameterBlock([p.shape for p in model.parameters()], model.dtype, state_names)
        self.enc = [model.input_dim, *model.hidden_dims, 2 * model.latent_dim]
        self.dec = [model.latent_dim, *model.hidden_dims[::-1], model.input_dim]
        n_enc = len(self.enc) - 1
        self.encoder = [Layer(self.block, 2 * i, relu=i < n_enc - 1) for i in range(n_enc)]
        self.decoder = [Layer(self.block, 2 * (n_enc + i), relu=i < len(self.dec) - 2)
                        for i in range(len(self.dec) - 1)]
        self.units = model.hidden_dims[0]       # first-layer units
        self.n_units = self.units               # ... of which the first n_units are computed
        self.order = None                       # position k holds unit order[k] (None: in order)
        self.fired = None                       # bool (units,): forward marks the positions that fire
        self.all_positions = np.arange(self.units)
        self.first_grad = None                  # (values, columns) of the first weight's gradient
        self._workspaces = {}
        self._last = None                       # what forward keeps for backward

    def workspace(self, B, training=True):
        key = (B, training)
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) > 16:      # many batch sizes (inference): start over
                self._workspaces.clear()
            ws = self._workspaces[key] = Workspace(B, self.enc, self.dec, self.dtype, training)
        return ws

    # -- values in and out -----------------------------------------------------------------
    def load(self, model, states=None):
        """Copy the model's parameters (and ``states[name][i]``) into the block, in unit order."""
        self.order, self.n_units = None, self.units
        self.block.load([p.data for p in model.parameters()], states)

    def store(self, model, states=None):
        """Copy the block's values (and state rows) back into the model, in unit order."""
        if self.order is not None:
            raise RuntimeError("FastVAE.store with units reordered: put them back first (DeadUnits.pause)")
        self.block.store([p.data for p in model.parameters()], states)

    def reorder(self, perm):
        """Move units: position k gets what position ``perm[k]`` holds, in every row of the block
        (the first layer's weight columns and bias, the next layer's weight rows). A
        permutation of hidden units leaves the network's function unchanged."""
        rows, blk = self.block.rows, self.block
        W0 = rows[:, blk.segment(0)].reshape(len(rows), self.units, self.enc[0])   # unit = row here
        W0[...] = W0[:, perm, :]
        b0 = rows[:, blk.segment(1)]
        b0[...] = b0[:, perm]
        W1 = rows[:, blk.segment(2)].reshape(len(rows), self.enc[2], self.units)   # unit = column
        W1[...] = W1[:, :, perm]
        self.order = perm if self.order is None else self.order[perm]
        if np.array_equal(self.order, self.all_positions):
            self.order = None

    def restore_order(self):
        """Put the units back in the model's order (nothing to do if they are in it)."""
        if self.order is not None:
            self.reorder(np.argsort(self.order))

    # -- the step ------------------------------------------------------------------------
    def forward(self, x, beta, eps):
        """``VAE.loss``: ``x`` (B, D) and ``eps`` (B, d) -> LossParts; keeps what backward needs."""
        B = x.shape[0]
        ws = self.workspace(B)
        h = self.encode(x, ws)
        k.sampler_forward(h, eps, ws.z, ws.std)
        logits = self.decode(ws.z, ws)
        k.bce_logits_forward_backward(logits, x, self.dtype.type(1.0 / B), ws.recon_rows, ws.dlogits)
        k.kl_forward(h, ws.kl_rows)
        recon = float(ws.recon_rows.sum(dtype=np.float64)) / B
        kl = float(ws.kl_rows.sum(dtype=np.float64)) / B
        self._last = (x, eps, beta, ws)
        return LossParts(recon + beta * kl, recon, kl)

    def encode(self, x, ws):
        """The encoder on ``x`` (B, D) into the workspace ``ws``: ``h = [mu | logvar]`` (B, 2d)."""
        n = self.n_units
        a = x
        for i, layer in enumerate(self.encoder):
            W, b, y = layer.W, layer.b, ws.enc[i]
            if i == 0:
                W, b, y = W[:, :n], b[:n], y[:, :n]      # the computed units: a prefix, no copy
            elif i == 1:
                W = W[:n]                                # their rows of the next weight
            np.matmul(a, W, out=y)                       # (B, O), BLAS
            if layer.relu:
                k.bias_relu_forward(y, b)
            else:
                k.add_bias(y, b)
            a = y
        if self.fired is not None:
            k.mark_fired_columns(ws.enc[0][:, :n], self.fired)
        return a                                         # h = [mu | logvar] (B, 2d)

    def decode(self, z, ws):
        """The decoder on ``z`` (B, d) into the workspace ``ws``: the logits (B, D)."""
        a = z
        for layer, y in zip(self.decoder, ws.dec):
            np.matmul(a, layer.W, out=y)
            if layer.relu:
                k.bias_relu_forward(y, layer.b)
            else:
                k.add_bias(y, layer.b)
            a = y
        return a                                         # logits (B, D)

    def backward(self):
        """``VAE.backward``: every gradient into the block's gradient row, except the first
        weight's, which is left in :attr:`first_grad` as ``(values, columns)``: column
        ``columns[j]`` of the gradient is ``values[:, j]`` and every other column is 0."""
        if self._last is None:
            raise StateError("FastVAE.backward needs a forward first")
        x, eps, beta, ws = self._last
        B, n = x.shape[0], self.n_units
        g = ws.dlogits                                   # (B, D): (sigmoid(l) - x) / B
        for i in reversed(range(len(self.decoder))):
            layer = self.decoder[i]
            a_in = ws.z if i == 0 else ws.dec[i - 1]
            if layer.relu:
                k.relu_bias_backward(g, ws.dec[i], ws.dec_g[i], layer.gb, ws.live)
                g = ws.dec_g[i]
            else:
                k.bias_grad(g, layer.gb)
            np.matmul(a_in.T, g, out=layer.gW)           # (I, O) = (I, B) @ (B, O)
            np.matmul(g, layer.W.T, out=ws.dec_dx[i])    # (B, I) = (B, O) @ (O, I)
            g = ws.dec_dx[i]
        h = ws.enc[-1]
        k.latent_backward(g, eps, ws.std, h, self.dtype.type(beta / B), ws.dh)   # both roads
        g = ws.dh
        for i in reversed(range(1, len(self.encoder))):
            layer = self.encoder[i]
            if layer.relu:
                k.relu_bias_backward(g, ws.enc[i], ws.enc_g[i], layer.gb, ws.live)
                g = ws.enc_g[i]
            else:
                k.bias_grad(g, layer.gb)
            a_in, W, gW, dx = ws.enc[i - 1], layer.W, layer.gW, ws.enc_dx[i - 1]
            if i == 1:                                   # only the computed units' rows
                a_in, W, dx = a_in[:, :n], W[:n], dx[:, :n]
                gW[n:] = 0      # the optimizer holds the first weight's columns only: these rows step with 0
                gW = gW[:n]
            np.matmul(a_in.T, g, out=gW)
            np.matmul(g, W.T, out=dx)
            g = dx
        self._first_layer_backward(x, g, ws, n)

    def _first_layer_backward(self, x, g_in, ws, n):
        """The first layer: ReLU mask and bias gradient, then ``dW = x.T @ g`` over the live
        units only (no input gradient: the data need none)."""
        first = self.encoder[0]
        g = ws.enc_g[0][:, :n]
        n_live = k.relu_bias_backward(g_in, ws.enc[0][:, :n], g, first.gb[:n], ws.live)
        first.gb[n:] = 0                                 # retired units: no gradient (the bias steps with 0)
        if n_live <= LIVE_FRACTION * n:
            g_live = ws.g_live[:, :n_live]               # (B, n_live), a contiguous prefix
            k.gather_columns(g, ws.live, g_live)
            dw = ws.dw_live[:, :n_live]
            np.matmul(x.T, g_live, out=dw)               # (D, n_live)
            self.first_grad = (dw, ws.live[:n_live])
        else:
            np.matmul(x.T, g, out=first.gW[:, :n])       # (D, n)
            self.first_grad = (first.gW[:, :n], self.all_positions[:n])

    # -- for checks ------------------------------------------------------------------------
    def gradients(self):
        """``{parameter name: gradient}`` of the last backward, as ``VAE.backward`` leaves them
        in ``p.grad`` (new row-major arrays, units in the model's order)."""
        grads = [np.array(self.block.view(self.block.rows[1], i), order="C") for i in range(len(self.names))]
        values, columns = self.first_grad
        grads[0][...] = 0
        grads[0][:, columns] = values
        if self.order is not None:
            inverse = np.argsort(self.order)
            grads[0], grads[1] = grads[0][:, inverse], grads[1][inverse]
            grads[2] = grads[2][inverse, :]
        return dict(zip(self.names, grads))
