"""Generated operator datasets: input functions, solver targets, dropped blow-ups,
the cache."""

import dataclasses
import pathlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from . import _cache
from ._grf import gaussian_random_field
from ._solvers import BLOWUP


GENERATOR_VERSION = 2
"""Part of every cache key: bump it when a change alters generated data."""

_MAX_ROUNDS = 20


class DroppedSamplesWarning(UserWarning):
    """Some sampled input functions made the solver blow up and were replaced."""


@dataclasses.dataclass(frozen=True)
class InputSpace:
    """Gaussian random fields on a fine equispaced grid of [0, 1]."""

    length_scale: float
    kernel: str
    variance: float
    resolution: int

    def sample(self, key: PRNGKeyArray, n: int) -> jax.Array:
        return gaussian_random_field(
            key,
            n,
            self.resolution,
            length_scale=self.length_scale,
            kernel=self.kernel,
            variance=self.variance,
        )

    def as_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Solver = Callable[[jax.Array, PRNGKeyArray], tuple[dict[str, jax.Array], jax.Array]]
"""`(inputs, key) -> (arrays, ok)`: targets (and per-function points) for the input
functions' fine-grid values, and which solves succeeded."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The arrays of a generated dataset (NumPy, on the host) and its report."""

    arrays: dict[str, np.ndarray]
    dropped: int
    parameters: dict[str, Any]
    path: pathlib.Path | None
    from_cache: bool


def key_parameters(key: PRNGKeyArray) -> dict[str, Any]:
    """A JSON description of a PRNG key (its implementation and raw data)."""
    return {
        "impl": str(jr.key_impl(key)),
        "data": np.asarray(jr.key_data(key)).tolist(),
    }


def generate(
    name: str,
    parameters: Mapping[str, Any],
    space: InputSpace,
    n_functions: int,
    key: PRNGKeyArray,
    solver: Solver | None,
    cache: pathlib.Path | None,
    stacklevel: int = 3,
) -> Dataset:
    """Draw `n_functions` input functions and solve for their targets, or read them
    from the cache.

    Functions whose solve blows up are dropped and replaced by fresh draws (round
    `r` draws from `jr.fold_in(key, r)`), and their number is reported with a
    `DroppedSamplesWarning` (attributed `stacklevel` frames up: the user's call of
    the problem's constructor). `solver=None` draws input functions only (the
    physics-informed training set).
    """
    dtype = jnp.result_type(float)
    parameters = {
        **parameters,
        "operator": name,
        "version": GENERATOR_VERSION,
        "n_functions": n_functions,
        "inputs": space.as_config(),
        "key": key_parameters(key),
        "targets": solver is not None,
        "dtype": np.dtype(dtype).name,
    }
    path = None if cache is None else _cache.cache_path(cache, name, parameters)
    if path is not None:
        found = _cache.load(path, parameters)
        if found is not None:
            arrays, info = found
            return Dataset(arrays, int(info["dropped"]), parameters, path, True)

    kept: list[dict[str, jax.Array]] = []
    have, dropped = 0, 0
    for round_ in range(_MAX_ROUNDS):
        input_key, solver_key = jr.split(jr.fold_in(key, round_))
        missing = n_functions - have
        # Replacement rounds draw a power of two (at least 256, at most the whole
        # set), so that they reuse a few compiled shapes; extra solutions are cut.
        n_draw = (
            missing
            if round_ == 0
            else min(n_functions, max(256, 1 << (missing - 1).bit_length()))
        )
        inputs = space.sample(input_key, n_draw)
        if solver is None:
            kept.append({"inputs": inputs})
            have = n_functions
            break
        arrays, ok = solver(inputs, solver_key)
        ok = np.asarray(ok)
        index = np.flatnonzero(ok)[:missing]
        # Blow-ups among the draws up to the last one kept (later draws are unused).
        examined = len(ok) if len(index) < missing else int(index[-1]) + 1
        dropped += int((~ok[:examined]).sum())
        kept.append(
            {"inputs": inputs[index], **{k: v[index] for k, v in arrays.items()}}
        )
        have += len(index)
        if have == n_functions:
            break
    else:
        raise RuntimeError(
            f"{name}: after {_MAX_ROUNDS} rounds of sampling, {dropped} input "
            f"functions had blown up and only {have} of {n_functions} solved. Use "
            "smaller input functions (a smaller `variance` or a larger "
            "`length_scale`)."
        )
    arrays = {
        k: np.concatenate([np.asarray(part[k]) for part in kept]) for k in kept[0]
    }
    if dropped:
        warnings.warn(
            f"{name}: the solver blew up for {dropped} sampled input function(s) "
            f"(non-finite values or |s| > {BLOWUP:g} (1 + max |u|)); they were dropped "
            "and replaced "
            f"by fresh draws, so the dataset still has {n_functions} functions.",
            DroppedSamplesWarning,
            stacklevel=stacklevel,
        )
    if path is not None:
        _cache.store(path, parameters, arrays, {"dropped": dropped})
    return Dataset(arrays, dropped, parameters, path, False)
