"""ImageRegression with a multi-head field: training in the joint input space."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import tree_allclose, without_runtime_typechecks

import sciinr
from problems.image import ImageRegression
from sciinr.nn import apply, freeze_statistics, MultiHeadField


def _psnr(pred, target):
    mse = np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("protocol", ["fit", "tancik", "superres"])
def test_render_path_equals_the_per_pixel_path(protocol, getkey):
    # Batch norm in the body: the render path must also reproduce the statistics.
    problem = ImageRegression("camera", size=16, protocol=protocol)
    field = MultiHeadField(
        2, 1, (4, 2), 8, 2, heads="sparse", alpha=5, norm="batch", key=getkey()
    )
    batch = problem.sample(jr.key(0))

    @eqx.filter_jit
    def run(problem, field):
        # The reference: every pixel through the per-point call.
        coords, values = batch
        reference_loss = jnp.mean((apply(field, coords) - values) ** 2)
        frozen = freeze_statistics(field, problem.train_coords)
        train = apply(frozen, problem.train_coords)
        test = apply(frozen, problem.test_coords)
        height, width = problem.render_shape
        grid, _ = sciinr.grid((height, width))
        image = apply(frozen, grid).reshape(height, width, 1)
        loss, terms = problem.loss(field, batch)
        return (
            loss,
            reference_loss,
            problem.evaluate(field),
            problem.predict(field),
            train,
            test,
            image,
        )

    loss, reference_loss, metrics, predictions, train, test, image = run(problem, field)
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-5)
    np.testing.assert_allclose(
        metrics["psnr_train"], _psnr(train, problem.train_values), atol=1e-3
    )
    np.testing.assert_allclose(
        metrics["psnr_test"], _psnr(test, problem.test_values), atol=1e-3
    )
    np.testing.assert_allclose(predictions["image"], image, atol=1e-5)
    side = 32 if protocol == "superres" else 16
    assert predictions["image"].shape == (side, side, 1)


def test_the_loss_evaluates_the_body_once_per_local_coordinate(getkey):
    # 32 x 32 training pixels in 8 x 8 tiles: the body sees the 4 x 4 local grid.
    problem = ImageRegression("camera", size=32, protocol="fit")
    field = MultiHeadField(2, 1, 8, 24, 2, key=getkey())
    batch = problem.sample(jr.key(0))
    assert (16, 24) in _shapes(problem, field, batch)  # body features, local grid
    assert (1024, 24) not in _shapes(problem, field, batch)  # never per pixel
    # A field that is not a grid field takes the per-pixel path unchanged.
    mlp = sciinr.nn.CoordinateMLP(2, 1, 24, 2, key=getkey())
    assert (1024, 24) in _shapes(problem, mlp, batch)


def _shapes(problem, field, batch):
    """The shapes of every intermediate value of the loss (nested jaxprs included)."""
    shapes = set()

    def collect(jaxpr):
        for eqn in jaxpr.eqns:
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
            for param in eqn.params.values():
                for sub in param if isinstance(param, list | tuple) else [param]:
                    if hasattr(sub, "eqns"):
                        collect(sub)
                    elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        collect(sub.jaxpr)

    jaxpr, _, _ = eqx.filter_make_jaxpr(lambda f: problem.loss(f, batch)[0])(field)
    collect(jaxpr.jaxpr)
    return shapes


def test_multi_head_beats_single_head_and_run_file_round_trips(tmp_path, getkey):
    # Camera, 32^2 train / 64^2 test (superres), a 2 x 32 ReLU body, 300 Adam steps.
    # Measured (seeds 0, 1): test PSNR 23.6 / 23.6 dB with 8 x 8 heads, 18.3 / 18.6
    # with one head of the same width.
    problem = ImageRegression("camera", size=32, protocol="superres")
    results = {}
    for tiles in (1, 8):
        field = MultiHeadField(2, 1, tiles, 32, 2, key=jr.key(0))
        results[tiles] = sciinr.fit(
            problem,
            field,
            optax.adam(5e-3),
            steps=300,
            key=jr.key(1),
            output=tmp_path / f"run{tiles}.h5",
            progress=False,
        )
    multi, single = results[8].metrics, results[1].metrics
    assert multi["psnr_test"] > 22.6  # measured 23.6
    assert single["psnr_test"] < 19.6  # measured 18.3
    assert multi["psnr_train"] > 29.0  # measured 30.3

    template = MultiHeadField(2, 1, 8, 32, 2, key=getkey())
    run = sciinr.io.load_run(tmp_path / "run8.h5", template)
    assert tree_allclose(run.field, results[8].field)
    assert run.metrics == pytest.approx(multi)
    np.testing.assert_allclose(
        run.predictions["image"], sciinr.predict(problem, run.field)["image"]
    )
    assert run.predictions["image"].shape == (64, 64, 1)


def test_sparse_run_file_round_trips_the_neuron_index(tmp_path, getkey):
    problem = ImageRegression("camera", size=16, protocol="tancik")
    field = MultiHeadField(2, 1, 4, 8, 1, heads="sparse", alpha=3, key=getkey())
    result = sciinr.fit(
        problem,
        field,
        optax.adam(1e-2),
        steps=5,
        key=jr.key(0),
        output=tmp_path / "run.h5",
        progress=False,
    )
    # The index is part of the module, not trained, and stored in the run file.
    np.testing.assert_array_equal(result.field.index, field.index)
    template = MultiHeadField(2, 1, 4, 8, 1, heads="sparse", alpha=3, key=getkey())
    assert not np.array_equal(template.index, field.index)
    run = sciinr.io.load_run(tmp_path / "run.h5", template)
    np.testing.assert_array_equal(run.field.index, field.index)
    assert tree_allclose(run.field, result.field)
    assert "index" in run.params


def test_minibatches_use_the_per_point_call(getkey):
    problem = ImageRegression("camera", size=16, protocol="fit", batch_size=20)
    field = MultiHeadField(2, 1, 4, 8, 1, key=getkey())
    coords, values = batch = problem.sample(jr.key(3))
    loss, _ = eqx.filter_jit(problem.loss)(field, batch)
    np.testing.assert_allclose(
        loss, jnp.mean((apply(field, coords) - values) ** 2), rtol=1e-6
    )


def test_tiles_that_do_not_divide_the_protocol_grid(tmp_path, getkey):
    field = MultiHeadField(2, 1, 8, 8, 1, key=getkey())
    with without_runtime_typechecks():
        # Tancik at N = 24 trains on the 12 x 12 even pixels.
        tancik = ImageRegression("camera", size=24, protocol="tancik")
        with pytest.raises(ValueError, match=r"training grid is 12 x 12: `tiles`"):
            tancik.loss(field, tancik.sample(jr.key(0)))
        superres = ImageRegression("camera", size=12, protocol="superres")
        out = tmp_path / "run.h5"
        with pytest.raises(ValueError, match=r"`tiles` \(8, 8\) must divide"):
            sciinr.fit(
                superres,
                field,
                optax.adam(1e-3),
                steps=2,
                key=jr.key(0),
                output=out,
                progress=False,
            )
        assert not out.exists()
        with pytest.raises(ValueError, match=r"`tiles` \(8, 8\) must divide"):
            sciinr.evaluate(tancik, field)


def test_a_field_on_another_domain_is_rejected(getkey):
    problem = ImageRegression("camera", size=16, protocol="fit")
    field = MultiHeadField(2, 1, 4, 8, 1, domain=((-1, 1), (-1, 1)), key=getkey())
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match=r"domain=\(\(0, 1\), \(0, 1\)\)"):
            problem.loss(field, problem.sample(jr.key(0)))
        with pytest.raises(ValueError, match="`domain`"):
            problem.predict(field)
