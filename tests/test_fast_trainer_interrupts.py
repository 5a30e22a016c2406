"""A Ctrl-C anywhere in a Trainer's steps or its write-back keeps every whole step, and no half one.

Python raises ``KeyboardInterrupt`` between two lines of whatever Python code runs (a
compiled kernel runs to its end first). Here it is raised at each line of ``npvae/fast`` in
turn (a trace function stands in for the signal), in the loop
``with Trainer(model, opt) as trainer: step, sync, step``, until a trial runs to its end.
(There, each line is interrupted at its first, second and last run with the same callers, not
at the other turns of the same loop: :func:`lines_to_interrupt`.)
Whatever the line, the model and the optimizer must then be what ``optimizer.t`` reference
steps give (the noise generator too), ``optimizer.t`` must count every step that returned (and
at most the one that was stopped), and nothing is dropped. One line cannot be guarded: the first of ``__exit__``, before
its ``try`` (an interrupt there leaves the steps in the trainer, for ``trainer.sync()``).
"""
import os
import sys
import traceback
import warnings

import numpy as np
import pytest

import npvae.fast
from npvae import SGD, VAE, Adam
from npvae.errors import StateError
from npvae.fast import Trainer
from npvae.layers import Sigmoid

FAST = os.path.dirname(npvae.fast.__file__) + os.sep
# Compiled, the kernels are never Python lines (Numba runs kernels.py's helpers only while
# it compiles); with NUMBA_DISABLE_JIT they would be tens of thousands of them.
KERNELS = os.path.join(FAST, "kernels.py")
X = [np.random.default_rng(i).random((12, 30)) for i in range(2)]
OPTIMIZERS = {"Adam": lambda ps: Adam(ps, lr=1e-2), "SGD-momentum": lambda ps: SGD(ps, lr=1e-2, momentum=0.9)}


class Interrupt(KeyboardInterrupt):
    """The stand-in for Ctrl-C."""


