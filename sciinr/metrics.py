"""Metrics: `psnr`, `relative_l2`, `ssim`, and the spectral `error_spectrum`,
`band_psnr`."""

from ._metrics import (
    band_psnr as band_psnr,
    error_spectrum as error_spectrum,
    psnr as psnr,
    relative_l2 as relative_l2,
    ssim as ssim,
)
