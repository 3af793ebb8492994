"""`problems.pinn`: domains, sampling, conditions, residuals, field types, hard
constraints, batch-norm semantics and bad input."""

import math

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr
from problems.pinn import (
    Advection1D,
    AllenCahn1D,
    boundary_condition,
    Burgers1D,
    Causal,
    DirichletBC,
    Domain,
    FixedWeights,
    GradNorm,
    Helmholtz2D,
    InitialCondition,
    NeumannBC,
    PDEProblem,
    PeriodicBC,
    Poisson2D,
    Reference,
)
from sciinr import diff
from sciinr.nn import (
    apply,
    CoordinateMLP,
    FourierFeatures,
    freeze_statistics,
    PeriodicEmbedding,
    Siren,
    trainable,
)


def heat(u, x):
    """u_t = 0.1 u_xx."""
    return diff.derivative(u, x, 0) - 0.1 * diff.derivative(u, x, 1, 2)


def heat_exact(x):
    return jnp.exp(-0.1 * jnp.pi**2 * x[0]) * jnp.sin(jnp.pi * x[1])[None]


def heat_problem(**kwargs):
    kwargs.setdefault(
        "conditions", [InitialCondition(lambda x: jnp.sin(jnp.pi * x[1]))]
    )
    kwargs.setdefault("n_collocation", 64)
    return PDEProblem(heat, {"t": (0.0, 1.0), "x": (0.0, 1.0)}, **kwargs)


def small_mlp(in_size=2, key=None, **kwargs):
    return CoordinateMLP(
        in_size, 1, 16, 2, activation=jnp.tanh, key=jr.key(0) if key is None else key,
        **kwargs,
    )  # fmt: skip


# -- domain and sampling ------------------------------------------------------------


def test_domain_sampling_stays_in_the_box_and_stratifies_time(getkey):
    domain = Domain({"t": (0.0, 2.0), "x": (-1.0, 3.0)})
    assert domain.time_axis == 0 and domain.spatial_axes == (1,)
    points = domain.sample(getkey(), 4096, jnp.float32)
    assert points.shape == (4096, 2)
    for axis, (low, high) in enumerate([(0.0, 2.0), (-1.0, 3.0)]):
        assert (
            low <= float(points[:, axis].min()) and float(points[:, axis].max()) < high
        )
        # Uniform: the mean is the midpoint to within a few standard errors.
        se = (high - low) / math.sqrt(12 * 4096)
        assert abs(float(points[:, axis].mean()) - (low + high) / 2) < 5 * se
    # Stratified over 8 time chunks: points 512 i ... 512 (i + 1) - 1 in chunk i.
    chunked = domain.sample(getkey(), 4096, jnp.float32, chunks=8)
    t = np.asarray(chunked[:, 0]).reshape(8, 512)
    edges = np.linspace(0.0, 2.0, 9)
    assert np.all(t >= edges[:-1, None]) and np.all(t < edges[1:, None] + 1e-6)


def test_face_sampling_and_normals(getkey):
    domain = Domain({"x": (-1.0, 1.0), "y": (0.0, 4.0)}, time=None)
    faces = domain.faces((0, 1), "both")
    points, normals = domain.sample_faces(getkey(), 20_000, faces, jnp.float32)
    points, normals = np.asarray(points), np.asarray(normals)
    on_x = np.isclose(np.abs(points[:, 0]), 1.0)
    on_y = np.isclose(points[:, 1], 0.0) | np.isclose(points[:, 1], 4.0)
    assert np.all(on_x | on_y)
    # Faces x = +-1 have length 4, faces y = 0, 4 length 2: 2/3 of the points on x.
    assert abs(on_x.mean() - 2 / 3) < 0.02
    # Outward unit normals.
    np.testing.assert_array_equal(np.abs(normals).sum(axis=1), 1.0)
    np.testing.assert_array_equal(
        normals[on_x & ~on_y, 0], np.sign(points[on_x & ~on_y, 0])
    )
    top = np.isclose(points[:, 1], 4.0) & ~on_x
    np.testing.assert_array_equal(normals[top], [[0.0, 1.0]] * int(top.sum()))


