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


# --- SSIM and the spectral diagnostics --------------------------------------------


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    target = rng.random((40, 33)).astype(np.float32)
    pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1)
    pred = pred.astype(np.float32)
    expected = structural_similarity(
        pred, target, gaussian_weights=True, use_sample_covariance=False, data_range=1.0
    )
    assert abs(float(sciinr.metrics.ssim(pred, target)) - expected) < 1e-5
    rgb_t = rng.random((32, 32, 3)).astype(np.float32)
    rgb_p = (rgb_t + 0.05 * rng.standard_normal(rgb_t.shape)).astype(np.float32)
    expected = structural_similarity(
        rgb_p,
        rgb_t,
        gaussian_weights=True,
        use_sample_covariance=False,
        data_range=2.0,
        channel_axis=-1,
    )
    assert abs(float(sciinr.metrics.ssim(rgb_p, rgb_t, 2.0)) - expected) < 1e-5
    assert float(sciinr.metrics.ssim(target, target)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_rejects_small_or_wrong_rank_images():
    with pytest.raises(ValueError, match="at least 11 pixels"):
        sciinr.metrics.ssim(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        sciinr.metrics.ssim(np.zeros(16, np.float32), np.zeros(16, np.float32))


def test_band_psnr_sums_to_psnr_and_locates_the_error():
    rng = np.random.default_rng(1)
    target = rng.random((32, 32)).astype(np.float32)
    i = np.arange(32)[:, None] + np.arange(32)[None, :]
    checker = (0.05 * (-1.0) ** i).astype(np.float32)  # error at the Nyquist corner
    bands = np.asarray(sciinr.metrics.band_psnr(target + checker, target, 4))
    # Parseval: the bands' MSEs add up to the pixel MSE.
    total = 10 * np.log10(1.0 / np.sum(10 ** (-bands / 10)))
    psnr = float(sciinr.metrics.psnr(target + checker, target))
    assert total == pytest.approx(psnr, abs=1e-3)  # float32 FFT rounding
    assert total == pytest.approx(10 * np.log10(1 / 0.05**2), abs=1e-3)
    assert np.all(bands[:3] > 150) and bands[3] < 30  # float32 FFT leakage only
    with pytest.raises(ValueError, match="n_bands"):
        sciinr.metrics.band_psnr(target, target, 0)


def test_error_spectrum_peaks_at_the_error_frequency():
    n = 64
    x = np.arange(n) / n
    error = 0.1 * np.sin(2 * np.pi * 8 * x)[:, None] * np.ones((1, n))  # 8 / 64 = 0.125
    target = np.zeros((n, n), np.float32)
    freq, power = sciinr.metrics.error_spectrum(
        (target + error).astype(np.float32), target
    )
    assert freq.shape == power.shape == (32,)
    peak = float(freq[int(np.argmax(power))])
    assert abs(peak - 0.125) <= 0.5 / 32
