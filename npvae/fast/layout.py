"""The fast path's memory layout: a model's parameters, gradients and optimizer state in one block.

:class:`ParameterBlock` is a 2-D array with one row per kind of array (values,
gradients, then the optimizer's state: Adam's two moments or SGD's momentum
buffer) and one column per scalar parameter. Parameter ``i`` owns the same
segment of columns in every row, so

* the optimizer's update is one kernel call, not one per parameter: its rule is
  elementwise and sees each row's segments as one flat array (the first weight's
  gradient, which comes as its live columns, gets a loop of its own);
* reordering a layer's units moves its values, gradients and state together.

Weights are column-major views of their segment (an ``(I, O)`` weight is stored as
PyTorch stores its ``(O, I)`` transpose): BLAS writes the training step's
column-major products fastest that way, each unit's weights are one contiguous run,
and the first ``n`` units of a layer are a prefix of its segment. Batches and
activations are column-major too (``order="F"``), so the kernels walk memory in
order; only the noise ``eps`` is row-major, as the Generator fills it.

The block is a copy: :meth:`ParameterBlock.load` reads a model's parameters (and
an optimizer's state) into it, :meth:`ParameterBlock.store` writes them back.
"""
import numpy as np


def column_major(shape, dtype):
    """A new zeroed column-major array: the layout of every 2-D array of the fast path."""
    return np.zeros(shape, dtype, order="F")


class ParameterBlock:
    """``rows`` (K, P): row 0 the values, row 1 the gradients, rows 2.. the optimizer's state.

    Parameters
    ----------
    shapes : list of tuple
        The parameters' shapes, in the model's order (``named_parameters``).
    dtype : float32 or float64
    state_names : sequence of str
        The optimizer's per-parameter arrays, e.g. ``("m", "v")``: rows 2, 3, ...
    """

    VALUES, GRADS = 0, 1

    def __init__(self, shapes, dtype, state_names=()):
        self.shapes = [tuple(s) for s in shapes]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.state_names = tuple(state_names)
        self.rows = np.zeros((2 + len(self.state_names), self.starts[-1]), dtype)

    def row(self, name):
        """The row of ``"values"``, ``"grads"`` or a state name."""
        names = ("values", "grads", *self.state_names)
        return self.rows[names.index(name)]

    def segment(self, i):
        """Parameter i's columns: ``slice(start, stop)``."""
        return slice(self.starts[i], self.starts[i + 1])

    def view(self, row, i):
        """Parameter i in ``row`` (a 1-D array of the block), shaped: weights column-major."""
        flat = row[self.segment(i)]
        shape = self.shapes[i]
        return flat.reshape(shape[::-1]).T if len(shape) == 2 else flat.reshape(shape)

    def views(self, i):
        """Parameter i in every row: ``[values, grads, state...]``."""
        return [self.view(row, i) for row in self.rows]

    def load(self, params, states=None):
        """Copy ``params`` (arrays) into the values and ``states[name][i]`` into the state rows."""
        for i, a in enumerate(params):
            self.view(self.rows[self.VALUES], i)[...] = a
        for name, arrays in (states or {}).items():
            for i, a in enumerate(arrays):
                self.view(self.row(name), i)[...] = a

    def stored(self, state_names=()):
        """What :meth:`store` writes, in its order: every parameter's values, then each named
        state row's arrays (views, shaped as the model's)."""
        rows = [self.rows[self.VALUES]] + [self.row(name) for name in state_names]
        return [self.view(row, i) for row in rows for i in range(len(self.shapes))]

    def store(self, params, states=None):
        """Copy the values into ``params`` (arrays) and the state rows into ``states[name][i]``."""
        for i, a in enumerate(params):
            a[...] = self.view(self.rows[self.VALUES], i)
        for name, arrays in (states or {}).items():
            for i, a in enumerate(arrays):
                a[...] = self.view(self.row(name), i)
