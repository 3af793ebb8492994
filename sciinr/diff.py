r"""Per-point derivative operators in forward mode, for PDE residuals.

Every operator takes a function `f` of ONE point, `f: (d,) -> ()` or `(m,)` (a
field, or a field followed by a hard-constraint transform), and one point `x` of
shape `(d,)`. Batches are the caller's business: `jax.vmap` over the points, as a
PDE problem does for its collocation points.

Inside, everything is forward mode, which costs a small multiple of one evaluation
of `f` per point instead of the nested reverse passes of `jax.grad(jax.grad(f))`:

- first derivatives with `jax.jvp` (one tangent); gradients, Jacobians and
  divergences with `jax.linearize` (the value computed once, the tangents of all
  directions together);
- higher derivatives along one axis as a Taylor expansion along the line
  $x + s\,e_i$, by one of two means (`mode=`):
    - `"jvp"`: nested `jax.jvp` along $e_i$. Written out this is $2^n$ tangent
      evaluations, but the inner levels repeat each other, and XLA's
      common-subexpression elimination leaves about the $n + 1$ distinct Taylor
      terms;
    - `"taylor"`: one pass of `jax.experimental.jet` carrying the Taylor
      coefficients $1 \dots n$;
    - `"auto"` (the default): nested `jvp` up to order 6, Taylor mode above.
      Measured on one CPU core for a 4 x 256 tanh MLP at 4096 points
      (`benchmarks/pinn.py`), nested `jvp` runs faster at every order up to 8
      (`jet` also multiplies the Taylor terms of the input by those of the
      weights, which are zero), but its trace and compile time grows like $2^n$;
- mixed partials such as $u_{xt}$ by nesting those: the axis of highest order
  innermost, the others by forward mode over it.

In Taylor mode, a function that `jax.experimental.jet` cannot expand is
differentiated with nested `jax.jvp` instead (same values): one with a primitive that
has no Taylor rule (`jet` covers the usual elementwise functions, `tanh`, `sin`,
`exp`, `log`, `erf`, matrix products, reductions, ...; not e.g. `tan`,
`lax.optimization_barrier` or control flow), or one that calls a `jax.custom_jvp`
function (`jax.nn.relu`, `jax.nn.softplus`, ...), which `jet` does not support in
current JAX.

!!! warning "Batch normalization"

    A field with live batch-norm statistics ([`sciinr.nn.CoordinateBatchNorm`][]) is
    a function of the whole coordinate *set*, not of one point: freeze its
    statistics on the collocation batch first
    (`f = sciinr.nn.freeze_statistics(field, xs)`) and differentiate the frozen,
    pointwise field. The PDE problems of `problems.pinn` do this for you.
"""

import operator
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.extend
import jax.numpy as jnp
from jax.experimental import jet as jax_jet
from jaxtyping import Array, Float


__all__ = [
    "derivative",
    "derivatives",
    "divergence",
    "grad",
    "laplacian",
    "MODES",
    "partials",
]

Point = Float[Array, " d"]
Mode = Literal["auto", "jvp", "taylor"]


# ------------------------------------------------------------------------------------
# Checks (at trace time: shapes and integers are static)
# ------------------------------------------------------------------------------------


def _check_point(x: Array, name: str = "x") -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"`{name}` must be an array of shape (d,), got {type(x)}.")
    if len(shape) != 1:
        raise ValueError(
            f"`{name}` must be ONE point of shape (d,), got shape {tuple(shape)}. "
            "The operators of `sciinr.diff` act on one point; batch them with "
            "`jax.vmap`, e.g. `jax.vmap(lambda x: derivative(f, x, 0))(xs)`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating dtype (derivatives with respect to it), "
            f"got {x.dtype}. Use `{name}.astype(float)`."
        )
    return int(shape[0])


def _check_callable(f) -> None:
    if not callable(f):
        raise TypeError(f"`f` must be a callable of one point, got {type(f).__name__}.")


def _check_axis(axis, d: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | jnp.integer):
        raise TypeError(
            f"`{name}` must be an int (an axis of the point), got "
            f"{type(axis).__name__} {axis!r}."
        )
    if not -d <= axis < d:
        raise ValueError(
            f"`{name}` must be an axis of a point with {d} coordinate(s), i.e. in "
            f"[{-d}, {d - 1}], got {axis}."
        )
    return operator.index(axis) % d


def _check_order(order, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, int | jnp.integer):
        raise TypeError(
            f"`{name}` must be an int >= 0, got {type(order).__name__} {order!r}."
        )
    if order < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {order}.")
    return int(order)


