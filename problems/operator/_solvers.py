r"""The reference solutions of the operator problems: Diffrax solves of all input
functions at once.

Every input function is given by its values on a fine equispaced grid of $[0, 1]$
and is piecewise linear in between ([`problems.operator.interpolate`][]). The ODEs
are integrated with `diffrax.Tsit5`, one step per interval of that grid
(`diffrax.StepTo`), so that within a step the input is linear and the solver's
fifth order is not spoiled by a kink (the antiderivative is then exact up to
round-off). The diffusion–reaction equation is discretised in space by
second-order finite differences on the sensor grid (the method of lines) and
integrated in time by Tsit5 at a fixed step inside its stability region.

The vector fields act on a whole batch of functions at once: the state stacks the
functions' states along a leading axis (the vector field of one function, vmapped),
so one solve advances every function with array operations over the batch. A
function whose solution blows up (a non-finite value, or one of magnitude above
`BLOWUP` $\times (1 + \max |u|)$, far beyond any regular solution) is
marked failed, without aborting the others; the caller drops it.

Measured on the 2-core CPU (jax 0.10.2, diffrax 0.7.2): 10,000 antiderivatives
with 990 steps each in 0.3 s once compiled, when the input values are stored
point-major (`(n, F)`, so that every stage reads one contiguous row); the
function-major layout took 1.5 s (a strided gather per stage) and a `jax.vmap` of
`diffeqsolve` over the functions 1.5 s.
"""

import math
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._grf import interpolate


BLOWUP = 10.0
"""A solution with a value of magnitude above `BLOWUP * (1 + max |u|)` (or NaN/inf)
is treated as blown up and dropped. Regular solutions of the four operators stay
below `1 + max |u|` or so on [0, 1] (the antiderivative below `max |u|`); a nonlinear
ODE solution beyond this bound is in its runaway to a finite-time singularity (with
a 10^6 bound, near-singular solutions of |s| up to 4 x 10^4 entered the data set and
dominated its mean squared error)."""

# Tsit5's stability region reaches about -3.5 on the negative real axis; stay well
# inside it.
_STABLE_STEP = 2.5


@eqx.filter_jit
def _solve_chunk(vector_field, y0, args, scale, steps, save):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5(),
        t0=steps[0],
        t1=steps[-1],
        dt0=None,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=save),
        stepsize_controller=diffrax.StepTo(ts=steps),
        max_steps=steps.shape[0],
        # Nothing is differentiated: a plain while loop, without the checkpointing
        # of the default adjoint (which copied the saved buffer, 30 % slower).
        adjoint=diffrax.ForwardMode(),
        throw=False,
    )
    ys = jnp.moveaxis(solution.ys, 0, 1)  # (F, len(save), ...)
    axes = tuple(range(1, ys.ndim))
    bound = (BLOWUP * (1 + scale)).reshape(scale.shape + (1,) * (ys.ndim - 1))
    ok = jnp.all(jnp.isfinite(ys), axis=axes) & jnp.all(jnp.abs(ys) < bound, axis=axes)
    ok = ok & (solution.result == diffrax.RESULTS.successful)
    mask = ok.reshape(ok.shape + (1,) * (ys.ndim - 1))
    # A blown-up solution keeps its garbage out of the dataset.
    return jnp.where(mask, ys, 0.0), ok


def solve(
    vector_field: Callable,
    y0: Float[Array, "f ..."],
    args: Array,
    *,
    scale: Float[Array, " f"],
    steps: np.ndarray,
    save: np.ndarray,
    batch_axis: int = 0,
    chunk_size: int = 4096,
) -> tuple[Float[Array, "f k *state"], Bool[Array, " f"]]:
    """Solve `dy/dt = vector_field(t, y, args)` for a batch of functions.

    **Arguments:**

    - `vector_field`: `(t, y, args) -> dy/dt` acting on the whole batch: `y` has
      the functions on its leading axis.
    - `y0`: the initial states, shape `(F, *state)`.
    - `args`: the functions' data, with the functions on `batch_axis`.
    - `scale`: each function's input magnitude $\\max |u|$, for the blow-up bound.
    - `steps`: the increasing step times (the first is $t_0$, the last $t_1$).
    - `save`: the increasing times at which to save the solution, in $[t_0, t_1]$.
    - `batch_axis`: the axis of `args` that indexes the functions.
    - `chunk_size`: the most functions per solve (bounded memory). Fewer functions
      are padded to the next power of two (at least 256), and the last chunk to a
      full one, so that solves of similar sizes reuse one compilation.

    **Returns:**

    `(ys, ok)`: the solutions at `save`, shape `(F, len(save), *state)` (zeros
    where a solve blew up), and whether each solve succeeded.
    """
    n = y0.shape[0]
    steps = jnp.asarray(steps, y0.dtype)
    save = jnp.asarray(save, y0.dtype)
    # Small batches are padded to a power of two, so that e.g. a training and a
    # test set share one compilation (a solve compiles in seconds).
    chunk = min(chunk_size, max(256, 1 << max(n - 1, 1).bit_length()))
    outputs = []
    for start in range(0, n, chunk):
        y0_part = y0[start : start + chunk]
        scale_part = scale[start : start + chunk]
        args_part = jnp.take(
            args, jnp.arange(start, start + len(y0_part)), axis=batch_axis
        )
        size = len(y0_part)
        if size < chunk:  # pad with copies of the first function
            pad = np.zeros(chunk - size, np.int32)
            y0_part = jnp.concatenate([y0_part, y0_part[pad]])
            scale_part = jnp.concatenate([scale_part, scale_part[pad]])
            args_part = jnp.concatenate(
                [args_part, jnp.take(args_part, pad, axis=batch_axis)],
                axis=batch_axis,
            )
        ys, ok = _solve_chunk(vector_field, y0_part, args_part, scale_part, steps, save)
        outputs.append((ys[:size], ok[:size]))
    return (
        jnp.concatenate([ys for ys, _ in outputs]),
        jnp.concatenate([ok for _, ok in outputs]),
    )


