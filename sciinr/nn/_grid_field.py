"""The interface of fields that evaluate a whole regular grid at once."""

import abc
from collections.abc import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ..checks import check_real
from ._field import AbstractField


class AbstractGridField(AbstractField):
    r"""A field that can also evaluate itself on a whole regular grid at once.

    Besides the per-point `__call__` of every [`sciinr.nn.AbstractField`][], a grid
    field implements `render_grid(shape, *, offset)`: its values at every point of
    the pixel grid of its `domain` (the convention of [`sciinr.grid`][]), shifted by
    `offset` pixels,

    $$x_{i_1 \dots i_d} = \Big(a_k + (b_k - a_k)\,\frac{i_k + o_k}{N_k}\Big)_{k},
    \qquad 0 \le i_k < N_k,$$

    for `domain` $= ((a_1, b_1), \dots)$ and `shape` $= (N_1, \dots)$, returned as an
    array of shape `shape + (out_size,)`. The values equal
    `sciinr.nn.apply(field, coords)` at those points (to float tolerance; with live
    batch normalization, with the statistics of the whole grid, which is what
    `apply` on all the grid's points gives), but a subclass computes them faster
    by sharing work between points: [`sciinr.nn.MultiHeadField`][] evaluates its
    body once per *local* coordinate of a tile and all its heads on it.

    **How problems use it.** A problem whose data lie on a regular grid checks
    `isinstance(field, sciinr.nn.AbstractGridField)` and, when it trains on the
    whole grid, computes its loss from `field.render_grid(...)` instead of
    `sciinr.nn.apply(field, coords)`: [`problems.image.ImageRegression`][] does so
    for all its protocols (the `"tancik"` test pixels are the grid with
    `offset=0.5`). Any other field keeps the per-point path unchanged. A problem
    that needs the field on its own grid (a CT reconstruction) does the same.
    Shapes a field cannot render (e.g. not divisible by its tiles) raise a
    `ValueError` at trace time.
    """

    domain: eqx.AbstractVar[tuple[tuple[float, float], ...]]

    @abc.abstractmethod
    def render_grid(
        self,
        shape: Sequence[int],
        *,
        offset: float | Sequence[float] = 0.0,
        chunk_size: int | None = None,
    ) -> Float[Array, "..."]:
        """The field's values on the pixel grid of `domain` with `shape` points.

        **Arguments:**

        - `shape`: the number of grid points per axis, `(N_1, ..., N_d)`.
        - `offset`: a shift of every point, in pixels, in `[0, 1)`: one number for
          every axis or one per axis. Keyword-only. Defaults to `0` (the pixel
          corners, [`sciinr.grid`][]).
        - `chunk_size`: evaluate the expensive per-point part in chunks of this
          many points (see [`sciinr.nn.apply`][]); only for pointwise fields.
          Keyword-only.

        **Returns:**

        The values, shape `shape + (out_size,)`.

        **Raises:**

        `ValueError` if the field cannot render a grid of this shape.
        """


def check_offset(offset: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """`offset` as one float in `[0, 1)` per axis, or a `ValueError` naming it."""
    if np.ndim(offset) == 0:
        offsets = [offset] * ndim
    else:
        offsets = list(offset)  # type: ignore[arg-type]
        if len(offsets) != ndim:
            raise ValueError(
                f"`offset` must be one number or {ndim} numbers (one per axis), got "
                f"{offset!r}."
            )
    out = []
    for axis, value in enumerate(offsets):
        value = check_real(f"offset[{axis}]" if np.ndim(offset) else "offset", value)
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"`offset` must lie in [0, 1) (a shift within one pixel), got "
                f"{offset!r}."
            )
        out.append(value)
    return tuple(out)
