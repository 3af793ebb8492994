import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import central_difference, tree_allclose, without_runtime_typechecks

import sciinr
from sciinr.nn import (
    AbstractGridField,
    apply,
    CoordinateMLP,
    FactorizedLinear,
    FourierFeatures,
    freeze_statistics,
    MultiHeadField,
    num_parameters,
)


# Most tests use one shape, (3, 2) tiles of a width-8, depth-2 body with 2 outputs:
# building a field compiles its (vmapped) head construction once per shape, so a
# shared shape keeps the module fast.
TILES, WIDTH, DEPTH, OUT = (3, 2), 8, 2, 2


def _field(key, **kwargs):
    return MultiHeadField(2, OUT, TILES, WIDTH, DEPTH, key=key, **kwargs)


def _pixel_grid(rows, cols, domain=((0.0, 1.0), (0.0, 1.0)), offset=(0.0, 0.0)):
    """Pixel (i, j) of a rows x cols grid at low + span * (i + offset) / n, in
    float64 on the host (independent of `sciinr.grid`)."""
    (a1, b1), (a2, b2) = domain
    x = a1 + (b1 - a1) * (np.arange(rows) + offset[0]) / rows
    y = a2 + (b2 - a2) * (np.arange(cols) + offset[1]) / cols
    return np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)


# Jitted: run op by op, every primitive compiles on its own for every new shape.
_apply = eqx.filter_jit(apply)
_render = eqx.filter_jit(
    lambda field, shape, offset=0.0: field.render(shape, offset=offset)
)


def _per_point(field, coords, rows, cols):
    values = _apply(field, jnp.asarray(coords, jnp.float32))
    return values.reshape(rows, cols, -1)


# --------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------


def test_shapes_dtypes_and_parameter_count(getkey):
    dense = _field(getkey(), linear="rwf")
    sparse = _field(getkey(), heads="sparse", alpha=3)
    assert isinstance(dense, AbstractGridField)
    assert dense.n_heads == sparse.n_heads == 6
    assert isinstance(dense.heads, FactorizedLinear)
    assert isinstance(sparse.heads, eqx.nn.Linear)
    weight, bias = dense.head_weights()
    assert weight.shape == (6, 2, 8) and bias.shape == (6, 2)
    assert weight.dtype == jnp.float32
    assert sparse.heads.weight.shape == (6, 2, 3)
    assert dense.index is None
    assert sparse.index.shape == (6, 3) and sparse.index.dtype == jnp.int32
    index = np.asarray(sparse.index)
    assert index.min() >= 0 and index.max() < 8
    # Each head reads `alpha` distinct neurons, and not all heads the same ones.
    assert all(len(set(row)) == 3 for row in index.tolist())
    assert len({tuple(sorted(row)) for row in index.tolist()}) > 1
    # The dense stacked view of sparse heads: zero outside each head's neurons.
    weight, _ = sparse.head_weights()
    for h in (0, 5):
        np.testing.assert_array_equal(weight[h][:, index[h]], sparse.heads.weight[h])
        assert np.all(np.delete(np.asarray(weight[h]), index[h], axis=1) == 0)
    # body: (2 -> 8) + (8 -> 8); heads: 6 x (2 x n_in + 2); RWF adds one scale per
    # neuron (8 + 8 in the body, 6 x 2 in the heads).
    body = 2 * 8 + 8 + 8 * 8 + 8
    assert num_parameters(dense) == body + 6 * (2 * 8 + 2) + 8 + 8 + 6 * 2
    assert num_parameters(sparse) == body + 6 * (2 * 3 + 2)
    no_bias = _field(getkey(), head_bias=False)
    assert no_bias.head_weights()[1] is None
    assert num_parameters(no_bias) == body + 6 * 2 * 8
    # One int is a square tiling (shapes only: nothing is compiled).
    square = eqx.filter_eval_shape(MultiHeadField, 2, 1, 5, 8, 1, key=getkey())
    assert square.tiles == (5, 5) and square.heads.weight.shape == (25, 1, 8)


def test_sparse_head_initial_variance(getkey):
    # Glorot for the head's own fan-in: var = 2 / (alpha + out).
    field = MultiHeadField(2, 1, 32, 32, 1, heads="sparse", alpha=8, key=getkey())
    weight = np.asarray(field.heads.weight)
    assert weight.shape == (1024, 1, 8)
    np.testing.assert_allclose(weight.var(), 2 / (8 + 1), rtol=0.05)
    assert abs(weight.mean()) < 0.02