def _check_axes(axes, d: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(d))
    if isinstance(axes, int):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(
            f"`axes` must be None or a sequence of ints, got {type(axes).__name__}."
        ) from None
    if not axes:
        raise ValueError("`axes` must name at least one axis, got ().")
    checked = tuple(_check_axis(a, d, f"axes[{i}]") for i, a in enumerate(axes))
    if len(set(checked)) != len(checked):
        raise ValueError(f"`axes` must not repeat an axis, got {axes}.")
    return checked


def _multi_index(axis, order, d: int) -> dict[int, int]:
    """`{axis: order}` of a (possibly mixed) partial derivative, zeros dropped."""
    if isinstance(axis, int | jnp.integer) and not isinstance(axis, bool):
        return {_check_axis(axis, d): _check_order(order)}
    try:
        axes = tuple(axis)
    except TypeError:
        raise TypeError(
            f"`axis` must be an int or a sequence of ints (a mixed partial), got "
            f"{type(axis).__name__} {axis!r}."
        ) from None
    if not axes:
        raise ValueError("`axis` must name at least one axis, got ().")
    if isinstance(order, int | jnp.integer) and not isinstance(order, bool):
        orders = (order,) * len(axes)
    else:
        try:
            orders = tuple(order)
        except TypeError:
            raise TypeError(
                f"`order` must be an int or a sequence of ints, got "
                f"{type(order).__name__} {order!r}."
            ) from None
        if len(orders) != len(axes):
            raise ValueError(
                f"`order` must give one order per entry of `axis` ({len(axes)}), got "
                f"{len(orders)}: axis={axes}, order={orders}."
            )
    index: dict[int, int] = {}
    for i, (a, n) in enumerate(zip(axes, orders)):
        a = _check_axis(a, d, f"axis[{i}]")
        index[a] = index.get(a, 0) + _check_order(n, f"order[{i}]")
    return index


# ------------------------------------------------------------------------------------
# Taylor mode along one direction
# ------------------------------------------------------------------------------------


def _jet_cannot(err: Exception) -> bool:
    """Whether `err` is one of `jet`'s limitations (not a bug in `f`): a primitive
    with no Taylor rule (a `KeyError` naming the primitive), or a `jax.custom_jvp`
    function (`jax.nn.relu`, `jax.nn.softplus`, ...), whose traced body `jet` leaks
    in this JAX version (an `UnexpectedTracerError`)."""
    if isinstance(err, KeyError):
        return bool(err.args) and isinstance(err.args[0], jax.extend.core.Primitive)
    return isinstance(err, jax.errors.UnexpectedTracerError)


def _partials_fn(
    f: Callable, d: int, requested: Sequence[tuple[int, ...]]
) -> Callable[[Array], dict[tuple[int, ...], Array]]:
    """`y -> {multi-index: partial}` for the `requested` multi-indices (sorted axis
    tuples, `()` for the value), computed in ONE trace.

    Level `k` linearizes level `k - 1` (a function returning every needed partial of
    order `k - 1`) once and applies the linear map to each direction needed at order
    `k`. So the value and the lower orders are computed once and shared: a residual
    needing `u`, `u_t` and `u_xx` runs the network's value through one path only,
    forward and, when a loss is differentiated, backward. (Separate `jvp` calls
    would each carry their own copy of the value path; XLA merges the forward copies
    but not their transposes: measured 30 % slower for the gradient of an
    Allen-Cahn residual, see `benchmarks/pinn.py`.) Tangents nobody asked for (`u_tx`
    here) are dead code and removed by XLA.
    """
    basis = lambda i, y: jnp.zeros((d,), y.dtype).at[i].set(1)
    top = max(len(a) for a in requested)

    def level(k: int) -> Callable:
        if k == 0:
            return lambda y: {(): f(y)}
        previous = level(k - 1)
        needed = sorted({a[:k] for a in requested if len(a) >= k})

        def g(y):
            values, linear = jax.linearize(previous, y)
            out = dict(values)
            for i in sorted({a[-1] for a in needed}):
                tangents = linear(basis(i, y))
                for a in needed:
                    if a[-1] == i:
                        out[a] = tangents[a[:-1]]
            return out

        return g

    return level(top)


def _partials(
    f: Callable, x: Array, requested: Sequence[tuple[int, ...]]
) -> list[Array]:
    """`[∂^a f(x) for a in requested]` from one trace (see `_partials_fn`)."""
    requested = [tuple(sorted(a)) for a in requested]
    values = _partials_fn(f, x.shape[0], requested)(x)
    return [values[a] for a in requested]


