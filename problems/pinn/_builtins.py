r"""The built-in PDEs, each with a reference solution computed by the package."""

import functools
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from sciinr import diff
from sciinr.checks import check_positive_int, check_real

from ._conditions import DirichletBC, InitialCondition, PeriodicBC
from ._pde import PDEProblem, Reference
from ._reference import allen_cahn_reference, burgers_reference
from ._weighting import AbstractWeighting, Causal


_DEFAULT_CAUSAL = Causal()


def _grid_size(resolution) -> tuple[int, int]:
    try:
        nt, nx = resolution
    except (TypeError, ValueError):
        raise ValueError(
            f"`resolution` must be a pair (nt, nx), got {resolution!r}."
        ) from None
    return check_positive_int("resolution[0]", nt), check_positive_int(
        "resolution[1]", nx
    )


def _initial_exactly(x, u, initial):
    """`u0(x) + t N(t, x)`: the initial condition at `t = 0` holds exactly."""
    return initial(x) + x[0] * u


def _initial_condition(initial, n_initial, hard_initial, output_transform):
    """The `ic` term and the output transform: the initial condition as a loss term,
    or (`hard_initial=True`) imposed exactly by the transform, without the term."""
    if not isinstance(hard_initial, bool):
        raise TypeError(f"`hard_initial` must be True or False, got {hard_initial!r}.")
    if not hard_initial:
        return [InitialCondition(initial, n=n_initial)], output_transform
    if output_transform is not None:
        raise ValueError(
            "Pass either `hard_initial=True` (which sets the output transform "
            "u0(x) + t N(t, x)) or your own `output_transform`, not both."
        )
    return [], functools.partial(_initial_exactly, initial=initial)


class _Builtin(PDEProblem):
    """A built-in PDE: `periods` tells how to build an exactly periodic field."""

    periods: tuple[float | None, ...] = eqx.field(static=True)


# -- Poisson and Helmholtz: manufactured solutions on [-1, 1]^2 ----------------------


def _manufactured(x: Float[Array, " 2"], a1: float, a2: float) -> Array:
    return jnp.sin(a1 * math.pi * x[0]) * jnp.sin(a2 * math.pi * x[1])


def _helmholtz_residual(u, x, a1: float, a2: float, k: float):
    source = (k**2 - (a1**2 + a2**2) * math.pi**2) * _manufactured(x, a1, a2)
    return diff.laplacian(u, x) + k**2 * u(x) - source


def _poisson_residual(u, x, a1: float, a2: float):
    source = (a1**2 + a2**2) * math.pi**2 * _manufactured(x, a1, a2)
    return -diff.laplacian(u, x) - source


def _square_grid(resolution: int) -> list[np.ndarray]:
    axis = np.linspace(-1.0, 1.0, check_positive_int("resolution", resolution))
    return [axis, axis]


