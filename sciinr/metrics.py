"""Metrics: `psnr`, `relative_l2`."""

from ._metrics import psnr as psnr, relative_l2 as relative_l2
