"""The parallel-beam geometry: where the rays of each angle sample the image.

One function computes the sample points of every ray, in fixed point, for both the
image projector (bilinear samples of pixels) and the field projector (the field at
the same points), so the two cannot drift apart.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from sciinr.checks import check_finite_array, check_positive_int


def fraction_bits(size: int) -> int:
    """Fractional bits of the fixed-point sample coordinates of an `N x N` image.

    As many as int32 coordinates allow (|coordinate| < 1.21 N pixels), at most 20:
    angle quantization then moves a sample by less than `N / 2**21` pixels.
    """
    return max(1, min(20, 30 - int(size).bit_length()))


def ray_samples(
    angles: Float[Array, " a"], size: int
) -> tuple[Int[Array, "a n n"], Int[Array, "a n n"], int]:
    r"""The sample points of all rays, in fixed point.

    For angle $\theta$, detector bin $s$ and sample $t$ (both $0 \dots N-1$), with
    centre $c = N /\!/ 2$,

    $$\text{row} = c - (s - c)\sin\theta + (t - c)\cos\theta, \qquad
    \text{col} = c + (s - c)\cos\theta + (t - c)\sin\theta,$$

    in pixel units, returned as int32 multiples of `2**-bits`. Integer arithmetic is
    exact, so every consumer of a coordinate (the gather index and the interpolation
    weight) sees the same value however XLA fuses and duplicates the computation.
    (With float coordinates, XLA on CPU computed `floor(row)` for the gather and for
    the weight in different fusions with different rounding: at points that fall
    exactly on a pixel, e.g. at 135 degrees, the two disagreed by one pixel, a
    sinogram error of 1 % of its peak.) $\cos\theta$ and $\sin\theta$ are rounded to
    `bits` fractional bits.

    **Returns:**

    `(row, col, bits)`; `row` and `col` of shape `(a, N, N)`, indexed
    `[angle, detector bin s, sample t]`.
    """
    bits = fraction_bits(size)
    one = 1 << bits
    centre = size // 2
    offsets = jnp.arange(size, dtype=jnp.int32) - centre
    cos = jnp.round(jnp.cos(angles) * one).astype(jnp.int32)[:, None, None]
    sin = jnp.round(jnp.sin(angles) * one).astype(jnp.int32)[:, None, None]
    s = offsets[None, :, None]
    t = offsets[None, None, :]
    row = centre * one - sin * s + cos * t
    col = centre * one + cos * s + sin * t
    return row, col, bits


def to_float(fixed: Int[Array, "..."], bits: int, dtype) -> Float[Array, "..."]:
    """A fixed-point coordinate as a float: integer part plus the exact fraction."""
    whole = jnp.right_shift(fixed, bits).astype(dtype)
    fraction = jnp.bitwise_and(fixed, (1 << bits) - 1).astype(dtype)
    return whole + fraction * (1.0 / (1 << bits))


def inside_disk(
    row: Float[Array, "..."], col: Float[Array, "..."], size: int
) -> Float[Array, "..."]:
    """1 where `(row, col)` (pixel units) lies in the inscribed disk, else 0.

    The disk of [`problems.signals.disk_mask`][]: centre and radius `N // 2`,
    boundary included, so on pixel positions the two agree exactly.
    """
    centre = size // 2
    inside = jnp.square(row - centre) + jnp.square(col - centre) <= centre**2
    return inside.astype(row.dtype)


def default_chunk(size: int) -> int:
    """Angles per chunk: about 4M sample points (a few tens of MB of temporaries)."""
    return max(1, (1 << 22) // (size * size))


def check_angles(angles: ArrayLike, name: str = "angles") -> Array:
    """`angles` as a 1-D float array, checked for NaN on the host when concrete."""
    if not isinstance(angles, jax.core.Tracer):
        array = check_finite_array(name, angles)
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(jnp.result_type(float))
        angles = jnp.asarray(array)
    angles = jnp.asarray(angles)
    if angles.ndim != 1 or angles.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array of angles in radians, got shape "
            f"{angles.shape}. For one angle use `jnp.array([theta])`."
        )
    if not jnp.issubdtype(angles.dtype, jnp.floating):
        angles = angles.astype(jnp.result_type(float))
    return angles


def check_image(image: ArrayLike, name: str = "image") -> Array:
    """A square 2-D float image, checked for NaN on the host when concrete."""
    if not isinstance(image, jax.core.Tracer):
        array = check_finite_array(name, image)
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(jnp.result_type(float))
        image = jnp.asarray(array)
    image = jnp.asarray(image)
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] == 0:
        hint = ""
        if image.ndim == 3 and image.shape[-1] == 1:
            hint = f" Drop the channel axis: `{name}[..., 0]`."
        raise ValueError(
            f"`{name}` must be a square 2-D image (N, N), got shape {image.shape}."
            + hint
        )
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.result_type(float))
    return image


def check_chunk(chunk_size: int | None, size: int) -> int:
    """Angles per chunk: `chunk_size`, or the default for an `N x N` image."""
    if chunk_size is None:
        return default_chunk(size)
    return check_positive_int("chunk_size", chunk_size)
