"""Run files: one HDF5 file per training run, readable with plain `h5py`.

Also home of the pieces shared with the checkpoints of `_checkpoint.py`: the atomic
writer, the JSON and history validation, and the pytree (de)serialisation that turns
typed PRNG keys and Python scalars into plain NumPy arrays.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import ArrayLike, PyTree


RUN_FORMAT = "sciinr"
RUN_FORMAT_VERSION = 1

# HDF5 1.8 object headers: dense attribute storage (attributes over 64 KiB, such as
# a long `field` repr or `config`) and readable by every netCDF-4 / h5netcdf reader.
_LIBVER = ("v108", "latest")

_PathLike = str | os.PathLike

# The netCDF-4 convention for a dimension without coordinate values.
_NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _sciinr_version() -> str:
    from .. import __version__  # sciinr/__init__.py imports us before defining it

    return __version__


def _now() -> str:
    """The current time in ISO-8601, UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _is_key(x: Any) -> bool:
    """Whether `x` is a typed PRNG key array (or its `ShapeDtypeStruct`)."""
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of an array; typed keys become their raw `key_data`.

    A JAX array replicated over several hosts is read from this host's copy.
    """
    if _is_key(x):
        x = jr.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError(
                "Cannot write an array that is sharded over several processes; "
                "gather it first (`jax.experimental.multihost_utils."
                "process_allgather`)."
            )
        x = x.addressable_data(0)
    array = np.asarray(x)
    if array.dtype.kind == "V" and jnp.issubdtype(array.dtype, jnp.floating):
        # bfloat16 & co. (ml_dtypes) have no HDF5 type; widen to float32.
        array = array.astype(np.float32)
    return array


def _check_name(name: str, key: Any) -> str:
    """Check that `key` can name an HDF5 dataset."""
    if not isinstance(key, str):
        raise TypeError(
            f"The keys of `{name}` must be strings, got {type(key).__name__} {key!r}."
        )
    if key in ("", ".", "..") or "/" in key:
        raise ValueError(
            f"`{name}` has the key {key!r}, which cannot name an HDF5 dataset: use a "
            "non-empty name without '/' (and not '.' or '..')."
        )
    return key


def _numeric_array(name: str, value: Any) -> np.ndarray:
    """`value` as a host NumPy array of a bool/int/float/complex dtype."""
    try:
        array = _to_numpy(value)
    except Exception as err:
        raise TypeError(
            f"`{name}` must be convertible to a numeric array, got "
            f"{type(value).__name__} ({err})."
        ) from err
    if array.dtype.kind not in "biufc":
        raise TypeError(
            f"`{name}` must be a numeric (bool, int, float or complex) array, got "
            f"dtype {array.dtype}."
        )
    return array


def _check_arrays(name: str, arrays: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    if arrays is None:
        return {}
    return {
        _check_name(name, key): _numeric_array(f"{name}[{key!r}]", value)
        for key, value in arrays.items()
    }


def _check_history(
    history: Mapping[str, Any] | None, *, require_step: bool
) -> dict[str, np.ndarray]:
    """Validate a training history: 1-D arrays of one common length.

    Returns the arrays on the host, `"step"` first when present.
    """
    arrays = _check_arrays("history", history)
    if history is not None and require_step and "step" not in arrays:
        raise ValueError(
            "`history` must contain a 'step' array (the step of every logged row), "
            f"got the keys {sorted(arrays)}."
        )
    for key, array in arrays.items():
        if array.ndim != 1:
            raise ValueError(
                f"`history[{key!r}]` must be 1-D (one value per logged step), got "
                f"shape {array.shape}."
            )
    if arrays:
        first = "step" if "step" in arrays else next(iter(arrays))
        length = len(arrays[first])
        for key, array in arrays.items():
            if len(array) != length:
                raise ValueError(
                    f"`history[{key!r}]` has length {len(array)} but "
                    f"`history[{first!r}]` has length {length}; every history array "
                    "needs one value per logged step (use NaN where a value was not "
                    "computed)."
                )
        arrays = {first: arrays[first]} | arrays
    return arrays


def _check_json(name: str, value: Any) -> None:
    """Raise a `TypeError` naming the first entry that JSON cannot round-trip."""
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"`{name}` must be JSON-serialisable with string keys, got the "
                    f"{type(key).__name__} key {key!r}."
                )
            _check_json(f"{name}[{key!r}]", item)
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(f"{name}[{i}]", item)
        return
    hint = ""
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        hint = " Convert arrays and NumPy scalars with `.tolist()` / `float(...)`."
    raise TypeError(
        f"`{name}` must be JSON-serialisable (dict with str keys, list, str, int, "
        f"float, bool, None), got {type(value).__name__}.{hint}"
    )


def _to_json(name: str, value: Mapping[str, Any] | None) -> str:
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise TypeError(f"`{name}` must be a dict, got {type(value).__name__}.")
    _check_json(name, value)
    return json.dumps(value, ensure_ascii=False)


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_format(
    attrs: Mapping[str, Any],
    path: pathlib.Path,
    *,
    format: str,
    version: int,
    what: str,
    error: type[Exception] = ValueError,
) -> None:
    """Raise `error` unless `attrs` mark a file of `format`, version <= `version`."""
    if attrs.get("format") != format:
        raise error(
            f"'{path}' is not a sciinr {what} (its `format` attribute is "
            f"{attrs.get('format')!r}, expected {format!r})."
        )
    found = attrs.get("format_version")
    if not isinstance(found, int) or found > version:
        raise error(
            f"'{path}' has {what} format version {found!r}; this sciinr reads "
            f"version {version} and earlier. Upgrade sciinr."
        )


def _umask() -> int:
    # Read-and-restore is the only portable way to read the umask (not thread-safe,
    # but the window is two system calls).
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_h5(path: pathlib.Path, what: str) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file next to `path`; rename it onto `path` on success.

    On any exception the temporary file is removed and the exception propagates, so
    `path` either keeps its previous content or does not exist.
    """
    parent = path.parent
    if path.is_dir():
        raise IsADirectoryError(
            f"Cannot write the {what} to '{path}': it is a directory. Pass a file "
            f"name, e.g. '{path / 'run.h5'}'."
        )
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write the {what} to '{path}': the directory '{parent}' does not "
            f"exist. Create it first: `pathlib.Path({str(parent)!r})"
            ".mkdir(parents=True)`."
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise type(err)(
            err.errno,
            f"Cannot write the {what} to '{path}': cannot create a file in "
            f"'{parent}' ({err.strerror}).",
        ) from err
    try:
        os.close(fd)
        with h5py.File(tmp, "w", libver=_LIBVER) as file:
            yield file
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------
# Pytree (de)serialisation through `eqx.tree_serialise_leaves`
# --------------------------------------------------------------------------------------


