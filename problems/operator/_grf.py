r"""Random input functions on $[0, 1]$: Gaussian random fields and random Chebyshev
series."""

import functools
from collections.abc import Callable

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from sciinr.checks import (
    check_finite_array,
    check_nonnegative_int,
    check_positive_int,
    check_real,
    resolve_option,
)


def _rbf(distance: np.ndarray, length_scale: float) -> np.ndarray:
    return np.exp(-0.5 * np.square(distance / length_scale))


def _periodic(distance: np.ndarray, length_scale: float) -> np.ndarray:
    return np.exp(-2.0 * np.square(np.sin(np.pi * distance) / length_scale))


KERNELS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "rbf": _rbf,
    "periodic": _periodic,
}
"""The covariance kernels of [`problems.operator.gaussian_random_field`][], by name:
`"rbf"`, $k(x, x') = \\sigma^2 \\exp(-(x - x')^2 / 2l^2)$, and `"periodic"` (period
1), $k(x, x') = \\sigma^2 \\exp(-2 \\sin^2(\\pi (x - x')) / l^2)$."""

# Eigenvalues below this fraction of the largest are dropped: they are float64
# round-off (the RBF kernel's spectrum decays like exp(-(pi l k)^2 / 2), so below
# ~1e-16 of the top it is noise), and what they would add to the covariance,
# n * 1e-10 of the variance at most, is far below float32 resolution.
_EIGENVALUE_RTOL = 1e-10


def as_grid(name: str, grid: int | ArrayLike) -> np.ndarray:
    """`grid` as a float64 NumPy array of points: an int `N` means `N` equispaced
    points on [0, 1] with both ends."""
    if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
        n = check_positive_int(name, grid)
        return np.linspace(0.0, 1.0, n)
    points = check_finite_array(name, grid).astype(np.float64)
    if points.ndim != 1 or points.size == 0:
        raise ValueError(
            f"`{name}` must be a number of points or a non-empty 1-D array of "
            f"points, got an array of shape {points.shape}."
        )
    return points


@functools.lru_cache(maxsize=32)
def _factor(
    kernel: str, length_scale: float, variance: float, grid: bytes
) -> np.ndarray:
    """`A` of shape `(r, n)` with `A.T @ A` = the kernel matrix on `grid`, in float64
    through a symmetric eigendecomposition (rank `r` <= `n`)."""
    xs = np.frombuffer(grid, dtype=np.float64)
    covariance = variance * KERNELS[kernel](xs[:, None] - xs[None, :], length_scale)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    keep = eigenvalues > _EIGENVALUE_RTOL * eigenvalues[-1]
    modes = eigenvectors[:, keep].T
    # Eigenvectors are defined up to sign: fix it (largest entry positive) so that a
    # key gives the same functions whatever the LAPACK build.
    largest = np.argmax(np.abs(modes), axis=1)
    modes = modes * np.sign(modes[np.arange(len(modes)), largest])[:, None]
    return (np.sqrt(eigenvalues[keep])[:, None] * modes)[::-1]


def gaussian_random_field(
    key: PRNGKeyArray,
    n_functions: int,
    grid: int | ArrayLike,
    *,
    length_scale: float,
    kernel: str = "rbf",
    variance: float = 1.0,
    dtype=None,
) -> Float[Array, "n_functions n"]:
    r"""Draw samples of a zero-mean Gaussian random field on $[0, 1]$ at `grid`.

    The covariance matrix $K_{ij} = k(x_i, x_j)$ of the points is factorized in
    float64 by a symmetric eigendecomposition $K = V \Lambda V^\top$, keeping the
    eigenvalues above $10^{-10}$ of the largest, and the samples are
    $u = z\, \Lambda^{1/2} V^\top$ with $z \sim \mathcal{N}(0, I)$ drawn from `key`
    (a Karhunen–Loève expansion of the field on the grid). A Cholesky factorization
    of this kernel fails in float32 (the RBF kernel matrix of a few hundred points
    is numerically singular: its spectrum decays like a Gaussian); the
    eigendecomposition needs no jitter and keeps the exact covariance up to the
    dropped round-off. The factorization is cached per grid and kernel.

    Samples at different grids drawn from one key are unrelated: to evaluate one
    function at several sets of points (sensors, solver steps), sample it on a
    fine grid and interpolate, as the operator problems do.

    **Arguments:**

    - `key`: a JAX PRNG key; the samples are a deterministic function of it.
    - `n_functions`: the number of functions to draw.
    - `grid`: the points, a 1-D array, or an int `N` for `N` equispaced points on
      $[0, 1]$ including both ends.
    - `length_scale`: the kernel's length scale $l > 0$. Keyword-only.
    - `kernel`: `"rbf"` (default) or `"periodic"` (period 1); see
      [`problems.operator.KERNELS`][]. Keyword-only.
    - `variance`: the kernel's variance $\sigma^2 > 0$. Keyword-only. Defaults to
      `1.0`.
    - `dtype`: the float dtype of the samples; defaults to JAX's default float.

    **Returns:**

    The samples, shape `(n_functions, n)`.

    **Raises:**

    `ValueError`/`TypeError` naming the argument for a non-positive `n_functions`,
    `length_scale` or `variance`, an unknown `kernel`, or a `grid` that is not 1-D
    or holds NaN/inf.
    """
    n_functions = check_positive_int("n_functions", n_functions)
    length_scale = check_real("length_scale", length_scale, positive=True)
    variance = check_real("variance", variance, positive=True)
    resolve_option("kernel", kernel, KERNELS)
    points = as_grid("grid", grid)
    factor = _factor(kernel, length_scale, variance, points.tobytes())
    dtype = jnp.result_type(float) if dtype is None else dtype
    z = jr.normal(key, (n_functions, factor.shape[0]), dtype)
    return z @ jnp.asarray(factor, dtype)


