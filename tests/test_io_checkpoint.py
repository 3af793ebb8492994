import json

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import sciinr
from sciinr.io import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_run,
)


def make_field(key, width=16):
    ekey, mkey = jr.split(key)
    encoding = sciinr.nn.FourierFeatures(2, 8, sigma=5.0, key=ekey)
    return sciinr.nn.CoordinateMLP(
        2, 1, width, 2, encoding=encoding, linear="rwf", norm="layer", key=mkey
    )


OPTIMIZER = optax.adam(1e-3)


def make_state(field_key, fit_key, *, width=16, trained=False):
    """The kind of state the trainer checkpoints: field, optimizer state, key, step."""
    field = make_field(field_key, width)
    params = eqx.filter(field, sciinr.nn.trainable(field))
    opt_state = OPTIMIZER.init(params)
    if trained:
        grads = jtu.tree_map(jnp.ones_like, params)
        # optax's bias correction computes `float ** int32`: not allowed under the
        # suite's strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        field = eqx.apply_updates(field, updates)
    return {
        "field": field,
        "opt_state": opt_state,
        "key": jr.fold_in(fit_key, 3),
        "step": 7,
        "lr": 0.1,
        "scale": np.float32(0.5),
        "nothing": None,
    }


def assert_states_equal(a, b):
    a_leaves, a_def = jtu.tree_flatten(a)
    b_leaves, b_def = jtu.tree_flatten(b)
    assert a_def == b_def
    for x, y in zip(a_leaves, b_leaves):
        assert type(x) is type(y)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(jr.key_data(x), jr.key_data(y))
        elif eqx.is_array_like(x):
            assert np.shape(x) == np.shape(y)
            assert getattr(x, "dtype", None) == getattr(y, "dtype", None)
            np.testing.assert_array_equal(x, y)
        else:
            assert x is y


def test_round_trip(tmp_path, getkey):
    state = make_state(getkey(), getkey(), trained=True)
    like = make_state(getkey(), getkey())
    history = {"step": np.arange(4), "loss": np.array([1.0, np.nan, 0.5, 0.25])}
    meta = {"config": {"lr": 0.1, "betas": [0.9, 0.999]}, "note": "ü", "none": None}
    path = save_checkpoint(
        tmp_path / "ckpt.h5", state, step=120, history=history, meta=meta
    )
    assert path == tmp_path / "ckpt.h5"

    checkpoint = load_checkpoint(path, like)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.step == 120
    assert checkpoint.meta == meta
    assert list(checkpoint.history) == ["step", "loss"]
    for name, value in history.items():
        np.testing.assert_array_equal(checkpoint.history[name], value)
    assert_states_equal(checkpoint.state, state)
    restored = checkpoint.state
    assert restored["opt_state"][0].count.dtype == jnp.int32
    assert int(restored["opt_state"][0].count) == 1
    assert restored["key"].dtype == jr.key(0).dtype
    assert type(restored["step"]) is int and restored["step"] == 7
    xs = jr.uniform(getkey(), (16, 2))
    np.testing.assert_array_equal(
        sciinr.nn.apply(restored["field"], xs), sciinr.nn.apply(state["field"], xs)
    )
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(
        jr.normal(restored["key"], (3,)), jr.normal(state["key"], (3,))
    )


def test_eval_shape_template(tmp_path, getkey):
    state = make_state(getkey(), getkey(), trained=True)
    save_checkpoint(tmp_path / "ckpt.h5", state, step=1)
    like = eqx.filter_eval_shape(make_state, getkey(), getkey())
    assert isinstance(like["key"], jax.ShapeDtypeStruct)
    restored = load_checkpoint(tmp_path / "ckpt.h5", like).state
    # NumPy scalars are arrays to `eval_shape`, so they come back as JAX arrays.
    assert isinstance(restored.pop("scale"), jax.Array)
    del state["scale"]
    assert_states_equal(restored, state)


