"""Sparse-view CT as a problem for `sciinr.fit`."""

import math
import os
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

import sciinr
import sciinr.nn
from sciinr import AbstractProblem
from sciinr.checks import (
    check_finite_array,
    check_positive_int,
    check_real,
    resolve_option,
)
from sciinr.metrics import psnr, ssim

from ..signals import disk_mask, phantom as make_phantom, PHANTOMS
from ._fbp import _fbp, ramp_filter
from ._geometry import default_chunk
from ._projector import _radon, radon_field, ray_points


Scalar = Float[Array, ""]

_PROJECTORS: dict[str, str] = {
    "grid": "render the field on the N x N pixel grid, project the image (radon)",
    "rays": "evaluate the field at every ray sample point (radon_field)",
}

_WEIGHTINGS: dict[str, str] = {
    "uniform": "the mean squared error of the projections",
    "ramp": "the mean squared error of the residual filtered by the square root of "
    "the ramp filter",
}


def _as_phantom(
    phantom: str | ArrayLike, size: int | None, key: PRNGKeyArray | None
) -> np.ndarray:
    """The phantom as a square float32 NumPy image in [0, 1], zero outside the disk."""
    if isinstance(phantom, str | os.PathLike):
        name = os.fspath(phantom)
        resolve_option("phantom", name, PHANTOMS)
        if name == "ellipses" and key is None:
            raise ValueError(
                "`phantom='ellipses'` draws a random phantom: pass a PRNG key, e.g. "
                "`key=jax.random.key(0)`."
            )
        return make_phantom(name, 256 if size is None else size, key=key)
    array = check_finite_array("phantom", phantom)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.size == 0:
        raise ValueError(
            "`phantom` must be a square 2-D image (N, N), a name "
            f"({', '.join(map(repr, PHANTOMS))}), got an array of shape "
            f"{array.shape}."
        )
    side = array.shape[0]
    if size is not None and size != side:
        raise ValueError(
            f"`size` must match the array `phantom` (side {side}) or be None, got "
            f"{size}. Resize the phantom yourself, or pass `size=None`."
        )
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"`phantom` values must lie in [0, 1], got values in [{low}, {high}]."
        )
    outside = array[~disk_mask(side)]
    if outside.size and np.any(outside != 0):
        raise ValueError(
            "`phantom` must be zero outside its inscribed disk (centre and radius "
            f"N // 2 = {side // 2} pixels): the parallel-beam geometry only sees that "
            "disk at every angle. Multiply it by `problems.signals.disk_mask(N)`."
        )
    return array.astype(np.float32)


