"""The box domain of a PDE problem: named axes, bounds, and sampling on device."""

import math
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from sciinr.checks import check_real


class Domain(eqx.Module):
    r"""A box $\prod_i [a_i, b_i]$ in space (and time), with named axes.

    The axes are named (`"t"`, `"x"`, `"y"`, ...) in the order of the coordinates of
    a point: `Domain({"t": (0, 1), "x": (-1, 1)})` holds points `(t, x)`. The axis
    named by `time` (`"t"` by default, when present) is time: initial conditions sit
    at its lower end, causal weighting splits it into chunks, and boundary
    conditions are imposed on the faces of the other (spatial) axes.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    lows: tuple[float, ...] = eqx.field(static=True)
    highs: tuple[float, ...] = eqx.field(static=True)
    time: str | None = eqx.field(static=True)

    def __init__(
        self,
        bounds: Mapping[str, Sequence[float]],
        *,
        time: str | None = "t",
    ):
        """**Arguments:**

        - `bounds`: `{name: (low, high)}` for every axis, in coordinate order, with
          `low < high` finite.
        - `time`: the name of the time axis; `"t"` by default, used only if `bounds`
          has an axis of that name. `None`: a steady problem. Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the axis for an empty domain, bounds that are
        not a `(low, high)` pair, non-finite bounds, or an empty or inverted interval
        (`low >= high`); for a `time` that names no axis (other than the default).
        """
        if not isinstance(bounds, Mapping):
            raise TypeError(
                "`domain` must be a mapping {axis name: (low, high)}, e.g. "
                f"{{'t': (0.0, 1.0), 'x': (-1.0, 1.0)}}, got {type(bounds).__name__}."
            )
        if not bounds:
            raise ValueError(
                "`domain` is empty: give at least one axis, e.g. {'x': (0.0, 1.0)}."
            )
        names, lows, highs = [], [], []
        for name, pair in bounds.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise TypeError(
                    f"The axis names of `domain` must be identifiers such as 't' or "
                    f"'x', got {name!r}."
                )
            try:
                low, high = pair
            except (TypeError, ValueError):
                raise ValueError(
                    f"`domain[{name!r}]` must be a (low, high) pair, got {pair!r}."
                ) from None
            low = check_real(f"domain[{name!r}][0]", low)
            high = check_real(f"domain[{name!r}][1]", high)
            if not high > low:
                kind = "empty" if high == low else "inverted"
                raise ValueError(
                    f"`domain[{name!r}]` is {kind}: it must have low < high, got "
                    f"({low}, {high})."
                )
            names.append(name)
            lows.append(low)
            highs.append(high)
        if time is not None and time not in names:
            if time != "t":
                raise ValueError(
                    f"`time` names the axis {time!r}, but `domain` has the axes "
                    f"{names}. Pass one of them, or `time=None` for a steady problem."
                )
            time = None
        self.names = tuple(names)
        self.lows = tuple(lows)
        self.highs = tuple(highs)
        self.time = time

    @property
    def ndim(self) -> int:
        return len(self.names)

    @property
    def time_axis(self) -> int | None:
        """The index of the time axis, or `None`."""
        return None if self.time is None else self.names.index(self.time)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """The indices of the axes other than time."""
        return tuple(i for i in range(self.ndim) if i != self.time_axis)

    def axis(self, name: str, *, argument: str = "axis") -> int:
        """The index of the axis called `name` (an int passes through, checked)."""
        if isinstance(name, int) and not isinstance(name, bool):
            if not 0 <= name < self.ndim:
                raise ValueError(
                    f"`{argument}` = {name} is not an axis of the domain "
                    f"{list(self.names)}."
                )
            return name
        if name not in self.names:
            raise ValueError(
                f"`{argument}` = {name!r} is not an axis of the domain; its axes are "
                f"{list(self.names)}."
            )
        return self.names.index(name)

    def _bounds(self, dtype) -> tuple[Array, Array]:
        return jnp.asarray(self.lows, dtype), jnp.asarray(self.highs, dtype)

    def sample(
        self, key: PRNGKeyArray, n: int, dtype, *, chunks: int | None = None
    ) -> Float[Array, "n d"]:
        """`n` points drawn uniformly in the box.

        With `chunks`, time is stratified: the time interval is cut into `chunks`
        equal intervals and the points `i * n / chunks ... (i + 1) * n / chunks - 1`
        lie in interval `i` (uniformly there), so causal weighting can read the
        chunks off the point order (`n` must be a multiple of `chunks`).
        """
        low, high = self._bounds(dtype)
        u = jr.uniform(key, (n, self.ndim), dtype)
        if chunks is not None:
            t = self.time_axis
            index = jnp.repeat(jnp.arange(chunks, dtype=dtype), n // chunks)
            u = u.at[:, t].set((index + u[:, t]) / chunks)
        return low[None, :] + (high - low)[None, :] * u

    def sample_at(
        self, key: PRNGKeyArray, n: int, axis: int, value: float, dtype
    ) -> Float[Array, "n d"]:
        """`n` points drawn uniformly on the hyperplane `x[axis] = value` of the
        box."""
        points = self.sample(key, n, dtype)
        return points.at[:, axis].set(jnp.asarray(value, dtype))

    def faces(self, axes: Sequence[int], side: str) -> list[tuple[int, float, float]]:
        """`(axis, value, outward normal sign)` of each face of `axes` on `side`
        (`"low"`, `"high"` or `"both"`)."""
        out = []
        for axis in axes:
            if side in ("low", "both"):
                out.append((axis, self.lows[axis], -1.0))
            if side in ("high", "both"):
                out.append((axis, self.highs[axis], 1.0))
        return out

    def sample_faces(
        self,
        key: PRNGKeyArray,
        n: int,
        faces: Sequence[tuple[int, float, float]],
        dtype,
    ) -> tuple[Float[Array, "n d"], Float[Array, "n d"]]:
        """`n` points drawn uniformly on the union of `faces`, and their outward unit
        normals.

        Each point picks a face with probability proportional to the face's measure
        (the product of the other axes' lengths), then a uniform point on it.
        """
        face_key, point_key = jr.split(key)
        lengths = np.subtract(self.highs, self.lows)
        measure = np.array(
            [math.prod(np.delete(lengths, axis)) for axis, _, _ in faces]
        )
        points = self.sample(point_key, n, dtype)
        if len(faces) == 1:
            choice = jnp.zeros((n,), jnp.int32)
        else:
            logits = jnp.asarray(np.log(measure / measure.sum()), dtype)
            choice = jr.categorical(face_key, logits, shape=(n,))
        axis = jnp.asarray([a for a, _, _ in faces], jnp.int32)[choice]
        value = jnp.asarray([v for _, v, _ in faces], dtype)[choice]
        sign = jnp.asarray([s for _, _, s in faces], dtype)[choice]
        onehot = jnp.arange(self.ndim, dtype=jnp.int32)[None, :] == axis[:, None]
        points = jnp.where(onehot, value[:, None], points)
        normals = jnp.where(onehot, sign[:, None], jnp.zeros((), dtype))
        return points, normals

    def __repr__(self) -> str:
        bounds = ", ".join(
            f"{n}: ({lo:g}, {hi:g})"
            for n, lo, hi in zip(self.names, self.lows, self.highs)
        )
        return f"Domain({{{bounds}}}, time={self.time!r})"
