import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import skimage.data
import skimage.util
from helpers import tree_allclose, without_runtime_typechecks

import sciinr
import sciinr.nn
from problems import ImageRegression, IMAGES, load_image, perlin_noise, text_image
from sciinr import AbstractProblem


class _Lookup(eqx.Module):
    """A "perfect" field: the nearest pixel of `image` (pixel `i` at `i / side`)."""

    image: jax.Array
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, image):
        image = jnp.asarray(image)
        self.image = image if image.ndim == 3 else image[..., None]
        self.in_size = 2
        self.out_size = self.image.shape[-1]

    def __call__(self, x, *, key=None):
        side = self.image.shape[0]
        index = jnp.clip(jnp.round(x * side).astype(jnp.int32), 0, side - 1)
        return self.image[index[0], index[1]]


class _Constant(eqx.Module):
    value: float = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    in_size: int = eqx.field(static=True, default=2)

    def __call__(self, x, *, key=None):
        return jnp.full((self.out_size,), self.value, x.dtype)


def _random_image(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _grid(rows, cols):
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)


# --------------------------------------------------------------------------------------
# Built-in signals
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, shape",
    [
        ("camera", None, (512, 512)),
        ("camera", 32, (32, 32)),
        ("astronaut", 24, (24, 24, 3)),
        ("chelsea", None, (300, 300, 3)),
        ("coffee", 16, (16, 16, 3)),
        ("moon", 40, (40, 40)),
        ("shepp_logan_phantom", 20, (20, 20)),
        ("text", None, (172, 172)),
    ],
    ids=lambda v: str(v),
)
def test_load_image_shape_dtype_range(name, size, shape):
    image = load_image(name, size)
    assert isinstance(image, np.ndarray)
    assert image.shape == shape
    assert image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    assert image.max() > image.min()


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_builtin_image_loads(name):
    image = load_image(name, 8)
    assert image.shape in ((8, 8), (8, 8, 3))
    assert image.dtype == np.float32
    assert 0 <= image.min() <= image.max() <= 1


def test_load_image_center_crop_and_alias():
    raw = skimage.util.img_as_float32(skimage.data.chelsea())  # (300, 451, 3)
    np.testing.assert_array_equal(load_image("chelsea"), raw[:, 75:375])
    np.testing.assert_array_equal(load_image("cat", 16), load_image("chelsea", 16))
    camera = skimage.util.img_as_float32(skimage.data.camera())
    np.testing.assert_array_equal(load_image("camera"), camera)
    # Anti-aliased downsampling keeps the mean brightness.
    assert abs(load_image("camera", 64).mean() - camera.mean()) < 0.01


def test_load_image_errors():
    with pytest.raises(
        ValueError, match=r"Unknown `name` 'lena'.*'astronaut'.*'camera'"
    ):
        load_image("lena")
    with pytest.raises(ValueError, match="size"):
        load_image("camera", 0)
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`size` must be a positive int, got float"):
            load_image("camera", 2.5)  # pyright: ignore


@pytest.mark.parametrize("octave", [1, 4, 32])
def test_perlin_noise(getkey, octave):
    key = getkey()
    noise = perlin_noise(64, octave, key=key)
    assert noise.shape == (64, 64)
    assert noise.dtype == np.float32
    assert noise.min() == 0 and noise.max() == 1
    np.testing.assert_array_equal(noise, perlin_noise(64, octave, key=key))
    assert not np.array_equal(noise, perlin_noise(64, octave, key=getkey()))


def test_perlin_noise_frequency_grows_with_octave(getkey):
    key = getkey()
    roughness = [
        np.abs(np.diff(perlin_noise(128, octave, key=key), axis=0)).mean()
        for octave in (1, 4, 16, 64)
    ]
    assert np.all(np.diff(roughness) > 0), roughness
    # One cell per pixel is still a valid (not constant) image.
    assert perlin_noise(16, 16, key=key).std() > 0.1