def _leaf_kind(x: Any) -> str | None:
    """How a leaf is stored; `None` for leaves that are not stored (functions...)."""
    if _is_key(x):
        return "key"
    if isinstance(x, jax.Array | jax.ShapeDtypeStruct):
        return "jax"
    if isinstance(x, np.ndarray):
        return "numpy"
    if isinstance(x, np.generic):
        return "numpy_scalar"
    if isinstance(x, bool | int | float | complex):
        return "python"
    return None


def _leaf_entry(path: Any, x: Any) -> dict[str, Any] | None:
    kind = _leaf_kind(x)
    if kind is None:
        return None
    if kind == "python":
        shape, dtype = (), type(x).__name__
    else:
        shape, dtype = tuple(np.shape(x)), str(x.dtype)
    entry = {"path": jtu.keystr(path), "kind": kind, "shape": list(shape)}
    entry["dtype"] = dtype
    if kind == "key" and isinstance(x, jax.Array):
        entry["impl"] = str(jr.key_impl(x))
    return entry


def _structure(tree: PyTree) -> list[dict[str, Any]]:
    """Key path, kind, shape and dtype of every stored leaf of `tree`, in order."""
    leaves = jtu.tree_flatten_with_path(tree)[0]
    entries = (_leaf_entry(path, x) for path, x in leaves)
    return [entry for entry in entries if entry is not None]


def _encode_for_save(x: Any) -> Any:
    """The host array that is serialised for a leaf."""
    kind = _leaf_kind(x)
    if kind is None:
        return x
    if kind == "jax" and isinstance(x, jax.ShapeDtypeStruct):
        raise TypeError("Cannot save a `jax.ShapeDtypeStruct`: it holds no values.")
    return _to_numpy(x)


