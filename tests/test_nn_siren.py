"""Tests for `Siren`: its initialisation, its forward pass and its RWF variant."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr.nn as snn


jit_apply = eqx.filter_jit(snn.apply)


@pytest.mark.parametrize("omega0", [30.0, 10.0], ids=["omega30", "omega10"])
def test_weight_bounds(getkey, omega0):
    width = 256
    key = getkey()
    siren = snn.Siren(2, 3, width, 2, omega0=omega0, key=key)
    first, hidden, last = siren.layers
    assert first.weight.shape == (width, 2)
    assert hidden.weight.shape == (width, width)
    assert last.weight.shape == (3, width)
    bounds = [1.0 / 2, np.sqrt(6.0 / width) / omega0, np.sqrt(6.0 / width) / omega0]
    for layer, bound in zip(siren.layers, bounds):
        w = np.abs(np.asarray(layer.weight))
        assert w.max() <= bound
        # Uniform: the sample range nearly fills the bound (P(fail) < 0.9**768).
        assert w.max() > 0.9 * bound
        # ... and the mean of |w| is bound / 2 (std of the mean < bound / 30 here).
        assert abs(w.mean() / bound - 0.5) < 0.1
        n_in = layer.weight.shape[1]
        b = np.abs(np.asarray(layer.bias))
        assert b.max() <= 1 / np.sqrt(n_in)
        if b.size >= 64:  # P(fail) < 0.5**64
            assert b.max() > 0.5 / np.sqrt(n_in)
    # The documented draw: layer i uses `wkey, _ = split(split(key)[i])`, then
    # `split(wkey)` for the weight and the bias.
    for i, k in enumerate(jr.split(key, 3)):
        wkey, bkey = jr.split(jr.split(k)[0])
        layer = siren.layers[i]
        bound = bounds[i]
        expected = jr.uniform(wkey, layer.weight.shape, minval=-bound, maxval=bound)
        np.testing.assert_allclose(layer.weight, expected, rtol=1e-6)


def _siren_by_hand(siren: snn.Siren, x: np.ndarray) -> np.ndarray:
    """`sin(omega0 (W h + b))` per hidden layer, then `W h + b`, in NumPy float64."""
    h = np.asarray(x, np.float64)
    for layer in siren.layers[:-1]:
        W = np.asarray(layer.weight, np.float64)
        b = np.asarray(layer.bias, np.float64)
        h = np.sin(siren.omega0 * (W @ h + b))
    last = siren.layers[-1]
    return np.asarray(last.weight, np.float64) @ h + np.asarray(last.bias, np.float64)


@pytest.mark.parametrize("linear", ["dense", "rwf"])
def test_forward_pass_by_hand(getkey, linear):
    siren = snn.Siren(2, 3, 16, 2, linear=linear, key=getkey())
    xs = jr.uniform(getkey(), (64, 2), minval=-1.0, maxval=1.0)
    ys = jit_apply(siren, xs)
    assert ys.shape == (64, 3)
    assert ys.dtype == jnp.float32
    expected = np.stack([_siren_by_hand(siren, x) for x in np.asarray(xs)])
    # float32 error of the arguments (|omega0 z| up to ~40) is a few 1e-6.
    np.testing.assert_allclose(ys, expected, rtol=0, atol=5e-5)
    assert np.std(expected) > 0.05


def test_forward_pass_by_hand_float64(getkey):
    key, xkey = getkey(), getkey()
    with jax.enable_x64(True):
        siren = snn.Siren(2, 2, 3, 2, omega0=30.0, dtype=jnp.float64, key=key)
        assert all(layer.weight.dtype == jnp.float64 for layer in siren.layers)
        xs = jr.uniform(xkey, (5, 2), jnp.float64, minval=-1.0, maxval=1.0)
        ys = np.asarray(jit_apply(siren, xs))
    expected = np.stack([_siren_by_hand(siren, x) for x in np.asarray(xs)])
    np.testing.assert_allclose(ys, expected, rtol=1e-12, atol=1e-13)
    # omega0 multiplies the bias too: without it the outputs are far off.
    wrong = []
    for x in np.asarray(xs):
        h = x
        for layer in siren.layers[:-1]:
            W, b = np.asarray(layer.weight), np.asarray(layer.bias)
            h = np.sin(siren.omega0 * W @ h + b)
        last = siren.layers[-1]
        wrong.append(np.asarray(last.weight) @ h + np.asarray(last.bias))
    assert np.abs(np.stack(wrong) - expected).max() > 1e-3


@pytest.mark.parametrize("parameterization", ["log", "scale"])
def test_rwf_siren_equals_dense_siren_at_init(getkey, parameterization):
    key = getkey()
    dense = snn.Siren(2, 3, 16, 2, key=key)
    rwf = snn.Siren(
        2, 3, 16, 2, linear="rwf", rwf_parameterization=parameterization, key=key
    )
    assert all(isinstance(layer, eqx.nn.Linear) for layer in dense.layers)
    assert all(isinstance(layer, snn.FactorizedLinear) for layer in rwf.layers)
    for a, b in zip(dense.layers, rwf.layers):
        assert b.parameterization == parameterization
        np.testing.assert_allclose(b.weight, a.weight, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(b.bias, a.bias)
        assert np.abs(np.asarray(b.v) - np.asarray(a.weight)).max() > 1e-3
    xs = jr.uniform(getkey(), (64, 2))
    ys = jit_apply(dense, xs)
    np.testing.assert_allclose(jit_apply(rwf, xs), ys, rtol=1e-5, atol=2e-5)
    # One extra trainable scale per neuron.
    extra = 16 + 16 + 3
    assert snn.num_parameters(rwf) == snn.num_parameters(dense) + extra
    assert snn.num_parameters(dense) == (2 * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3)


def test_single_point_and_depth_zero(getkey):
    siren = snn.Siren(2, 3, 16, 0, key=getkey())
    assert len(siren.layers) == 1
    x = jnp.array([0.5, -0.25])
    (layer,) = siren.layers
    expected = np.asarray(layer.weight) @ np.asarray(x) + np.asarray(layer.bias)
    np.testing.assert_allclose(siren(x), expected, rtol=1e-6)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("omega0", [0.0, -30.0], ids=["0", "-30"])
def test_bad_omega0(getkey, omega0):
    with pytest.raises(ValueError, match="`omega0` must be > 0"):
        snn.Siren(2, 1, 8, 1, omega0=omega0, key=getkey())


def test_bad_options_and_sizes(getkey):
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="Unknown `linear` 'foo'.*'dense', 'rwf'"):
            snn.Siren(2, 1, 8, 1, linear="foo", key=getkey())
    with pytest.raises(ValueError, match="`width_size` must be a positive int"):
        snn.Siren(2, 1, 0, 1, key=getkey())
    with pytest.raises(ValueError, match="`depth` must be an int >= 0"):
        snn.Siren(2, 1, 8, -1, key=getkey())
    with pytest.raises(ValueError, match="`rwf_sigma` must be >= 0|`sigma` must be"):
        snn.Siren(2, 1, 8, 1, linear="rwf", rwf_sigma=-1.0, key=getkey())


def test_wrong_shapes(getkey):
    siren = snn.Siren(2, 3, 16, 2, key=getkey())
    with pytest.raises(ValueError, match=r"`x` must have shape \(2,\)"):
        siren(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`xs` must have shape \(n, 2\).*xs\.T"):
        snn.apply(siren, jnp.zeros((2, 64)))
