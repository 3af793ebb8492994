"""Image and field error metrics."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _check_same_shape(pred, target) -> tuple[Array, Array]:
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"`pred` and `target` must have the same shape, got {pred.shape} and "
            f"{target.shape}."
        )
    return pred, target


def psnr(
    pred: ArrayLike, target: ArrayLike, data_range: float | int = 1.0
) -> Float[Array, ""]:
    r"""Peak signal-to-noise ratio in dB.

    $$\mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\frac1N \sum_i (p_i - t_i)^2}$$

    **Arguments:**

    - `pred`, `target`: arrays of the same shape.
    - `data_range`: the peak-to-peak range `R` of the signal. Defaults to `1.0`
      (images in `[0, 1]`).

    **Returns:**

    A scalar; `inf` when `pred == target`.
    """
    pred, target = _check_same_shape(pred, target)
    mse = jnp.mean(jnp.square(pred - target))
    return 10.0 * jnp.log10(data_range**2 / mse)


def relative_l2(pred: ArrayLike, target: ArrayLike) -> Float[Array, ""]:
    r"""Relative $L^2$ error $\lVert p - t \rVert_2 / \lVert t \rVert_2$ over all
    entries.

    **Arguments:**

    - `pred`, `target`: arrays of the same shape.

    **Returns:**

    A scalar.
    """
    pred, target = _check_same_shape(pred, target)
    return jnp.linalg.norm((pred - target).ravel()) / jnp.linalg.norm(target.ravel())


def _as_channels(name: str, image: Array) -> Array:
    """An image `(H, W)` or `(H, W, C)` as `(C, H, W)`."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3:
        return jnp.moveaxis(image, -1, 0)
    raise ValueError(
        f"`{name}` must be an image of shape (H, W) or (H, W, C), got {image.shape}."
    )


def _gaussian_filter_valid(x: Array, sigma: float, radius: int) -> Array:
    """Separable Gaussian filter of `(C, H, W)` images, 'valid' region only."""
    offsets = jnp.arange(-radius, radius + 1, dtype=x.dtype)
    taps = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / jnp.sum(taps)
    size = 2 * radius + 1
    h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
    rows = sum(taps[k] * x[:, k : k + h, :] for k in range(size))
    return sum(taps[k] * rows[:, :, k : k + w] for k in range(size))


def ssim(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: float | int = 1.0,
    *,
    sigma: float | int = 1.5,
) -> Float[Array, ""]:
    r"""Structural similarity (Wang et al., 2004) with a Gaussian window.

    $$\mathrm{SSIM} = \frac{(2\mu_p\mu_t + C_1)(2\sigma_{pt} + C_2)}
    {(\mu_p^2 + \mu_t^2 + C_1)(\sigma_p^2 + \sigma_t^2 + C_2)},\qquad
    C_1 = (0.01 R)^2,\ C_2 = (0.03 R)^2,$$

    with local statistics from an 11-tap Gaussian window ($\sigma = 1.5$, truncated at
    3.5 $\sigma$), averaged over the pixels whose window lies inside the image and over
    channels. Equals `skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, data_range=R)`.

    **Arguments:**

    - `pred`, `target`: images of the same shape, `(H, W)` or `(H, W, C)`, each side
      at least 11 pixels.
    - `data_range`: the peak-to-peak range `R`. Defaults to `1.0`.
    - `sigma`: the Gaussian window's standard deviation. Keyword-only.

    **Returns:**

    A scalar in `[-1, 1]`; `1` for identical images.
    """
    pred, target = _check_same_shape(pred, target)
    p, t = _as_channels("pred", pred), _as_channels("target", target)
    radius = int(3.5 * sigma + 0.5)
    if min(p.shape[1:]) < 2 * radius + 1:
        raise ValueError(
            f"`pred` and `target` must be at least {2 * radius + 1} pixels on each "
            f"side for the SSIM window, got {pred.shape}."
        )
    f = lambda x: _gaussian_filter_valid(x, sigma, radius)
    mu_p, mu_t = f(p), f(t)
    var_p = f(p * p) - mu_p * mu_p
    var_t = f(t * t) - mu_t * mu_t
    cov = f(p * t) - mu_p * mu_t
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )
    return jnp.mean(s)


