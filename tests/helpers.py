import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np

import sciinr
from sciinr.nn import apply, freeze_statistics


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


class ToyRegression(sciinr.AbstractProblem):
    """A small smooth 2-D regression problem for trainer tests."""

    coords: jax.Array
    values: jax.Array
    grid: jax.Array
    batch_size: int | None = eqx.field(static=True)

    def sample(self, key):
        if self.batch_size is None:
            return self.coords, self.values
        index = jr.randint(key, (self.batch_size,), 0, self.coords.shape[0])
        return self.coords[index], self.values[index]

    def loss(self, field, batch):
        xs, ys = batch
        mse = jnp.mean(jnp.square(apply(field, xs) - ys))
        return mse, {"mse": mse}

    def evaluate(self, field):
        field = freeze_statistics(field, self.coords)
        pred = apply(field, self.coords)
        return {"rel_l2": sciinr.metrics.relative_l2(pred, self.values)}

    def predict(self, field):
        field = freeze_statistics(field, self.coords)
        return {"prediction": apply(field, self.grid).reshape(8, 8, -1)}

    def coordinates(self):
        axis = jnp.arange(8.0) / 8
        return {"x": axis, "y": axis}


def make_toy_problem(
    n: int = 64, batch_size: int | None = None, seed: int = 0
) -> ToyRegression:
    """`sin(2 pi x) cos(2 pi y) + 0.5` at `n` random points of the unit square."""
    xs = jr.uniform(jr.key(seed), (n, 2))
    ys = jnp.sin(2 * jnp.pi * xs[:, :1]) * jnp.cos(2 * jnp.pi * xs[:, 1:]) + 0.5
    axis = jnp.arange(8.0) / 8
    grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return ToyRegression(xs, ys, grid, batch_size)


@contextlib.contextmanager
def without_runtime_typechecks():
    """Switch off the suite's jaxtyping/beartype runtime checks inside the block.

    The test run type-checks every `sciinr` signature (`--jaxtyping-packages`), so a
    bad argument such as `linear="foo"` (annotated `Literal["dense", "rwf"]`) fails
    there with a `TypeCheckError`. Users run without that checker and get the
    package's own `ValueError`/`TypeError`; use this to test those messages.
    """
    import jaxtyping

    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)