def _fine_steps(inputs: Array) -> np.ndarray:
    return np.linspace(0.0, 1.0, inputs.shape[-1])


def _antiderivative_field(t, s, u_rows):
    return interpolate(u_rows, t, axis=0)[:, None]


def _nonlinear_field(t, s, u_rows):
    return -jnp.square(s) + interpolate(u_rows, t, axis=0)[:, None]


class _PendulumField(eqx.Module):
    # An array, not a static float: solves with other constants share a compilation.
    k: Array

    def __call__(self, t, s, u_rows):
        force = interpolate(u_rows, t, axis=0)
        return jnp.stack([s[:, 1], -self.k * jnp.sin(s[:, 0]) + force], axis=1)


def _solve_ode(field, inputs, points, state: int):
    y0 = jnp.zeros((inputs.shape[0], state), inputs.dtype)
    # Point-major input values: each stage reads one contiguous row.
    scale = jnp.max(jnp.abs(inputs), axis=1)
    return solve(
        field,
        y0,
        inputs.T,
        scale=scale,
        steps=_fine_steps(inputs),
        save=points,
        batch_axis=1,
    )


def antiderivative(
    inputs: Float[Array, "f n"], points: np.ndarray
) -> tuple[Float[Array, "f k 1"], Bool[Array, " f"]]:
    """$ds/dx = u(x)$, $s(0) = 0$, at the increasing `points` of $[0, 1]$, for the
    functions with values `inputs` on the fine grid."""
    return _solve_ode(_antiderivative_field, inputs, points, 1)


def nonlinear_ode(
    inputs: Float[Array, "f n"], points: np.ndarray
) -> tuple[Float[Array, "f k 1"], Bool[Array, " f"]]:
    """$ds/dx = -s^2 + u(x)$, $s(0) = 0$, at the increasing `points` of $[0, 1]$."""
    return _solve_ode(_nonlinear_field, inputs, points, 1)


def pendulum(
    inputs: Float[Array, "f n"], points: np.ndarray, *, k: float
) -> tuple[Float[Array, "f k 2"], Bool[Array, " f"]]:
    """$s_1' = s_2$, $s_2' = -k \\sin s_1 + u(t)$, $s(0) = 0$, at the increasing
    `points` of $[0, 1]$: the angle $s_1$ and the angular velocity $s_2$."""
    return _solve_ode(_PendulumField(jnp.asarray(k, inputs.dtype)), inputs, points, 2)


class _DiffusionReactionField(eqx.Module):
    """Method of lines on the interior nodes, zero Dirichlet values at both ends."""

    # Arrays, not static floats: solves with other constants share a compilation.
    diffusion: Array
    reaction: Array
    inverse_dx2: Array

    def __call__(self, t, s, source):
        padded = jnp.pad(s, ((0, 0), (1, 1)))
        laplacian = (padded[:, :-2] - 2 * s + padded[:, 2:]) * self.inverse_dx2
        return self.diffusion * laplacian + self.reaction * jnp.square(s) + source


def diffusion_reaction_steps(n_x: int, n_t: int, diffusion: float) -> int:
    """Time steps per output interval that keep Tsit5 stable for the diffusion
    operator on `n_x` nodes: its largest eigenvalue is about $4 D / \\Delta x^2$."""
    dx = 1.0 / (n_x - 1)
    dt = 1.0 / (n_t - 1)
    return max(1, math.ceil(4 * diffusion / dx**2 * dt / _STABLE_STEP))


def diffusion_reaction(
    inputs: Float[Array, "f n"],
    n_x: int,
    n_t: int,
    *,
    diffusion: float,
    reaction: float,
    chunk_size: int = 1000,
) -> tuple[Float[Array, "f n_x n_t"], Bool[Array, " f"]]:
    """$s_t = D s_{xx} + k s^2 + u(x)$ on $[0, 1]^2$, zero initial and boundary
    values, on the grid of `n_x` x `n_t` equispaced nodes (both ends included):
    `s[f, i, j]` at $(x_i, t_j)$."""
    x = np.linspace(0.0, 1.0, n_x)
    source = interpolate(inputs, jnp.asarray(x[1:-1], inputs.dtype))
    dtype = inputs.dtype
    field = _DiffusionReactionField(
        jnp.asarray(diffusion, dtype),
        jnp.asarray(reaction, dtype),
        jnp.asarray((n_x - 1) ** 2, dtype),
    )
    refine = diffusion_reaction_steps(n_x, n_t, diffusion)
    steps = np.linspace(0.0, 1.0, refine * (n_t - 1) + 1)
    save = np.linspace(0.0, 1.0, n_t)
    y0 = jnp.zeros((inputs.shape[0], n_x - 2), inputs.dtype)
    scale = jnp.max(jnp.abs(source), axis=1)
    ys, ok = solve(
        field, y0, source, scale=scale, steps=steps, save=save, chunk_size=chunk_size
    )
    ys = jnp.pad(ys, ((0, 0), (0, 0), (1, 1)))  # the boundary values
    return jnp.swapaxes(ys, 1, 2), ok
