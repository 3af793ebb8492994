"""Named activations, for the CLI/config boundary (the Python API takes callables)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._trig import sin


def identity(x):
    """The identity activation."""
    return x


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "sine": sin,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": identity,
}
"""Activation names accepted wherever an activation may be given as a string."""
