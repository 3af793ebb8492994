"""The generic coordinate MLP: encoding -> [linear -> norm -> act]* -> linear."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import (
    check_nonnegative_int,
    check_positive_int,
    resolve_callable,
    resolve_option,
)
from ._activation import ACTIVATIONS
from ._encoding import AbstractEncoding, encoding_out_size
from ._field import AbstractField, check_point
from ._linear import (
    affine,
    check_rwf_options,
    FactorizedLinear,
    LinearKind,
    LINEARS,
    make_linear,
    Parameterization,
)
from ._norm import check_norm, make_norm


NormKind = Literal["batch", "layer", "rms"] | None


class CoordinateMLP(AbstractField):
    r"""The generic coordinate network (a *field*).

    $$x \mapsto \gamma(x) \to \big[\text{linear} \to \text{norm} \to
    \sigma\big]^{\text{depth}} \to \text{linear} \to \sigma_{\text{out}}$$

    - `encoding` $\gamma$: `None`, [`sciinr.nn.PositionalEncoding`][],
      [`sciinr.nn.FourierFeatures`][] or any [`sciinr.nn.AbstractEncoding`][].
    - `linear`: `"dense"` (Glorot-normal weights, zero bias) or `"rwf"`
      ([`sciinr.nn.FactorizedLinear`][], random weight factorization). Both draw their
      (effective) weights from the same keys, so the two choices built from one `key`
      are the same function at initialisation.
    - `norm`: `None`, `"batch"` ([`sciinr.nn.CoordinateBatchNorm`][], statistics over
      the coordinates of the batch), `"layer"` (`eqx.nn.LayerNorm`) or `"rms"`
      (`eqx.nn.RMSNorm`), placed between each hidden linear layer and its activation
      and not after the output layer (Zhang's Norm-INR).
    - `activation`: any callable (e.g. `jax.nn.relu`, `jnp.tanh`, `jax.nn.gelu`,
      `jnp.sin`), or one of the names in `sciinr.nn.ACTIVATIONS`.

    ??? cite

        Random weight factorization: [Wang et al. 2022](https://arxiv.org/abs/2210.01274);
        normalization in coordinate networks: [Zhang, Norm-INR](https://github.com/Aiolus-X/Norm-INR).

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

    encoding: AbstractEncoding | None
    layers: tuple[eqx.nn.Linear | FactorizedLinear, ...]
    norms: tuple[eqx.Module | None, ...]
    activation: Callable
    final_activation: Callable | None
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width_size: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    linear: LinearKind = eqx.field(static=True)
    norm: NormKind = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width_size: int,
        depth: int,
        *,
        encoding: AbstractEncoding | None = None,
        activation: Callable | str = jax.nn.relu,
        linear: LinearKind = "dense",
        norm: NormKind = None,
        final_activation: Callable | str | None = None,
        rwf_mu: float | int = 1.0,
        rwf_sigma: float | int = 0.1,
        rwf_parameterization: Parameterization = "log",
        dtype=None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the coordinate dimension `d`.
        - `out_size`: the number of output channels `m`.
        - `width_size`: the width of every hidden layer.
        - `depth`: the number of hidden layers (`0` gives one linear layer), as in
          `eqx.nn.MLP`.
        - `encoding`: an input encoding, or `None`. Keyword-only.
        - `activation`: hidden activation. Keyword-only. Defaults to `jax.nn.relu`.
        - `linear`: `"dense"` or `"rwf"`. Keyword-only.
        - `norm`: `None`, `"batch"`, `"layer"` or `"rms"`. Keyword-only.
        - `final_activation`: applied to the output, or `None`. Keyword-only.
        - `rwf_mu`, `rwf_sigma`, `rwf_parameterization`: the RWF options, used when
          `linear="rwf"`. Keyword-only. Default to `1.0`, `0.1`, `"log"` (RWF paper).
        - `dtype`: the parameter dtype; defaults to JAX's default float.
        - `key`: a JAX PRNG key. Keyword-only. Layer `i` is built from
          `jr.split(key, depth + 1)[i]`.
        """
        self.in_size = check_positive_int("in_size", in_size)
        self.out_size = check_positive_int("out_size", out_size)
        self.width_size = check_positive_int("width_size", width_size)
        self.depth = check_nonnegative_int("depth", depth)
        resolve_option("linear", linear, LINEARS)
        check_norm(norm)
        check_rwf_options(rwf_mu, rwf_sigma, rwf_parameterization, prefix="rwf_")
        self.linear = linear
        self.norm = norm
        self.activation = resolve_callable("activation", activation, ACTIVATIONS)
        self.final_activation = (
            None
            if final_activation is None
            else resolve_callable("final_activation", final_activation, ACTIVATIONS)
        )
        self.encoding = encoding
        first = encoding_out_size(in_size, encoding)
        sizes = [first] + [width_size] * depth + [out_size]
        keys = jr.split(key, depth + 1)
        self.layers = tuple(
            make_linear(
                linear,
                n_in,
                n_out,
                rwf_mu=rwf_mu,
                rwf_sigma=rwf_sigma,
                rwf_parameterization=rwf_parameterization,
                dtype=dtype,
                key=k,
            )
            for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys)
        )
        self.norms = tuple(make_norm(norm, width_size, dtype) for _ in range(depth))

    def __call__(
        self, x: Float[Array, " d"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " m"]:
        """Evaluate the field at one coordinate `x` of shape `(in_size,)`.

        **Returns:**

        The value, shape `(out_size,)`.
        """
        del key
        check_point(x, self.in_size)
        h = x if self.encoding is None else self.encoding(x)
        for layer, norm in zip(self.layers[:-1], self.norms):
            h = affine(layer, h)
            if norm is not None:
                h = norm(h)
            h = self.activation(h)
        h = affine(self.layers[-1], h)
        if self.final_activation is not None:
            h = self.final_activation(h)
        return h
