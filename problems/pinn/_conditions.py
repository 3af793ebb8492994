r"""Initial and boundary conditions: each draws its own points and has its own loss.

A condition is a pair of a sampler and a pointwise residual: its loss term is the
mean square of the residual over the points it draws every step,

$$\mathcal{L}_c = \frac{1}{N_c} \sum_{j} \lVert r_c(u, x_j) \rVert_2^2 .$$

The residuals get `u`, the solution as a function of ONE point (the field after the
problem's `output_transform`, with batch-norm statistics frozen), so they can
differentiate it with [`sciinr.diff`][].
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from sciinr import diff
from sciinr.checks import check_nonnegative_int, check_positive_int, check_real

from ._domain import Domain


Value = float | int | Callable[[Float[Array, " d"]], Array]
SIDES = ("both", "low", "high")


def _check_value(name: str, value: Any) -> Value:
    if callable(value):
        return value
    try:
        return check_real(name, value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a number or a function of one point x (shape (d,)) "
            f"returning the value there, got {type(value).__name__}."
        ) from None


def _evaluate(value: Value, x: Array) -> Array:
    if callable(value):
        return jnp.asarray(value(x), x.dtype)
    return jnp.asarray(value, x.dtype)


def _check_side(side: Any) -> str:
    if side not in SIDES:
        raise ValueError(
            f"Unknown `side` {side!r}. Valid values: {', '.join(map(repr, SIDES))}."
        )
    return side


class AbstractCondition(eqx.Module):
    """An initial or boundary condition of a [`problems.pinn.PDEProblem`][].

    Subclasses implement

    - `sample(key, domain, dtype) -> data`: the condition's points for one step (a
      pytree of arrays with a leading axis of length `n`), drawn on device;
    - `residual(u, data, domain) -> r`: the residual at ONE of those points (`data`
      without its leading axis), shape `()` or `(k,)`; zero where the condition
      holds;

    and have a `name` (its loss term, and its weight `weight_<name>` in the history)
    and a number of points `n`. `check(domain)` validates the condition against the
    domain when the problem is built.
    """

    name: eqx.AbstractVar[str]
    n: eqx.AbstractVar[int]

    def check(self, domain: Domain) -> None:
        """Raise a clear error if the condition does not fit `domain`."""
        del domain

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, domain: Domain, dtype) -> PyTree[Array]:
        """Draw this step's points (leading axis `n`)."""

    @abc.abstractmethod
    def residual(self, u: Callable, data: PyTree[Array], domain: Domain) -> Array:
        """The residual of the condition at one point."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"`name` must be an identifier (it names a loss term and the history "
            f"column `weight_<name>`), got {name!r}."
        )
    return name


class InitialCondition(AbstractCondition):
    r"""$\partial_t^{k} u(t_0, x) = g(x)$ at the start $t_0$ of the time interval.

    `order=0` (the default) fixes the initial value; `order=1` the initial velocity
    (a wave equation needs both: two conditions with different names). The points
    are drawn uniformly in space at $t = t_0$ every step.
    """

    value: Value
    n: int = eqx.field(static=True)
    order: int = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(self, value: Value, *, n: int = 256, order: int = 0, name: str = "ic"):
        """**Arguments:**

        - `value`: $g$: a number, or a function of one point `x` (the whole point,
          time included, in the domain's axis order) returning `()` or `(m,)`.
        - `n`: points per step. Keyword-only. Defaults to `256`.
        - `order`: the order $k$ of the time derivative. Keyword-only.
        - `name`: the loss term. Keyword-only. Defaults to `"ic"`.
        """
        self.value = _check_value("value", value)
        self.n = check_positive_int("n", n)
        self.order = check_nonnegative_int("order", order)
        self.name = _check_name(name)

    def check(self, domain: Domain) -> None:
        if domain.time_axis is None:
            raise ValueError(
                f"The initial condition {self.name!r} needs a time axis, but the "
                f"domain has the axes {list(domain.names)} and no time (name an axis "
                "'t', or pass `time=` to the problem)."
            )

    def sample(self, key, domain, dtype):
        t = domain.time_axis
        return domain.sample_at(key, self.n, t, domain.lows[t], dtype)

    def residual(self, u, data, domain):
        value = diff.derivative(u, data, domain.time_axis, self.order)
        return value - _evaluate(self.value, data)


class _FaceCondition(AbstractCondition):
    """Shared by the conditions on faces of the box: which faces, how many points."""

    axis: str | int | None = eqx.field(static=True)
    side: str = eqx.field(static=True)

    def _axes(self, domain: Domain) -> tuple[int, ...]:
        if self.axis is None:
            return domain.spatial_axes
        return (domain.axis(self.axis),)

    def check(self, domain: Domain) -> None:
        axes = self._axes(domain)
        if not axes:
            raise ValueError(
                f"The boundary condition {self.name!r} has no spatial axis to sit "
                f"on: the domain has the axes {list(domain.names)}, all of them time."
            )
        if domain.time_axis in axes:
            raise ValueError(
                f"The boundary condition {self.name!r} is on the time axis "
                f"{domain.time!r}; use an `InitialCondition` for t = t0."
            )

    def sample(self, key, domain, dtype):
        faces = domain.faces(self._axes(domain), self.side)
        return domain.sample_faces(key, self.n, faces, dtype)


class DirichletBC(_FaceCondition):
    r"""$u = g$ on faces of the box.

    With `axis=None` (the default) on every face of every spatial axis, the points
    spread over the faces in proportion to their measure; with `axis="x"` on the
    faces $x = a$ and $x = b$ (`side="both"`) or one of them.
    """

    value: Value
    n: int = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(
        self,
        value: Value = 0.0,
        *,
        axis: str | int | None = None,
        side: str = "both",
        n: int = 256,
        name: str | None = None,
    ):
        """**Arguments:**

        - `value`: $g$: a number, or a function of one point `x` (all coordinates)
          returning `()` or `(m,)`. Defaults to `0.0`.
        - `axis`: the axis (name or index) whose faces carry the condition, or `None`
          for all spatial axes. Keyword-only.
        - `side`: `"both"`, `"low"` or `"high"`. Keyword-only.
        - `n`: points per step. Keyword-only. Defaults to `256`.
        - `name`: the loss term. Keyword-only. Defaults to `"bc"` (`"bc_<axis>"`
          for one axis).

        **Raises:**

        `ValueError`/`TypeError` naming the argument for an unknown `side`, a value
        that is neither a number nor a function, or a bad `n`.
        """
        self.value = _check_value("value", value)
        self.axis = axis
        self.side = _check_side(side)
        self.n = check_positive_int("n", n)
        self.name = (
            _check_name("bc" if axis is None else f"bc_{axis}")
            if name is None
            else _check_name(name)
        )

    def sample(self, key, domain, dtype):
        points, _ = super().sample(key, domain, dtype)
        return points

    def residual(self, u, data, domain):
        return u(data) - _evaluate(self.value, data)


class NeumannBC(_FaceCondition):
    r"""$\partial u / \partial n = g$ (outward normal derivative) on faces of the
    box; faces as for [`problems.pinn.DirichletBC`][]."""

    value: Value
    n: int = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(
        self,
        value: Value = 0.0,
        *,
        axis: str | int | None = None,
        side: str = "both",
        n: int = 256,
        name: str | None = None,
    ):
        """**Arguments:** as for [`problems.pinn.DirichletBC`][]; `name` defaults
        to `"neumann"` (`"neumann_<axis>"` for one axis)."""
        self.value = _check_value("value", value)
        self.axis = axis
        self.side = _check_side(side)
        self.n = check_positive_int("n", n)
        default = "neumann" if axis is None else f"neumann_{axis}"
        self.name = _check_name(default if name is None else name)

    def residual(self, u, data, domain):
        x, normal = data
        gradient = diff.grad(u, x)  # (..., d)
        return gradient @ normal - _evaluate(self.value, x)


class PeriodicBC(AbstractCondition):
    r"""$\partial_x^k u(\dots, a, \dots) = \partial_x^k u(\dots, b, \dots)$ for
    $k = 0 \dots K$: a soft periodic condition along one axis.

    An exact alternative is a field built on [`sciinr.nn.PeriodicEmbedding`][],
    which is periodic by construction (then leave this condition out).
    """

    axis: str | int = eqx.field(static=True)
    n: int = eqx.field(static=True)
    derivatives: int = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(
        self,
        axis: str | int,
        *,
        derivatives: int = 1,
        n: int = 256,
        name: str | None = None,
    ):
        """**Arguments:**

        - `axis`: the periodic axis (name or index).
        - `derivatives`: the highest order $K$ of the derivatives matched across
          the period. Keyword-only. Defaults to `1` (value and slope, enough for
          second-order equations).
        - `n`: pairs of points per step. Keyword-only.
        - `name`: the loss term. Keyword-only. Defaults to `"periodic_<axis>"`.
        """
        self.axis = axis
        self.derivatives = check_nonnegative_int("derivatives", derivatives)
        self.n = check_positive_int("n", n)
        self.name = _check_name(f"periodic_{axis}" if name is None else name)

    def check(self, domain: Domain) -> None:
        axis = domain.axis(self.axis)
        if axis == domain.time_axis:
            raise ValueError(
                f"The periodic condition {self.name!r} is on the time axis "
                f"{domain.time!r}; periodic conditions are for spatial axes."
            )

    def sample(self, key, domain, dtype):
        axis = domain.axis(self.axis)
        low = domain.sample_at(key, self.n, axis, domain.lows[axis], dtype)
        high = low.at[:, axis].set(jnp.asarray(domain.highs[axis], dtype))
        return low, high

    def residual(self, u, data, domain):
        low, high = data
        axis = domain.axis(self.axis)
        at_low = diff.derivatives(u, low, axis, self.derivatives)
        at_high = diff.derivatives(u, high, axis, self.derivatives)
        return (at_low - at_high).reshape(-1)


BOUNDARY_CONDITIONS: dict[str, type[AbstractCondition]] = {
    "dirichlet": DirichletBC,
    "neumann": NeumannBC,
    "periodic": PeriodicBC,
}
"""The boundary condition types by name, for configuration files and CLIs."""


def boundary_condition(
    kind: str, axis: str | int | None = None, **kwargs
) -> AbstractCondition:
    """A boundary condition from its type name (`"dirichlet"`, `"neumann"`,
    `"periodic"`), for command-line and configuration use.

    **Arguments:**

    - `kind`: the type name, a key of `BOUNDARY_CONDITIONS`.
    - `axis`: the axis, passed on.
    - `**kwargs`: passed to the condition's constructor (`value=`, `side=`, `n=`,
      `name=`, ...).

    **Raises:**

    `ValueError` listing the valid names for an unknown `kind`.
    """
    from sciinr.checks import resolve_option

    cls = resolve_option("kind", kind, BOUNDARY_CONDITIONS)
    if cls is PeriodicBC:
        if axis is None:
            raise ValueError("A periodic boundary condition needs an `axis`.")
        return PeriodicBC(axis, **kwargs)
    return cls(axis=axis, **kwargs)
