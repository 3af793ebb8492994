r"""The diffusion–reaction operator on $[0, 1]^2$."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import sciinr
from sciinr import diff
from sciinr.checks import check_positive_int, check_real
from sciinr.nn import DeepONet

from . import _solvers
from ._cache import resolve_cache
from ._dataset import generate
from ._grf import interpolate
from ._ode import _frozen_trunk
from ._problem import (
    _at_sensors,
    _check_common,
    _key,
    _sensors,
    _space,
    AbstractOperatorProblem,
    CacheArgument,
    OperatorData,
)


class DiffusionReaction(AbstractOperatorProblem):
    r"""The diffusion–reaction operator: $u \mapsto s$ with

    $$s_t = D\, s_{xx} + k\, s^2 + u(x), \qquad (x, t) \in [0, 1]^2,$$

    zero initial and boundary values, $D = k = 0.01$ (Wang et al. 2021). The
    reference solutions come from the method of lines on the sensor grid (second
    order finite differences, $m$ nodes) integrated by Diffrax's Tsit5, on the
    $m \times$ `n_times` grid of nodes $(x_i, t_j)$, both ends included.

    Data-driven, every training function has its target at `n_points` nodes drawn
    at random for that function (the paper's protocol); the test functions are
    evaluated on the whole grid. Physics-informed, the loss is the mean squared
    residual $G' _t - D G'_{xx} - k G'^2 - u(x)$ (with $G' = G_\theta(u)$) at
    `n_collocation` points drawn uniformly in $[0, 1]^2$ every step, plus the mean
    squared values at `n_boundary` initial and boundary points (a third each on
    $t = 0$, $x = 0$ and $x = 1$). Reference errors (5,000 training functions,
    120,000 iterations): $9.7 \times 10^{-3}$ data-driven, $5.3 \times 10^{-3}$
    physics-informed.
    """

    data: OperatorData
    batch_size: int | None = eqx.field(static=True)
    n_collocation: int = eqx.field(static=True)
    n_boundary: int = eqx.field(static=True)
    physics: bool = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    grid_shape: tuple[int, ...] = eqx.field(static=True)
    dropped: tuple[int, int] = eqx.field(static=True)
    diffusion: float = eqx.field(static=True)
    reaction: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        diffusion: float = 0.01,
        reaction: float = 0.01,
        length_scale: float = 0.2,
        kernel: str = "rbf",
        variance: float = 1.0,
        n_sensors: int = 100,
        refine: int = 10,
        n_times: int = 100,
        n_train: int = 5_000,
        n_test: int = 100,
        n_points: int = 100,
        physics: bool = False,
        batch_size: int | None = 100,
        n_collocation: int = 100,
        n_boundary: int = 300,
        cache: CacheArgument = True,
        chunk_size: int | None = None,
        key: PRNGKeyArray,
    ):
        r"""**Arguments:**

        - `diffusion`: $D \geq 0$. Keyword-only. Defaults to `0.01`.
        - `reaction`: $k$. Keyword-only. Defaults to `0.01`.
        - `n_times`: the number of equispaced times of the reference grid on
          $[0, 1]$. Keyword-only. Defaults to `100`.
        - `n_points`: the number of random grid nodes per training function at
          which its target is known (data-driven). Keyword-only. Defaults to `100`
          (the paper).
        - `n_boundary`: initial and boundary points per step (physics-informed).
          Keyword-only. Defaults to `300` (the paper).
        - `n_train`, `n_test`: Keyword-only. Default to `5_000` and `100` (the
          paper).
        - the others as for [`problems.operator.Antiderivative`][].
        """
        options = _check_common(
            length_scale=length_scale,
            kernel=kernel,
            variance=variance,
            n_sensors=n_sensors,
            refine=refine,
            n_train=n_train,
            n_test=n_test,
            batch_size=batch_size,
            n_collocation=n_collocation,
            chunk_size=chunk_size,
        )
        self.diffusion = check_real("diffusion", diffusion, nonnegative=True)
        self.reaction = check_real("reaction", reaction)
        n_times = check_positive_int("n_times", n_times)
        if n_times < 2:
            raise ValueError(f"`n_times` must be at least 2, got {n_times}.")
        n_points = check_positive_int("n_points", n_points)
        self.n_boundary = check_positive_int("n_boundary", n_boundary)
        if self.n_boundary < 3:
            raise ValueError(
                f"`n_boundary` must be at least 3 (one point on each of t = 0, "
                f"x = 0 and x = 1), got {n_boundary}."
            )
        space = _space(options)
        n_x = options["n_sensors"]
        sensors = _sensors(space, n_x)
        folder = resolve_cache(cache)
        train_key, test_key = jr.split(_key(key))
        parameters = {
            "diffusion": self.diffusion,
            "reaction": self.reaction,
            "n_times": n_times,
        }
        diffusion_, reaction_ = self.diffusion, self.reaction

        def grid_solver(inputs, _):
            s, ok = _solvers.diffusion_reaction(
                inputs, n_x, n_times, diffusion=diffusion_, reaction=reaction_
            )
            return {"targets": s.reshape(s.shape[0], -1, 1)}, ok

        def point_solver(inputs, key):
            found, ok = grid_solver(inputs, key)
            index = jr.randint(key, (inputs.shape[0], n_points), 0, n_x * n_times)
            targets = jnp.take_along_axis(found["targets"], index[..., None], axis=1)
            return {"targets": targets, "index": index}, ok

        train = generate(
            "diffusion_reaction",
            {**parameters, "split": "train", "n_points": n_points},
            space,
            options["n_train"],
            train_key,
            None if physics else point_solver,
            folder,
        )
        test = generate(
            "diffusion_reaction",
            {**parameters, "split": "test"},
            space,
            options["n_test"],
            test_key,
            grid_solver,
            folder,
        )
        dtype = jnp.result_type(float)
        grid, _ = sciinr.grid((n_x, n_times), endpoint=True, dtype=dtype)
        self.data = OperatorData(
            sensors=jnp.asarray(sensors, dtype),
            train_u=_at_sensors(train.arrays["inputs"], sensors),
            train_inputs=(
                jnp.asarray(train.arrays["inputs"], dtype) if physics else None
            ),
            train_points=None if physics else grid[train.arrays["index"]],
            train_targets=(
                None if physics else jnp.asarray(train.arrays["targets"], dtype)
            ),
            test_u=_at_sensors(test.arrays["inputs"], sensors),
            test_points=grid,
            test_targets=jnp.asarray(test.arrays["targets"], dtype),
            reference_points=grid,
        )
        self.dropped = (train.dropped, test.dropped)
        self.grid_shape = (n_x, n_times)
        self.batch_size = options["batch_size"]
        self.n_collocation = options["n_collocation"]
        self.physics = bool(physics)
        self.chunk_size = options["chunk_size"]

    @property
    def in_size(self) -> int:
        """`2`: the query point is $(x, t)$."""
        return 2

    @property
    def out_size(self) -> int:
        """`1`: $s$."""
        return 1

    def residual(
        self,
        field: DeepONet,
        u: Float[Array, "f m"],
        source: Float[Array, "f q"],
        points: Float[Array, "q 2"],
    ) -> Float[Array, "f q 1"]:
        """The PDE residual $s_t - D s_{xx} - k s^2 - u(x)$ of $s = G_\theta(u)$.

        **Arguments:**

        - `field`: a [`sciinr.nn.DeepONet`][].
        - `u`: the functions at the sensors, `(F, m)`.
        - `source`: the functions at the points' $x$, $u(x_q)$, `(F, Q)`.
        - `points`: the points $(x_q, t_q)$, `(Q, 2)`.

        **Returns:**

        The residual, `(F, Q, 1)`: zero for the exact solution operator.
        """
        field = self.check_field(field)
        coefficients = field.coefficients(u)
        basis = _frozen_trunk(field, points)

        def at(y):
            value, _, second = diff.derivatives(basis, y, 0, 2)
            return value, diff.derivative(basis, y, 1), second

        values, s_t, s_xx = jax.vmap(at)(points)
        s = jnp.einsum("fcp,qcp->fqc", coefficients, values) + field.bias[None, None]
        ds_t = jnp.einsum("fcp,qcp->fqc", coefficients, s_t)
        ds_xx = jnp.einsum("fcp,qcp->fqc", coefficients, s_xx)
        return (
            ds_t
            - self.diffusion * ds_xx
            - self.reaction * jnp.square(s)
            - source[..., None]
        )

    def _physics_sample(self, key, inputs):
        points_key, initial_key, boundary_key = jr.split(key, 3)
        dtype = inputs.dtype
        points = jr.uniform(points_key, (self.n_collocation, 2), dtype)
        n_initial = self.n_boundary // 3
        n_sides = self.n_boundary - n_initial
        x0 = jr.uniform(initial_key, (n_initial,), dtype)
        initial = jnp.stack([x0, jnp.zeros_like(x0)], axis=1)
        t = jr.uniform(boundary_key, (n_sides,), dtype)
        side = (jnp.arange(n_sides) % 2).astype(dtype)
        boundary = jnp.stack([side, t], axis=1)
        return {
            "points": points,
            "source": interpolate(inputs, points[:, 0]),
            "initial": initial,
            "boundary": boundary,
        }

    def _physics_loss(self, field, batch):
        residual = self.residual(field, batch["u"], batch["source"], batch["points"])
        trunk = sciinr.nn.freeze_statistics(field.trunk, batch["points"])
        frozen = eqx.tree_at(lambda o: o.trunk, field, trunk)
        coefficients = frozen.coefficients(batch["u"])
        initial = frozen.combine(coefficients, frozen.basis(batch["initial"]))
        boundary = frozen.combine(coefficients, frozen.basis(batch["boundary"]))
        terms = {
            "residual": jnp.mean(jnp.square(residual)),
            "initial": jnp.mean(jnp.square(initial)),
            "boundary": jnp.mean(jnp.square(boundary)),
        }
        return terms["residual"] + terms["initial"] + terms["boundary"], terms

    def coordinates(self) -> dict[str, Array]:
        """`function` (index of the test function), `x`, `t` (the grid),
        `channel`."""
        n_x, n_t = self.grid_shape
        dtype = self.data.test_points.dtype
        return {
            "function": jnp.arange(self.data.test_u.shape[0]),
            "x": jnp.linspace(0.0, 1.0, n_x, dtype=dtype),
            "t": jnp.linspace(0.0, 1.0, n_t, dtype=dtype),
            "channel": jnp.arange(1),
        }
