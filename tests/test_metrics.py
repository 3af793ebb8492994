"""Tests for `sciinr.metrics`: `psnr` and `relative_l2`."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import sciinr.metrics


def test_psnr_constant_error():
    target = jnp.linspace(0.0, 0.8, 24).reshape(4, 6)
    pred = target + 0.1
    # mse = 0.01 -> 10 log10(1 / 0.01) = 20 dB.
    np.testing.assert_allclose(sciinr.metrics.psnr(pred, target), 20.0, rtol=1e-5)
    np.testing.assert_allclose(
        sciinr.metrics.psnr(target - 0.1, target), 20.0, rtol=1e-5
    )
    # data_range = 2 adds 20 log10(2) = 6.0206 dB; an int range is accepted.
    for data_range in (2.0, 2):
        np.testing.assert_allclose(
            sciinr.metrics.psnr(pred, target, data_range=data_range),
            20.0 + 20 * math.log10(2.0),
            rtol=1e-5,
        )
    np.testing.assert_allclose(20 * math.log10(2.0), 6.0206, atol=1e-4)
    np.testing.assert_allclose(
        sciinr.metrics.psnr(pred, target, data_range=255),
        20 + 20 * math.log10(255),
        1e-5,
    )


def test_psnr_random_error():
    # Host data from NumPy: no PRNG compilation for a metric test.
    rng = np.random.default_rng(0)
    target = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    pred = target + (0.05 * rng.normal(size=target.shape)).astype(np.float32)
    mse = np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)
    expected = 10 * np.log10(1.0 / mse)
    got = sciinr.metrics.psnr(pred, target)
    assert got.shape == ()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert 25.0 < float(got) < 27.0  # about -20 log10(0.05) = 26 dB


def test_psnr_accepts_numpy_and_is_inf_for_identical():
    target = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(
        sciinr.metrics.psnr(target + 0.1, target), 20.0, rtol=1e-5
    )
    assert (
        float(sciinr.metrics.psnr(jnp.asarray(target), jnp.asarray(target))) == np.inf
    )


def test_relative_l2():
    target = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(
        sciinr.metrics.relative_l2(jnp.array([3.0, 5.0]), target), 0.2, rtol=1e-6
    )
    np.testing.assert_allclose(
        sciinr.metrics.relative_l2(jnp.zeros(2), target), 1.0, rtol=1e-6
    )
    # Over all entries of a 2-D array (Frobenius norms, not per row).
    target = jnp.array([[1.0, 2.0], [2.0, 4.0]])  # norm 5
    pred = jnp.array([[1.0, 2.0], [2.0, 1.0]])  # error norm 3
    np.testing.assert_allclose(sciinr.metrics.relative_l2(pred, target), 0.6, rtol=1e-6)
    assert sciinr.metrics.relative_l2(target, target) == 0.0


def test_relative_l2_random():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(10, 7)).astype(np.float32)
    pred = target + (0.1 * rng.normal(size=target.shape)).astype(np.float32)
    t, p = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    expected = np.sqrt(np.sum((p - t) ** 2) / np.sum(t**2))
    np.testing.assert_allclose(sciinr.metrics.relative_l2(pred, target), expected, 1e-5)


@pytest.mark.parametrize(
    "metric", [sciinr.metrics.psnr, sciinr.metrics.relative_l2], ids=["psnr", "rel_l2"]
)
@pytest.mark.parametrize(
    "shapes",
    [((4, 4), (4, 5)), ((16,), (4, 4)), ((3, 1), (3,))],
    ids=["4x5", "flat", "broadcast"],
)
def test_shape_mismatch(metric, shapes):
    pred_shape, target_shape = shapes
    with pytest.raises(
        ValueError, match=r"`pred` and `target` must have the same shape"
    ):
        metric(jnp.zeros(pred_shape), jnp.ones(target_shape))
