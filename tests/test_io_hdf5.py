import datetime
import json

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import sciinr
from sciinr.io import load_run, Run, save_run


def make_field(key, width=16):
    ekey, mkey = jax.random.split(key)
    encoding = sciinr.nn.FourierFeatures(2, 8, sigma=5.0, key=ekey)
    return sciinr.nn.CoordinateMLP(
        2, 1, width, 2, encoding=encoding, linear="rwf", norm="layer", key=mkey
    )


CONFIG = {
    "optimizer": {"name": "adam", "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-300},
    "steps": 2000,
    "flags": [True, False, None],
    "nested": {"empty": {}, "list": [], "deep": [{"a": [1, 2.5, "x"]}]},
    "unicode": "σ = 10 µm — ✓",
    "big": 2**62,
    "negative": -0.0,
}


def run_kwargs():
    x = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    y = np.linspace(0.0, 1.0, 4, dtype=np.float32)
    return dict(
        history={
            "step": np.arange(0, 30, 10),
            "loss": np.array([1.0, 0.5, 0.25]),
            "psnr_test": np.array([np.nan, 12.0, np.nan]),
            "lr": jnp.array([1e-3, 1e-3, 5e-4], dtype=jnp.float32),
        },
        metrics={"psnr_test": jnp.asarray(23.5, dtype=jnp.float32), "rel_l2": 0.125},
        predictions={
            "image": np.arange(60, dtype=np.float32).reshape(5, 4, 3),
            "target": jnp.ones((5, 4), dtype=jnp.float32),
            "sinogram": np.zeros((7, 4)),
            "scalar": np.float64(2.0),
        },
        coordinates={"x": x, "y": y},
        config=CONFIG,
        problem="ImageRegression(size=5)",
        seed=3,
    )


def test_round_trip_plain_h5py(tmp_path, getkey):
    field = make_field(getkey())
    kwargs = run_kwargs()
    path = save_run(tmp_path / "run.h5", field, **kwargs)
    assert path == tmp_path / "run.h5"
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        assert attrs["format"] == "sciinr"
        assert attrs["format_version"] == 1
        assert attrs["sciinr_version"] == sciinr.__version__
        assert attrs["jax_version"] == jax.__version__
        created = datetime.datetime.fromisoformat(attrs["created"])
        assert created.utcoffset() == datetime.timedelta(0)
        assert attrs["problem"] == "ImageRegression(size=5)"
        assert attrs["field"] == repr(field)
        assert attrs["seed"] == 3
        assert attrs["devices"] == str(jax.devices())
        assert json.loads(attrs["config"]) == CONFIG

        for name, value in kwargs["history"].items():
            np.testing.assert_array_equal(f["history"][name][:], np.asarray(value))
        assert f["metrics"].attrs["psnr_test"] == 23.5
        assert f["metrics"].attrs["rel_l2"] == 0.125
        for name, value in kwargs["predictions"].items():
            np.testing.assert_array_equal(f["predictions"][name][()], value)
        for name, value in kwargs["coordinates"].items():
            np.testing.assert_array_equal(f["predictions"][name][:], value)
            assert f["predictions"][name].attrs["units"] == "1"
            assert name in f["predictions"][name].attrs["long_name"]

        leaves = jtu.tree_flatten_with_path(eqx.filter(field, eqx.is_array))[0]
        assert len(f["params"]) == len(leaves)
        np.testing.assert_array_equal(f["params/layers.0.v"][:], field.layers[0].v)
        np.testing.assert_array_equal(f["params/norms.1.bias"][:], field.norms[1].bias)
        assert f["params/layers.0.v"].attrs["path"] == ".layers[0].v"
        for path_, leaf in leaves:
            name = jtu.keystr(path_, simple=True, separator=".")
            np.testing.assert_array_equal(f["params"][name][:], leaf)
        assert f["model"].dtype == np.uint8


def test_load_run_and_rebuild_field(tmp_path, getkey):
    field = make_field(getkey())
    kwargs = run_kwargs()
    save_run(tmp_path / "run.h5", field, **kwargs)

    run = load_run(tmp_path / "run.h5")
    assert isinstance(run, Run)
    assert run.field is None
    assert run.config == CONFIG
    assert run.attrs["config"] == CONFIG
    assert run.attrs["seed"] == 3 and run.attrs["problem"] == kwargs["problem"]
    assert list(run.history) == ["step", "loss", "psnr_test", "lr"]
    np.testing.assert_array_equal(run.history["psnr_test"], [np.nan, 12.0, np.nan])
    assert run.metrics == {"psnr_test": 23.5, "rel_l2": 0.125}
    assert set(run.predictions) == {"image", "target", "sinogram", "scalar"}
    np.testing.assert_array_equal(
        run.predictions["image"], kwargs["predictions"]["image"]
    )
    assert set(run.coordinates) == {"x", "y"}
    np.testing.assert_array_equal(run.coordinates["y"], kwargs["coordinates"]["y"])
    np.testing.assert_array_equal(run.params["layers.2.s"], field.layers[2].s)

    template = make_field(getkey())
    xs = jax.random.uniform(getkey(), (16, 2))
    assert not np.array_equal(sciinr.nn.apply(template, xs), sciinr.nn.apply(field, xs))
    rebuilt = load_run(tmp_path / "run.h5", field=template).field
    assert eqx.tree_equal(rebuilt, field)
    np.testing.assert_array_equal(
        sciinr.nn.apply(rebuilt, xs), sciinr.nn.apply(field, xs)
    )


def test_rebuild_from_eval_shape_template(tmp_path, getkey):
    field = make_field(getkey())
    save_run(tmp_path / "run.h5", field)
    template = eqx.filter_eval_shape(make_field, getkey())
    rebuilt = load_run(tmp_path / "run.h5", field=template).field
    assert eqx.tree_equal(rebuilt, field)


def test_config_round_trip_is_exact(tmp_path, getkey):
    config = {"lr": 0.1, "third": 1 / 3, "tiny": 5e-324, "tuple": (1, 2), "s": "ü"}
    save_run(tmp_path / "run.h5", make_field(getkey()), config=config)
    loaded = load_run(tmp_path / "run.h5").config
    assert loaded == {**config, "tuple": [1, 2]}
    assert loaded["third"] == 1 / 3 and type(loaded["third"]) is float


def test_dimension_scales(tmp_path, getkey):
    save_run(tmp_path / "run.h5", make_field(getkey()), **run_kwargs())
    with h5py.File(tmp_path / "run.h5", "r") as f:
        step = f["history/step"]
        assert h5py.h5ds.is_scale(step.id)
        for name in ("loss", "psnr_test", "lr"):
            assert f["history"][name].dims[0][0].name == "/history/step"
        image = f["predictions/image"]
        assert image.dims[0][0].name == "/predictions/x"
        assert image.dims[1][0].name == "/predictions/y"
        # the channel axis matches no coordinate: a netCDF dimension without values
        assert image.dims[2][0].name == "/predictions/image_dim_2"
        assert f["predictions/target"].dims[1][0].name == "/predictions/y"
        # the first axis of the sinogram has another length: no coordinate at all
        sinogram = f["predictions/sinogram"]
        assert sinogram.dims[0][0].name == "/predictions/sinogram_dim_0"
        assert sinogram.dims[1][0].name == "/predictions/sinogram_dim_1"
        assert h5py.h5ds.is_scale(f["predictions/x"].id)


def test_opens_as_xarray_datatree(tmp_path, getkey):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    save_run(tmp_path / "run.h5", make_field(getkey()), **run_kwargs())
    tree = xr.open_datatree(tmp_path / "run.h5", engine="h5netcdf", phony_dims="sort")
    predictions = tree["predictions"].to_dataset()
    assert predictions["image"].dims == ("x", "y", "image_dim_2")
    assert predictions["x"].attrs["units"] == "1"
    assert tree["history"].to_dataset()["loss"].dims == ("step",)


def test_param_names(tmp_path):
    tree = {
        "a/b": [jnp.zeros(2), jax.nn.relu, 3.0],
        "c": {"d": np.ones((2, 2), dtype=np.float32)},
        "x.y": jnp.ones(1),
        "x": {"y": jnp.full(1, 2.0)},
    }
    save_run(tmp_path / "run.h5", tree)
    with h5py.File(tmp_path / "run.h5", "r") as f:
        names = list(f["params"])
        paths = {name: f["params"][name].attrs["path"] for name in names}
    assert names == ["a_b.0", "c.d", "x.y", "x.y~2"]
    assert paths == {
        "a_b.0": "['a/b'][0]",
        "c.d": "['c']['d']",
        "x.y": "['x']['y']",  # dict keys are sorted: 'x' < 'x.y'
        "x.y~2": "['x.y']",
    }

    def zero(x):
        if isinstance(x, np.ndarray):
            return np.zeros_like(x)
        if eqx.is_array(x):
            return jnp.zeros_like(x)
        return 0.0 if isinstance(x, float) else x

    run = load_run(tmp_path / "run.h5", field=jtu.tree_map(zero, tree))
    assert run.field["a/b"][1] is jax.nn.relu
    assert run.field["a/b"][2] == 3.0  # Python scalars are in /model, not /params
    assert type(run.field["c"]["d"]) is np.ndarray
    np.testing.assert_array_equal(run.field["x"]["y"], tree["x"]["y"])


def test_failure_mid_write_leaves_no_file(tmp_path, getkey, monkeypatch):
    field = make_field(getkey())
    create_dataset = h5py.Group.create_dataset

    def failing_create_dataset(self, name, *args, **kwargs):
        if name.startswith("layers.1"):
            raise RuntimeError("disk full")
        return create_dataset(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create_dataset)
    target = tmp_path / "run.h5"
    with pytest.raises(RuntimeError, match="disk full"):
        save_run(target, field, **run_kwargs())
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"previous run")
    with pytest.raises(RuntimeError, match="disk full"):
        save_run(target, field, **run_kwargs())
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == b"previous run"


