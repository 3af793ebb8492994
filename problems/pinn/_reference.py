r"""Reference solutions computed by the package (host-side, NumPy float64).

- [`problems.pinn.etdrk4`][]: a Fourier pseudo-spectral solver for periodic
  semilinear equations $u_t = \mathcal{L} u + N(u)$ with the fourth-order
  exponential time-differencing Runge-Kutta scheme of Cox & Matthews, with the
  contour-integral coefficients of Kassam & Trefethen (stiff linear parts such as
  $10^{-4} u_{xx}$ are integrated exactly). It gives the Allen-Cahn reference.
- [`problems.pinn.burgers_cole_hopf`][]: the viscous Burgers solution with
  $u_0 = -\sin \pi x$ from the Cole-Hopf transformation, by quadrature.

Both run in float64 whatever JAX's precision, once per problem construction (and
are cached per argument set).
"""

import functools
import math
from collections.abc import Callable

import numpy as np
from jaxtyping import ArrayLike, Float

from sciinr.checks import check_positive_int, check_real


Array64 = Float[np.ndarray, "..."]


def _etdrk4_coefficients(step: np.ndarray, contour_points: int = 64):
    """The ETDRK4 coefficients `(E, E2, Q, f1, f2, f3)` for the linear symbol times
    the step, `step = dt * L(k)`, by contour integrals (Kassam & Trefethen 2005,
    `kursiv.m`), which avoid the cancellation of the closed forms near 0."""
    # Points on the whole unit circle around each `step` (Kassam & Trefethen use the
    # upper half and the real part, which holds for real symbols only; advection's
    # symbol -i c k is imaginary).
    r = np.exp(2j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
    lr = step[:, None] + r[None, :]
    q = np.mean((np.exp(lr / 2) - 1) / lr, axis=1)
    f1 = np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1)
    f2 = np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1)
    f3 = np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1)
    return np.exp(step), np.exp(step / 2), q, f1, f2, f3


def etdrk4(
    u0: ArrayLike,
    length: float,
    linear: Callable[[Array64], Array64],
    nonlinear: Callable[[Array64], Array64],
    times: ArrayLike,
    dt: float,
    *,
    dealias: bool = False,
) -> Array64:
    r"""Solve $u_t = \mathcal{L} u + N(u)$ on a periodic interval by ETDRK4.

    Fourier pseudo-spectral in space ($n$ equispaced points, `numpy.fft.rfft`) and
    exponential time differencing Runge-Kutta of order 4 in time (Cox & Matthews
    2002) with the coefficients evaluated by contour integrals (Kassam & Trefethen
    2005). The linear part is applied exactly in Fourier space, so a stiff
    $\mathcal{L}$ costs nothing in stability; the step `dt` only has to resolve
    $N$.

    **Arguments:**

    - `u0`: the initial values at $x_j = a + j L / n$, $j = 0 \dots n - 1$, shape
      `(n,)`.
    - `length`: the period $L$.
    - `linear`: the Fourier symbol of $\mathcal{L}$ as a function of the angular
      wavenumbers $k$ (e.g. `lambda k: -1e-4 * k**2` for $10^{-4} u_{xx}$,
      `lambda k: -1j * c * k` for $-c u_x$).
    - `nonlinear`: $N(u)$ in physical space (real arrays `(n,)` to `(n,)`).
    - `times`: the output times, increasing, from `0`; each must be a multiple of
      `dt` (to `1e-9` relative).
    - `dt`: the time step.
    - `dealias`: zero the upper third of the spectrum of $N(u)$ (the 2/3 rule).
      Keyword-only.

    **Returns:**

    The solution at `times`, shape `(len(times), n)`.
    """
    u0 = np.asarray(u0, np.float64)
    n = u0.shape[0]
    times = np.asarray(times, np.float64)
    k = 2 * np.pi / length * np.fft.rfftfreq(n, 1.0 / n)
    symbol = np.asarray(linear(k), np.complex128) * np.ones_like(k)
    if n % 2 == 0:
        # The Nyquist mode of a real signal is its own conjugate: keep the symbol
        # real there (an odd symbol such as -i c k would otherwise be lost by irfft).
        symbol[-1] = symbol[-1].real
    E, E2, Q, f1, f2, f3 = _etdrk4_coefficients(dt * symbol)
    mask = np.ones_like(k)
    if dealias:
        mask[k >= (2 / 3) * k.max()] = 0.0

    def N(v_hat):
        return mask * np.fft.rfft(nonlinear(np.fft.irfft(v_hat, n)))

    steps = np.rint(times / dt).astype(np.int64)
    if np.any(np.abs(steps * dt - times) > 1e-9 * np.maximum(1.0, np.abs(times))):
        raise ValueError("`times` must be multiples of `dt`.")
    v = np.fft.rfft(u0)
    out = np.empty((len(times), n))
    step = 0
    for index, target in enumerate(steps):
        while step < target:
            Nv = N(v)
            a = E2 * v + dt * Q * Nv
            Na = N(a)
            b = E2 * v + dt * Q * Na
            Nb = N(b)
            c = E2 * a + dt * Q * (2 * Nb - Nv)
            Nc = N(c)
            v = E * v + dt * (f1 * Nv + 2 * f2 * (Na + Nb) + f3 * Nc)
            step += 1
        out[index] = np.fft.irfft(v, n)
    return out


