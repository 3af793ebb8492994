"""Normalization over the coordinates of one signal, and freezing its statistics."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..checks import check_positive_int, check_real
from ._field import apply, batch_size, COORDS
from ._trainable import NonTrainable


_OUTSIDE_APPLY = (
    "A field with `CoordinateBatchNorm` normalizes over the coordinates of a batch, "
    "so it must be evaluated through `sciinr.nn.apply(field, xs)` (which vmaps over "
    "the coordinate axis named {axis!r}). To evaluate single points, differentiate "
    "with respect to coordinates or vmap yourself, freeze it first: "
    "`sciinr.nn.freeze_statistics(field, xs_ref)`."
)


class _StatisticsProbe(eqx.Module):
    """Zero arrays whose gradient carries a batch-norm layer's statistics out.

    `freeze_statistics` puts one in the `mean` slot of every live layer; the layer
    then passes its output through `_tap`, whose backward pass returns the layer's
    statistics (and a call count) as the probe's cotangent, whatever the cotangent
    of the output. Differentiating the field's output with respect to the probes thus
    returns every layer's statistics through ordinary autodiff: no global state, and
    it works wherever the layer is called (inside an inner `vmap` over stacked
    layers, a `lax.scan` over layers, ...), giving stacked statistics there.
    """

    mean: Array
    var: Array
    count: Array


@jax.custom_vjp
def _tap(y: Array, probe: _StatisticsProbe, mean: Array, var: Array) -> Array:
    return y


def _tap_fwd(y, probe, mean, var):
    return y, (mean, var)


def _tap_bwd(residuals, cotangent):
    mean, var = residuals
    # `1 + 0 * mean` (not `ones_like`) is batched exactly when `mean` is, so that a
    # vmap that sums the statistics over a batch sums the count in the same way.
    count = 1 + 0 * mean[..., 0]
    probe = _StatisticsProbe(mean, var, count)
    return cotangent, probe, jnp.zeros_like(mean), jnp.zeros_like(var)


_tap.defvjp(_tap_fwd, _tap_bwd)


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
    mean: NonTrainable | _StatisticsProbe | None
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
        return isinstance(self.mean, NonTrainable)

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
        if isinstance(self.mean, NonTrainable) and isinstance(self.var, NonTrainable):
            mean, var = self.mean.value, self.var.value
        else:
            try:
                mean = lax.pmean(x, COORDS)
                var = lax.pmean(jnp.square(x - mean), COORDS)
            except NameError:
                raise ValueError(_OUTSIDE_APPLY.format(axis=COORDS)) from None
        y = (x - mean) * lax.rsqrt(var + self.eps) * self.weight + self.bias
        if isinstance(self.mean, _StatisticsProbe):
            y = _tap(y, self.mean, mean, var)
        return y


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


def freeze_statistics(field: PyTree, *inputs: PyTree[Array]) -> PyTree:
    """Make a batch-norm field pointwise by fixing the statistics of `inputs`.

    Every [`sciinr.nn.CoordinateBatchNorm`][] layer of `field` is replaced by one that
    holds the mean and variance it sees when the field is evaluated on `inputs`
    through [`sciinr.nn.apply`][] (precise-BN calibration). On `inputs` themselves
    the frozen field gives the same values as the batch-statistics field; elsewhere it
    is an ordinary pointwise function, so it can be evaluated on any grid, in any
    chunks, and differentiated with respect to its input.

    The stored statistics are differentiable functions of the parameters (in reverse
    mode), so this can be called inside a loss: the parameter gradients equal those of
    the batch-statistics field, while derivatives with respect to coordinates become
    exact pointwise derivatives. (Under batch statistics, `vmap(grad(u))` would
    differentiate `sum_j u(x_j)`, not `u(x_i)`.)

    This is one mechanism for every field type (MLP, SIREN, multi-head, DeepONet),
    with no hook per class and no global state: the statistics come out of one
    batched call as the gradient of the output with respect to zero "probe" arrays
    placed in each layer (a `jax.custom_vjp` returns a layer's statistics as its
    probe's cotangent). So it also works for layers called inside an inner `vmap`
    (stacked sub-networks) or a `lax.scan` over stacked layers: their frozen
    statistics are stacked like their weights. Fields without batch normalization
    are returned unchanged.

    **Arguments:**

    - `field`: any field (or pytree containing fields).
    - `*inputs`: the reference inputs, as for [`sciinr.nn.apply`][]: for a
      coordinate field, coordinates of shape `(n, in_size)`, usually the training
      coordinates.

    **Returns:**

    A field of the same structure whose batch-norm layers are frozen.

    **Raises:**

    `ValueError` if the inputs have the wrong shape, or if a batch-norm layer is not
    called exactly once per point by the field (so that it has no single set of
    statistics); inside `jit` the latter is a runtime error (`eqx.error_if`).

    !!! warning

        Differentiating *through* `freeze_statistics` works in reverse mode
        (`jax.grad`, as every loss does) but not in forward mode (`jax.jvp` or
        `jax.jacfwd` with respect to the parameters), because the statistics are
        extracted with a `jax.custom_vjp`. Forward-mode derivatives of the *frozen*
        field (with respect to its inputs) are fine.
    """
    layers = _live_batch_norms(field)
    if not layers:
        return field
    batch_size(field, inputs)
    probed = eqx.tree_at(_live_batch_norms, field, [_with_probe(l) for l in layers])
    spec = jtu.tree_map(_is_probe, probed, is_leaf=_is_probe)
    probes, rest = eqx.partition(probed, spec, is_leaf=_is_probe)

    def total(probes):
        out = apply(eqx.combine(probes, rest, is_leaf=_is_probe), *inputs)
        return sum(jnp.sum(leaf) for leaf in jtu.tree_leaves(out))

    grads = jax.grad(total)(probes)
    found = [x for x in jtu.tree_leaves(grads, is_leaf=_is_probe) if _is_probe(x)]
    frozen = []
    for index, probe in enumerate(found):
        count = probe.count
        mean = probe.mean / count[..., None]
        var = probe.var / count[..., None]
        message = (
            f"Batch-norm layer {index} of `field` was not called exactly once per "
            "point while evaluating the field, so it has no single set of "
            "statistics to freeze (a layer called twice, or never). Use one layer "
            "per call site."
        )
        if isinstance(count, jax.core.Tracer):
            mean = eqx.error_if(mean, jnp.any(count != 1), message)
        elif np.any(np.asarray(count) != 1):
            raise ValueError(message)
        frozen.append(_with_statistics(layers[index], mean, var))
    return eqx.tree_at(_live_batch_norms, field, frozen)


def _is_probe(x: Any) -> bool:
    return isinstance(x, _StatisticsProbe)


def _with_probe(layer: CoordinateBatchNorm) -> CoordinateBatchNorm:
    zeros = jnp.zeros_like(layer.weight)
    probe = _StatisticsProbe(zeros, zeros, zeros[..., 0])
    return eqx.tree_at(lambda l: l.mean, layer, probe, is_leaf=lambda x: x is None)


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