class Helmholtz2D(_Builtin):
    r"""The Helmholtz equation on $[-1, 1]^2$ with a manufactured solution.

    $$\Delta u + k^2 u = q, \qquad u = g \text{ on } \partial\Omega, \qquad
    u^*(x, y) = \sin(a_1 \pi x) \sin(a_2 \pi y),$$

    with $q = \big(k^2 - (a_1^2 + a_2^2)\pi^2\big) u^*$ and $g = u^*$ (zero for
    integer $a_1$, $a_2$), the benchmark of Wang, Teng & Perdikaris (2021) and of the
    RWF paper ($a_1 = 1$, $a_2 = 4$, $k = 1$). Terms: `res`, `bc`.

    ??? cite

        [Understanding and mitigating gradient pathologies in physics-informed
        neural networks](https://arxiv.org/abs/2001.04536)

        ```bibtex
        @article{wang2021understanding,
          title={Understanding and mitigating gradient flow pathologies in
                 physics-informed neural networks},
          author={Wang, Sifan and Teng, Yujun and Perdikaris, Paris},
          journal={SIAM Journal on Scientific Computing},
          volume={43},
          number={5},
          pages={A3055--A3081},
          year={2021}
        }
        ```
    """

    a1: float = eqx.field(static=True)
    a2: float = eqx.field(static=True)
    k: float = eqx.field(static=True)

    def __init__(
        self,
        a1: float = 1.0,
        a2: float = 4.0,
        k: float = 1.0,
        *,
        n_collocation: int = 4096,
        n_boundary: int = 1024,
        weighting: AbstractWeighting | None = None,
        output_transform=None,
        resolution: int = 101,
    ):
        """**Arguments:**

        - `a1`, `a2`, `k`: the solution's frequencies and the wavenumber (finite).
          Default to `1`, `4`, `1` (Wang et al.).
        - `n_collocation`, `n_boundary`: points per step in the square and on its
          boundary. Keyword-only.
        - `weighting`, `output_transform`: as for [`problems.pinn.PDEProblem`][].
          Keyword-only.
        - `resolution`: the reference grid has `resolution`² points on
          $[-1, 1]^2$, boundary included. Keyword-only.
        """
        self.a1 = check_real("a1", a1)
        self.a2 = check_real("a2", a2)
        self.k = check_real("k", k)
        self.periods = (None, None)
        exact = functools.partial(_manufactured, a1=self.a1, a2=self.a2)
        super().__init__(
            functools.partial(_helmholtz_residual, a1=self.a1, a2=self.a2, k=self.k),
            {"x": (-1.0, 1.0), "y": (-1.0, 1.0)},
            conditions=[DirichletBC(exact, n=n_boundary, name="bc")],
            n_collocation=n_collocation,
            weighting=weighting,
            output_transform=output_transform,
            reference=Reference.from_function(exact, _square_grid(resolution)),
        )


class Poisson2D(_Builtin):
    r"""The Poisson equation on $[-1, 1]^2$ with a manufactured solution.

    $$-\Delta u = f, \qquad u = g \text{ on } \partial\Omega, \qquad
    u^*(x, y) = \sin(a_1 \pi x) \sin(a_2 \pi y),$$

    with $f = (a_1^2 + a_2^2)\pi^2 u^*$ and $g = u^*$. Terms: `res`, `bc`.
    """

    a1: float = eqx.field(static=True)
    a2: float = eqx.field(static=True)

    def __init__(
        self,
        a1: float = 1.0,
        a2: float = 1.0,
        *,
        n_collocation: int = 4096,
        n_boundary: int = 1024,
        weighting: AbstractWeighting | None = None,
        output_transform=None,
        resolution: int = 101,
    ):
        """**Arguments:** as for [`problems.pinn.Helmholtz2D`][] (no `k`);
        `a1`, `a2` default to `1`."""
        self.a1 = check_real("a1", a1)
        self.a2 = check_real("a2", a2)
        self.periods = (None, None)
        exact = functools.partial(_manufactured, a1=self.a1, a2=self.a2)
        super().__init__(
            functools.partial(_poisson_residual, a1=self.a1, a2=self.a2),
            {"x": (-1.0, 1.0), "y": (-1.0, 1.0)},
            conditions=[DirichletBC(exact, n=n_boundary, name="bc")],
            n_collocation=n_collocation,
            weighting=weighting,
            output_transform=output_transform,
            reference=Reference.from_function(exact, _square_grid(resolution)),
        )


# -- Advection ------------------------------------------------------------------------


def _advection_residual(u, x, c: float):
    _, u_t, u_x = diff.partials(u, x, [(0,), (1,)])
    return u_t + c * u_x


def _sin_x(x):
    return jnp.sin(x[1])


