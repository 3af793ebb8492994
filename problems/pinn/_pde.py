r"""`PDEProblem`: the generic physics-informed residual problem."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from sciinr import AbstractProblem
from sciinr.checks import check_finite_array, check_positive_int
from sciinr.metrics import relative_l2
from sciinr.nn import apply, freeze_statistics, trainable

from ._conditions import AbstractCondition
from ._domain import Domain
from ._weighting import AbstractWeighting, Causal, FixedWeights, GradNorm


Scalar = Float[Array, ""]
Residual = Callable[[Callable[[Array], Array], Float[Array, " d"]], Array]
Transform = Callable[[Float[Array, " d"], Float[Array, " m"]], Float[Array, " m"]]

RESIDUAL = "res"
"""The name of the PDE residual's loss term (and of its weight, `weight_res`)."""


class Reference(eqx.Module):
    """A reference solution on a grid: the axes and the values there.

    `values[i, j, ...]` is the solution at `(axes[0][i], axes[1][j], ...)`, with a
    trailing component axis for systems (`out_size > 1`).
    """

    axes: tuple[Float[Array, " _"], ...]
    values: Float[Array, "..."]

    def __init__(self, axes: Sequence[Any], values: Any):
        """**Arguments:**

        - `axes`: one 1-D array of coordinates per axis of the domain, in order.
        - `values`: the solution on the grid, shape `(n_1, ..., n_d)` or
          `(n_1, ..., n_d, m)`.

        **Raises:**

        `ValueError` naming the argument for NaN/inf, axes that are not 1-D, or
        values whose shape does not match the axes.
        """
        dtype = jnp.result_type(float)
        axes = [
            check_finite_array(f"reference axes[{i}]", a) for i, a in enumerate(axes)
        ]
        for i, a in enumerate(axes):
            if a.ndim != 1 or a.shape[0] == 0:
                raise ValueError(
                    f"Reference axis {i} must be a non-empty 1-D array, got shape "
                    f"{a.shape}."
                )
        values = check_finite_array("reference values", values)
        grid = tuple(a.shape[0] for a in axes)
        if values.shape[: len(grid)] != grid or values.ndim > len(grid) + 1:
            raise ValueError(
                f"The reference values must have shape {grid} or {grid} + (m,) (one "
                f"per grid point), got {values.shape}."
            )
        self.axes = tuple(jnp.asarray(a, dtype) for a in axes)
        self.values = jnp.asarray(values, dtype)

    @classmethod
    def from_function(
        cls, solution: Callable[[Float[Array, " d"]], Array], axes: Sequence[Any]
    ) -> "Reference":
        """The reference of an exact `solution(x)` (one point `(d,)` to `()` or
        `(m,)`) on the grid of `axes`."""
        axes = [np.asarray(a, np.float64) for a in axes]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        points = jnp.asarray(mesh.reshape(-1, len(axes)), jnp.result_type(float))
        values = np.asarray(jax.vmap(solution)(points))
        return cls(axes, values.reshape(mesh.shape[:-1] + values.shape[1:]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.shape[0] for a in self.axes)

    def points(self) -> Float[Array, "n d"]:
        """The grid points, flattened in row-major order, shape `(n, d)`."""
        mesh = jnp.meshgrid(*self.axes, indexing="ij")
        return jnp.stack(mesh, axis=-1).reshape(-1, len(self.axes))


class _Solution(eqx.Module):
    """The solution as a function of one point: the field, then the transform."""

    field: Any
    transform: Transform | None
    out_size: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " m"]:
        y = self.field(x)
        if y.shape != (self.out_size,):
            raise ValueError(
                f"`field` must return {self.out_size} value(s) per point (the "
                f"problem's `out_size`), got shape {y.shape}. Build it with "
                f"`out_size={self.out_size}`."
            )
        if self.transform is None:
            return y
        z = self.transform(x, y)
        if getattr(z, "shape", None) != (self.out_size,):
            raise ValueError(
                f"`output_transform(x, u)` must return shape ({self.out_size},), got "
                f"{getattr(z, 'shape', type(z).__name__)}."
            )
        return z


