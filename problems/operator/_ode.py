r"""Operators defined by an ODE on $[0, 1]$: the antiderivative, a nonlinear ODE and
the forced pendulum."""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

import sciinr
from sciinr import diff
from sciinr.checks import check_positive_int, check_real
from sciinr.nn import DeepONet

from . import _solvers
from ._cache import resolve_cache
from ._dataset import generate
from ._grf import interpolate
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


class AbstractODEOperator(AbstractOperatorProblem):
    r"""An operator defined by an ODE on $[0, 1]$, $s' = f(s, u(x))$, $s(0) = 0$.

    Data-driven, the targets are the reference solutions at `n_points` equispaced
    query points (by default the sensors), shared by all functions. Physics-informed,
    the loss is the mean squared residual $G_\theta(u)'(x) - f(G_\theta(u)(x),
    u(x))$ at collocation points $x \sim \mathcal{U}[0, 1]$ (the derivative through
    [`sciinr.diff`][] on the trunk, whose statistics are frozen on the collocation
    points first) plus the mean squared initial value $G_\theta(u)(0)^2$.
    """

    @property
    def in_size(self) -> int:
        """`1`: the query point is $x$ (or $t$)."""
        return 1

    @abc.abstractmethod
    def rhs(
        self, s: Float[Array, "*batch c"], u: Float[Array, " *batch"]
    ) -> Float[Array, "*batch c"]:
        """The right-hand side $f(s, u)$ of the ODE, pointwise."""

    def residual(
        self,
        field: DeepONet,
        u: Float[Array, "f m"],
        source: Float[Array, "f q"],
        points: Float[Array, "q 1"],
    ) -> Float[Array, "f q c"]:
        """The ODE residual $G_\\theta(u)'(x) - f(G_\\theta(u)(x), u(x))$.

        **Arguments:**

        - `field`: a [`sciinr.nn.DeepONet`][].
        - `u`: the functions at the sensors, `(F, m)`.
        - `source`: the functions at the points, $u(x_q)$, `(F, Q)`.
        - `points`: the points $x_q$, `(Q, 1)`.

        **Returns:**

        The residual, `(F, Q, c)`: zero for the exact solution operator.
        """
        field = self.check_field(field)
        coefficients = field.coefficients(u)
        basis = _frozen_trunk(field, points)
        # The basis and its slope at every point, in one forward-mode pass each.
        values, slopes = jax.vmap(lambda y: diff.derivatives(basis, y, 0, 1))(
            points
        ).swapaxes(0, 1)
        s = jnp.einsum("fcp,qcp->fqc", coefficients, values) + field.bias[None, None]
        ds = jnp.einsum("fcp,qcp->fqc", coefficients, slopes)
        return ds - self.rhs(s, source)

    def _physics_sample(self, key, inputs):
        points = jr.uniform(key, (self.n_collocation, 1), inputs.dtype)
        return {"points": points, "source": interpolate(inputs, points[:, 0])}

    def _physics_loss(self, field, batch):
        residual = self.residual(field, batch["u"], batch["source"], batch["points"])
        trunk = sciinr.nn.freeze_statistics(field.trunk, batch["points"])
        start = eqx.tree_at(lambda o: o.trunk, field, trunk).aligned(
            batch["u"], jnp.zeros((1, 1), batch["points"].dtype)
        )
        terms = {
            "residual": jnp.mean(jnp.square(residual)),
            "initial": jnp.mean(jnp.square(start)),
        }
        return terms["residual"] + terms["initial"], terms

    def coordinates(self) -> dict[str, Array]:
        """`function` (index of the test function), `x` (the query grid),
        `channel`."""
        return {
            "function": jnp.arange(self.data.test_u.shape[0]),
            "x": self.data.test_points[:, 0],
            "channel": jnp.arange(self.out_size),
        }


def _frozen_trunk(field: DeepONet, points: Array):
    """The trunk as a pointwise function `y -> (c, p)`, its batch-norm statistics
    frozen on `points` (before any derivative with respect to `y`)."""
    trunk = sciinr.nn.freeze_statistics(field.trunk, points)
    shape = (field.out_size, field.n_basis)
    return lambda y: trunk(y).reshape(shape)


