import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

from sciinr import diff
from sciinr.nn import CoordinateMLP, FourierFeatures, trainable


# A polynomial, a sine-exponential product and a vector of both, with their partial
# derivatives written out by hand: d[(i, j)] is d^i/dx0^i d^j/dx1^j.
A, B = 1.7, -0.6


def poly(x):
    return x[0] ** 3 * x[1] ** 2 + 2 * x[0] ** 4 - x[1] + 0.5


def poly_d(x, i, j):
    x0, x1 = float(x[0]), float(x[1])
    # d^i/dx0^i of x0^3 (times) d^j/dx1^j of x1^2, plus the separate terms.
    d_x0_cubed = [x0**3, 3 * x0**2, 6 * x0, 6.0, 0.0][i]
    d_x1_squared = [x1**2, 2 * x1, 2.0, 0.0, 0.0][j]
    value = d_x0_cubed * d_x1_squared
    if j == 0:
        value += 2 * [x0**4, 4 * x0**3, 12 * x0**2, 24 * x0, 24.0][i]
    if i == 0:
        value += [-x1 + 0.5, -1.0, 0.0, 0.0, 0.0][j]
    return value


def sinexp(x):
    return jnp.sin(A * x[0]) * jnp.exp(B * x[1])


def sinexp_d(x, i, j):
    x0, x1 = float(x[0]), float(x[1])
    # d^i sin(a x) = a^i sin(a x + i pi / 2); d^j exp(b y) = b^j exp(b y).
    return A**i * math.sin(A * x0 + i * math.pi / 2) * B**j * math.exp(B * x1)


FUNCTIONS = {"polynomial": (poly, poly_d), "sin-exp": (sinexp, sinexp_d)}
POINT = (0.3, -0.8)


def _rel_close(actual, expected, tol):
    actual = np.asarray(actual, np.float64)
    assert np.all(np.abs(actual - expected) <= tol * (1 + np.abs(expected))), (
        actual,
        expected,
    )


# Every case of a test is computed in one jitted function: one compilation per mode.
SINGLE = [(axis, order) for axis in (0, 1) for order in (1, 2, 3, 4)]
MIXED = [
    ((0, 1), 1, (1, 1)),
    ((1, 0), 1, (1, 1)),
    ((0, 1), (1, 2), (1, 2)),
    ((0, 1), (2, 1), (2, 1)),
    ((1, 0, 1), 1, (1, 2)),  # repeated axes add up
    ((0, 1), (2, 2), (2, 2)),
    ((0, 1), (3, 1), (3, 1)),
    ((-1, 0), (1, 3), (3, 1)),
]