def test_text_image(getkey):
    key = getkey()
    image = text_image(48, key=key)
    assert image.shape == (48, 48, 3)
    assert image.dtype == np.float32
    assert 0 <= image.min() and image.max() == 1  # white background
    assert image.min() < 0.5  # some ink
    np.testing.assert_array_equal(image, text_image(48, key=key))
    assert not np.array_equal(image, text_image(48, key=getkey()))


def test_signal_errors(getkey):
    with pytest.raises(ValueError, match="octave"):
        perlin_noise(16, 0, key=getkey())
    with pytest.raises(ValueError, match="size"):
        text_image(0, key=getkey())


# --------------------------------------------------------------------------------------
# Protocols and the coordinate convention
# --------------------------------------------------------------------------------------


def test_is_a_problem():
    problem = ImageRegression("camera", size=8)
    assert isinstance(problem, AbstractProblem)
    assert problem.in_size == 2 and problem.out_size == problem.channels == 1
    assert problem.protocol == "tancik"


def test_tancik_coordinates_and_values():
    image = _random_image((8, 8))
    problem = ImageRegression(image, protocol="tancik")
    even, odd = 2 * np.arange(4) / 8, (2 * np.arange(4) + 1) / 8
    for name in ("train_coords", "train_values", "test_coords", "test_values"):
        assert getattr(problem, name).dtype == jnp.float32
    np.testing.assert_array_equal(problem.train_coords, _grid(even, even))
    np.testing.assert_array_equal(problem.test_coords, _grid(odd, odd))
    np.testing.assert_array_equal(problem.train_values, image[::2, ::2].reshape(16, 1))
    np.testing.assert_array_equal(problem.test_values, image[1::2, 1::2].reshape(16, 1))
    assert problem.train_shape == problem.test_shape == (4, 4)
    assert problem.render_shape == (8, 8)
    np.testing.assert_array_equal(problem.target, image[..., None])
    axes = problem.coordinates()
    np.testing.assert_array_equal(axes["x"], np.arange(8) / 8)
    np.testing.assert_array_equal(axes["y"], np.arange(8) / 8)


def test_fit_uses_every_pixel():
    image = _random_image((6, 6, 3))
    problem = ImageRegression(image, protocol="fit")
    grid = _grid(np.arange(6) / 6, np.arange(6) / 6).astype(np.float32)
    np.testing.assert_array_equal(problem.train_coords, grid)
    np.testing.assert_array_equal(problem.train_values, image.reshape(36, 3))
    np.testing.assert_array_equal(problem.test_coords, problem.train_coords)
    np.testing.assert_array_equal(problem.test_values, problem.train_values)
    assert problem.out_size == 3


def test_superres_grid():
    problem = ImageRegression("camera", size=8, protocol="superres")
    np.testing.assert_array_equal(
        problem.train_coords, _grid(np.arange(8) / 8, np.arange(8) / 8)
    )
    np.testing.assert_array_equal(
        problem.test_coords, _grid(np.arange(16) / 16, np.arange(16) / 16)
    )
    np.testing.assert_array_equal(
        problem.train_values, load_image("camera", 8).reshape(64, 1)
    )
    np.testing.assert_array_equal(
        problem.test_values, load_image("camera", 16).reshape(256, 1)
    )
    assert problem.render_shape == (16, 16)
    assert problem.coordinates()["x"].shape == (16,)


def test_superres_default_size_tests_on_the_original():
    image = _random_image((16, 16))
    problem = ImageRegression(image, protocol="superres")
    assert problem.size == 8 and problem.render_shape == (16, 16)
    np.testing.assert_array_equal(problem.target, image[..., None])
    np.testing.assert_array_equal(problem.test_values, image.reshape(256, 1))


def test_builtin_name_equals_array():
    by_name = ImageRegression("astronaut", size=16, protocol="fit")
    by_array = ImageRegression(load_image("astronaut"), size=16, protocol="fit")
    assert tree_allclose(by_name, by_array, rtol=0, atol=0)
    assert by_name.out_size == 3


