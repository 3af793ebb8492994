"""The field interface and the one batched call, `apply`."""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jax.sharding import PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..checks import check_coords, check_positive_int


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


def batch_size(field: Any, inputs: tuple[PyTree[Array], ...]) -> int:
    """Check the inputs of a batched call and return their shared leading length.

    One array input is a coordinate batch, checked against `field.in_size` (with a
    hint for the usual mistakes); several inputs, or pytree inputs, need array leaves
    with one shared leading axis.
    """
    if not inputs:
        raise TypeError("Pass the inputs to evaluate: `apply(field, xs)`.")
    if len(inputs) == 1 and eqx.is_array_like(inputs[0]):
        check_coords("xs", inputs[0], getattr(field, "in_size", None))
        return int(inputs[0].shape[0])
    leaves = jtu.tree_leaves_with_path(inputs)
    if not leaves:
        raise ValueError("The inputs of `apply` hold no arrays.")
    lengths = {}
    for path, leaf in leaves:
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0:
            raise ValueError(
                f"Input leaf `inputs{jtu.keystr(path)}` must be an array with a "
                f"leading batch axis, got {type(leaf).__name__} of shape {shape}."
            )
        lengths[jtu.keystr(path)] = shape[0]
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"inputs{p}: {n}" for p, n in lengths.items())
        raise ValueError(
            f"The inputs of `apply` must share their leading (batch) axis, got "
            f"lengths {described}."
        )
    return int(next(iter(lengths.values())))


def _mesh_axis() -> tuple[str, int] | None:
    """The axis name and size of the context mesh (`jax.set_mesh`), if 1-D."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or len(mesh.axis_names) != 1:
        return None
    (name,) = mesh.axis_names
    return name, int(mesh.size)


def _shard_leading(tree: PyTree[Array], axis: int = 0) -> PyTree[Array]:
    """Shard `tree`'s leaves along `axis` over the context mesh, when there is one."""
    found = _mesh_axis()
    if found is None:
        return tree
    name, devices = found

    def constrain(x):
        if x.shape[axis] % devices:
            return x
        spec = PartitionSpec(*([None] * axis), name)
        return lax.with_sharding_constraint(x, spec)

    return jtu.tree_map(constrain, tree)


def apply(
    field: Any,
    *inputs: PyTree[Array],
    chunk_size: int | None = None,
) -> PyTree[Array]:
    """Evaluate `field` at a batch of coordinates (or of input tuples).

    This is the single place that vmaps a field over its inputs. The vmapped axis is
    named [`sciinr.nn.COORDS`][], so [`sciinr.nn.CoordinateBatchNorm`][] layers see
    the whole batch (under `jit` with sharded coordinates, a global statistic).

    Inside a `jax.set_mesh(mesh)` context (as [`sciinr.fit`][] sets for evaluation
    and prediction) with a 1-D mesh, the batch is sharded over the mesh's devices on
    its leading axis, so every device evaluates its share.

    **Arguments:**

    - `field`: any field, e.g. [`sciinr.nn.CoordinateMLP`][].
    - `*inputs`: the batched arguments of `field.__call__`. For a coordinate field,
      one array of coordinates of shape `(n, in_size)`; for fields of several inputs
      (a `sciinr.nn.DeepONet`'s `(u, y)`), one pytree per argument, every array
      leaf with the same leading length `n`.
    - `chunk_size`: evaluate `chunk_size` points at a time (a `jax.lax.map` over
      chunks), so that memory stays bounded for large grids; `None` evaluates all
      points at once. Only for pointwise fields: freeze batch-norm statistics first
      ([`sciinr.nn.freeze_statistics`][]). Keyword-only.

    **Returns:**

    The values, with a leading axis of length `n` (shape `(n, out_size)` for a
    coordinate field).

    **Raises:**

    `ValueError` if the inputs do not have the expected shapes (`xs` must be
    `(n, in_size)`), or if `chunk_size` is given for a field with live batch-norm
    statistics.
    """
    from ._norm import has_batch_statistics  # _norm imports this module

    n = batch_size(field, inputs)
    inputs = _shard_leading(inputs)
    evaluate = jax.vmap(field, axis_name=COORDS)
    if chunk_size is None:
        return _shard_leading(evaluate(*inputs))
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if has_batch_statistics(field):
        raise ValueError(
            "`chunk_size` was given for a field with batch normalization, whose "
            "values depend on the whole batch. Freeze its statistics first: "
            "`apply(freeze_statistics(field, xs_ref), xs, chunk_size=...)`."
        )
    found = _mesh_axis()
    devices = 1 if found is None else found[1]
    chunk = devices * math.ceil(min(chunk_size, n) / devices)
    n_chunks = math.ceil(n / chunk)
    if n_chunks == 1 and chunk == n:
        return _shard_leading(evaluate(*inputs))
    pad = n_chunks * chunk - n

    def split(x):
        if pad:  # repeat the first point: a pointwise field ignores the padding
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))])
        return x.reshape(n_chunks, chunk, *x.shape[1:])

    chunks = _shard_leading(jtu.tree_map(split, inputs), axis=1)
    out = lax.map(lambda c: _shard_leading(evaluate(*_shard_leading(c))), chunks)
    out = _shard_leading(out, axis=1)
    return _shard_leading(
        jtu.tree_map(lambda y: y.reshape(n_chunks * chunk, *y.shape[2:])[:n], out)
    )
