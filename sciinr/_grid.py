"""Coordinate grids with the pixel convention every problem shares."""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .checks import check_domain, check_positive_int


def grid(
    shape: Sequence[int],
    domain: Sequence[Sequence[float]] | None = None,
    *,
    endpoint: bool = False,
    dtype=None,
) -> tuple[Float[Array, "n d"], tuple[Float[Array, " _"], ...]]:
    r"""The coordinates of a regular grid, flattened, and its axes.

    With the pixel convention of the problems (`endpoint=False`), index $i$ of an axis
    of length $N$ over $[a, b)$ sits at

    $$x_i = a + (b - a)\, \frac{i}{N},$$

    so on the default domain $[0, 1)^d$ pixel $(i, j)$ of an $N \times N$ image is at
    $(i/N, j/N)$, as in [`problems.image.ImageRegression`][] and Tancik et al. (2020).
    With `endpoint=True` the axis runs over the closed interval,
    $x_i = a + (b - a)\, i / (N - 1)$ (a PDE reference grid that includes the
    boundary).

    **Arguments:**

    - `shape`: the number of points along each axis, `(N_1, ..., N_d)`.
    - `domain`: one `(low, high)` pair per axis. Defaults to `[0, 1)` on every axis.
    - `endpoint`: whether the last point of each axis is `high`. Keyword-only.
    - `dtype`: the float dtype; defaults to JAX's default float. Keyword-only.

    **Returns:**

    `(coords, axes)`: `coords` of shape `(N_1 \cdots N_d, d)` in row-major order (the
    last axis varies fastest, so `values.reshape(shape + (m,))` restores the grid),
    and `axes`, the `d` one-dimensional coordinate arrays.

    **Raises:**

    `ValueError`/`TypeError` naming the argument for non-positive sizes, a `domain`
    with the wrong number of pairs, non-finite bounds or `low >= high`, and
    `endpoint=True` on an axis of one point.
    """
    if isinstance(shape, int):
        shape = (shape,)
    sizes = [check_positive_int(f"shape[{i}]", n) for i, n in enumerate(shape)]
    if not sizes:
        raise ValueError("`shape` must have at least one axis, got ().")
    if domain is None:
        bounds = [(0.0, 1.0)] * len(sizes)
    else:
        bounds = check_domain("domain", domain, len(sizes))
    dtype = jnp.result_type(float) if dtype is None else dtype
    axes = []
    for axis, (n, (low, high)) in enumerate(zip(sizes, bounds)):
        if endpoint and n < 2:
            raise ValueError(
                f"`endpoint=True` needs at least 2 points per axis, got "
                f"shape[{axis}] = {n}."
            )
        denominator = n - 1 if endpoint else n
        # In float64 on the host, so that i / N is exact to the last bit of `dtype`.
        axes.append(low + (high - low) * (np.arange(n, dtype=np.float64) / denominator))
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = np.stack(mesh, axis=-1).reshape(-1, len(sizes))
    return (
        jnp.asarray(coords, dtype),
        tuple(jnp.asarray(axis, dtype) for axis in axes),
    )
