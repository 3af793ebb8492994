"""Tests for the batched call: `apply` over input pytrees and in chunks, the
functional `freeze_statistics` (inner vmap, scan over layers, pytree inputs), and the
grid helper `sciinr.grid`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr
import sciinr.nn as snn


jit_apply = eqx.filter_jit(snn.apply, donate="none")


def _mlp(key, norm=None, width=16):
    return snn.CoordinateMLP(2, 3, width, 2, activation=jnp.tanh, norm=norm, key=key)


# -- grid -----------------------------------------------------------------------------


def test_grid_pixel_convention():
    coords, (x, y) = sciinr.grid((4, 2))
    np.testing.assert_array_equal(x, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(y, [0.0, 0.5])
    # Row-major: the last axis varies fastest, so `values.reshape(4, 2, m)` is the grid.
    expected = np.array([[i / 4, j / 2] for i in range(4) for j in range(2)])
    np.testing.assert_array_equal(coords, expected)
    # On a domain: pixel i of N over [a, b) at a + (b - a) i / N.
    _, (t, s) = sciinr.grid((5, 3), [(-1.0, 1.0), (2.0, 5.0)])
    np.testing.assert_allclose(t, -1 + 2 * np.arange(5) / 5, rtol=1e-6)
    np.testing.assert_allclose(s, 2 + 3 * np.arange(3) / 3, rtol=1e-6)
    # Closed intervals for reference grids.
    coords, (u,) = sciinr.grid((3,), [(0.0, 2.0)], endpoint=True)
    np.testing.assert_array_equal(u, [0.0, 1.0, 2.0])
    assert coords.shape == (3, 1)


def test_grid_matches_image_regression():
    from problems.image import ImageRegression

    problem = ImageRegression(np.linspace(0, 1, 64).reshape(8, 8), protocol="fit")
    coords, _ = sciinr.grid((8, 8))
    np.testing.assert_array_equal(problem.train_coords, coords)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (((0, 2),), {}, ValueError, r"`shape\[0\]` must be a positive int, got 0"),
        (((2, 2), [(0, 1)]), {}, ValueError, "one \\(low, high\\) pair per axis"),
        (((2,), [(1.0, 1.0)]), {}, ValueError, r"`domain\[0\]` must have low < high"),
        (((2,), [(0, float("nan"))]), {}, ValueError, "must be finite"),
        (((1,),), {"endpoint": True}, ValueError, "`endpoint=True` needs at least 2"),
    ],
    ids=["zero-size", "pairs", "inverted", "nan", "endpoint-one-point"],
)
def test_grid_bad_input(args, kwargs, error, match):
    with without_runtime_typechecks(), pytest.raises(error, match=match):
        sciinr.grid(*args, **kwargs)


# -- apply: chunks and pytree inputs -------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1000, 64, 7], ids=["one", "even", "ragged"])
def test_chunked_apply_equals_unchunked(getkey, chunk_size):
    field = _mlp(getkey())
    xs = jr.uniform(getkey(), (100, 2))
    full = jit_apply(field, xs)
    chunked = jit_apply(field, xs, chunk_size=chunk_size)
    assert chunked.shape == (100, 3)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-7)


def test_chunked_apply_of_a_frozen_batch_norm_field(getkey):
    field = _mlp(getkey(), norm="batch")
    reference = jr.uniform(getkey(), (64, 2))
    xs = jr.uniform(getkey(), (50, 2))
    frozen = snn.freeze_statistics(field, reference)
    np.testing.assert_allclose(
        jit_apply(frozen, xs, chunk_size=16), jit_apply(frozen, xs), rtol=1e-5
    )
    # On the reference itself, chunked frozen values are the batch-statistics ones.
    np.testing.assert_allclose(
        jit_apply(frozen, reference, chunk_size=24),
        jit_apply(field, reference),
        rtol=1e-4,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="Freeze its statistics first"):
        snn.apply(field, xs, chunk_size=16)


class _Pair(eqx.Module):
    """A field of two inputs: `u` a dict of arrays, `y` one point (DeepONet-like)."""

    branch: snn.CoordinateMLP
    trunk: snn.CoordinateMLP

    def __call__(self, u, y, *, key=None):
        return jnp.sum(self.branch(u["a"] + u["b"]) * self.trunk(y))[None]


def _pair(key, norm=None):
    bkey, tkey = jr.split(key)
    return _Pair(
        snn.CoordinateMLP(4, 8, 8, 1, norm=norm, key=bkey),
        snn.CoordinateMLP(1, 8, 8, 1, norm=norm, key=tkey),
    )


def test_apply_over_several_pytree_inputs(getkey):
    field = _pair(getkey())
    u = {"a": jr.normal(getkey(), (10, 4)), "b": jr.normal(getkey(), (10, 4))}
    y = jr.uniform(getkey(), (10, 1))
    out = jit_apply(field, u, y)
    expected = jnp.stack(
        [field({"a": u["a"][i], "b": u["b"][i]}, y[i]) for i in range(10)]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    chunked = jit_apply(field, u, y, chunk_size=3)
    np.testing.assert_allclose(chunked, out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="must share their leading"):
        snn.apply(field, u, y[:9])


def test_freeze_statistics_of_a_pytree_input_field(getkey):
    field = _pair(getkey(), norm="batch")
    u = {"a": jr.normal(getkey(), (32, 4)), "b": jr.normal(getkey(), (32, 4))}
    y = jr.uniform(getkey(), (32, 1))
    frozen = snn.freeze_statistics(field, u, y)
    assert not snn.has_batch_statistics(frozen)
    np.testing.assert_allclose(
        jit_apply(frozen, u, y), jit_apply(field, u, y), rtol=1e-4, atol=1e-5
    )
    # The frozen statistics are those of the branch and trunk pre-activations.
    z = jax.vmap(lambda v: field.branch.layers[0](v))(u["a"] + u["b"])
    np.testing.assert_allclose(frozen.branch.norms[0].mean.value, z.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        frozen.branch.norms[0].var.value, z.var(0), rtol=1e-4, atol=1e-7
    )


# -- freeze_statistics inside an inner vmap and a scan over layers --------------------


class _Ensemble(eqx.Module):
    """Three stacked batch-norm MLPs evaluated by an inner vmap; outputs summed."""

    members: snn.CoordinateMLP
    in_size: int = eqx.field(static=True, default=2)

    def __call__(self, x, *, key=None):
        call = eqx.filter_vmap(lambda m: m(x))
        return jnp.sum(call(self.members), axis=0)


class _ScanLayers(eqx.Module):
    """Layers stacked on a leading axis and applied with `lax.scan` (BN inside)."""

    linears: eqx.nn.Linear
    norms: snn.CoordinateBatchNorm
    in_size: int = eqx.field(static=True, default=3)

    def __call__(self, x, *, key=None):
        params, static = eqx.partition((self.linears, self.norms), eqx.is_array)

        def body(h, p):
            linear, norm = eqx.combine(p, static)
            return jnp.tanh(norm(linear(h))), None

        h, _ = jax.lax.scan(body, x, params)
        return h


def test_freeze_inside_an_inner_vmap(getkey):
    keys = jr.split(getkey(), 3)
    members = eqx.filter_vmap(lambda k: _mlp(k, norm="batch", width=8))(keys)
    field = _Ensemble(members)
    xs = jr.uniform(getkey(), (40, 2))
    frozen = eqx.filter_jit(snn.freeze_statistics)(field, xs)
    assert not snn.has_batch_statistics(frozen)
    # Stacked statistics, one set per member, equal to each member's own freeze.
    for i in range(3):
        member = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, members)
        own = snn.freeze_statistics(member, xs)
        for k in range(2):
            np.testing.assert_allclose(
                frozen.members.norms[k].mean.value[i],
                own.norms[k].mean.value,
                rtol=1e-5,
            )
    np.testing.assert_allclose(
        jit_apply(frozen, xs), jit_apply(field, xs), rtol=1e-4, atol=1e-5
    )


def test_freeze_inside_a_scan_over_layers(getkey):
    keys = jr.split(getkey(), 4)
    linears = eqx.filter_vmap(lambda k: eqx.nn.Linear(3, 3, key=k))(keys)
    norms = eqx.filter_vmap(lambda _: snn.CoordinateBatchNorm(3))(keys)
    field = _ScanLayers(linears, norms)
    xs = jr.normal(getkey(), (30, 3))
    frozen = snn.freeze_statistics(field, xs)
    assert frozen.norms.mean.value.shape == (4, 3)
    # The first layer's statistics are those of its pre-activations, by hand.
    first = jax.vmap(lambda x: x @ linears.weight[0].T + linears.bias[0])(xs)
    np.testing.assert_allclose(frozen.norms.mean.value[0], first.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        jit_apply(frozen, xs), jit_apply(field, xs), rtol=1e-4, atol=1e-5
    )


class _Twice(eqx.Module):
    norm: snn.CoordinateBatchNorm
    in_size: int = eqx.field(static=True, default=2)

    def __call__(self, x, *, key=None):
        return self.norm(self.norm(x))


class _Never(eqx.Module):
    norm: snn.CoordinateBatchNorm
    in_size: int = eqx.field(static=True, default=2)

    def __call__(self, x, *, key=None):
        return x


def test_freeze_rejects_a_layer_called_twice_or_never(getkey):
    xs = jr.normal(getkey(), (16, 2))
    for field in (
        _Twice(snn.CoordinateBatchNorm(2)),
        _Never(snn.CoordinateBatchNorm(2)),
    ):
        with pytest.raises(ValueError, match="not called exactly once per point"):
            snn.freeze_statistics(field, xs)
    # Under jit the same check is a runtime error with the same message.
    with pytest.raises(Exception, match="not called exactly once per point"):
        eqx.filter_jit(snn.freeze_statistics)(_Twice(snn.CoordinateBatchNorm(2)), xs)
