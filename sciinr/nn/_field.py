"""The field interface and the one batched call, `apply`."""

import abc

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_coords


COORDS = "coords"
"""The name of the coordinate axis that [`sciinr.nn.apply`][] vmaps over.

[`sciinr.nn.CoordinateBatchNorm`][] reduces over this axis with `jax.lax.pmean`.
"""


def check_point(x: Array, in_size: int) -> None:
    """Check that one coordinate has shape `(in_size,)` (at trace time)."""
    if x.shape != (in_size,):
        raise ValueError(
            f"`x` must have shape ({in_size},), got {x.shape}. To evaluate a batch "
            "of coordinates use `sciinr.nn.apply(field, xs)`."
        )


class AbstractField(eqx.Module):
    """A field maps ONE coordinate `x` of shape `(in_size,)` to values `(out_size,)`.

    Batches go through [`sciinr.nn.apply`][]. Subclasses declare `in_size` and
    `out_size` (static ints) and implement `__call__`.
    """

    in_size: eqx.AbstractVar[int]
    out_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " m"]:
        """Evaluate the field at one coordinate `x` of shape `(in_size,)`."""


# `xs` is annotated as any float array on purpose: `check_coords` gives a clearer
# error (naming `xs`, the expected shape and the fix) than a runtime type checker.
def apply(field: eqx.Module, xs: Float[Array, "..."]) -> Float[Array, "n m"]:
    """Evaluate `field` at a batch of coordinates.

    This is the single place that vmaps a field over coordinates. The vmapped axis is
    named [`sciinr.nn.COORDS`][], so [`sciinr.nn.CoordinateBatchNorm`][] layers see
    the whole coordinate batch (under `jit` with sharded coordinates, a global
    statistic).

    **Arguments:**

    - `field`: any field, e.g. [`sciinr.nn.CoordinateMLP`][].
    - `xs`: coordinates of shape `(n, in_size)`.

    **Returns:**

    The values, shape `(n, out_size)`.

    **Raises:**

    `ValueError` if `xs` does not have shape `(n, in_size)`.
    """
    check_coords("xs", xs, getattr(field, "in_size", None))
    return jax.vmap(field, axis_name=COORDS)(xs)
