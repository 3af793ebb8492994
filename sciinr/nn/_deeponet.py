"""DeepONet: a branch network of the input function, a trunk network of the query
point, and their inner product."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import check_positive_int
from ._field import apply
from ._norm import freeze_statistics


def _sizes(name: str, net: Any) -> tuple[int, int]:
    """The `(in_size, out_size)` of a branch or trunk network."""
    sizes = []
    for attribute in ("in_size", "out_size"):
        value = getattr(net, attribute, None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"`{name}` must be a field with integer `in_size` and `out_size` "
                f"(e.g. `sciinr.nn.CoordinateMLP`), got {type(net).__name__} with "
                f"`{attribute}` = {value!r}."
            )
        sizes.append(value)
    return sizes[0], sizes[1]


class DeepONet(eqx.Module):
    r"""A deep operator network: the value of an operator's output at a point.

    For an input function $u$, known by its values $u(x_1), \dots, u(x_m)$ at $m$
    fixed sensors, and a query point $y \in \mathbb{R}^d$,

    $$G_\theta(u)(y) = \sum_{k=1}^{p} b_k\big(u(x_1), \dots, u(x_m)\big)\, t_k(y)
    + b_0,$$

    where the *branch* network $b: \mathbb{R}^m \to \mathbb{R}^p$ sees the sensor
    values and the *trunk* network $t: \mathbb{R}^d \to \mathbb{R}^p$ the query point
    (Lu et al. 2021, the "unstacked" DeepONet with a trainable bias $b_0$, as in
    DeepXDE). For `out_size` $= c > 1$ outputs, the branch and the trunk each return
    $c\,p$ features, split into $c$ groups of $p$: output $j$ is the inner product
    of group $j$ of the branch with group $j$ of the trunk, plus its own bias.

    The branch and the trunk are any fields: [`sciinr.nn.CoordinateMLP`][] with
    dense or RWF layers, normalization, Fourier features on the trunk's input, a
    [`sciinr.nn.Siren`][], ... The branch is a "field" on $\mathbb{R}^m$.

    **Two ways to evaluate.**

    - Per pair: `onet(u, y)` for one function and one point, and
      `sciinr.nn.apply(onet, us, ys)` for `n` pairs `(us[i], ys[i])`; each pair
      evaluates the branch and the trunk once.
    - Aligned: `onet.aligned(us, ys)` for *every* function of `us` at *every* point
      of `ys` (the layout of data where all functions are observed at the same
      points, DeepXDE's "Cartesian product"). It evaluates the branch once per
      function and the trunk once per point, then contracts: $F + P$ network
      evaluations for $F \times P$ values instead of $2FP$. Use it wherever the data
      allow.

    **Batch normalization.** With [`sciinr.nn.CoordinateBatchNorm`][] layers, a
    network's statistics are over the batch it is evaluated on: in the aligned
    layout, the branch's statistics are over the *functions* `us` and the trunk's
    over the *points* `ys`; per pair, both are over the `n` pairs. For the balanced
    set of all $F \times P$ pairs of an aligned batch, the two coincide (every
    function appears $P$ times and every point $F$ times, so the means and variances
    over the pairs equal those over the functions and the points). Freeze the
    statistics before evaluating elsewhere or differentiating with respect to `y`:
    [`sciinr.nn.freeze_statistics`][]`(onet, us, ys)` for pairs,
    `onet.freeze_aligned(us, ys)` for the aligned layout.

    ??? cite

        [Learning nonlinear operators via DeepONet based on the universal
        approximation theorem of operators](https://arxiv.org/abs/1910.03193)

        ```bibtex
        @article{lu2021deeponet,
          title={Learning nonlinear operators via {DeepONet} based on the universal
                 approximation theorem of operators},
          author={Lu, Lu and Jin, Pengzhan and Pang, Guofei and Zhang, Zhongqiang
                  and Karniadakis, George Em},
          journal={Nature Machine Intelligence},
          volume={3},
          pages={218--229},
          year={2021}
        }
        ```
    """

    branch: eqx.Module
    trunk: eqx.Module
    bias: Float[Array, " out"]
    n_sensors: int = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    n_basis: int = eqx.field(static=True)

    def __init__(
        self,
        branch: eqx.Module,
        trunk: eqx.Module,
        *,
        out_size: int = 1,
        dtype=None,
        key: PRNGKeyArray | None = None,
    ):
        """**Arguments:**

        - `branch`: a field with `in_size = m` (the number of sensors) and
          `out_size = out_size * p`.
        - `trunk`: a field with `in_size = d` (the dimension of the query point)
          and the same `out_size` as the branch.
        - `out_size`: the number of output channels $c$; the `c * p` features of
          the branch and the trunk are split into $c$ groups of $p$. Keyword-only.
          Defaults to `1`.
        - `dtype`: the dtype of the bias $b_0$; defaults to JAX's default float.
        - `key`: not used: the bias starts at zero (as in DeepXDE) and the branch
          and the trunk come initialised. Accepted so that every `sciinr.nn`
          constructor can be called with a key. Keyword-only.

        **Raises:**

        `TypeError` if `branch` or `trunk` has no integer `in_size`/`out_size`;
        `ValueError` if their output sizes differ or are not a multiple of
        `out_size`.
        """
        del key
        n_sensors, branch_out = _sizes("branch", branch)
        in_size, trunk_out = _sizes("trunk", trunk)
        out_size = check_positive_int("out_size", out_size)
        if branch_out != trunk_out:
            raise ValueError(
                "`branch` and `trunk` must have the same `out_size` (the number of "
                f"basis functions times `out_size`), got {branch_out} for the branch "
                f"and {trunk_out} for the trunk."
            )
        if branch_out % out_size:
            raise ValueError(
                f"The `out_size` of `branch` and `trunk` ({branch_out}) must be a "
                f"multiple of the DeepONet's `out_size` ({out_size}): their features "
                f"are split into {out_size} equal groups, one per output. Use e.g. "
                f"{out_size * max(1, branch_out // out_size)}."
            )
        self.branch = branch
        self.trunk = trunk
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.bias = jnp.zeros((out_size,), dtype)
        self.n_sensors = n_sensors
        self.in_size = in_size
        self.out_size = out_size
        self.n_basis = branch_out // out_size

    def _check_sensors(self, shape: tuple[int, ...], name: str, batched: bool):
        expected = (self.n_sensors,)
        found = shape[1:] if batched else shape
        if len(shape) != len(expected) + batched or found != expected:
            layout = f"({'n, ' if batched else ''}{self.n_sensors})"
            raise ValueError(
                f"`{name}` must hold the input function's values at the "
                f"{self.n_sensors} sensors of the branch network, shape {layout}, "
                f"got {shape}."
            )

    def _check_points(self, shape: tuple[int, ...], name: str, batched: bool):
        found = shape[1:] if batched else shape
        if len(shape) != 1 + batched or found != (self.in_size,):
            layout = f"({'n, ' if batched else ''}{self.in_size})"
            hint = ""
            if batched and len(shape) == 1 and self.in_size == 1:
                hint = f" For 1-D points use `{name}[:, None]`."
            raise ValueError(
                f"`{name}` must hold query points of dimension {self.in_size} (the "
                f"trunk's `in_size`), shape {layout}, got {shape}.{hint}"
            )

    def __call__(
        self,
        u: Float[Array, " m"],
        y: Float[Array, " d"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " c"]:
        """Evaluate $G_\\theta(u)(y)$ for one function and one query point.

        **Arguments:**

        - `u`: the input function at the sensors, shape `(n_sensors,)`.
        - `y`: the query point, shape `(in_size,)`.
        - `key`: ignored.

        **Returns:**

        The value, shape `(out_size,)`.

        **Raises:**

        `ValueError` (at trace time) if `u` or `y` has the wrong shape.
        """
        del key
        self._check_sensors(u.shape, "u", batched=False)
        self._check_points(y.shape, "y", batched=False)
        b = self.branch(u).reshape(self.out_size, self.n_basis)
        t = self.trunk(y).reshape(self.out_size, self.n_basis)
        return jnp.sum(b * t, axis=-1) + self.bias

    def coefficients(
        self, us: Float[Array, "f m"], *, chunk_size: int | None = None
    ) -> Float[Array, "f c p"]:
        """The branch's output for a batch of functions, split per output channel.

        **Arguments:**

        - `us`: `F` input functions at the sensors, shape `(F, n_sensors)`.
        - `chunk_size`: as in [`sciinr.nn.apply`][]. Keyword-only.

        **Returns:**

        The coefficients $b_k(u_f)$, shape `(F, out_size, n_basis)`.
        """
        self._check_sensors(us.shape, "us", batched=True)
        b = apply(self.branch, us, chunk_size=chunk_size)
        return b.reshape(us.shape[0], self.out_size, self.n_basis)

    def basis(
        self, ys: Float[Array, "n d"], *, chunk_size: int | None = None
    ) -> Float[Array, "n c p"]:
        """The trunk's output for a batch of points, split per output channel.

        **Arguments:**

        - `ys`: `P` query points, shape `(P, in_size)`.
        - `chunk_size`: as in [`sciinr.nn.apply`][]. Keyword-only.

        **Returns:**

        The basis functions $t_k(y_n)$, shape `(P, out_size, n_basis)`.
        """
        self._check_points(ys.shape, "ys", batched=True)
        t = apply(self.trunk, ys, chunk_size=chunk_size)
        return t.reshape(ys.shape[0], self.out_size, self.n_basis)

    def combine(
        self, coefficients: Float[Array, "f c p"], basis: Float[Array, "n c p"]
    ) -> Float[Array, "f n c"]:
        """All values from the branch's coefficients and the trunk's basis.

        **Arguments:**

        - `coefficients`: from `coefficients(us)`, shape `(F, out_size, n_basis)`.
        - `basis`: from `basis(ys)`, shape `(P, out_size, n_basis)`.

        **Returns:**

        $\\sum_k b_k(u_f)\\, t_k(y_n) + b_0$, shape `(F, P, out_size)`. (For a
        derivative with respect to $y$, contract the coefficients with the
        derivatives of the basis, without the bias.)
        """
        return jnp.einsum("fcp,ncp->fnc", coefficients, basis) + self.bias[None, None]

    def aligned(
        self,
        us: Float[Array, "f m"],
        ys: Float[Array, "n d"],
        *,
        chunk_size: int | None = None,
    ) -> Float[Array, "f n c"]:
        """Evaluate every function of `us` at every point of `ys`.

        The branch runs once per function and the trunk once per point (each
        through [`sciinr.nn.apply`][], so batch-norm statistics are over the
        functions and over the points respectively), then one contraction gives
        all $F \\times P$ values. Equal to `apply(onet, us_f, ys_n)` over all pairs
        for pointwise networks.

        **Arguments:**

        - `us`: `F` input functions at the sensors, shape `(F, n_sensors)`.
        - `ys`: `P` query points, shape `(P, in_size)`.
        - `chunk_size`: evaluate the branch and the trunk in chunks of this many
          inputs (bounded memory for large grids; pointwise networks only, as in
          [`sciinr.nn.apply`][]). Keyword-only.

        **Returns:**

        The values $G_\\theta(u_f)(y_n)$, shape `(F, P, out_size)`.

        **Raises:**

        `ValueError` (at trace time) if `us` or `ys` has the wrong shape.
        """
        return self.combine(
            self.coefficients(us, chunk_size=chunk_size),
            self.basis(ys, chunk_size=chunk_size),
        )

    def freeze_aligned(
        self, us: Float[Array, "f m"], ys: Float[Array, "n d"]
    ) -> "DeepONet":
        """Freeze batch-norm statistics in the aligned layout.

        The branch's statistics are those of the functions `us`, the trunk's those
        of the points `ys` (what `aligned(us, ys)` uses). This equals
        [`sciinr.nn.freeze_statistics`][]`(onet, us_pairs, ys_pairs)` over all
        `F * P` pairs, without forming the pairs.

        **Arguments:**

        - `us`: reference functions at the sensors, shape `(F, n_sensors)` (usually
          the training functions).
        - `ys`: reference points, shape `(P, in_size)` (usually the training query
          points).

        **Returns:**

        The DeepONet with pointwise branch and trunk.
        """
        self._check_sensors(us.shape, "us", batched=True)
        self._check_points(ys.shape, "ys", batched=True)
        return eqx.tree_at(
            lambda o: (o.branch, o.trunk),
            self,
            (freeze_statistics(self.branch, us), freeze_statistics(self.trunk, ys)),
        )
