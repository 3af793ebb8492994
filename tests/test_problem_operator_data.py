"""Tests for the data of `problems.operator`: random input functions, the Diffrax
reference solutions, dropped blow-ups and the HDF5 dataset cache."""

import json
import os
import pathlib

import h5py
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks
from scipy.integrate import cumulative_trapezoid

from problems.operator import (
    _cache,
    _dataset,
    _solvers,
    chebyshev_random_field,
    default_cache_dir,
    DroppedSamplesWarning,
    gaussian_random_field,
    interpolate,
    NonlinearODE,
)
from problems.operator._grf import _factor


# The solver tests use the shapes of the problems in test_problem_operator.py (20
# sensors refined 10 times: 191 fine points, 20 query points, <= 256 functions), so
# that every solver compiles once for the whole suite.
FINE = 191
POINTS = np.linspace(0.0, 1.0, 20)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing here may write into the user's real cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _rbf(x, length_scale):
    return np.exp(-0.5 * ((x[:, None] - x[None, :]) / length_scale) ** 2)


def _periodic(x, length_scale):
    d = x[:, None] - x[None, :]
    return np.exp(-2 * np.sin(np.pi * d) ** 2 / length_scale**2)


# --------------------------------------------------------------------------------------
# Input functions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["rbf", "periodic"])
def test_grf_has_the_kernel_covariance(getkey, kernel):
    x = np.linspace(0.0, 1.0, 12)
    length_scale = 0.2 if kernel == "rbf" else 0.5
    expected = (_rbf if kernel == "rbf" else _periodic)(x, length_scale)
    samples = gaussian_random_field(
        getkey(), 20_000, x, length_scale=length_scale, kernel=kernel
    )
    assert samples.shape == (20_000, 12) and samples.dtype == jnp.float32
    samples = np.asarray(samples, np.float64)
    # Standard error of a covariance entry: sqrt((1 + rho^2) / n) <= 0.01; the
    # largest of 78 entries stays below 4.5 of those.
    np.testing.assert_allclose(np.cov(samples, rowvar=False), expected, atol=0.045)
    np.testing.assert_allclose(samples.mean(axis=0), 0.0, atol=0.045)


def test_grf_factorization_is_exact_where_cholesky_fails():
    """On a fine grid the RBF kernel matrix is numerically singular: float32
    Cholesky fails, the float64 eigendecomposition reproduces the matrix."""
    x = np.linspace(0.0, 1.0, 256)
    kernel = _rbf(x, 0.2)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(kernel.astype(np.float32))
    factor = _factor("rbf", 0.2, 1.0, x.tobytes())
    assert factor.shape[0] < 30  # 16 modes; the rest is round-off
    np.testing.assert_allclose(factor.T @ factor, kernel, atol=1e-9)


def test_grf_is_reproducible_from_the_key(getkey):
    key = getkey()
    a = gaussian_random_field(key, 8, 50, length_scale=0.2)
    b = gaussian_random_field(key, 8, 50, length_scale=0.2)
    c = gaussian_random_field(getkey(), 8, 50, length_scale=0.2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # `variance` scales the field.
    d = gaussian_random_field(key, 8, 50, length_scale=0.2, variance=4.0)
    np.testing.assert_allclose(d, 2 * a, rtol=1e-5, atol=1e-6)


def test_chebyshev_field_statistics(getkey):
    x = np.linspace(0.0, 1.0, 9)
    samples = np.asarray(
        chebyshev_random_field(getkey(), 40_000, x, degree=4, scale=2.0), np.float64
    )
    basis = np.polynomial.chebyshev.chebvander(2 * x - 1, 4)
    # Coefficients U(-2, 2): variance 4 / 3 each.
    expected = (4.0 / 3.0) * basis @ basis.T
    np.testing.assert_allclose(np.cov(samples, rowvar=False), expected, atol=0.12)
    key = getkey()
    np.testing.assert_array_equal(
        chebyshev_random_field(key, 3, x, degree=2),
        chebyshev_random_field(key, 3, x, degree=2),
    )


def test_interpolate_is_piecewise_linear(getkey):
    values = jr.normal(getkey(), (3, 11))
    xs = jnp.array([0.0, 0.05, 0.37, 0.999, 1.0])
    expected = np.stack(
        [
            np.interp(np.asarray(xs), np.linspace(0, 1, 11), np.asarray(v))
            for v in values
        ]
    )
    np.testing.assert_allclose(interpolate(values, xs), expected, rtol=1e-5, atol=1e-6)
    # The point-major form used by the solvers.
    np.testing.assert_allclose(
        interpolate(values.T, xs[2], axis=0), expected[:, 2], rtol=1e-5, atol=1e-6
    )


def test_input_function_errors_name_the_argument(getkey):
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match="`length_scale` must be > 0"):
            gaussian_random_field(getkey(), 4, 10, length_scale=0.0)
        with pytest.raises(ValueError, match="`length_scale` must be > 0"):
            gaussian_random_field(getkey(), 4, 10, length_scale=-0.2)
        with pytest.raises(ValueError, match="Unknown `kernel` 'matern'.*'rbf'"):
            gaussian_random_field(getkey(), 4, 10, length_scale=0.2, kernel="matern")
        with pytest.raises(ValueError, match="`n_functions` must be a positive int"):
            gaussian_random_field(getkey(), 0, 10, length_scale=0.2)
        with pytest.raises(ValueError, match="`grid` must be"):
            gaussian_random_field(getkey(), 2, np.zeros((3, 3)), length_scale=0.2)
        with pytest.raises(ValueError, match="`grid` contains 1 non-finite"):
            gaussian_random_field(getkey(), 2, [0.0, np.nan], length_scale=0.2)
        with pytest.raises(ValueError, match=r"`grid` points must lie in \[0, 1\]"):
            chebyshev_random_field(getkey(), 2, [0.0, 2.0], degree=3)


