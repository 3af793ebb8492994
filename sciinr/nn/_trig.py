"""Sine and cosine that are fast on CPU: XLA's CPU backend evaluates `jnp.sin` and
`jnp.cos` with scalar library calls; these are vectorised polynomials."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array


# Cody-Waite split of pi/2 and the minimax polynomials of Cephes' `sinf`/`cosf`.
_PIO2 = (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8)
_SIN = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
_COS = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)


def _cos_sin_float32(angles: Array) -> tuple[Array, Array]:
    k = jnp.round(angles * (2 / math.pi))
    r = ((angles - k * _PIO2[0]) - k * _PIO2[1]) - k * _PIO2[2]  # in [-pi/4, pi/4]
    r2 = r * r
    s = r + r * r2 * (_SIN[0] + r2 * (_SIN[1] + r2 * _SIN[2]))
    c = 1 - 0.5 * r2 + r2 * r2 * (_COS[0] + r2 * (_COS[1] + r2 * _COS[2]))
    quadrant = k.astype(jnp.int32) & 3
    sin = jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cos = jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    return cos, sin


@jax.custom_jvp
def cos_sin(angles: Array) -> tuple[Array, Array]:
    r"""`(cos(angles), sin(angles))`, fast on CPU, with derivatives that reuse them.

    XLA's CPU backend evaluates `sin` and `cos` with scalar library calls. For
    float32, this evaluates both with the argument reduction by $\pi/2$
    (Cody-Waite, three terms) and the minimax polynomials of Cephes' `sinf`/`cosf`
    in vectorised arithmetic, with an error below `1.2e-7` for $|a| \le 10^4$
    (`2e-6` at $10^5$, where a float32 angle itself is only known to `4e-3`).
    Other dtypes use `jnp.cos`/`jnp.sin`. The derivative rule reuses the pair
    ($d\cos = -\sin\, da$, $d\sin = \cos\, da$), at every order. Measured on one
    CPU core (Xeon, load 7): the pair for 4096 x 256 angles in 4 ms instead of
    42 ms.
    """
    if angles.dtype == jnp.float32:
        return _cos_sin_float32(angles)
    return jnp.cos(angles), jnp.sin(angles)


@cos_sin.defjvp
def _cos_sin_jvp(primals, tangents):
    (angles,), (dangles,) = primals, tangents
    cos, sin = cos_sin(angles)
    return (cos, sin), (-sin * dangles, cos * dangles)


def sin(x: Array) -> Array:
    """`jnp.sin(x)` through `cos_sin`: the same values to
    `1.2e-7` in float32 (exact in other dtypes), about 10x faster on CPU, and its
    derivative is the cosine of the same pair. SIREN's activation."""
    return cos_sin(x)[1]