@functools.lru_cache(maxsize=8)
def allen_cahn_reference(
    nx: int = 512,
    nt: int = 201,
    *,
    refine: int = 4,
    dt: float = 5e-4,
    diffusion: float = 1e-4,
    rate: float = 5.0,
) -> tuple[Array64, Array64, Array64]:
    r"""The Allen-Cahn reference: $u_t = D u_{xx} + r(u - u^3)$, periodic on
    $[-1, 1)$, $u_0 = x^2 \cos(\pi x)$, $t \in [0, 1]$, by [`problems.pinn.etdrk4`][].

    The solver runs on `refine * nx` points and the result is sampled at every
    `refine`-th point. The interfaces are about $\sqrt{D/r} \approx 0.005$ wide, so
    fine grids matter: against a run on 4096 points with half the step, the default
    (2048 points, `dt = 5e-4`) differs by `7.0e-7` in relative $L^2$ (`9.6e-5` at
    most), 1024 points by `3.4e-6`, 512 points (the grid of the usual data set) by
    `1.1e-5`; halving `dt` changes nothing above `1e-11`.

    **Arguments:**

    - `nx`, `nt`: the output grid: `nt` times on `[0, 1]` (both ends), `nx`
      positions $-1 + 2j / n_x$ on `[-1, 1)`.
    - `refine`: the solver grid is `refine * nx` points. Keyword-only.
    - `dt`: the time step; `1 / (nt - 1)` must be a multiple of it. Keyword-only.
    - `diffusion`, `rate`: $D$ and $r$. Keyword-only. Default to `1e-4` and `5`.

    **Returns:**

    `(t, x, u)`: `t` of shape `(nt,)`, `x` of shape `(nx,)`, `u` of shape
    `(nt, nx)`.
    """
    nx = check_positive_int("nx", nx)
    nt = check_positive_int("nt", nt)
    refine = check_positive_int("refine", refine)
    t = np.linspace(0.0, 1.0, nt)
    n = nx * refine
    x_fine = -1.0 + 2.0 * np.arange(n) / n
    u = etdrk4(
        x_fine**2 * np.cos(np.pi * x_fine),
        2.0,
        lambda k: -diffusion * k**2,
        lambda v: rate * (v - v**3),
        t,
        dt,
    )
    return t, x_fine[::refine], u[:, ::refine]


def burgers_cole_hopf(
    t: ArrayLike,
    x: ArrayLike,
    nu: float,
    *,
    quadrature_points: int = 800,
    width: float = 12.0,
) -> Array64:
    r"""The viscous Burgers solution with $u_0 = -\sin(\pi x)$, by Cole-Hopf.

    For $u_t + u u_x = \nu u_{xx}$ on $\mathbb{R}$ with $u_0(x) = -\sin \pi x$ (whose
    periodic solution also satisfies $u(t, \pm 1) = 0$),

    $$u(t, x) = -\frac{\int \sin\big(\pi (x - \eta)\big)\, f(x - \eta)\,
    e^{-\eta^2 / 4 \nu t}\, d\eta}{\int f(x - \eta)\, e^{-\eta^2 / 4 \nu t}\,
    d\eta}, \qquad f(y) = e^{-\cos(\pi y) / 2 \pi \nu}$$

    (Basdevant et al. 1986). With $\eta = 2\sqrt{\nu t}\, s$ both integrals are
    $\int e^{-s^2} (\cdot)\, ds$, computed with the trapezoidal rule on
    $s \in [-W, W]$ (`quadrature_points` points; spectrally accurate for this
    smooth, rapidly decaying integrand) in log-sum-exp form, since $f$ spans
    $e^{\pm 1 / 2\pi\nu}$.

    **Arguments:**

    - `t`: times `>= 0`, shape `(nt,)`.
    - `x`: positions, shape `(nx,)`.
    - `nu`: the viscosity `> 0`.
    - `quadrature_points`, `width`: the rule. For $\nu = 0.01/\pi$ on
      $t \in [0.01, 1]$ the defaults (800 points on $[-12, 12]$) agree with 16000
      points on $[-20, 20]$ to `1e-15`; 400 points on $[-10, 10]$ to `1e-11`; an
      interval of $[-8, 8]$ is too narrow (`6e-4`), since $f$ shifts the peak of
      the integrand away from $s = 0$. Keyword-only.

    **Returns:**

    $u$ at the grid `(t, x)`, shape `(nt, nx)`.
    """
    nu = check_real("nu", nu, positive=True)
    t = np.asarray(t, np.float64)
    x = np.asarray(x, np.float64)
    s, ds = np.linspace(-width, width, quadrature_points, retstep=True)
    out = np.empty((t.shape[0], x.shape[0]))
    for i, time in enumerate(t):
        if time <= 0:
            out[i] = -np.sin(np.pi * x)
            continue
        y = x[:, None] - 2 * math.sqrt(nu * time) * s[None, :]  # x - eta
        log_weight = -(s**2)[None, :] - np.cos(np.pi * y) / (2 * np.pi * nu)
        weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True)) * ds
        out[i] = -np.sum(np.sin(np.pi * y) * weight, axis=1) / np.sum(weight, axis=1)
    return out


@functools.lru_cache(maxsize=8)
def burgers_reference(
    nu: float, nx: int = 256, nt: int = 101
) -> tuple[Array64, Array64, Array64]:
    """The Burgers reference on `t` in `[0, 1]` (`nt` points) and `x` in `[-1, 1]`
    (`nx` points, both ends included), by [`problems.pinn.burgers_cole_hopf`][].

    **Returns:**

    `(t, x, u)` with `u` of shape `(nt, nx)`.
    """
    t = np.linspace(0.0, 1.0, check_positive_int("nt", nt))
    x = np.linspace(-1.0, 1.0, check_positive_int("nx", nx))
    return t, x, burgers_cole_hopf(t, x, nu)
