"""Tests for `CoordinateBatchNorm`, `freeze_statistics` and `has_batch_statistics`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import central_difference

import sciinr.nn as snn


# Evaluate under one jit: one compilation per field structure instead of one per op.
jit_apply = eqx.filter_jit(snn.apply)
jit_freeze = eqx.filter_jit(snn.freeze_statistics)


@eqx.filter_jit
def jit_call(field, x):
    return field(x)


@eqx.filter_jit
def jit_vmap(field, xs):
    return jax.vmap(field)(xs)


@eqx.filter_jit
def jit_grad0(field, x):
    return jax.grad(lambda x: field(x)[0])(x)


@eqx.filter_jit
def jit_jacfwd(field, x):
    return jax.jacfwd(field)(x)


class LinearNorm(snn.AbstractField):
    """A tiny field whose output is the batch-norm output: `norm(W x + b)`."""

    linear: eqx.nn.Linear
    norm: snn.CoordinateBatchNorm
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size, out_size, *, dtype=None, key):
        self.linear = eqx.nn.Linear(in_size, out_size, dtype=dtype, key=key)
        self.norm = snn.CoordinateBatchNorm(out_size, dtype=dtype)
        self.in_size = in_size
        self.out_size = out_size

    def __call__(self, x, *, key=None):
        return self.norm(self.linear(x))


def _mlp(key, *, norm="batch", dtype=None, depth=2, width=16):
    return snn.CoordinateMLP(
        2, 3, width, depth, activation=jnp.tanh, norm=norm, dtype=dtype, key=key
    )


@eqx.filter_jit
def _mlp64(key):
    """A float64 batch-norm MLP (built under jit: one compilation, not one per op)."""
    return _mlp(key, dtype=jnp.float64, width=8)


def _linear_norm_with_weight(key, weight):
    """A `LinearNorm` field with a given, well-conditioned weight (variance >> eps)."""
    field = LinearNorm(2, weight.shape[0], key=key)
    return eqx.tree_at(lambda f: f.linear.weight, field, weight)


_WEIGHT = jnp.array([[1.0, 2.0], [-3.0, 1.0], [0.5, 4.0], [2.0, -2.0], [-1.0, -1.5]])


def test_batch_statistics_normalize_each_channel(getkey):
    field = _linear_norm_with_weight(getkey(), _WEIGHT)
    xs = 3.0 * jr.normal(getkey(), (64, 2))
    ys = np.asarray(jit_apply(field, xs), np.float64)
    assert ys.shape == (64, 5)
    np.testing.assert_allclose(ys.mean(axis=0), np.zeros(5), atol=1e-5)
    np.testing.assert_allclose(ys.std(axis=0), np.ones(5), atol=1e-4)
    # The same numbers from NumPy: biased variance, eps = 1e-5.
    z = np.asarray(xs, np.float64) @ np.asarray(field.linear.weight, np.float64).T
    z = z + np.asarray(field.linear.bias, np.float64)
    expected = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    np.testing.assert_allclose(ys, expected, rtol=1e-4, atol=1e-5)


def test_batch_norm_affine_parameters(getkey):
    field = _linear_norm_with_weight(getkey(), _WEIGHT)
    weight = jnp.array([2.0, 0.5, -1.0, 1.0, 3.0])
    bias = jnp.array([0.5, -3.0, 0.0, 1.0, 0.0])
    field = eqx.tree_at(lambda f: (f.norm.weight, f.norm.bias), field, (weight, bias))
    xs = 3.0 * jr.normal(getkey(), (64, 2))
    ys = np.asarray(jit_apply(field, xs), np.float64)
    np.testing.assert_allclose(ys.mean(axis=0), bias, atol=1e-5)
    np.testing.assert_allclose(ys.std(axis=0), np.abs(weight), rtol=1e-4)


def test_batch_statistics_inside_mlp(getkey):
    # The pre-activation of the first hidden layer is normalized over the batch.
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2), minval=-1.0, maxval=1.0)
    first = LinearNorm(2, 16, key=getkey())
    first = eqx.tree_at(
        lambda f: (f.linear, f.norm), first, (field.layers[0], field.norms[0])
    )
    h = np.asarray(jit_apply(first, xs), np.float64)
    np.testing.assert_allclose(h.mean(axis=0), np.zeros(16), atol=1e-5)
    # Unit variance up to eps: std = sqrt(var / (var + eps)) per channel.
    z = np.asarray(xs, np.float64) @ np.asarray(field.layers[0].weight, np.float64).T
    np.testing.assert_allclose(
        h.std(axis=0), np.sqrt(z.var(0) / (z.var(0) + 1e-5)), rtol=1e-5
    )
    np.testing.assert_allclose(
        h, (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5), rtol=1e-4, atol=1e-5
    )


def test_frozen_equals_batch_statistics_on_reference(getkey):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2))
    frozen = jit_freeze(field, xs)
    np.testing.assert_allclose(
        jit_apply(frozen, xs), jit_apply(field, xs), rtol=1e-5, atol=1e-6
    )
    assert all(norm.frozen for norm in frozen.norms)
    assert not any(norm.frozen for norm in field.norms)
    # The frozen statistics are those of the first layer's pre-activations.
    z = np.asarray(xs, np.float64) @ np.asarray(field.layers[0].weight, np.float64).T
    np.testing.assert_allclose(
        frozen.norms[0].mean.value, z.mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        frozen.norms[0].var.value, z.var(0), rtol=1e-4, atol=1e-7
    )
    # Statistics are buffers, not parameters.
    assert snn.num_parameters(frozen) == snn.num_parameters(field)


def test_frozen_is_pointwise_and_chunk_invariant(getkey):
    field = _mlp(getkey())
    xs_ref = jr.uniform(getkey(), (64, 2))
    xs_new = jr.uniform(getkey(), (48, 2), minval=-0.5, maxval=1.5)
    frozen = jit_freeze(field, xs_ref)
    whole = jit_apply(frozen, xs_new)
    chunks = jnp.concatenate(
        [jit_apply(frozen, xs_new[i : i + 16]) for i in (0, 16, 32)]
    )
    np.testing.assert_allclose(chunks, whole, rtol=1e-6, atol=1e-6)
    # Single points (no `apply`, no axis name) and plain `jax.vmap` agree too.
    np.testing.assert_allclose(
        jit_call(frozen, xs_new[5]), whole[5], rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(jit_vmap(frozen, xs_new), whole, rtol=1e-6, atol=1e-6)
    # Unfrozen, the field is a function of the coordinate set: chunking changes it.
    live = jit_apply(field, xs_new)
    live_chunks = jnp.concatenate(
        [jit_apply(field, xs_new[i : i + 16]) for i in (0, 16, 32)]
    )
    assert np.abs(live_chunks - live).max() > 1e-3


def test_frozen_coordinate_derivatives_match_finite_differences(getkey):
    key, xkey = getkey(), getkey()
    with jax.enable_x64(True):
        field = _mlp64(key)
        xs = jr.uniform(xkey, (32, 2), jnp.float64)
        frozen = jit_freeze(field, xs)
        assert frozen.norms[0].mean.value.dtype == jnp.float64
        x0 = np.array([0.3, 0.7])
        grad = jit_grad0(frozen, jnp.asarray(x0))
        jac = jit_jacfwd(frozen, jnp.asarray(x0))
        values = lambda x: np.asarray(jit_call(frozen, jnp.asarray(x, jnp.float64)))
        expected_jac = np.stack(
            [central_difference(lambda x, i=i: values(x)[i], x0) for i in range(3)]
        )
    assert jac.shape == (3, 2)
    assert np.abs(expected_jac).max() > 1e-2
    np.testing.assert_allclose(grad, expected_jac[0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(jac, expected_jac, rtol=1e-7, atol=1e-9)


def _loss_batch(field, xs, ys):
    return jnp.mean(jnp.square(snn.apply(field, xs) - ys))


def _loss_frozen(field, xs, ys):
    frozen = snn.freeze_statistics(field, xs)
    return jnp.mean(jnp.square(snn.apply(frozen, xs) - ys))


def test_freeze_inside_loss_gives_batch_statistics_gradients(getkey):
    key, xkey, ykey = getkey(), getkey(), getkey()
    value_and_grad = lambda loss: eqx.filter_jit(eqx.filter_value_and_grad(loss))
    with jax.enable_x64(True):
        field = _mlp64(key)
        xs = jr.uniform(xkey, (32, 2), jnp.float64)
        ys = jr.normal(ykey, (32, 3), jnp.float64)
        value_batch, grads_batch = value_and_grad(_loss_batch)(field, xs, ys)
        value_frozen, grads_frozen = value_and_grad(_loss_frozen)(field, xs, ys)
        # Freezing OUTSIDE the loss treats the statistics as constants: different.
        frozen_outside = jit_freeze(field, xs)
        _, grads_outside = value_and_grad(_loss_batch)(frozen_outside, xs, ys)
    np.testing.assert_allclose(value_frozen, value_batch, rtol=1e-13)
    leaves_batch = jax.tree.leaves(grads_batch)
    leaves_frozen = jax.tree.leaves(grads_frozen)
    assert len(leaves_batch) == len(leaves_frozen) == 10  # (W, b) of 3 linears, 2 norms
    for a, b in zip(leaves_batch, leaves_frozen):
        assert a.dtype == b.dtype == jnp.float64
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)
    w_batch = np.asarray(grads_batch.layers[0].weight)
    w_outside = np.asarray(grads_outside.layers[0].weight)
    assert np.abs(w_batch).max() > 1e-3
    assert np.abs(w_outside - w_batch).max() > 1e-6


@pytest.mark.parametrize(
    "call",
    [
        lambda f, xs: f(xs[0]),
        lambda f, xs: jax.vmap(f)(xs),
        lambda f, xs: jax.vmap(f, axis_name="other")(xs),
        lambda f, xs: eqx.filter_jit(f)(xs[0]),
        lambda f, xs: jax.grad(lambda x: f(x)[0])(xs[0]),
    ],
    ids=["single_point", "plain_vmap", "other_axis_name", "jit_point", "grad_x"],
)
def test_batch_norm_outside_apply_raises(getkey, call):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2))
    with pytest.raises(ValueError, match=r"sciinr\.nn\.apply\(field, xs\)"):
        call(field, xs)
    with pytest.raises(ValueError, match="freeze_statistics"):
        call(LinearNorm(2, 3, key=getkey()), xs)


def test_has_batch_statistics(getkey):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2))
    assert snn.has_batch_statistics(field)
    assert snn.has_batch_statistics(LinearNorm(2, 3, key=getkey()))
    assert snn.has_batch_statistics(snn.CoordinateBatchNorm(3))
    frozen = jit_freeze(field, xs)
    assert not snn.has_batch_statistics(frozen)
    # A container with a live and a frozen field still has batch statistics.
    assert snn.has_batch_statistics((frozen, field))
    for norm in (None, "layer", "rms"):
        assert not snn.has_batch_statistics(_mlp(getkey(), norm=norm))


@pytest.mark.parametrize("norm", [None, "layer", "rms"], ids=["none", "layer", "rms"])
def test_freeze_without_batch_norm_returns_field_unchanged(getkey, norm):
    field = _mlp(getkey(), norm=norm)
    xs = jr.uniform(getkey(), (64, 2))
    assert snn.freeze_statistics(field, xs) is field
    siren = snn.Siren(2, 3, 16, 2, key=getkey())
    assert snn.freeze_statistics(siren, xs) is siren


def test_freeze_twice_is_a_no_op(getkey):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2))
    frozen = jit_freeze(field, xs)
    assert snn.freeze_statistics(frozen, xs + 1.0) is frozen


def test_freeze_under_jit(getkey):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (64, 2))
    eager = snn.freeze_statistics(field, xs)
    jitted = eqx.filter_jit(snn.freeze_statistics)(field, xs)
    np.testing.assert_allclose(
        jitted.norms[0].mean.value, eager.norms[0].mean.value, 1e-6
    )
    np.testing.assert_allclose(jitted(xs[3]), eager(xs[3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "xs_shape",
    [(2, 16), (4, 4, 2), (16,)],
    ids=["transpose", "grid", "flat"],
)
def test_freeze_rejects_bad_coordinates(getkey, xs_shape):
    field = _mlp(getkey())
    with pytest.raises(ValueError, match=r"`xs` must have shape \(n, 2\)"):
        snn.freeze_statistics(field, jnp.zeros(xs_shape))


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_layer_and_rms_norm_are_pointwise(getkey, norm):
    field = _mlp(getkey(), norm=norm)
    norm_type = eqx.nn.LayerNorm if norm == "layer" else eqx.nn.RMSNorm
    assert all(isinstance(n, norm_type) for n in field.norms)
    xs = jr.uniform(getkey(), (64, 2))
    ys = jit_apply(field, xs)
    np.testing.assert_allclose(jit_call(field, xs[9]), ys[9], rtol=1e-5, atol=1e-6)
    half = jit_apply(field, xs[:32])
    np.testing.assert_allclose(half, ys[:32], rtol=1e-5, atol=1e-6)


def test_coordinate_batch_norm_bad_input():
    with pytest.raises(ValueError, match="`size` must be a positive int"):
        snn.CoordinateBatchNorm(0)
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        snn.CoordinateBatchNorm(3, eps=0.0)
    norm = snn.CoordinateBatchNorm(3)
    assert norm.eps == 1e-5
    np.testing.assert_array_equal(norm.weight, np.ones(3))
    np.testing.assert_array_equal(norm.bias, np.zeros(3))
    assert norm.mean is None and norm.var is None and not norm.frozen
    with pytest.raises(ValueError, match=r"expects `x` of shape \(3,\)"):
        jax.vmap(norm, axis_name=snn.COORDS)(jnp.zeros((8, 4)))
