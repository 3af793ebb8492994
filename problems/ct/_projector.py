"""The parallel-beam projector (Radon transform) of images and of fields, and its
transpose."""

import functools as ft
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

import sciinr.nn
from sciinr.checks import check_finite_array, check_positive_int

from ._geometry import (
    check_angles,
    check_chunk,
    check_image,
    inside_disk,
    ray_samples,
    to_float,
)


def _bilinear_ray_sums(
    padded: Float[Array, "m m"], row: Array, col: Array, bits: int
) -> Float[Array, "a n"]:
    """Sums over the last axis of bilinear samples of the zero-padded image at the
    fixed-point points `(row, col)` (pixel units of the unpadded image)."""
    side = padded.shape[0]
    one = 1 << bits
    i_row = jnp.right_shift(row, bits) + 1  # + 1: the zero border of `padded`
    i_col = jnp.right_shift(col, bits) + 1
    scale = jnp.asarray(1.0 / one, padded.dtype)
    f_row = jnp.bitwise_and(row, one - 1).astype(padded.dtype) * scale
    f_col = jnp.bitwise_and(col, one - 1).astype(padded.dtype) * scale
    # Points outside the image clamp onto the zero border, so they sample zeros.
    r0 = jnp.clip(i_row, 0, side - 1)
    r1 = jnp.clip(i_row + 1, 0, side - 1)
    c0 = jnp.clip(i_col, 0, side - 1)
    c1 = jnp.clip(i_col + 1, 0, side - 1)
    flat = padded.reshape(-1)

    def pixel(r, c):
        return jnp.take(flat, r * side + c, mode="clip")

    top = (1 - f_col) * pixel(r0, c0) + f_col * pixel(r0, c1)
    bottom = (1 - f_col) * pixel(r1, c0) + f_col * pixel(r1, c1)
    return jnp.sum((1 - f_row) * top + f_row * bottom, axis=-1)


@ft.partial(jax.jit, static_argnames=("chunk",))
def _radon(
    image: Float[Array, "n n"], angles: Float[Array, " a"], chunk: int
) -> Float[Array, "a n"]:
    size = image.shape[0]
    padded = jnp.pad(image, 1)

    # Checkpointed, so that the backward pass recomputes each chunk's sample points
    # instead of storing them for all angles (1.8 GB at 512^2 x 180 angles).
    @jax.checkpoint
    def project(padded, angles_chunk):
        row, col, bits = ray_samples(angles_chunk, size)
        return _bilinear_ray_sums(padded, row, col, bits)

    if chunk >= angles.shape[0]:
        return project(padded, angles)
    # `lax.map` over chunks of angles: memory stays bounded (512^2 x 180 angles is
    # 47M sample points, ~1.5 GB of temporaries at once).
    return lax.map(lambda a: project(padded, a[None])[0], angles, batch_size=chunk)


def radon(
    image: Float[ArrayLike, "n n"],
    angles: Float[ArrayLike, " a"],
    *,
    chunk_size: int | None = None,
) -> Float[Array, "a n"]:
    r"""The parallel-beam projections (sinogram) of an image: a differentiable,
    jitted Radon transform, batched over angles.

    **Geometry.** The image is $N \times N$, indexed `image[i, j]` (row $i$, column
    $j$). The rotation centre is pixel $(c, c)$, $c = N /\!/ 2$. For the angle
    $\theta$ (radians, conventionally in $[0, \pi)$) there are $N$ detector bins
    $s = 0 \dots N-1$, centred on bin $c$; the ray of bin $s$ is sampled at the $N$
    points $t = 0 \dots N-1$,

    $$\big(i, j\big) = \big(c - (s - c)\sin\theta + (t - c)\cos\theta,\;
    c + (s - c)\cos\theta + (t - c)\sin\theta\big),$$

    one pixel apart, and its line integral is the sum of the bilinear interpolates of
    the image there (zero outside the image). So at $\theta = 0$ the rays run along
    axis 0 (the sinogram row is `image.sum(axis=0)`) and at $\theta = \pi/2$ along
    axis 1 (reversed detector: `image.sum(axis=1)[::-1]`, up to the centre).

    This is the geometry and the interpolation of `skimage.transform.radon(image,
    theta=numpy.degrees(angles), circle=True)`, whose output is the transpose,
    `(N, a)`: the two agree to about `1e-4` of the sinogram's peak (the sample
    coordinates are computed in fixed point, with $\cos\theta$ and $\sin\theta$
    rounded to about `2**-20`). Like scikit-image's with `circle=True`, every ray
    sums $N$ samples, so only images that vanish outside the inscribed disk
    ([`problems.signals.disk_mask`][]) have true line integrals at every angle.

    **Memory and speed.** The angles are processed `chunk_size` at a time (a
    `jax.lax.map`), so a $512^2$ image at 180 angles needs tens of MB of
    temporaries, not GBs. The projection is linear in `image`; its gradient (the
    transpose, [`problems.ct.backproject`][]) is a scatter-add of the same bilinear
    weights. Angles are not differentiable (they are rounded to fixed point).

    **Arguments:**

    - `image`: the image, shape `(N, N)` (NumPy or JAX; NaN/inf are rejected on the
      host when the image is concrete). Integer images are converted to floats.
    - `angles`: the projection angles in radians, shape `(a,)`.
    - `chunk_size`: angles per chunk. Keyword-only. Defaults to `None`: about
      4 million sample points per chunk (64 angles at $256^2$, 16 at $512^2$).

    **Returns:**

    The sinogram, shape `(a, N)`: `sinogram[k, s]` is the line integral (in pixel
    units) along the ray of bin `s` at `angles[k]`.

    **Raises:**

    `ValueError` naming the argument for an image that is not square 2-D, angles that
    are not a non-empty 1-D array, or NaN/inf values.
    """
    image = check_image(image)
    angles = check_angles(angles).astype(image.dtype)
    chunk = check_chunk(chunk_size, image.shape[0])
    return _radon(image, angles, chunk)


