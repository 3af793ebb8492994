"""The sine and cosine of the encodings (`sciinr.nn._encoding.cos_sin`): values
against float64 NumPy, derivatives, and that the float32 path is the polynomial one."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sciinr.nn import FourierFeatures, PositionalEncoding
from sciinr.nn._encoding import cos_sin


@pytest.mark.parametrize("bound, tol", [(10.0, 1.2e-7), (1e4, 1.2e-7), (1e5, 2e-6)])
def test_float32_values(bound, tol):
    angles = jnp.linspace(-bound, bound, 400_001, dtype=jnp.float32)
    cos, sin = jax.jit(cos_sin)(angles)
    exact = np.asarray(angles, np.float64)  # the float32 angles, exactly
    assert cos.dtype == sin.dtype == jnp.float32
    assert np.abs(np.asarray(cos, np.float64) - np.cos(exact)).max() < tol
    assert np.abs(np.asarray(sin, np.float64) - np.sin(exact)).max() < tol
    # Exact at the quadrant points that matter most.
    zero = jnp.zeros((1,), jnp.float32)
    assert float(cos_sin(zero)[0][0]) == 1.0 and float(cos_sin(zero)[1][0]) == 0.0


def test_float64_is_exact_and_derivatives_reuse_the_pair():
    with jax.enable_x64(True):
        a = jnp.linspace(-3.0, 3.0, 13, dtype=jnp.float64)
        np.testing.assert_array_equal(cos_sin(a)[0], jnp.cos(a))
        np.testing.assert_array_equal(cos_sin(a)[1], jnp.sin(a))
        f = cos_sin
        for order in (1, 2, 3):
            f = (lambda g: lambda x: jax.jvp(g, (x,), (jnp.ones_like(x),))[1])(f)
            dc, ds = f(a)
            # d^n cos a = cos(a + n pi / 2), d^n sin a = sin(a + n pi / 2).
            np.testing.assert_allclose(dc, np.cos(a + order * np.pi / 2), atol=1e-12)
            np.testing.assert_allclose(ds, np.sin(a + order * np.pi / 2), atol=1e-12)
        grad = jax.grad(lambda x: jnp.sum(2 * cos_sin(x)[0] + cos_sin(x)[1]))(a)
        np.testing.assert_allclose(grad, -2 * np.sin(a) + np.cos(a), atol=1e-12)


def test_float32_derivatives(getkey):
    a = jnp.linspace(-50.0, 50.0, 1001, dtype=jnp.float32)
    second = jax.vmap(jax.grad(jax.grad(lambda x: cos_sin(x)[1])))(a)
    np.testing.assert_allclose(second, -np.sin(np.asarray(a, np.float64)), atol=2e-6)


def test_encodings_use_it(getkey):
    x = jnp.array([0.3, 0.7], jnp.float32)
    ff = FourierFeatures(2, 64, sigma=10.0, key=getkey())
    # The float32 angles as the encoding forms them (their own rounding, ~1e-5 at
    # |angle| ~ 100, is not the sine's), then float64 trigonometry of those.
    matrix = jnp.asarray(np.asarray(ff.matrix))
    angles = np.asarray((2 * np.pi) * (x @ matrix.T), np.float64)
    np.testing.assert_allclose(
        ff(x), np.concatenate([np.cos(angles), np.sin(angles)]), atol=3e-7
    )
    pe = PositionalEncoding(2, 6)
    angles = (pe.frequencies[:, None] * np.asarray(x, np.float64)[None]).reshape(-1)
    np.testing.assert_allclose(
        pe(x), np.concatenate([np.sin(angles), np.cos(angles)]), atol=5e-6
    )
    # No library sine or cosine left in the compiled float32 encoding.
    text = jax.jit(lambda y: ff(y)).lower(x).compile().as_text()
    assert not re.search(r" (sine|cosine)\(", text)
