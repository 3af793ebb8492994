"""Run files: one HDF5 file per training run, readable with plain `h5py`."""

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import h5py
import jax
import numpy as np
from jaxtyping import ArrayLike, PyTree

from ._atomic import atomic_h5, PathLike
from ._format import (
    attr_value,
    check_format,
    now,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    sciinr_version,
)
from ._pytree import (
    deserialise,
    leaf_structure,
    param_names,
    serialise,
    structure_mismatch,
)
from ._validate import check_arrays, check_history, check_metrics, to_json


# The netCDF-4 convention for a dimension without coordinate values.
_NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."


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


def save_run(
    path: PathLike,
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
    content = _prepare(
        field,
        history=history,
        metrics=metrics,
        predictions=predictions,
        coordinates=coordinates,
        config=config,
        problem=problem,
        seed=seed,
    )
    if jax.process_index() != 0:
        return path
    with atomic_h5(path, "run file") as file:
        _write(file, content)
    return path


def write_run(
    group: h5py.Group,
    field: PyTree,
    *,
    history: Mapping[str, ArrayLike] | None = None,
    metrics: Mapping[str, float | ArrayLike] | None = None,
    predictions: Mapping[str, ArrayLike] | None = None,
    coordinates: Mapping[str, ArrayLike] | None = None,
    config: Mapping[str, Any] | None = None,
    problem: str | None = None,
    seed: int | None = None,
) -> h5py.Group:
    """Write a run in the run-file layout into an open HDF5 group.

    The layout of [`sciinr.io.save_run`][], rooted at `group` instead of at a file's
    root: a file can then hold many runs (one group per cell of a study), each
    readable with [`sciinr.io.read_run`][] or plain `h5py`. Unlike `save_run` this
    does not make the write atomic: open a temporary file, write, and rename it (as
    `save_run` does) when the file must never be seen half-written.

    **Arguments:**

    - `group`: an empty `h5py.Group` (or `h5py.File`) open for writing.
    - The other arguments: as for [`sciinr.io.save_run`][].

    **Returns:**

    `group`.

    **Raises:**

    As `save_run`, and `ValueError` if `group` is not empty.
    """
    if len(group) or len(group.attrs):
        raise ValueError(
            f"`group` {group.name!r} must be empty to hold a run; it has "
            f"{len(group)} member(s) and {len(group.attrs)} attribute(s)."
        )
    content = _prepare(
        field,
        history=history,
        metrics=metrics,
        predictions=predictions,
        coordinates=coordinates,
        config=config,
        problem=problem,
        seed=seed,
    )
    _write(group, content)
    return group


@dataclasses.dataclass(frozen=True)
class _Content:
    """A run's validated content, ready to write."""

    field: PyTree
    history: dict[str, np.ndarray]
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]
    coordinates: dict[str, np.ndarray]
    config_json: str
    problem: str | None
    seed: int | None


def _prepare(
    field: PyTree,
    *,
    history,
    metrics,
    predictions,
    coordinates,
    config,
    problem,
    seed,
) -> _Content:
    """Validate everything a run holds, before anything touches the disk."""
    history_arrays = check_history(history, require_step=True)
    metric_values = check_metrics(metrics)
    prediction_arrays = check_arrays("predictions", predictions)
    coordinate_arrays = check_arrays("coordinates", coordinates)
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
    config_json = to_json("config", config)
    if problem is not None and not isinstance(problem, str):
        raise TypeError(f"`problem` must be a string, got {type(problem).__name__}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}.")
    return _Content(
        field=field,
        history=history_arrays,
        metrics=metric_values,
        predictions=prediction_arrays,
        coordinates=coordinate_arrays,
        config_json=config_json,
        problem=problem,
        seed=seed,
    )


def _write(file: h5py.Group, content: _Content) -> None:
    """Write validated content into `file` (a file or a group)."""
    field = content.field
    problem, seed, config_json = content.problem, content.seed, content.config_json
    history_arrays, metric_values = content.history, content.metrics
    prediction_arrays, coordinate_arrays = content.predictions, content.coordinates
    params = param_names(field)
    model_bytes, model_structure = serialise(field)
    attrs: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "sciinr_version": sciinr_version(),
        "jax_version": jax.__version__,
        "created": now(),
    }
    if problem is not None:
        attrs["problem"] = problem
    attrs["field"] = repr(field)
    if seed is not None:
        attrs["seed"] = seed
    attrs["devices"] = str(jax.devices())
    attrs["config"] = config_json

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


def load_run(path: PathLike, field: PyTree | None = None) -> Run:
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
        return _read(file, field, where=f"'{path}'")


def read_run(group: h5py.Group, field: PyTree | None = None) -> Run:
    """Read a run written by [`sciinr.io.write_run`][] into an HDF5 group.

    **Arguments:**

    - `group`: an open `h5py.Group` (or `h5py.File`) holding a run.
    - `field`: optional template of the saved field, as for
      [`sciinr.io.load_run`][].

    **Returns:**

    A [`sciinr.io.Run`][].

    **Raises:**

    `ValueError` as for `load_run`.
    """
    return _read(group, field, where=f"group {group.name!r} of '{group.file.filename}'")


def _read(file: h5py.Group, field: PyTree | None, *, where: str) -> Run:
    """The run rooted at `file` (a file or a group); `where` names it in errors."""
    attrs = {key: attr_value(value) for key, value in file.attrs.items()}
    check_format(
        attrs, where, format=RUN_FORMAT, version=RUN_FORMAT_VERSION, what="run file"
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
        elif _NOT_A_VARIABLE not in attr_value(dataset.attrs.get("NAME", b"")):
            coordinates[key] = array
    params = read("params")
    model_bytes, structure = b"", None
    if "model" in file:
        model = file["model"]
        model_bytes = model[()].tobytes()
        expected = attr_value(model.attrs.get("sha256"))
        if expected is not None and (
            hashlib.sha256(model_bytes).hexdigest() != expected
        ):
            raise ValueError(
                f"The /model bytes of {where} are corrupted (checksum "
                "mismatch): their SHA-256 does not match the stored checksum."
            )
        if "structure" in model.attrs:
            structure = json.loads(attr_value(model.attrs["structure"]))

    rebuilt = None
    if field is not None:
        mismatch = (
            None
            if structure is None
            else structure_mismatch(structure, leaf_structure(field))
        )
        if mismatch is not None:
            raise ValueError(
                f"The template `field` does not match the field saved in {where}: "
                f"{mismatch}. Build the template with the same architecture."
            )
        try:
            rebuilt = deserialise(model_bytes, field, structure)
        except Exception as err:
            raise ValueError(
                f"Cannot rebuild the field of {where} from the template `field`: "
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