# --------------------------------------------------------------------------------------
# Tiles and local coordinates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, tile, local",
    [
        ((0.0, 0.0), (0, 0), (-1.0, -1.0)),  # lower corner
        ((1.0, 1.0), (2, 1), (1.0, 1.0)),  # upper corner: the last tiles
        ((1 / 3, 0.5), (1, 1), (-1.0, -1.0)),  # a border belongs to the upper tile
        ((2 / 3, 0.0), (2, 0), (-1.0, -1.0)),
        ((0.5, 1.0), (1, 1), (0.0, 1.0)),  # upper edge
        ((1.0, 0.25), (2, 0), (1.0, 0.0)),
        ((1 / 6, 0.75), (0, 1), (0.0, 0.0)),  # tile centres
        ((0.3, 0.1), (0, 0), (0.8, -0.6)),
        # One float32 ulp below the border 1/3: snapped onto it (u = 0.99999994).
        ((float(np.nextafter(np.float32(1 / 3), 0)), 0.5), (1, 1), (-1.0, -1.0)),
    ],
)
def test_locate_unit_domain(x, tile, local, getkey):
    got_tile, got_local = _field(getkey()).locate(jnp.asarray(x, jnp.float32))
    assert got_tile.dtype == jnp.int32
    np.testing.assert_array_equal(got_tile, tile)
    np.testing.assert_allclose(got_local, local, atol=1e-6)


def test_locate_non_unit_domain(getkey):
    # [-1, 2] x [2, 2.5] in 3 x 2 tiles: tiles of 1 x 0.25.
    field = _field(getkey(), domain=((-1.0, 2.0), (2.0, 2.5)))
    cases = [
        ((-1.0, 2.0), (0, 0), (-1.0, -1.0)),
        ((2.0, 2.5), (2, 1), (1.0, 1.0)),
        ((0.0, 2.25), (1, 1), (-1.0, -1.0)),
        ((0.5, 2.125), (1, 0), (0.0, 0.0)),
        ((1.75, 2.4), (2, 1), (0.5, 0.2)),
        ((2.0, 2.0), (2, 0), (1.0, -1.0)),
    ]
    for x, tile, local in cases:
        got_tile, got_local = field.locate(jnp.asarray(x))
        np.testing.assert_array_equal(got_tile, tile, err_msg=str(x))
        np.testing.assert_allclose(got_local, local, atol=1e-5, err_msg=str(x))


def test_pixel_coordinates_land_in_their_tile(getkey):
    # Pixel i of N = 3 h at fl32(i / N): the first pixel of every tile has the local
    # coordinate -1, although i / N is not exact in float32.
    coords, _ = sciinr.grid((3 * 7, 2 * 5))
    locate = eqx.filter_jit(lambda f, xs: jax.vmap(f.locate)(xs))
    tiles, local = locate(_field(getkey()), coords)
    rows, cols = np.arange(21).repeat(10), np.tile(np.arange(10), 21)
    np.testing.assert_array_equal(tiles[:, 0], rows // 7)
    np.testing.assert_array_equal(tiles[:, 1], cols // 5)
    np.testing.assert_allclose(local[:, 0], 2 * (rows % 7) / 7 - 1, atol=1e-6)
    np.testing.assert_allclose(local[:, 1], 2 * (cols % 5) / 5 - 1, atol=1e-6)


def test_points_outside_the_domain_raise(getkey):
    field = _field(getkey(), domain=((0, 1), (0, 2)))
    inside = jnp.array([[0.0, 0.0], [1.0, 2.0], [1.0 + 1e-7, 2.0], [0.5, 1.0]])
    assert _apply(field, inside).shape == (4, 2)
    for bad in ([1.01, 0.5], [0.5, -1e-3], [-0.5, 2.5]):
        xs = jnp.concatenate([inside, jnp.asarray([bad])])
        with pytest.raises(Exception, match="outside `domain`"):
            jax.block_until_ready(_apply(field, xs))


# --------------------------------------------------------------------------------------
# render == per-point call
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(heads="sparse", alpha=5, linear="rwf", norm="layer", fourier=True),
    ],
    ids=["dense", "sparse-rwf-layernorm-fourier"],
)
def test_render_equals_per_point_call_on_non_square_tiling(kwargs, getkey):
    kwargs = dict(kwargs)
    if kwargs.pop("fourier", False):
        kwargs["encoding"] = FourierFeatures(2, 8, sigma=1.0, key=getkey())
    field = _field(getkey(), **kwargs)
    # (3, 2) tiles of 4 x 7 pixels: an image of 12 x 14; unshifted, shifted by half a
    # pixel (the Tancik test pixels) and by (0.25, 0.75).
    offsets = [(0.0, 0.0), (0.5, 0.5), (0.25, 0.75)]
    grids = jnp.asarray(
        np.stack([_pixel_grid(12, 14, offset=o) for o in offsets]), jnp.float32
    )

    @eqx.filter_jit
    def run(field):
        rendered = [field.render((4, 7), offset=o) for o in (0.0, 0.5, (0.25, 0.75))]
        per_point = [apply(field, xs).reshape(12, 14, 2) for xs in grids]
        return rendered, per_point, field.render_grid((12, 14))

    rendered, per_point, grid = run(field)
    assert rendered[0].shape == (12, 14, 2)
    for a, b in zip(rendered, per_point):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    # render_grid is render on the global grid shape.
    assert tree_allclose(grid, rendered[0])