class Advection1D(_Builtin):
    r"""Linear advection $u_t + c\, u_x = 0$, periodic on $x \in [0, 2\pi]$,
    $t \in [0, 1]$, $u_0 = \sin x$; exact solution $\sin(x - ct)$.

    A large speed ($c = 80$: 80/2π ≈ 13 periods cross the domain) makes it a hard
    PINN benchmark (jaxpi: rel. $L^2$ 6.9e-4). Terms: `res`, `ic` (and
    `periodic_x` with `periodic_loss=True`). Fields should be periodic in $x$:
    `sciinr.nn.PeriodicEmbedding(2, problem.periods)`.
    """

    c: float = eqx.field(static=True)

    def __init__(
        self,
        c: float = 80.0,
        *,
        n_collocation: int = 4096,
        n_initial: int = 512,
        weighting: AbstractWeighting | None = None,
        causal: Causal | None = _DEFAULT_CAUSAL,
        periodic_loss: bool = False,
        hard_initial: bool = False,
        output_transform=None,
        resolution: tuple[int, int] = (201, 256),
    ):
        """**Arguments:**

        - `c`: the speed, finite. Defaults to `80` (jaxpi).
        - `n_collocation`, `n_initial`: points per step. Keyword-only.
        - `weighting`, `causal`, `output_transform`: as for
          [`problems.pinn.PDEProblem`][]; `causal` defaults to `Causal(1.0, 32)`
          (jaxpi). Keyword-only.
        - `periodic_loss`: add a soft periodic condition in `x` (for fields that
          are not periodic by construction). Keyword-only.
        - `hard_initial`: impose the initial condition exactly, through the output
          transform $u = u_0(x) + t N(t, x)$, instead of the `ic` loss term
          (which is then absent). Keyword-only.
        - `resolution`: the reference grid `(nt, nx)`: `nt` times on `[0, 1]`, `nx`
          positions on `[0, 2π)`. Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming `c` if it is not a finite number.
        """
        self.c = check_real("c", c)
        self.periods = (None, 2 * math.pi)
        nt, nx = (
            check_positive_int(f"resolution[{i}]", n) for i, n in enumerate(resolution)
        )
        t = np.linspace(0.0, 1.0, nt)
        x = 2 * np.pi * np.arange(nx) / nx
        exact = np.sin(x[None, :] - self.c * t[:, None])
        conditions, output_transform = _initial_condition(
            _sin_x, n_initial, hard_initial, output_transform
        )
        if periodic_loss:
            conditions.append(PeriodicBC("x", derivatives=0))
        super().__init__(
            functools.partial(_advection_residual, c=self.c),
            {"t": (0.0, 1.0), "x": (0.0, 2 * math.pi)},
            conditions=conditions,
            n_collocation=n_collocation,
            weighting=weighting,
            causal=causal,
            output_transform=output_transform,
            reference=Reference([t, x], exact),
        )


# -- Allen-Cahn -----------------------------------------------------------------------


def _allen_cahn_residual(u, x, diffusion: float, rate: float):
    value, u_t, u_xx = diff.partials(u, x, [(0,), (1, 1)])
    return u_t - diffusion * u_xx - rate * (value - value**3)


def _allen_cahn_initial(x):
    return x[1] ** 2 * jnp.cos(math.pi * x[1])


class AllenCahn1D(_Builtin):
    r"""The Allen-Cahn equation, periodic on $x \in [-1, 1]$, $t \in [0, 1]$:

    $$u_t = 10^{-4} u_{xx} + 5u - 5u^3, \qquad u_0(x) = x^2 \cos(\pi x).$$

    The reference comes from the Fourier spectral ETDRK4 solver of
    [`problems.pinn.allen_cahn_reference`][] (2048 modes, converged to 7e-7 in
    relative $L^2$), on 201 × 512 points. Terms: `res`, `ic` (and `periodic_x` with
    `periodic_loss=True`). Fields should be periodic in $x$ (period 2).
    Published: rel. $L^2$ 5.4e-5 (jaxpi, GPU, 3e5 steps).
    """

    diffusion: float = eqx.field(static=True)
    rate: float = eqx.field(static=True)

    def __init__(
        self,
        diffusion: float = 1e-4,
        rate: float = 5.0,
        *,
        n_collocation: int = 4096,
        n_initial: int = 512,
        weighting: AbstractWeighting | None = None,
        causal: Causal | None = _DEFAULT_CAUSAL,
        periodic_loss: bool = False,
        hard_initial: bool = False,
        output_transform=None,
        resolution: tuple[int, int] = (201, 512),
    ):
        """**Arguments:**

        - `diffusion`, `rate`: the coefficients ($10^{-4}$ and $5$), finite,
          `diffusion > 0`.
        - `n_collocation`, `n_initial`, `weighting`, `causal`, `periodic_loss`,
          `hard_initial`, `output_transform`: as for
          [`problems.pinn.Advection1D`][].
          Keyword-only.
        - `resolution`: the reference grid `(nt, nx)`. Keyword-only.
        """
        self.diffusion = check_real("diffusion", diffusion, positive=True)
        self.rate = check_real("rate", rate)
        self.periods = (None, 2.0)
        nt, nx = (
            check_positive_int(f"resolution[{i}]", n) for i, n in enumerate(resolution)
        )
        t, x, u = allen_cahn_reference(nx, nt, diffusion=self.diffusion, rate=self.rate)
        conditions, output_transform = _initial_condition(
            _allen_cahn_initial, n_initial, hard_initial, output_transform
        )
        if periodic_loss:
            conditions.append(PeriodicBC("x"))
        super().__init__(
            functools.partial(
                _allen_cahn_residual, diffusion=self.diffusion, rate=self.rate
            ),
            {"t": (0.0, 1.0), "x": (-1.0, 1.0)},
            conditions=conditions,
            n_collocation=n_collocation,
            weighting=weighting,
            causal=causal,
            output_transform=output_transform,
            reference=Reference([t, x], u),
        )


