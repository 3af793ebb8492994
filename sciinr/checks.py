"""Host-side argument validation.

Every function here raises `TypeError`/`ValueError` whose message names the argument,
what was expected and what was received, so that bad input never surfaces as a deep
JAX trace.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np


_T = TypeVar("_T")


def check_positive_int(name: str, value: Any) -> int:
    """Return `value` as an `int`, or raise if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"`{name}` must be a positive int, got {type(value).__name__} {value!r}."
        )
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value}.")
    return int(value)


def check_nonnegative_int(name: str, value: Any) -> int:
    """Return `value` as an `int`, or raise if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an int >= 0, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value}.")
    return int(value)


def check_real(
    name: str, value: Any, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """Return `value` as a finite `float`, optionally > 0 or >= 0."""
    if getattr(value, "shape", None) == () and not isinstance(value, bool):
        value = np.asarray(value).item()  # a 0-d NumPy or JAX array
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    if positive and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")
    if nonnegative and value < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")
    return value


def resolve_option(name: str, value: Any, options: Mapping[str, _T]) -> _T:
    """Look `value` up in a registry of named options.

    Strings are resolved through `options`; an unknown name raises a `ValueError`
    that lists every valid name.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be one of {sorted(options)} (a string), "
            f"got {type(value).__name__} {value!r}."
        )
    try:
        return options[value]
    except KeyError:
        raise ValueError(
            f"Unknown `{name}` {value!r}. Valid names: {', '.join(map(repr, options))}."
        ) from None


def resolve_callable(
    name: str, value: Any, options: Mapping[str, Callable]
) -> Callable:
    """A callable passes through; a string is resolved through `options`."""
    if isinstance(value, str):
        return resolve_option(name, value, options)
    if not callable(value):
        raise TypeError(
            f"`{name}` must be a callable or one of {sorted(options)}, "
            f"got {type(value).__name__}."
        )
    return value


def check_finite_array(name: str, value: Any) -> np.ndarray:
    """Convert to a NumPy array on the host and reject NaN/inf values."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise TypeError(f"`{name}` must be a numeric array, got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.inexact):
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"`{name}` contains {int(bad.sum())} non-finite value(s) "
                f"(first at index {index}: {array[index]})."
            )
    return array


def check_coords(name: str, xs: Any, in_size: int | None) -> None:
    """Check that a coordinate batch has shape `(n, in_size)`."""
    shape = getattr(xs, "shape", None)
    if shape is None:
        raise TypeError(f"`{name}` must be an array of shape (n, d), got {type(xs)}.")
    expected = "(n, d)" if in_size is None else f"(n, {in_size})"
    if len(shape) != 2 or (in_size is not None and shape[1] != in_size):
        hint = ""
        if len(shape) > 2 and in_size is not None and shape[-1] == in_size:
            hint = f" Did you pass a grid? Use `{name}.reshape(-1, {in_size})`."
        elif len(shape) == 1 and in_size is not None:
            hint = (
                " For one point call the field directly, `field(x)`; for a batch of "
                f"scalars use `{name}[:, None]`."
            )
        elif len(shape) == 2 and in_size is not None and shape[0] == in_size:
            hint = f" Did you pass the transpose? Use `{name}.T`."
        raise ValueError(f"`{name}` must have shape {expected}, got {shape}.{hint}")


def check_domain(
    name: str, domain: Any, ndim: int, *, hint: str = ""
) -> list[tuple[float, float]]:
    """Check a box domain: `ndim` pairs `(low, high)` of finite reals with `low < high`.

    **Arguments:**

    - `name`: the argument's name, for the messages.
    - `domain`: a sequence of `(low, high)` pairs, one per axis.
    - `ndim`: the number of axes expected.
    - `hint`: appended to the message when the number of pairs is wrong.

    **Returns:**

    The pairs as a list of `(float, float)` tuples.

    **Raises:**

    `TypeError` when `domain` is not a sequence of pairs; `ValueError` for the wrong
    number of pairs, non-finite bounds or `low >= high`.
    """
    try:
        pairs = [tuple(pair) for pair in domain]
    except TypeError:
        raise TypeError(
            f"`{name}` must be a sequence of (low, high) pairs, one per axis, got "
            f"{domain!r}."
        ) from None
    if len(pairs) != ndim or any(len(pair) != 2 for pair in pairs):
        raise ValueError(
            f"`{name}` must hold one (low, high) pair per axis ({ndim}), got "
            f"{domain!r}.{hint}"
        )
    out = []
    for axis, (low, high) in enumerate(pairs):
        low = check_real(f"{name}[{axis}][0]", low)
        high = check_real(f"{name}[{axis}][1]", high)
        if not high > low:
            raise ValueError(
                f"`{name}[{axis}]` must have low < high, got ({low}, {high})."
            )
        out.append((low, high))
    return out
