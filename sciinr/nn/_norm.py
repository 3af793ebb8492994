"""Normalization over the coordinates of one signal, and freezing its statistics."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import check_coords, check_positive_int, check_real
from ._field import COORDS
from ._trainable import NonTrainable


_OUTSIDE_APPLY = (
    "A field with `CoordinateBatchNorm` normalizes over the coordinates of a batch, "
    "so it must be evaluated through `sciinr.nn.apply(field, xs)` (which vmaps over "
    "the coordinate axis named {axis!r}). To evaluate single points, differentiate "
    "with respect to coordinates or vmap yourself, freeze it first: "
    "`sciinr.nn.freeze_statistics(field, xs_ref)`."
)

# Stack of dicts that collect the statistics of every batch-norm layer called while
# tracing; see `freeze_statistics`.
_RECORDERS: list[dict[int, tuple[Array, Array]]] = []


@contextlib.contextmanager
def _record_statistics() -> Iterator[dict[int, tuple[Array, Array]]]:
    record: dict[int, tuple[Array, Array]] = {}
    _RECORDERS.append(record)
    try:
        yield record
    finally:
        _RECORDERS.pop()


class CoordinateBatchNorm(eqx.Module):
    r"""Batch normalization where the batch is the coordinates of one signal.

    For pre-activations $z_i \in \mathbb{R}^c$ at the $n$ coordinates of the current
    batch,

    $$\hat z_i = \gamma \odot \frac{z_i - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
    \qquad \mu = \frac1n\sum_j z_j,\quad \sigma^2 = \frac1n\sum_j (z_j - \mu)^2,$$

    per channel, with $\gamma = 1$, $\beta = 0$ at initialisation and
    $\epsilon = 10^{-5}$. The statistics are those of the current coordinate batch
    (computed with `jax.lax.pmean` over the axis that [`sciinr.nn.apply`][] names), so
    the layer is **stateless**: there are no running averages, which lag a network that
    changes every step. Inside `jit` with coordinates sharded over devices, the
    statistics are global.

    A field with this layer is a function of the *set* of coordinates it is evaluated
    on. [`sciinr.nn.freeze_statistics`][] turns it into a pointwise function, for
    prediction at new coordinates and before any derivative with respect to the
    coordinates. A frozen layer holds its statistics in `mean` and `var`.

    !!! warning

        Calling a batch-norm field on one point, or through a plain `jax.vmap`, raises
        a `ValueError`: use [`sciinr.nn.apply`][] or freeze it first.

    ??? cite

        [On the Effect of Normalization Layers in Deep Coordinate Networks](https://github.com/Aiolus-X/Norm-INR)
        (Lunjun Zhang, University of Toronto), and [Batch Normalization](https://arxiv.org/abs/1502.03167)

        ```bibtex
        @inproceedings{ioffe2015batch,
          title={Batch Normalization: Accelerating Deep Network Training by Reducing
                 Internal Covariate Shift},
          author={Ioffe, Sergey and Szegedy, Christian},
          booktitle={ICML},
          year={2015}
        }
        ```
    """

    weight: Float[Array, " c"]
    bias: Float[Array, " c"]
    mean: NonTrainable | None
    var: NonTrainable | None
    size: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, size: int, eps: float | int = 1e-5, dtype=None):
        """**Arguments:**

        - `size`: the number of channels `c`.
        - `eps`: added to the variance. Defaults to `1e-5` (PyTorch/Equinox).
        - `dtype`: the dtype of the affine parameters; defaults to JAX's default float.
        """
        self.size = check_positive_int("size", size)
        self.eps = check_real("eps", eps, positive=True)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.weight = jnp.ones((size,), dtype)
        self.bias = jnp.zeros((size,), dtype)
        self.mean = None
        self.var = None

    @property
    def frozen(self) -> bool:
        """Whether the layer holds fixed statistics (see `freeze_statistics`)."""
        return self.mean is not None

    def __call__(
        self, x: Float[Array, " c"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " c"]:
        """**Arguments:**

        - `x`: the pre-activation at one coordinate, shape `(size,)`.
        - `key`: ignored.

        **Returns:**

        The normalized value, shape `(size,)`.

        **Raises:**

        `ValueError` if the layer is not frozen and is called outside
        [`sciinr.nn.apply`][].
        """
        del key
        if x.shape != (self.size,):
            raise ValueError(
                f"CoordinateBatchNorm({self.size}) expects `x` of shape "
                f"({self.size},), got {x.shape}."
            )
        if self.mean is not None and self.var is not None:
            mean, var = self.mean.value, self.var.value
        else:
            try:
                mean = lax.pmean(x, COORDS)
                var = lax.pmean(jnp.square(x - mean), COORDS)
            except NameError:
                raise ValueError(_OUTSIDE_APPLY.format(axis=COORDS)) from None
            if _RECORDERS:
                if id(self) in _RECORDERS[-1]:
                    raise ValueError(
                        "A CoordinateBatchNorm layer was called more than once in one "
                        "evaluation of the field, so it has no single set of "
                        "statistics to freeze. Use one layer per call site."
                    )
                _RECORDERS[-1][id(self)] = (mean, var)
        return (x - mean) * lax.rsqrt(var + self.eps) * self.weight + self.bias


def _is_live_batch_norm(x: Any) -> bool:
    return isinstance(x, CoordinateBatchNorm) and not x.frozen


def _live_batch_norms(field: PyTree) -> list[CoordinateBatchNorm]:
    return [
        node
        for node in jtu.tree_leaves(field, is_leaf=_is_live_batch_norm)
        if _is_live_batch_norm(node)
    ]


def has_batch_statistics(field: PyTree) -> bool:
    """Whether `field` has batch-norm layers that use the current batch's statistics."""
    return bool(_live_batch_norms(field))


# `xs` is annotated loosely on purpose; see `apply`.
def freeze_statistics(field: PyTree, xs: Float[Array, "..."]) -> PyTree:
    """Make a batch-norm field pointwise by fixing the statistics of `xs`.

    Every [`sciinr.nn.CoordinateBatchNorm`][] layer of `field` is replaced by one that
    holds the mean and variance it sees when the field is evaluated on `xs` through
    [`sciinr.nn.apply`][] (precise-BN calibration). On `xs` itself the frozen field
    gives the same values as the batch-statistics field; elsewhere it is an ordinary
    pointwise function of the coordinate, so it can be evaluated on any grid, in any
    chunks, and differentiated with respect to its input.

    The stored statistics are differentiable functions of the parameters, so this can
    be called inside a loss: the parameter gradients equal those of the
    batch-statistics field, while derivatives with respect to coordinates become exact
    pointwise derivatives. (Under batch statistics, `vmap(grad(u))` would
    differentiate `sum_j u(x_j)`, not `u(x_i)`.)

    This is one mechanism for every field type (MLP, SIREN, multi-head, DeepONet): it
    records the statistics of each layer during one batched call. Fields without batch
    normalization are returned unchanged.

    **Arguments:**

    - `field`: any field (or pytree containing fields).
    - `xs`: the reference coordinates, shape `(n, in_size)`; usually the training
      coordinates.

    **Returns:**

    A field of the same structure whose batch-norm layers are frozen.
    """
    layers = _live_batch_norms(field)
    if not layers:
        return field
    check_coords("xs", xs, getattr(field, "in_size", None))

    def run(x):
        with _record_statistics() as record:
            field(x)
        missing = [layer for layer in layers if id(layer) not in record]
        if missing:
            raise ValueError(
                f"{len(missing)} CoordinateBatchNorm layer(s) of `field` were not "
                "called directly by `field(x)` (for example, inside an inner vmap), "
                "so their statistics cannot be frozen."
            )
        return [record[id(layer)] for layer in layers]

    stats = jax.vmap(run, axis_name=COORDS, out_axes=None)(jnp.asarray(xs))
    frozen = [_with_statistics(layer, m, v) for layer, (m, v) in zip(layers, stats)]
    return eqx.tree_at(_live_batch_norms, field, frozen)


def _with_statistics(
    layer: CoordinateBatchNorm, mean: Array, var: Array
) -> CoordinateBatchNorm:
    return eqx.tree_at(
        lambda l: (l.mean, l.var),
        layer,
        (NonTrainable(mean), NonTrainable(var)),
        is_leaf=lambda x: x is None,
    )


def _layer_norm(size: int, dtype) -> eqx.Module:
    return eqx.nn.LayerNorm(size, dtype=dtype)


def _rms_norm(size: int, dtype) -> eqx.Module:
    return eqx.nn.RMSNorm(size, dtype=dtype)


def _batch_norm(size: int, dtype) -> eqx.Module:
    return CoordinateBatchNorm(size, dtype=dtype)


NORMS: dict[str, Callable[[int, Any], eqx.Module]] = {
    "batch": _batch_norm,
    "layer": _layer_norm,
    "rms": _rms_norm,
}
"""The normalization layers selected by `norm=` (besides `None`)."""


def check_norm(norm: Any) -> None:
    """Raise a `ValueError` listing the valid values unless `norm` is one of them."""
    if norm is not None and (not isinstance(norm, str) or norm not in NORMS):
        raise ValueError(
            f"Unknown `norm` {norm!r}. Valid values: None, "
            f"{', '.join(map(repr, NORMS))}."
        )


def make_norm(norm: str | None, size: int, dtype=None) -> eqx.Module | None:
    """Build the normalization layer named `norm` (or `None`) for `size` channels."""
    check_norm(norm)
    return None if norm is None else NORMS[norm](size, dtype)
