"""Periodic embedding: exact periodicity in chosen coordinate directions."""

import math
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import check_positive_int, check_real
from ._encoding import AbstractEncoding
from ._trainable import NonTrainable


def _check_periods(
    in_size: int, periods: Sequence[float | None] | Mapping[int, float]
) -> dict[int, float]:
    """`{axis: period}` for the periodic axes, validated."""
    if isinstance(periods, Mapping):
        items = list(periods.items())
        for axis, _ in items:
            if isinstance(axis, bool) or not isinstance(axis, int):
                raise TypeError(
                    f"The keys of `periods` must be axes (ints), got {axis!r}."
                )
            if not 0 <= axis < in_size:
                raise ValueError(
                    f"`periods` names axis {axis}, but points have {in_size} "
                    f"coordinate(s) (axes 0 ... {in_size - 1})."
                )
    else:
        try:
            entries = list(periods)
        except TypeError:
            raise TypeError(
                "`periods` must be a sequence with one period (or None) per axis, "
                f"or a mapping {{axis: period}}, got {type(periods).__name__}."
            ) from None
        if len(entries) != in_size:
            raise ValueError(
                f"`periods` must have one entry per axis ({in_size}), got "
                f"{len(entries)}: {entries!r}. Use None for the non-periodic axes."
            )
        items = [(axis, p) for axis, p in enumerate(entries) if p is not None]
    out = {
        axis: check_real(f"periods[{axis}]", period, positive=True)
        for axis, period in sorted(items)
    }
    if not out:
        raise ValueError(
            "`periods` must make at least one axis periodic, got none (all None)."
        )
    return out


