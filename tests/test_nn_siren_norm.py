"""Tests for `Siren(norm=...)`: where the norm sits, its statistics, SIREN intact."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr
import sciinr.nn as snn
from sciinr.nn._trig import sin


NORMS = ["batch", "layer", "rms"]
jit_apply = eqx.filter_jit(snn.apply)


def _normalize(z: np.ndarray, norm: str, eps: float = 1e-5) -> np.ndarray:
    """The three norms at initialisation (unit scale, zero shift), by hand, for the
    pre-activations `z` of shape `(n, width)` of a whole batch."""
    if norm == "batch":  # per channel, over the coordinates
        mean = z.mean(axis=0, keepdims=True)
        var = ((z - mean) ** 2).mean(axis=0, keepdims=True)
        return (z - mean) / np.sqrt(var + eps)
    if norm == "layer":  # per point, over the channels
        mean = z.mean(axis=1, keepdims=True)
        var = ((z - mean) ** 2).mean(axis=1, keepdims=True)
        return (z - mean) / np.sqrt(var + eps)
    assert norm == "rms"  # per point, no centring
    return z / np.sqrt((z**2).mean(axis=1, keepdims=True) + eps)


def _by_hand(siren: snn.Siren, xs: np.ndarray, norm: str | None) -> np.ndarray:
    """sin(w0 (W x + b)), then sin(N(w0 (W h + b))) per hidden layer, in float64."""
    h = np.asarray(xs, np.float64)
    for i, layer in enumerate(siren.layers[:-1]):
        W = np.asarray(layer.weight, np.float64)
        b = np.asarray(layer.bias, np.float64)
        z = siren.omega0 * (h @ W.T + b)
        if norm is not None and i > 0:
            z = _normalize(z, norm)
        h = np.sin(z)
    last = siren.layers[-1]
    return h @ np.asarray(last.weight, np.float64).T + np.asarray(last.bias)


@pytest.mark.parametrize("norm", NORMS)
def test_structure_shapes_and_same_linear_layers(getkey, norm):
    key = getkey()
    plain = snn.Siren(2, 3, 16, 3, key=key)
    normed = snn.Siren(2, 3, 16, 3, norm=norm, key=key)
    assert normed.norm == norm and plain.norm is None
    assert plain.norms == (None, None, None)
    # The first sine layer is never normalized; the others are, with width channels.
    assert normed.norms[0] is None
    kind = {
        "batch": snn.CoordinateBatchNorm,
        "layer": eqx.nn.LayerNorm,
        "rms": eqx.nn.RMSNorm,
    }[norm]
    assert all(isinstance(n, kind) for n in normed.norms[1:])
    assert all(n.weight.shape == (16,) for n in normed.norms[1:])
    # SIREN's exact linear layers, whatever the norm (norm layers draw no keys).
    assert eqx.tree_equal(normed.layers, plain.layers)
    # Parameters: the affine scale and shift of the two normalized layers
    # (eqx's RMSNorm has a shift too).
    extra = 2 * (16 + 16)
    assert snn.num_parameters(normed) == snn.num_parameters(plain) + extra
    xs = jr.uniform(getkey(), (50, 2))
    ys = jit_apply(normed, xs)
    assert ys.shape == (50, 3) and ys.dtype == jnp.float32


@pytest.mark.parametrize("norm", [None, *NORMS])
def test_forward_pass_by_hand_float64(getkey, norm):
    key, xkey = getkey(), getkey()
    with jax.enable_x64(True):
        siren = snn.Siren(2, 2, 8, 3, norm=norm, dtype=jnp.float64, key=key)
        xs = jr.uniform(xkey, (40, 2), jnp.float64)
        ys = np.asarray(jit_apply(siren, xs))
    expected = _by_hand(siren, np.asarray(xs), norm)
    np.testing.assert_allclose(ys, expected, rtol=1e-10, atol=1e-12)
    if norm is not None:
        # The norm changes the function (else this test could not fail), ...
        scale = np.abs(expected).max()
        plain = _by_hand(siren, np.asarray(xs), None)
        assert np.abs(expected - plain).max() > 1e-3 * scale
        # ... and normalizing the first layer too would be another function.
        first_too = _by_hand_all_layers(siren, np.asarray(xs), norm)
        assert np.abs(expected - first_too).max() > 1e-3 * scale


def _by_hand_all_layers(siren, xs, norm):
    h = np.asarray(xs, np.float64)
    for layer in siren.layers[:-1]:
        z = siren.omega0 * (h @ np.asarray(layer.weight).T + np.asarray(layer.bias))
        h = np.sin(_normalize(z, norm))
    last = siren.layers[-1]
    return h @ np.asarray(last.weight).T + np.asarray(last.bias)


def test_norm_none_is_siren_bit_for_bit(getkey):
    """`norm=None` computes exactly `sin(omega0 * (x @ W.T + b))` per layer (with the
    package's sine, `sciinr.nn._trig.sin`; `tests/test_nn_fast_trig.py` checks it
    against the library sine)."""
    siren = snn.Siren(2, 1, 32, 3, key=getkey())
    xs = jr.uniform(getkey(), (64, 2))

    def reference(x):
        h = x
        for layer in siren.layers[:-1]:
            h = sin(siren.omega0 * (h @ layer.weight.T + layer.bias))
        return h @ siren.layers[-1].weight.T + siren.layers[-1].bias

    np.testing.assert_array_equal(
        jax.jit(jax.vmap(reference))(xs), jit_apply(siren, xs)
    )


def test_init_keeps_unit_variance_sine_arguments(getkey):
    """The reason the norm sits after omega0: SIREN's hidden sine arguments have
    unit variance at initialisation, which the norm (unit scale) reproduces."""
    siren = snn.Siren(2, 1, 256, 3, key=getkey())
    xs = np.asarray(jr.uniform(getkey(), (2048, 2)), np.float64)
    h = np.sin(
        siren.omega0
        * (xs @ np.asarray(siren.layers[0].weight).T + np.asarray(siren.layers[0].bias))
    )
    for layer in siren.layers[1:-1]:
        z = siren.omega0 * (h @ np.asarray(layer.weight).T + np.asarray(layer.bias))
        # Var = fan_in * (6 / fan_in / 3) * E[sin^2] = 2 * 1/2 = 1 (SIREN, Thm 1.8),
        # plus omega0^2 Var(b) = 900 / (3 * 256) ~ 1.2 from the PyTorch-style bias.
        assert 1.5 < z.var() < 3.0
        assert abs(z.mean()) < 0.5
        h = np.sin(z)


def test_batch_norm_frozen_equals_batch_statistics_on_training_grid(getkey):
    siren = snn.Siren(2, 1, 16, 3, norm="batch", key=getkey())
    xs, _ = sciinr.grid((12, 12))
    frozen = snn.freeze_statistics(siren, xs)
    assert not snn.has_batch_statistics(frozen) and snn.has_batch_statistics(siren)
    batch = jit_apply(siren, xs)
    np.testing.assert_allclose(jit_apply(frozen, xs), batch, rtol=1e-5, atol=1e-5)
    # Pointwise once frozen: one point alone gives its value in the batch ...
    np.testing.assert_allclose(frozen(xs[37]), batch[37], rtol=1e-5, atol=1e-5)
    # ... while the unfrozen field is a function of the coordinate set.
    shifted = xs[:40]
    assert np.abs(jit_apply(siren, shifted) - batch[:40]).max() > 1e-3
    np.testing.assert_allclose(
        jit_apply(frozen, shifted), batch[:40], rtol=1e-5, atol=1e-5
    )
    # The stored statistics are those of the scaled arguments of layers 2 and 3.
    h = np.sin(siren.omega0 * (np.asarray(xs) @ np.asarray(siren.layers[0].weight).T
                               + np.asarray(siren.layers[0].bias)))  # fmt: skip
    z = siren.omega0 * (h @ np.asarray(siren.layers[1].weight).T
                        + np.asarray(siren.layers[1].bias))  # fmt: skip
    np.testing.assert_allclose(frozen.norms[1].mean.value, z.mean(0), atol=1e-4)
    np.testing.assert_allclose(frozen.norms[1].var.value, z.var(0), rtol=1e-4)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_layer_and_rms_norm_are_pointwise(getkey, norm):
    siren = snn.Siren(2, 2, 16, 2, norm=norm, key=getkey())
    xs = jr.uniform(getkey(), (20, 2))
    assert snn.freeze_statistics(siren, xs) is siren
    np.testing.assert_allclose(
        jit_apply(siren, xs)[5], siren(xs[5]), rtol=1e-5, atol=1e-6
    )


def test_batch_norm_siren_outside_apply_is_a_clear_error(getkey):
    siren = snn.Siren(2, 1, 8, 2, norm="batch", key=getkey())
    with pytest.raises(ValueError, match="freeze_statistics"):
        siren(jnp.zeros(2))


def test_parameter_gradient_matches_finite_differences(getkey):
    """The loss gradient with respect to the scale of a batch-norm layer."""
    key, xkey = getkey(), getkey()
    with jax.enable_x64(True):
        siren = snn.Siren(2, 1, 6, 2, norm="batch", dtype=jnp.float64, key=key)
        xs = jr.uniform(xkey, (30, 2), jnp.float64)
        target = jnp.sin(3.0 * xs[:, :1])

        @jax.jit
        def loss(gamma):
            field = eqx.tree_at(lambda s: s.norms[1].weight, siren, gamma)
            return jnp.mean((snn.apply(field, xs) - target) ** 2)

        gamma = siren.norms[1].weight + 0.1 * jnp.arange(6.0)
        grad = np.asarray(jax.grad(loss)(gamma))
        eps = 1e-6
        fd = np.array([
            (loss(gamma.at[i].add(eps)) - loss(gamma.at[i].add(-eps))) / (2 * eps)
            for i in range(6)
        ])  # fmt: skip
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-10)
    assert np.abs(grad).max() > 1e-4


@pytest.mark.parametrize("linear", ["dense", "rwf"])
def test_rwf_with_norm_equals_dense_with_norm_at_init(getkey, linear):
    key = getkey()
    xs = jr.uniform(getkey(), (64, 2))
    dense = snn.Siren(2, 1, 16, 3, norm="layer", key=key)
    other = snn.Siren(2, 1, 16, 3, norm="layer", linear=linear, key=key)
    np.testing.assert_allclose(
        jit_apply(other, xs), jit_apply(dense, xs), rtol=1e-4, atol=1e-4
    )


# -- bad input ------------------------------------------------------------------------


def test_unknown_norm(getkey):
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="Unknown `norm` 'group'.*'batch'"):
            snn.Siren(2, 1, 8, 2, norm="group", key=getkey())


@pytest.mark.parametrize("depth", [0, 1])
def test_norm_needs_two_hidden_layers(getkey, depth):
    with pytest.raises(ValueError, match=r"`norm='layer'` needs `depth >= 2`"):
        snn.Siren(2, 1, 8, depth, norm="layer", key=getkey())
    assert snn.Siren(2, 1, 8, depth, key=getkey()).norms == (None,) * depth
