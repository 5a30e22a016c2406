"""A Ctrl-C anywhere in a Trainer's steps or its write-back never leaves a mix of two steps.

Python raises ``KeyboardInterrupt`` between two lines of whatever code runs. Here it is
raised at each line of ``npvae/fast`` in turn (a trace function stands in for the signal),
in a loop ``with Trainer(model, opt) as trainer: step, sync, step``. Whatever the
line, the model and the optimizer must then be what ``optimizer.t`` reference steps give,
and steps the trainer had to drop are said in a note on the interrupt.
"""
import os
import sys

import numpy as np

import npvae.fast
from npvae import VAE, Adam
from npvae.fast import Trainer

FAST = os.path.dirname(npvae.fast.__file__) + os.sep
X = [np.random.default_rng(i).random((12, 30)) for i in range(2)]


def make_adam(params):
    """Adam only: the trainer guards every fused optimizer's update alike, and a trial a line
    is some 1,500 trials."""
    return Adam(params, lr=1e-2)


class Interrupt(KeyboardInterrupt):
    """The stand-in for Ctrl-C."""


def interrupt_at(n, counter):
    """A trace function raising Interrupt at the n-th line run in npvae/fast (0: never)."""
    def line(frame, event, arg):
        if event == "line":
            counter[0] += 1
            if counter[0] == n:
                raise Interrupt         # propagates from that line, and ends the tracing
        return line
    return lambda frame, event, arg: line if frame.f_code.co_filename.startswith(FAST) else None


def train(make_opt, n):
    """The loop, interrupted at line n; returns the model, the optimizer, the interrupt (or
    None) and the number of lines run."""
    model = VAE(30, 16, 4, rng=0, dtype=np.float64)
    opt = make_opt(model.parameters())
    trainer, counter, caught = Trainer(model, opt), [0], None
    before = sys.gettrace()
    sys.settrace(interrupt_at(n, counter))
    try:
        with trainer:
            trainer.step(X[0])
            trainer.sync()
            trainer.step(X[1])
    except Interrupt as e:
        caught = e
    finally:
        sys.settrace(before)
    return model, opt, caught, counter[0]


def state(model, opt):
    """Every parameter, then every per-parameter array of the optimizer's state ("m.0", ...)."""
    return [p.data.copy() for p in model.parameters()] + \
        [a.copy() for key, a in opt.state_dict().items() if "." in key]


def reference_states(make_opt):
    """The state after 0, 1, 2 reference steps."""
    model = VAE(30, 16, 4, rng=0, dtype=np.float64)
    opt = make_opt(model.parameters())
    states = [state(model, opt)]
    for x in X:
        model.zero_grad()
        model.loss(x)
        model.backward()
        opt.step()
        states.append(state(model, opt))
    return states


def test_an_interrupt_at_any_line_leaves_whole_steps():
    make_opt = make_adam
    expected = reference_states(make_opt)
    *_, lines = train(make_opt, 0)
    assert lines > 100                  # the trace saw the fast path's code
    dropped = 0
    for n in range(1, lines + 1):
        model, opt, caught, _ = train(make_opt, n)
        assert caught is not None, n
        got, want = state(model, opt), expected[opt.t]
        assert len(got) == len(want), n
        if not all(np.all(np.abs(a - b) <= 1e-12 * np.abs(b) + 1e-15) for a, b in zip(got, want)):
            for a, b in zip(got, want):     # (this is slower: only to say where)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"line {n}, t={opt.t}")
        notes = getattr(caught, "__notes__", [])
        if notes:
            assert "part-way through changing its copy" in notes[0] and "without its" in notes[0], notes
            dropped += 1
    assert dropped > 0                  # some lines fall inside an update, and the test saw them