class PeriodicEmbedding(AbstractEncoding):
    r"""Embed chosen coordinates on circles, so the field is exactly periodic there.

    For each periodic axis $i$ with period $P_i$ and $k = 1 \dots K$ harmonics,

    $$x_i \mapsto \big[\cos(k\,\omega_i x_i),\ \sin(k\,\omega_i x_i)\big]_{k},
    \qquad \omega_i = 2\pi / P_i,$$

    while the other axes pass through unchanged. The output is ordered
    `[non-periodic x_j, cos(all periodic, all k), sin(...)]`, of size
    `in_size - p + 2 K p` for `p` periodic axes. Any field built on it is periodic in
    $x_i$ with period $P_i$, to all orders of derivatives, so a PINN needs no
    periodic boundary loss (Dong & Ni 2021; the periodic embedding of the jaxpi
    guide).

    An optional `encoding` (e.g. [`sciinr.nn.FourierFeatures`][]) is applied to the
    embedded coordinate, as in jaxpi; its `in_size` must be the embedding's size.

    With `trainable=True` (or per axis), the frequencies $\omega_i$ are parameters
    (jaxpi's advection example trains a periodic embedding of time); a trained
    frequency no longer pins the period to $P_i$.

    ```python
    # u(t, x), periodic in x on [-1, 1] (period 2), then Fourier features.
    periodic = PeriodicEmbedding(2, (None, 2.0))        # (t, cos pi x, sin pi x)
    features = FourierFeatures(periodic.size, 128, sigma=1.0, key=key)
    encoding = PeriodicEmbedding(2, (None, 2.0), encoding=features)
    field = CoordinateMLP(2, 1, 256, 4, encoding=encoding, activation=jnp.tanh, key=k)
    ```

    ??? cite

        [A method for representing periodic functions and enforcing exactly periodic
        boundary conditions with deep neural networks](https://arxiv.org/abs/2007.07442),
        and [An Expert's Guide to Training Physics-informed Neural
        Networks](https://arxiv.org/abs/2308.08468) (jaxpi).

        ```bibtex
        @article{dong2021method,
          title={A method for representing periodic functions and enforcing exactly
                 periodic boundary conditions with deep neural networks},
          author={Dong, Suchuan and Ni, Naxian},
          journal={Journal of Computational Physics},
          volume={435},
          pages={110242},
          year={2021}
        }
        @article{wang2023expert,
          title={An Expert's Guide to Training Physics-informed Neural Networks},
          author={Wang, Sifan and Sankaran, Shyam and Wang, Hanwen and
                  Perdikaris, Paris},
          journal={arXiv preprint arXiv:2308.08468},
          year={2023}
        }
        ```
    """

    fixed_omega: NonTrainable | None
    trainable_omega: Float[Array, " q"] | None
    encoding: AbstractEncoding | None
    in_size: int = eqx.field(static=True)
    periods: tuple[tuple[int, float], ...] = eqx.field(static=True)
    trainable_axes: tuple[int, ...] = eqx.field(static=True)
    harmonics: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        periods: Sequence[float | None] | Mapping[int, float],
        *,
        harmonics: int = 1,
        trainable: bool | Sequence[bool] = False,
        encoding: AbstractEncoding | None = None,
        dtype=None,
    ):
        """**Arguments:**

        - `in_size`: the coordinate dimension `d`.
        - `periods`: one period $P_i > 0$ per axis, `None` for the non-periodic axes
          (e.g. `(None, 2.0)` for `(t, x)` periodic in `x` on `[-1, 1]`), or a
          mapping `{axis: period}`.
        - `harmonics`: the number $K$ of harmonics per periodic axis. Keyword-only.
          Defaults to `1`.
        - `trainable`: whether the frequencies are trained: one bool, or one per
          periodic axis (in axis order). Keyword-only. Defaults to `False`.
        - `encoding`: an encoding applied to the embedded coordinate (its `in_size`
          must equal `size`), or `None`. Keyword-only.
        - `dtype`: the dtype of the frequencies; defaults to JAX's default float.

        **Raises:**

        `ValueError`/`TypeError` naming the argument for no periodic axis, a
        non-positive or non-finite period, a `periods` of the wrong length, a
        `trainable` of the wrong length, or an `encoding` of the wrong `in_size`.
        """
        self.in_size = check_positive_int("in_size", in_size)
        found = _check_periods(self.in_size, periods)
        self.periods = tuple(found.items())
        self.harmonics = check_positive_int("harmonics", harmonics)
        axes = list(found)
        if isinstance(trainable, bool):
            flags = [trainable] * len(axes)
        else:
            flags = [bool(flag) for flag in trainable]
            if len(flags) != len(axes):
                raise ValueError(
                    f"`trainable` must be one bool or one per periodic axis "
                    f"({len(axes)}: axes {axes}), got {len(flags)}."
                )
        self.trainable_axes = tuple(a for a, flag in zip(axes, flags) if flag)
        dtype = jnp.result_type(float) if dtype is None else dtype
        omega = {a: 2 * math.pi / p for a, p in found.items()}
        fixed = [omega[a] for a in axes if a not in self.trainable_axes]
        learned = [omega[a] for a in self.trainable_axes]
        self.fixed_omega = NonTrainable(jnp.asarray(fixed, dtype)) if fixed else None
        self.trainable_omega = jnp.asarray(learned, dtype) if learned else None
        if encoding is not None:
            if not isinstance(encoding, AbstractEncoding):
                raise TypeError(
                    "`encoding` must be a `sciinr.nn.AbstractEncoding` or None, got "
                    f"{type(encoding).__name__}."
                )
            if encoding.in_size != self.size:
                raise ValueError(
                    f"`encoding` expects inputs of size {encoding.in_size}, but the "
                    f"periodic embedding has size {self.size} ({self.in_size} "
                    f"coordinates, {len(axes)} periodic, {self.harmonics} "
                    f"harmonic(s)). Build it with `in_size={self.size}`."
                )
        self.encoding = encoding

    @property
    def size(self) -> int:
        """The size of the embedded coordinate (before `encoding`)."""
        p = len(self.periods)
        return self.in_size - p + 2 * self.harmonics * p

    @property
    def out_size(self) -> int:
        return self.size if self.encoding is None else self.encoding.out_size

    @property
    def omega(self) -> Float[Array, " p"]:
        """The angular frequencies $2\\pi / P_i$ of the periodic axes, in axis
        order."""
        fixed = iter(
            []
            if self.fixed_omega is None
            else lax.stop_gradient(self.fixed_omega.value)
        )
        learned = iter([] if self.trainable_omega is None else self.trainable_omega)
        return jnp.stack(
            [
                next(learned) if axis in self.trainable_axes else next(fixed)
                for axis, _ in self.periods
            ]
        )

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out"]:
        """Embed one coordinate `x` of shape `(in_size,)`; returns `(out_size,)`."""
        if x.shape != (self.in_size,):
            raise ValueError(
                f"`x` must have shape ({self.in_size},), got {x.shape}. To embed a "
                "batch of coordinates use `jax.vmap` or `sciinr.nn.apply`."
            )
        axes = [axis for axis, _ in self.periods]
        rest = [i for i in range(self.in_size) if i not in axes]
        k = jnp.arange(1, self.harmonics + 1, dtype=x.dtype)
        angles = (self.omega.astype(x.dtype)[:, None] * k[None, :]) * x[
            jnp.asarray(axes)
        ][:, None]
        angles = angles.reshape(-1)
        rest = x[jnp.asarray(rest, dtype=jnp.int32)]
        h = jnp.concatenate([rest, jnp.cos(angles), jnp.sin(angles)])
        return h if self.encoding is None else self.encoding(h, key=key)
