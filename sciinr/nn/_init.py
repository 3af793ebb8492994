"""Weight initialisers as pure functions of `(key, shape, dtype)`."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def glorot_normal(
    key: PRNGKeyArray, shape: tuple[int, int], dtype=None
) -> Float[Array, "out in"]:
    r"""Glorot (Xavier) normal initialisation of an `(out, in)` weight matrix.

    Draws from a normal distribution truncated at two standard deviations and rescaled
    so that the variance is exactly $2 / (\text{in} + \text{out})$ (the convention of
    `jax.nn.initializers.glorot_normal`, Keras and Flax, which the RWF reference code
    uses).
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    init = jax.nn.initializers.glorot_normal(in_axis=-1, out_axis=-2)
    return init(key, shape, dtype)


def uniform(
    key: PRNGKeyArray, shape: tuple[int, ...], bound: float, dtype=None
) -> Array:
    """Uniform initialisation on `[-bound, bound)`."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jr.uniform(key, shape, dtype, minval=-bound, maxval=bound)


def siren_bound(in_size: int, omega0: float, *, first: bool) -> float:
    r"""SIREN's weight bound: $1/n$ for the first layer, $\sqrt{6/n}/\omega_0$ after."""
    if first:
        return 1.0 / in_size
    return float(np.sqrt(6.0 / in_size) / omega0)
