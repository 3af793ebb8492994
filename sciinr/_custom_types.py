"""Shared jaxtyping aliases (one place, as in Diffrax's `_custom_types.py`)."""

from typing import TypeAlias

from jaxtyping import Array, Float


Scalar: TypeAlias = Float[Array, ""]
"""A 0-d float array."""
