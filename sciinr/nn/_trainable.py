"""Which arrays of a field the trainer updates."""

from typing import Any

import equinox as eqx
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree


class NonTrainable(eqx.Module):
    """Marks an array as a buffer that training does not update.

    `sciinr.fit` (and [`sciinr.nn.trainable`][]) leave every array inside a
    `NonTrainable` out of the differentiated and optimized parameters, so that
    optimizers with weight decay cannot move it either. It does **not** stop gradients
    by itself: layers that want a constant wrap its use in `jax.lax.stop_gradient`
    (as [`sciinr.nn.FourierFeatures`][] does for a fixed `B`), while the statistics
    stored by [`sciinr.nn.freeze_statistics`][] stay differentiable functions of the
    parameters they were computed from.
    """

    value: Array


def _is_nontrainable(x: Any) -> bool:
    return isinstance(x, NonTrainable)


def trainable(tree: PyTree) -> PyTree[bool]:
    """The filter spec of the trainable arrays of `tree`.

    **Arguments:**

    - `tree`: a field (or any pytree).

    **Returns:**

    A pytree of bools with the structure of `tree`, for `eqx.partition` /
    `eqx.filter`: `True` for every floating-point array that is not inside a
    [`sciinr.nn.NonTrainable`][].
    """

    def spec(x):
        if _is_nontrainable(x):
            return jtu.tree_map(lambda _: False, x)
        return eqx.is_inexact_array(x)

    return jtu.tree_map(spec, tree, is_leaf=_is_nontrainable)


def num_parameters(tree: PyTree) -> int:
    """The number of trainable scalars in `tree` (see [`sciinr.nn.trainable`][])."""
    params = eqx.filter(tree, trainable(tree))
    return int(sum(np.prod(leaf.shape) for leaf in jtu.tree_leaves(params)))