def chebyshev_random_field(
    key: PRNGKeyArray,
    n_functions: int,
    grid: int | ArrayLike,
    *,
    degree: int,
    scale: float = 1.0,
    dtype=None,
) -> Float[Array, "n_functions n"]:
    r"""Draw random Chebyshev series on $[0, 1]$ at `grid`.

    $$u(x) = \sum_{i=0}^{\text{degree}} a_i\, T_i(2x - 1), \qquad
    a_i \sim \mathcal{U}(-M, M),$$

    with $T_i$ the Chebyshev polynomials of the first kind and $M$ = `scale`: the
    Chebyshev function space of DeepXDE (`dde.data.Chebyshev(N = degree + 1, M)`),
    an alternative to Gaussian random fields with a finite number of modes.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `n_functions`: the number of functions to draw.
    - `grid`: the points in $[0, 1]$, a 1-D array, or an int `N` for `N`
      equispaced points including both ends.
    - `degree`: the highest polynomial degree (`degree + 1` coefficients).
      Keyword-only.
    - `scale`: the coefficient bound $M > 0$. Keyword-only. Defaults to `1.0`.
    - `dtype`: the float dtype; defaults to JAX's default float.

    **Returns:**

    The samples, shape `(n_functions, n)`.

    **Raises:**

    `ValueError`/`TypeError` naming the argument for a negative `degree`, a
    non-positive `n_functions` or `scale`, or grid points outside $[0, 1]$.
    """
    n_functions = check_positive_int("n_functions", n_functions)
    degree = check_nonnegative_int("degree", degree)
    scale = check_real("scale", scale, positive=True)
    points = as_grid("grid", grid)
    if points.min() < 0 or points.max() > 1:
        raise ValueError(
            "`grid` points must lie in [0, 1] (the Chebyshev polynomials are "
            f"mapped there), got points in [{points.min()}, {points.max()}]."
        )
    basis = np.polynomial.chebyshev.chebvander(2 * points - 1, degree)  # (n, deg+1)
    dtype = jnp.result_type(float) if dtype is None else dtype
    coefficients = jr.uniform(
        key, (n_functions, degree + 1), dtype, minval=-scale, maxval=scale
    )
    return coefficients @ jnp.asarray(basis.T, dtype)


def interpolate(
    values: Float[Array, "..."], xs: Float[Array, "..."], *, axis: int = -1
) -> Float[Array, "..."]:
    """Piecewise-linear interpolation of values on `n` equispaced points of [0, 1]
    (both ends included, along `axis`) at the points `xs` (clipped to [0, 1]).

    This is how the operator problems define an input function between the points
    of its fine grid: the solvers, the sensors and the physics-informed residual all
    see the same function. `values` of shape `(F, n)` at `xs` of shape `(k,)` give
    `(F, k)`; `values` of shape `(n, F)` with `axis=0` at a scalar `x` give `(F,)`
    (a contiguous row: what the solvers use at every stage).
    """
    n = values.shape[axis]
    position = jnp.clip(xs, 0.0, 1.0) * (n - 1)
    index = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, n - 2)
    weight = position - index.astype(position.dtype)
    left = jnp.take(values, index, axis=axis)
    right = jnp.take(values, index + 1, axis=axis)
    # `take` puts the axes of `xs` at `axis`: line the weights up with them.
    axis = axis % values.ndim
    weight = weight.reshape(
        (1,) * axis + weight.shape + (1,) * (values.ndim - axis - 1)
    )
    return left + weight * (right - left)
