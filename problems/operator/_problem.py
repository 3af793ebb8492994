r"""The shared machinery of the operator problems: their data, batches, losses,
metrics and construction helpers."""

import abc
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from sciinr import AbstractProblem
from sciinr.checks import (
    check_positive_int,
    check_real,
    resolve_option,
)
from sciinr.nn import DeepONet

from ._dataset import InputSpace
from ._grf import interpolate, KERNELS


Scalar = Float[Array, ""]
CacheArgument = str | os.PathLike | bool | None


class OperatorData(eqx.Module):
    """The arrays of an operator problem (on device).

    - `sensors`: the sensor locations $x_1 \\dots x_m$, shape `(m,)`.
    - `train_u`, `test_u`: the input functions at the sensors, `(F, m)`.
    - `train_inputs`: the training functions on the fine grid, `(F, N)`, from
      which the physics-informed residual reads $u$ at its collocation points
      (`None` for data-driven training).
    - `train_points`: the query points of the training targets, shared by all
      functions `(P, d)` (aligned) or one set per function `(F, P, d)`; `None` for
      physics-informed training.
    - `train_targets`: $s$ at those points, `(F, P, c)`, or `None`.
    - `test_points`, `test_targets`: the evaluation grid, flattened, `(Q, d)`, and
      $s$ there, `(F_test, Q, c)`.
    - `reference_points`: the points whose statistics a batch-norm trunk is frozen
      on for evaluation (the training query points when shared, else the grid).
    """

    sensors: Float[Array, " m"]
    train_u: Float[Array, "f m"]
    train_inputs: Float[Array, "f n"] | None
    train_points: Float[Array, "..."] | None
    train_targets: Float[Array, "f p c"] | None
    test_u: Float[Array, "g m"]
    test_points: Float[Array, "q d"]
    test_targets: Float[Array, "g q c"]
    reference_points: Float[Array, "r d"]


def _rel_l2(pred: Array, target: Array) -> Array:
    """Relative L2 error per function over its points and channels, `(F,)`."""
    axes = tuple(range(1, pred.ndim))
    return jnp.sqrt(
        jnp.sum(jnp.square(pred - target), axis=axes)
        / jnp.sum(jnp.square(target), axis=axes)
    )