def _ode_problem(
    name: str,
    constants: dict[str, Any],
    solve,
    *,
    options: dict[str, Any],
    n_points: int | None,
    physics: bool,
    cache: CacheArgument,
    key: PRNGKeyArray,
) -> tuple[OperatorData, tuple[int, int], tuple[int, ...]]:
    space = _space(options)
    sensors = _sensors(space, options["n_sensors"])
    points = sensors if n_points is None else np.linspace(0.0, 1.0, n_points)
    folder = resolve_cache(cache)
    train_key, test_key = jr.split(_key(key))
    parameters = {
        **constants,
        "points": {"n": len(points), "sensors": n_points is None},
    }

    def solver(inputs, _):
        targets, ok = solve(inputs, points)
        return {"targets": targets}, ok

    train = generate(
        name,
        {**parameters, "split": "train"},
        space,
        options["n_train"],
        train_key,
        None if physics else solver,
        folder,
        stacklevel=4,
    )
    test = generate(
        name,
        {**parameters, "split": "test"},
        space,
        options["n_test"],
        test_key,
        solver,
        folder,
        stacklevel=4,
    )
    dtype = jnp.result_type(float)
    grid = jnp.asarray(points[:, None], dtype)
    data = OperatorData(
        sensors=jnp.asarray(sensors, dtype),
        train_u=_at_sensors(train.arrays["inputs"], sensors),
        train_inputs=jnp.asarray(train.arrays["inputs"], dtype) if physics else None,
        train_points=None if physics else grid,
        train_targets=None if physics else jnp.asarray(train.arrays["targets"], dtype),
        test_u=_at_sensors(test.arrays["inputs"], sensors),
        test_points=grid,
        test_targets=jnp.asarray(test.arrays["targets"], dtype),
        reference_points=grid,
    )
    return data, (train.dropped, test.dropped), (len(points),)


_ODE_ARGUMENTS = """
        - `length_scale`: the length scale $l$ of the input functions' RBF (or
          periodic) kernel. Keyword-only. Defaults to `0.2` (the papers).
        - `kernel`: `"rbf"` or `"periodic"` (see
          [`problems.operator.gaussian_random_field`][]). Keyword-only.
        - `variance`: the kernel's variance $\\sigma^2$. Keyword-only.
        - `n_sensors`: the number $m$ of equispaced sensors on $[0, 1]$ (both ends
          included) at which the branch sees the input. Keyword-only. Defaults to
          `100`.
        - `refine`: the input functions are sampled on a fine grid with `refine`
          intervals per sensor interval and are piecewise linear in between; the
          solver steps on that grid. Keyword-only. Defaults to `10`.
        - `n_train`, `n_test`: the numbers of training and test input functions.
          Keyword-only.
        - `n_points`: the number of equispaced query points on $[0, 1]$ at which
          every function's target is known (training) and evaluated (test);
          `None` (default) uses the sensor locations. Keyword-only.
        - `physics`: physics-informed training (residual + initial value, no target
          data). Keyword-only. Defaults to `False`.
        - `batch_size`: the number of training functions per step (each with all its
          query points, or with `n_collocation` collocation points). Keyword-only.
          Defaults to `100` (with 100 points, the 10,000 pairs per step of the
          papers); `None` trains on all functions in every step (full batch).
        - `n_collocation`: collocation points per step (physics-informed), shared by
          the batch's functions. Keyword-only. Defaults to `100`.
        - `cache`: the folder of the dataset cache; `True` (default) uses the
          per-user folder `$XDG_CACHE_HOME/sciinr/operator` (or
          `~/.cache/sciinr/operator`), `None` turns caching off. Keyword-only.
        - `chunk_size`: evaluate the test grid in chunks of this many points and
          functions (bounded memory); `None` evaluates at once. Keyword-only.
        - `key`: a JAX PRNG key for the training and test functions. Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the argument for a non-positive
        `length_scale`, `variance` or count, an unknown `kernel`, fewer than 2
        sensors, or a key that is not a typed PRNG key.
"""


class Antiderivative(AbstractODEOperator):
    r"""The antiderivative operator: $u \mapsto s$ with $s'(x) = u(x)$, $s(0) = 0$,
    $x \in [0, 1]$.

    The classic linear benchmark (Lu et al. 2021; Wang et al. 2021): input functions
    from a Gaussian random field with length scale $l = 0.2$, $m = 100$ sensors.
    Reference errors (10,000 training functions, 40,000 iterations): relative $L^2$
    $5.0 \times 10^{-3}$ data-driven, $2.5 \times 10^{-3}$ physics-informed.
    """

    data: OperatorData
    batch_size: int | None = eqx.field(static=True)
    n_collocation: int = eqx.field(static=True)
    physics: bool = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    grid_shape: tuple[int, ...] = eqx.field(static=True)
    dropped: tuple[int, int] = eqx.field(static=True)

    def __init__(
        self,
        *,
        length_scale: float = 0.2,
        kernel: str = "rbf",
        variance: float = 1.0,
        n_sensors: int = 100,
        refine: int = 10,
        n_train: int = 10_000,
        n_test: int = 1_000,
        n_points: int | None = None,
        physics: bool = False,
        batch_size: int | None = 100,
        n_collocation: int = 100,
        cache: CacheArgument = True,
        chunk_size: int | None = None,
        key: PRNGKeyArray,
    ):
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
        self.data, self.dropped, self.grid_shape = _ode_problem(
            "antiderivative",
            {},
            _solvers.antiderivative,
            options=options,
            n_points=_check_points(n_points),
            physics=bool(physics),
            cache=cache,
            key=key,
        )
        self.batch_size = options["batch_size"]
        self.n_collocation = options["n_collocation"]
        self.physics = bool(physics)
        self.chunk_size = options["chunk_size"]

    @property
    def out_size(self) -> int:
        """`1`: $s$."""
        return 1

    def rhs(self, s, u):
        """$f(s, u) = u$."""
        return jnp.broadcast_to(u[..., None], s.shape)