def interrupt_at(n, within=None, record=None):
    """A trace function raising Interrupt at the n-th line run in npvae/fast (or only those of
    the files ``within``, a tuple of paths). With a list ``record``: no interrupt, each line's
    :func:`context` is appended to it instead."""
    count = 0

    def line(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
            if record is not None:
                record.append(context(frame))
            elif count == n:
                raise Interrupt         # propagates from that line, and ends the tracing
        return line

    def call(frame, event, arg):
        name = frame.f_code.co_filename
        if within is not None:
            return line if name in within else None
        return line if name.startswith(FAST) and name != KERNELS else None
    return call


def context(frame):
    """Where a line runs: its file and line number, then those of each caller up to the
    outermost frame (the test's own lines among them: which call of the loop it is in)."""
    where = []
    while frame is not None:
        where.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(where)


def lines_to_interrupt(record):
    """The line counts (from 1) at which to interrupt, given the :func:`context` of every line
    of an uninterrupted trial: the first, second and last time each context runs. The same line
    with the same callers differs between its runs only in how many turns of a loop are done:
    none or one (first, second), all but one (last). (Mostly read-only loops: checks, views;
    the write-back's loop over the arrays keeps its "none, one, all but one written".)"""
    runs = {}
    for n, where in enumerate(record, 1):
        runs.setdefault(where, []).append(n)
    return sorted({n for ns in runs.values() for n in ns[:2] + ns[-1:]})


def interrupted(call, n, within=None):
    """Run ``call()`` with an Interrupt at the n-th line (:func:`interrupt_at`): the Interrupt
    it raised, or None if it ran to its end."""
    before = sys.gettrace()
    sys.settrace(interrupt_at(n, within))
    try:
        call()
    except Interrupt as e:
        return e
    finally:
        sys.settrace(before)
    return None


def train(make_opt, n, go_on, record=None):
    """The loop, interrupted at the n-th line (with ``record``, not interrupted: see
    :func:`interrupt_at`). ``go_on``: the loop catches the interrupt and
    syncs (as after a Ctrl-C it handles); else the interrupt ends the with block. Returns the
    model, the optimizer, the trainer, the interrupt (None if the loop ran to its end) and how
    many steps returned."""
    model = VAE(30, 16, 4, rng=0, dtype=np.float64)
    opt = make_opt(model.parameters())
    trainer, returned, caught = Trainer(model, opt), 0, None
    before, errors = sys.gettrace(), np.geterr()
    sys.settrace(interrupt_at(n, record=record))
    try:
        with trainer:
            try:
                trainer.step(X[0])
                returned += 1
                trainer.sync()
                trainer.step(X[1])
                returned += 1
            except Interrupt as e:
                if not go_on:
                    raise
                caught = e
                sys.settrace(before)
                trainer.sync()
    except Interrupt as e:
        caught = e
    finally:
        sys.settrace(before)
        # An interrupt on the line of a with statement, after its __enter__ (CPython does not
        # guard that point), leaves np.errstate(...) of quiet_numpy_warnings entered: NumPy's
        # warnings stay off. Each trial starts as the first did (and later tests see NumPy's).
        np.seterr(**errors)
    return model, opt, trainer, caught, returned


def state(model, opt):
    """Every parameter, then every per-parameter array of the optimizer's state ("m.0", ...)."""
    return [p.data.copy() for p in model.parameters()] + \
        [a.copy() for key, a in opt.state_dict().items() if "." in key]


def reference_states(make_opt):
    """The state after 0, 1, 2 reference steps, and the noise generator's."""
    model = VAE(30, 16, 4, rng=0, dtype=np.float64)
    opt = make_opt(model.parameters())
    states, noise = [state(model, opt)], [model.rng.bit_generator.state]
    for x in X:
        model.zero_grad()
        model.loss(x)
        model.backward()
        opt.step()
        states.append(state(model, opt))
        noise.append(model.rng.bit_generator.state)
    return states, noise


@pytest.mark.parametrize("name, go_on", [("Adam", False), ("SGD-momentum", True)])
def test_an_interrupt_at_any_line_keeps_the_whole_steps(name, go_on):
    make_opt = OPTIMIZERS[name]
    expected, noise = reference_states(make_opt)
    record = []
    train(make_opt, None, go_on, record)            # every line of an uninterrupted loop, in context
    assert len(record) > 100
    for n in lines_to_interrupt(record) + [len(record) + 1]:    # the last: no interrupt
        model, opt, trainer, caught, returned = train(make_opt, n, go_on)
        assert (caught is None) == (n > len(record)), (n, len(record))     # the trials replay the record
        if opt.t < returned:                # the interrupt came as the block began to end
            innermost = traceback.extract_tb(caught.__traceback__)[-2]      # [-1]: the trace function
            assert innermost.name == "__exit__" and innermost.line == "try:", (n, innermost)
            trainer.sync()
        assert opt.t in (returned, returned + 1), (n, opt.t, returned)
        got, want = state(model, opt), expected[opt.t]
        if not all(np.all(np.abs(a - b) <= 1e-12 * np.abs(b) + 1e-15) for a, b in zip(got, want)):
            for a, b in zip(got, want):     # (slower: only to say where)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"line {n}, t={opt.t}")
        # a dropped step's noise is put back: a loop that goes on draws what an unstopped one would
        assert model.rng.bit_generator.state == noise[opt.t], (n, opt.t)
        if caught is None:
            break
        assert not getattr(caught, "__notes__", None), (n, caught.__notes__)    # nothing was dropped
    assert returned == 2                # the last trial ran to its end; the others were stopped


def test_an_interrupt_while_the_first_step_takes_a_changed_model_back_claims_no_steps_of_its_own():
    """A change made before the trainer's first step (here, reference steps) is taken by that step.
    A Ctrl-C while it takes it made the trainer count the other code's steps as its own: a new
    trainer warned of them, a sync refused, the next step refused the change. Only a step the
    trainer applied may be spoken of. (Every third line.)"""
    x = X[0]
    n = -2
    while True:
        n += 3
        model = VAE(30, 16, 4, rng=0, dtype=np.float64)
        opt = Adam(model.parameters(), lr=1e-2)
        trainer = Trainer(model, opt)
        for _ in range(3):                              # reference steps before the trainer's first
            model.zero_grad()
            model.loss(x)
            model.backward()
            opt.step()
        caught = interrupted(lambda: trainer.step(x), n)
        trainer.step(x)                                 # the loop goes on: no refusal, the change is taken
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            Trainer(model, opt)                         # a notebook cell run again: warned of its own steps
        own = [int(str(w.message).split(" holds ")[1].split(" ")[0]) for w in said]
        assert own in ([1], [2]), (n, [str(w.message) for w in said])   # the stopped step applied, or not
        trainer.sync()                                  # no change elsewhere to refuse: it writes its steps
        assert opt.t == 3 + own[0], (n, opt.t)
        if caught is None:
            break
    assert n > 100, n


# -- with dead-unit retirement: moving units takes many calls ----------------------------------
IMAGES = np.random.default_rng(7).random((24, 30))
HALVES = [np.arange(12), np.arange(12, 24)]
DEAD = np.arange(6)                     # first-layer units that never fire
MOVING_UNITS = (os.path.join(FAST, "dead_units.py"), os.path.join(FAST, "step.py"))


def make_with_dead_units():
    model = VAE(30, 16, 4, rng=0, dtype=np.float64)
    model.encoder[0].bias.data[DEAD] = -1e9
    opt = Adam(model.parameters(), lr=1e-2)
    return model, opt


# pixel 0 tells the two halves apart: 0 on the first, 1 on the second
HALVES_APART = IMAGES.copy()
HALVES_APART[HALVES[0], 0], HALVES_APART[HALVES[1], 0] = 0.0, 1.0


def fire_on_half(model, unit, half):
    """Edit first-layer ``unit`` of ``model`` to fire on the images of HALVES_APART's ``half`` only."""
    first = model.encoder[0]
    first.weight.data[:, unit] = 0.0
    first.weight.data[0, unit], first.bias.data[unit] = (-1.0, 0.5) if half == 0 else (1.0, -0.5)
    return first


def retired_first_epoch():
    """A model with the DEAD units, its optimizer, and a trainer whose first epoch (in a with block,
    untraced) retired them."""
    model, opt = make_with_dead_units()
    trainer = Trainer(model, opt, images=IMAGES, batch_size=12, retire_dead_units=True)
    with trainer:
        epoch(trainer)
    return model, opt, trainer


def retired_that_fire(trainer, first, images, n):
    """The trainer's retired units, having checked that none of them fires on ``images`` (trial n)."""
    retired = trainer.dead_units()["retired"]
    fires = ((images @ first.weight.data + first.bias.data) > 0).any(axis=0)
    assert not fires[retired].any(), (n, retired)
    return retired


def epoch(trainer, sync=False):
    trainer.begin_epoch()
    for idx in HALVES:
        trainer.step(trainer.batch(idx))
        if sync:
            trainer.sync()
    trainer.end_epoch()


def test_an_interrupt_while_units_move_drops_the_steps_since_the_last_sync_and_says_so():
    """With retire_dead_units=True, units are moved in many calls at an epoch's start and end,
    and at a sync: an interrupt there drops the trainer's torn copy (the model keeps the last
    sync's state, and a note says so), and the loop can go on. Every other line keeps every
    whole step. (Every third line: the moves span many lines each.)"""
    model, opt = make_with_dead_units()
    expected = [state(model, opt)]
    for _ in range(3):
        for idx in HALVES:
            model.zero_grad()
            model.loss(IMAGES[idx])
            model.backward()
            opt.step()
            expected.append(state(model, opt))
    n, dropped = -2, 0
    while True:
        n += 3
        model, opt, trainer = retired_first_epoch()
        assert trainer.dead_units()["retired"] == DEAD.tolist()
        before, caught = sys.gettrace(), None
        sys.settrace(interrupt_at(n))
        try:
            with trainer:
                epoch(trainer, sync=True)
        except Interrupt as e:
            caught = e
        finally:
            sys.settrace(before)
        if getattr(caught, "__notes__", None):
            assert "part-way through moving units" in caught.__notes__[0], caught.__notes__
            assert "without its 0 step(s)" not in caught.__notes__[0], (n, caught.__notes__)   # nothing lost: no note
            dropped += 1
        else:
            assert opt.t >= 2, (n, opt.t)               # the first epoch's steps are never lost
        got, want = state(model, opt), expected[opt.t]
        assert all(np.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(got, want)), (n, opt.t)
        with trainer:
            epoch(trainer)                              # the loop goes on, with no error
        if caught is None:
            break
    assert dropped > 0 and n > 100


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_an_interrupt_as_a_with_block_ends_mid_epoch_comes_out_as_the_interrupt_with_its_note():
    """The block's own write-back moves units too: a Ctrl-C there is the KeyboardInterrupt a
    loop's ``except KeyboardInterrupt`` catches (not a StateError in its place), with a note
    when it dropped the block's steps; the loop can go on. (Every line of the two files that
    move units, run as the block ends.)"""
    n, noted = 0, 0
    while True:
        n += 1
        model, opt, trainer = retired_first_epoch()
        before, caught = sys.gettrace(), None
        try:
            with trainer:
                trainer.begin_epoch()
                for idx in HALVES:
                    trainer.step(trainer.batch(idx))
                sys.settrace(interrupt_at(n, MOVING_UNITS))     # from here: the block's end
        except Interrupt as e:
            caught = e
        finally:
            sys.settrace(before)
        notes = getattr(caught, "__notes__", [])
        if opt.t == 2:                                  # the block's two steps were dropped: said so
            assert caught is not None and len(notes) == 1 and "part-way through moving units" in notes[0] \
                and "without its 2 step(s)" in notes[0], (n, notes)
            noted += 1
        else:
            assert opt.t == 4 and not notes, (n, opt.t, notes)
        with trainer:
            epoch(trainer)                              # the loop goes on, with no error
        if caught is None:
            break
    assert noted > 0 and n > 20, (noted, n)


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_a_loop_that_catches_an_interrupt_while_units_move_gets_a_state_error_at_its_next_call():
    """The docs: a Ctrl-C that cuts a move of units short drops the trainer's torn copy and, if the loop
    catches it and goes on, says so with a StateError at the next call (which never trains on the torn
    copy). Then the loop goes on."""
    n, refused = -2, 0
    while True:
        n += 7                                          # every 7th line: still about 20 refusals
        model, opt, trainer = retired_first_epoch()
        with trainer:
            before, caught = sys.gettrace(), None
            sys.settrace(interrupt_at(n))
            try:
                epoch(trainer, sync=True)
            except Interrupt as e:
                caught = e
            finally:
                sys.settrace(before)
            if caught is None:
                break
            try:
                trainer.end_epoch()                     # the loop goes on
            except StateError as e:
                assert "part-way through moving units" in str(e) and "without its 0 step(s)" not in str(e), (n, e)
                refused += 1
                trainer.end_epoch()
        assert opt.t >= 2 and all(np.isfinite(a).all() for a in state(model, opt)), n
    assert refused > 0 and n > 30


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_an_interrupt_in_a_sync_never_gets_a_unit_that_fires_retired():
    """A retired unit outputs 0 for every training image, whatever line of a mid-epoch sync a
    Ctrl-C stops (a loop that catches it, as above, and ends the epoch). The unit at stake is
    one a user's edit brought back: it fires only on the second half's images, and the sync
    after that half, cut short, may leave that evidence out. (Every line of the two files that
    move units, whose windows are a few lines wide; the write-back's lines are tested above.)"""
    images, unit, n = HALVES_APART, DEAD[0], 0
    while True:
        n += 1
        model, opt = make_with_dead_units()
        trainer = Trainer(model, opt, images=images, batch_size=12, retire_dead_units=True)
        with trainer:
            epoch(trainer)                              # retires DEAD
        first = fire_on_half(model, unit, 1)
        with trainer:
            trainer.begin_epoch()
            for idx in HALVES:
                trainer.step(trainer.batch(idx))
                if idx is HALVES[0]:
                    trainer.sync()
            caught = interrupted(trainer.sync, n, MOVING_UNITS)
            try:
                trainer.end_epoch()
            except StateError:
                trainer.end_epoch()
        retired = retired_that_fire(trainer, first, images, n)
        if caught is None:
            break
    assert unit not in retired and n > 20, n


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_an_interrupt_while_a_step_takes_an_edited_model_back_never_retires_a_unit_that_fires():
    """Mid-epoch: a sync, then an edit makes a retired-to-be unit fire on the images already
    visited, then a Ctrl-C at any line of the moves with which the next step takes the model
    back, caught by the loop, which steps on: what the unit did before the edit proves nothing."""
    images, unit, n = HALVES_APART, DEAD[0], 0
    while True:
        n += 1
        model, opt = make_with_dead_units()
        trainer = Trainer(model, opt, images=images, batch_size=12, retire_dead_units=True)
        trainer.begin_epoch()
        trainer.step(trainer.batch(HALVES[0]))
        trainer.sync()
        first = fire_on_half(model, unit, 0)                # the half already visited
        x = trainer.batch(HALVES[1])
        caught = interrupted(lambda: trainer.step(x), n, MOVING_UNITS)
        if caught is not None:
            trainer.step(trainer.batch(HALVES[1]))          # the loop goes on
        trainer.end_epoch()
        retired_that_fire(trainer, first, images, n)
        if caught is None:
            break
    assert n > 3, n


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_an_interrupt_while_a_step_takes_the_model_back_leaves_no_unproven_candidate_in_the_record():
    """A step that is not applied (its loss overflows) still sees a unit fire; the user repairs the
    model, and the next step takes it back: a Ctrl-C in that step's moves of units, then a sync. The
    record then (a checkpoint's) lists no unit as a candidate whose firing was lost with the moves."""
    unit, n = DEAD[0], 0
    while True:
        n += 1
        model, opt = make_with_dead_units()
        trainer = Trainer(model, opt, images=HALVES_APART, batch_size=12, retire_dead_units=True)
        epoch(trainer)                                      # retires DEAD
        bias = model.decoder[-1].bias.data
        fire_on_half(model, unit, 0)
        kept, bias[:] = bias.copy(), 1e308                  # the loss overflows: the step is not applied
        trainer.begin_epoch()
        with np.errstate(all="ignore"):
            assert not np.isfinite(trainer.step(trainer.batch(HALVES[0])).total)
        bias[:] = kept                                      # repaired before the next update
        x = trainer.batch(HALVES[1])
        caught = interrupted(lambda: trainer.step(x), n, MOVING_UNITS)
        trainer.sync()
        record = trainer.dead_units()
        assert not (unit in record["candidates"] and unit not in record["live"]), (n, record)
        if caught is None:
            break
    assert n > 20, n


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_a_sync_cut_short_while_units_move_leaves_no_candidates_in_the_record():
    """The record read after such a sync (for a checkpoint) lists no candidates whose evidence,
    what fired in the dropped steps, is lost: a resume from it would retire them at the epoch's end."""
    images, unit, n, torn = HALVES_APART, DEAD[0], 0, 0
    while True:
        n += 1
        model, opt = make_with_dead_units()
        trainer = Trainer(model, opt, images=images, batch_size=12, retire_dead_units=True)
        epoch(trainer)                                      # retires DEAD
        fire_on_half(model, unit, 1)
        trainer.begin_epoch()
        trainer.step(trainer.batch(HALVES[0]))
        trainer.sync()
        trainer.step(trainer.batch(HALVES[1]))
        caught = interrupted(trainer.sync, n, MOVING_UNITS)
        try:
            trainer.sync()
        except StateError as e:
            assert "part-way through moving units" in str(e)
            assert trainer.dead_units()["candidates"] == [], (n, trainer.dead_units())
            torn += 1
        if caught is None:
            break
    assert torn > 0, n


@pytest.mark.filterwarnings("ignore:Trainer.end_epoch. this epoch.s steps saw:UserWarning")
def test_an_interrupt_at_an_epochs_end_never_keeps_a_unit_an_edit_brings_back_retired():
    """A Ctrl-C at any line of the epoch's end, which retires units, caught by the loop; then an
    edit between epochs makes a retired unit fire: the next epoch computes it (a unit retired with
    no record of the parameters it was proven with counts as changed)."""
    unit, n = DEAD[0], 0
    while True:
        n += 1
        model, opt = make_with_dead_units()
        trainer = Trainer(model, opt, images=IMAGES, batch_size=12, retire_dead_units=True)
        trainer.begin_epoch()
        for idx in HALVES:
            trainer.step(trainer.batch(idx))
        caught = interrupted(trainer.end_epoch, n, MOVING_UNITS)
        try:
            trainer.sync()
        except StateError:
            pass                                        # the torn copy's steps, dropped and said so
        model.encoder[0].bias.data[unit] = 5.0          # fires on every image now
        trainer.begin_epoch()
        trainer.step(trainer.batch(HALVES[0]))
        trainer.sync()
        assert unit not in trainer.dead_units()["retired"], n
        fast = [p.data.copy() for p in model.parameters()]
        if caught is None:
            break
    assert n > 20, n
    # the last trial (no interrupt) against the reference: the unit brought back learns
    model, opt = make_with_dead_units()
    trainer = Trainer(model, opt, images=IMAGES, batch_size=12, retire_dead_units=True)
    with trainer:
        epoch(trainer)
    model.encoder[0].bias.data[unit] = 5.0
    model.zero_grad()
    model.loss(IMAGES[HALVES[0]])
    model.backward()
    opt.step()
    for a, b in zip(fast, (p.data for p in model.parameters())):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_an_interrupted_write_back_of_a_diverged_step_is_finished_not_taken_for_a_change():
    """A step whose gradient overflowed (finite loss, NaN update) leaves NaN in the trainer's copy.
    A Ctrl-C part-way through writing it back, caught by the loop: the next sync finishes the
    write-back (the NaN it wrote is its own, not a change made elsewhere) instead of raising
    StateError and leaving the model half written."""
    x = np.random.default_rng(0).random((12, 30)).astype(np.float32)

    def diverged():
        model = VAE(30, 16, 4, rng=0)
        trainer = Trainer(model, Adam(model.parameters()))
        with np.errstate(all="ignore"):
            trainer.step(x, beta=1e308)
        return model, trainer
    model, trainer = diverged()
    trainer.sync()
    whole = [p.data.copy() for p in model.parameters()]
    assert any(np.isnan(a).any() for a in whole)
    n, before = -2, sys.gettrace()
    while True:
        n += 3                                  # every 3rd line: each array's write-back is several
        model, trainer = diverged()
        sys.settrace(interrupt_at(n))
        try:
            trainer.sync()
            break                               # ran to its end
        except Interrupt:
            pass
        finally:
            sys.settrace(before)
        trainer.sync()
        for p, a in zip(model.parameters(), whole):
            np.testing.assert_array_equal(p.data, a, err_msg=f"interrupted at line {n}")


# a change made after a Ctrl-C cut a write-back short, and how it may end: "dropped" (the write-back
# had not begun: the change is kept), "finished" (it is finished, and the change kept: the next step
# checks it; or the Ctrl-C came after the write-back), "lost" (finished over the change, said),
# "unwritable" (said; finished once writable again)
AFTER_A_CUT = {
    "a Sigmoid for the ReLU": (lambda m: m.encoder.__setitem__(1, Sigmoid()), {"dropped", "finished"}),
    "a bias set by hand": (lambda m: m.encoder[0].bias.data.__setitem__(slice(None), 7.0),
                           {"dropped", "lost", "finished"}),
    "a bias made read-only": (lambda m: setattr(m.encoder[0].bias.data.flags, "writeable", False),
                              {"dropped", "unwritable", "finished"}),
}


@pytest.mark.parametrize("edit", AFTER_A_CUT)
def test_a_change_after_an_interrupted_write_back_never_leaves_half_of_it(edit):
    """A Ctrl-C cuts sync's write-back short, the loop catches it, and the model is changed before
    the next sync. The model and the optimizer end with all of the trainer's step or none of it
    (the change kept then), never part: at every line the Ctrl-C can land on."""
    change, expected_outcomes = AFTER_A_CUT[edit]

    def stepped():
        model = VAE(30, 16, 4, rng=0, dtype=np.float64)
        opt = Adam(model.parameters(), lr=1e-2)
        trainer = Trainer(model, opt)
        trainer.step(X[0])
        return model, opt, trainer

    def state(model, opt):
        return [p.data.copy() for p in model.parameters()] + [
            a.copy() for key, a in opt.state_dict().items() if key.startswith(("m.", "v."))]
    model, opt, trainer = stepped()
    change(model)
    changed = state(model, opt)                 # the change, kept when the step is dropped
    model, opt, trainer = stepped()
    trainer.sync()
    whole = state(model, opt)
    change(model)
    whole_changed = state(model, opt)           # the change made after a whole write-back
    n, outcomes = 0, set()
    while True:
        n += 1
        model, opt, trainer = stepped()
        if interrupted(trainer.sync, n) is None:
            break                               # ran to its end
        change(model)
        try:
            trainer.sync()
            outcome = "finished"
        except StateError as e:
            words = {"are dropped": "dropped", "which is lost": "lost", "cannot finish": "unwritable"}
            outcome = next(said for phrase, said in words.items() if phrase in str(e))
        outcomes.add(outcome)
        if outcome == "unwritable":
            model.encoder[0].bias.data.flags.writeable = True       # as the message says
            trainer.sync()
        t, expected = {"dropped": (0, changed), "finished": (1, whole_changed)}.get(outcome, (1, whole))
        assert opt.t == t, f"interrupted at line {n}: {outcome}"
        for a, b in zip(state(model, opt), expected):
            np.testing.assert_array_equal(a, b, err_msg=f"interrupted at line {n}: {outcome}")
    assert outcomes == expected_outcomes