def test_sample_returns_a_batch_per_term(getkey):
    problem = heat_problem(
        conditions=[
            InitialCondition(0.0, n=32),
            DirichletBC(0.0, axis="x", n=16),
            NeumannBC(0.0, axis="x", side="high", n=8),
            PeriodicBC("x", n=4),
        ],
        weighting=FixedWeights(),
    )
    assert problem.term_names == ("res", "ic", "bc_x", "neumann_x", "periodic_x")
    sample = jax.jit(problem.sample)
    batch = sample(getkey())
    assert batch["res"].shape == (64, 2)
    np.testing.assert_array_equal(batch["ic"][:, 0], 0.0)
    assert batch["bc_x"].shape == (16, 2)
    assert set(np.unique(batch["bc_x"][:, 1])) <= {0.0, 1.0}
    x, normal = batch["neumann_x"]
    np.testing.assert_array_equal(x[:, 1], 1.0)
    np.testing.assert_array_equal(normal, [[0.0, 1.0]] * 8)
    low, high = batch["periodic_x"]
    np.testing.assert_array_equal(low[:, 0], high[:, 0])
    np.testing.assert_array_equal(low[:, 1], 0.0)
    np.testing.assert_array_equal(high[:, 1], 1.0)
    # Fresh points every step, except after `full_batch`.
    other = sample(getkey())
    assert not np.allclose(batch["res"], other["res"])
    fixed = problem.full_batch(jr.key(3))
    sample = eqx.filter_jit(lambda p, k: p.sample(k)["res"])
    np.testing.assert_array_equal(sample(fixed, getkey()), sample(fixed, getkey()))


# -- residuals and conditions vanish for exact solutions -----------------------------


def _max_residual(problem, u, key):
    xs = problem.sample(key)["res"][:256]
    residuals = jax.jit(jax.vmap(lambda x: problem.residual(u, x)))(xs)
    return float(jnp.max(jnp.abs(residuals)))


@pytest.mark.parametrize(
    "problem, exact, scale",
    [
        (
            lambda: Poisson2D(2.0, 3.0, resolution=5),
            lambda x: jnp.sin(2 * jnp.pi * x[0]) * jnp.sin(3 * jnp.pi * x[1]),
            13 * math.pi**2,
        ),
        (
            lambda: Helmholtz2D(1.0, 4.0, 2.5, resolution=5),
            lambda x: jnp.sin(jnp.pi * x[0]) * jnp.sin(4 * jnp.pi * x[1]),
            17 * math.pi**2,
        ),
        (
            lambda: Advection1D(80.0, resolution=(3, 8)),
            lambda x: jnp.sin(x[1] - 80.0 * x[0]),
            80.0,
        ),
    ],
    ids=["poisson", "helmholtz", "advection"],
)
def test_manufactured_residuals_vanish_for_the_exact_solution(
    problem, exact, scale, getkey
):
    with jax.enable_x64(True):
        problem = problem()
        u = lambda x: exact(x)[None]
        key = getkey()
        assert _max_residual(problem, u, key) < 1e-10 * scale
        # ... and not for a perturbed one (the test can fail).
        wrong = lambda x: (exact(x) + 0.01 * x[0] ** 3)[None]
        assert _max_residual(problem, wrong, key) > 1e-4
        batch = problem.sample(key)
        for c in problem.conditions:
            residual = lambda d: c.residual(u, d, problem.domain)
            rc = jax.jit(jax.vmap(residual))(batch[c.name])
            assert float(jnp.abs(rc).max()) < 1e-10


