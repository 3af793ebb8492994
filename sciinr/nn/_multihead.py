"""MultiHeadField: tiles -> local coordinates -> shared body -> stacked heads."""

import functools as ft
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int, Key, PRNGKeyArray

from ..checks import (
    check_domain,
    check_positive_int,
    resolve_callable,
    resolve_option,
)
from ._activation import ACTIVATIONS
from ._encoding import AbstractEncoding, encoding_out_size
from ._field import AbstractField, apply, check_point
from ._grid_field import AbstractGridField, check_offset
from ._init import glorot_normal
from ._linear import (
    affine,
    check_rwf_options,
    FactorizedLinear,
    glorot_init,
    LinearKind,
    LINEARS,
    make_linear,
    Parameterization,
)
from ._norm import check_norm, make_norm


NormKind = Literal["batch", "layer", "rms"] | None
HeadKind = Literal["dense", "sparse"]
HEADS: dict[str, str] = {"dense": "dense", "sparse": "sparse"}
"""The head layouts accepted by `heads=`: `"dense"` and `"sparse"`."""

Domain = tuple[tuple[float, float], tuple[float, float]]


class MultiHeadBody(AbstractField):
    """The shared body of a [`sciinr.nn.MultiHeadField`][]: a field of the local
    coordinates whose values are the features every head reads.

    $$\\hat x \\mapsto \\gamma(\\hat x) \\to \\big[\\text{linear} \\to \\text{norm}
    \\to \\sigma\\big]^{\\text{depth}}$$

    It is [`sciinr.nn.CoordinateMLP`][] without its output layer (`out_size` is the
    width); `MultiHeadField` builds it, and it is reachable as `field.body`.
    """

    encoding: AbstractEncoding | None
    layers: tuple[eqx.nn.Linear | FactorizedLinear, ...]
    norms: tuple[eqx.Module | None, ...]
    activation: Callable
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " width"]:
        """The features at one local coordinate `x` of shape `(in_size,)`.

        **Returns:**

        The last hidden layer's activations, shape `(out_size,)` (the width).
        """
        del key
        check_point(x, self.in_size)
        h = x if self.encoding is None else self.encoding(x)
        for layer, norm in zip(self.layers, self.norms):
            h = affine(layer, h)
            if norm is not None:
                h = norm(h)
            h = self.activation(h)
        return h


def _check_tiles(tiles: object) -> tuple[int, int]:
    if isinstance(tiles, int | np.integer) and not isinstance(tiles, bool):
        tiles = (tiles, tiles)
    try:
        pair = tuple(tiles)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"`tiles` must be a pair of positive ints (Hx, Hy) or one int for "
            f"square tiling, got {type(tiles).__name__} {tiles!r}."
        ) from None
    if len(pair) != 2:
        raise ValueError(
            f"`tiles` must be a pair (Hx, Hy): the field's domain is 2-D, got "
            f"{tiles!r}."
        )
    tx, ty = pair
    return (check_positive_int("tiles[0]", tx), check_positive_int("tiles[1]", ty))


def _check_domain(domain: object) -> Domain:
    low_high = check_domain(
        "domain",
        domain,
        2,
        hint=" MultiHeadField tiles a 2-D domain, e.g. ((0, 1), (0, 1)).",
    )
    return (low_high[0], low_high[1])


def _sparse_init(
    index: Int[Array, " alpha"],
    width: int,
    key: PRNGKeyArray,
    shape: tuple[int, int],
    dtype,
) -> tuple[Float[Array, "out alpha"], Float[Array, " out"]]:
    """The initial weight of one sparse head: columns `index` of a Glorot-normal
    `(out, width)` draw, rescaled to the Glorot variance of an `(out, alpha)` layer.

    With `alpha = width` the factor is 1 and the columns are a permutation of the
    dense head's draw from the same key: the two heads are the same function.
    """
    out, alpha = shape
    full = glorot_normal(key, (out, width), dtype)
    factor = np.sqrt((width + out) / (alpha + out))
    # `jnp.take`, not `full[:, index]`: vmapped over 16k heads the latter took 2 s.
    weight = jnp.take(full, index, axis=1) * jnp.asarray(factor, dtype)
    return weight, jnp.zeros((out,), dtype)