def test_render_on_a_non_unit_domain_and_tile_order(getkey):
    domain = ((-2.0, 2.0), (1.0, 4.0))
    field = _field(getkey(), domain=domain)
    rendered = _render(field, (2, 3))
    expected = _per_point(field, _pixel_grid(6, 6, domain), 6, 6)
    np.testing.assert_allclose(rendered, expected, atol=2e-6, rtol=1e-5)
    # Block (l, k) of the image is head l * Hy + k on the shared local grid.
    weight, bias = field.head_weights()
    local = jnp.asarray(_pixel_grid(2, 3, ((-1, 1), (-1, 1))), jnp.float32)
    features = _apply(field.body, local)
    for l in range(3):
        for k in range(2):
            head = l * 2 + k
            block = features @ weight[head].T + bias[head][None]
            np.testing.assert_allclose(
                rendered[2 * l : 2 * l + 2, 3 * k : 3 * k + 3].reshape(-1, 2),
                block,
                atol=1e-6,
            )


def test_one_tile_dense_is_a_coordinate_mlp_of_local_coordinates(getkey):
    field = MultiHeadField(2, 2, 1, 16, 3, key=getkey())
    mlp = CoordinateMLP(2, 2, 16, 3, key=getkey())
    weight, bias = field.head_weights()
    output = eqx.tree_at(
        lambda l: (l.weight, l.bias), mlp.layers[-1], (weight[0], bias[0])
    )
    mlp = eqx.tree_at(lambda m: m.layers, mlp, (*field.body.layers, output))
    xs = jr.uniform(getkey(), (50, 2))
    np.testing.assert_allclose(
        _apply(field, xs), _apply(mlp, 2 * xs - 1), atol=1e-6, rtol=1e-5
    )


def test_render_chunked_body_and_jit(getkey):
    field = _field(getkey(), heads="sparse", alpha=3)
    full, chunked = eqx.filter_jit(
        lambda f: (f.render((5, 6)), f.render((5, 6), chunk_size=7))
    )(field)
    assert tree_allclose(full, chunked)
    assert tree_allclose(full, field.render((5, 6)))  # op by op, outside jit


# --------------------------------------------------------------------------------------
# Dense vs sparse, gradients
# --------------------------------------------------------------------------------------


def test_sparse_with_alpha_equal_width_is_the_dense_function(getkey):
    # RWF, so that both factors of the head weights, `exp(s) v`, are compared.
    key = getkey()
    dense = _field(key, linear="rwf")
    sparse = _field(key, linear="rwf", heads="sparse", alpha=WIDTH)
    index = np.asarray(sparse.index)
    # Each sparse head reads all neurons, in a random order (not the identity).
    assert all(sorted(row) == list(range(WIDTH)) for row in index.tolist())
    assert np.any(index != np.arange(WIDTH))
    xs = jr.uniform(getkey(), (64, 2))
    target = jnp.asarray(np.random.default_rng(1).uniform(size=(12, 8, 2)), jnp.float32)

    @eqx.filter_jit
    def run(field):
        def loss(f):
            return jnp.mean((f.render((4, 4)) - target) ** 2)

        return apply(field, xs), field.render((4, 4)), eqx.filter_grad(loss)(field)

    (a_dense, r_dense, g_dense), (a_sparse, r_sparse, g_sparse) = map(
        run, (dense, sparse)
    )
    np.testing.assert_allclose(a_dense, a_sparse, atol=1e-6)
    np.testing.assert_allclose(r_dense, r_sparse, atol=1e-6)
    # Training keeps them equal: the gradients are the same up to the permutation
    # of each head's inputs, and Adam (elementwise) updates them alike.
    assert tree_allclose(g_dense.body, g_sparse.body, atol=1e-7)
    np.testing.assert_allclose(g_dense.heads.s, g_sparse.heads.s, atol=1e-7)
    np.testing.assert_allclose(g_dense.heads.bias, g_sparse.heads.bias, atol=1e-7)
    # (H, out, width) vs (H, out, alpha): column j of head h is neuron index[h, j].
    permuted = np.take_along_axis(np.asarray(g_dense.heads.v), index[:, None, :], 2)
    np.testing.assert_allclose(permuted, g_sparse.heads.v, atol=1e-7)
    assert np.abs(permuted).max() > 1e-3