def test_non_square_array_is_center_cropped():
    image = _random_image((6, 10))
    problem = ImageRegression(jnp.asarray(image), protocol="fit")
    np.testing.assert_array_equal(problem.target, image[:, 2:8, None])


# --------------------------------------------------------------------------------------
# sample / loss / evaluate / predict
# --------------------------------------------------------------------------------------


def test_full_batch_sample(getkey):
    problem = ImageRegression("camera", size=8, protocol="fit")
    coords, values = problem.sample(getkey())
    assert coords.shape == (64, 2) and values.shape == (64, 1)
    np.testing.assert_array_equal(coords, problem.train_coords)
    np.testing.assert_array_equal(values, problem.train_values)


def test_mini_batch_sample(getkey):
    problem = ImageRegression("astronaut", size=16, protocol="tancik", batch_size=20)
    key = getkey()
    coords, values = eqx.filter_jit(problem.sample)(key)
    assert coords.shape == (20, 2) and values.shape == (20, 3)
    again = problem.sample(key)
    np.testing.assert_array_equal(coords, again[0])
    np.testing.assert_array_equal(values, again[1])
    other, _ = problem.sample(getkey())
    assert not np.array_equal(coords, other)
    # Every drawn point is a training pixel, with its own value.
    train = np.concatenate([problem.train_coords, problem.train_values], axis=1)
    drawn = np.concatenate([coords, values], axis=1)
    assert all((train == row).all(axis=1).any() for row in drawn)


def test_loss_is_mse(getkey):
    problem = ImageRegression("coffee", size=8, protocol="tancik", batch_size=10)
    field = sciinr.nn.CoordinateMLP(2, 3, 16, 2, key=getkey())
    batch = problem.sample(getkey())
    loss, terms = problem.loss(field, batch)
    pred = np.asarray(eqx.filter_jit(jax.vmap(field))(batch[0]))
    expected = np.mean((pred - np.asarray(batch[1])) ** 2)
    assert loss.shape == () and set(terms) == {"mse"}
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_array_equal(terms["mse"], loss)


@pytest.mark.parametrize("protocol", ["fit", "tancik", "superres"])
def test_evaluate_perfect_field(protocol):
    problem = ImageRegression("camera", size=8, protocol=protocol)
    metrics = problem.evaluate(_Lookup(problem.target))
    assert set(metrics) == {"psnr_train", "psnr_test"}
    if protocol == "superres":
        # The 2N lookup is the test image exactly, and only near the training one.
        assert math.isinf(metrics["psnr_test"])
        assert 15 < metrics["psnr_train"] < 40
    else:
        assert math.isinf(metrics["psnr_train"]) and math.isinf(metrics["psnr_test"])


@pytest.mark.parametrize("protocol", ["fit", "tancik", "superres"])
def test_evaluate_constant_field(protocol):
    problem = ImageRegression("astronaut", size=8, protocol=protocol)
    metrics = problem.evaluate(_Constant(0.5, 3))
    for split in ("train", "test"):
        values = np.asarray(getattr(problem, f"{split}_values"), np.float64)
        expected = 10 * np.log10(1 / np.mean((values - 0.5) ** 2))
        np.testing.assert_allclose(metrics[f"psnr_{split}"], expected, rtol=1e-5)
    # Not clipped: a field outside [0, 1] is penalised for it.
    assert problem.evaluate(_Constant(2.0, 3))["psnr_train"] < 0


