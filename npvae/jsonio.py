"""Strict JSON for the files npvae writes (``metrics.jsonl``, ``run.json``).

``json.dumps`` writes ``NaN``, ``Infinity`` and ``-Infinity`` for non-finite
floats, which JSON does not have: other readers (``jq``, JavaScript, most
JSON libraries) refuse the whole line. :func:`dumps` writes ``null`` instead
and keeps the reason beside it, under the key ``<key>_nonfinite``::

    >>> dumps({"epoch": 3, "test_loss": float("inf")})
    '{"epoch": 3, "test_loss": null, "test_loss_nonfinite": "inf"}'

Inside a list, each non-finite item becomes ``null`` and the sibling key maps
its index to the value (``{"2": "nan"}``). NumPy scalars and arrays are
written as the numbers they hold.
"""
import json
import math

import numpy as np

__all__ = ["dumps", "strict", "NONFINITE_SUFFIX"]

NONFINITE_SUFFIX = "_nonfinite"


def _spell(x):
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _clean(value):
    """``(value with non-finite floats as None, what they were or None)``."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return (value, None) if math.isfinite(value) else (None, _spell(value))
    if isinstance(value, dict):
        return strict(value), None
    if isinstance(value, (list, tuple)):
        items, reasons = [], {}
        for i, item in enumerate(value):
            item, why = _clean(item)
            items.append(item)
            if why is not None:
                reasons[str(i)] = why
        return items, (reasons or None)
    return value, None


def strict(record):
    """A copy of the dict ``record`` that strict JSON can hold (see the module docstring)."""
    out = {}
    for key, value in record.items():
        value, why = _clean(value)
        out[key] = value
        if why is not None:
            out[f"{key}{NONFINITE_SUFFIX}"] = why
    return out


def dumps(record, **kwargs):
    """``json.dumps`` of :func:`strict` ``(record)``; never writes NaN or Infinity."""
    return json.dumps(strict(record), allow_nan=False, **kwargs)