def test_invalid_input_writes_nothing(tmp_path, getkey):
    target = tmp_path / "run.h5"
    target.write_bytes(b"previous run")
    with pytest.raises(TypeError, match=r"predictions\['bad'\]"):
        save_run(target, make_field(getkey()), predictions={"bad": np.array(["a"])})
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == b"previous run"


@pytest.mark.parametrize(
    "history, match",
    [
        ({"step": np.arange(3), "loss": np.zeros(4)}, r"history\['loss'\].*length 4"),
        ({"step": np.arange(3), "loss": np.zeros((3, 1))}, r"history\['loss'\].*1-D"),
        ({"loss": np.zeros(3)}, "'step'"),
        ({"step": np.arange(3), "a/b": np.zeros(3)}, "'a/b'"),
    ],
    ids=["length", "ndim", "no-step", "name"],
)
def test_bad_history(tmp_path, getkey, history, match):
    with pytest.raises(ValueError, match=match):
        save_run(tmp_path / "run.h5", make_field(getkey()), history=history)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "config",
    [{"lr": np.float32(0.1)}, {1: "a"}, {"a": {"b": {1, 2}}}, {"f": jax.nn.relu}],
    ids=["numpy-scalar", "int-key", "set", "function"],
)
def test_config_must_be_json(tmp_path, getkey, config):
    with pytest.raises(TypeError, match="config"):
        save_run(tmp_path / "run.h5", make_field(getkey()), config=config)
    assert list(tmp_path.iterdir()) == []