def _nested_jvp(f: Callable, x: Array, v: Array, order: int) -> list[Array]:
    """`[f, D_v f, ..., D_v^order f]` at `x` by nested forward mode along `v`, in one
    trace (`_partials_fn` along the direction `v`).

    Written naively this is $2^n$ tangent evaluations, but every level
    differentiates along the same `v`: the inner tangents repeat each other, and
    XLA's common-subexpression elimination leaves about the $n + 1$ distinct Taylor
    terms. Measured on CPU for a 4 x 256 tanh MLP (`benchmarks/pinn.py`), this is
    faster than `jax.experimental.jet` at every order up to 8: `jet`'s rule for
    matrix products also multiplies by the (zero) Taylor terms of the weights.
    """
    g = lambda s: f(x + s[0] * v)  # along the line x + s v
    s0 = jnp.zeros((1,), x.dtype)
    return _partials(g, s0, [(0,) * k for k in range(order + 1)])


def _jet_taylor(f: Callable, x: Array, v: Array, order: int) -> list[Array]:
    """`[f, D_v f, ..., D_v^order f]` at `x` in one Taylor-mode pass (`jet`).

    The input series `(v, 0, ..., 0)` is the straight line `x + s v`; `jet` returns
    derivatives (it scales by the factorials). Where `jet` cannot differentiate `f`
    (see `_jet_cannot`), this falls back to nested `jax.jvp`.
    """
    zeros = jnp.zeros_like(x)
    try:
        primal, series = jax_jet.jet(f, (x,), ((v,) + (zeros,) * (order - 1),))
    except (KeyError, jax.errors.UnexpectedTracerError) as err:
        if not _jet_cannot(err):
            raise
        return _nested_jvp(f, x, v, order)
    return [primal, *series]


MODES = ("auto", "jvp", "taylor")
"""The values of the `mode` argument of the operators."""

_AUTO_TAYLOR_ORDER = 7
"""`mode="auto"` uses nested `jvp` below this order and Taylor mode from it on.
Measured (one core, 4 x 256 tanh MLP, 4096 points): nested `jvp` ran 15 % faster
than `jet` at order 5, 30 % at 6, 6 % at 8, but compiled in 1.9 s against 1.5 s at
order 6 and in 7.9 s against 3.1 s at order 8."""


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(
            f"Unknown `mode` {mode!r}. Valid values: {', '.join(map(repr, MODES))}."
        )
    return mode


def _taylor(f: Callable, x: Array, v: Array, order: int, mode: str) -> list[Array]:
    """`[f(x), D_v f(x), ..., D_v^order f(x)]`: derivatives along the line `x + s v`."""
    if order == 0:
        return [f(x)]
    if order == 1:
        primal, tangent = jax.jvp(f, (x,), (v,))
        return [primal, tangent]
    if mode == "taylor" or (mode == "auto" and order >= _AUTO_TAYLOR_ORDER):
        return _jet_taylor(f, x, v, order)
    return _nested_jvp(f, x, v, order)


def _basis(x: Array, axes: Sequence[int]) -> Array:
    """The unit vectors `e_i` for `i` in `axes`, shape `(len(axes), d)`."""
    return jnp.eye(x.shape[0], dtype=x.dtype)[jnp.asarray(axes)]


# ------------------------------------------------------------------------------------
# Public operators
# ------------------------------------------------------------------------------------