def _encode_like(x: Any) -> Any:
    """The template leaf that `eqx.tree_deserialise_leaves` loads in place of `x`."""
    kind = _leaf_kind(x)
    if kind == "key":
        return jax.eval_shape(jr.key_data, x)
    if kind in ("numpy_scalar", "python"):
        return np.asarray(x)
    return x


def _decode(x: Any, like: Any, entry: dict[str, Any] | None) -> Any:
    """Turn a loaded leaf back into the type of its template leaf `like`."""
    kind = _leaf_kind(like)
    if kind is None:
        return like
    if kind == "key":
        # The template's implementation when it has one, else the recorded one.
        if isinstance(like, jax.Array):
            impl = str(jr.key_impl(like))
        else:
            impl = None if entry is None else entry.get("impl")
        if not isinstance(impl, str):
            raise ValueError("the PRNG implementation of a typed key is not recorded")
        x = jr.wrap_key_data(x, impl=impl)
        if x.dtype != like.dtype:
            raise ValueError(f"a key of dtype {x.dtype} was loaded for {like.dtype}")
    if kind == "python":
        return type(like)(x.item())
    if kind == "numpy_scalar":
        return x[()]
    sharding = getattr(like, "sharding", None)
    if kind in ("jax", "key") and sharding is not None:
        x = jax.device_put(x, sharding)
    return x