@pytest.mark.parametrize(
    "image, size, protocol, shape",
    [
        ("camera", 8, "fit", (8, 8, 1)),
        ("camera", 8, "tancik", (8, 8, 1)),
        ("camera", 8, "superres", (16, 16, 1)),
        ("astronaut", 6, "tancik", (6, 6, 3)),
        ("astronaut", 4, "superres", (8, 8, 3)),
    ],
    ids=lambda v: str(v),
)
def test_predict(image, size, protocol, shape):
    problem = ImageRegression(image, size=size, protocol=protocol)
    out = problem.predict(_Lookup(problem.target))
    assert set(out) == {"image", "target"}
    assert out["image"].shape == out["target"].shape == shape
    np.testing.assert_array_equal(out["image"], out["target"])
    axes = problem.coordinates()
    assert axes["x"].shape == (shape[0],) and axes["y"].shape == (shape[1],)
    expected = load_image(image, shape[0])
    np.testing.assert_array_equal(out["target"], expected.reshape(shape))


def test_batch_norm_field_is_frozen_on_train_coords(getkey):
    problem = ImageRegression("camera", size=8, protocol="tancik")
    field = sciinr.nn.CoordinateMLP(2, 1, 16, 2, norm="batch", key=getkey())
    assert sciinr.nn.has_batch_statistics(field)
    metrics = problem.evaluate(field)
    out = problem.predict(field)

    @eqx.filter_jit
    def by_hand(field, problem):
        frozen = sciinr.nn.freeze_statistics(field, problem.train_coords)
        # The frozen field is pointwise: evaluate the test pixels in two chunks.
        chunks = [problem.test_coords[:5], problem.test_coords[5:]]
        test = jnp.concatenate([jax.vmap(frozen)(c) for c in chunks])
        # Batch statistics on the training pixels equal the frozen ones there...
        train = sciinr.nn.apply(field, problem.train_coords)
        # ... but not on the test pixels.
        own = sciinr.nn.apply(field, problem.test_coords)
        axes = problem.coordinates()
        x, y = axes["x"], axes["y"]
        grid = jnp.stack(jnp.meshgrid(x, y, indexing="ij"), -1).reshape(64, 2)
        return (
            sciinr.metrics.psnr(train, problem.train_values),
            sciinr.metrics.psnr(test, problem.test_values),
            sciinr.metrics.psnr(own, problem.test_values),
            jax.vmap(frozen)(grid).reshape(8, 8, 1),
        )

    psnr_train, psnr_test, psnr_own, image = by_hand(field, problem)
    np.testing.assert_allclose(metrics["psnr_train"], psnr_train, rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr_test"], psnr_test, rtol=1e-5)
    assert abs(float(psnr_own) - float(psnr_test)) > 1e-3
    np.testing.assert_allclose(out["image"], image, rtol=1e-5, atol=1e-6)


def test_field_with_wrong_out_size(getkey):
    problem = ImageRegression("astronaut", size=8)
    field = sciinr.nn.CoordinateMLP(2, 1, 8, 1, key=getkey())
    with pytest.raises(ValueError, match="out_size"):
        problem.loss(field, problem.sample(getkey()))
    with pytest.raises(ValueError, match="out_size"):
        problem.evaluate(field)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_bad_image_arrays():
    image = _random_image((8, 8))
    image[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"`image` contains 1 non-finite.*\(2, 3\)"):
        ImageRegression(image)
    with pytest.raises(ValueError, match=r"`image` must be a 2-D.*\(8,\)"):
        ImageRegression(np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"`image` must be a 2-D.*\(2, 8, 8, 3\)"):
        ImageRegression(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"`image` values must lie in \[0, 1\]"):
        ImageRegression(_random_image((8, 8)) + 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\].*-1\.0"):
        ImageRegression(-_random_image((8, 8)) * 0 - 1)
    with pytest.raises(ValueError, match=r"image / 255"):
        ImageRegression(skimage.data.camera())
    with pytest.raises(ValueError, match="empty"):
        ImageRegression(np.zeros((0, 4), np.float32))


def test_unknown_names():
    with pytest.raises(ValueError, match=r"Unknown `image` 'lena'.*'camera'"):
        ImageRegression("lena")
    with pytest.raises(
        ValueError, match=r"Unknown `protocol` 'nerf'.*'fit', 'tancik', 'superres'"
    ):
        ImageRegression("camera", size=8, protocol="nerf")


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"even.*`size`.*got 7.*size=6"):
        ImageRegression("camera", size=7, protocol="tancik")
    with pytest.raises(ValueError, match=r"even.*got 9.*`image` of shape \(9, 9\)"):
        ImageRegression(_random_image((9, 9)))
    ImageRegression(_random_image((9, 9)), protocol="fit")  # odd is fine for `fit`
    with pytest.raises(ValueError, match="size"):
        ImageRegression("camera", size=0)
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`size` must be a positive int, got float"):
            ImageRegression("camera", size=8.0)  # pyright: ignore
    with pytest.raises(ValueError, match=r"'superres'.*upsampling.*`size` <= 8"):
        ImageRegression(_random_image((16, 16)), size=16, protocol="superres")


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        ImageRegression("camera", size=8, batch_size=0)
    with pytest.raises(ValueError, match=r"`batch_size` must be at most.*16.*got 17"):
        ImageRegression("camera", size=8, batch_size=17)
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`batch_size` must be a positive int"):
            ImageRegression("camera", size=8, batch_size=2.0)  # pyright: ignore
    assert ImageRegression("camera", size=8, batch_size=16).batch_size == 16