# --------------------------------------------------------------------------------------
# Reference solutions
# --------------------------------------------------------------------------------------


def test_antiderivative_matches_quadrature_of_the_same_input(getkey):
    inputs = gaussian_random_field(getkey(), 16, FINE, length_scale=0.2)
    s, ok = _solvers.antiderivative(inputs, POINTS)
    assert s.shape == (16, 20, 1) and bool(ok.all())
    # The input is piecewise linear on the fine grid: the trapezoidal rule on that
    # grid is its exact integral.
    fine = np.linspace(0.0, 1.0, FINE)
    exact = cumulative_trapezoid(np.asarray(inputs, np.float64), fine, initial=0)
    np.testing.assert_allclose(s[..., 0], exact[:, ::10], atol=2e-6)


def test_nonlinear_ode_closed_form_and_blowup_is_dropped():
    """Constant inputs c: s = sqrt(c) tanh(sqrt(c) x); c = -1: s = -tan(x); c = -1000
    blows up at x = pi / (2 sqrt(1000)) and is reported, not fatal."""
    constants = np.array([0.5, 2.0, -1.0, -1000.0, 1.0], np.float32)
    inputs = jnp.asarray(np.repeat(constants[:, None], FINE, axis=1))
    s, ok = _solvers.nonlinear_ode(inputs, POINTS)
    np.testing.assert_array_equal(ok, [True, True, True, False, True])
    x = POINTS
    for row, c in [(0, 0.5), (1, 2.0), (4, 1.0)]:
        exact = np.sqrt(c) * np.tanh(np.sqrt(c) * x)
        np.testing.assert_allclose(s[row, :, 0], exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s[2, :, 0], -np.tan(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s[3], 0.0)  # no garbage from the failed solve


def test_pendulum_without_gravity_is_a_double_integral():
    """k = 0: s2 = c t and s1 = c t^2 / 2 for a constant force c."""
    inputs = jnp.full((3, FINE), 1.5)
    s, ok = _solvers.pendulum(inputs, POINTS, k=0.0)
    assert s.shape == (3, 20, 2) and bool(ok.all())
    np.testing.assert_allclose(s[0, :, 0], 1.5 * POINTS**2 / 2, atol=5e-6)
    np.testing.assert_allclose(s[0, :, 1], 1.5 * POINTS, atol=5e-6)


def test_diffusion_reaction_linear_closed_form():
    """k = 0, u = sin(pi x): sin(pi x_i) is an eigenvector of the finite-difference
    Laplacian, with eigenvalue -lam = -(4 / dx^2) sin^2(pi dx / 2), so the method of
    lines solves s = sin(pi x) (1 - exp(-D lam t)) / (D lam) exactly in space, and
    the PDE's solution (lam = pi^2) up to pi^2 dx^2 / 12 = 2.3e-3 relative."""
    x = np.linspace(0.0, 1.0, FINE)
    inputs = jnp.asarray(np.sin(np.pi * x)[None], jnp.float32)
    diffusion = 0.5  # large enough that diffusion matters
    s, ok = _solvers.diffusion_reaction(
        inputs, 20, 11, diffusion=diffusion, reaction=0.0
    )
    assert s.shape == (1, 20, 11) and bool(ok.all())
    xs, ts = np.linspace(0, 1, 20), np.linspace(0, 1, 11)
    dx = xs[1]

    def exact(lam):
        rate = diffusion * lam
        return np.sin(np.pi * xs)[:, None] * (1 - np.exp(-rate * ts))[None] / rate

    semi_discrete = exact(4 / dx**2 * np.sin(np.pi * dx / 2) ** 2)
    np.testing.assert_allclose(s[0], semi_discrete, atol=2e-6)
    pde = exact(np.pi**2)
    np.testing.assert_allclose(s[0], pde, atol=2.5e-3 * pde.max())


def test_blowups_are_dropped_replaced_and_reported(tmp_path):
    with pytest.warns(DroppedSamplesWarning, match=r"blew up for \d+ sampled"):
        problem = NonlinearODE(
            variance=16.0,
            n_sensors=20,
            n_train=64,
            n_test=32,
            cache=tmp_path,
            key=jr.key(0),
        )
    dropped_train, dropped_test = problem.dropped
    assert dropped_train > 0 and dropped_test >= 0
    assert problem.data.train_targets.shape == (64, 20, 1)
    assert bool(jnp.all(jnp.isfinite(problem.data.train_targets)))
    # No runaway solution is kept: |s| < BLOWUP (1 + max |u|) for every function
    # (max |u| on the fine grid; 10 % slack for its excess over the sensors).
    bound = 1.1 * _solvers.BLOWUP * (1 + jnp.abs(problem.data.train_u).max(axis=1))
    assert bool(
        jnp.all(jnp.abs(problem.data.train_targets[..., 0]).max(axis=1) < bound)
    )
    # The count survives the cache (read back without a warning).
    again = NonlinearODE(
        variance=16.0, n_sensors=20, n_train=64, n_test=32, cache=tmp_path,
        key=jr.key(0),
    )  # fmt: skip
    assert again.dropped == problem.dropped


# --------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------


SPACE = _dataset.InputSpace(length_scale=0.3, kernel="rbf", variance=1.0, resolution=9)


def _fake_solver(calls):
    """A cheap solver (cumulative sums) that counts its calls."""

    def solver(inputs, key):
        calls.append(inputs.shape[0])
        return {"targets": jnp.cumsum(inputs, axis=1)[..., None]}, jnp.ones(
            inputs.shape[0], bool
        )

    return solver


def _generate(folder, calls, key=None, n=6, **parameters):
    return _dataset.generate(
        "toy",
        {"c": 1, **parameters},
        SPACE,
        n,
        jr.key(3) if key is None else key,
        _fake_solver(calls),
        folder,
    )


def test_cache_is_reused_for_equal_parameters(tmp_path):
    calls = []
    first = _generate(tmp_path, calls)
    assert not first.from_cache and calls == [6]
    assert first.path.parent == tmp_path and first.path.is_file()
    second = _generate(tmp_path, calls)
    assert second.from_cache and calls == [6]  # not generated again
    for name in first.arrays:
        np.testing.assert_array_equal(first.arrays[name], second.arrays[name])
    # Plain h5py can read it, parameters included.
    with h5py.File(first.path, "r") as file:
        stored = json.loads(file.attrs["parameters"])
        assert stored["n_functions"] == 6 and stored["c"] == 1
        assert file["targets"].shape == (6, 9, 1)
    # Nothing but the dataset in the folder (no temporary files left).
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]


