"""`sciinr.nn.PeriodicEmbedding`."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

from sciinr import diff
from sciinr.nn import (
    CoordinateMLP,
    FourierFeatures,
    NonTrainable,
    num_parameters,
    PeriodicEmbedding,
)


def test_values_and_sizes():
    embedding = PeriodicEmbedding(3, (None, 2.0, None), harmonics=2)
    assert embedding.size == embedding.out_size == 2 + 2 * 2
    x = jnp.array([0.3, 0.25, -1.5])
    # [t, z, cos(pi x), cos(2 pi x), sin(pi x), sin(2 pi x)] with x = 0.25.
    expected = [0.3, -1.5, math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 1.0]
    np.testing.assert_allclose(embedding(x), expected, atol=1e-6)
    assert num_parameters(embedding) == 0
    as_mapping = PeriodicEmbedding(3, {1: 2.0}, harmonics=2)
    np.testing.assert_allclose(as_mapping(x), embedding(x))


def test_fields_are_exactly_periodic_with_their_derivatives(getkey):
    with jax.enable_x64(True):
        features = FourierFeatures(3, 16, sigma=1.0, dtype=jnp.float64, key=getkey())
        encoding = PeriodicEmbedding(2, (None, 2.0), encoding=features)
        field = CoordinateMLP(
            2, 1, 16, 2, encoding=encoding, activation=jnp.tanh, dtype=jnp.float64,
            key=getkey(),
        )  # fmt: skip
        xs = jnp.array([[0.1, -1.0], [0.7, -0.3]], jnp.float64)
        shift = jnp.array([0.0, 2.0], jnp.float64)
        all_orders = jax.jit(jax.vmap(lambda x: diff.derivatives(field, x, 1, 3)))
        a, b = all_orders(xs), all_orders(xs + shift[None])
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
        assert float(jnp.abs(a[:, 1]).min()) > 1e-3  # not trivially constant
        # ... but not in the other direction.
        x = jnp.array([0.1, 0.2], jnp.float64)
        assert abs(float(field(x)[0] - field(x.at[0].add(2.0))[0])) > 1e-4


def test_trainable_frequencies():
    embedding = PeriodicEmbedding(2, (1.0, 2 * math.pi), trainable=(True, False))
    np.testing.assert_allclose(embedding.omega, [2 * math.pi, 1.0], rtol=1e-6)
    assert num_parameters(embedding) == 1
    assert isinstance(embedding.fixed_omega, NonTrainable)
    x = jnp.array([0.3, 0.4])
    grads = eqx.filter_grad(lambda e: jnp.sum(e(x)))(embedding)
    # d/d omega_t of [cos(omega t), sin(omega t)] summed: t (cos - sin)(omega t).
    wt = 2 * math.pi * 0.3
    np.testing.assert_allclose(
        grads.trainable_omega, [0.3 * (math.cos(wt) - math.sin(wt))], rtol=1e-5
    )
    assert num_parameters(PeriodicEmbedding(2, (1.0, 2.0), trainable=True)) == 2


def test_bad_input():
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="at least one axis periodic"):
            PeriodicEmbedding(2, (None, None))
        with pytest.raises(ValueError, match=r"one entry per axis \(2\)"):
            PeriodicEmbedding(2, (2.0,))
        with pytest.raises(ValueError, match=r"`periods\[1\]` must be > 0"):
            PeriodicEmbedding(2, (None, -1.0))
        with pytest.raises(ValueError, match=r"`periods\[0\]` must be finite"):
            PeriodicEmbedding(2, (float("inf"), None))
        with pytest.raises(ValueError, match="names axis 3"):
            PeriodicEmbedding(2, {3: 1.0})
        with pytest.raises(ValueError, match="one per periodic axis"):
            PeriodicEmbedding(2, (1.0, 1.0), trainable=(True,))
        with pytest.raises(ValueError, match="`encoding` expects inputs of size 2"):
            PeriodicEmbedding(
                2, (None, 1.0), encoding=FourierFeatures(2, 4, sigma=1, key=jr.key(0))
            )
        with pytest.raises(ValueError, match=r"`x` must have shape \(2,\)"):
            PeriodicEmbedding(2, (None, 1.0))(jnp.zeros((4, 2)))
