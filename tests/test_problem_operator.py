"""Tests for the DeepONet problems of `problems.operator`: batches, losses, metrics,
the physics-informed residuals, training to an error threshold, bad input."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import without_runtime_typechecks

import sciinr
import sciinr.nn as snn
from problems.operator import (
    Antiderivative,
    DiffusionReaction,
    make_problem,
    NonlinearODE,
    OPERATORS,
    Pendulum,
)


# Small problems, shared by the whole module (the solvers compile once: the shapes
# match test_problem_operator_data.py).
SMALL = dict(n_sensors=20, n_test=32, cache=None)

# One compilation each instead of op-by-op dispatch.
loss = eqx.filter_jit(lambda problem, onet, batch: problem.loss(onet, batch))
apply = eqx.filter_jit(snn.apply)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing here may write into the user's real cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def antiderivative():
    return Antiderivative(n_train=256, batch_size=32, key=jr.key(0), **SMALL)


@pytest.fixture(scope="module")
def diffusion_reaction():
    return DiffusionReaction(
        n_train=64, n_times=11, n_points=10, batch_size=8, key=jr.key(1), **SMALL
    )


def _onet(problem, key, *, width=32, depth=2, p=16, activation="tanh", **kwargs):
    branch_key, trunk_key = jr.split(key)
    c = problem.out_size
    branch = snn.CoordinateMLP(
        problem.n_sensors, p * c, width, depth, activation=activation, key=branch_key,
        **kwargs,
    )  # fmt: skip
    trunk = snn.CoordinateMLP(
        problem.in_size, p * c, width, depth, activation=activation, key=trunk_key,
        **kwargs,
    )  # fmt: skip
    return snn.DeepONet(branch, trunk, out_size=c)


def test_data_layout(antiderivative, diffusion_reaction):
    data = antiderivative.data
    assert data.sensors.shape == (20,) and antiderivative.n_sensors == 20
    assert data.train_u.shape == (256, 20) and data.test_u.shape == (32, 20)
    # Query points default to the sensors; targets at them.
    np.testing.assert_allclose(data.train_points[:, 0], np.linspace(0, 1, 20))
    assert data.train_targets.shape == (256, 20, 1)
    # The sensors read the same function the targets integrate: s(0) = 0 and
    # s(1) ~ mean of u over [0, 1] (trapezoid on the sensors, l = 0.2 smooth).
    np.testing.assert_array_equal(data.test_targets[:, 0, 0], 0.0)
    u = np.asarray(data.test_u)
    np.testing.assert_allclose(
        data.test_targets[:, -1, 0], np.trapezoid(u, dx=1 / 19, axis=1), atol=1e-2
    )
    dr = diffusion_reaction.data
    assert dr.train_points.shape == (64, 10, 2) and dr.train_targets.shape == (
        64,
        10,
        1,
    )
    assert dr.test_points.shape == (20 * 11, 2) and diffusion_reaction.grid_shape == (
        20,
        11,
    )
    assert bool(jnp.all(dr.test_targets[:, :11, 0] == 0))  # x = 0 boundary
    assert bool(jnp.all(dr.test_targets.reshape(32, 20, 11)[:, :, 0] == 0))  # t = 0


def test_sample_and_loss_match_per_pair_evaluation(
    getkey, antiderivative, diffusion_reaction
):
    # Aligned (ODE): batch_size functions, each at all query points.
    onet = _onet(antiderivative, getkey())
    batch = antiderivative.sample(getkey())
    assert batch["u"].shape == (32, 20) and batch["targets"].shape == (32, 20, 1)
    value, terms = loss(antiderivative, onet, batch)
    ys = antiderivative.data.train_points
    pairs_u = jnp.repeat(batch["u"], 20, axis=0)
    pairs_y = jnp.tile(ys, (32, 1))
    pred = apply(onet, pairs_u, pairs_y).reshape(32, 20, 1)
    np.testing.assert_allclose(
        value, jnp.mean(jnp.square(pred - batch["targets"])), rtol=1e-5
    )
    assert set(terms) == {"mse"}
    # Per-function points (diffusion-reaction): the same loss as per pair.
    onet = _onet(diffusion_reaction, getkey())
    batch = diffusion_reaction.sample(getkey())
    assert batch["points"].shape == (8, 10, 2)
    value, _ = loss(diffusion_reaction, onet, batch)
    pred = apply(
        onet, jnp.repeat(batch["u"], 10, axis=0), batch["points"].reshape(80, 2)
    ).reshape(8, 10, 1)
    np.testing.assert_allclose(
        value, jnp.mean(jnp.square(pred - batch["targets"])), rtol=1e-5
    )


def test_evaluate_and_predict(getkey, antiderivative):
    onet = _onet(antiderivative, getkey())
    metrics = sciinr.evaluate(antiderivative, onet)
    out = sciinr.predict(antiderivative, onet)
    assert set(out) == {"inputs", "targets", "predictions", "errors"}
    assert out["predictions"].shape == (32, 20, 1) and out["errors"].shape == (32,)
    # rel_l2 by hand: mean over functions of ||pred - s|| / ||s||.
    pred, target = np.asarray(out["predictions"]), np.asarray(out["targets"])
    errors = np.linalg.norm((pred - target)[..., 0], axis=1) / np.linalg.norm(
        target[..., 0], axis=1
    )
    np.testing.assert_allclose(out["errors"], errors, rtol=1e-4)
    np.testing.assert_allclose(metrics["rel_l2"], errors.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["rel_l2_std"], errors.std(), rtol=1e-3)
    coords = antiderivative.coordinates()
    assert list(coords) == ["function", "x", "channel"]
    np.testing.assert_allclose(coords["x"], np.linspace(0, 1, 20), atol=1e-7)


def test_tiny_deeponet_learns_the_antiderivative(getkey, antiderivative):
    """256 functions at 20 sensors, RWF 2 x 32 ReLU branch and trunk, 1000 Adam
    steps: measured rel. L2 0.069 (dense: 0.079); threshold 0.09."""
    onet = _onet(antiderivative, jr.key(7), activation="relu", linear="rwf")
    result = sciinr.fit(
        antiderivative,
        onet,
        optax.adam(2e-3),
        steps=1000,
        key=jr.key(8),
        steps_per_call=500,
        progress=False,
    )
    assert result.metrics["rel_l2"] < 0.09


def test_other_operators(getkey):
    """NonlinearODE and Pendulum (two outputs) build, sample, and give finite losses
    and metrics."""
    for cls in (NonlinearODE, Pendulum):
        problem = cls(n_train=64, batch_size=8, key=jr.key(2), **SMALL)
        onet = _onet(problem, getkey())
        batch = problem.sample(getkey())
        assert batch["targets"].shape == (8, 20, problem.out_size)
        value, _ = loss(problem, onet, batch)
        metrics = sciinr.evaluate(problem, onet)
        assert np.isfinite(float(value)) and np.isfinite(float(metrics["rel_l2"]))
    assert problem.out_size == 2 and problem.data.test_targets.shape == (32, 20, 2)
    # The pendulum's reference: s1' = s2 (trapezoid on the query grid).
    s = np.asarray(problem.data.test_targets)
    slope = np.diff(s[..., 0], axis=1) * 19
    mean_s2 = (s[:, 1:, 1] + s[:, :-1, 1]) / 2
    np.testing.assert_allclose(slope, mean_s2, atol=5e-3)


def test_wrong_branch_size_is_a_clear_error_before_compiling(getkey, antiderivative):
    wrong = snn.DeepONet(
        snn.CoordinateMLP(21, 8, 8, 1, key=getkey()),
        snn.CoordinateMLP(1, 8, 8, 1, key=getkey()),
    )
    with pytest.raises(ValueError, match="20 sensors"):
        sciinr.fit(antiderivative, wrong, optax.adam(1e-3), steps=1, key=getkey())
    with pytest.raises(ValueError, match="20 sensors"):
        antiderivative.evaluate(wrong)
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="must be a `sciinr.nn.DeepONet`"):
            antiderivative.evaluate(snn.CoordinateMLP(1, 1, 8, 1, key=getkey()))
    two = _onet(antiderivative, getkey())
    two = snn.DeepONet(two.branch, two.trunk, out_size=2)
    with pytest.raises(ValueError, match="outputs 2 channel"):
        antiderivative.evaluate(two)


def test_bad_input_names_the_argument():
    key = jr.key(0)
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="`length_scale` must be > 0"):
            Antiderivative(length_scale=0.0, key=key, cache=None)
        with pytest.raises(ValueError, match="`length_scale` must be > 0"):
            DiffusionReaction(length_scale=-1.0, key=key, cache=None)
        with pytest.raises(ValueError, match="`n_train` must be a positive int"):
            Antiderivative(n_train=0, key=key, cache=None)
        with pytest.raises(ValueError, match="Unknown `operator` 'burgers'"):
            make_problem("burgers", key=key)
        with pytest.raises(ValueError, match="Unknown `kernel` 'matern'"):
            Pendulum(kernel="matern", key=key, cache=None)
        with pytest.raises(ValueError, match="`n_sensors` must be at least 2"):
            NonlinearODE(n_sensors=1, key=key, cache=None)
        with pytest.raises(TypeError, match="`key` must be a typed JAX PRNG key"):
            Antiderivative(key=0, cache=None)
        with pytest.raises(TypeError, match="`cache` must be a folder"):
            Antiderivative(key=key, cache=3.0)
    assert list(OPERATORS) == [
        "antiderivative",
        "nonlinear_ode",
        "pendulum",
        "diffusion_reaction",
    ]


# --------------------------------------------------------------------------------------
# Physics-informed: the residual of an exact solution operator vanishes
# --------------------------------------------------------------------------------------


class _Basis(eqx.Module):
    """A fixed trunk: `(d,) -> (K,)` basis functions, as a field."""

    fn: object = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __call__(self, y, *, key=None):
        return self.fn(y)


def _exact_onet(sensors, phi, primitive, K, d, key):
    """A DeepONet that is exact on span{phi_k}: the branch is the least-squares
    projection of the sensor values onto phi_k(sensors) (one linear layer), the trunk
    the exact solutions of the basis functions."""
    design = np.stack([phi(k, np.asarray(sensors)) for k in range(K)], axis=1)
    branch = snn.CoordinateMLP(len(sensors), K, 8, 0, key=key)
    branch = eqx.tree_at(
        lambda b: (b.layers[0].weight, b.layers[0].bias),
        branch,
        (jnp.asarray(np.linalg.pinv(design), jnp.float32), jnp.zeros(K)),
    )
    trunk = _Basis(lambda y: jnp.stack([primitive(k, y) for k in range(K)]), d, K)
    return snn.DeepONet(branch, trunk)


def test_antiderivative_residual_vanishes_for_the_exact_operator(getkey):
    """u = sum a_k cos(k pi x) has the antiderivative sum a_k sin(k pi x) / (k pi)
    (and a_0 x): the exact DeepONet has zero residual and zero initial value."""
    problem = Antiderivative(
        n_train=32, physics=True, batch_size=4, n_collocation=16, key=jr.key(3),
        **SMALL,
    )  # fmt: skip
    K = 5
    phi = lambda k, x: np.cos(k * np.pi * x)
    primitive = lambda k, y: y[0] if k == 0 else jnp.sin(k * np.pi * y[0]) / (k * np.pi)
    onet = _exact_onet(problem.data.sensors, phi, primitive, K, 1, getkey())
    coefficients = jr.normal(getkey(), (6, K))
    x = np.asarray(problem.data.sensors)
    u = coefficients @ jnp.asarray(np.stack([phi(k, x) for k in range(K)]))
    points = jr.uniform(getkey(), (16, 1))
    source = coefficients @ jnp.asarray(
        np.stack([phi(k, np.asarray(points[:, 0])) for k in range(K)])
    )
    residual = problem.residual(onet, u, source, points)
    assert residual.shape == (6, 16, 1)
    scale = float(jnp.abs(source).max())
    np.testing.assert_allclose(residual, 0.0, atol=2e-5 * scale)
    # And the residual sees the derivative: a wrong source is a residual.
    np.testing.assert_allclose(
        problem.residual(onet, u, source + 1.0, points), -1.0, atol=2e-5 * scale
    )
    # The physics loss on a sampled batch: no target data, two terms.
    batch = problem.sample(getkey())
    assert set(batch) == {"u", "points", "source"}
    _, terms = loss(problem, onet, batch)
    assert set(terms) == {"residual", "initial"}
    np.testing.assert_allclose(terms["initial"], 0.0, atol=1e-10)
    assert problem.data.train_targets is None


def test_diffusion_reaction_residual_vanishes_for_the_exact_operator(getkey):
    """u = sum a_k sin(k pi x) with k = 0 (no reaction) has the solution
    sum a_k sin(k pi x) (1 - exp(-D k^2 pi^2 t)) / (D k^2 pi^2); with the reaction
    term on, the residual of that same network is exactly -k s^2."""
    problem = DiffusionReaction(
        n_train=32, n_times=11, physics=True, batch_size=4, n_collocation=16,
        n_boundary=12, key=jr.key(4), **SMALL,
    )  # fmt: skip
    D, K = problem.diffusion, 4
    phi = lambda k, x: np.sin((k + 1) * np.pi * x)

    def primitive(k, y):
        rate = D * ((k + 1) * np.pi) ** 2
        return jnp.sin((k + 1) * np.pi * y[0]) * (1 - jnp.exp(-rate * y[1])) / rate

    onet = _exact_onet(problem.data.sensors, phi, primitive, K, 2, getkey())
    coefficients = jr.normal(getkey(), (5, K))
    x = np.asarray(problem.data.sensors)
    u = coefficients @ jnp.asarray(np.stack([phi(k, x) for k in range(K)]))
    points = jr.uniform(getkey(), (16, 2))
    source = coefficients @ jnp.asarray(
        np.stack([phi(k, np.asarray(points[:, 0])) for k in range(K)])
    )
    residual = problem.residual(onet, u, source, points)
    s = onet.aligned(u, points)
    assert residual.shape == (5, 16, 1)
    scale = float(jnp.abs(source).max())
    np.testing.assert_allclose(
        residual, -problem.reaction * jnp.square(s), atol=3e-5 * scale
    )
    # Zero initial and boundary values: the boundary terms vanish too.
    batch = problem.sample(getkey())
    _, terms = loss(problem, onet, batch)
    assert set(terms) == {"residual", "initial", "boundary"}
    np.testing.assert_allclose(terms["initial"], 0.0, atol=1e-10)
    np.testing.assert_allclose(terms["boundary"], 0.0, atol=1e-10)
    assert batch["initial"].shape == (4, 2) and batch["boundary"].shape == (8, 2)
    np.testing.assert_array_equal(batch["initial"][:, 1], 0.0)
    assert set(np.asarray(batch["boundary"][:, 0]).tolist()) == {0.0, 1.0}


def test_physics_informed_training_reduces_the_error(getkey):
    """A few hundred physics-informed steps, no target data: the test error falls
    (measured 0.95 -> 0.33 after 400 steps)."""
    problem = Antiderivative(
        n_train=64, physics=True, batch_size=16, n_collocation=32, key=jr.key(5),
        **SMALL,
    )  # fmt: skip
    onet = _onet(problem, jr.key(6))
    before = sciinr.evaluate(problem, onet)["rel_l2"]
    result = sciinr.fit(
        problem, onet, optax.adam(2e-3), steps=400, key=jr.key(9),
        steps_per_call=200, progress=False,
    )  # fmt: skip
    assert result.metrics["rel_l2"] < 0.6 * float(before)
    assert {"residual", "initial"} <= set(result.history)
