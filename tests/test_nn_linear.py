"""Tests for `FactorizedLinear` (random weight factorization) and `glorot_linear`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import central_difference, without_runtime_typechecks

import sciinr.nn as snn


# `jax.nn.initializers.glorot_normal` draws a normal truncated at +-2 and divides by
# the standard deviation of that truncated normal, so |w| <= 2 / 0.8796... * std.
_TRUNCATED_STD = 0.87962566103423978

# (in, out): the layer shapes of the small MLPs used across the suite, so that
# compilations are shared between test files.
_SHAPES = [(2, 16), (16, 16), (16, 3)]
_SHAPE_IDS = [f"{n_in}x{n_out}" for n_in, n_out in _SHAPES]


def _scale_array(layer: snn.FactorizedLinear) -> jax.Array:
    """The trainable scale array: `s` for "log", `g` for "scale"."""
    if layer.parameterization == "log":
        assert layer.g is None
        return layer.s
    assert layer.s is None
    return layer.g


@pytest.mark.parametrize("parameterization", ["log", "scale"])
@pytest.mark.parametrize("shape", _SHAPES, ids=_SHAPE_IDS)
def test_effective_weight_is_glorot_draw(getkey, shape, parameterization):
    n_in, n_out = shape
    key = getkey()
    layer = snn.FactorizedLinear(
        n_in, n_out, parameterization=parameterization, key=key
    )
    dense = snn.glorot_linear(n_in, n_out, key=key)
    # The Glorot draw that both layers are documented to use.
    wkey, _ = jr.split(key)
    glorot = snn.glorot_normal(wkey, (n_out, n_in))

    assert layer.v.shape == (n_out, n_in)
    assert layer.bias.shape == (n_out,)
    assert layer.v.dtype == jnp.float32
    np.testing.assert_array_equal(dense.weight, glorot)
    np.testing.assert_array_equal(dense.bias, np.zeros(n_out))
    np.testing.assert_array_equal(layer.bias, np.zeros(n_out))

    if parameterization == "log":
        scale = np.exp(np.asarray(layer.s))
    else:
        scale = np.asarray(layer.g)
    manual = scale[:, None] * np.asarray(layer.v)
    np.testing.assert_allclose(manual, glorot, rtol=1e-6, atol=0)
    np.testing.assert_allclose(layer.weight, glorot, rtol=1e-6, atol=0)
    # The factorization is not trivial: v differs from w by the per-neuron scale.
    assert not np.allclose(layer.v, glorot, rtol=1e-3)


@pytest.mark.parametrize("parameterization", ["log", "scale"])
@pytest.mark.parametrize("shape", [(16, 3)], ids=["16x3"])
def test_effective_weight_is_glorot_draw_float64(getkey, shape, parameterization):
    n_in, n_out = shape
    key = getkey()
    with jax.enable_x64(True):
        layer = snn.FactorizedLinear(
            n_in,
            n_out,
            dtype=jnp.float64,
            parameterization=parameterization,
            key=key,
        )
        dense = snn.glorot_linear(n_in, n_out, dtype=jnp.float64, key=key)
        assert layer.v.dtype == jnp.float64
        assert _scale_array(layer).dtype == jnp.float64
        assert dense.weight.dtype == jnp.float64
        weight = np.asarray(layer.weight)
    np.testing.assert_allclose(weight, dense.weight, rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "mu, sigma",
    [(1.0, 0.1), (0.5, 0.3), (-0.2, 1.0)],
    ids=["default", "mu0.5", "mu-0.2"],
)
@pytest.mark.parametrize("parameterization", ["log", "scale"])
def test_scale_statistics(getkey, mu, sigma, parameterization):
    n_out = 20_000
    layer = snn.FactorizedLinear(
        2, n_out, mu=mu, sigma=sigma, parameterization=parameterization, key=getkey()
    )
    s = np.asarray(layer.s if parameterization == "log" else np.log(layer.g))
    assert s.shape == (n_out,)
    # Standard errors: sigma / sqrt(n) for the mean, sigma / sqrt(2 n) for the std.
    assert abs(s.mean() - mu) < 5 * sigma / np.sqrt(n_out)
    assert abs(s.std() - sigma) < 5 * sigma / np.sqrt(2 * n_out)


def test_sigma_zero_gives_constant_scale(getkey):
    layer = snn.FactorizedLinear(2, 16, mu=0.7, sigma=0.0, key=getkey())
    np.testing.assert_allclose(layer.s, np.full(16, 0.7), rtol=1e-7)


def test_glorot_weight_statistics(getkey):
    # in != out, so that 2 / (in + out) differs from 1 / in, 2 / in and 2 / out.
    n_in, n_out = 300, 200
    std = np.sqrt(2.0 / (n_in + n_out))
    for weight in (
        snn.glorot_linear(n_in, n_out, key=getkey()).weight,
        snn.FactorizedLinear(n_in, n_out, key=getkey()).weight,
    ):
        w = np.asarray(weight, dtype=np.float64)
        n = w.size
        assert w.shape == (n_out, n_in)
        assert abs(w.mean()) < 5 * std / np.sqrt(n)
        # Std of the sample std is about std / sqrt(2 n) (a bit less when truncated).
        assert abs(w.std() / std - 1) < 5 / np.sqrt(2 * n)
        # Truncated at two standard deviations of the underlying normal.
        assert np.abs(w).max() <= 2 / _TRUNCATED_STD * std * (1 + 1e-6)
        assert np.abs(w).max() > 0.95 * 2 / _TRUNCATED_STD * std


@pytest.mark.parametrize("parameterization", ["log", "scale"])
def test_gradients_match_finite_differences(getkey, parameterization):
    n_in, n_out = 3, 4
    key, xkey, ckey = getkey(), getkey(), getkey()
    with jax.enable_x64(True):
        layer = snn.FactorizedLinear(
            n_in,
            n_out,
            dtype=jnp.float64,
            mu=0.5,
            sigma=0.5,
            parameterization=parameterization,
            key=key,
        )
        # A nonzero bias so that its gradient path is exercised at a generic point.
        layer = eqx.tree_at(
            lambda l: l.bias, layer, jnp.array([0.1, -0.2, 0.3, 0.05], jnp.float64)
        )
        xs = jr.normal(xkey, (5, n_in), jnp.float64)
        coeffs = jr.normal(ckey, (5, n_out), jnp.float64)

        @eqx.filter_jit
        def loss(layer):
            ys = jax.vmap(layer)(xs)
            return jnp.sum(coeffs * jnp.tanh(ys))

        grads = eqx.filter_jit(eqx.filter_grad(loss))(layer)
        scale_name = "s" if parameterization == "log" else "g"
        for name in (scale_name, "v", "bias"):
            value = np.asarray(getattr(layer, name))

            def f(array, name=name):
                new = eqx.tree_at(
                    lambda l: getattr(l, name), layer, jnp.asarray(array, jnp.float64)
                )
                return loss(new)

            expected = central_difference(f, value)
            got = np.asarray(getattr(grads, name))
            assert got.shape == value.shape
            assert np.abs(expected).max() > 1e-2  # not a trivially zero gradient
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_log_and_scale_gradients_are_related(getkey):
    # d/ds = g * d/dg at g = exp(s): the two parameterizations are the same function.
    key, xkey = getkey(), getkey()
    with jax.enable_x64(True):
        log = snn.FactorizedLinear(3, 4, dtype=jnp.float64, key=key)
        scale = snn.FactorizedLinear(
            3, 4, dtype=jnp.float64, parameterization="scale", key=key
        )
        x = jr.normal(xkey, (3,), jnp.float64)
        np.testing.assert_allclose(log(x), scale(x), rtol=1e-14)
        grad = eqx.filter_jit(eqx.filter_grad(lambda layer: jnp.sum(jnp.sin(layer(x)))))
        g_log = grad(log)
        g_scale = grad(scale)
        np.testing.assert_allclose(g_log.s, scale.g * g_scale.g, rtol=1e-12)
        np.testing.assert_allclose(g_log.v, g_scale.v, rtol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("parameterization", ["log", "scale"])
def test_from_linear_reproduces_outputs(getkey, use_bias, parameterization):
    linear = eqx.nn.Linear(16, 3, use_bias=use_bias, key=getkey())
    layer = snn.FactorizedLinear.from_linear(
        linear, mu=0.5, sigma=0.2, parameterization=parameterization, key=getkey()
    )
    assert layer.use_bias == use_bias
    assert (layer.bias is None) == (not use_bias)
    assert layer.parameterization == parameterization
    np.testing.assert_allclose(layer.weight, linear.weight, rtol=1e-6, atol=0)
    if use_bias:
        np.testing.assert_array_equal(layer.bias, linear.bias)
    xs = jr.normal(getkey(), (64, 16))
    np.testing.assert_allclose(
        jax.vmap(layer)(xs), jax.vmap(linear)(xs), rtol=1e-5, atol=1e-6
    )
    # The scales are drawn as documented, not copied from anything.
    s = np.asarray(layer.s if parameterization == "log" else jnp.log(layer.g))
    assert np.std(s) > 0


def test_from_linear_rejects_bad_input(getkey):
    with pytest.raises(TypeError, match="linear"):
        snn.FactorizedLinear.from_linear(
            eqx.nn.Conv1d(2, 2, 3, key=getkey()), key=getkey()
        )
    scalar = eqx.nn.Linear("scalar", 3, key=getkey())
    with pytest.raises(ValueError, match="scalar"):
        snn.FactorizedLinear.from_linear(scalar, key=getkey())


def test_call_shapes_and_no_bias(getkey):
    layer = snn.FactorizedLinear(2, 16, use_bias=False, key=getkey())
    assert layer.bias is None
    x = jnp.array([1.0, -2.0])
    y = layer(x)
    assert y.shape == (16,)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, np.asarray(layer.weight) @ np.asarray(x), rtol=1e-5)


def test_parameter_count(getkey):
    log = snn.FactorizedLinear(16, 3, key=getkey())
    scale = snn.FactorizedLinear(16, 3, parameterization="scale", key=getkey())
    no_bias = snn.FactorizedLinear(16, 3, use_bias=False, key=getkey())
    assert snn.num_parameters(log) == 16 * 3 + 3 + 3
    assert snn.num_parameters(scale) == 16 * 3 + 3 + 3
    assert snn.num_parameters(no_bias) == 16 * 3 + 3
    assert snn.num_parameters(snn.glorot_linear(16, 3, key=getkey())) == 16 * 3 + 3


# -- bad input ----------------------------------------------------------------------


def test_unknown_parameterization(getkey):
    # Users (without the suite's runtime type checker) get the registry's error.
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="parameterization.*'log', 'scale'"):
            snn.FactorizedLinear(2, 3, parameterization="exp", key=getkey())
        with pytest.raises(ValueError, match="parameterization.*'log', 'scale'"):
            snn.FactorizedLinear.from_linear(
                eqx.nn.Linear(2, 3, key=getkey()), parameterization="exp", key=getkey()
            )
    # Under the checker, the `Literal` annotation rejects it first.
    with pytest.raises((TypeError, ValueError), match="parameterization"):
        snn.FactorizedLinear(2, 3, parameterization="exp", key=getkey())


@pytest.mark.parametrize("sigma", [-1.0, -1e-3], ids=["-1", "-1e-3"])
def test_negative_sigma(getkey, sigma):
    with pytest.raises(ValueError, match="`sigma` must be >= 0"):
        snn.FactorizedLinear(2, 3, sigma=sigma, key=getkey())


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_mu(getkey, value):
    with pytest.raises(ValueError, match="`mu` must be finite"):
        snn.FactorizedLinear(2, 3, mu=value, key=getkey())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_features=0, out_features=3), "in_features"),
        (dict(in_features=2, out_features=-1), "out_features"),
    ],
    ids=["in0", "out-1"],
)
def test_non_positive_sizes(getkey, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int"):
        snn.FactorizedLinear(**kwargs, key=getkey())
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int"):
        snn.glorot_linear(**kwargs, key=getkey())


@pytest.mark.parametrize("value", [2.5, True], ids=["float", "bool"])
def test_non_int_sizes(getkey, value):
    with pytest.raises(TypeError, match="in_features"):
        snn.FactorizedLinear(value, 3, key=getkey())
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`in_features` must be a positive int"):
            snn.FactorizedLinear(value, 3, key=getkey())
        with pytest.raises(TypeError, match="`out_features` must be a positive int"):
            snn.glorot_linear(3, value, key=getkey())


def test_int_hyperparameters_are_accepted(getkey):
    key = getkey()
    from_ints = snn.FactorizedLinear(16, 3, mu=1, sigma=0, key=key)
    from_floats = snn.FactorizedLinear(16, 3, mu=1.0, sigma=0.0, key=key)
    np.testing.assert_array_equal(from_ints.s, from_floats.s)
    np.testing.assert_allclose(from_ints.s, np.ones(3), rtol=1e-7)
