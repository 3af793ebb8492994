r"""2D image regression: fit a field $f_\theta: [0, 1)^2 \to \mathbb{R}^C$ to an image.

The signals (scikit-image's bundled images, image files, Perlin noise, random text)
live in [`problems.signals`][], shared with the other problems; they are re-exported
here.
"""

import os
from typing import TypeGuard

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

import sciinr.nn
from sciinr import AbstractProblem
from sciinr.checks import check_finite_array, check_positive_int, resolve_option
from sciinr.metrics import psnr
from sciinr.nn import AbstractGridField

from .signals import (
    _center_crop,
    _resize,
    IMAGES as IMAGES,
    load_image as load_image,
    perlin_noise as perlin_noise,
    text_image as text_image,
)


Scalar = Float[Array, ""]


# --------------------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------------------


_PROTOCOLS: dict[str, str] = {
    "fit": "train and test on all pixels",
    "tancik": "train on img[::2, ::2], test on img[1::2, 1::2]",
    "superres": "train on the image at N x N, test on it at 2N x 2N",
}


def _as_image(image: str | ArrayLike) -> tuple[np.ndarray, str]:
    """The source image as a square float32 `(H, H, C)` NumPy array, and its label."""
    if isinstance(image, str | os.PathLike):
        if os.fspath(image) in IMAGES:
            array = load_image(os.fspath(image))
        else:
            try:
                array = load_image(image)
            except ValueError as err:  # an unknown name: say `image`, not `name`
                raise ValueError(str(err).replace("`name`", "`image`")) from None
        label = repr(os.fspath(image))
    else:
        array = check_finite_array("image", image)
        label = f"of shape {array.shape}"
        if array.ndim not in (2, 3):
            raise ValueError(
                "`image` must be a 2-D (H, W) grayscale or 3-D (H, W, C) image array, "
                f"got an array of shape {array.shape} ({array.ndim}-D)."
            )
        if min(array.shape) == 0:
            raise ValueError(f"`image` must not be empty, got shape {array.shape}.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            hint = ""
            if high > 1 and np.issubdtype(array.dtype, np.integer):
                hint = " Is it an 8-bit image? Use `image / 255`."
            raise ValueError(
                f"`image` values must lie in [0, 1], got values in [{low}, {high}]."
                + hint
            )
        array = _center_crop(array.astype(np.float32))
    if array.ndim == 2:
        array = array[..., None]
    return array, label


def _grid_points(
    image: np.ndarray, offset: int, stride: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Pixels `image[offset::stride, offset::stride]` and their coordinates.

    Pixel `(i, j)` of the `N x N` image sits at `(i / N, j / N)` ([`sciinr.grid`][]).
    Returns coordinates `(n, 2)`, values `(n, C)` (row-major) and the subgrid shape.
    """
    side = image.shape[0]
    coords, _ = sciinr.grid((side, side))
    coords = np.asarray(coords).reshape(side, side, 2)[offset::stride, offset::stride]
    sub = image[offset::stride, offset::stride]
    height, width = sub.shape[:2]
    return (
        coords.reshape(-1, 2),
        sub.reshape(height * width, sub.shape[-1]),
        (height, width),
    )


_UNIT_SQUARE = ((0.0, 1.0), (0.0, 1.0))


def _is_grid_field(field: eqx.Module) -> TypeGuard[AbstractGridField]:
    """Whether `field` renders whole grids ([`sciinr.nn.AbstractGridField`][]), after
    checking that its domain is the unit square of the pixel coordinates."""
    if not isinstance(field, AbstractGridField):
        return False
    domain = tuple(tuple(float(v) for v in pair) for pair in field.domain)
    if domain != _UNIT_SQUARE:
        raise ValueError(
            f"`field` is defined on `domain` {field.domain}, but ImageRegression "
            "places pixel (i, j) of an N x N image at (i/N, j/N) in the unit square. "
            "Build the field with `domain=((0, 1), (0, 1))`."
        )
    return True


def _render_values(
    field: AbstractGridField,
    shape: tuple[int, int],
    offset: float,
    channels: int,
    what: str,
    chunk_size: int | None = None,
) -> Float[Array, "n c"]:
    """`field.render_grid(shape, offset=offset)` as `(n, C)` values in row-major
    order (the order of `_grid_points`); `what` names the grid in errors."""
    try:
        values = field.render_grid(shape, offset=offset, chunk_size=chunk_size)
    except ValueError as err:
        raise ValueError(f"The {what} grid is {shape[0]} x {shape[1]}: {err}") from None
    if values.shape != (*shape, channels):
        raise ValueError(
            f"`field` must return {channels} value(s) per pixel (the image has "
            f"{channels} channel(s)), got a rendered grid of shape {values.shape}. "
            "Build the field with `out_size=problem.out_size`."
        )
    return values.reshape(shape[0] * shape[1], channels)


def _predict_values(
    field: eqx.Module,
    coords: Float[Array, "n 2"],
    channels: int,
    chunk_size: int | None = None,
) -> Float[Array, "n c"]:
    values = sciinr.nn.apply(field, coords, chunk_size=chunk_size)
    if values.shape != (coords.shape[0], channels):
        raise ValueError(
            f"`field` must return {channels} value(s) per pixel (the image has "
            f"{channels} channel(s)), got outputs of shape {values.shape} for "
            f"{coords.shape[0]} coordinates. Build the field with "
            "`out_size=problem.out_size`."
        )
    return values


class ImageRegression(AbstractProblem):
    r"""Fit a field to an image: $f_\theta(x_{ij}) \approx I_{ij}$.

    The image is square with side $N$; pixel $(i, j)$ sits at the coordinate

    $$x_{ij} = \big(i / N,\; j / N\big) \in [0, 1)^2,$$

    the first coordinate indexing rows, as in Tancik et al. (2020). Values always have a
    channel axis ($C = 1$ for grayscale), so fields map $\mathbb{R}^2 \to
    \mathbb{R}^C$: build them with `in_size=problem.in_size` and
    `out_size=problem.out_size`. The loss is the mean squared error over a batch of
    training pixels,

    $$\mathcal{L}(\theta) = \frac{1}{|B|\,C} \sum_{(i, j) \in B} \lVert f_\theta(x_{ij})
    - I_{ij} \rVert_2^2,$$

    and the metrics are PSNRs (data range 1) on the training and test pixels.

    Protocols (`protocol=`):

    - `"fit"`: train on all $N^2$ pixels; test on the same pixels (memorisation).
    - `"tancik"` (Tancik et al. 2020, image regression): train on the even pixels
      `img[::2, ::2]` at $(2i/N, 2j/N)$, test on the odd pixels `img[1::2, 1::2]` at
      $((2i+1)/N, (2j+1)/N)$ (interpolation). $N$ must be even.
    - `"superres"` (the multi-head ReLU paper: train on a 256 x 256 down-sampled
      image, evaluate on the 512 x 512 original): train on the image resized to
      $N \times N$ at $(i/N, j/N)$, test on all pixels of the image resized to
      $2N \times 2N$ at $(i/2N, j/2N)$.

    `predict` renders the field on the evaluation grid: the $N \times N$ grid for
    `"fit"` and `"tancik"`, the $2N \times 2N$ grid for `"superres"`.

    **Grid fields.** Every pixel set above is a regular grid: the training pixels
    are the $N$-grid (`"fit"`, `"superres"`) or the $N/2$-grid (`"tancik"`, at
    $i/(N/2)$), the test pixels the $2N$-grid (`"superres"`) or the $N/2$-grid
    shifted by half a pixel (`"tancik"`). For a field that is a
    [`sciinr.nn.AbstractGridField`][] (e.g. [`sciinr.nn.MultiHeadField`][]), the
    full-batch loss, `evaluate` and `predict` therefore call
    `field.render_grid(shape, offset=...)` on these grids instead of evaluating
    the field per pixel; for a multi-head field that evaluates the shared body once
    per local coordinate (the paper's joint input space). The values are the same
    as per pixel (to float tolerance). The check is `isinstance(field,
    AbstractGridField)` at trace time, so every other field takes the per-pixel
    path unchanged. Such a field must be defined on the unit square
    (`domain=((0, 1), (0, 1))`), and its grid constraints must fit the protocol's
    grids (a multi-head field's `tiles` must divide them); with `batch_size` set,
    the loss evaluates the sampled pixels per point.

    !!! warning

        Predictions are **not** clipped to `[0, 1]` before the PSNR: the metrics
        report what the network outputs.

    !!! note

        Every pixel is sampled at the corner $i/N$ of its cell. An anti-aliased
        resize averages over the cell, so the content of pixel $i$ is centred at
        $(i + \tfrac12)/N$: in `"superres"` the two resolutions are therefore
        misregistered by a quarter of a training pixel, $1/(4N)$. This is the
        convention of the papers, kept for comparability.

    ??? cite

        [Fourier Features Let Networks Learn High Frequency Functions in Low
        Dimensional Domains](https://arxiv.org/abs/2006.10739)

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
        ```

        [Multi-Head ReLU Implicit Neural Representation
        Networks](https://arxiv.org/abs/2110.03448), for the `"superres"` protocol.

        ```bibtex
        @article{aftab2021multihead,
          title={Multi-Head ReLU Implicit Neural Representation Networks},
          author={Aftab, Arya and Morsali, Alireza and Ghaemmaghami, Shahrokh},
          journal={arXiv preprint arXiv:2110.03448},
          year={2021}
        }
        ```
    """

    train_coords: Float[Array, "n_train 2"]
    train_values: Float[Array, "n_train c"]
    test_coords: Float[Array, "n_test 2"]
    test_values: Float[Array, "n_test c"]
    target: Float[Array, "h w c"]
    protocol: str = eqx.field(static=True)
    size: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    train_shape: tuple[int, int] = eqx.field(static=True)
    test_shape: tuple[int, int] = eqx.field(static=True)
    test_offset: float = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(
        self,
        image: str | os.PathLike | ArrayLike,
        *,
        size: int | None = None,
        protocol: str = "tancik",
        batch_size: int | None = None,
        chunk_size: int = 65_536,
    ):
        """**Arguments:**

        - `image`: a built-in name (one of [`problems.signals.IMAGES`][]:
          `"camera"`, `"astronaut"`, ...), the path of an image file (read by
          [`problems.signals.load_image`][]), or an array of shape `(H, W)` or
          `(H, W, C)` with values in `[0, 1]` (NumPy or JAX; checked on the host). A
          non-square image is centre-cropped to a square, like the built-in ones.
        - `size`: the image side $N$; the image is resized to $N \\times N$
          (anti-aliased when shrinking). Keyword-only. Defaults to `None`: the
          (cropped) image's own side, or half of it for `"superres"` (so that the
          test image is the original). For `"superres"`, $2N$ may not exceed the
          image's side: the test image must be real detail, not an upsampling.
        - `protocol`: `"fit"`, `"tancik"` or `"superres"` (see above). Keyword-only.
          Defaults to `"tancik"` (Tancik et al. 2020).
        - `batch_size`: `None` for full-batch training (`sample` returns every
          training pixel), or the number of training pixels `sample` draws uniformly
          **with replacement** (cheap on device: one `jax.random.randint`).
          Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming the offending argument for: an unknown image
        name or protocol; an array with NaN/inf, of the wrong rank or with values
        outside `[0, 1]`; an odd $N$ with `"tancik"`; a non-positive `size`; a
        `batch_size` that is not in `1 ... n_train`.
        """
        resolve_option("protocol", protocol, _PROTOCOLS)
        if size is not None:
            check_positive_int("size", size)
        source, label = _as_image(image)
        side: int = source.shape[0]
        if size is None:
            n = side // 2 if protocol == "superres" else side
            if n == 0:
                raise ValueError(
                    f"`image` {label} is too small for protocol 'superres', which "
                    "tests at twice the training resolution."
                )
        else:
            n = size
        if protocol == "tancik" and n % 2:
            raise ValueError(
                f"Protocol 'tancik' needs an even image side (`size`), got {n} "
                f"(for `image` {label}). Pass an even `size`, e.g. "
                f"`size={n - 1 if n > 1 else 2}`."
            )
        if protocol == "superres" and 2 * n > side:
            raise ValueError(
                f"Protocol 'superres' tests at 2 * `size` = {2 * n} pixels, but "
                f"`image` {label} has side {side}: the test image would be an "
                f"upsampling. Use `size` <= {side // 2}."
            )

        if protocol == "superres":
            train_image, test_image = _resize(source, n), _resize(source, 2 * n)
            train = _grid_points(train_image, 0, 1)
            test = _grid_points(test_image, 0, 1)
            target = test_image
        else:
            target = _resize(source, n)
            if protocol == "fit":
                train = test = _grid_points(target, 0, 1)
            else:
                train = _grid_points(target, 0, 2)
                test = _grid_points(target, 1, 2)

        n_train = train[1].shape[0]
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size)
            if batch_size > n_train:
                raise ValueError(
                    f"`batch_size` must be at most the number of training pixels, "
                    f"{n_train} (protocol {protocol!r}, size {n}), got "
                    f"{batch_size}. Use `batch_size=None` for full-batch training."
                )
        dtype = jnp.result_type(float)
        self.train_coords = jnp.asarray(train[0], dtype)
        self.train_values = jnp.asarray(train[1], dtype)
        self.test_coords = jnp.asarray(test[0], dtype)
        self.test_values = jnp.asarray(test[1], dtype)
        self.target = jnp.asarray(target, dtype)
        self.protocol = protocol
        self.size = n
        self.channels = source.shape[-1]
        self.train_shape = train[2]
        self.test_shape = test[2]
        # The odd pixels (2i+1)/N are the (N/2)-grid shifted by half a pixel.
        self.test_offset = 0.5 if protocol == "tancik" else 0.0
        self.batch_size = batch_size
        self.chunk_size = check_positive_int("chunk_size", chunk_size)

    @property
    def in_size(self) -> int:
        """The coordinate dimension, `2`."""
        return 2

    @property
    def out_size(self) -> int:
        """The number of channels `C` a field must output (`1` for grayscale)."""
        return self.channels

    @property
    def render_shape(self) -> tuple[int, int]:
        """The `(H, W)` of `predict`'s images: `(N, N)`, or `(2N, 2N)` for
        `"superres"`."""
        return self.target.shape[0], self.target.shape[1]

    def sample(
        self, key: PRNGKeyArray
    ) -> tuple[Float[Array, "b 2"], Float[Array, "b c"]]:
        """Draw one training batch.

        **Arguments:**

        - `key`: a JAX PRNG key; ignored for full-batch training.

        **Returns:**

        `(coords, values)` of shapes `(b, 2)` and `(b, C)`: every training pixel
        when `batch_size` is `None`, otherwise `batch_size` pixels drawn uniformly
        with replacement.
        """
        if self.batch_size is None:
            return self.train_coords, self.train_values
        index = jr.randint(key, (self.batch_size,), 0, self.train_coords.shape[0])
        return self.train_coords[index], self.train_values[index]

    def loss(
        self,
        field: eqx.Module,
        batch: tuple[Float[Array, "b 2"], Float[Array, "b c"]],
    ) -> tuple[Scalar, dict[str, Scalar]]:
        """The mean squared error of `field` on `batch`.

        The field is evaluated with [`sciinr.nn.apply`][], so batch-norm layers use
        the statistics of the batch's coordinates. For a
        [`sciinr.nn.AbstractGridField`][] in full-batch training, the predictions
        come from `field.render_grid` on the training grid instead (the same
        values, and the same batch statistics).

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=problem.out_size`.
        - `batch`: `(coords, values)` from `sample`.

        **Returns:**

        `(mse, {"mse": mse})`.
        """
        coords, values = batch
        if self.batch_size is None and _is_grid_field(field):
            # The joint input space: the batch is the whole training grid.
            pred = _render_values(
                field, self.train_shape, 0.0, self.channels, "training"
            )
        else:
            pred = _predict_values(field, coords, self.channels)
        mse = jnp.mean(jnp.square(pred - values))
        return mse, {"mse": mse}

    def evaluate(self, field: eqx.Module) -> dict[str, Scalar]:
        """PSNRs (data range 1, unclipped predictions) on the train and test pixels.

        Batch-norm statistics are first frozen on all training coordinates
        ([`sciinr.nn.freeze_statistics`][]), so the metrics are those of one
        pointwise function.

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=problem.out_size`.

        **Returns:**

        `{"psnr_train": ..., "psnr_test": ...}` in dB (`inf` for an exact fit). For
        `"fit"` the two are the same number.

        **Raises:**

        `ValueError` (at trace time) for a grid field that is not defined on the
        unit square or cannot render the protocol's grids (e.g. `tiles` that do not
        divide them).
        """
        field = sciinr.nn.freeze_statistics(field, self.train_coords)
        chunk = self.chunk_size
        grid = _is_grid_field(field)
        if grid:
            train = _render_values(
                field, self.train_shape, 0.0, self.channels, "training", chunk
            )
        else:
            train = _predict_values(field, self.train_coords, self.channels, chunk)
        psnr_train = psnr(train, self.train_values)
        if self.protocol == "fit":
            psnr_test = psnr_train
        else:
            if grid:
                test = _render_values(
                    field,
                    self.test_shape,
                    self.test_offset,
                    self.channels,
                    "test",
                    chunk,
                )
            else:
                test = _predict_values(field, self.test_coords, self.channels, chunk)
            psnr_test = psnr(test, self.test_values)
        return {"psnr_train": psnr_train, "psnr_test": psnr_test}

    def predict(self, field: eqx.Module) -> dict[str, Float[Array, "h w c"]]:
        """Render `field` on the evaluation grid (see `coordinates`).

        Batch-norm statistics are frozen on the training coordinates first.

        **Arguments:**

        - `field`: a field with `in_size=2` and `out_size=problem.out_size`.

        **Returns:**

        `{"image": ..., "target": ...}`, both of shape `(H, W, C)` with
        `(H, W) = render_shape`: the field's (unclipped) values at
        $(i/H, j/W)$ and the image there.
        """
        field = sciinr.nn.freeze_statistics(field, self.train_coords)
        height, width = self.render_shape
        if _is_grid_field(field):
            values = _render_values(
                field,
                (height, width),
                0.0,
                self.channels,
                "prediction",
                self.chunk_size,
            )
        else:
            coords, _ = sciinr.grid((height, width), dtype=self.target.dtype)
            values = _predict_values(field, coords, self.channels, self.chunk_size)
        return {
            "image": values.reshape(height, width, self.channels),
            "target": self.target,
        }

    def coordinates(self) -> dict[str, Array]:
        """The axes of `predict`'s images: `x = i / H` labels rows, `y = j / W`
        columns (`H = W = N`, or `2N` for `"superres"`; see [`sciinr.grid`][]) and
        `channel = 0 ... C - 1` the channels."""
        height, width = self.render_shape
        _, (x, y) = sciinr.grid((height, width), dtype=self.target.dtype)
        return {"x": x, "y": y, "channel": jnp.arange(self.channels)}
