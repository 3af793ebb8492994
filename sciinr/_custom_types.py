"""Shared jaxtyping aliases (one place, as in Diffrax's `_custom_types.py`)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree


Coord: TypeAlias = Float[Array, " d"]
"""One coordinate `x` of shape `(d,)`."""

CoordBatch: TypeAlias = Float[Array, "n d"]
"""A batch of coordinates `xs` of shape `(n, d)`."""

Values: TypeAlias = Float[Array, " m"]
"""The values of a field at one coordinate, shape `(m,)`."""

ValuesBatch: TypeAlias = Float[Array, "n m"]
"""The values of a field at a batch of coordinates, shape `(n, m)`."""

Scalar: TypeAlias = Float[Array, ""]
"""A 0-d float array."""

Batch: TypeAlias = PyTree[Array]
"""A pytree of arrays, every leaf with the same leading (batch) axis."""

Metrics: TypeAlias = dict[str, Any]

__all__ = [
    "Array",
    "ArrayLike",
    "Batch",
    "Coord",
    "CoordBatch",
    "Float",
    "Metrics",
    "PRNGKeyArray",
    "PyTree",
    "Scalar",
    "Values",
    "ValuesBatch",
]