def test_file_layout(tmp_path, getkey):
    state = make_state(getkey(), getkey())
    save_checkpoint(tmp_path / "ckpt.h5", state, step=5, history={"step": np.arange(2)})
    with h5py.File(tmp_path / "ckpt.h5", "r") as f:
        assert f.attrs["format"] == "sciinr-checkpoint"
        assert f.attrs["format_version"] == 1
        assert f.attrs["step"] == 5
        assert f.attrs["sciinr_version"] == sciinr.__version__
        assert f["state"].dtype == np.uint8
        assert len(f.attrs["sha256"]) == 64
        structure = json.loads(f.attrs["structure"])
        assert json.loads(f.attrs["meta"]) == {}
        np.testing.assert_array_equal(f["history/step"][:], np.arange(2))
    entries = {entry["path"]: entry for entry in structure}
    assert entries["['field'].layers[0].v"]["shape"] == [16, 16]
    assert entries["['field'].layers[0].v"]["dtype"] == "float32"
    assert entries["['opt_state'][0].count"]["dtype"] == "int32"
    assert entries["['key']"]["dtype"] == "key<fry>"
    assert entries["['key']"]["impl"] == "threefry2x32"
    assert entries["['step']"] == {
        "path": "['step']",
        "kind": "python",
        "shape": [],
        "dtype": "int",
    }


def test_structure_mismatch(tmp_path, getkey):
    save_checkpoint(tmp_path / "ckpt.h5", make_state(getkey(), getkey()), step=1)
    like = make_state(getkey(), getkey(), width=8)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ckpt.h5", like)
    message = str(info.value)
    assert "ckpt.h5" in message
    assert "['field'].layers[0].v" in message
    assert "(16, 16)" in message and "(8, 16)" in message
    assert isinstance(info.value, ValueError)

    like = make_state(getkey(), getkey())
    like["step"] = jnp.asarray(7)
    with pytest.raises(CheckpointError, match=r"\['step'\].*int.*int32"):
        load_checkpoint(tmp_path / "ckpt.h5", like)
    like = make_state(getkey(), getkey())
    like["extra"] = jnp.zeros(3)
    with pytest.raises(CheckpointError, match=r"\['extra'\]"):
        load_checkpoint(tmp_path / "ckpt.h5", like)


def test_truncated_file(tmp_path, getkey):
    path = save_checkpoint(tmp_path / "ckpt.h5", make_state(getkey(), getkey()), step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path, make_state(getkey(), getkey()))


def test_tampered_bytes(tmp_path, getkey):
    path = save_checkpoint(tmp_path / "ckpt.h5", make_state(getkey(), getkey()), step=1)
    with h5py.File(path, "r+") as f:
        f["state"][200] = f["state"][200] ^ 0xFF
    with pytest.raises(CheckpointError, match="corrupted \\(checksum mismatch\\)"):
        load_checkpoint(path, make_state(getkey(), getkey()))


def test_not_a_checkpoint(tmp_path, getkey):
    like = make_state(getkey(), getkey())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.h5", like)
    (tmp_path / "text.h5").write_text("not HDF5 at all")
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        load_checkpoint(tmp_path / "text.h5", like)
    save_run(tmp_path / "run.h5", like["field"])
    with pytest.raises(CheckpointError, match="not a sciinr checkpoint"):
        load_checkpoint(tmp_path / "run.h5", like)


def test_failed_save_keeps_previous_checkpoint(tmp_path, getkey, monkeypatch):
    path = tmp_path / "ckpt.h5"
    first = make_state(getkey(), getkey())
    save_checkpoint(path, first, step=1)
    create_dataset = h5py.Group.create_dataset

    def failing_create_dataset(self, name, *args, **kwargs):
        if name == "loss":
            raise KeyboardInterrupt
        return create_dataset(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create_dataset)
    history = {"step": np.arange(2), "loss": np.zeros(2)}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_state(getkey(), getkey()), step=2, history=history)
    assert list(tmp_path.iterdir()) == [path]
    checkpoint = load_checkpoint(path, make_state(getkey(), getkey()))
    assert checkpoint.step == 1
    assert_states_equal(checkpoint.state, first)


def test_bad_arguments(tmp_path, getkey):
    state = make_state(getkey(), getkey())
    path = tmp_path / "ckpt.h5"
    with pytest.raises(ValueError, match=r"history\['loss'\].*length 3"):
        save_checkpoint(
            path, state, step=1, history={"step": np.arange(2), "loss": np.zeros(3)}
        )
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(path, state, step=-1)
    with pytest.raises(TypeError, match="meta"):
        save_checkpoint(path, state, step=1, meta={"a": np.float32(1.0)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "ckpt.h5", state, step=1)
    assert list(tmp_path.iterdir()) == []