# Both are compiled once per configuration: run op by op, the vmapped construction
# compiled a dozen small programs per new shape (about 1 s).
@eqx.filter_jit
def _draw_index(
    key: PRNGKeyArray, n_heads: int, width: int, alpha: int
) -> Int[Array, "heads alpha"]:
    """`alpha` distinct body neurons per head: the first `alpha` entries of a random
    permutation drawn from head `h`'s key `jr.split(key, n_heads)[h]`."""
    keys = jr.split(key, n_heads)
    index = jax.vmap(lambda k: jr.permutation(k, width)[:alpha])(keys)
    return index.astype(jnp.int32)


@eqx.filter_jit
def _stacked_heads(
    keys: Key[Array, " heads"],
    index: Int[Array, "heads alpha"] | None,
    linear: LinearKind,
    width: int,
    out: int,
    use_bias: bool,
    mu: float,
    sigma: float,
    parameterization: Parameterization,
    dtype,
) -> eqx.nn.Linear | FactorizedLinear:
    """All heads as one layer with a leading head axis: `make_linear` vmapped over
    the head keys (and, for sparse heads, over their neuron indices)."""

    def make(key, head_index):
        if head_index is None:
            n_in, init = width, glorot_init
        else:
            n_in, init = (
                head_index.shape[0],
                ft.partial(_sparse_init, head_index, width),
            )
        return make_linear(
            linear,
            n_in,
            out,
            init=init,
            use_bias=use_bias,
            rwf_mu=mu,
            rwf_sigma=sigma,
            rwf_parameterization=parameterization,
            dtype=dtype,
            key=key,
        )

    return eqx.filter_vmap(make)(keys, index)


