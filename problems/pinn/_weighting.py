r"""Loss weighting: gradient-norm balancing or fixed weights, and causal weights.

The total loss of a PDE problem is $\mathcal{L} = \sum_i \lambda_i \mathcal{L}_i$ over
its terms (the residual and every condition). The weights $\lambda_i$ are *problem
state* (see [`sciinr.AbstractProblem`][]): carried through the scanned steps,
checkpointed, restored bit for bit on resume, and recorded in the history as
`weight_<term>`.
"""

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jaxtyping import Array, Float, Int, PyTree

from sciinr.checks import check_positive_int, check_real


Weights = dict[str, Float[Array, ""]]


def grad_norm_weights(
    gradients: Mapping[str, PyTree[Array]], current: Weights | None = None
) -> Weights:
    r"""The balancing weights $\hat\lambda_i = \overline{\lVert g \rVert} /
    \lVert g_i \rVert$ of the per-term gradients $g_i = \nabla_\theta
    \mathcal{L}_i$.

    $\overline{\lVert g \rVert}$ is the mean of the norms over the terms, as in the
    jaxpi code (the guide writes the sum; the two differ by the number of terms, a
    constant factor of the loss to which Adam is insensitive). After balancing, every
    weighted term has the gradient norm $\overline{\lVert g \rVert}$.

    A term whose gradient is exactly zero (e.g. a condition that a hard constraint
    already satisfies) has no balancing weight: it keeps its `current` weight (1
    without `current`) and is left out of the mean, so it neither overflows nor
    changes the other weights.

    **Arguments:**

    - `gradients`: `{term: gradient pytree}`.
    - `current`: the current weights `{term: weight}`, kept for terms with a zero
      gradient.

    **Returns:**

    `{term: weight}`, finite scalars.
    """
    norms = {
        name: jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jtu.tree_leaves(grad)))
        for name, grad in gradients.items()
    }
    nonzero = {name: n > 0 for name, n in norms.items()}
    dtype = jnp.result_type(*norms.values())
    count = sum(z.astype(dtype) for z in nonzero.values())
    mean = sum(norms.values()) / jnp.maximum(count, 1.0)
    weights = {}
    for name, n in norms.items():
        keep = jnp.ones((), dtype) if current is None else current[name]
        ratio = mean / jnp.where(nonzero[name], n, jnp.ones((), n.dtype))
        weights[name] = jnp.where(nonzero[name], ratio, keep).astype(dtype)
    return weights


class AbstractWeighting(eqx.Module):
    """How a PDE problem weights its loss terms (problem state)."""

    def init(self, names: tuple[str, ...], dtype) -> Weights:
        """The initial weights of the terms `names`."""
        raise NotImplementedError

    def update(
        self,
        weights: Weights,
        terms: Callable[[PyTree], dict[str, Array]],
        params: PyTree,
        step: Int[Array, ""],
    ) -> Weights:
        """The weights for the step that has completed `step` updates.

        `terms(params)` returns the unweighted loss terms as functions of the
        trainable parameters (on this step's batch)."""
        del terms, params, step
        return weights


class FixedWeights(AbstractWeighting):
    """Fixed weights $\\lambda_i$ (1 for the terms not given)."""

    weights: tuple[tuple[str, float], ...] = eqx.field(static=True)

    def __init__(self, weights: Mapping[str, float | Array] | None = None):
        """**Arguments:**

        - `weights`: `{term: weight}`, weights finite and `>= 0`; missing terms
          weigh 1. A problem state's `state["weight"]` (e.g. the balanced weights
          at the end of an Adam run) can be passed as it is.
        """
        weights = {} if weights is None else dict(weights)
        self.weights = tuple(
            (str(name), check_real(f"weights[{name!r}]", w, nonnegative=True))
            for name, w in weights.items()
        )

    def init(self, names, dtype):
        given = dict(self.weights)
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(
                f"`weights` names unknown loss terms {unknown}; the terms are "
                f"{list(names)}."
            )
        return {name: jnp.asarray(given.get(name, 1.0), dtype) for name in names}