def test_allen_cahn_and_burgers_residuals():
    """The built-in residuals are the stated PDEs: check them on a smooth function
    whose derivatives we write out."""
    with jax.enable_x64(True):
        x = jnp.array([0.3, -0.4])
        u = lambda p: (jnp.exp(-p[0]) * jnp.cos(2 * p[1]))[None]
        value, u_t, u_x = u(x)[0], -u(x)[0], -2 * jnp.exp(-0.3) * jnp.sin(2 * -0.4)
        u_xx = -4 * value
        ac = AllenCahn1D(resolution=(3, 8))
        burgers = Burgers1D(resolution=(3, 8))
        residuals = jax.jit(lambda x: [ac.residual(u, x), burgers.residual(u, x)])(x)
        np.testing.assert_allclose(
            residuals[0], u_t - 1e-4 * u_xx - 5 * value + 5 * value**3, rtol=1e-12
        )
        np.testing.assert_allclose(
            residuals[1], u_t + value * u_x - 0.01 / math.pi * u_xx, rtol=1e-12
        )
        # Their initial conditions and references agree at t = 0.
        for problem in (ac, burgers):
            ref = problem.reference
            (ic,) = [c for c in problem.conditions if c.name == "ic"]
            points = jnp.stack([jnp.zeros_like(ref.axes[1]), ref.axes[1]], axis=-1)
            np.testing.assert_allclose(
                jax.vmap(ic.value)(points), ref.values[0], atol=1e-12
            )


def test_heat_equation_problem_with_exact_reference(getkey):
    """The 20-line recipe: a custom PDE, its conditions and an exact reference."""
    axes = [np.linspace(0, 1, 5), np.linspace(0, 1, 7)]
    problem = heat_problem(
        conditions=[
            InitialCondition(lambda x: jnp.sin(jnp.pi * x[1])),
            DirichletBC(0.0, axis="x"),
        ],
        reference=Reference.from_function(heat_exact, axes),
    )
    exact_field = lambda x: heat_exact(x)
    assert problem.evaluate(exact_field)["rel_l2"] < 1e-6
    out = problem.predict(exact_field)
    assert out["prediction"].shape == out["reference"].shape == (5, 7)
    np.testing.assert_allclose(out["error"], 0.0, atol=1e-6)
    assert list(problem.coordinates()) == ["t", "x"]
    state = problem.init_state()
    loss = jax.jit(lambda batch: problem.loss(exact_field, batch, state))
    total, terms = loss(problem.sample(getkey()))
    assert set(terms) == {"res", "ic", "bc_x"}
    assert float(total) < 1e-8


def test_neumann_condition_uses_the_outward_normal():
    domain = Domain({"x": (0.0, 1.0), "y": (0.0, 2.0)}, time=None)
    u = lambda p: (p[0] ** 2 + 3 * p[1])[None]  # grad = (2x, 3)
    bc = NeumannBC(lambda p: jnp.where(p[0] > 0.5, 2.0, -0.0) + 0 * p[1])
    for x, normal, expected in [
        ((1.0, 0.5), (1.0, 0.0), 2.0),  # right face: du/dn = 2x = 2
        ((0.0, 0.5), (-1.0, 0.0), 0.0),  # left face: -2x = 0
        ((0.5, 2.0), (0.0, 1.0), 3.0),  # top face: 3
    ]:
        r = bc.residual(u, (jnp.array(x), jnp.array(normal)), domain)
        g = 2.0 if x[0] > 0.5 else 0.0
        np.testing.assert_allclose(r, expected - g, atol=1e-6)


# -- every field type, hard constraints ---------------------------------------------


def _fields(key):
    k1, k2, k3 = jr.split(key, 3)
    periodic = PeriodicEmbedding(
        2, (None, 1.0), encoding=FourierFeatures(3, 8, sigma=1.0, key=k1)
    )
    features = FourierFeatures(2, 8, sigma=1.0, key=k1)
    # Plain MLPs and batch norm are trained or differentiated in the other tests.
    return {
        "fourier-rwf": small_mlp(key=k2, linear="rwf", encoding=features),
        "periodic-rwf-layer-norm": small_mlp(
            key=k2, encoding=periodic, linear="rwf", norm="layer"
        ),
        "siren": Siren(2, 1, 16, 2, key=k3),
    }