def derivative(
    f: Callable[[Point], Array],
    x: Point,
    axis: int | Sequence[int],
    order: int | Sequence[int] = 1,
    *,
    mode: Mode = "auto",
) -> Array:
    r"""A partial derivative of `f` at one point `x`, in forward mode.

    With an int `axis` this is $\partial^n f / \partial x_{\text{axis}}^n$ for
    `order` $= n$. With a sequence of axes it is the mixed partial
    $\prod_k \partial^{n_k}/\partial x_{a_k}^{n_k}$, with `order` one int for every
    axis or one per axis (repeated axes add up):

    ```python
    u_t = derivative(u, x, 0)                          # du/dt
    u_xx = derivative(u, x, 1, order=2)                # d2u/dx2
    u_tx = derivative(u, x, (0, 1))                    # d2u/dt dx
    u_txx = derivative(u, x, (0, 1), order=(1, 2))     # d3u/dt dx2
    ```

    A mixed partial differentiates the axis of highest order innermost and the
    others by forward mode over it.

    **Arguments:**

    - `f`: a function of one point, `(d,) -> ()` or `(m,)`: a field, or a field
      followed by a transform.
    - `x`: the point, shape `(d,)`, floating dtype. Batch with `jax.vmap`.
    - `axis`: the axis (an int; negative counts from the end), or a sequence of
      axes for a mixed partial.
    - `order`: the order $\ge 0$ (`0` returns `f(x)`), or one order per axis.
    - `mode`: `"auto"`, `"jvp"` (nested `jax.jvp`) or `"taylor"`
      (`jax.experimental.jet`) for orders $\ge 2$ along one axis; see the module
      docs. Keyword-only.

    **Returns:**

    The derivative, with the shape and dtype of `f(x)`.

    **Raises:**

    `ValueError`/`TypeError` naming the argument for a batch of points (`x` not 1-D),
    a non-float `x`, an axis out of range, a negative or non-int order, orders that
    do not match the axes, or an unknown `mode`.
    """
    _check_callable(f)
    d = _check_point(x)
    mode = _check_mode(mode)
    index = {a: n for a, n in _multi_index(axis, order, d).items() if n > 0}
    if not index:
        return f(x)
    if len(index) == 1:
        ((axis, order),) = index.items()
        return _taylor(f, x, _basis(x, (axis,))[0], order, mode)[-1]
    multi = tuple(a for a, n in sorted(index.items()) for _ in range(n))
    return _partials(f, x, [multi])[0]


def derivatives(
    f: Callable[[Point], Array],
    x: Point,
    axis: int,
    max_order: int,
    *,
    mode: Mode = "auto",
) -> Array:
    r"""All derivatives of `f` along one axis up to `max_order`, together.

    $$\Big[f(x),\ \partial_i f(x),\ \partial_i^2 f(x),\ \dots,\
    \partial_i^{n} f(x)\Big], \qquad i = \text{axis},\ n = \text{max\_order}.$$

    The orders share their computations (one Taylor expansion along $e_i$), so
    this costs what the highest order alone costs: the cheapest way to get $u$,
    $u_x$ and $u_{xx}$ for a residual.

    ```python
    u, u_x, u_xx = derivatives(u_fn, x, 1, 2)
    ```

    **Arguments:**

    - `f`: a function of one point, `(d,) -> ()` or `(m,)`.
    - `x`: the point, shape `(d,)`, floating dtype.
    - `axis`: the axis (an int).
    - `max_order`: the highest order $n \ge 0$.
    - `mode`: `"auto"`, `"jvp"` or `"taylor"`, as for
      [`sciinr.diff.derivative`][]. Keyword-only.

    **Returns:**

    The orders `0 ... max_order` stacked on a leading axis: shape
    `(max_order + 1, *f(x).shape)`.

    **Raises:**

    `ValueError`/`TypeError` naming the argument, as for
    [`sciinr.diff.derivative`][].
    """
    _check_callable(f)
    d = _check_point(x)
    axis = _check_axis(axis, d)
    max_order = _check_order(max_order, "max_order")
    mode = _check_mode(mode)
    return jnp.stack(_taylor(f, x, _basis(x, (axis,))[0], max_order, mode))


def partials(
    f: Callable[[Point], Array],
    x: Point,
    partials: Sequence[int | Sequence[int]],
) -> tuple[Array, ...]:
    r"""The value of `f` and several partial derivatives at one point, in one pass.

    Each entry of `partials` is a multi-index written as the axes to differentiate
    along, one entry per derivative: `(0,)` for $\partial_0 f$, `(1, 1)` for
    $\partial_1^2 f$, `(0, 1, 1)` for $\partial_0 \partial_1^2 f$ (an int is one
    first derivative). They are computed in ONE trace of nested
    `jax.linearize`s, so the value and the lower orders are computed once and shared
    by all of them (see `_partials_fn`): the cheapest way to write a residual that
    needs several derivatives, especially when the residual is differentiated again
    with respect to the parameters.

    ```python
    u, u_t, u_xx = partials(u_fn, x, [(0,), (1, 1)])
    u, u_xx, u_yy = partials(u_fn, x, [(1, 1), (2, 2)])      # u(t, x, y)
    ```

    **Arguments:**

    - `f`: a function of one point, `(d,) -> ()` or `(m,)`.
    - `x`: the point, shape `(d,)`, floating dtype.
    - `partials`: the multi-indices, a sequence of axis tuples (or ints).

    **Returns:**

    `(f(x), d_1, d_2, ...)`: the value and one array per multi-index, each with the
    shape of `f(x)`.

    **Raises:**

    `ValueError`/`TypeError` naming the argument for a batch of points, a non-float
    `x`, an empty `partials`, or axes out of range.
    """
    _check_callable(f)
    d = _check_point(x)
    if isinstance(partials, int | jnp.integer) or not isinstance(partials, Sequence):
        raise TypeError(
            "`partials` must be a sequence of multi-indices such as [(0,), (1, 1)], "
            f"got {partials!r}."
        )
    if not partials:
        raise ValueError("`partials` must name at least one derivative, got [].")
    requested = []
    for i, entry in enumerate(partials):
        axes = (entry,) if isinstance(entry, int | jnp.integer) else tuple(entry)
        requested.append(
            tuple(_check_axis(a, d, f"partials[{i}][{j}]") for j, a in enumerate(axes))
        )
    return tuple(_partials(f, x, [(), *requested]))


