"""Random weight factorization (RWF): a drop-in replacement for `eqx.nn.Linear`."""

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import check_positive_int, check_real, resolve_option
from ._init import glorot_normal


Parameterization = Literal["log", "scale"]
_PARAMETERIZATIONS = {"log": "log", "scale": "scale"}

LinearKind = Literal["dense", "rwf"]
LINEARS: dict[str, str] = {"dense": "dense", "rwf": "rwf"}
"""The linear layer kinds accepted by `linear=`: `"dense"` and `"rwf"`."""


def check_rwf_options(
    mu: Any, sigma: Any, parameterization: Any, *, prefix: str = ""
) -> tuple[float, float, Parameterization]:
    """Validate RWF options; error messages use the caller's argument names."""
    return (
        check_real(f"{prefix}mu", mu),
        check_real(f"{prefix}sigma", sigma, nonnegative=True),
        resolve_option(
            f"{prefix}parameterization", parameterization, _PARAMETERIZATIONS
        ),
    )


def affine(layer: "eqx.nn.Linear | FactorizedLinear", x: Array) -> Array:
    """`layer(x)` for a vector `x`, written as `x @ weight.T + bias`.

    Mathematically `weight @ x + bias`; written with `x` on the left so that, once
    vmapped over coordinates, the batched product is `xs @ weight.T` with the
    coordinate axis leading, which XLA lays out without transposes (measured about
    8 % more training throughput on CPU than `weight @ x`, the form of
    `eqx.nn.Linear.__call__`). Fields call their layers through this.
    """
    y = x @ layer.weight.T
    if layer.bias is not None:
        y = y + layer.bias
    return y


def glorot_init(
    key: PRNGKeyArray, shape: tuple[int, int], dtype
) -> tuple[Float[Array, "out in"], Float[Array, " out"]]:
    """The default initialiser of [`sciinr.nn.make_linear`][]: a Glorot-normal weight
    of `shape = (out, in)` drawn from `key`, and a zero bias."""
    return glorot_normal(key, shape, dtype), jnp.zeros(shape[:1], dtype)


def _linear_from_arrays(
    weight: Float[Array, "out in"], bias: Float[Array, " out"] | None
) -> eqx.nn.Linear:
    """An `eqx.nn.Linear` holding `weight` and `bias`, without drawing anything."""
    out_features, in_features = weight.shape
    skeleton = eqx.filter_eval_shape(
        eqx.nn.Linear,
        in_features,
        out_features,
        bias is not None,
        weight.dtype,
        key=jr.key(0),
    )
    if bias is None:
        return eqx.tree_at(lambda l: l.weight, skeleton, weight)
    return eqx.tree_at(lambda l: (l.weight, l.bias), skeleton, (weight, bias))


def glorot_linear(
    in_features: int,
    out_features: int,
    use_bias: bool = True,
    dtype=None,
    *,
    key: PRNGKeyArray,
) -> eqx.nn.Linear:
    """An `eqx.nn.Linear` with Glorot-normal weight and zero bias.

    The weight is drawn from `jr.split(key)[0]`, the sub-key that
    [`sciinr.nn.FactorizedLinear`][] uses for its effective weight, so both layers
    built from one `key` compute the same function at initialisation.
    """
    check_positive_int("in_features", in_features)
    check_positive_int("out_features", out_features)
    dtype = jnp.result_type(float) if dtype is None else dtype
    wkey, _ = jr.split(key)
    weight, bias = glorot_init(wkey, (out_features, in_features), dtype)
    return _linear_from_arrays(weight, bias if use_bias else None)