def test_every_field_type_gives_finite_losses_and_gradients(getkey):
    """Losses and gradients of every kind of field; a field on a periodic embedding
    makes the periodic loss vanish (to float rounding), the others do not."""
    conditions = [InitialCondition(lambda x: jnp.sin(jnp.pi * x[1])), PeriodicBC("x")]
    problem = heat_problem(
        causal=Causal(1.0, 4), weighting=FixedWeights(), conditions=conditions
    )
    batch = problem.sample(getkey())
    state = problem.init_state()

    @eqx.filter_jit
    def loss_and_grads(fields):
        out = {}
        for name, field in fields.items():
            params, static = eqx.partition(field, trainable(field))
            f = lambda p: problem.loss(eqx.combine(p, static), batch, state)
            out[name] = jax.value_and_grad(f, has_aux=True)(params)
        return out

    for name, ((total, terms), grads) in loss_and_grads(_fields(getkey())).items():
        assert set(terms) == {"res", "ic", "periodic_x", "causal_weight"}, name
        if name.startswith("periodic"):
            assert float(terms["periodic_x"]) < 1e-7
        else:
            assert float(terms["periodic_x"]) > 1e-3, name
        assert np.isfinite(float(total)), name
        norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
        assert all(np.isfinite(norms)) and max(norms) > 0, name


def test_hard_constraint_through_output_transform(getkey):
    """u = (1 - x^2)(1 - y^2) N(x, y) vanishes on the boundary of [-1, 1]^2."""
    transform = lambda x, u: (1 - x[0] ** 2) * (1 - x[1] ** 2) * u
    problem = Poisson2D(
        n_collocation=64, n_boundary=64, output_transform=transform, resolution=5
    )
    free = Poisson2D(n_collocation=64, n_boundary=64, resolution=5)
    field = small_mlp()
    batch = problem.sample(getkey())

    @eqx.filter_jit
    def bc_terms(field):
        return [p.terms(field, batch)[0]["bc"] for p in (problem, free)]

    constrained, unconstrained = bc_terms(field)
    assert float(constrained) < 1e-12 and float(unconstrained) > 1e-4
    # The transform also applies to the predictions.
    out = sciinr.predict(problem, field)["prediction"]
    np.testing.assert_allclose(out[0, :], 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "build, initial, terms",
    [
        (
            lambda: AllenCahn1D(hard_initial=True, resolution=(3, 8)),
            lambda x: x**2 * np.cos(np.pi * x),
            ("res",),
        ),
        (
            lambda: Burgers1D(hard_initial=True, resolution=(3, 8)),
            lambda x: -np.sin(np.pi * x),
            ("res", "bc"),
        ),
        (
            lambda: Advection1D(hard_initial=True, resolution=(3, 8)),
            np.sin,
            ("res",),
        ),
    ],
    ids=["allen_cahn", "burgers", "advection"],
)
def test_hard_initial_condition_holds_exactly(build, initial, terms, getkey):
    """`hard_initial=True`: u = u0(x) + t N(t, x), no `ic` term; at t = 0 the
    solution is u0 whatever the field, and elsewhere it is not."""
    problem = build()
    assert problem.term_names == terms
    field = small_mlp(key=getkey())
    x = np.linspace(problem.domain.lows[1], problem.domain.highs[1], 7)
    at_zero = jnp.stack([jnp.zeros(7), jnp.asarray(x, jnp.float32)], axis=1)
    u = problem.values_on(field, at_zero)[:, 0]
    np.testing.assert_allclose(u, initial(x), atol=1e-6)
    later = at_zero.at[:, 0].set(0.5)
    assert np.max(np.abs(problem.values_on(field, later)[:, 0] - initial(x))) > 1e-3
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="either `hard_initial=True`"):
            AllenCahn1D(hard_initial=True, output_transform=lambda x, u: u)
        with pytest.raises(TypeError, match="`hard_initial` must be True or False"):
            Burgers1D(hard_initial="yes")