class GradNorm(AbstractWeighting):
    r"""Gradient-norm balancing (Wang et al., the jaxpi guide, Algorithm 1).

    Every `every` steps (at steps `0, every, 2 every, ...`) the weights are refreshed
    from the gradient norms of the terms on that step's batch,

    $$\lambda_i \leftarrow \alpha\, \lambda_i + (1 - \alpha)\, \hat\lambda_i, \qquad
    \hat\lambda_i = \frac{\overline{\lVert \nabla_\theta \mathcal{L} \rVert}}
    {\lVert \nabla_\theta \mathcal{L}_i \rVert},$$

    with momentum $\alpha$ (see [`problems.pinn.grad_norm_weights`][]). The per-term
    gradients are computed only at refresh steps (under `jax.lax.cond`), with one
    `jax.jacrev` (one forward pass, one backward pass per term).

    ??? cite

        [An Expert's Guide to Training Physics-informed Neural
        Networks](https://arxiv.org/abs/2308.08468)

        ```bibtex
        @article{wang2023expert,
          title={An Expert's Guide to Training Physics-informed Neural Networks},
          author={Wang, Sifan and Sankaran, Shyam and Wang, Hanwen and
                  Perdikaris, Paris},
          journal={arXiv preprint arXiv:2308.08468},
          year={2023}
        }
        ```
    """

    every: int = eqx.field(static=True)
    momentum: float = eqx.field(static=True)
    initial: tuple[tuple[str, float], ...] = eqx.field(static=True)

    def __init__(
        self,
        every: int = 1000,
        momentum: float = 0.9,
        *,
        initial: Mapping[str, float] | None = None,
    ):
        """**Arguments:**

        - `every`: steps between refreshes. Defaults to `1000` (the guide).
        - `momentum`: $\\alpha \\in [0, 1)$, the weight of the old value in the
          moving average. Defaults to `0.9` (the guide).
        - `initial`: initial weights `{term: weight}`; 1 for the terms not given.
          Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the argument for `every <= 0` or a
        `momentum` outside `[0, 1)`.
        """
        self.every = check_positive_int("every", every)
        momentum = check_real("momentum", momentum, nonnegative=True)
        if momentum >= 1:
            raise ValueError(
                f"`momentum` must be in [0, 1) (the weight of the old value in the "
                f"moving average), got {momentum}."
            )
        self.momentum = momentum
        initial = {} if initial is None else dict(initial)
        self.initial = tuple(
            (str(n), check_real(f"initial[{n!r}]", w, positive=True))
            for n, w in initial.items()
        )

    def init(self, names, dtype):
        return FixedWeights(dict(self.initial)).init(names, dtype)

    def update(self, weights, terms, params, step):
        def refresh(weights):
            gradients = jax.jacrev(terms)(params)
            target = grad_norm_weights(gradients, weights)
            return {
                name: self.momentum * w + (1 - self.momentum) * target[name]
                for name, w in weights.items()
            }

        return lax.cond(step % self.every == 0, refresh, lambda w: w, weights)


def causal_weights(
    chunk_losses: Float[Array, " chunks"], epsilon: float | Float[Array, ""]
) -> Float[Array, " chunks"]:
    r"""The causal weights $w_i = \exp(-\varepsilon \sum_{k < i} \mathcal{L}_k)$.

    Chunk $i$ (in time order) is weighted down until the residual of every earlier
    chunk is small; the weights are constants for the gradient
    (`jax.lax.stop_gradient`). $w_0 = 1$.

    **Arguments:**

    - `chunk_losses`: the mean squared residual $\mathcal{L}_k$ of each time chunk.
    - `epsilon`: the causality parameter $\varepsilon \ge 0$ (`0`: all weights 1).

    **Returns:**

    The weights, shape `(chunks,)`.
    """
    before = jnp.cumsum(chunk_losses) - chunk_losses  # exclusive prefix sums
    return lax.stop_gradient(jnp.exp(-epsilon * before))


class Causal(eqx.Module):
    r"""Causal weighting of the residual over time chunks (Wang, Sankaran &
    Perdikaris 2022; the jaxpi guide).

    The time interval is cut into `chunks` equal intervals, the collocation points
    stratified over them, and the residual loss becomes

    $$\mathcal{L}_r = \frac1M \sum_{i=1}^{M} w_i\, \mathcal{L}_r^{(i)}, \qquad
    w_i = \exp\Big(-\varepsilon \sum_{k<i} \mathcal{L}_r^{(k)}\Big),$$

    so later times are fitted only once earlier ones are (see
    [`problems.pinn.causal_weights`][]).

    ??? cite

        [Respecting causality is all you need for training physics-informed
        neural networks](https://arxiv.org/abs/2203.07404)

        ```bibtex
        @article{wang2022respecting,
          title={Respecting causality is all you need for training physics-informed
                 neural networks},
          author={Wang, Sifan and Sankaran, Shyam and Perdikaris, Paris},
          journal={arXiv preprint arXiv:2203.07404},
          year={2022}
        }
        ```
    """

    epsilon: float = eqx.field(static=True)
    chunks: int = eqx.field(static=True)

    def __init__(self, epsilon: float = 1.0, chunks: int = 32):
        """**Arguments:**

        - `epsilon`: $\\varepsilon \\ge 0$. Defaults to `1.0` (jaxpi's Allen-Cahn
          and advection configurations).
        - `chunks`: the number $M$ of time chunks. Defaults to `32` (jaxpi).

        **Raises:**

        `ValueError` for `epsilon < 0` or not finite, or `chunks <= 0`.
        """
        self.epsilon = check_real("epsilon", epsilon, nonnegative=True)
        self.chunks = check_positive_int("chunks", chunks)

    def loss(
        self, chunk_losses: Float[Array, " chunks"]
    ) -> tuple[Float[Array, ""], Float[Array, " chunks"]]:
        """The causally weighted loss and the weights."""
        weights = causal_weights(chunk_losses, self.epsilon)
        return jnp.mean(weights * chunk_losses), weights
