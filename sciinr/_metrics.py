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