def grad(f: Callable[[Point], Array], x: Point) -> Array:
    r"""The gradient (or Jacobian) of `f` at one point, in forward mode.

    `jax.linearize` computes `f(x)` once; the tangents of the `d` unit directions
    then run together.

    **Arguments:**

    - `f`: a function of one point, `(d,) -> ()` or `(m,)`.
    - `x`: the point, shape `(d,)`, floating dtype.

    **Returns:**

    $\partial f / \partial x$ with the coordinate axis last: shape `(d,)` for a
    scalar `f`, `(m, d)` (the Jacobian) for `f: (d,) -> (m,)`.

    **Raises:**

    `ValueError`/`TypeError` for a batch of points or a non-float `x`.
    """
    _check_callable(f)
    d = _check_point(x)
    _, f_jvp = jax.linearize(f, x)
    columns = jax.vmap(f_jvp)(_basis(x, range(d)))  # (d, *out)
    return jnp.moveaxis(columns, 0, -1)


def laplacian(
    f: Callable[[Point], Array],
    x: Point,
    *,
    axes: Sequence[int] | None = None,
    mode: Mode = "auto",
) -> Array:
    r"""The Laplacian $\sum_{i} \partial^2 f / \partial x_i^2$ at one point.

    One second-order expansion per axis, run together (`jax.vmap` over the
    directions, with `f(x)` computed once).

    **Arguments:**

    - `f`: a function of one point, `(d,) -> ()` or `(m,)`.
    - `x`: the point, shape `(d,)`, floating dtype.
    - `axes`: the axes summed over, e.g. `(1, 2)` for the spatial Laplacian of
      `u(t, x, y)`. Keyword-only. Defaults to all `d` axes.
    - `mode`: `"auto"`, `"jvp"` or `"taylor"`, as for
      [`sciinr.diff.derivative`][]. Keyword-only.

    **Returns:**

    The Laplacian, with the shape of `f(x)`.

    **Raises:**

    `ValueError`/`TypeError` for a batch of points, a non-float `x`, axes out of
    range or repeated, or an unknown `mode`.
    """
    _check_callable(f)
    d = _check_point(x)
    axes = _check_axes(axes, d)
    mode = _check_mode(mode)
    if mode == "taylor":
        second = jax.vmap(lambda v: _taylor(f, x, v, 2, mode)[2])(_basis(x, axes))
        return jnp.sum(second, axis=0)
    return sum(_partials(f, x, [(i, i) for i in axes]))


def divergence(
    f: Callable[[Point], Array], x: Point, *, axes: Sequence[int] | None = None
) -> Array:
    r"""The divergence $\sum_k \partial f_k / \partial x_{a_k}$ of a vector field.

    **Arguments:**

    - `f`: a vector field of one point, `(d,) -> (k,)`, with one component per axis
      in `axes` (`k = d` by default).
    - `x`: the point, shape `(d,)`, floating dtype.
    - `axes`: the axes $a_k$ that the components of `f` belong to, e.g. `(1, 2)` for
      a velocity `(v_x, v_y)` of `(t, x, y)`. Keyword-only. Defaults to all axes.

    **Returns:**

    The divergence, a scalar.

    **Raises:**

    `ValueError`/`TypeError` for a batch of points, a non-float `x`, axes out of
    range, or an `f` whose output does not have one component per axis.
    """
    _check_callable(f)
    d = _check_point(x)
    axes = _check_axes(axes, d)
    value, f_jvp = jax.linearize(f, x)
    if value.shape != (len(axes),):
        raise ValueError(
            f"`f` must return one component per axis in `axes` {axes}, i.e. shape "
            f"({len(axes)},), got {value.shape}."
        )
    columns = jax.vmap(f_jvp)(_basis(x, axes))  # row k: d f / d x_{a_k}
    return jnp.trace(columns)
