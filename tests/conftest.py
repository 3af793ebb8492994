import itertools

import jax
import jax.random as jr
import pytest


# Strict numerics for the whole suite (never set on import of the package itself).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """A function that returns a fresh, deterministic PRNG key on every call."""
    counter = itertools.count()
    base = jr.key(5678)
    return lambda: jr.fold_in(base, next(counter))
