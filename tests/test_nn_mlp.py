"""Tests for `CoordinateMLP` and the batched call `apply`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import without_runtime_typechecks

import sciinr.nn as snn
from sciinr.nn._trig import sin as fast_sin


# One jitted `apply`: one compilation per field structure, shared across tests.
jit_apply = eqx.filter_jit(snn.apply)


@eqx.filter_jit
def jit_apply_sets(field, xs_sets):
    """`apply` vmapped over a leading axis of several coordinate sets."""
    return jax.vmap(lambda xs: snn.apply(field, xs))(xs_sets)


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "sine": fast_sin,  # the package's vectorised sine (tests/test_nn_fast_trig.py)
}
NORMS = [None, "batch", "layer", "rms"]
NORM_IDS = ["no_norm", "batch", "layer", "rms"]

# The standard small configuration of this file: 2 -> [16] * 2 -> 3, 64 points.
IN, OUT, WIDTH, DEPTH, N = 2, 3, 16, 2, 64


def _count(n_in, width, depth, n_out, *, rwf=False, norm=None):
    """Trainable parameters of a `CoordinateMLP`, counted by hand."""
    sizes = [n_in] + [width] * depth + [n_out]
    count = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))  # W and b
    if rwf:
        count += sum(sizes[1:])  # one scale per neuron in every layer
    if norm is not None:
        count += 2 * width * depth  # weight and bias of each hidden norm
    return count


def _coordinate_sets(key):
    ukey, nkey = jr.split(key)
    xs = jr.uniform(ukey, (N, IN))
    # Three sets of N points: the second is a permutation of the first, the third is
    # drawn from another distribution.
    return jnp.stack([xs, xs[::-1], jr.normal(nkey, (N, IN))])


@pytest.mark.parametrize("activation", list(ACTIVATIONS), ids=list(ACTIVATIONS))
@pytest.mark.parametrize("norm", NORMS, ids=NORM_IDS)
@pytest.mark.parametrize("linear", ["dense", "rwf"])
def test_every_combination_runs(getkey, linear, norm, activation):
    field = snn.CoordinateMLP(
        IN,
        OUT,
        WIDTH,
        DEPTH,
        activation=ACTIVATIONS[activation],
        linear=linear,
        norm=norm,
        key=getkey(),
    )
    assert len(field.layers) == DEPTH + 1
    assert len(field.norms) == DEPTH
    layer_type = eqx.nn.Linear if linear == "dense" else snn.FactorizedLinear
    assert all(type(layer) is layer_type for layer in field.layers)
    assert snn.has_batch_statistics(field) == (norm == "batch")
    assert snn.num_parameters(field) == _count(
        IN, WIDTH, DEPTH, OUT, rwf=linear == "rwf", norm=norm
    )

    # Under `eqx.filter_jit`, `apply` vmapped over a leading axis of 3 coordinate sets.
    xs_sets = _coordinate_sets(getkey())
    ys_sets = jit_apply_sets(field, xs_sets)
    assert ys_sets.shape == (3, N, OUT)
    assert ys_sets.dtype == jnp.float32
    ys_sets = np.asarray(ys_sets)
    assert np.all(np.isfinite(ys_sets))
    assert np.std(ys_sets[0]) > 1e-3  # not a constant function
    # The same points in another order give the same values, in that order (also
    # under batch norm: the statistics of a set do not depend on its order).
    np.testing.assert_allclose(ys_sets[1], ys_sets[0][::-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ys_sets[2], ys_sets[0], atol=1e-3)


@pytest.mark.parametrize("norm", NORMS, ids=NORM_IDS)
def test_vmap_over_sets_equals_separate_apply(getkey, norm):
    field = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, norm=norm, key=getkey())
    xs_sets = _coordinate_sets(getkey())
    ys_sets = jit_apply_sets(field, xs_sets)
    for i in range(3):
        expected = jit_apply(field, xs_sets[i])
        np.testing.assert_allclose(ys_sets[i], expected, rtol=1e-5, atol=1e-6)
    if norm == "batch":
        # Each set has its own statistics, not those of all sets together.
        union = jit_apply(field, xs_sets.reshape(3 * N, IN)).reshape(3, N, OUT)
        assert np.abs(union[2] - ys_sets[2]).max() > 1e-2


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=list(ACTIVATIONS))
def test_activation_by_name(getkey, name):
    key = getkey()
    by_name = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, activation=name, key=key)
    by_callable = snn.CoordinateMLP(
        IN, OUT, WIDTH, DEPTH, activation=ACTIVATIONS[name], key=key
    )
    assert by_name.activation is snn.ACTIVATIONS[name] is ACTIVATIONS[name]
    assert eqx.tree_equal(by_name, by_callable)
    xs_sets = _coordinate_sets(getkey())
    np.testing.assert_array_equal(
        jit_apply_sets(by_name, xs_sets), jit_apply_sets(by_callable, xs_sets)
    )


def test_forward_pass_by_hand(getkey):
    # encoding -> [linear -> norm -> activation] * depth -> linear, in NumPy.
    encoding = snn.FourierFeatures(IN, 8, sigma=1.0, key=getkey())
    field = snn.CoordinateMLP(
        IN,
        OUT,
        WIDTH,
        DEPTH,
        encoding=encoding,
        activation=jnp.tanh,
        linear="rwf",
        norm="layer",
        key=getkey(),
    )
    assert field.encoding is encoding
    # Non-trivial biases and norm affine parameters.
    leaves = lambda f: (
        [f.layers[i].bias for i in range(3)]
        + [getattr(f.norms[i], name) for i in range(2) for name in ("weight", "bias")]
    )
    values = [jr.normal(getkey(), leaf.shape) for leaf in leaves(field)]
    field = eqx.tree_at(leaves, field, values)

    x = np.array([0.3, 0.8])
    B = np.asarray(encoding.matrix, np.float64)
    h = np.concatenate([np.cos(2 * np.pi * B @ x), np.sin(2 * np.pi * B @ x)])
    for layer, norm in zip(field.layers[:-1], field.norms):
        h = np.asarray(layer.weight, np.float64) @ h + np.asarray(layer.bias)
        h = (h - h.mean()) / np.sqrt(h.var() + 1e-5)
        h = np.tanh(h * np.asarray(norm.weight) + np.asarray(norm.bias))
    last = field.layers[-1]
    y = np.asarray(last.weight, np.float64) @ h + np.asarray(last.bias)
    got = eqx.filter_jit(lambda f, x: f(x))(field, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, y, atol=2e-5)


@pytest.mark.parametrize("final", [jax.nn.sigmoid, "sigmoid"], ids=["fn", "name"])
def test_final_activation(getkey, final):
    key = getkey()
    plain = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, key=key)
    squashed = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, final_activation=final, key=key)
    xs = 4.0 * jr.normal(getkey(), (N, IN))
    raw = jit_apply(plain, xs)
    ys = jit_apply(squashed, xs)
    raw, ys = np.asarray(raw), np.asarray(ys)
    assert np.abs(raw).max() > 1.0  # sigmoid really squashes something
    assert np.all((ys > 0) & (ys < 1))
    np.testing.assert_allclose(ys, 1 / (1 + np.exp(-raw)), rtol=1e-6, atol=1e-7)
    assert plain.final_activation is None


@pytest.mark.parametrize("norm", NORMS, ids=NORM_IDS)
def test_depth_zero_is_one_linear_layer(getkey, norm):
    field = snn.CoordinateMLP(IN, OUT, WIDTH, 0, norm=norm, key=getkey())
    assert len(field.layers) == 1
    assert field.norms == ()
    assert not snn.has_batch_statistics(field)
    layer = field.layers[0]
    assert layer.weight.shape == (OUT, IN)
    assert snn.num_parameters(field) == IN * OUT + OUT
    x = jnp.array([0.25, -1.5])
    expected = np.asarray(layer.weight) @ np.asarray(x) + np.asarray(layer.bias)
    np.testing.assert_allclose(field(x), expected, rtol=1e-6)


@pytest.mark.parametrize("linear", ["dense", "rwf"])
@pytest.mark.parametrize("norm", NORMS, ids=NORM_IDS)
@pytest.mark.parametrize("trainable", [False, True], ids=["fixed_B", "trainable_B"])
def test_parameter_count(getkey, trainable, norm, linear):
    # FourierFeatures(2, 8) -> 16 inputs; width 16; depth 3; 3 outputs.
    encoding = snn.FourierFeatures(2, 8, sigma=1.0, trainable=trainable, key=getkey())
    field = snn.CoordinateMLP(
        2, 3, 16, 3, encoding=encoding, linear=linear, norm=norm, key=getkey()
    )
    dense = (16 * 16 + 16) * 3 + (16 * 3 + 3)  # 867
    rwf = 16 * 3 + 3 if linear == "rwf" else 0  # one scale per neuron
    norms = 2 * 16 * 3 if norm is not None else 0  # weight and bias per hidden layer
    fourier = 8 * 2 if trainable else 0
    assert dense == 867
    assert snn.num_parameters(field) == dense + rwf + norms + fourier
    assert snn.num_parameters(field) == _count(
        16, 16, 3, 3, rwf=linear == "rwf", norm=norm
    ) + (16 if trainable else 0)


def test_layer_keys(getkey):
    # Layer i is the Glorot layer of `jr.split(key, depth + 1)[i]`.
    key = getkey()
    field = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, key=key)
    sizes = [IN, WIDTH, WIDTH, OUT]
    for i, k in enumerate(jr.split(key, DEPTH + 1)):
        expected = snn.glorot_linear(sizes[i], sizes[i + 1], key=k)
        np.testing.assert_array_equal(field.layers[i].weight, expected.weight)
        np.testing.assert_array_equal(field.layers[i].bias, np.zeros(sizes[i + 1]))


@pytest.mark.parametrize(
    "encoding, norm",
    [(None, None), (None, "batch"), (None, "layer"), (None, "rms")]
    + [("fourier", None), ("fourier", "batch")],
    ids=["raw", "raw-batch", "raw-layer", "raw-rms", "fourier", "fourier-batch"],
)
def test_dense_and_rwf_are_the_same_function_at_init(getkey, encoding, norm):
    key = getkey()
    if encoding == "fourier":
        encoding = snn.FourierFeatures(IN, 8, sigma=1.0, key=getkey())
    kwargs = dict(encoding=encoding, norm=norm, key=key)
    dense = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, linear="dense", **kwargs)
    rwf = snn.CoordinateMLP(
        IN, OUT, WIDTH, DEPTH, linear="rwf", rwf_mu=0.5, rwf_sigma=0.2, **kwargs
    )
    for a, b in zip(dense.layers, rwf.layers):
        np.testing.assert_allclose(b.weight, a.weight, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(b.bias, a.bias)
        assert np.abs(np.asarray(b.v) - np.asarray(a.weight)).max() > 1e-2
    xs = jr.uniform(getkey(), (N, IN))
    ys = jit_apply(dense, xs)
    np.testing.assert_allclose(jit_apply(rwf, xs), ys, rtol=1e-5, atol=1e-5)
    assert np.std(np.asarray(ys)) > 1e-2


def test_rwf_options_are_passed_on(getkey):
    field = snn.CoordinateMLP(
        IN,
        OUT,
        WIDTH,
        DEPTH,
        linear="rwf",
        rwf_mu=0.0,
        rwf_sigma=0,
        rwf_parameterization="scale",
        key=getkey(),
    )
    for layer in field.layers:
        assert layer.parameterization == "scale"
        assert layer.s is None
        np.testing.assert_allclose(layer.g, np.ones(layer.out_features), rtol=1e-7)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, hint",
    [
        ((IN, N), r"Did you pass the transpose\? Use `xs\.T`"),
        ((8, 8, IN), r"Did you pass a grid\? Use `xs\.reshape\(-1, 2\)`"),
        ((N,), r"call the field directly"),
        ((N, IN + 1), ""),
    ],
    ids=["transpose", "grid", "flat", "wrong_d"],
)
def test_apply_rejects_wrong_coordinate_shape(getkey, shape, hint):
    field = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, key=getkey())
    with pytest.raises(ValueError, match=r"`xs` must have shape \(n, 2\), got") as e:
        snn.apply(field, jnp.zeros(shape))
    assert str(shape) in str(e.value)
    if hint:
        assert e.match(hint)


@pytest.mark.parametrize("shape", [(3,), (1,)], ids=["3", "1"])
def test_field_rejects_wrong_point_shape(getkey, shape):
    field = snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, key=getkey())
    with pytest.raises(ValueError, match=r"`x` must have shape \(2,\).*apply"):
        field(jnp.zeros(shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(linear="foo"), r"Unknown `linear` 'foo'. Valid names: 'dense', 'rwf'"),
        (dict(norm="group"), r"Unknown `norm` 'group'.*None, 'batch', 'layer', 'rms'"),
        (dict(activation="swish2"), r"Unknown `activation` 'swish2'.*'relu'.*'sine'"),
        (dict(final_activation="softmax2"), r"`final_activation`.*'sigmoid'"),
        (dict(linear="rwf", rwf_parameterization="exp"), r"'log', 'scale'"),
    ],
    ids=["linear", "norm", "activation", "final_activation", "parameterization"],
)
def test_unknown_option_names(getkey, kwargs, message):
    # As users see them (the suite's runtime type checker rejects some of these
    # earlier, against their `Literal` annotations).
    with without_runtime_typechecks():
        with pytest.raises(ValueError, match=message):
            snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, **kwargs, key=getkey())
    with pytest.raises((TypeError, ValueError), match=list(kwargs)[-1]):
        snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, **kwargs, key=getkey())


def test_activation_must_be_callable(getkey):
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match="`activation` must be a callable or one"):
            snn.CoordinateMLP(IN, OUT, WIDTH, DEPTH, activation=3, key=getkey())


@pytest.mark.parametrize(
    "sizes, name",
    [
        ((IN, OUT, 0, DEPTH), "width_size"),
        ((-1, OUT, WIDTH, DEPTH), "in_size"),
        ((IN, 0, WIDTH, DEPTH), "out_size"),
    ],
    ids=["width0", "in-1", "out0"],
)
def test_non_positive_sizes(getkey, sizes, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int, got"):
        snn.CoordinateMLP(*sizes, key=getkey())


def test_negative_depth(getkey):
    with pytest.raises(ValueError, match="`depth` must be an int >= 0, got -1"):
        snn.CoordinateMLP(IN, OUT, WIDTH, -1, key=getkey())


@pytest.mark.parametrize(
    "sizes, name",
    [((IN, OUT, 2.5, DEPTH), "width_size"), ((IN, OUT, WIDTH, 2.5), "depth")],
    ids=["width", "depth"],
)
def test_non_int_sizes(getkey, sizes, name):
    with pytest.raises(TypeError, match=name):
        snn.CoordinateMLP(*sizes, key=getkey())
    with without_runtime_typechecks():
        with pytest.raises(TypeError, match=f"`{name}` must be"):
            snn.CoordinateMLP(*sizes, key=getkey())


@pytest.mark.parametrize("linear", ["dense", "rwf"])
def test_negative_rwf_sigma(getkey, linear):
    with pytest.raises(ValueError, match="`rwf_sigma` must be >= 0, got -1"):
        snn.CoordinateMLP(
            IN, OUT, WIDTH, DEPTH, linear=linear, rwf_sigma=-1, key=getkey()
        )


def test_encoding_size_mismatch(getkey):
    encoding = snn.FourierFeatures(3, 8, sigma=1.0, key=getkey())
    with pytest.raises(ValueError, match="`encoding` expects inputs of size 3.*is 2"):
        snn.CoordinateMLP(2, OUT, WIDTH, DEPTH, encoding=encoding, key=getkey())
    with pytest.raises(ValueError, match="`encoding` expects inputs of size 2.*is 1"):
        snn.CoordinateMLP(
            1, OUT, WIDTH, DEPTH, encoding=snn.PositionalEncoding(2, 4), key=getkey()
        )


def test_encoding_without_out_size(getkey):
    with pytest.raises(TypeError, match="out_size"):
        snn.CoordinateMLP(
            IN, OUT, WIDTH, DEPTH, encoding=eqx.nn.Identity(), key=getkey()
        )