# --------------------------------------------------------------------------------------
# Learning (a plain optax loop; the problem needs no trainer)
# --------------------------------------------------------------------------------------


def test_fits_camera(getkey):
    problem = ImageRegression("camera", size=32, protocol="fit")
    field = sciinr.nn.CoordinateMLP(
        2,
        problem.out_size,
        64,
        3,
        encoding=sciinr.nn.FourierFeatures(2, 64, sigma=8.0, key=getkey()),
        linear="rwf",
        key=getkey(),
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(field, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(field, opt_state, key):
        batch = problem.sample(key)
        grad_fn = eqx.filter_value_and_grad(problem.loss, has_aux=True)
        (loss, _), grads = grad_fn(field, batch)
        params = eqx.filter(field, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(field, updates), opt_state, loss

    initial = problem.evaluate(field)["psnr_train"]
    key, losses = getkey(), []
    # optax's Adam bias correction computes `float ** int32`, which strict dtype
    # promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        for i in range(100):
            field, opt_state, loss = step(field, opt_state, jr.fold_in(key, i))
            losses.append(loss)
    losses = np.asarray(jnp.stack(losses))
    assert np.isfinite(losses).all() and losses[-1] < 1e-3 * losses[0]
    metrics = problem.evaluate(field)
    # Measured: 53.4 dB (from 5.2 dB at init) after 100 steps on a 2-core CPU with
    # jax 0.10.2; threshold = measured - 1.5 dB. The fit still gains ~0.45 dB per step
    # here (300 steps reach ~140 dB, float32 round-off), so 100 steps keep it moderate.
    assert metrics["psnr_train"] > 51.9, (initial, metrics)
    assert metrics["psnr_test"] == metrics["psnr_train"]


def test_fit_tancik_protocol_reaches_test_psnr(getkey):
    # The trainer on the real image problem: camera at 32^2, train on the even
    # pixels, test on the odd ones. Measured (jax 0.10.2, CPU): test PSNR 24.65 dB
    # after 300 steps (a constant field gets 11.6 dB, the same network with dense
    # layers 24.05 dB); the threshold leaves a 1.65 dB margin.
    problem = ImageRegression("camera", size=32, protocol="tancik")
    fkey, mkey = jr.split(jr.key(0))
    encoding = sciinr.nn.FourierFeatures(2, 64, sigma=1.0, key=fkey)
    field = sciinr.nn.CoordinateMLP(
        2, 1, 64, 3, encoding=encoding, linear="rwf", key=mkey
    )
    result = sciinr.fit(
        problem,
        field,
        optax.adam(1e-3),
        steps=300,
        key=jr.key(1),
        steps_per_call=100,
        progress=False,
    )
    assert result.metrics["psnr_test"] > 23.0
    assert result.metrics["psnr_train"] > result.metrics["psnr_test"]