# -- Burgers ---------------------------------------------------------------------------


def _burgers_residual(u, x, nu: float):
    value, u_t, u_x, u_xx = diff.partials(u, x, [(0,), (1,), (1, 1)])
    return u_t + value * u_x - nu * u_xx


def _minus_sin_pi_x(x):
    return -jnp.sin(math.pi * x[1])


class Burgers1D(_Builtin):
    r"""Viscous Burgers $u_t + u u_x = \nu u_{xx}$ on $x \in [-1, 1]$,
    $t \in [0, 1]$, $u_0 = -\sin(\pi x)$, $u(t, \pm 1) = 0$.

    The reference is the Cole-Hopf solution by quadrature
    ([`problems.pinn.burgers_cole_hopf`][]) on 101 × 256 points (boundaries
    included). With $\nu = 0.01/\pi$ a shock-like front forms at $x = 0$ (slope
    $-152.005$ at $t \approx 0.51$). Terms: `res`, `ic`, `bc`.
    """

    nu: float = eqx.field(static=True)

    def __init__(
        self,
        nu: float = 0.01 / math.pi,
        *,
        n_collocation: int = 4096,
        n_initial: int = 512,
        n_boundary: int = 256,
        weighting: AbstractWeighting | None = None,
        causal: Causal | None = _DEFAULT_CAUSAL,
        hard_initial: bool = False,
        output_transform=None,
        resolution: tuple[int, int] = (101, 256),
    ):
        """**Arguments:**

        - `nu`: the viscosity, finite and `> 0`. Defaults to `0.01 / pi` (Raissi et
          al.).
        - `n_collocation`, `n_initial`, `n_boundary`: points per step.
          Keyword-only.
        - `weighting`, `causal`, `hard_initial`, `output_transform`: as for
          [`problems.pinn.Advection1D`][]. Keyword-only.
        - `resolution`: the reference grid `(nt, nx)`, both ends included.
          Keyword-only.

        **Raises:**

        `ValueError`/`TypeError` naming `nu` if it is not a finite number `> 0`.
        """
        self.nu = check_real("nu", nu, positive=True)
        self.periods = (None, None)
        nt, nx = (
            check_positive_int(f"resolution[{i}]", n) for i, n in enumerate(resolution)
        )
        t, x, u = burgers_reference(self.nu, nx, nt)
        conditions, output_transform = _initial_condition(
            _minus_sin_pi_x, n_initial, hard_initial, output_transform
        )
        conditions.append(DirichletBC(0.0, axis="x", n=n_boundary, name="bc"))
        super().__init__(
            functools.partial(_burgers_residual, nu=self.nu),
            {"t": (0.0, 1.0), "x": (-1.0, 1.0)},
            conditions=conditions,
            n_collocation=n_collocation,
            weighting=weighting,
            causal=causal,
            output_transform=output_transform,
            reference=Reference([t, x], u),
        )


PDES: dict[str, type[_Builtin]] = {
    "allen_cahn": AllenCahn1D,
    "advection": Advection1D,
    "burgers": Burgers1D,
    "poisson": Poisson2D,
    "helmholtz": Helmholtz2D,
}
"""The built-in PDEs by name (for the example's `--pde`)."""
