"""The HDF5 cache of generated operator datasets.

A dataset is a deterministic function of its generation parameters (operator, its
constants, the input-function space, the grids, the number of functions, the key
and the generator's version). Its file name holds a hash of all of them and its
attributes hold them in full: a file is reused only when the stored parameters are
exactly the requested ones, and a file with other parameters (or a damaged one) is
regenerated and replaced. Files are written to a temporary name in the same folder,
flushed, then renamed onto their final name, so a crash never leaves a partial file
where a reader would take it for a dataset.
"""

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

import sciinr.io


FORMAT = "sciinr-operator-dataset"
"""The `format` attribute of a cache file."""


def default_cache_dir() -> pathlib.Path:
    """The per-user cache folder: `$XDG_CACHE_HOME/sciinr`, or `~/.cache/sciinr`
    when `XDG_CACHE_HOME` is not set (read at call time)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return pathlib.Path(base) / "sciinr"


def resolve_cache(cache: Any) -> pathlib.Path | None:
    """The folder that `cache=` names: `True` the per-user default, `None` or `False`
    no cache, a path that folder (created when first written)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return default_cache_dir() / "operator"
    if isinstance(cache, str | os.PathLike):
        path = pathlib.Path(cache)
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"`cache` must be a folder, got the file '{path}'. Pass a folder, "
                "`True` for the per-user cache or `None` to turn the cache off."
            )
        return path
    raise TypeError(
        "`cache` must be a folder (str or os.PathLike), `True` (the per-user cache "
        f"folder) or `None` (no cache), got {type(cache).__name__}."
    )


def _canonical(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"))


def cache_path(folder: pathlib.Path, name: str, parameters: Mapping[str, Any]):
    """`<folder>/<name>-<first 16 hex digits of sha256(parameters)>.h5`."""
    digest = hashlib.sha256(_canonical(parameters).encode()).hexdigest()[:16]
    return folder / f"{name}-{digest}.h5"


def load(
    path: pathlib.Path, parameters: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and attributes of the cache file at `path`, or `None` when it does
    not exist, cannot be read, or was generated with other parameters."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            if file.attrs.get("format") != FORMAT:
                return None
            if file.attrs.get("parameters") != _canonical(parameters):
                return None
            arrays = {name: file[name][()] for name in file}
            attrs = json.loads(file.attrs["info"])
    except (OSError, KeyError, ValueError):
        return None  # damaged or foreign: regenerate
    return arrays, attrs


def store(
    path: pathlib.Path,
    parameters: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
) -> None:
    """Write a cache file atomically ([`sciinr.io.atomic_h5`][])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sciinr.io.atomic_h5(path, "operator dataset cache file") as file:
        file.attrs["format"] = FORMAT
        file.attrs["parameters"] = _canonical(parameters)
        file.attrs["info"] = json.dumps(dict(info), sort_keys=True)
        for name, array in arrays.items():
            file.create_dataset(name, data=np.asarray(array))
