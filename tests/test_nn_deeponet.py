"""Tests for `sciinr.nn.DeepONet`: the per-pair call, the aligned layout, batch
statistics, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import central_difference, without_runtime_typechecks

import sciinr.nn as snn


M, D, P = 12, 2, 8  # sensors, query dimension, basis functions per output

# Jitted once per network structure: cheaper than op-by-op dispatch.
jit_aligned = eqx.filter_jit(lambda onet, us, ys, **kw: onet.aligned(us, ys, **kw))
jit_apply = eqx.filter_jit(snn.apply)
jit_freeze_aligned = eqx.filter_jit(lambda onet, us, ys: onet.freeze_aligned(us, ys))
jit_freeze_pairs = eqx.filter_jit(snn.freeze_statistics)
F, N = 5, 7  # functions, points


def _onet(key, *, out_size=1, linear="dense", norm=None, fourier=False):
    branch_key, trunk_key, encoding_key = jr.split(key, 3)
    encoding = (
        snn.FourierFeatures(D, 8, sigma=1.0, key=encoding_key) if fourier else None
    )
    branch = snn.CoordinateMLP(
        M, P * out_size, 16, 2, linear=linear, norm=norm, key=branch_key
    )
    trunk = snn.CoordinateMLP(
        D,
        P * out_size,
        16,
        2,
        activation="tanh",
        linear=linear,
        norm=norm,
        encoding=encoding,
        key=trunk_key,
    )
    onet = snn.DeepONet(branch, trunk, out_size=out_size)
    # A non-zero bias, so that the tests see it.
    return eqx.tree_at(lambda o: o.bias, onet, 0.1 * jnp.arange(1.0, out_size + 1))


def _data(key):
    ukey, ykey = jr.split(key)
    return jr.normal(ukey, (F, M)), jr.uniform(ykey, (N, D))


def _pairs(us, ys):
    """All (function, point) pairs, function-major."""
    return jnp.repeat(us, len(ys), axis=0), jnp.tile(ys, (len(us), 1))


@pytest.mark.parametrize(
    "linear, out_size", [("dense", 1), ("rwf", 3)], ids=["dense-1", "rwf-3"]
)
def test_call_is_the_split_inner_product(getkey, out_size, linear):
    onet = _onet(getkey(), out_size=out_size, linear=linear, fourier=True)
    u, y = jr.normal(getkey(), (M,)), jr.uniform(getkey(), (D,))
    b = np.asarray(onet.branch(u)).reshape(out_size, P)
    t = np.asarray(onet.trunk(y)).reshape(out_size, P)
    expected = np.array([b[j] @ t[j] for j in range(out_size)]) + np.asarray(onet.bias)
    value = onet(u, y)
    assert value.shape == (out_size,)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert onet.n_sensors == M and onet.in_size == D and onet.n_basis == P


@pytest.mark.parametrize(
    "linear, out_size", [("dense", 1), ("rwf", 2)], ids=["dense-1", "rwf-2"]
)
def test_aligned_equals_per_pair(getkey, out_size, linear):
    onet = _onet(getkey(), out_size=out_size, linear=linear, fourier=True)
    us, ys = _data(getkey())
    aligned = jit_aligned(onet, us, ys)
    assert aligned.shape == (F, N, out_size)
    pairs = jit_apply(onet, *_pairs(us, ys)).reshape(F, N, out_size)
    np.testing.assert_allclose(aligned, pairs, rtol=1e-5, atol=1e-6)
    # One pair by hand.
    np.testing.assert_allclose(aligned[3, 5], onet(us[3], ys[5]), rtol=1e-5)
    # In chunks (bounded memory): the same values.
    chunked = jit_aligned(onet, us, ys, chunk_size=3)
    np.testing.assert_allclose(chunked, aligned, rtol=1e-5, atol=1e-6)


def test_batch_statistics_over_functions_and_points(getkey):
    """Aligned: branch statistics over the functions, trunk statistics over the
    points; over the balanced pairs of an aligned batch, the per-pair statistics
    are the same (each function appears N times, each point F times)."""
    onet = _onet(getkey(), norm="batch")
    us, ys = _data(getkey())
    aligned = jit_aligned(onet, us, ys)
    pairs = jit_apply(onet, *_pairs(us, ys)).reshape(F, N, 1)
    np.testing.assert_allclose(aligned, pairs, rtol=1e-4, atol=1e-5)
    # The statistics really are batch statistics: another set of functions changes
    # the values at the same (function, point).
    other = jit_aligned(onet, jnp.concatenate([us, 3 + us]), ys)[:F]
    assert not np.allclose(other, aligned, atol=1e-3)
    # Freezing in the aligned layout = freezing over all pairs; the frozen network
    # reproduces the batch-statistics values on its reference set.
    frozen = jit_freeze_aligned(onet, us, ys)
    frozen_pairs = jit_freeze_pairs(onet, *_pairs(us, ys))
    np.testing.assert_allclose(
        jit_aligned(frozen, us, ys), aligned, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        jit_apply(frozen_pairs, *_pairs(us, ys)).reshape(F, N, 1),
        aligned,
        rtol=1e-4,
        atol=1e-5,
    )
    # Frozen, the DeepONet is pointwise: one function on its own gives its row.
    np.testing.assert_allclose(
        jit_aligned(frozen, us[2:3], ys[4:5])[0, 0], aligned[2, 4], rtol=1e-4, atol=1e-5
    )


def test_derivative_in_the_query_point_matches_finite_differences(getkey):
    with jax.enable_x64(True):
        branch_key, trunk_key = jr.split(getkey())
        branch = snn.CoordinateMLP(M, P, 16, 2, dtype=jnp.float64, key=branch_key)
        trunk = snn.CoordinateMLP(
            D, P, 16, 2, activation="tanh", dtype=jnp.float64, key=trunk_key
        )
        onet = snn.DeepONet(branch, trunk, dtype=jnp.float64)
        u = jr.normal(getkey(), (M,), jnp.float64)
        y = np.array([0.3, 0.7])
        grad = jax.grad(lambda y: onet(u, y)[0])(jnp.asarray(y))
        expected = central_difference(lambda y: onet(u, jnp.asarray(y))[0], y)
        np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9)


def test_jit_and_gradients_in_the_parameters(getkey):
    onet = _onet(getkey(), linear="rwf")
    us, ys = _data(getkey())

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(onet):
        return jnp.sum(jnp.square(onet.aligned(us, ys)))

    g = grads(onet)
    # The bias gradient is 2 * sum of the outputs.
    np.testing.assert_allclose(
        g.bias, 2 * jnp.sum(jit_aligned(onet, us, ys), axis=(0, 1)), rtol=1e-5
    )
    assert all(
        bool(jnp.all(jnp.isfinite(leaf)))
        for leaf in jax.tree_util.tree_leaves(eqx.filter(g, eqx.is_array))
    )


def test_errors_name_the_argument(getkey):
    key1, key2 = jr.split(getkey())
    branch = snn.CoordinateMLP(M, 6, 8, 1, key=key1)
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="same `out_size`"):
            snn.DeepONet(branch, snn.CoordinateMLP(D, 5, 8, 1, key=key2))
        with pytest.raises(ValueError, match="multiple of the DeepONet's `out_size`"):
            snn.DeepONet(branch, snn.CoordinateMLP(D, 6, 8, 1, key=key2), out_size=4)
        with pytest.raises(TypeError, match="`branch` must be a field"):
            snn.DeepONet(lambda u: u, snn.CoordinateMLP(D, 6, 8, 1, key=key2))
        with pytest.raises(ValueError, match="`out_size`"):
            snn.DeepONet(branch, snn.CoordinateMLP(D, 6, 8, 1, key=key2), out_size=0)
        onet = snn.DeepONet(branch, snn.CoordinateMLP(D, 6, 8, 1, key=key2))
        with pytest.raises(ValueError, match=r"12 sensors.*got \(5, 11\)"):
            onet.aligned(jnp.zeros((5, 11)), jnp.zeros((3, D)))
        with pytest.raises(ValueError, match=r"12 sensors.*got \(11,\)"):
            onet(jnp.zeros(11), jnp.zeros(D))
        with pytest.raises(ValueError, match=r"dimension 2.*got \(3,\)"):
            onet.aligned(jnp.zeros((5, M)), jnp.zeros((3,)))