@pytest.mark.parametrize("mode", ["jvp", "taylor"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_derivative_matches_analytic(mode, name):
    """Orders 1-4 along each axis and mixed partials up to order 4, in float64."""
    f, df = FUNCTIONS[name]
    with jax.enable_x64(True):
        x = jnp.array(POINT, jnp.float64)

        @jax.jit
        def all_cases(x):
            single = [diff.derivative(f, x, a, n, mode=mode) for a, n in SINGLE]
            mixed = [diff.derivative(f, x, a, n, mode=mode) for a, n, _ in MIXED]
            return jnp.stack(single), jnp.stack(mixed)

        single, mixed = all_cases(x)
        assert single.dtype == jnp.float64 and single.shape == (len(SINGLE),)
        expected = [df(x, n, 0) if a == 0 else df(x, 0, n) for a, n in SINGLE]
        _rel_close(single, np.array(expected), 1e-10)
        _rel_close(mixed, np.array([df(x, *ij) for _, _, ij in MIXED]), 1e-10)


def test_auto_mode_and_float32():
    """`"auto"` equals the explicit modes; orders 1-2 in float32 to 1e-5."""
    with jax.enable_x64(True):
        x64 = jnp.array(POINT, jnp.float64)
        for mode in ("jvp", "taylor"):
            np.testing.assert_allclose(
                diff.derivative(sinexp, x64, (0, 1), (2, 1)),
                diff.derivative(sinexp, x64, (0, 1), (2, 1), mode=mode),
                rtol=1e-12,
            )
    x = jnp.array(POINT, jnp.float32)
    got = jax.jit(
        lambda x: jnp.stack([diff.derivative(sinexp, x, 0, n) for n in (1, 2)])
    )(x)
    assert got.dtype == jnp.float32
    _rel_close(got, np.array([sinexp_d(x, 1, 0), sinexp_d(x, 2, 0)]), 1e-5)


def test_order_zero_and_negative_axis():
    x = jnp.array(POINT)
    assert diff.derivative(sinexp, x, 1, 0) == sinexp(x)
    assert diff.derivative(sinexp, x, (0, 1), 0) == sinexp(x)
    np.testing.assert_allclose(
        diff.derivative(sinexp, x, -1, 2), diff.derivative(sinexp, x, 1, 2)
    )


@pytest.mark.parametrize("mode", ["jvp", "taylor"])
def test_vector_valued_functions_and_all_orders(mode):
    """A function with values `(3,)` keeps its shape; `derivatives` stacks orders."""
    f = lambda x: jnp.stack([poly(x), sinexp(x), x[0] * x[1]])
    with jax.enable_x64(True):
        x = jnp.array(POINT, jnp.float64)

        @jax.jit
        def cases(x):
            return (
                diff.derivative(f, x, 0, 3, mode=mode),
                diff.derivative(f, x, (0, 1), mode=mode),
                [diff.derivatives(f, x, 1, n, mode=mode) for n in (0, 1, 2, 4)],
            )

        third, mixed, stacked = cases(x)
        assert third.shape == mixed.shape == (3,)
        _rel_close(third, [poly_d(x, 3, 0), sinexp_d(x, 3, 0), 0.0], 1e-10)
        _rel_close(mixed, [poly_d(x, 1, 1), sinexp_d(x, 1, 1), 1.0], 1e-10)
        for n, got in zip((0, 1, 2, 4), stacked):
            assert got.shape == (n + 1, 3)
            expected = [
                [poly_d(x, 0, k), sinexp_d(x, 0, k), [x[0] * x[1], x[0], 0, 0, 0][k]]
                for k in range(n + 1)
            ]
            _rel_close(got, np.array(expected, np.float64), 1e-10)


def test_grad_and_jacobian():
    x = jnp.array(POINT)
    g = diff.grad(sinexp, x)
    assert g.shape == (2,)
    _rel_close(g, [sinexp_d(x, 1, 0), sinexp_d(x, 0, 1)], 1e-5)
    f = lambda x: jnp.stack([poly(x), sinexp(x), x[0]])
    jac = diff.grad(f, x)
    assert jac.shape == (3, 2)
    expected = [
        [poly_d(x, 1, 0), poly_d(x, 0, 1)],
        [sinexp_d(x, 1, 0), sinexp_d(x, 0, 1)],
        [1.0, 0.0],
    ]
    _rel_close(jac, np.array(expected), 1e-5)


@pytest.mark.parametrize("mode", ["jvp", "taylor"])
def test_laplacian(mode):
    with jax.enable_x64(True):
        x = jnp.array([0.3, -0.8, 0.45], jnp.float64)
        # f = sin(a x0) exp(b x1) x2^3: the Laplacian has three terms.
        f = lambda x: sinexp(x) * x[2] ** 3
        s = math.sin(A * 0.3) * math.exp(B * -0.8)
        f_00 = -(A**2) * s * 0.45**3
        f_11 = B**2 * s * 0.45**3
        f_22 = s * 6 * 0.45
        got = jax.jit(
            lambda x: [
                diff.laplacian(f, x, axes=axes, mode=mode)
                for axes in (None, (1, 2), [0])
            ]
        )(x)
        _rel_close(np.array(got), [f_00 + f_11 + f_22, f_11 + f_22, f_00], 1e-10)


def test_divergence():
    x = jnp.array([0.3, -0.8, 0.45])
    # v = (x0^2 x1, sin(x1), x0 x2): div = 2 x0 x1 + cos(x1) + x0.
    v = lambda x: jnp.stack([x[0] ** 2 * x[1], jnp.sin(x[1]), x[0] * x[2]])
    expected = 2 * 0.3 * -0.8 + math.cos(-0.8) + 0.3
    _rel_close(diff.divergence(v, x), expected, 1e-5)
    # The velocity (v_x, v_y) of a function of (t, x, y).
    w = lambda x: jnp.stack([x[1] * x[0], x[2] ** 2])
    _rel_close(diff.divergence(w, x, axes=(1, 2)), 0.3 + 2 * 0.45, 1e-5)


def test_taylor_mode_falls_back_where_jet_cannot():
    with jax.enable_x64(True):
        x = jnp.array([0.3, 0.5], jnp.float64)
        # `jet` has no rule for `tan`: d3/dx3 tan = 6 sec^4 - 4 sec^2.
        f = lambda x: jnp.tan(x[0]) * x[1]
        sec2 = 1 / math.cos(0.3) ** 2
        expected = (6 * sec2**2 - 4 * sec2) * 0.5
        _rel_close(diff.derivative(f, x, 0, 3, mode="taylor"), expected, 1e-10)
        # `jax.nn.softplus` is a custom_jvp function. With s = sigmoid, the
        # derivatives of softplus are s, s (1 - s), s (1 - s) (1 - 2 s).
        g = lambda x: jax.nn.softplus(x[0]) * x[1]
        s = 1 / (1 + math.exp(-0.3))
        expected = s * (1 - s) * (1 - 2 * s) * 0.5
        _rel_close(diff.derivative(g, x, 0, 3, mode="taylor"), expected, 1e-10)


def _field(dtype, key):
    ekey, fkey = jr.split(key)
    return CoordinateMLP(
        2,
        2,
        16,
        2,
        encoding=FourierFeatures(2, 8, sigma=1.0, dtype=dtype, key=ekey),
        activation=jnp.tanh,
        linear="rwf",
        dtype=dtype,
        key=fkey,
    )


def _fd(f, x, axis, order, h):
    """Central finite differences of order 1 or 2 along `axis`."""
    e = np.zeros(x.shape)
    e[axis] = h
    if order == 1:
        return (f(x + e) - f(x - e)) / (2 * h)
    return (f(x + e) - 2 * f(x) + f(x - e)) / h**2


def test_field_derivatives_match_finite_differences(getkey):
    # (Taylor mode falls back to nested jvp for this field: its Fourier features
    # are a custom_jvp function.)
    mode = "auto"
    with jax.enable_x64(True):
        field = _field(jnp.float64, getkey())
        x = jnp.array([0.2, -0.4], jnp.float64)
        value = eqx.filter_jit(field)
        f = lambda y: np.asarray(value(jnp.asarray(y)))
        d_x1 = jax.jit(lambda y: diff.derivative(field, y, 1))
        g = lambda y: np.asarray(d_x1(jnp.asarray(y)))

        @jax.jit
        def ours(x):
            first = [diff.derivative(field, x, a, mode=mode) for a in (0, 1)]
            second = [diff.derivative(field, x, a, 2, mode=mode) for a in (0, 1)]
            return first, second, diff.derivative(field, x, (0, 1), mode=mode)

        first, second, mixed = ours(x)
        x_np = np.asarray(x)
        for axis in (0, 1):
            np.testing.assert_allclose(first[axis], _fd(f, x_np, axis, 1, 1e-6), 1e-6)
            np.testing.assert_allclose(
                second[axis], _fd(f, x_np, axis, 2, 1e-4), 1e-5, 1e-6
            )
        # The mixed partial as a finite difference of the first derivative.
        np.testing.assert_allclose(mixed, _fd(g, x_np, 0, 1, 1e-6), 1e-6)


def test_parameter_gradient_through_derivatives(getkey):
    """Reverse mode over the forward-mode operators, as in a PINN loss, under jit
    and vmap, against a central difference along a random parameter direction."""
    with jax.enable_x64(True):
        field = _field(jnp.float64, getkey())
        xs = jr.uniform(getkey(), (16, 2), jnp.float64, -1, 1)

        @eqx.filter_jit
        def loss(field):
            def residual(x):
                u, _, u_xx = diff.derivatives(field, x, 1, 2)
                return diff.derivative(field, x, 0) - 0.1 * u_xx + u**3

            return jnp.mean(jax.vmap(residual)(xs) ** 2)

        params, static = eqx.partition(field, trainable(field))
        grads = jax.grad(lambda p: loss(eqx.combine(p, static)))(params)
        leaves = jax.tree_util.tree_leaves(params)
        keys = jr.split(getkey(), len(leaves))
        direction = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(params),
            [jr.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)],
        )
        h = 1e-6
        shifted = lambda s: eqx.combine(
            jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction), static
        )
        fd = (loss(shifted(h)) - loss(shifted(-h))) / (2 * h)
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(
                jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array)),
                jax.tree_util.tree_leaves(direction),
            )
        )
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_partials_match_analytic(name):
    """`partials`: the value and several multi-indices (orders 1-4, mixed, in any
    axis order, repeated) from one trace, in float64, against the hand-written
    derivatives; and a vector-valued function keeps its shape."""
    f, df = FUNCTIONS[name]
    requested = [(0,), 1, (1, 1), (0, 1), (1, 0, 1), (0, 0, 0, 1), (1, 1, 1, 1)]
    orders = [(1, 0), (0, 1), (0, 2), (1, 1), (1, 2), (3, 1), (0, 4)]
    with jax.enable_x64(True):
        x = jnp.array(POINT, jnp.float64)
        got = jax.jit(lambda x: jnp.stack(diff.partials(f, x, requested)))(x)
        assert got.dtype == jnp.float64 and got.shape == (len(requested) + 1,)
        expected = [df(x, 0, 0)] + [df(x, *ij) for ij in orders]
        _rel_close(got, np.array(expected), 1e-10)
        g = lambda y: jnp.stack([f(y), 2 * f(y)])
        value, u_t, u_xx = diff.partials(g, x, [(0,), (1, 1)])
        assert value.shape == u_t.shape == u_xx.shape == (2,)
        np.testing.assert_allclose(u_xx, [df(x, 0, 2), 2 * df(x, 0, 2)], rtol=1e-10)
    xs = jnp.array([POINT, (0.1, 0.2)], jnp.float32)
    batched = jax.vmap(lambda y: diff.partials(sinexp, y, [(0, 0)])[1])(xs)
    _rel_close(batched, np.array([sinexp_d(y, 2, 0) for y in np.asarray(xs)]), 1e-5)