# -- batch normalization ---------------------------------------------------------


def test_batch_norm_residual_is_that_of_the_frozen_field():
    """The loss freezes batch statistics on the collocation points before
    differentiating: the residual equals finite differences of the frozen field
    (float64). (That the parameter gradients through `freeze_statistics` are those
    of the batch-statistics field is tested with `sciinr.nn`.)"""
    with jax.enable_x64(True):
        problem = heat_problem(weighting=FixedWeights(), n_collocation=32)
        field = CoordinateMLP(
            2, 1, 8, 2, activation=jnp.tanh, norm="batch", dtype=jnp.float64,
            key=jr.key(1),
        )  # fmt: skip
        batch = problem.sample(jr.key(2))
        xs = batch["res"]
        h = 1e-4
        shifts = jnp.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]], jnp.float64)

        @eqx.filter_jit
        def compare(field):
            frozen = freeze_statistics(field, xs)
            ours = jax.vmap(lambda x: problem.residual(problem.solution(frozen), x))
            values = apply(frozen, (xs[:, None, :] + shifts[None]).reshape(-1, 2))
            return ours(xs)[:, 0], values.reshape(-1, 5), problem.terms(field, batch)

        residuals, v, (terms, _) = compare(field)
        u_t = (v[:, 1] - v[:, 2]) / (2 * h)
        u_xx = (v[:, 3] - 2 * v[:, 0] + v[:, 4]) / h**2
        np.testing.assert_allclose(residuals, u_t - 0.1 * u_xx, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(terms["res"], jnp.mean(residuals**2), rtol=1e-12)
        # The frozen statistics are those of the batch: same values on it.
        np.testing.assert_allclose(v[:, 0], apply(field, xs)[:, 0], rtol=1e-10)


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain, match",
    [
        ({}, "`domain` is empty"),
        ({"t": (1.0, 0.0)}, r"`domain\['t'\]` is inverted"),
        ({"x": (0.5, 0.5)}, r"`domain\['x'\]` is empty"),
        ({"x": (0.0, float("inf"))}, r"`domain\['x'\]\[1\]` must be finite"),
        ({"x": (0.0,)}, r"`domain\['x'\]` must be a \(low, high\) pair"),
    ],
    ids=["empty", "inverted", "zero-length", "infinite", "not-a-pair"],
)
def test_bad_domains(domain, match):
    with without_runtime_typechecks(), pytest.raises(ValueError, match=match):
        PDEProblem(heat, domain)


def test_bad_conditions_and_boundary_types():
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match=r"Unknown `kind` 'robin'.*'dirichlet'"):
            boundary_condition("robin", "x")
        assert isinstance(boundary_condition("periodic", "x"), PeriodicBC)
        assert boundary_condition("neumann", "x", value=1.0).name == "neumann_x"
        with pytest.raises(ValueError, match="Unknown `side` 'middle'"):
            DirichletBC(0.0, axis="x", side="middle")
        with pytest.raises(TypeError, match=r"`conditions\[0\]` must be a condition"):
            heat_problem(conditions=["dirichlet"])
        with pytest.raises(ValueError, match=r"`conditions\[1\]` is named 'ic'"):
            heat_problem(conditions=[InitialCondition(0.0), InitialCondition(1.0)])
        with pytest.raises(ValueError, match="`axis` = 'z' is not an axis"):
            heat_problem(conditions=[DirichletBC(0.0, axis="z")])
        with pytest.raises(ValueError, match="on the time axis 't'"):
            heat_problem(conditions=[DirichletBC(0.0, axis="t")])
        with pytest.raises(ValueError, match="needs a time axis"):
            PDEProblem(
                heat, {"x": (0, 1), "y": (0, 1)}, conditions=[InitialCondition(0.0)]
            )
        with pytest.raises(TypeError, match="`value` must be a number or a function"):
            DirichletBC("zero")


