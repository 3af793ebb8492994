"""SIREN: sine-activated coordinate networks with their exact initialisation."""

import equinox as eqx
import jax.numpy as jnp
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
    omega0: float = eqx.field(static=True)
    linear: LinearKind = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width_size: int,
        depth: int,
        *,
        omega0: float | int = 30.0,
        linear: LinearKind = "dense",
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
        - `rwf_mu`, `rwf_sigma`, `rwf_parameterization`: RWF options for
          `linear="rwf"`. Keyword-only.
        - `dtype`: the parameter dtype; defaults to JAX's default float.
        - `key`: a JAX PRNG key. Keyword-only. Layer `i` is built by
          [`sciinr.nn.make_linear`][] from `jr.split(key, depth + 1)[i]`: with
          `wkey, skey = jr.split(that key)`, the weight and bias are drawn from
          `jr.split(wkey)` and the RWF scales from `skey`.
        """
        self.in_size = check_positive_int("in_size", in_size)
        self.out_size = check_positive_int("out_size", out_size)
        self.width_size = check_positive_int("width_size", width_size)
        self.depth = check_nonnegative_int("depth", depth)
        self.omega0 = check_real("omega0", omega0, positive=True)
        self.linear = resolve_option("linear", linear, LINEARS)
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

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " m"]:
        """Evaluate the SIREN at one coordinate `x` of shape `(in_size,)`."""
        del key
        check_point(x, self.in_size)
        h = x
        for layer in self.layers[:-1]:
            h = jnp.sin(self.omega0 * affine(layer, h))
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