def backproject(
    sinogram: Float[ArrayLike, "a n"],
    angles: Float[ArrayLike, " a"],
    *,
    chunk_size: int | None = None,
) -> Float[Array, "n n"]:
    r"""The transpose of [`problems.ct.radon`][]: spreads each sinogram value back
    along its ray with the projector's bilinear weights.

    It satisfies $\langle A x, y\rangle = \langle x, A^\top y\rangle$ for the
    projector $A$ = `radon(·, angles)` exactly (to float rounding), because it *is*
    the vector-Jacobian product of the projector (`jax.vjp`).

    **Arguments:**

    - `sinogram`: shape `(a, N)`.
    - `angles`: the angles of its rows, in radians, shape `(a,)`.
    - `chunk_size`: angles per chunk, as in [`problems.ct.radon`][]. Keyword-only.

    **Returns:**

    The image $A^\top y$, shape `(N, N)`.

    **Raises:**

    `ValueError` naming the argument for shapes that do not match or NaN/inf values.
    """
    sinogram, angles = check_sinogram(sinogram, angles)
    size = sinogram.shape[1]
    chunk = check_chunk(chunk_size, size)
    return _backproject(sinogram, angles, chunk)


@ft.partial(jax.jit, static_argnames=("chunk",))
def _backproject(sinogram, angles, chunk):
    size = sinogram.shape[1]
    zeros = jnp.zeros((size, size), sinogram.dtype)
    _, transpose = jax.vjp(lambda image: _radon(image, angles, chunk), zeros)
    (image,) = transpose(sinogram)
    return image


def check_sinogram(sinogram: ArrayLike, angles: ArrayLike) -> tuple[Array, Array]:
    """A float sinogram `(a, N)` and its angles `(a,)`, checked (NaN on the host)."""
    angles = check_angles(angles)
    if not isinstance(sinogram, jax.core.Tracer):
        sinogram = check_finite_array("sinogram", sinogram)
    sinogram = jnp.asarray(sinogram)
    if sinogram.ndim != 2 or sinogram.shape[1] == 0:
        raise ValueError(
            f"`sinogram` must have shape (n_angles, N), one row of N detector bins per "
            f"angle, got shape {sinogram.shape}."
        )
    if sinogram.shape[0] != angles.shape[0]:
        hint = ""
        if sinogram.shape[1] == angles.shape[0]:
            hint = (
                " Is it scikit-image's (N, n_angles) layout? Pass its transpose, "
                "`sinogram.T`."
            )
        raise ValueError(
            f"`sinogram` must have one row per angle: shape ({angles.shape[0]}, N) "
            f"for {angles.shape[0]} `angles`, got shape {sinogram.shape}.{hint}"
        )
    if not jnp.issubdtype(sinogram.dtype, jnp.floating):
        sinogram = sinogram.astype(jnp.result_type(float))
    return sinogram, angles.astype(sinogram.dtype)