def _serialise(tree: PyTree) -> tuple[bytes, list[dict[str, Any]]]:
    """The `eqx.tree_serialise_leaves` bytes of `tree`, and its structure."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, jtu.tree_map(_encode_for_save, tree))
    return buffer.getvalue(), _structure(tree)


def _deserialise(
    data: bytes, like: PyTree, structure: list[dict[str, Any]] | None = None
) -> PyTree:
    """Rebuild a pytree like `like` from `_serialise` bytes.

    `structure` is the stored structure (for the PRNG implementation of typed keys);
    it must already have been checked against `like`. Raises `ValueError` when the
    bytes do not match `like`.
    """
    buffer = io.BytesIO(data)
    loaded = eqx.tree_deserialise_leaves(buffer, jtu.tree_map(_encode_like, like))
    if buffer.tell() != len(data):
        raise ValueError(
            f"{len(data) - buffer.tell()} bytes are left over after reading every "
            "leaf of the template: it has fewer arrays than the saved pytree."
        )
    by_path = {entry["path"]: entry for entry in structure or []}

    def decode(path, x, like_leaf):
        return _decode(x, like_leaf, by_path.get(jtu.keystr(path)))

    return jtu.tree_map_with_path(decode, loaded, like)


def _structure_mismatch(
    stored: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> str | None:
    """Describe the first leaf where two structures differ, or `None` if they agree."""

    def describe(entry):
        shape = tuple(entry["shape"])
        return f"shape {shape} dtype {entry['dtype']}"

    for saved, wanted in zip(stored, expected):
        if saved["path"] != wanted["path"]:
            return (
                f"leaf {saved['path']} ({describe(saved)}) is stored where the "
                f"template has leaf {wanted['path']} ({describe(wanted)})"
            )
        if saved["shape"] != wanted["shape"] or saved["dtype"] != wanted["dtype"]:
            return (
                f"leaf {saved['path']} has {describe(saved)} in the file but "
                f"{describe(wanted)} in the template"
            )
    if len(stored) > len(expected):
        extra = stored[len(expected)]
        return (
            f"the file has {len(stored)} array leaves but the template only "
            f"{len(expected)}; the first extra one is {extra['path']} "
            f"({describe(extra)})"
        )
    if len(stored) < len(expected):
        missing = expected[len(stored)]
        return (
            f"the template has {len(expected)} array leaves but the file only "
            f"{len(stored)}; the first missing one is {missing['path']} "
            f"({describe(missing)})"
        )
    return None


def _param_names(tree: PyTree) -> dict[str, tuple[str, np.ndarray]]:
    """`{dataset name: (key path, array)}` for every array leaf of `tree`."""
    names: dict[str, tuple[str, np.ndarray]] = {}
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if not eqx.is_array(leaf):
            continue
        name = jtu.keystr(path, simple=True, separator=".").replace("/", "_")
        if name in ("", ".", ".."):
            name = "root" if name == "" else "_" + name
        unique, i = name, 1
        while unique in names:
            i += 1
            unique = f"{name}~{i}"
        names[unique] = (jtu.keystr(path), _to_numpy(leaf))
    return names


# --------------------------------------------------------------------------------------
# Run files
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """The content of a run file, as returned by [`sciinr.io.load_run`][].

    - `attrs`: the root attributes (`format`, `sciinr_version`, `created`, `problem`,
      `field`, `seed`, `devices`, ...), with `config` decoded from JSON.
    - `config`: the run configuration, exactly as it was saved (tuples come back as
      lists).
    - `history`: `{name: (n_logged,) array}`, including `"step"`.
    - `metrics`: `{name: float}`, the final metrics.
    - `predictions`: `{name: array}`.
    - `coordinates`: `{name: (n,) array}`, the coordinate axes of the predictions.
    - `params`: `{name: array}`, every array leaf of the field, named as described in
      [`sciinr.io.save_run`][].
    - `field`: the field rebuilt from `/model` when `load_run` was given a template,
      else `None`.
    """

    attrs: dict[str, Any]
    config: dict[str, Any]
    history: dict[str, np.ndarray]
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]
    coordinates: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    field: Any = None


Run.__init__.__doc__ = """Built by [`sciinr.io.load_run`][]; see the class docstring."""


def _check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(
                f"The keys of `metrics` must be non-empty strings, got {key!r}."
            )
        array = _numeric_array(f"metrics[{key!r}]", value)
        if array.ndim != 0 or array.dtype.kind == "c":
            raise ValueError(
                f"`metrics[{key!r}]` must be a real scalar, got shape {array.shape} "
                f"dtype {array.dtype}. Save arrays as `predictions` or `history`."
            )
        out[key] = float(array)
    return out


def save_run(
    path: _PathLike,
    field: PyTree,
    *,
    history: Mapping[str, ArrayLike] | None = None,
    metrics: Mapping[str, float | ArrayLike] | None = None,
    predictions: Mapping[str, ArrayLike] | None = None,
    coordinates: Mapping[str, ArrayLike] | None = None,
    config: Mapping[str, Any] | None = None,
    problem: str | None = None,
    seed: int | None = None,
) -> pathlib.Path:
    """Write the HDF5 run file of a training run.

    The file is readable with plain `h5py` (no sciinr needed) and, because the
    coordinates are HDF5 dimension scales, `xarray.open_datatree(path,
    engine="h5netcdf")` shows the predictions with named dimensions and coordinates.
    Layout:

    ```
    /                    attrs: format="sciinr", format_version=1, sciinr_version,
                         jax_version, created (ISO-8601, UTC), problem, field (repr),
                         seed, devices, config (JSON)
    /history/step        (n_logged,), a dimension scale
    /history/<name>      (n_logged,), attached to /history/step
    /metrics             attrs: <name> = float
    /predictions/<name>  the predicted arrays
    /predictions/<coord> (n,) coordinate axes: dimension scales with `units` and
                         `long_name` attributes, attached to the prediction axes
    /params/<name>       every array leaf of `field`; attribute `path` = jtu.keystr
    /model               uint8 bytes of `eqx.tree_serialise_leaves(field)`; attr sha256
    ```

    Coordinates live next to the predictions (not in a group of their own) so that
    netCDF readers, which look up dimensions in the variable's group and its
    parents, see them. The `i`-th coordinate labels axis `i` of every prediction
    whose axis `i` has the coordinate's length, for `i = 0, 1, ...` up to the first
    axis that does not match (so `x`, `y` label `(H, W)` and `(H, W, C)` images, and
    nothing of a `(n_angles, n_detectors)` sinogram of other sizes). The remaining
    axes get netCDF dimensions without values (empty dimension-scale datasets
    `/predictions/<name>_dim_<axis>`, skipped by `load_run`), because netCDF
    readers reject partly labelled variables.

    Parameter names are the `jtu.keystr(path, simple=True, separator=".")` of the
    leaf, with `/` replaced by `_`: `.layers[0].weight` is stored as
    `/params/layers.0.weight`, `['mu'][1]` as `/params/mu.1`. A name that would
    repeat gets a `~2`, `~3`, ... suffix; the exact key path is kept in the
    dataset's `path` attribute. Typed PRNG keys are stored as their `key_data`.
    Leaves that are not arrays (activation functions, Python scalars) are not
    written to `/params` (Python scalars are still part of `/model`).

    The file is first written to a temporary file in the same directory
    (`.<name>.<random>.tmp`), then renamed onto `path`: a failure leaves no file at
    `path` (and an existing file there untouched). In a multi-process run only
    process 0 writes; the others validate the arguments and return.

    **Arguments:**

    - `path`: the file to write (conventionally `*.h5`); its directory must exist.
    - `field`: the trained field (any pytree, usually an `eqx.Module`).
    - `history`: `{name: (n_logged,) array}`, one value per logged step, including
      `"step"`. NaN marks values not computed at a step.
    - `metrics`: `{name: scalar}`, the final metrics (stored as floats).
    - `predictions`: `{name: array}`, e.g. the output of `problem.predict(field)`.
    - `coordinates`: `{name: (n,) array}`, e.g. `problem.coordinates()`, in axis
      order.
    - `config`: the run's configuration; JSON-serialisable, read back exactly.
    - `problem`: a name or `repr` of the problem.
    - `seed`: the seed of the run.

    **Returns:**

    `path`, as a `pathlib.Path`.

    **Raises:**

    - `ValueError`: a history array is not 1-D, the lengths differ or `"step"` is
      missing; a metric is not a scalar; a name cannot name an HDF5 dataset; a
      coordinate is not 1-D or shares its name with a prediction.
    - `TypeError`: `config` is not JSON-serialisable; an array is not numeric.
    - `FileNotFoundError` / `PermissionError`: the directory of `path` does not
      exist or is not writable.

    !!! example

        Reading a run file with plain `h5py`:

        ```python
        import h5py, json

        with h5py.File("run.h5", "r") as f:
            config = json.loads(f.attrs["config"])
            steps = f["history/step"][:]
            loss = f["history/loss"][:]
            psnr = f["metrics"].attrs["psnr_test"]
            image = f["predictions/image"][:]
            x = f["predictions/image"].dims[0][0][:]  # its first coordinate axis
        ```
    """
    path = pathlib.Path(path)
    history_arrays = _check_history(history, require_step=True)
    metric_values = _check_metrics(metrics)
    prediction_arrays = _check_arrays("predictions", predictions)
    coordinate_arrays = _check_arrays("coordinates", coordinates)
    for key, array in coordinate_arrays.items():
        if array.ndim != 1:
            raise ValueError(
                f"`coordinates[{key!r}]` must be 1-D (the values along one axis), got "
                f"shape {array.shape}."
            )
        if key in prediction_arrays:
            raise ValueError(
                f"`coordinates` and `predictions` both have the name {key!r}; both are "
                "stored in /predictions, so rename one of them."
            )
    config_json = _to_json("config", config)
    if problem is not None and not isinstance(problem, str):
        raise TypeError(f"`problem` must be a string, got {type(problem).__name__}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}.")
    if jax.process_index() != 0:
        return path

    params = _param_names(field)
    model_bytes, model_structure = _serialise(field)
    attrs: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "sciinr_version": _sciinr_version(),
        "jax_version": jax.__version__,
        "created": _now(),
    }
    if problem is not None:
        attrs["problem"] = problem
    attrs["field"] = repr(field)
    if seed is not None:
        attrs["seed"] = seed
    attrs["devices"] = str(jax.devices())
    attrs["config"] = config_json

    with _atomic_h5(path, "run file") as file:
        file.attrs.update(attrs)

        group = file.create_group("history", track_order=True)
        datasets = {
            key: group.create_dataset(key, data=array)
            for key, array in history_arrays.items()
        }
        if datasets:
            step = datasets.pop("step")
            step.make_scale("step")
            for dataset in datasets.values():
                dataset.dims[0].attach_scale(step)

        group = file.create_group("metrics", track_order=True)
        group.attrs.update(metric_values)

        group = file.create_group("predictions", track_order=True)
        datasets = {
            key: group.create_dataset(key, data=array)
            for key, array in prediction_arrays.items()
        }
        scales = []
        for key, array in coordinate_arrays.items():
            scale = group.create_dataset(key, data=array)
            scale.make_scale(key)
            scale.attrs["units"] = "1"
            scale.attrs["long_name"] = f"{key} coordinate"
            scales.append(scale)
        for key, dataset in datasets.items():
            labelled = 0
            for axis, scale in enumerate(scales):
                if axis >= dataset.ndim or dataset.shape[axis] != scale.shape[0]:
                    break
                dataset.dims[axis].attach_scale(scale)
                labelled += 1
            # netCDF readers (h5netcdf) reject partly labelled variables and guess
            # dimensions of unlabelled ones: name the other axes, without values.
            for axis in range(labelled, dataset.ndim):
                name = f"{key}_dim_{axis}"
                while name in group:
                    name += "_"
                size = dataset.shape[axis]
                dimension = group.create_dataset(name, shape=(size,), dtype=">f4")
                dimension.make_scale(_NOT_A_VARIABLE + f"{size:10}")
                dataset.dims[axis].attach_scale(dimension)

        group = file.create_group("params", track_order=True)
        for name, (key_path, array) in params.items():
            group.create_dataset(name, data=array).attrs["path"] = key_path

        model = file.create_dataset(
            "model", data=np.frombuffer(model_bytes, dtype=np.uint8)
        )
        model.attrs["sha256"] = hashlib.sha256(model_bytes).hexdigest()
        model.attrs["serialisation"] = "equinox.tree_serialise_leaves"
        model.attrs["structure"] = json.dumps(model_structure)
    return path


def load_run(path: _PathLike, field: PyTree | None = None) -> Run:
    """Read a run file written by [`sciinr.io.save_run`][].

    **Arguments:**

    - `path`: the run file.
    - `field`: optional template with the structure of the saved field (e.g. the
      same constructor called with any key, or `eqx.filter_eval_shape` of it); its
      array leaves are replaced by the saved ones.

    **Returns:**

    A [`sciinr.io.Run`][]; `Run.field` is the rebuilt field when `field` is given,
    else `None`.

    **Raises:**

    - `FileNotFoundError`: there is no file at `path`.
    - `ValueError`: the file is not an HDF5 file, not a sciinr run file, its
      `/model` bytes are corrupted, or `field` does not match the saved field.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No run file at '{path}'.")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"'{path}' is not a readable HDF5 file (truncated or not HDF5): {err}"
        ) from err
    with file:
        attrs = {key: _attr_value(value) for key, value in file.attrs.items()}
        _check_format(
            attrs, path, format=RUN_FORMAT, version=RUN_FORMAT_VERSION, what="run file"
        )
        config = json.loads(attrs.get("config", "{}"))
        attrs["config"] = config

        def read(name):
            if name not in file:
                return {}
            return {key: ds[()] for key, ds in file[name].items()}

        history = read("history")
        metrics = {}
        if "metrics" in file:
            metrics = {k: float(v) for k, v in file["metrics"].attrs.items()}
        predictions, coordinates = {}, {}
        for key, array in read("predictions").items():
            dataset = file["predictions"][key]
            if not h5py.h5ds.is_scale(dataset.id):
                predictions[key] = array
            elif _NOT_A_VARIABLE not in _attr_value(dataset.attrs.get("NAME", b"")):
                coordinates[key] = array
        params = read("params")
        model_bytes, structure = b"", None
        if "model" in file:
            model = file["model"]
            model_bytes = model[()].tobytes()
            expected = _attr_value(model.attrs.get("sha256"))
            if expected is not None and (
                hashlib.sha256(model_bytes).hexdigest() != expected
            ):
                raise ValueError(
                    f"The /model bytes of '{path}' are corrupted (checksum "
                    "mismatch): their SHA-256 does not match the stored checksum."
                )
            if "structure" in model.attrs:
                structure = json.loads(_attr_value(model.attrs["structure"]))

    rebuilt = None
    if field is not None:
        mismatch = (
            None
            if structure is None
            else _structure_mismatch(structure, _structure(field))
        )
        if mismatch is not None:
            raise ValueError(
                f"The template `field` does not match the field saved in '{path}': "
                f"{mismatch}. Build the template with the same architecture."
            )
        try:
            rebuilt = _deserialise(model_bytes, field, structure)
        except Exception as err:
            raise ValueError(
                f"Cannot rebuild the field of '{path}' from the template `field`: "
                f"{err}. Build the template with the same architecture as the saved "
                "field."
            ) from err
    return Run(
        attrs=attrs,
        config=config,
        history=history,
        metrics=metrics,
        predictions=predictions,
        coordinates=coordinates,
        params=params,
        field=rebuilt,
    )