def _check_residual_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) > 1:
        raise ValueError(
            f"{what} must return the residual at ONE point, of shape () or (k,), got "
            f"shape {shape}. It is called per point (the problem vmaps it): index "
            "the solution with `u(x)[0]`, not `u(xs)`."
        )


class PDEProblem(AbstractProblem):
    r"""A physics-informed residual problem: fit $u_\theta$ so that a PDE holds.

    For a residual $\mathcal{R}[u](x)$ on a box domain $\Omega$ (space, and time
    when one axis is called `"t"`), and conditions $c$ (initial, Dirichlet, Neumann,
    periodic, ...), the loss is

    $$\mathcal{L}(\theta) = \lambda_{r}\, \mathcal{L}_r + \sum_c \lambda_c\,
    \mathcal{L}_c, \qquad \mathcal{L}_r = \frac{1}{N} \sum_{j=1}^{N}
    \big\lVert \mathcal{R}[u_\theta](x_j) \big\rVert^2 ,$$

    with $N$ collocation points drawn uniformly in $\Omega$ on device at every step,
    and every condition drawing its own points. The terms are named `"res"` and by
    the conditions' names; the weights $\lambda$ are problem state
    (`state["weight"]`), balanced by gradient norms by default
    ([`problems.pinn.GradNorm`][]) or fixed ([`problems.pinn.FixedWeights`][]), and
    recorded in the history as `weight_<term>`. With `causal=`, $\mathcal{L}_r$ is
    weighted causally over time chunks ([`problems.pinn.Causal`][]); the weight of
    the last chunk (the smallest) is reported as the diagnostic `causal_weight` next
    to the loss terms (it is not added to the loss).

    The residual is a function of the solution and ONE point, written with
    [`sciinr.diff`][]:

    ```python
    def heat(u, x):                          # u_t = 0.1 u_xx at x = (t, x)
        u_t = sciinr.diff.derivative(u, x, 0)
        u_xx = sciinr.diff.derivative(u, x, 1, order=2)
        return u_t - 0.1 * u_xx
    ```

    where `u(x)` returns the `out_size` components at a point: the field, followed
    by `output_transform(x, u)` when given (hard constraints, e.g.
    `lambda x, u: (1 - x[1] ** 2) * u` for zero Dirichlet values at $x = \pm 1$).

    **Batch normalization.** A field with [`sciinr.nn.CoordinateBatchNorm`][] is a
    function of its whole coordinate batch. In the loss its statistics are frozen on
    the step's collocation points ([`sciinr.nn.freeze_statistics`][], differentiable
    in the parameters) before any derivative is taken: the residual is that of the
    pointwise function the batch defines, its coordinate derivatives are exact
    pointwise derivatives, and the conditions and the evaluation use the same kind
    of frozen function (for `evaluate`/`predict`, frozen on a fixed draw of $N$
    collocation points, from `jax.random.key(0)`).

    **Metrics.** With a `reference`, `evaluate` returns the relative $L^2$ error
    `rel_l2` on its grid, and `predict` returns `prediction`, `reference` and `error`
    (prediction minus reference) there, labelled by `coordinates()` (the axis
    names). Shapes are the grid's, with a trailing component axis only for systems.
    """

    residual: Residual
    domain: Domain
    conditions: tuple[AbstractCondition, ...]
    weighting: AbstractWeighting
    causal: Causal | None
    output_transform: Transform | None
    reference: Reference | None
    fixed_key: PRNGKeyArray | None
    out_size: int = eqx.field(static=True)
    n_collocation: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)

    def __init__(
        self,
        residual: Residual,
        domain: Mapping[str, Sequence[float]] | Domain,
        *,
        conditions: Sequence[AbstractCondition] = (),
        out_size: int = 1,
        n_collocation: int = 4096,
        weighting: AbstractWeighting | None = None,
        causal: Causal | None = None,
        output_transform: Transform | None = None,
        reference: Reference | None = None,
        time: str | None = "t",
        chunk_size: int = 65_536,
    ):
        """**Main arguments:**

        - `residual`: `residual(u, x)`, the PDE residual at ONE point `x` (shape
          `(d,)`, in the domain's axis order) of the solution `u` (a function of one
          point returning `(out_size,)`); returns `()` or `(k,)`, zero where the PDE
          holds.
        - `domain`: `{axis name: (low, high)}` in coordinate order, e.g.
          `{"t": (0, 1), "x": (-1, 1)}`, or a [`problems.pinn.Domain`][].
        - `conditions`: initial and boundary conditions
          ([`problems.pinn.InitialCondition`][], [`problems.pinn.DirichletBC`][],
          [`problems.pinn.NeumannBC`][], [`problems.pinn.PeriodicBC`][] or your own
          [`problems.pinn.AbstractCondition`][]), each with its own loss term.
          Keyword-only.
        - `out_size`: the number of solution components. Keyword-only.
        - `n_collocation`: collocation points per step. Keyword-only. Defaults to
          `4096`.
        - `weighting`: [`problems.pinn.GradNorm`][] (the default: refreshed every
          1000 steps, momentum 0.9) or [`problems.pinn.FixedWeights`][].
          Keyword-only.
        - `causal`: [`problems.pinn.Causal`][] for causal weighting over time
          chunks, or `None`. Keyword-only.
        - `output_transform`: `output_transform(x, u) -> u` at one point, for hard
          constraints. Keyword-only.
        - `reference`: a [`problems.pinn.Reference`][] for `evaluate`/`predict`.
          Keyword-only.

        **Other arguments:**

        - `time`: the name of the time axis (see [`problems.pinn.Domain`][]).
          Keyword-only.
        - `chunk_size`: points per chunk when evaluating on the reference grid.
          Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the argument, before anything is compiled:
        for an empty or inverted domain, conditions that are not conditions or
        share a name (or do not fit the domain: an initial condition without time,
        a boundary condition on the time axis, an unknown axis), a residual (or a
        condition) that does not return shape `()` or `(k,)` at one point, a
        `n_collocation` that the causal chunks do not divide, or a reference whose
        grid does not match the domain.
        """
        if not callable(residual):
            raise TypeError(
                "`residual` must be a function residual(u, x) of the solution u and "
                f"one point x, got {type(residual).__name__}."
            )
        self.residual = residual
        self.domain = (
            domain if isinstance(domain, Domain) else Domain(domain, time=time)
        )
        self.out_size = check_positive_int("out_size", out_size)
        self.n_collocation = check_positive_int("n_collocation", n_collocation)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.dtype = jnp.result_type(float)

        conditions = tuple(conditions)
        names = [RESIDUAL]
        for i, condition in enumerate(conditions):
            if not isinstance(condition, AbstractCondition):
                raise TypeError(
                    f"`conditions[{i}]` must be a condition (InitialCondition, "
                    "DirichletBC, NeumannBC, PeriodicBC or a subclass of "
                    f"AbstractCondition), got {type(condition).__name__}. For a "
                    "boundary type given by name use "
                    "`problems.pinn.boundary_condition(kind, axis)`."
                )
            if condition.name in names:
                raise ValueError(
                    f"`conditions[{i}]` is named {condition.name!r}, like another "
                    f"loss term ({names}); pass `name=` to tell them apart."
                )
            condition.check(self.domain)
            names.append(condition.name)
        self.conditions = conditions

        if weighting is None:
            weighting = GradNorm()
        if not isinstance(weighting, AbstractWeighting):
            raise TypeError(
                "`weighting` must be `GradNorm(...)` or `FixedWeights(...)`, got "
                f"{type(weighting).__name__}."
            )
        weighting.init(tuple(names), self.dtype)  # checks the names it refers to
        self.weighting = weighting

        if causal is not None:
            if not isinstance(causal, Causal):
                raise TypeError(
                    f"`causal` must be `Causal(epsilon, chunks)` or None, got "
                    f"{type(causal).__name__}."
                )
            if self.domain.time_axis is None:
                raise ValueError(
                    "`causal` weighting needs a time axis, but the domain has the "
                    f"axes {list(self.domain.names)} and no time."
                )
            if self.n_collocation % causal.chunks:
                raise ValueError(
                    f"`n_collocation` ({self.n_collocation}) must be a multiple of "
                    f"the number of causal chunks ({causal.chunks})."
                )
        self.causal = causal
        if output_transform is not None and not callable(output_transform):
            raise TypeError(
                "`output_transform` must be a function (x, u) -> u or None, got "
                f"{type(output_transform).__name__}."
            )
        self.output_transform = output_transform

        if reference is not None:
            if not isinstance(reference, Reference):
                raise TypeError(
                    "`reference` must be a `problems.pinn.Reference` (axes and "
                    f"values) or None, got {type(reference).__name__}."
                )
            if len(reference.axes) != self.domain.ndim:
                raise ValueError(
                    f"`reference` has {len(reference.axes)} axes, but the domain "
                    f"has {self.domain.ndim} ({list(self.domain.names)})."
                )
            components = reference.values.shape[len(reference.axes) :]
            if components not in ((), (self.out_size,)) or (
                components == () and self.out_size != 1
            ):
                raise ValueError(
                    f"`reference` values have components {components}, but the "
                    f"problem has `out_size={self.out_size}`."
                )
            if components == (1,):  # one component: the grid's shape, no trailing 1
                reference = eqx.tree_at(
                    lambda r: r.values, reference, reference.values[..., 0]
                )
        self.reference = reference
        self.fixed_key = None
        self._check_shapes()

    # -- construction-time checks ----------------------------------------------------

    def _check_shapes(self) -> None:
        """Trace the residual and the conditions abstractly (no compilation) with a
        smooth stand-in for the solution, to catch shape errors now."""
        m, d, dtype = self.out_size, self.domain.ndim, self.dtype

        def stand_in(x):
            return jnp.sin(jnp.sum(x)) * jnp.ones((m,), x.dtype)

        x = jax.ShapeDtypeStruct((d,), dtype)
        if self.output_transform is not None:
            jax.eval_shape(_Solution(stand_in, self.output_transform, m), x)
        shape = jax.eval_shape(lambda x: self.residual(stand_in, x), x).shape
        _check_residual_shape(shape, "`residual(u, x)`")
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        for c in self.conditions:
            value = getattr(c, "value", None)
            if callable(value):
                shape = jax.eval_shape(value, x).shape
                if shape not in ((), (m,)):
                    raise ValueError(
                        f"The value of the condition {c.name!r} must be a function "
                        f"of one point returning shape () or ({m},), got {shape}."
                    )
            data = jax.eval_shape(lambda k: c.sample(k, self.domain, dtype), key)
            one = jtu.tree_map(
                lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), data
            )
            shape = jax.eval_shape(
                lambda one: c.residual(stand_in, one, self.domain), one
            ).shape
            _check_residual_shape(shape, f"The condition {c.name!r}")

    # -- what the trainer calls ------------------------------------------------------

    @property
    def term_names(self) -> tuple[str, ...]:
        """The loss terms: `"res"` and the conditions' names, in order."""
        return (RESIDUAL, *(c.name for c in self.conditions))

    @property
    def in_size(self) -> int:
        """The coordinate dimension a field must take."""
        return self.domain.ndim

    def solution(self, field: Any) -> _Solution:
        """The solution `u(x)` at one point: `field`, then `output_transform`."""
        return _Solution(field, self.output_transform, self.out_size)

    def sample(self, key: PRNGKeyArray) -> dict[str, PyTree[Array]]:
        """This step's points: `{"res": (n_collocation, d), <condition>: data}`,
        drawn on device (always the same points after `full_batch`)."""
        if self.fixed_key is not None:
            key = self.fixed_key
        keys = jr.split(key, len(self.conditions) + 1)
        chunks = None if self.causal is None else self.causal.chunks
        batch = {
            RESIDUAL: self.domain.sample(
                keys[0], self.n_collocation, self.dtype, chunks=chunks
            )
        }
        for k, c in zip(keys[1:], self.conditions):
            batch[c.name] = c.sample(k, self.domain, self.dtype)
        return batch

    def terms(
        self, field: Any, batch: dict[str, PyTree[Array]]
    ) -> tuple[dict[str, Scalar], dict[str, Scalar]]:
        """The unweighted loss terms, and diagnostics (`causal_weight`).

        Batch-norm statistics are frozen on `batch["res"]` first.
        """
        xs = batch[RESIDUAL]
        u = self.solution(freeze_statistics(field, xs))
        r = jax.vmap(lambda x: self.residual(u, x))(xs)
        squared = jnp.square(r).reshape(xs.shape[0], -1).mean(axis=1)
        extras = {}
        if self.causal is None:
            terms = {RESIDUAL: jnp.mean(squared)}
        else:
            chunk_losses = squared.reshape(self.causal.chunks, -1).mean(axis=1)
            loss, weights = self.causal.loss(chunk_losses)
            terms = {RESIDUAL: loss}
            extras["causal_weight"] = weights[-1]
        for c in self.conditions:
            rc = jax.vmap(lambda data: c.residual(u, data, self.domain))(batch[c.name])
            terms[c.name] = jnp.mean(jnp.square(rc))
        return terms, extras

    def init_state(self) -> dict[str, dict[str, Scalar]]:
        """`{"weight": {term: weight}}`, from the weighting's initial values."""
        return {"weight": self.weighting.init(self.term_names, self.dtype)}

    def update_state(
        self,
        field: Any,
        batch: dict[str, PyTree[Array]],
        state: dict[str, Any],
        step: Int[Array, ""],
    ) -> dict[str, Any]:
        """Refresh the weights (grad-norm balancing at its refresh steps only)."""
        params, static = eqx.partition(field, trainable(field))

        def terms(p):
            return self.terms(eqx.combine(p, static), batch)[0]

        weights = self.weighting.update(state["weight"], terms, params, step)
        return {**state, "weight": weights}

    def loss(
        self, field: Any, batch: dict[str, PyTree[Array]], state: dict[str, Any]
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """$\\sum_i \\lambda_i \\mathcal{L}_i$ with the weights of `state`, and the
        terms (plus `causal_weight` with causal weighting)."""
        terms, extras = self.terms(field, batch)
        weights = state["weight"]
        total = sum(weights[name] * value for name, value in terms.items())
        return total, {**terms, **extras}

    # -- evaluation ------------------------------------------------------------------

    def _evaluation_field(self, field: Any) -> _Solution:
        xs = self.domain.sample(jr.key(0), self.n_collocation, self.dtype)
        return self.solution(freeze_statistics(field, xs))

    def values_on(self, field: Any, points: Float[Array, "n d"]) -> Array:
        """The solution at `points` (chunked, batch-norm statistics frozen)."""
        return apply(self._evaluation_field(field), points, chunk_size=self.chunk_size)

    def _prediction(self, field: Any) -> tuple[Array, Array]:
        reference = self.reference
        values = self.values_on(field, reference.points())
        target = reference.values
        return values.reshape(target.shape), target

    def evaluate(self, field: Any) -> dict[str, Scalar]:
        """`{"rel_l2": ...}`: the relative $L^2$ error on the reference grid (no
        metrics without a reference)."""
        if self.reference is None:
            return {}
        prediction, target = self._prediction(field)
        return {"rel_l2": relative_l2(prediction, target)}

    def predict(self, field: Any) -> dict[str, Array]:
        """`prediction`, `reference` and `error` (prediction minus reference) on the
        reference grid (nothing without a reference)."""
        if self.reference is None:
            return {}
        prediction, target = self._prediction(field)
        return {
            "prediction": prediction,
            "reference": target,
            "error": prediction - target,
        }

    def coordinates(self) -> dict[str, Array]:
        """The reference grid's axes, by the domain's axis names."""
        if self.reference is None:
            return {}
        return dict(zip(self.domain.names, self.reference.axes))

    # -- variants ----------------------------------------------------------------------

    def full_batch(
        self,
        key: PRNGKeyArray,
        weights: Mapping[str, Any] | None = None,
    ) -> "PDEProblem":
        """This problem as one deterministic objective, e.g. for L-BFGS.

        The returned problem draws the same points at every step (those of `key`),
        uses fixed weights (`weights`, e.g. `result.problem_state["weight"]` after an
        Adam stage; the current initial weights by default) and no causal weighting
        (whose weights, constants for the gradient, would change the objective under
        a line search).
        """
        if weights is None:
            weights = {
                name: float(w)
                for name, w in self.weighting.init(self.term_names, self.dtype).items()
            }
        fixed = FixedWeights({k: float(np.asarray(v)) for k, v in weights.items()})
        fixed.init(self.term_names, self.dtype)
        return eqx.tree_at(
            lambda p: (p.fixed_key, p.weighting, p.causal),
            self,
            (key, fixed, None),
            is_leaf=lambda x: x is None,
        )