class MultiHeadField(AbstractGridField):
    r"""The multi-head ReLU network: one shared body, one small head per tile.

    The rectangular `domain` $[a_1, b_1] \times [a_2, b_2]$ is split into
    $H_x \times H_y$ equal tiles (`tiles`). A point $x$ maps to its tile $(l, k)$
    and to local coordinates $\hat x \in [-1, 1]^2$ in that tile,

    $$u_i = H_i \frac{x_i - a_i}{b_i - a_i}, \qquad
    (l, k) = \big(\min(\lfloor u_1 \rfloor, H_x - 1),\ \min(\lfloor u_2 \rfloor,
    H_y - 1)\big), \qquad \hat x = 2\,(u - (l, k)) - 1,$$

    so tile $(l, k)$ covers $[l, l + 1) \times [k, k + 1)$ in $u$, a point on a
    border belongs to the upper tile, and the domain's upper edges belong to the
    last tiles. The field is

    $$\phi(x) = \tau_{lk}\big(\psi(\hat x)\big),$$

    where the body $\psi$ ([`sciinr.nn.MultiHeadBody`][]: an optional encoding, then
    `depth` hidden layers `linear → norm → activation`, every option of
    [`sciinr.nn.CoordinateMLP`][]) is shared by all tiles, and $\tau_{lk}$ is the
    linear head of tile $(l, k)$. All heads are ONE stacked layer with a leading
    head axis (head $l H_y + k$ for tile $(l, k)$):

    - `heads="dense"`: every head reads all `width_size` body features, weights
      `(H, out, width)`.
    - `heads="sparse"`: head $h$ reads `alpha` body neurons `index[h]`, drawn at
      random without replacement from `key` and fixed (the authors' sparse head
      layer), weights `(H, out, alpha)`. The choice is stored in the module as the
      integer array `index` `(H, alpha)`, which training never changes.

    Heads are built by [`sciinr.nn.make_linear`][] (vmapped over the head axis), so
    `linear="rwf"` factorizes them as well; their initial weights are Glorot-normal
    for their fan-in (`width` or `alpha`). A sparse head takes the columns `index`
    of the dense head's draw from the same key (rescaled to its fan-in), so
    `heads="sparse"` with `alpha = width` is the same function as
    `heads="dense"` built from the same key.

    **Two ways to evaluate.** `__call__(x)` works per point, at any coordinate, so
    the field fits every problem. `render(local_shape)` evaluates the body ONCE on
    the shared local grid of a tile (the paper's *joint input space*) and all heads
    on those features with one matrix product, returning the whole signal
    `(Hx·h, Hy·w, out)`; it equals the per-point call on the pixel grid of `domain`
    (pixel $(i, j)$ at $a + (b - a)(i/N_1, j/N_2)$, [`sciinr.grid`][]) to float
    tolerance, and its cost is the body on $h w$ points plus the head layer, not
    the body on every pixel. [`problems.image.ImageRegression`][] trains a
    multi-head field through it (see [`sciinr.nn.AbstractGridField`][]).

    **Points outside the domain** are an error: the per-point call checks them at
    run time with `eqx.error_if` (under `jit`, an `EquinoxRuntimeError`), instead of
    silently extrapolating the edge tiles. Points within a few float roundings of a
    tile border (or of the domain's edge) are snapped onto it, so that pixel
    coordinates computed in floating point land in the tile their index says.

    **Batch normalization** (`norm="batch"`) normalizes the body's features over
    the coordinates of the batch. `render` evaluates the body once per local
    coordinate, the per-point call on the same grid once per pixel, i.e. each
    local coordinate once per tile: the statistics are the same.
    [`sciinr.nn.freeze_statistics`][] works as for any field.

    ??? cite

        [Multi-Head ReLU Implicit Neural Representation
        Networks](https://arxiv.org/abs/2110.03448) (code:
        [MH-RELU-INR](https://github.com/AlirezaMorsali/MH-RELU-INR))

        ```bibtex
        @article{aftab2021multihead,
          title={Multi-Head ReLU Implicit Neural Representation Networks},
          author={Aftab, Arya and Morsali, Alireza and Ghaemmaghami, Shahrokh},
          journal={arXiv preprint arXiv:2110.03448},
          year={2021}
        }
        ```
    """

    body: MultiHeadBody
    heads: eqx.nn.Linear | FactorizedLinear
    index: Int[Array, "heads alpha"] | None
    final_activation: Callable | None
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    tiles: tuple[int, int] = eqx.field(static=True)
    width_size: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    domain: Domain = eqx.field(static=True)
    head_kind: HeadKind = eqx.field(static=True)
    alpha: int | None = eqx.field(static=True)
    linear: LinearKind = eqx.field(static=True)
    norm: NormKind = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        tiles: int | Sequence[int],
        width_size: int,
        depth: int,
        *,
        domain: Sequence[Sequence[float | int]] = ((0.0, 1.0), (0.0, 1.0)),
        heads: HeadKind = "dense",
        alpha: int | None = None,
        encoding: AbstractEncoding | None = None,
        activation: Callable | str = jax.nn.relu,
        linear: LinearKind = "dense",
        norm: NormKind = None,
        final_activation: Callable | str | None = None,
        head_bias: bool = True,
        rwf_mu: float | int = 1.0,
        rwf_sigma: float | int = 0.1,
        rwf_parameterization: Parameterization = "log",
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the coordinate dimension; must be `2`.
        - `out_size`: the number of output channels.
        - `tiles`: `(Hx, Hy)`, the number of tiles (heads) along each axis; one int
          `n` means `(n, n)`.
        - `width_size`: the width of the body's hidden layers (the features every
          head reads).
        - `depth`: the number of hidden layers of the body, `>= 1` (the heads are
          the output layer, as `eqx.nn.MLP`'s `depth` counts).
        - `domain`: `((a1, b1), (a2, b2))`, the rectangle that is tiled.
          Keyword-only. Defaults to the unit square, the coordinates of
          [`problems.image.ImageRegression`][].
        - `heads`: `"dense"` or `"sparse"`. Keyword-only.
        - `alpha`: the number of body neurons each sparse head reads,
          `1 <= alpha <= width_size`; required for `heads="sparse"` and not
          accepted for `"dense"`. Keyword-only.
        - `encoding`: an encoding of the local coordinates (the body's input), or
          `None` (the paper's network). Keyword-only.
        - `activation`: the body's activation. Keyword-only. Defaults to
          `jax.nn.relu` (the paper).
        - `linear`: `"dense"` or `"rwf"`, for the body and the heads. Keyword-only.
        - `norm`: `None`, `"batch"`, `"layer"` or `"rms"`, after every hidden
          linear layer of the body. Keyword-only.
        - `final_activation`: applied to every head's output, or `None`.
          Keyword-only.
        - `head_bias`: whether each head has a bias (initialised to zero).
          Keyword-only. Defaults to `True`, like the output layer of
          [`sciinr.nn.CoordinateMLP`][] (the authors' experiments use none).
        - `rwf_mu`, `rwf_sigma`, `rwf_parameterization`: the RWF options, used when
          `linear="rwf"`. Keyword-only.
        - `dtype`: the parameter dtype; defaults to JAX's default float.
        - `key`: a JAX PRNG key. Keyword-only. Split as
          `body_key, head_key, index_key = jr.split(key, 3)`: body layer `i` is
          built from `jr.split(body_key, depth)[i]`, head `h` from
          `jr.split(head_key, H)[h]`, and sparse head `h` draws its neurons from
          `jr.split(index_key, H)[h]`.

        **Raises:**

        `ValueError`/`TypeError` naming the argument for: `in_size != 2`, a
        `domain` that is not two `(low, high)` pairs with `low < high`,
        non-positive `tiles`, `depth < 1`, an unknown `heads`, `alpha` missing,
        out of range or given for dense heads, and every `CoordinateMLP` option
        error.
        """
        in_size = check_positive_int("in_size", in_size)
        if in_size != 2:
            raise ValueError(
                f"`in_size` must be 2: MultiHeadField tiles a 2-D domain, got "
                f"{in_size}."
            )
        self.in_size = in_size
        self.out_size = check_positive_int("out_size", out_size)
        self.tiles = _check_tiles(tiles)
        self.width_size = check_positive_int("width_size", width_size)
        self.depth = check_positive_int("depth", depth)
        self.domain = _check_domain(domain)
        self.head_kind = resolve_option("heads", heads, HEADS)  # type: ignore[assignment]
        if self.head_kind == "sparse":
            if alpha is None:
                raise ValueError(
                    "`alpha` is required for `heads='sparse'`: the number of body "
                    f"neurons each head reads, 1 ... {width_size} (`width_size`)."
                )
            alpha = check_positive_int("alpha", alpha)
            if alpha > width_size:
                raise ValueError(
                    f"`alpha` must be at most `width_size` ({width_size}): a sparse "
                    f"head reads `alpha` distinct body neurons, got {alpha}. Use "
                    f"`heads='dense'` to read all of them."
                )
        elif alpha is not None:
            raise ValueError(
                f"`alpha` is only used with `heads='sparse'`, got alpha={alpha!r} "
                "with `heads='dense'` (whose heads read all body neurons)."
            )
        self.alpha = alpha
        resolve_option("linear", linear, LINEARS)
        check_norm(norm)
        check_rwf_options(rwf_mu, rwf_sigma, rwf_parameterization, prefix="rwf_")
        if not isinstance(head_bias, bool):
            raise TypeError(f"`head_bias` must be a bool, got {head_bias!r}.")
        self.linear = linear
        self.norm = norm
        self.final_activation = (
            None
            if final_activation is None
            else resolve_callable("final_activation", final_activation, ACTIVATIONS)
        )
        dtype = jnp.result_type(float) if dtype is None else dtype
        rwf = dict(
            rwf_mu=rwf_mu,
            rwf_sigma=rwf_sigma,
            rwf_parameterization=rwf_parameterization,
            dtype=dtype,
        )

        body_key, head_key, index_key = jr.split(key, 3)
        first = encoding_out_size(in_size, encoding)
        sizes = [first] + [width_size] * depth
        self.body = MultiHeadBody(
            encoding=encoding,
            layers=tuple(
                make_linear(linear, n_in, n_out, key=k, **rwf)  # type: ignore[arg-type]
                for n_in, n_out, k in zip(
                    sizes[:-1], sizes[1:], jr.split(body_key, depth)
                )
            ),
            norms=tuple(make_norm(norm, width_size, dtype) for _ in range(depth)),
            activation=resolve_callable("activation", activation, ACTIVATIONS),
            in_size=in_size,
            out_size=width_size,
        )

        n_heads = self.tiles[0] * self.tiles[1]
        if alpha is None:
            self.index = None
        else:
            self.index = _draw_index(index_key, n_heads, width_size, alpha)
        self.heads = _stacked_heads(
            jr.split(head_key, n_heads),
            self.index,
            linear,
            width_size,
            out_size,
            head_bias,
            float(rwf_mu),
            float(rwf_sigma),
            rwf_parameterization,
            jnp.dtype(dtype),
        )

    @property
    def n_heads(self) -> int:
        """The number of heads, `Hx * Hy`."""
        return self.tiles[0] * self.tiles[1]

    def _tolerance(self, dtype) -> list[float]:
        """How far (in tiles) a point may be from a border and still be snapped on
        it: a few roundings of the coordinate and of its mapping to tiles."""
        eps = float(jnp.finfo(dtype).eps)
        out = []
        for count, (low, high) in zip(self.tiles, self.domain):
            scale = 1.0 + max(abs(low), abs(high)) / (high - low)
            out.append(4.0 * eps * count * scale)
        return out

    def locate(
        self, x: Float[Array, " 2"]
    ) -> tuple[Int[Array, " 2"], Float[Array, " 2"]]:
        """The tile of one point and its local coordinates in that tile.

        **Arguments:**

        - `x`: one point of `domain`, shape `(2,)`.

        **Returns:**

        `(tile, local)`: the tile index `(l, k)` (int32, head `l * Hy + k`) and the
        local coordinates in `[-1, 1]^2`.

        **Raises:**

        `ValueError` if `x` does not have shape `(2,)`; a runtime error
        (`eqx.error_if`) if `x` lies outside `domain`.
        """
        check_point(x, self.in_size)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        dtype = x.dtype
        low = jnp.asarray([a for a, _ in self.domain], dtype)
        span = jnp.asarray([b - a for a, b in self.domain], dtype)
        counts = jnp.asarray(self.tiles, dtype)
        u = (x - low) / span * counts
        nearest = jnp.round(u)
        snap = jnp.abs(u - nearest) <= jnp.asarray(self._tolerance(dtype), dtype)
        # Snapped values keep the derivative 1 with respect to `u`.
        u = jnp.where(snap, u + lax.stop_gradient(nearest - u), u)
        u = eqx.error_if(
            u,
            jnp.any((u < 0) | (u > counts)),
            f"MultiHeadField: a point lies outside `domain` {self.domain}, where "
            "the field is not defined. Rescale the coordinates into the domain or "
            "build the field with a larger `domain`.",
        )
        tile = jnp.clip(jnp.floor(u), 0, counts - 1)
        local = 2 * (u - tile) - 1
        return tile.astype(jnp.int32), local

    def _head(self, head: Int[Array, ""], features: Float[Array, " width"]) -> Array:
        """Head number `head` applied to the body features of one point."""
        arrays, static = eqx.partition(self.heads, eqx.is_array)
        layer = eqx.combine(jtu.tree_map(lambda a: a[head], arrays), static)
        if self.index is not None:
            features = features[self.index[head]]
        y = affine(layer, features)
        if self.final_activation is not None:
            y = self.final_activation(y)
        return y

    def __call__(
        self, x: Float[Array, " 2"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out"]:
        """Evaluate the field at one point `x` of `domain`, shape `(2,)`.

        **Returns:**

        The value of the head of `x`'s tile at `x`'s local coordinates, shape
        `(out_size,)`.

        **Raises:**

        `ValueError` if `x` does not have shape `(2,)`; a runtime error
        (`eqx.error_if`) if `x` lies outside `domain`.
        """
        del key
        tile, local = self.locate(x)
        head = tile[0] * self.tiles[1] + tile[1]
        return self._head(head, self.body(local))

    def head_weights(
        self,
    ) -> tuple[Float[Array, "heads out width"], Float[Array, "heads out"] | None]:
        """All heads as one dense stacked layer.

        **Returns:**

        `(weight, bias)`: the effective weights `(H, out, width)` (for sparse heads,
        zero except at each head's `index`; RWF heads multiplied out) and the biases
        `(H, out)` (`None` without `head_bias`).
        """
        weight = eqx.filter_vmap(lambda layer: layer.weight)(self.heads)
        if self.index is not None:
            zeros = jnp.zeros((self.out_size, self.width_size), weight.dtype)
            weight = jax.vmap(lambda w, i: zeros.at[:, i].add(w))(weight, self.index)
        return weight, self.heads.bias

    def render(
        self,
        local_shape: int | Sequence[int],
        *,
        offset: float | Sequence[float] = 0.0,
        chunk_size: int | None = None,
    ) -> Float[Array, "rows cols out"]:
        r"""The whole signal, from the body evaluated once on the shared local grid.

        Local pixel $(p, q)$ of an $h \times w$ tile sits at the local coordinate
        $\big(2 (p + o_1) / h - 1,\ 2 (q + o_2) / w - 1\big)$, the same in every
        tile: the body is evaluated on these $h w$ points only (through
        [`sciinr.nn.apply`][], so batch normalization sees them), then all heads on
        the features with one matrix product, and the tiles are assembled into the
        image. Pixel $(l h + p,\ k w + q)$ of the result is head $(l, k)$ at local
        pixel $(p, q)$, i.e. the per-point call at
        $a + (b - a)\big((l h + p + o_1) / (H_x h),\ (k w + q + o_2) / (H_y w)\big)$.

        **Arguments:**

        - `local_shape`: `(h, w)`, the pixels per tile.
        - `offset`: a shift of every pixel in `[0, 1)` pixels, one number or one
          per axis (`0.5` gives the pixel centres). Keyword-only.
        - `chunk_size`: evaluate the body in chunks of this many local points
          (bounded memory; only for a body without live batch-norm statistics).
          Keyword-only.

        **Returns:**

        The values, shape `(Hx * h, Hy * w, out_size)`.

        **Raises:**

        `ValueError` naming the argument for a bad `local_shape` or `offset`.
        """
        if isinstance(local_shape, int | np.integer):
            pair = (local_shape, local_shape)
        else:
            pair = tuple(local_shape)
        if len(pair) != 2:
            raise ValueError(
                f"`local_shape` must be (h, w), the pixels of one tile, got "
                f"{local_shape!r}."
            )
        h = check_positive_int("local_shape[0]", pair[0])
        w = check_positive_int("local_shape[1]", pair[1])
        off = check_offset(offset, 2)
        weight, bias = self.head_weights()
        dtype = weight.dtype
        rows = 2.0 * (np.arange(h) + off[0]) / h - 1.0
        cols = 2.0 * (np.arange(w) + off[1]) / w - 1.0
        local = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
        features = apply(self.body, jnp.asarray(local, dtype), chunk_size=chunk_size)
        n_heads, out = self.n_heads, self.out_size
        # One (h w, width) x (width, H out) product for all heads.
        values = features @ weight.reshape(n_heads * out, self.width_size).T
        if bias is not None:
            values = values + bias.reshape(1, n_heads * out)
        if self.final_activation is not None:
            values = self.final_activation(values)
        tx, ty = self.tiles
        values = values.reshape(h, w, tx, ty, out).transpose(2, 0, 3, 1, 4)
        return values.reshape(tx * h, ty * w, out)

    def render_grid(
        self,
        shape: int | Sequence[int],
        *,
        offset: float | Sequence[float] = 0.0,
        chunk_size: int | None = None,
    ) -> Float[Array, "rows cols out"]:
        """The field on the pixel grid of `domain` with `shape = (N1, N2)` points:
        `render((N1 // Hx, N2 // Hy), offset=offset)` (the
        [`sciinr.nn.AbstractGridField`][] interface).

        **Raises:**

        `ValueError` naming `tiles` if they do not divide `shape`.
        """
        pair = (shape, shape) if isinstance(shape, int | np.integer) else tuple(shape)
        if len(pair) != 2:
            raise ValueError(f"`shape` must be (N1, N2), got {shape!r}.")
        n1 = check_positive_int("shape[0]", pair[0])
        n2 = check_positive_int("shape[1]", pair[1])
        tx, ty = self.tiles
        if n1 % tx or n2 % ty:
            raise ValueError(
                f"`tiles` {self.tiles} must divide the grid shape ({n1}, {n2}): every "
                "tile renders the same block of pixels. Use a grid whose sides are "
                f"multiples of {tx} and {ty}, or `tiles` that divide ({n1}, {n2})."
            )
        return self.render((n1 // tx, n2 // ty), offset=offset, chunk_size=chunk_size)
