"""`fit(output=...)` labels the prediction axes with the problem's coordinates in
the order `coordinates()` gives them (not sorted by name)."""

import h5py
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from helpers import make_toy_problem, ToyRegression

import sciinr


class _Unsorted(ToyRegression):
    """The toy problem with axes whose names are not in alphabetical order."""

    def coordinates(self):
        axis = jnp.arange(8.0) / 8
        return {"y": axis, "x": 2 * axis, "channel": jnp.arange(1)}


def test_run_file_keeps_the_order_of_the_coordinates(tmp_path):
    toy = make_toy_problem()
    problem = _Unsorted(toy.coords, toy.values, toy.grid, None)
    field = sciinr.nn.CoordinateMLP(2, 1, 8, 1, key=jr.key(0))
    path = tmp_path / "run.h5"
    sciinr.fit(
        problem, field, optax.adam(1e-3), steps=2, key=jr.key(1), output=path,
        progress=False,
    )  # fmt: skip
    with h5py.File(path, "r") as f:
        dims = f["predictions/prediction"].dims
        labels = [dims[axis][0].name.rsplit("/", 1)[-1] for axis in range(3)]
        assert labels == ["y", "x", "channel"]
        np.testing.assert_allclose(dims[1][0][:], 2 * np.arange(8) / 8)