# --------------------------------------------------------------------------------------
# The field projector
# --------------------------------------------------------------------------------------


def ray_points(
    angles: Float[Array, " a"], size: int, dtype=None
) -> tuple[Float[Array, "a n n 2"], Float[Array, "a n n"]]:
    """The sample points of every ray in field coordinates, and the disk indicator.

    The points of [`problems.ct.radon`][] (pixel units) divided by $N$: pixel
    $(i, j)$ sits at $(i/N, j/N)$, the convention of
    [`problems.image.ImageRegression`][] and [`sciinr.grid`][].

    **Returns:**

    `(points, inside)` of shapes `(a, N, N, 2)` and `(a, N, N)`, indexed
    `[angle, detector bin, sample]`; `inside` is 1 inside the inscribed disk, else 0.
    The samples outside the disk (weight 0; the rays' rotated square reaches beyond
    the image's corners) are clipped onto the square $[0, 1]^2$, so a field defined
    only on the image's square (a multi-head field's `domain`) is never probed
    outside it; the samples inside the disk lie in $[0, 1]^2$ already.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    row, col, bits = ray_samples(angles, size)
    row, col = to_float(row, bits, dtype), to_float(col, bits, dtype)
    points = jnp.stack([row, col], axis=-1) * jnp.asarray(1.0 / size, dtype)
    points = jnp.clip(points, 0.0, 1.0)
    return points, inside_disk(row, col, size)


def _field_values(field: Any, points: Array, chunk_size: int | None) -> Array:
    n = math.prod(points.shape[:-1])
    values = sciinr.nn.apply(field, points.reshape(n, 2), chunk_size=chunk_size)
    if values.shape != (n, 1):
        raise ValueError(
            "`field` must return one value per point (`out_size=1`), got outputs of "
            f"shape {values.shape[1:]} per point."
        )
    return values[:, 0].reshape(points.shape[:-1])


def radon_field(
    field: Any,
    angles: Float[ArrayLike, " a"],
    size: int,
    *,
    chunk_size: int | None = None,
) -> Float[Array, "a n"]:
    r"""The projections of a field, evaluated at the rays' sample points.

    The geometry of [`problems.ct.radon`][] for an $N \times N$ image, with the field
    in the pixel convention of [`problems.image.ImageRegression`][]: pixel $(i, j)$
    sits at the coordinate $(i/N, j/N)$, so a field that renders an image there has
    the same projections here, up to the interpolation of `radon` (exactly at
    $\theta = 0$ and $\pi/2$, where the samples are pixels). Each ray sums the field
    at its $N$ sample points, **times the indicator of the inscribed disk**
    (centre and radius $N /\!/ 2$ pixels): the reconstructed object is
    $u = \mathbb{1}_{\text{disk}} f$, which is what makes every ray a true line
    integral (see `radon`). No pixel grid is involved, so the field is probed at
    $a N^2$ distinct points, between the pixels.

    The field is evaluated with [`sciinr.nn.apply`][], so any field works: MLPs,
    SIRENs, multi-head fields, batch-norm fields (whose statistics are then those of
    all the sample points, unless `chunk_size` is given, which needs a pointwise
    field: freeze it first).

    **Arguments:**

    - `field`: a field with `in_size=2` and `out_size=1`.
    - `angles`: the projection angles in radians, shape `(a,)`.
    - `size`: the number $N$ of detector bins (and of samples per ray).
    - `chunk_size`: `None` evaluates all $a N^2$ points in one batch; an int
      evaluates one angle at a time (a `jax.lax.map`) in chunks of `chunk_size`
      points, so memory stays bounded. Keyword-only.

    **Returns:**

    The sinogram, shape `(a, N)`.

    **Raises:**

    `ValueError` naming the argument for a field whose output is not one value per
    point, angles that are not 1-D, or a `chunk_size` given for a field with live
    batch statistics.
    """
    size = check_positive_int("size", size)
    angles = check_angles(angles).astype(jnp.result_type(float))
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    return _radon_field(field, angles, size, chunk_size)


@eqx.filter_jit
def _radon_field(field, angles, size, chunk_size):
    dtype = angles.dtype
    if chunk_size is None:
        points, inside = ray_points(angles, size, dtype)
        values = _field_values(field, points, None)
        return jnp.sum(values * inside, axis=-1)

    def one(angle):
        points, inside = ray_points(angle[None], size, dtype)
        values = _field_values(field, points, chunk_size)
        return jnp.sum(values * inside, axis=-1)[0]

    return lax.map(one, angles)