def _radial_frequency(shape: tuple[int, int]) -> Array:
    """|k| in cycles per pixel on the `jnp.fft.fft2` grid of an `(H, W)` image."""
    fy = jnp.fft.fftfreq(shape[0])[:, None]
    fx = jnp.fft.fftfreq(shape[1])[None, :]
    return jnp.sqrt(fy**2 + fx**2)


def error_spectrum(
    pred: ArrayLike, target: ArrayLike, n_bins: int | None = None
) -> tuple[Float[Array, " bins"], Float[Array, " bins"]]:
    r"""Radially averaged power spectrum of the error `pred - target`.

    With $\hat e = \mathrm{FFT}_2(p - t)$ per channel, the power
    $|\hat e(k)|^2 / (HW)^2$ is averaged over channels and over rings of equal radial
    frequency $|k|$ (cycles per pixel, up to the Nyquist frequency 0.5; the corners
    beyond it are left out). A field with spectral bias has an error spectrum that
    rises with frequency.

    **Arguments:**

    - `pred`, `target`: images of the same shape, `(H, W)` or `(H, W, C)`.
    - `n_bins`: the number of rings. Defaults to `min(H, W) // 2`.

    **Returns:**

    `(frequency, power)`: ring centres in cycles per pixel and the mean power in
    each ring, both of shape `(n_bins,)`.
    """
    pred, target = _check_same_shape(pred, target)
    error = _as_channels("pred", pred - target)
    height, width = error.shape[1:]
    n_bins = min(height, width) // 2 if n_bins is None else n_bins
    power = jnp.mean(jnp.abs(jnp.fft.fft2(error)) ** 2, axis=0) / (height * width) ** 2
    radius = _radial_frequency((height, width))
    edges = jnp.linspace(0.0, 0.5, n_bins + 1)
    index = jnp.clip(jnp.searchsorted(edges, radius, side="right") - 1, 0, n_bins)
    index = jnp.where(radius > 0.5, n_bins, index)  # beyond Nyquist: dropped
    sums = jnp.zeros(n_bins + 1, power.dtype).at[index].add(power)
    counts = jnp.zeros(n_bins + 1, power.dtype).at[index].add(1.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres, sums[:n_bins] / jnp.maximum(counts[:n_bins], 1.0)


def band_psnr(
    pred: ArrayLike, target: ArrayLike, n_bands: int, data_range: float | int = 1.0
) -> Float[Array, " bands"]:
    r"""PSNR of the error restricted to `n_bands` rings of spatial frequency.

    The error's Fourier energy is split into `n_bands` rings of equal width in radial
    frequency, $[0, 0.5)$ cycles per pixel (the last ring also takes the corners above
    0.5). By Parseval, band $b$ contributes $\mathrm{MSE}_b$ to the pixel MSE,
    $\sum_b \mathrm{MSE}_b = \mathrm{MSE}$, and

    $$\mathrm{PSNR}_b = 10 \log_{10} \frac{R^2}{\mathrm{MSE}_b}.$$

    Low bands measure the coarse structure, high bands the detail that spectrally
    biased networks miss.

    **Arguments:**

    - `pred`, `target`: images of the same shape, `(H, W)` or `(H, W, C)`.
    - `n_bands`: the number of frequency bands, `> 0`.
    - `data_range`: the peak-to-peak range `R`. Defaults to `1.0`.

    **Returns:**

    The PSNR of each band in dB, lowest frequencies first, shape `(n_bands,)`.
    """
    if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands <= 0:
        raise ValueError(f"`n_bands` must be a positive int, got {n_bands!r}.")
    pred, target = _check_same_shape(pred, target)
    error = _as_channels("pred", pred - target)
    channels, height, width = error.shape
    energy = jnp.abs(jnp.fft.fft2(error)) ** 2 / (height * width) ** 2
    radius = _radial_frequency((height, width))
    band = jnp.minimum((radius / 0.5 * n_bands).astype(jnp.int32), n_bands - 1)
    mse = jnp.zeros(n_bands, energy.dtype).at[band].add(jnp.sum(energy, axis=0))
    return 10.0 * jnp.log10(data_range**2 / (mse / channels))
