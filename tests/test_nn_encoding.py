"""Tests for `PositionalEncoding` and `FourierFeatures`."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr.nn as snn


# -- PositionalEncoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    "in_size, num_frequencies, include_input, expected",
    [(1, 1, False, 2), (3, 4, False, 24), (3, 4, True, 27)],
    ids=["1x1", "3x4", "3x4+input"],
)
def test_positional_encoding_shapes(in_size, num_frequencies, include_input, expected):
    encoding = snn.PositionalEncoding(
        in_size, num_frequencies, include_input=include_input
    )
    assert encoding.out_size == expected
    y = encoding(jnp.linspace(-1.0, 1.0, in_size))
    assert y.shape == (expected,)
    assert y.dtype == jnp.float32
    # Nothing to train.
    assert snn.num_parameters(encoding) == 0
    assert jtu.tree_leaves(encoding) == []


@pytest.mark.parametrize(
    "num_frequencies, max_log2, exponents",
    [
        (1, None, [0.0]),
        (4, None, [0.0, 1.0, 2.0, 3.0]),
        (5, 2.0, [0.0, 0.5, 1.0, 1.5, 2.0]),
        (3, 6, [0.0, 3.0, 6.0]),
        (2, 0.0, [0.0, 0.0]),
    ],
    ids=["L1", "L4", "L5-max2", "L3-max6-int", "L2-max0"],
)
def test_positional_encoding_frequencies(num_frequencies, max_log2, exponents):
    encoding = snn.PositionalEncoding(2, num_frequencies, max_log2=max_log2)
    expected = np.pi * 2.0 ** np.array(exponents)
    np.testing.assert_allclose(encoding.frequencies, expected, rtol=1e-15)
    assert encoding.frequencies.shape == (num_frequencies,)


@pytest.mark.parametrize("include_input", [False, True], ids=["plain", "with_input"])
def test_positional_encoding_formula(include_input):
    encoding = snn.PositionalEncoding(2, 4, include_input=include_input)
    x = np.array([0.3, -0.45])
    # Frequency-major: [sin(2^k pi x_j) for k for j], then the cosines.
    angles = np.array([2.0**k * np.pi * x[j] for k in range(4) for j in range(2)])
    expected = np.concatenate([np.sin(angles), np.cos(angles)])
    if include_input:
        expected = np.concatenate([x, expected])
    y = encoding(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-6)
    # The test can tell the order apart: axis-major ordering gives other values.
    axis_major = np.array([2.0**k * np.pi * x[j] for j in range(2) for k in range(4)])
    assert not np.allclose(np.sin(axis_major), np.sin(angles), atol=0.1)


# -- FourierFeatures ------------------------------------------------------------------


@pytest.mark.parametrize("trainable", [False, True], ids=["fixed", "trainable"])
def test_fourier_features_shapes(getkey, trainable):
    encoding = snn.FourierFeatures(3, 10, sigma=2.0, trainable=trainable, key=getkey())
    assert encoding.out_size == 20
    assert encoding.matrix.shape == (10, 3)
    assert isinstance(encoding.B, snn.NonTrainable) == (not trainable)
    y = encoding(jnp.array([0.1, 0.2, 0.3]))
    assert y.shape == (20,)
    assert y.dtype == jnp.float32


def test_fourier_features_formula(getkey):
    encoding = snn.FourierFeatures(2, 8, sigma=1.5, key=getkey())
    B = np.asarray(encoding.B.value, dtype=np.float64)
    np.testing.assert_array_equal(encoding.matrix, encoding.B.value)
    for x in ([0.25, -0.5], [0.9, 0.1]):
        x = np.array(x)
        angles = 2 * np.pi * B @ x
        expected = np.concatenate([np.cos(angles), np.sin(angles)])
        y = encoding(jnp.asarray(x, jnp.float32))
        np.testing.assert_allclose(y, expected, rtol=0, atol=2e-6)


def test_fourier_features_formula_float64(getkey):
    key = getkey()
    with jax.enable_x64(True):
        encoding = snn.FourierFeatures(2, 8, sigma=3.0, dtype=jnp.float64, key=key)
        x = jnp.array([0.25, -0.5], jnp.float64)
        y = encoding(x)
        assert y.dtype == jnp.float64
        B = np.asarray(encoding.matrix)
        # The documented draw: B = sigma * N(0, 1) from `key`.
        np.testing.assert_allclose(
            B, 3.0 * np.asarray(jr.normal(key, (8, 2), jnp.float64)), rtol=1e-15
        )
    angles = 2 * np.pi * B @ np.asarray(x)
    expected = np.concatenate([np.cos(angles), np.sin(angles)])
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("sigma", [1.0, 3.0, 10.0], ids=["1", "3", "10"])
@pytest.mark.parametrize("trainable", [False, True], ids=["fixed", "trainable"])
def test_fourier_features_statistics(getkey, sigma, trainable):
    n_features = 20_000
    encoding = snn.FourierFeatures(
        2, n_features, sigma=sigma, trainable=trainable, key=getkey()
    )
    B = np.asarray(encoding.matrix, dtype=np.float64)
    n = B.size
    assert abs(B.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(B.std() / sigma - 1) < 5 / np.sqrt(2 * n)
    # Not truncated: a normal sample this large has entries beyond 3.5 sigma.
    assert np.abs(B).max() > 3.5 * sigma


def test_fixed_B_gets_zero_gradient(getkey):
    encoding = snn.FourierFeatures(2, 6, sigma=2.0, key=getkey())
    c = jr.normal(getkey(), (12,))
    x = jnp.array([0.3, 0.6])
    loss = lambda enc, x: jnp.sum(c * enc(x))
    grads = eqx.filter_jit(eqx.filter_grad(loss))(encoding, x)
    assert isinstance(grads.B, snn.NonTrainable)
    np.testing.assert_array_equal(grads.B.value, np.zeros((6, 2)))
    # The input gradient still flows: d/dx of [cos t, sin t] with t = 2 pi B x.
    B = np.asarray(encoding.matrix, np.float64)
    t = 2 * np.pi * B @ np.asarray(x, np.float64)
    c64 = np.asarray(c, np.float64)
    dt = -c64[:6] * np.sin(t) + c64[6:] * np.cos(t)
    expected = 2 * np.pi * B.T @ dt
    grad_x = eqx.filter_jit(lambda enc, x: jax.grad(loss, argnums=1)(enc, x))
    np.testing.assert_allclose(grad_x(encoding, x), expected, 1e-4)
    # And the trainable filter excludes B.
    spec = snn.trainable(encoding)
    assert jtu.tree_leaves(spec) == [False]
    assert jtu.tree_leaves(eqx.filter(encoding, spec)) == []
    assert snn.num_parameters(encoding) == 0


def test_trainable_B_gets_gradient(getkey):
    encoding = snn.FourierFeatures(2, 6, sigma=2.0, trainable=True, key=getkey())
    c = jr.normal(getkey(), (12,))
    x = jnp.array([0.3, 0.6])
    grads = eqx.filter_jit(eqx.filter_grad(lambda enc: jnp.sum(c * enc(x))))(encoding)
    B = np.asarray(encoding.matrix, np.float64)
    x64 = np.asarray(x, np.float64)
    t = 2 * np.pi * B @ x64
    c64 = np.asarray(c, np.float64)
    dt = -c64[:6] * np.sin(t) + c64[6:] * np.cos(t)
    expected = 2 * np.pi * np.outer(dt, x64)
    assert np.abs(expected).min() > 0
    np.testing.assert_allclose(grads.B, expected, rtol=1e-4, atol=1e-5)
    assert jtu.tree_leaves(snn.trainable(encoding)) == [True]
    assert snn.num_parameters(encoding) == 6 * 2


def test_fourier_features_sigma_int_is_accepted(getkey):
    key = getkey()
    a = snn.FourierFeatures(2, 4, sigma=10, key=key)
    b = snn.FourierFeatures(2, 4, sigma=10.0, key=key)
    assert a.sigma == 10.0
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_encodings_work_under_apply(getkey):
    xs = jr.uniform(getkey(), (64, 2))
    for encoding in (
        snn.PositionalEncoding(2, 3, include_input=True),
        snn.FourierFeatures(2, 5, sigma=1.0, key=getkey()),
    ):
        ys = eqx.filter_jit(snn.apply)(encoding, xs)
        assert ys.shape == (64, encoding.out_size)
        np.testing.assert_allclose(ys[7], encoding(xs[7]), rtol=1e-6, atol=1e-6)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, -1.0], ids=["0", "-1"])
def test_fourier_features_bad_sigma(getkey, sigma):
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        snn.FourierFeatures(2, 4, sigma=sigma, key=getkey())


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_fourier_features_non_finite_sigma(getkey, value):
    with pytest.raises(ValueError, match="`sigma` must be finite"):
        snn.FourierFeatures(2, 4, sigma=value, key=getkey())


@pytest.mark.parametrize(
    "args, name",
    [((0, 4), "in_size"), ((2, 0), "num_features"), ((-1, 4), "in_size")],
    ids=["in0", "features0", "in-1"],
)
def test_fourier_features_bad_sizes(getkey, args, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int"):
        snn.FourierFeatures(*args, sigma=1.0, key=getkey())


def test_fourier_features_non_int_size(getkey):
    with pytest.raises(TypeError, match="num_features"):
        snn.FourierFeatures(2, 2.5, sigma=1.0, key=getkey())
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`num_features` must be a positive int"):
            snn.FourierFeatures(2, 2.5, sigma=1.0, key=getkey())


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((0, 4), {}, "in_size"),
        ((-1, 4), {}, "in_size"),
        ((2, 0), {}, "num_frequencies"),
    ],
    ids=["in0", "in-1", "L0"],
)
def test_positional_encoding_bad_sizes(args, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int"):
        snn.PositionalEncoding(*args, **kwargs)


def test_positional_encoding_bad_max_log2():
    with pytest.raises(ValueError, match="`max_log2` must be >= 0"):
        snn.PositionalEncoding(2, 4, max_log2=-1.0)
    with pytest.raises(TypeError, match="num_frequencies"):
        snn.PositionalEncoding(2, 2.5)
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`num_frequencies` must be a positive"):
            snn.PositionalEncoding(2, 2.5)