def test_batched_with_vmap_and_jit():
    xs = jnp.stack([jnp.linspace(-1, 1, 7), jnp.linspace(0, 2, 7)], axis=-1)
    batched = jax.jit(jax.vmap(lambda x: diff.derivative(sinexp, x, 1, 2)))(xs)
    expected = [sinexp_d(x, 0, 2) for x in np.asarray(xs)]
    _rel_close(batched, np.array(expected), 1e-5)


def test_bad_input_names_the_argument():
    x = jnp.array(POINT)
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match=r"`x` must be ONE point.*jax.vmap"):
            diff.derivative(sinexp, jnp.zeros((4, 2)), 0)
        with pytest.raises(TypeError, match="`x` must have a floating dtype"):
            diff.derivative(sinexp, jnp.array([1, 2]), 0)
        with pytest.raises(ValueError, match=r"`axis` must be an axis.*\[-2, 1\]"):
            diff.derivative(sinexp, x, 2)
        with pytest.raises(TypeError, match="`axis` must be an int"):
            diff.derivative(sinexp, x, 0.5)
        with pytest.raises(ValueError, match="`order` must be an int >= 0, got -1"):
            diff.derivative(sinexp, x, 0, -1)
        with pytest.raises(TypeError, match="`order` must be an int"):
            diff.derivative(sinexp, x, 0, 1.5)
        with pytest.raises(ValueError, match="one order per entry of `axis`"):
            diff.derivative(sinexp, x, (0, 1), (1, 2, 3))
        with pytest.raises(ValueError, match=r"`axis\[1\]` must be an axis"):
            diff.derivative(sinexp, x, (0, 5))
        with pytest.raises(ValueError, match="Unknown `mode` 'reverse'"):
            diff.derivative(sinexp, x, 0, mode="reverse")
        with pytest.raises(TypeError, match="`f` must be a callable"):
            diff.derivative(3.0, x, 0)
        with pytest.raises(ValueError, match="`max_order` must be an int >= 0"):
            diff.derivatives(sinexp, x, 0, -2)
        with pytest.raises(ValueError, match="`axes` must not repeat an axis"):
            diff.laplacian(sinexp, x, axes=(0, 0))
        with pytest.raises(ValueError, match=r"one component per axis.*\(2,\)"):
            diff.divergence(lambda y: y[:1], x)
        with pytest.raises(TypeError, match="`partials` must be a sequence"):
            diff.partials(sinexp, x, 0)
        with pytest.raises(ValueError, match="`partials` must name at least one"):
            diff.partials(sinexp, x, [])
        with pytest.raises(ValueError, match=r"`partials\[1\]\[0\]` must be an axis"):
            diff.partials(sinexp, x, [(0,), (3,)])
        with pytest.raises(ValueError, match="`x` must be ONE point"):
            diff.partials(sinexp, jnp.zeros((4, 2)), [(0,)])