@pytest.mark.parametrize(
    "change",
    [{"n": 7}, {"key": jr.key(4)}, {"c": 2}, {"extra": "x"}],
    ids=["n_functions", "key", "constant", "extra"],
)
def test_cache_is_never_reused_for_other_parameters(tmp_path, change):
    calls = []
    first = _generate(tmp_path, calls)
    other = _generate(tmp_path, calls, **change)
    assert not other.from_cache and len(calls) == 2
    assert other.path != first.path and first.path.is_file()


def test_cache_file_with_other_parameters_at_the_same_name_is_replaced(tmp_path):
    calls = []
    first = _generate(tmp_path, calls)
    # Another dataset stored under this file name (a hash collision, or a file
    # copied by hand): never taken for ours.
    _cache.store(first.path, {"something": "else"}, {"inputs": np.zeros(1)}, {})
    again = _generate(tmp_path, calls)
    assert not again.from_cache and len(calls) == 2
    np.testing.assert_array_equal(again.arrays["inputs"], first.arrays["inputs"])
    assert _generate(tmp_path, calls).from_cache  # the file is ours again
    # A damaged file is regenerated too.
    first.path.write_bytes(b"not an HDF5 file")
    assert not _generate(tmp_path, calls).from_cache and len(calls) == 3


def test_cache_writes_atomically(tmp_path, monkeypatch):
    calls = []

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        _generate(tmp_path, calls)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_cache_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sciinr"
    assert _cache.resolve_cache(True) == tmp_path / "xdg" / "sciinr" / "operator"
    monkeypatch.delenv("XDG_CACHE_HOME")
    home = pathlib.Path(os.path.expanduser("~"))
    assert default_cache_dir() == home / ".cache" / "sciinr"
    assert _cache.resolve_cache(None) is None
    assert _cache.resolve_cache(str(tmp_path)) == tmp_path
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`cache` must be a folder"):
        _cache.resolve_cache(tmp_path / "file")
    with pytest.raises(TypeError, match="`cache` must be a folder"):
        _cache.resolve_cache(3)