def _check_points(n_points: Any) -> int | None:
    if n_points is None:
        return None
    n_points = check_positive_int("n_points", n_points)
    if n_points < 2:
        raise ValueError(f"`n_points` must be at least 2, got {n_points}.")
    return n_points


class NonlinearODE(AbstractODEOperator):
    r"""A nonlinear ODE operator: $u \mapsto s$ with $s'(x) = -s(x)^2 + u(x)$,
    $s(0) = 0$, $x \in [0, 1]$ (Lu et al. 2021).

    For strongly negative inputs the solution blows up in finite time ($s' \approx
    -s^2$ once $s$ is large and negative); such input functions (about 1 in 1,000
    with the defaults) are dropped and replaced, with a
    [`problems.operator.DroppedSamplesWarning`][].
    """

    data: OperatorData
    batch_size: int | None = eqx.field(static=True)
    n_collocation: int = eqx.field(static=True)
    physics: bool = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    grid_shape: tuple[int, ...] = eqx.field(static=True)
    dropped: tuple[int, int] = eqx.field(static=True)

    def __init__(
        self,
        *,
        length_scale: float = 0.2,
        kernel: str = "rbf",
        variance: float = 1.0,
        n_sensors: int = 100,
        refine: int = 10,
        n_train: int = 10_000,
        n_test: int = 1_000,
        n_points: int | None = None,
        physics: bool = False,
        batch_size: int | None = 100,
        n_collocation: int = 100,
        cache: CacheArgument = True,
        chunk_size: int | None = None,
        key: PRNGKeyArray,
    ):
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
        self.data, self.dropped, self.grid_shape = _ode_problem(
            "nonlinear_ode",
            {},
            _solvers.nonlinear_ode,
            options=options,
            n_points=_check_points(n_points),
            physics=bool(physics),
            cache=cache,
            key=key,
        )
        self.batch_size = options["batch_size"]
        self.n_collocation = options["n_collocation"]
        self.physics = bool(physics)
        self.chunk_size = options["chunk_size"]

    @property
    def out_size(self) -> int:
        """`1`: $s$."""
        return 1

    def rhs(self, s, u):
        """$f(s, u) = -s^2 + u$."""
        return -jnp.square(s) + u[..., None]


class Pendulum(AbstractODEOperator):
    r"""The gravity pendulum with an external force: $u \mapsto (s_1, s_2)$ with

    $$s_1'(t) = s_2(t), \qquad s_2'(t) = -k \sin s_1(t) + u(t), \qquad
    s(0) = 0, \quad t \in [0, 1]$$

    (Lu et al. 2021), $k = 1$ by default. The DeepONet outputs both the angle $s_1$
    and the angular velocity $s_2$ (`out_size = 2`: the branch's and the trunk's
    features are split in two groups).
    """

    data: OperatorData
    batch_size: int | None = eqx.field(static=True)
    n_collocation: int = eqx.field(static=True)
    physics: bool = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    grid_shape: tuple[int, ...] = eqx.field(static=True)
    dropped: tuple[int, int] = eqx.field(static=True)
    k: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        k: float = 1.0,
        length_scale: float = 0.2,
        kernel: str = "rbf",
        variance: float = 1.0,
        n_sensors: int = 100,
        refine: int = 10,
        n_train: int = 10_000,
        n_test: int = 1_000,
        n_points: int | None = None,
        physics: bool = False,
        batch_size: int | None = 100,
        n_collocation: int = 100,
        cache: CacheArgument = True,
        chunk_size: int | None = None,
        key: PRNGKeyArray,
    ):
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
        self.k = check_real("k", k)
        self.data, self.dropped, self.grid_shape = _ode_problem(
            "pendulum",
            {"k": self.k},
            lambda inputs, points: _solvers.pendulum(inputs, points, k=self.k),
            options=options,
            n_points=_check_points(n_points),
            physics=bool(physics),
            cache=cache,
            key=key,
        )
        self.batch_size = options["batch_size"]
        self.n_collocation = options["n_collocation"]
        self.physics = bool(physics)
        self.chunk_size = options["chunk_size"]

    @property
    def out_size(self) -> int:
        """`2`: the angle $s_1$ and the angular velocity $s_2$."""
        return 2

    def rhs(self, s, u):
        r"""$f(s, u) = (s_2, -k \sin s_1 + u)$."""
        return jnp.stack([s[..., 1], -self.k * jnp.sin(s[..., 0]) + u], axis=-1)


_K_ARGUMENT = """
        - `k`: the gravity constant $k$. Keyword-only. Defaults to `1.0`."""

Antiderivative.__init__.__doc__ = "**Arguments:**\n" + _ODE_ARGUMENTS
NonlinearODE.__init__.__doc__ = "**Arguments:**\n" + _ODE_ARGUMENTS
Pendulum.__init__.__doc__ = "**Arguments:**\n" + _K_ARGUMENT + _ODE_ARGUMENTS
