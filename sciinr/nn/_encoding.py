"""Input encodings: the `AbstractEncoding` interface, NeRF positional encoding and
Gaussian random Fourier features."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import check_positive_int, check_real
from ._trainable import NonTrainable


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


class AbstractEncoding(eqx.Module):
    r"""An input encoding $\gamma: \mathbb{R}^{d} \to \mathbb{R}^{p}$ of one coordinate.

    Fields ([`sciinr.nn.CoordinateMLP`][], the body of `sciinr.nn.MultiHeadField`,
    ...) accept any subclass as `encoding=`: they read `in_size` to check the
    coordinate dimension and `out_size` to size their first layer. Subclasses declare
    both (as static fields or properties) and implement `__call__` on ONE coordinate.

    !!! example

        ```python
        class Identity(sciinr.nn.AbstractEncoding):
            in_size: int = eqx.field(static=True)

            @property
            def out_size(self):
                return self.in_size

            def __call__(self, x, *, key=None):
                return x
        ```
    """

    in_size: eqx.AbstractVar[int]
    out_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " p"]:
        """Encode one coordinate `x` of shape `(in_size,)`; returns `(out_size,)`."""


class PositionalEncoding(AbstractEncoding):
    r"""NeRF-style positional encoding of each coordinate axis.

    $$\gamma(x) = \big[\sin(2^{k}\pi x), \cos(2^{k}\pi x)\big]_{k}$$

    applied to every axis of `x`, with exponents $k_0 = 0, \dots, k_{L-1}$ evenly
    spaced on $[0, L-1]$ (NeRF) or on $[0, \text{max\_log2}]$. The output is ordered
    `[sin(all frequencies, all axes), cos(...)]` and has size `out_size = 2 L d`
    (plus `d` with `include_input=True`).

    ??? cite

        [NeRF: Representing Scenes as Neural Radiance Fields for View
        Synthesis](https://arxiv.org/abs/2003.08934)

        ```bibtex
        @inproceedings{mildenhall2020nerf,
          title={NeRF: Representing Scenes as Neural Radiance Fields for View
                 Synthesis},
          author={Mildenhall, Ben and Srinivasan, Pratul P. and Tancik, Matthew and
                  Barron, Jonathan T. and Ramamoorthi, Ravi and Ng, Ren},
          booktitle={ECCV},
          year={2020}
        }
        ```
    """

    in_size: int = eqx.field(static=True)
    num_frequencies: int = eqx.field(static=True)
    max_log2: float = eqx.field(static=True)
    include_input: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_frequencies: int,
        *,
        max_log2: float | int | None = None,
        include_input: bool = False,
    ):
        """**Arguments:**

        - `in_size`: the coordinate dimension `d`.
        - `num_frequencies`: the number of frequencies `L` per axis.
        - `max_log2`: the largest exponent; frequencies are `2**k` for `k` in
          `linspace(0, max_log2, L)`. Keyword-only. Defaults to `L - 1` (NeRF).
        - `include_input`: whether to prepend `x` itself. Keyword-only.
        """
        self.in_size = check_positive_int("in_size", in_size)
        self.num_frequencies = check_positive_int("num_frequencies", num_frequencies)
        if max_log2 is None:
            max_log2 = num_frequencies - 1
        self.max_log2 = check_real("max_log2", max_log2, nonnegative=True)
        self.include_input = bool(include_input)

    @property
    def out_size(self) -> int:
        return 2 * self.num_frequencies * self.in_size + (
            self.in_size if self.include_input else 0
        )

    @property
    def frequencies(self) -> np.ndarray:
        """The angular frequencies `2**k * pi`, shape `(num_frequencies,)`."""
        return np.pi * 2.0 ** np.linspace(0.0, self.max_log2, self.num_frequencies)

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out"]:
        """Encode one coordinate `x` of shape `(in_size,)`; returns `(out_size,)`."""
        del key
        freqs = jnp.asarray(self.frequencies, dtype=x.dtype)
        angles = (freqs[:, None] * x[None, :]).reshape(-1)
        cos, sin = cos_sin(angles)
        parts = [sin, cos]
        if self.include_input:
            parts.insert(0, x)
        return jnp.concatenate(parts)


class FourierFeatures(AbstractEncoding):
    r"""Gaussian random Fourier features (Tancik et al., 2020).

    $$\gamma(x) = \big[\cos(2\pi B x), \sin(2\pi B x)\big], \qquad
    B_{ij} \sim \mathcal{N}(0, \sigma^2),$$

    with $B$ of shape `(num_features, in_size)` and `out_size = 2 * num_features`.
    A fixed `B` (the default) is stored as a [`sciinr.nn.NonTrainable`][] buffer and
    used through `jax.lax.stop_gradient`; `trainable=True` makes it a parameter.

    ??? cite

        [Fourier Features Let Networks Learn High Frequency Functions in Low
        Dimensional Domains](https://arxiv.org/abs/2006.10739)

        ```bibtex
        @inproceedings{tancik2020fourfeat,
          title={Fourier Features Let Networks Learn High Frequency Functions in
                 Low Dimensional Domains},
          author={Tancik, Matthew and Srinivasan, Pratul P. and Mildenhall, Ben and
                  Fridovich-Keil, Sara and Raghavan, Nithin and Singhal, Utkarsh and
                  Ramamoorthi, Ravi and Barron, Jonathan T. and Ng, Ren},
          booktitle={NeurIPS},
          year={2020}
        }
        ```
    """

    B: Float[Array, "features in"] | NonTrainable
    in_size: int = eqx.field(static=True)
    num_features: int = eqx.field(static=True)
    sigma: float = eqx.field(static=True)
    trainable: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_features: int,
        *,
        sigma: float | int,
        trainable: bool = False,
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the coordinate dimension `d`.
        - `num_features`: the number of rows of `B`; the output has twice as many.
        - `sigma`: the standard deviation of `B`, `> 0`; sets the bandwidth (the paper
          uses `10` for images on `[0, 1)^2`). Keyword-only.
        - `trainable`: whether `B` is trained. Keyword-only. Defaults to `False`
          (Tancik et al.).
        - `dtype`: the dtype of `B`; defaults to JAX's default float.
        - `key`: a JAX PRNG key. Keyword-only.
        """
        self.in_size = check_positive_int("in_size", in_size)
        self.num_features = check_positive_int("num_features", num_features)
        self.sigma = check_real("sigma", sigma, positive=True)
        self.trainable = bool(trainable)
        dtype = jnp.result_type(float) if dtype is None else dtype
        B = self.sigma * jr.normal(key, (num_features, in_size), dtype)
        self.B = B if self.trainable else NonTrainable(B)

    @property
    def out_size(self) -> int:
        return 2 * self.num_features

    @property
    def matrix(self) -> Float[Array, "features in"]:
        """The frequency matrix `B`, shape `(num_features, in_size)`."""
        if isinstance(self.B, NonTrainable):
            return lax.stop_gradient(self.B.value)
        return self.B

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out"]:
        """Encode one coordinate `x` of shape `(in_size,)`; returns `(out_size,)`."""
        del key
        # `x @ B.T` (not `B @ x`): the vmapped product keeps the coordinate axis
        # leading, with no transpose (see `sciinr.nn._linear.affine`).
        angles = (2 * math.pi) * (x @ self.matrix.T)
        return jnp.concatenate(cos_sin(angles))


def encoding_out_size(in_size: int, encoding: AbstractEncoding | None) -> int:
    """The input size of the layers after `encoding`, checked against `in_size`.

    **Raises:**

    `TypeError` if `encoding` is not an [`sciinr.nn.AbstractEncoding`][] (or `None`),
    `ValueError` if its `in_size` differs from `in_size`.
    """
    if encoding is None:
        return in_size
    if not isinstance(encoding, AbstractEncoding):
        raise TypeError(
            "`encoding` must be a `sciinr.nn.AbstractEncoding` (e.g. "
            "`FourierFeatures`, `PositionalEncoding`) or None, got "
            f"{type(encoding).__name__}. To write your own, subclass "
            "`AbstractEncoding`, which declares `in_size` and `out_size`."
        )
    if encoding.in_size != in_size:
        raise ValueError(
            f"`encoding` expects inputs of size {encoding.in_size}, but `in_size` is "
            f"{in_size}."
        )
    return check_positive_int("encoding.out_size", encoding.out_size)