def test_sparse_head_gradient_touches_only_its_alpha_inputs(getkey):
    # tanh: every feature is active, so every neuron read gets a gradient.
    field = _field(getkey(), heads="sparse", alpha=3, activation=jnp.tanh)
    x = jnp.array([0.45, 0.8])  # tile (1, 1): head 1 * 2 + 1
    head = 3
    read = set(np.asarray(field.index[head]).tolist())

    @eqx.filter_jit
    def gradients(field):
        features = field.body(field.locate(x)[1])
        point = eqx.filter_grad(lambda f: jnp.sum(f(x)))(field)
        block = eqx.filter_grad(lambda f: jnp.sum(f.render((2, 2))[2:4, 2:4]))(field)
        return features, point, block

    features, point, block = gradients(field)
    assert np.all(np.asarray(features) != 0)
    for grads in (point, block):
        # d out / d (last body layer, neuron c) is zero for every neuron the head
        # skips, nonzero for those it reads.
        last = np.asarray(grads.body.layers[-1].weight)
        assert all(np.all(last[c] == 0) for c in range(WIDTH) if c not in read)
        assert all(np.all(last[c] != 0) for c in read)
        # Only this head's weights get a gradient.
        head_grad = np.asarray(grads.heads.weight)
        assert np.any(head_grad[head] != 0)
        assert np.all(np.delete(head_grad, head, axis=0) == 0)