class FactorizedLinear(eqx.Module):
    r"""A linear layer with random weight factorization (RWF).

    Each output neuron's weight row is factorized into a trainable scale and a
    direction,

    $$W = \operatorname{diag}(\exp(s))\, V, \qquad y = W x + b,$$

    initialised from a Glorot-normal draw $W_0$: per-neuron log-scales
    $s \sim \mathcal{N}(\mu, \sigma^2)$ and $V = \operatorname{diag}(\exp(-s))\, W_0$,
    so that at initialisation the effective weight equals $W_0$ and the layer computes
    the same function as the dense layer of [`sciinr.nn.glorot_linear`][] built from
    the same key. Training $s$ and $V$ instead of $W$ gives each neuron its own
    self-adaptive learning rate and mitigates spectral bias (Wang et al., 2022).

    Two parameterizations of the scale are offered:

    - `"log"` (default; the paper's Algorithm 1): the trainable array is the log-scale
      `s`, the forward pass uses `exp(s)`.
    - `"scale"` (the `jaxpi` reference code): the trainable array is `g = exp(s)`
      itself.

    The weight layout is `(out, in)`, as for `eqx.nn.Linear`.

    ??? cite

        [Random Weight Factorization Improves the Training of Continuous Neural
        Representations](https://arxiv.org/abs/2210.01274)

        ```bibtex
        @article{wang2022random,
          title={Random Weight Factorization Improves the Training of Continuous
                 Neural Representations},
          author={Wang, Sifan and Wang, Hanwen and Seidman, Jacob H. and
                  Perdikaris, Paris},
          journal={arXiv preprint arXiv:2210.01274},
          year={2022}
        }
        ```
    """

    v: Float[Array, "out in"]
    s: Float[Array, " out"] | None
    g: Float[Array, " out"] | None
    bias: Float[Array, " out"] | None
    in_features: int = eqx.field(static=True)
    out_features: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    parameterization: Parameterization = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        use_bias: bool = True,
        dtype=None,
        *,
        mu: float | int = 1.0,
        sigma: float | int = 0.1,
        parameterization: Parameterization = "log",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_features`: the input size.
        - `out_features`: the output size (number of neurons).
        - `use_bias`: whether to add a bias (initialised to zero).
        - `dtype`: the dtype of the parameters; defaults to JAX's default float.
        - `mu`: mean of the log-scales $s$. Keyword-only. Defaults to `1.0` (RWF paper,
          Section 3; Appendix recommends $\\mu \\in [0.5, 1]$).
        - `sigma`: standard deviation of the log-scales, `>= 0`. Keyword-only.
          Defaults to `0.1` (RWF paper).
        - `parameterization`: `"log"` (train `s`) or `"scale"` (train `g = exp(s)`).
          Keyword-only.
        - `key`: a JAX PRNG key. Keyword-only. Split as `wkey, skey = jr.split(key)`;
          `wkey` draws the Glorot weight exactly as [`sciinr.nn.glorot_linear`][].
        """
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        mu, sigma, parameterization = check_rwf_options(mu, sigma, parameterization)
        dtype = jnp.result_type(float) if dtype is None else dtype
        wkey, skey = jr.split(key)
        weight = glorot_normal(wkey, (out_features, in_features), dtype)
        s = _log_scales(skey, out_features, mu, sigma, dtype)
        scale = jnp.exp(s)
        self.v = weight / scale[:, None]
        self.s = s if parameterization == "log" else None
        self.g = scale if parameterization == "scale" else None
        self.bias = jnp.zeros((out_features,), dtype) if use_bias else None
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.parameterization = parameterization

    @property
    def scale(self) -> Float[Array, " out"]:
        """The per-neuron scale `exp(s)` (or `g`)."""
        if self.parameterization == "log":
            assert self.s is not None
            return jnp.exp(self.s)
        assert self.g is not None
        return self.g

    @property
    def weight(self) -> Float[Array, "out in"]:
        """The effective weight matrix `exp(s)[:, None] * v`, shape `(out, in)`."""
        return self.scale[:, None] * self.v

    def __call__(
        self, x: Float[Array, " in"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out"]:
        """**Arguments:**

        - `x`: the input, shape `(in_features,)`.
        - `key`: ignored; accepted for compatibility with `eqx.nn.Sequential`.

        **Returns:**

        `weight @ x + bias`, shape `(out_features,)`.
        """
        del key
        return affine(self, x)

    @classmethod
    def from_linear(
        cls,
        linear: eqx.nn.Linear,
        *,
        mu: float | int = 1.0,
        sigma: float | int = 0.1,
        parameterization: Parameterization = "log",
        key: PRNGKeyArray,
    ) -> "FactorizedLinear":
        """Factorize an existing `eqx.nn.Linear` (e.g. a pretrained layer).

        The log-scales are drawn as in `__init__` (from the second half of
        `jr.split(key)`), `v = weight / exp(s)` and the bias is copied, so the
        returned layer computes the same function as `linear`.

        **Arguments:**

        - `linear`: an `eqx.nn.Linear` with vector input and output.
        - `mu`, `sigma`, `parameterization`, `key`: as for `__init__`.
        """
        if not isinstance(linear, eqx.nn.Linear):
            raise TypeError(
                f"`linear` must be an `eqx.nn.Linear`, got {type(linear).__name__}."
            )
        if linear.in_features == "scalar" or linear.out_features == "scalar":
            raise ValueError(
                "`linear` must map vectors to vectors; `'scalar'` sizes are not "
                "supported."
            )
        mu, sigma, parameterization = check_rwf_options(mu, sigma, parameterization)
        weight = linear.weight
        _, skey = jr.split(key)
        s = _log_scales(skey, linear.out_features, mu, sigma, weight.dtype)
        skeleton = eqx.filter_eval_shape(
            cls,
            linear.in_features,
            linear.out_features,
            linear.use_bias,
            weight.dtype,
            parameterization=parameterization,
            key=jr.key(0),
        )
        scale = jnp.exp(s)
        arrays = {
            "v": weight / scale[:, None],
            "s": s if parameterization == "log" else None,
            "g": scale if parameterization == "scale" else None,
            "bias": linear.bias if linear.use_bias else None,
        }
        names = [name for name, value in arrays.items() if value is not None]
        return eqx.tree_at(
            lambda l: tuple(getattr(l, name) for name in names),
            skeleton,
            tuple(arrays[name] for name in names),
        )


def _log_scales(key: PRNGKeyArray, n: int, mu: float, sigma: float, dtype) -> Array:
    """Per-neuron log-scales `s ~ N(mu, sigma^2)`, shape `(n,)`."""
    return mu + sigma * jr.normal(key, (n,), dtype)


Initialiser = Callable[[PRNGKeyArray, tuple[int, int], Any], tuple[Array, Array | None]]


def make_linear(
    linear: LinearKind,
    in_features: int,
    out_features: int,
    *,
    init: Initialiser = glorot_init,
    use_bias: bool = True,
    rwf_mu: float | int = 1.0,
    rwf_sigma: float | int = 0.1,
    rwf_parameterization: Parameterization = "log",
    dtype=None,
    key: PRNGKeyArray,
) -> eqx.nn.Linear | FactorizedLinear:
    """Build a dense or RWF linear layer by name: the one place every field uses.

    The initial (effective) weight and bias come from `init(wkey, (out, in), dtype)`
    with `wkey, skey = jr.split(key)`; `linear="rwf"` factorizes them with log-scales
    drawn from `skey` ([`sciinr.nn.FactorizedLinear.from_linear`][]), so the dense and
    the RWF layer built from one `key` are the same function at initialisation. With
    the default `init` this is exactly `glorot_linear(..., key=key)` or
    `FactorizedLinear(..., key=key)`.

    **Arguments:**

    - `linear`: `"dense"` (`eqx.nn.Linear`) or `"rwf"`
      ([`sciinr.nn.FactorizedLinear`][]).
    - `in_features`, `out_features`: the layer sizes.
    - `init`: the initialiser, a function `(key, (out, in), dtype) -> (weight, bias)`.
      Keyword-only. Defaults to Glorot-normal weights and zero bias.
    - `use_bias`: whether the layer has a bias. Keyword-only.
    - `rwf_mu`, `rwf_sigma`, `rwf_parameterization`: the RWF options (see
      [`sciinr.nn.FactorizedLinear`][]), used when `linear="rwf"`. Keyword-only.
    - `dtype`: the parameter dtype; defaults to JAX's default float.
    - `key`: a JAX PRNG key. Keyword-only.

    **Raises:**

    `ValueError` naming the argument for an unknown `linear` or invalid RWF options.
    """
    kind = resolve_option("linear", linear, LINEARS)
    mu, sigma, parameterization = check_rwf_options(
        rwf_mu, rwf_sigma, rwf_parameterization, prefix="rwf_"
    )
    check_positive_int("in_features", in_features)
    check_positive_int("out_features", out_features)
    dtype = jnp.result_type(float) if dtype is None else dtype
    wkey, _ = jr.split(key)
    weight, bias = init(wkey, (out_features, in_features), dtype)
    dense = _linear_from_arrays(weight, bias if use_bias else None)
    if kind == "dense":
        return dense
    return FactorizedLinear.from_linear(
        dense, mu=mu, sigma=sigma, parameterization=parameterization, key=key
    )
