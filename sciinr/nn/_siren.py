"""SIREN: sine-activated coordinate networks with their exact initialisation."""

import equinox as eqx
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import (
    check_nonnegative_int,
    check_positive_int,
    check_real,
    resolve_option,
)
from ._field import AbstractField, check_point
from ._init import siren_bound, uniform
from ._linear import (
    affine,
    check_rwf_options,
    FactorizedLinear,
    LinearKind,
    LINEARS,
    make_linear,
    Parameterization,
)
from ._mlp import NormKind
from ._norm import check_norm, make_norm
from ._trig import sin


class Siren(AbstractField):
    r"""A SIREN: an MLP with sine activations and its principled initialisation.

    $$h_0 = x,\quad h_{l} = \sin\big(\omega_0 (W_l h_{l-1} + b_l)\big)\ (l=1..L),
    \quad y = W_{L+1} h_L + b_{L+1}.$$

    Weights are drawn uniformly: $W_1 \sim U(-1/n, 1/n)$ for the first layer and
    $W_l \sim U(-\sqrt{6/n}/\omega_0, \sqrt{6/n}/\omega_0)$ for the others (including
    the linear output layer), where $n$ is the layer's fan-in. Biases follow the
    reference implementation (PyTorch's default, $U(-1/\sqrt n, 1/\sqrt n)$).
    With `linear="rwf"` each layer is the random weight factorization of this
    initialisation ([`sciinr.nn.FactorizedLinear.from_linear`][]), so the function at
    initialisation is unchanged.

    **Normalization** (`norm="batch" | "layer" | "rms"`, for comparing SIREN with
    the normalized ReLU networks of [`sciinr.nn.CoordinateMLP`][]) sits on the
    *argument* of the sine, after the $\omega_0$ scaling, in every hidden layer but
    the first:

    $$h_1 = \sin\big(\omega_0 (W_1 x + b_1)\big),\qquad
    h_l = \sin\Big(N_l\big(\omega_0 (W_l h_{l-1} + b_l)\big)\Big)\ (l = 2..L).$$

    Why there:

    - *After $\omega_0$.* SIREN's initialisation is built so that the argument
      $\omega_0 (W_l h_{l-1} + b_l)$ of a hidden sine has unit variance. A
      normalization with its initial affine ($\gamma = 1$, $\beta = 0$) placed there
      produces the same distribution, so it keeps SIREN's regime; placed before
      $\omega_0$ it would hand the sine arguments of standard deviation $\omega_0 =
      30$ (white noise).
    - *Not the first layer.* The first layer's argument carries the frequencies:
      neuron $k$ oscillates at $\omega_0 \lVert w_k \rVert / 2\pi$ cycles per unit,
      SIREN's built-in Fourier encoding. Normalizing it would rescale every first
      layer neuron to the same low frequency, about one cycle across the domain (and
      [`sciinr.nn.CoordinateMLP`][] does not normalize its encoding either).

    Measured (the `camera` image at 128², Tancik protocol, 4 × 128, Adam $10^{-4}$,
    500 steps, seed 0; test PSNR): plain SIREN 25.5 dB; batch / layer norm placed
    as above 24.7 / 25.0 dB; also normalizing the first layer 18.2 / 22.0 dB;
    normalizing before $\omega_0$ 6.6 / 6.6 dB. The linear layers are drawn from the
    same keys whatever `norm` is, and with `norm=None` the network is exactly
    SIREN.

    ??? cite

        [Implicit Neural Representations with Periodic Activation
        Functions](https://arxiv.org/abs/2006.09661)

        ```bibtex
        @inproceedings{sitzmann2020siren,
          title={Implicit Neural Representations with Periodic Activation Functions},
          author={Sitzmann, Vincent and Martel, Julien N. P. and Bergman, Alexander W.
                  and Lindell, David B. and Wetzstein, Gordon},
          booktitle={NeurIPS},
          year={2020}
        }
        ```
    """

    layers: tuple[eqx.nn.Linear | FactorizedLinear, ...]
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width_size: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    norms: tuple[eqx.Module | None, ...]
    omega0: float = eqx.field(static=True)
    linear: LinearKind = eqx.field(static=True)
    norm: NormKind = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width_size: int,
        depth: int,
        *,
        omega0: float | int = 30.0,
        linear: LinearKind = "dense",
        norm: NormKind = None,
        rwf_mu: float | int = 1.0,
        rwf_sigma: float | int = 0.1,
        rwf_parameterization: Parameterization = "log",
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`, `out_size`, `width_size`, `depth`: as for
          [`sciinr.nn.CoordinateMLP`][]; `depth` counts the sine layers.
        - `omega0`: the frequency factor $\\omega_0 > 0$. Keyword-only. Defaults to
          `30.0` (SIREN paper).
        - `linear`: `"dense"` or `"rwf"`. Keyword-only.
        - `norm`: `None`, `"batch"` ([`sciinr.nn.CoordinateBatchNorm`][]),
          `"layer"` or `"rms"`, on the sine arguments of hidden layers `2 ... depth`
          (see above); needs `depth >= 2`. Keyword-only. Defaults to `None` (SIREN).
        - `rwf_mu`, `rwf_sigma`, `rwf_parameterization`: RWF options for
          `linear="rwf"`. Keyword-only.
        - `dtype`: the parameter dtype; defaults to JAX's default float.
        - `key`: a JAX PRNG key. Keyword-only. Layer `i` is built by
          [`sciinr.nn.make_linear`][] from `jr.split(key, depth + 1)[i]`: with
          `wkey, skey = jr.split(that key)`, the weight and bias are drawn from
          `jr.split(wkey)` and the RWF scales from `skey`. (Norm layers draw no
          randomness.)

        **Raises:**

        `ValueError` for invalid sizes or options, and for a `norm` with
        `depth < 2` (there is no hidden layer after the first to normalize).
        """
        self.in_size = check_positive_int("in_size", in_size)
        self.out_size = check_positive_int("out_size", out_size)
        self.width_size = check_positive_int("width_size", width_size)
        self.depth = check_nonnegative_int("depth", depth)
        self.omega0 = check_real("omega0", omega0, positive=True)
        self.linear = resolve_option("linear", linear, LINEARS)
        check_norm(norm)
        if norm is not None and self.depth < 2:
            raise ValueError(
                f"`norm={norm!r}` needs `depth >= 2`, got depth={self.depth}: SIREN's "
                "first sine layer (its frequency encoding) is never normalized, so a "
                "shallower SIREN has no layer to normalize. Use `norm=None`."
            )
        self.norm = norm
        check_rwf_options(rwf_mu, rwf_sigma, rwf_parameterization, prefix="rwf_")
        sizes = [in_size] + [width_size] * depth + [out_size]
        keys = jr.split(key, depth + 1)
        self.layers = tuple(
            make_linear(
                linear,
                n_in,
                n_out,
                init=_siren_init(self.omega0, first=i == 0),
                rwf_mu=rwf_mu,
                rwf_sigma=rwf_sigma,
                rwf_parameterization=rwf_parameterization,
                dtype=dtype,
                key=k,
            )
            for i, (n_in, n_out, k) in enumerate(zip(sizes[:-1], sizes[1:], keys))
        )
        self.norms = tuple(
            None if i == 0 else make_norm(norm, width_size, dtype) for i in range(depth)
        )

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " m"]:
        """Evaluate the SIREN at one coordinate `x` of shape `(in_size,)`.

        **Returns:**

        The value, shape `(out_size,)`.

        **Raises:**

        `ValueError` for a `norm="batch"` SIREN called outside
        [`sciinr.nn.apply`][] before [`sciinr.nn.freeze_statistics`][].
        """
        del key
        check_point(x, self.in_size)
        h = x
        for layer, norm in zip(self.layers[:-1], self.norms):
            z = self.omega0 * affine(layer, h)
            if norm is not None:
                z = norm(z)
            h = sin(z)
        return affine(self.layers[-1], h)


def _siren_init(omega0: float, *, first: bool):
    """SIREN's initialiser for [`sciinr.nn.make_linear`][]: uniform weight (bound
    `siren_bound`) and PyTorch's default uniform bias, from `jr.split(key)`."""

    def init(key, shape, dtype):
        n_out, n_in = shape
        wkey, bkey = jr.split(key)
        weight = uniform(wkey, shape, siren_bound(n_in, omega0, first=first), dtype)
        bias = uniform(bkey, (n_out,), 1.0 / float(np.sqrt(n_in)), dtype)
        return weight, bias

    return init