def test_a_batch_touches_only_the_heads_of_its_tiles(getkey):
    field = _field(getkey())
    # Points in tiles (0, 0), (1, 1) and (2, 1) (the last one the upper corner).
    xs = jnp.array([[0.1, 0.1], [0.2, 0.05], [0.5, 0.9], [1.0, 1.0]])
    ys = jnp.ones((4, 2))

    def loss(f):
        return jnp.mean((apply(f, xs) - ys) ** 2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(field)
    touched = {0, 1 * 2 + 1, 2 * 2 + 1}
    weight = np.asarray(grads.heads.weight).reshape(6, -1)
    bias = np.asarray(grads.heads.bias)
    for head in range(6):
        if head in touched:
            assert np.all(bias[head] != 0), head
        else:
            assert np.all(weight[head] == 0) and np.all(bias[head] == 0), head


def test_gradients_match_finite_differences_in_float64(getkey):
    with jax.enable_x64(True):
        field = MultiHeadField(
            2,
            1,
            (2, 3),
            5,
            1,
            domain=((0.0, 2.0), (-1.0, 1.0)),
            heads="sparse",
            alpha=3,
            linear="rwf",
            activation=jnp.tanh,
            dtype=jnp.float64,
            key=getkey(),
        )
        # d phi / dx includes d local / dx = 2 H / span, also at points snapped onto
        # a tile border (where the snap must not cut the derivative). One-sided
        # differences into the point's own tile (the upper side of a border).
        value = jax.jit(lambda x: field(x)[0])
        gradient = jax.jit(jax.grad(lambda x: field(x)[0]))
        eps = 1e-6
        for x in ([0.3, 0.1], [1.0, 0.2], [0.7, -1.0 / 3.0]):
            x = jnp.asarray(x)
            fd = [(value(x + eps * e) - value(x)) / eps for e in jnp.eye(2)]
            np.testing.assert_allclose(gradient(x), fd, rtol=1e-4, atol=1e-6)
            assert np.all(np.abs(gradient(x)) > 1e-3)

        # The parameter gradient of a loss on the rendered grid (all parameters,
        # RWF scales and sparse head weights included).
        target = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 6, 1)))
        params, static = eqx.partition(field, eqx.is_inexact_array)

        @jax.jit
        def loss_of(params):
            f = eqx.combine(params, static)
            return jnp.mean((f.render((2, 2)) - target) ** 2)

        grads = jax.jit(jax.grad(loss_of))(params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        expected = central_difference(lambda v: loss_of(unravel(v)), np.asarray(flat))
        got = jax.flatten_util.ravel_pytree(grads)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------


def test_batch_norm_body_render_statistics_and_freeze(getkey):
    field = _field(getkey(), norm="batch", heads="sparse", alpha=3)
    coords = jnp.asarray(_pixel_grid(12, 6), jnp.float32)
    local = jnp.asarray(_pixel_grid(4, 3, ((-1, 1), (-1, 1))), jnp.float32)

    @eqx.filter_jit
    def run(field):
        # Live statistics: render (each local coordinate once) and apply on all
        # pixels (each local coordinate once per tile).
        live = field.render((4, 3))
        per_point = apply(field, coords).reshape(12, 6, 2)
        frozen = freeze_statistics(field, coords)
        body = freeze_statistics(field.body, local)
        return (
            live,
            per_point,
            frozen,
            frozen.render((4, 3)),
            frozen(coords[13]),
            apply(frozen, coords, chunk_size=10),
            body,
        )

    live, per_point, frozen, frozen_render, point, chunked, body = run(field)
    np.testing.assert_allclose(live, per_point, atol=1e-5, rtol=1e-5)
    # Frozen on the pixel grid: the same values, now pointwise.
    np.testing.assert_allclose(frozen_render, live, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(point, per_point.reshape(-1, 2)[13], atol=1e-5)
    np.testing.assert_allclose(chunked, per_point.reshape(-1, 2), atol=1e-5)
    # The frozen statistics are those of the body on the local grid.
    for a, b in zip(frozen.body.norms, body.norms):
        np.testing.assert_allclose(a.mean.value, b.mean.value, atol=1e-5)
        np.testing.assert_allclose(a.var.value, b.var.value, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="freeze"):
        field(coords[0])


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tiles=0), ValueError, "tiles"),
        (dict(tiles=(4, -1)), ValueError, r"tiles\[1\]"),
        (dict(tiles=(2, 2, 2)), ValueError, "tiles"),
        (dict(tiles=2.5), TypeError, "tiles"),
        (dict(heads="sparse"), ValueError, "`alpha` is required"),
        (dict(heads="sparse", alpha=17), ValueError, "`alpha` must be at most"),
        (dict(heads="sparse", alpha=0), ValueError, "alpha"),
        (dict(alpha=4), ValueError, "`alpha` is only used"),
        (dict(heads="block"), ValueError, "heads"),
        (
            dict(domain=((0, 1), (0, 1), (0, 1))),
            ValueError,
            r"pair per axis \(2\).*2-D domain",
        ),
        (dict(domain=((0, 1),)), ValueError, r"pair per axis \(2\).*2-D domain"),
        (dict(domain=((1, 1), (0, 1))), ValueError, r"domain\[0\]"),
        (dict(domain=5), TypeError, "domain"),
        (dict(in_size=3), ValueError, "`in_size` must be 2"),
        (dict(depth=0), ValueError, "depth"),
        (dict(norm="group"), ValueError, "norm"),
        (dict(linear="sparse"), ValueError, "linear"),
        (dict(head_bias=1), TypeError, "head_bias"),
    ],
)
def test_bad_arguments(kwargs, error, match, getkey):
    args = dict(in_size=2, out_size=1, tiles=(2, 2), width_size=16, depth=2)
    args.update(kwargs)
    with without_runtime_typechecks(), pytest.raises(error, match=match):
        MultiHeadField(**args, key=getkey())


def test_bad_render_arguments(getkey):
    field = _field(getkey())
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match=r"`tiles` \(3, 2\) must divide"):
            field.render_grid((10, 10))
        with pytest.raises(ValueError, match="offset"):
            field.render((2, 2), offset=1.0)
        with pytest.raises(ValueError, match="offset"):
            field.render((2, 2), offset=(0.5, -0.1))
        with pytest.raises(ValueError, match="offset"):
            field.render((2, 2), offset=(0.5, 0.5, 0.5))
        with pytest.raises(ValueError, match=r"local_shape\[1\]"):
            field.render((2, 0))
        with pytest.raises(ValueError, match="local_shape"):
            field.render((2, 2, 2))
        with pytest.raises(ValueError, match="`x` must have shape"):
            field(jnp.zeros(3))
