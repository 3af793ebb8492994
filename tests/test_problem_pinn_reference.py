"""The reference solvers of `problems.pinn` against exact solutions, under refinement,
and against a published value."""

import math

import numpy as np
import pytest

from problems.pinn import (
    allen_cahn_reference,
    burgers_cole_hopf,
    burgers_reference,
    etdrk4,
)


def _periodic_grid(n, low, length):
    return low + length * np.arange(n) / n


def test_etdrk4_heat_equation_is_exact():
    # u_t = D u_xx with two Fourier modes: each decays like exp(-D k^2 t).
    x = _periodic_grid(64, -1.0, 2.0)
    t = np.linspace(0.0, 1.0, 11)
    u0 = np.sin(np.pi * x) + 0.5 * np.cos(3 * np.pi * x)
    u = etdrk4(u0, 2.0, lambda k: -0.1 * k**2, lambda v: 0 * v, t, 0.1)
    exact = np.exp(-0.1 * np.pi**2 * t)[:, None] * np.sin(np.pi * x) + 0.5 * np.exp(
        -0.9 * np.pi**2 * t
    )[:, None] * np.cos(3 * np.pi * x)
    assert u.shape == (11, 64)
    np.testing.assert_allclose(u, exact, atol=1e-13)


def test_etdrk4_advection_is_exact():
    # u_t + c u_x = 0: the symbol -i c k is imaginary (the Nyquist mode stays real).
    x = _periodic_grid(128, 0.0, 2 * np.pi)
    t = np.linspace(0.0, 1.0, 6)
    u = etdrk4(np.sin(x), 2 * np.pi, lambda k: -1j * 80.0 * k, lambda v: 0 * v, t, 0.1)
    np.testing.assert_allclose(u, np.sin(x[None] - 80.0 * t[:, None]), atol=1e-12)


@pytest.mark.parametrize("dt, tol", [(0.01, 1e-8), (0.005, 1e-9)])
def test_etdrk4_nonlinear_part_is_fourth_order(dt, tol):
    """A linear reaction N(u) = a u through the N-path of the scheme: the error
    falls like dt^4 (16x per halving) and stays below `tol`."""
    x = _periodic_grid(32, -1.0, 2.0)
    t = np.array([0.0, 0.5, 1.0])
    u = etdrk4(np.sin(np.pi * x), 2.0, lambda k: -0.1 * k**2, lambda v: 2.0 * v, t, dt)
    exact = np.exp((2.0 - 0.1 * np.pi**2) * t)[:, None] * np.sin(np.pi * x)
    error = np.abs(u - exact).max()
    assert error < tol
    coarse = etdrk4(
        np.sin(np.pi * x), 2.0, lambda k: -0.1 * k**2, lambda v: 2.0 * v, t, 2 * dt
    )
    ratio = np.abs(coarse - exact).max() / error
    assert 12 < ratio < 20  # 2^4 = 16


def test_etdrk4_rejects_times_off_the_step():
    with pytest.raises(ValueError, match="multiples of `dt`"):
        etdrk4(
            np.zeros(8), 2.0, lambda k: -(k**2), lambda v: v, np.array([0.0, 0.15]), 0.1
        )


def test_allen_cahn_reference_converges_under_refinement():
    """Relative L2 distance to a finer run shrinks as the solver grid is refined;
    the time step is already converged (halving it changes nothing)."""
    nx, nt = 64, 11
    fine = allen_cahn_reference(nx, nt, refine=8, dt=1e-3)[2]

    def distance(refine, dt):
        u = allen_cahn_reference(nx, nt, refine=refine, dt=dt)[2]
        return np.linalg.norm(u - fine) / np.linalg.norm(fine)

    coarse, medium = distance(2, 1e-3), distance(4, 1e-3)
    assert medium < coarse / 3
    assert medium < 1e-4
    assert distance(4, 5e-4) == pytest.approx(medium, rel=1e-3)
    t, x, u = allen_cahn_reference(nx, nt, refine=4, dt=1e-3)
    assert u.shape == (nt, nx)
    np.testing.assert_allclose(x, -1 + 2 * np.arange(nx) / nx)
    np.testing.assert_allclose(u[0], x**2 * np.cos(np.pi * x), atol=1e-14)
    # The solution settles towards the stable states -1 and +1.
    assert u[-1].min() > -1.0 - 1e-6 and u[-1].max() < 1.0 + 1e-6
    assert np.abs(u[-1]).mean() > 0.85


