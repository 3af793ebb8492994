"""Validation of what is written: names, arrays, histories, metrics and JSON.

Every check raises a `TypeError`/`ValueError` naming the argument, before anything
touches the disk.
"""

import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ._pytree import to_numpy


def _check_name(name: str, key: Any) -> str:
    """Check that `key` can name an HDF5 dataset."""
    if not isinstance(key, str):
        raise TypeError(
            f"The keys of `{name}` must be strings, got {type(key).__name__} {key!r}."
        )
    if key in ("", ".", "..") or "/" in key:
        raise ValueError(
            f"`{name}` has the key {key!r}, which cannot name an HDF5 dataset: use a "
            "non-empty name without '/' (and not '.' or '..')."
        )
    return key


def _numeric_array(name: str, value: Any) -> np.ndarray:
    """`value` as a host NumPy array of a bool/int/float/complex dtype."""
    try:
        array = to_numpy(value)
    except Exception as err:
        raise TypeError(
            f"`{name}` must be convertible to a numeric array, got "
            f"{type(value).__name__} ({err})."
        ) from err
    if array.dtype.kind not in "biufc":
        raise TypeError(
            f"`{name}` must be a numeric (bool, int, float or complex) array, got "
            f"dtype {array.dtype}."
        )
    return array


def check_arrays(name: str, arrays: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    if arrays is None:
        return {}
    return {
        _check_name(name, key): _numeric_array(f"{name}[{key!r}]", value)
        for key, value in arrays.items()
    }


def check_history(
    history: Mapping[str, Any] | None, *, require_step: bool
) -> dict[str, np.ndarray]:
    """Validate a training history: 1-D arrays of one common length.

    Returns the arrays on the host, `"step"` first when present.
    """
    arrays = check_arrays("history", history)
    if history is not None and require_step and "step" not in arrays:
        raise ValueError(
            "`history` must contain a 'step' array (the step of every logged row), "
            f"got the keys {sorted(arrays)}."
        )
    for key, array in arrays.items():
        if array.ndim != 1:
            raise ValueError(
                f"`history[{key!r}]` must be 1-D (one value per logged step), got "
                f"shape {array.shape}."
            )
    if arrays:
        first = "step" if "step" in arrays else next(iter(arrays))
        length = len(arrays[first])
        for key, array in arrays.items():
            if len(array) != length:
                raise ValueError(
                    f"`history[{key!r}]` has length {len(array)} but "
                    f"`history[{first!r}]` has length {length}; every history array "
                    "needs one value per logged step (use NaN where a value was not "
                    "computed)."
                )
        arrays = {first: arrays[first]} | arrays
    return arrays


def _check_json(name: str, value: Any) -> None:
    """Raise a `TypeError` naming the first entry that JSON cannot round-trip."""
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"`{name}` must be JSON-serialisable with string keys, got the "
                    f"{type(key).__name__} key {key!r}."
                )
            _check_json(f"{name}[{key!r}]", item)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(f"{name}[{i}]", item)
        return
    hint = ""
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        hint = " Convert arrays and NumPy scalars with `.tolist()` / `float(...)`."
    raise TypeError(
        f"`{name}` must be JSON-serialisable (dict with str keys, list, str, int, "
        f"float, bool, None), got {type(value).__name__}.{hint}"
    )


def to_json(name: str, value: Mapping[str, Any] | None) -> str:
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise TypeError(f"`{name}` must be a dict, got {type(value).__name__}.")
    _check_json(name, value)
    return json.dumps(value, ensure_ascii=False)


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(
                f"The keys of `metrics` must be non-empty strings, got {key!r}."
            )
        array = _numeric_array(f"metrics[{key!r}]", value)
        if array.ndim != 0 or array.dtype.kind == "c":
            raise ValueError(
                f"`metrics[{key!r}]` must be a real scalar, got shape {array.shape} "
                f"dtype {array.dtype}. Save arrays as `predictions` or `history`."
            )
        out[key] = float(array)
    return out