class ComputedTomography(AbstractProblem):
    r"""Sparse-view parallel-beam CT: reconstruct an image from a few projections.

    The unknown is an image $u$ on the inscribed disk of the square; the data are
    its projections at $a$ angles $\theta_k = k\pi/a$ (the sinogram $y = A u +
    \varepsilon$, with $A$ the projector [`problems.ct.radon`][]). The field
    $f_\theta$ represents the image in the pixel convention of
    [`problems.image.ImageRegression`][] (pixel $(i, j)$ at $(i/N, j/N)$), masked to
    the disk, $u_\theta = \mathbb{1}_{\text{disk}} f_\theta$, and is trained on the
    projections only:

    $$\mathcal{L}(\theta) = \frac{1}{|K|\,N} \sum_{k \in K} \sum_{s=0}^{N-1}
    \Big(\frac{(A u_\theta)_{k s} - y_{k s}}{N}\Big)^2,$$

    the mean squared error of the projections divided by $N$ (mean attenuation along
    each ray, as in Tancik et al., so the loss does not grow with $N$), over all
    angles or a random subset $K$ per step (`angles_per_step`).

    With `weighting="ramp"` the residual of each projection is first filtered along
    the detector by the square root of the ramp filter $h$ of FBP
    ([`problems.ct.ramp_filter`][]), $\lVert h^{1/2} * (A u_\theta - y)\rVert^2$
    (same normalization). Its gradient with respect to the image is
    $A^\top h\,(A u_\theta - y)$, the filtered back projection of the residual,
    instead of $A^\top (A u_\theta - y)$: the normal operator $A^\top A$ of the
    plain loss blurs like $1/|\omega|$, so the fine detail of the image gets
    gradients $|\omega|$ times too small and converges far more slowly. The ramp
    weighting preconditions it (Landweber iteration with the FBP filter); the
    minimizers of the two losses are the same wherever the data are consistent.

    Two projectors (`projector=`):

    - `"grid"` (default): render $f_\theta$ on the $N \times N$ pixel grid and
      project that image with `radon` (bilinear samples). One field evaluation per
      pixel, $N^2$ per step, whatever the number of angles.
    - `"rays"`: evaluate $f_\theta$ at every ray sample point
      ([`problems.ct.radon_field`][]): $|K| N^2$ evaluations per step, between the
      pixels, so the reconstruction is not tied to the pixel grid. 20 angles cost 20
      times the `"grid"` step (see the docs for timings); combine it with
      `angles_per_step`.

    Metrics: PSNR and SSIM (data range 1) of the reconstruction, **clipped to
    $[0, 1]$** (as Tancik et al. clip), against the phantom; and the same for
    filtered back projection ([`problems.ct.fbp`][]) of the same (noisy) data,
    the classical baseline. Batch-norm statistics are frozen on the training points
    first (the pixel grid, or all ray sample points for `"rays"`).

    ??? cite

        [Fourier Features Let Networks Learn High Frequency Functions in Low
        Dimensional Domains](https://arxiv.org/abs/2006.10739) (2D CT: 512², 20
        views, random ellipse phantoms), and
        [Random Weight Factorization Improves the Training of Continuous Neural
        Representations](https://arxiv.org/abs/2210.01274).

        ```bibtex
        @inproceedings{tancik2020fourfeat,
          title={Fourier Features Let Networks Learn High Frequency Functions in
                 Low Dimensional Domains},
          author={Tancik, Matthew and Srinivasan, Pratul P. and Mildenhall, Ben and
                  Fridovich-Keil, Sara and Raghavan, Nithin and Singhal, Utkarsh and
                  Ramamoorthi, Ravi and Barron, Jonathan T. and Ng, Ren},
          booktitle={NeurIPS},
          year={2020}
        }
        @article{wang2022random,
          title={Random Weight Factorization Improves the Training of Continuous
                 Neural Representations},
          author={Wang, Sifan and Wang, Hanwen and Seidman, Jacob H. and
                  Perdikaris, Paris},
          journal={arXiv preprint arXiv:2210.01274},
          year={2022}
        }
        ```
    """

    phantom: Float[Array, "n n"]
    angles: Float[Array, " a"]
    sinogram: Float[Array, "a n"]
    fbp: Float[Array, "n n"]
    grid_coords: Float[Array, "n2 2"]
    mask: Float[Array, "n n"]
    size: int = eqx.field(static=True)
    noise: float = eqx.field(static=True)
    angles_per_step: int | None = eqx.field(static=True)
    ramp: Float[Array, " f"]
    projector: str = eqx.field(static=True)
    weighting: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(
        self,
        phantom: str | ArrayLike = "shepp_logan",
        *,
        size: int | None = None,
        n_angles: int = 20,
        noise: float | int = 0.0,
        angles_per_step: int | None = None,
        key: PRNGKeyArray | None = None,
        projector: str = "grid",
        weighting: str = "uniform",
        chunk_size: int = 65_536,
    ):
        r"""**Arguments:**

        - `phantom`: `"shepp_logan"` (scikit-image's, resized), `"ellipses"` (a
          random perturbed Shepp–Logan phantom drawn from `key`; see
          [`problems.signals.random_ellipses`][]), or an array `(N, N)` with values
          in `[0, 1]` that vanishes outside its inscribed disk. Defaults to
          `"shepp_logan"`.
        - `size`: the image side $N$ (also the number of detector bins). Keyword-only.
          Defaults to `None`: 256 for a named phantom; the array's side for an array
          (a `size` given with an array must equal its side).
        - `n_angles`: the number $a$ of projection angles, $\theta_k = k\pi/a$.
          Keyword-only. Defaults to `20` (Tancik et al.).
        - `noise`: the standard deviation of Gaussian noise added to the sinogram,
          relative to its peak (`0.01` is 1 % of the largest projection).
          Keyword-only. Defaults to `0.0`.
        - `angles_per_step`: `None` to use every angle in every step, or the number
          of angles `sample` draws per step (uniformly without replacement, on
          device). Keyword-only.
        - `key`: a JAX PRNG key, split into one key for the phantom and one for the
          noise; needed for `"ellipses"` or `noise > 0` (the same key gives the same
          data). Keyword-only.
        - `projector`: `"grid"` or `"rays"` (see above). Keyword-only. Defaults to
          `"grid"`.
        - `weighting`: `"uniform"` (the mean squared error of the projections) or
          `"ramp"` (of the ramp-filtered residual, see above). Keyword-only. Defaults
          to `"uniform"`.
        - `chunk_size`: points per chunk when evaluation renders the field (frozen,
          pointwise). Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the argument for: an unknown phantom name,
        projector or weighting; a phantom array that is not square 2-D, has NaN/inf
        or values outside `[0, 1]`, is not zero outside its disk, or does not match
        `size`;
        `n_angles` or `size` not a positive int; a negative or non-finite `noise`;
        `angles_per_step` outside `1 ... n_angles`; a missing `key`.
        """
        resolve_option("projector", projector, _PROJECTORS)
        resolve_option("weighting", weighting, _WEIGHTINGS)
        if size is not None:
            size = check_positive_int("size", size)
        n_angles = check_positive_int("n_angles", n_angles)
        noise = check_real("noise", noise, nonnegative=True)
        if angles_per_step is not None:
            angles_per_step = check_positive_int("angles_per_step", angles_per_step)
            if angles_per_step > n_angles:
                raise ValueError(
                    f"`angles_per_step` must be at most `n_angles` = {n_angles}, got "
                    f"{angles_per_step}. Use `angles_per_step=None` for all angles."
                )
        chunk_size = check_positive_int("chunk_size", chunk_size)
        if key is None and noise > 0:
            raise ValueError(
                f"`noise={noise}` draws random noise: pass a PRNG key, e.g. "
                "`key=jax.random.key(0)`."
            )
        phantom_key = noise_key = None
        if key is not None:
            phantom_key, noise_key = jr.split(key)
        image = _as_phantom(phantom, size, phantom_key)
        n = image.shape[0]

        dtype = jnp.result_type(float)
        angles = jnp.asarray(np.arange(n_angles) * (math.pi / n_angles), dtype)
        chunk = default_chunk(n)
        sinogram = _radon(jnp.asarray(image, dtype), angles, chunk)
        if noise > 0:
            peak = jnp.max(jnp.abs(sinogram))
            sinogram = sinogram + noise * peak * jr.normal(
                noise_key, sinogram.shape, dtype
            )
        self.phantom = jnp.asarray(image, dtype)
        self.angles = angles
        self.sinogram = sinogram
        self.fbp = _fbp(sinogram, angles, chunk)
        response, padded = ramp_filter(n)
        self.ramp = jnp.asarray(np.sqrt(np.maximum(response[: padded // 2 + 1], 0)))
        self.grid_coords = sciinr.grid((n, n), dtype=dtype)[0]
        self.mask = jnp.asarray(disk_mask(n), dtype)
        self.size = n
        self.noise = noise
        self.angles_per_step = angles_per_step
        self.projector = projector
        self.weighting = weighting
        self.chunk_size = chunk_size

    @property
    def in_size(self) -> int:
        """The coordinate dimension, `2`."""
        return 2

    @property
    def out_size(self) -> int:
        """The number of values a field must output, `1`."""
        return 1

    @property
    def n_angles(self) -> int:
        """The number of projection angles."""
        return self.angles.shape[0]

    def sample(
        self, key: PRNGKeyArray
    ) -> tuple[Float[Array, " k"], Float[Array, "k n"]]:
        """Draw the projections of one training step.

        **Arguments:**

        - `key`: a JAX PRNG key; ignored when every angle is used.

        **Returns:**

        `(angles, projections)` of shapes `(k,)` and `(k, N)`: every angle and the
        whole sinogram when `angles_per_step` is `None`, else `angles_per_step`
        angles drawn without replacement and their rows of the (noisy) sinogram.
        """
        if self.angles_per_step is None:
            return self.angles, self.sinogram
        index = jr.choice(key, self.n_angles, (self.angles_per_step,), replace=False)
        return self.angles[index], self.sinogram[index]

    def render(self, field: Any, chunk_size: int | None = None) -> Float[Array, "n n"]:
        r"""The image $u = \mathbb{1}_{\text{disk}} f$ of `field` on the pixel grid.

        Pixel $(i, j)$ is the field's value at $(i/N, j/N)$, zero outside the
        inscribed disk. The field is evaluated as it is (batch-norm statistics of the
        grid unless frozen).

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=1`.
        - `chunk_size`: as in [`sciinr.nn.apply`][] (pointwise fields only).

        **Returns:**

        The image, shape `(N, N)` (not clipped).
        """
        values = sciinr.nn.apply(field, self.grid_coords, chunk_size=chunk_size)
        n = self.size
        if values.shape != (n * n, 1):
            raise ValueError(
                "`field` must return one value per pixel (`out_size=1`), got outputs "
                f"of shape {values.shape[1:]} per point. Build the field with "
                "`out_size=problem.out_size`."
            )
        return values[:, 0].reshape(n, n) * self.mask

    def project(self, field: Any, angles: Float[Array, " k"]) -> Float[Array, "k n"]:
        """The projections of `field` at `angles` with the problem's projector.

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=1`.
        - `angles`: angles in radians, shape `(k,)`.

        **Returns:**

        The sinogram rows, shape `(k, N)`.
        """
        if self.projector == "rays":
            return radon_field(field, angles, self.size)
        return _radon(self.render(field), angles, default_chunk(self.size))

    def loss(
        self,
        field: Any,
        batch: tuple[Float[Array, " k"], Float[Array, "k n"]],
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The mean squared error of the projections divided by $N$ (see the class
        docstring), plain or ramp-weighted.

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=1`.
        - `batch`: `(angles, projections)` from `sample`.

        **Returns:**

        `(mse, {"mse": mse})` for `weighting="uniform"`, `(ramp_mse, {"ramp_mse":
        ramp_mse})` for `"ramp"`.
        """
        angles, projections = batch
        residual = (self.project(field, angles) - projections) / self.size
        if self.weighting == "uniform":
            mse = jnp.mean(jnp.square(residual))
            return mse, {"mse": mse}
        # The filtered residual on the zero-padded detector (its tails included), as
        # FBP filters: sum of squares per projection, divided by N.
        padded = 2 * (self.ramp.shape[0] - 1)
        spectrum = jnp.fft.rfft(residual, n=padded, axis=-1)
        filtered = jnp.fft.irfft(
            spectrum * self.ramp[None, :].astype(spectrum.dtype), n=padded, axis=-1
        )
        ramp_mse = jnp.sum(jnp.square(filtered)) / residual.size
        return ramp_mse, {"ramp_mse": ramp_mse}

    def training_points(self) -> Float[Array, "m 2"]:
        """The coordinates the field is evaluated at in training: the pixel grid
        (`"grid"`), or every sample point of every ray (`"rays"`). Batch-norm
        statistics are frozen on these."""
        if self.projector == "rays":
            points, _ = ray_points(self.angles, self.size, self.grid_coords.dtype)
            return points.reshape(-1, 2)
        return self.grid_coords

    def reconstruction(self, field: Any) -> Float[Array, "n n"]:
        """The reconstruction: `field`, with batch-norm statistics frozen on the
        training points, rendered on the pixel grid and masked to the disk (not
        clipped)."""
        field = sciinr.nn.freeze_statistics(field, self.training_points())
        return self.render(field, chunk_size=self.chunk_size)

    def evaluate(self, field: Any) -> dict[str, Scalar]:
        """PSNR and SSIM of the reconstruction and of FBP against the phantom.

        Both images are clipped to `[0, 1]` first (data range 1).

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=1`.

        **Returns:**

        `{"psnr": ..., "ssim": ..., "psnr_fbp": ..., "ssim_fbp": ...}` (PSNR in dB).
        """
        recon = jnp.clip(self.reconstruction(field), 0.0, 1.0)
        fbp = jnp.clip(self.fbp, 0.0, 1.0)
        return {
            "psnr": psnr(recon, self.phantom),
            "ssim": ssim(recon, self.phantom),
            "psnr_fbp": psnr(fbp, self.phantom),
            "ssim_fbp": ssim(fbp, self.phantom),
        }

    def predict(self, field: Any) -> dict[str, Float[Array, "..."]]:
        """The reconstruction and the data, for the run file.

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=1`.

        **Returns:**

        `{"reconstruction": (N, N), "phantom": (N, N), "sinogram": (a, N),
        "fbp": (N, N)}`: the reconstruction (masked to the disk, not clipped), the
        phantom, the measured (noisy) sinogram and the FBP reconstruction (not
        clipped).
        """
        return {
            "reconstruction": self.reconstruction(field),
            "phantom": self.phantom,
            "sinogram": self.sinogram,
            "fbp": self.fbp,
        }

    def coordinates(self) -> dict[str, Array]:
        """The axes of the images: `x = i / N` labels rows, `y = j / N` columns
        ([`sciinr.grid`][])."""
        _, (x, y) = sciinr.grid((self.size, self.size), dtype=self.phantom.dtype)
        return {"x": x, "y": y}