def test_allen_cahn_reference_satisfies_the_pde():
    """The residual u_t - 1e-4 u_xx - 5u + 5u^3, with u_t by central differences in
    time and u_xx spectrally, is small compared with its terms."""
    nx = 256
    dt_out = 1e-3
    t = np.array([0.3 - dt_out, 0.3, 0.3 + dt_out])
    x = _periodic_grid(nx, -1.0, 2.0)
    u = etdrk4(
        x**2 * np.cos(np.pi * x),
        2.0,
        lambda k: -1e-4 * k**2,
        lambda v: 5 * (v - v**3),
        np.concatenate([[0.0], t]),
        1e-4,
    )[1:]
    k = np.pi * np.fft.rfftfreq(nx, 1.0 / nx)
    u_xx = np.fft.irfft(-(k**2) * np.fft.rfft(u[1]), nx)
    u_t = (u[2] - u[0]) / (2 * dt_out)
    residual = u_t - 1e-4 * u_xx - 5 * (u[1] - u[1] ** 3)
    scale = np.abs(5 * (u[1] - u[1] ** 3)).max()
    assert np.abs(residual).max() < 1e-4 * scale


def test_burgers_cole_hopf_quadrature_converges():
    nu = 0.01 / math.pi
    t = np.array([0.0, 0.05, 0.4, 1.0])
    x = np.linspace(-1, 1, 33)
    default = burgers_cole_hopf(t, x, nu)
    fine = burgers_cole_hopf(t, x, nu, quadrature_points=6000, width=20.0)
    np.testing.assert_allclose(default, fine, atol=1e-13)
    too_narrow = burgers_cole_hopf(t, x, nu, width=6.0)
    assert np.abs(too_narrow - fine).max() > 1e-4  # the rule's width matters
    np.testing.assert_allclose(default[0], -np.sin(np.pi * x))
    # Zero Dirichlet values at x = +-1 and an odd solution.
    np.testing.assert_allclose(default[:, [0, -1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(default, -default[:, ::-1], atol=1e-12)


def test_burgers_matches_the_published_maximum_slope():
    """Basdevant et al. (1986): for nu = 0.01/pi the slope at x = 0 peaks at
    |u_x| = 152.00516 at t = 1.6037/pi."""
    nu = 0.01 / math.pi
    t_star = 1.6037 / math.pi
    t = t_star + np.linspace(-4e-3, 4e-3, 41)
    h = 1e-6
    u = burgers_cole_hopf(t, np.array([-h, h]), nu)
    slope = np.abs(u[:, 1] - u[:, 0]) / (2 * h)
    assert slope.max() == pytest.approx(152.00516, abs=2e-3)
    assert abs(t[np.argmax(slope)] - t_star) <= 2e-4


def test_burgers_reference_satisfies_the_pde():
    nu = 0.01 / math.pi
    t0, h = 0.3, 1e-4
    x = np.linspace(-0.9, 0.9, 19)
    u = burgers_cole_hopf(np.array([t0 - h, t0, t0 + h]), x, nu)
    u_t = (u[2] - u[0]) / (2 * h)
    ux = burgers_cole_hopf(np.array([t0]), np.concatenate([x - h, x + h]), nu)[0]
    u_x = (ux[len(x) :] - ux[: len(x)]) / (2 * h)
    u_xx = (ux[len(x) :] - 2 * u[1] + ux[: len(x)]) / h**2
    residual = u_t + u[1] * u_x - nu * u_xx
    assert np.abs(residual).max() < 1e-5 * np.abs(u[1] * u_x).max()
    t, x_grid, grid = burgers_reference(nu, 9, 5)
    assert grid.shape == (5, 9) and x_grid[0] == -1.0 and x_grid[-1] == 1.0
