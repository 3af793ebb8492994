import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Whether two pytrees have the same structure and allclose array leaves.

    `atol` is relaxed on GPU, where reductions are not bit-reproducible.
    """
    if jax.default_backend() != "cpu":
        atol = max(atol, 1e-5)
    x_arrays, x_static = eqx.partition(x, eqx.is_array)
    y_arrays, y_static = eqx.partition(y, eqx.is_array)
    if jtu.tree_structure(x_arrays) != jtu.tree_structure(y_arrays):
        return False
    if not eqx.tree_equal(x_static, y_static):
        return False
    return all(
        a.shape == b.shape and bool(jnp.allclose(a, b, rtol=rtol, atol=atol))
        for a, b in zip(jtu.tree_leaves(x_arrays), jtu.tree_leaves(y_arrays))
    )


def central_difference(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function of an array."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (float(f(x + step)) - float(f(x - step))) / (2 * eps)
    return grad