class AbstractOperatorProblem(AbstractProblem):
    r"""Learn an operator $G: u \mapsto s$ from input functions to solutions.

    The shared machinery of [`problems.operator.Antiderivative`][],
    [`problems.operator.NonlinearODE`][], [`problems.operator.Pendulum`][] and
    [`problems.operator.DiffusionReaction`][]; the field is a
    [`sciinr.nn.DeepONet`][] whose branch takes the `n_sensors` sensor values.

    **Training batches** (`sample`) are `batch_size` training functions drawn
    uniformly with replacement on device (or all of them, in order, for
    `batch_size=None`: full-batch training), each with all of its query points:

    - data-driven, aligned query points (the ODE operators: every function has its
      target at the same points): the DeepONet's aligned layout, the branch once per
      function, the trunk once per point;
    - data-driven, per-function query points (diffusion–reaction, the paper's
      random points per function): the branch once per function, the trunk once
      per (function, point);
    - physics-informed: the batch's functions at `n_collocation` collocation points
      drawn uniformly on device every step and shared by the batch (aligned), plus
      the initial (and boundary) points; no target data.

    **Metrics** (`evaluate`): `rel_l2`, the mean over the test functions of
    $\lVert G_\theta(u)(y) - s(y) \rVert_2 / \lVert s(y) \rVert_2$ over the points
    $y$ of the evaluation grid (and the output channels), and `rel_l2_std`, its
    standard deviation over the test functions. Batch-norm statistics are frozen
    first on the training functions (branch) and reference points (trunk).

    **Predictions** (`predict`): `inputs` (the test functions at the sensors),
    `targets`, `predictions` (on the evaluation grid, with one axis per grid
    dimension and a channel axis) and `errors` (the relative L2 error of every test
    function).

    ??? cite

        [Learning the solution operator of parametric partial differential
        equations with physics-informed DeepONets](https://arxiv.org/abs/2103.10974)
        (the antiderivative and diffusion–reaction benchmarks, their protocols and
        reference errors) and [Learning nonlinear operators via
        DeepONet](https://arxiv.org/abs/1910.03193) (the nonlinear ODE and the
        pendulum).

        ```bibtex
        @article{wang2021learning,
          title={Learning the solution operator of parametric partial differential
                 equations with physics-informed {DeepONets}},
          author={Wang, Sifan and Wang, Hanwen and Perdikaris, Paris},
          journal={Science Advances},
          volume={7},
          number={40},
          pages={eabi8605},
          year={2021}
        }
        @article{lu2021deeponet,
          title={Learning nonlinear operators via {DeepONet} based on the universal
                 approximation theorem of operators},
          author={Lu, Lu and Jin, Pengzhan and Pang, Guofei and Zhang, Zhongqiang
                  and Karniadakis, George Em},
          journal={Nature Machine Intelligence},
          volume={3},
          pages={218--229},
          year={2021}
        }
        ```
    """

    data: eqx.AbstractVar[OperatorData]
    batch_size: eqx.AbstractVar[int | None]
    n_collocation: eqx.AbstractVar[int]
    physics: eqx.AbstractVar[bool]
    chunk_size: eqx.AbstractVar[int | None]
    grid_shape: eqx.AbstractVar[tuple[int, ...]]
    dropped: eqx.AbstractVar[tuple[int, int]]

    @property
    @abc.abstractmethod
    def in_size(self) -> int:
        """The dimension $d$ of a query point (the trunk's `in_size`)."""

    @property
    @abc.abstractmethod
    def out_size(self) -> int:
        """The number of output channels $c$ (the DeepONet's `out_size`)."""

    @property
    def n_sensors(self) -> int:
        """The number of sensors $m$ (the branch's `in_size`)."""
        return self.data.sensors.shape[0]

    @abc.abstractmethod
    def _physics_sample(
        self, key: PRNGKeyArray, inputs: Float[Array, "b n"]
    ) -> dict[str, Array]:
        """Collocation and initial/boundary points, and $u$ at the collocation
        points, for the functions with fine-grid values `inputs`."""

    @abc.abstractmethod
    def _physics_loss(
        self, field: DeepONet, batch: dict[str, Array]
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The physics-informed loss on a batch from `_physics_sample`."""

    def check_field(self, field: Any) -> DeepONet:
        """Check that `field` is a DeepONet that fits this problem (at trace time,
        before anything is compiled); returns it.

        **Raises:**

        `TypeError` if `field` is not a [`sciinr.nn.DeepONet`][]; `ValueError` if
        its branch does not take `n_sensors` values, its trunk does not take points
        of dimension `in_size`, or it does not output `out_size` channels.
        """
        name = type(self).__name__
        if not isinstance(field, DeepONet):
            raise TypeError(
                f"`field` must be a `sciinr.nn.DeepONet` for {name}, got "
                f"{type(field).__name__}."
            )
        if field.n_sensors != self.n_sensors:
            raise ValueError(
                f"The DeepONet's branch takes {field.n_sensors} input values, but "
                f"{name} samples its input functions at {self.n_sensors} sensors "
                f"(`n_sensors`). Build the branch with `in_size={self.n_sensors}` "
                "(`problem.n_sensors`)."
            )
        if field.in_size != self.in_size:
            raise ValueError(
                f"The DeepONet's trunk takes points of dimension {field.in_size}, "
                f"but {name}'s query points have dimension {self.in_size}. Build "
                f"the trunk with `in_size={self.in_size}` (`problem.in_size`)."
            )
        if field.out_size != self.out_size:
            raise ValueError(
                f"The DeepONet outputs {field.out_size} channel(s), but {name} has "
                f"{self.out_size}. Build it with `out_size={self.out_size}` "
                "(`problem.out_size`)."
            )
        return field

    def sample(self, key: PRNGKeyArray) -> dict[str, Array]:
        """Draw one training batch on device.

        **Arguments:**

        - `key`: a JAX PRNG key.

        **Returns:**

        A dict with `u`, the `batch_size` drawn functions at the sensors,
        `(B, m)`, and: `targets` `(B, P, c)` (data-driven, plus `points` `(B, P, d)`
        when every function has its own query points); or the collocation batch of
        the physics-informed loss.
        """
        index_key, physics_key = jr.split(key)
        data = self.data
        n = data.train_u.shape[0]
        if self.batch_size is None:  # full batch: no gather
            index = slice(None)
        else:
            index = jr.randint(index_key, (self.batch_size,), 0, n)
        batch = {"u": data.train_u[index]}
        if self.physics:
            assert data.train_inputs is not None
            batch.update(self._physics_sample(physics_key, data.train_inputs[index]))
            return batch
        assert data.train_targets is not None and data.train_points is not None
        batch["targets"] = data.train_targets[index]
        if data.train_points.ndim == 3:
            batch["points"] = data.train_points[index]
        return batch

    def loss(
        self, field: DeepONet, batch: dict[str, Array]
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The training loss on `batch`.

        Data-driven: the mean squared error `mse` of the DeepONet at the batch's
        query points. Physics-informed: `residual` + `initial` (+ `boundary` for
        diffusion–reaction), the mean squared residual at the collocation points
        and the mean squared initial/boundary values.

        **Arguments:**

        - `field`: a [`sciinr.nn.DeepONet`][] (see `check_field`).
        - `batch`: from `sample`.

        **Returns:**

        `(total, terms)`.
        """
        field = self.check_field(field)
        if self.physics:
            return self._physics_loss(field, batch)
        data = self.data
        if "points" in batch:  # each function at its own points
            points = batch["points"]
            b, p = points.shape[:2]
            coefficients = field.coefficients(batch["u"])
            basis = field.basis(points.reshape(b * p, -1))
            basis = basis.reshape(b, p, field.out_size, field.n_basis)
            pred = (
                jnp.einsum("bcn,bpcn->bpc", coefficients, basis)
                + field.bias[None, None]
            )
        else:
            assert data.train_points is not None
            pred = field.aligned(batch["u"], data.train_points)
        mse = jnp.mean(jnp.square(pred - batch["targets"]))
        return mse, {"mse": mse}

    def _frozen(self, field: DeepONet) -> DeepONet:
        return field.freeze_aligned(self.data.train_u, self.data.reference_points)

    def _predictions(self, field: DeepONet) -> Float[Array, "g q c"]:
        field = self._frozen(self.check_field(field))
        return field.aligned(
            self.data.test_u, self.data.test_points, chunk_size=self.chunk_size
        )

    def evaluate(self, field: DeepONet) -> dict[str, Scalar]:
        """The relative L2 errors on the test functions.

        **Arguments:**

        - `field`: a [`sciinr.nn.DeepONet`][] (see `check_field`).

        **Returns:**

        `{"rel_l2": mean, "rel_l2_std": standard deviation}` over the test
        functions of the relative L2 error on the evaluation grid.
        """
        errors = _rel_l2(self._predictions(field), self.data.test_targets)
        return {"rel_l2": jnp.mean(errors), "rel_l2_std": jnp.std(errors)}

    def predict(self, field: DeepONet) -> dict[str, Array]:
        """The test functions, their targets and the DeepONet's predictions.

        **Returns:**

        `inputs` `(F_test, m)` (at the sensors), `targets` and `predictions` of
        shape `(F_test, *grid_shape, c)`, `errors` `(F_test,)` (relative L2 per
        function). Label them with `coordinates()`.
        """
        pred = self._predictions(field)
        shape = (pred.shape[0], *self.grid_shape, self.out_size)
        return {
            "inputs": self.data.test_u,
            "targets": self.data.test_targets.reshape(shape),
            "predictions": pred.reshape(shape),
            "errors": _rel_l2(pred, self.data.test_targets),
        }


# --------------------------------------------------------------------------------------
# Construction helpers shared by the problems
# --------------------------------------------------------------------------------------


def _check_common(
    *,
    length_scale: Any,
    kernel: Any,
    variance: Any,
    n_sensors: Any,
    refine: Any,
    n_train: Any,
    n_test: Any,
    batch_size: Any,
    n_collocation: Any,
    chunk_size: Any,
) -> dict[str, Any]:
    out = {
        "length_scale": check_real("length_scale", length_scale, positive=True),
        "variance": check_real("variance", variance, positive=True),
        "n_sensors": check_positive_int("n_sensors", n_sensors),
        "refine": check_positive_int("refine", refine),
        "n_train": check_positive_int("n_train", n_train),
        "n_test": check_positive_int("n_test", n_test),
        "batch_size": (
            None if batch_size is None else check_positive_int("batch_size", batch_size)
        ),
        "n_collocation": check_positive_int("n_collocation", n_collocation),
    }
    resolve_option("kernel", kernel, KERNELS)
    out["kernel"] = kernel
    if out["n_sensors"] < 2:
        raise ValueError(
            f"`n_sensors` must be at least 2 (sensors at both ends of [0, 1]), got "
            f"{n_sensors}."
        )
    out["chunk_size"] = (
        None if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    )
    return out


def _space(options: dict[str, Any]) -> InputSpace:
    return InputSpace(
        length_scale=options["length_scale"],
        kernel=options["kernel"],
        variance=options["variance"],
        resolution=options["refine"] * (options["n_sensors"] - 1) + 1,
    )


def _key(key: Any) -> PRNGKeyArray:
    typed = isinstance(key, jax.Array) and jnp.issubdtype(
        key.dtype, jax.dtypes.prng_key
    )
    if not typed:
        raise TypeError(
            "`key` must be a typed JAX PRNG key (`jax.random.key(seed)`), got "
            f"{type(key).__name__}"
            + (f" of dtype {key.dtype}" if hasattr(key, "dtype") else "")
            + "."
        )
    return key


def _sensors(space: InputSpace, n_sensors: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n_sensors)


def _at_sensors(inputs: np.ndarray, sensors: np.ndarray) -> Array:
    dtype = jnp.result_type(float)
    return interpolate(jnp.asarray(inputs, dtype), jnp.asarray(sensors, dtype))