def test_other_bad_arguments(tmp_path, getkey):
    field = make_field(getkey())
    with pytest.raises(ValueError, match=r"metrics\['psnr'\].*scalar"):
        save_run(tmp_path / "run.h5", field, metrics={"psnr": np.zeros(2)})
    with pytest.raises(ValueError, match=r"coordinates\['x'\].*1-D"):
        save_run(tmp_path / "run.h5", field, coordinates={"x": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="'x'"):
        save_run(
            tmp_path / "run.h5",
            field,
            predictions={"x": np.zeros(2)},
            coordinates={"x": np.zeros(2)},
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_run(tmp_path / "missing" / "run.h5", field)
    with pytest.raises(IsADirectoryError, match="directory"):
        save_run(tmp_path, field)
    assert list(tmp_path.iterdir()) == []


def test_only_process_zero_writes(tmp_path, getkey, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    path = save_run(tmp_path / "run.h5", make_field(getkey()), **run_kwargs())
    assert path == tmp_path / "run.h5"
    assert not path.exists()


def test_load_run_errors(tmp_path, getkey):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_run(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_run(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(ValueError, match="not a sciinr run file"):
        load_run(tmp_path / "other.h5")
    save_run(tmp_path / "run.h5", make_field(getkey()))
    with pytest.raises(ValueError, match=r"layers\[0\]\.v.*\(16, 16\).*\(8, 16\)"):
        load_run(tmp_path / "run.h5", field=make_field(getkey(), width=8))


def test_runs_in_groups_of_one_file(tmp_path, getkey):
    """`write_run` puts the run-file layout under a group; `read_run` reads it back
    exactly as `load_run` reads the same run from a file of its own."""
    fields = [make_field(getkey()), make_field(getkey(), width=8)]
    kwargs = run_kwargs()
    path = tmp_path / "study.h5"
    with h5py.File(path, "w") as f:
        for i, field in enumerate(fields):
            group = f.create_group(f"camera/fourier-rwf-none/seed{i}")
            assert sciinr.io.write_run(group, field, **kwargs) is group
    save_run(tmp_path / "alone.h5", fields[1], **kwargs)
    alone = load_run(tmp_path / "alone.h5", make_field(getkey(), width=8))
    with h5py.File(path, "r") as f:
        group = f["camera/fourier-rwf-none/seed1"]
        # Plain h5py sees the run layout under the group.
        assert group.attrs["format"] == "sciinr"
        np.testing.assert_array_equal(group["history/step"][:], [0, 10, 20])
        assert group["predictions/image"].dims[0][0].name.endswith("/predictions/x")
        run = sciinr.io.read_run(group, make_field(getkey(), width=8))
        first = sciinr.io.read_run(f["camera/fourier-rwf-none/seed0"])
    assert run.config == alone.config == CONFIG
    assert run.metrics == alone.metrics
    for name in alone.predictions:
        np.testing.assert_array_equal(run.predictions[name], alone.predictions[name])
    for a, b in zip(jtu.tree_leaves(run.field), jtu.tree_leaves(fields[1])):
        if eqx.is_array(a):
            np.testing.assert_array_equal(a, b)
    assert first.field is None and first.attrs["field"] == repr(fields[0])


def test_write_run_needs_an_empty_group(tmp_path, getkey):
    field = make_field(getkey())
    with h5py.File(tmp_path / "f.h5", "w") as f:
        group = f.create_group("cell")
        group.attrs["note"] = "taken"
        with pytest.raises(ValueError, match="`group` '/cell' must be empty"):
            sciinr.io.write_run(group, field, **run_kwargs())
        # A wrong group to read names the group in the error.
        with pytest.raises(ValueError, match="group '/cell'.*not a sciinr run file"):
            sciinr.io.read_run(group)