def test_residual_of_the_wrong_shape():
    with without_runtime_typechecks():
        with pytest.raises(
            ValueError,
            match=r"`residual\(u, x\)` must return the residual at ONE point",
        ):
            PDEProblem(lambda u, x: jnp.outer(u(x), u(x)), {"t": (0, 1), "x": (0, 1)})
        with pytest.raises(TypeError, match="`residual` must be a function"):
            PDEProblem("u_t - u_xx", {"x": (0, 1)})
        with pytest.raises(
            ValueError, match=r"condition 'ic' must be a function.*\(2, 2\)"
        ):
            heat_problem(conditions=[InitialCondition(lambda x: jnp.ones((2, 2)))])
        with pytest.raises(
            ValueError, match=r"`output_transform\(x, u\)` must return shape \(1,\)"
        ):
            heat_problem(output_transform=lambda x, u: jnp.concatenate([u, u]))


def _no_time_causal():
    return PDEProblem(heat, {"x": (0, 1), "y": (0, 1)}, causal=Causal())


def _reference_axes():
    return heat_problem(reference=Reference([np.arange(3.0)], np.zeros(3)))


BAD = {
    "c-nan": (lambda: Advection1D(float("nan")), "`c` must be finite"),
    "c-inf": (lambda: Advection1D(float("inf")), "`c` must be finite"),
    "nu-nan": (lambda: Burgers1D(float("nan")), "`nu` must be finite"),
    "nu-negative": (lambda: Burgers1D(-0.1), r"`nu` must be > 0"),
    "k-inf": (lambda: Helmholtz2D(k=float("inf")), "`k` must be finite"),
    "epsilon-negative": (lambda: Causal(-0.5), r"`epsilon` must be >= 0, got -0.5"),
    "epsilon-nan": (lambda: Causal(float("nan")), "`epsilon` must be finite"),
    "chunks-zero": (lambda: Causal(1.0, 0), "`chunks` must be a positive int"),
    "every-zero": (lambda: GradNorm(every=0), "`every` must be a positive int"),
    "momentum-one": (lambda: GradNorm(momentum=1.0), r"`momentum` must be in \[0, 1\)"),
    "chunks-divide": (
        lambda: heat_problem(causal=Causal(1.0, 5)),
        "multiple of the number of causal chunks",
    ),
    "causal-no-time": (_no_time_causal, "needs a time axis"),
    "weights-unknown": (
        lambda: heat_problem(weighting=FixedWeights({"bc": 2.0})),
        r"unknown loss terms \['bc'\]",
    ),
    "weights-negative": (
        lambda: heat_problem(weighting=FixedWeights({"ic": -1.0})),
        r"`weights\['ic'\]` must be >= 0",
    ),
    "reference-shape": (
        lambda: Reference([np.arange(3.0)], np.zeros(4)),
        r"must have shape \(3,\)",
    ),
    "reference-nan": (
        lambda: Reference([np.arange(3.0)], [0.0, np.nan, 1.0]),
        "non-finite",
    ),
    "reference-axes": (_reference_axes, "`reference` has 1 axes"),
}


@pytest.mark.parametrize("build, match", BAD.values(), ids=BAD.keys())
def test_bad_parameters(build, match):
    with (
        without_runtime_typechecks(),
        pytest.raises((ValueError, TypeError), match=match),
    ):
        build()


def test_field_of_the_wrong_size(getkey):
    problem = heat_problem()
    field = CoordinateMLP(2, 3, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"`field` must return 1 value\(s\) per point"):
        problem.loss(field, problem.sample(getkey()), problem.init_state())
