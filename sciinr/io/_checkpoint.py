"""Checkpoints: atomic, integrity-checked HDF5 snapshots of a training state."""

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

from ..checks import check_nonnegative_int
from ._atomic import atomic_h5, PathLike
from ._format import attr_value, check_format, now, sciinr_version
from ._pytree import deserialise, leaf_structure, serialise, structure_mismatch
from ._validate import check_history, to_json


CHECKPOINT_FORMAT = "sciinr-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: missing, unreadable, corrupted, or not matching.

    Raised by [`sciinr.io.load_checkpoint`][]; the message names the file and what is
    wrong with it.
    """


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A training state read back by [`sciinr.io.load_checkpoint`][].

    - `state`: the saved pytree, with the structure and leaf types of `like`.
    - `step`: the step at which it was saved.
    - `history`: `{name: (n_logged,) array}` saved with it.
    - `meta`: the JSON metadata saved with it.
    """

    state: Any
    step: int
    history: dict[str, np.ndarray]
    meta: dict[str, Any]


Checkpoint.__init__.__doc__ = (
    "Built by [`sciinr.io.load_checkpoint`][]; see the class docstring."
)


def save_checkpoint(
    path: PathLike,
    state: PyTree,
    *,
    step: int,
    history: Mapping[str, ArrayLike] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write a checkpoint of a training state, atomically.

    The state (any pytree of JAX/NumPy arrays, typed PRNG keys, Python and NumPy
    scalars and `None`; other leaves, such as functions, are not stored and come back
    from the template) is serialised with `eqx.tree_serialise_leaves` (`np.save`
    per leaf, never pickle), after turning typed keys into their `key_data` and
    Python scalars into NumPy arrays. Layout:

    ```
    /          attrs: format="sciinr-checkpoint", format_version=1, step, sha256,
               structure (JSON: path, kind, shape, dtype of every stored leaf),
               meta (JSON), sciinr_version, jax_version, created
    /state     uint8 bytes of the serialised leaves (sha256 in the root attrs)
    /history/<name>  (n_logged,) arrays
    ```

    The file is written to a temporary file in the same directory and renamed onto
    `path`, so an interrupted save keeps the previous checkpoint. Only process 0
    writes in a multi-process run.

    **Arguments:**

    - `path`: the checkpoint file; its directory must exist.
    - `state`: the pytree to save (field, optimizer state, PRNG key, ...).
    - `step`: the number of steps taken so far.
    - `history`: `{name: (n_logged,) array}` of one common length (NaN for values not
      computed at a step).
    - `meta`: JSON-serialisable metadata (e.g. the run's configuration).

    **Returns:**

    `path`, as a `pathlib.Path`.

    **Raises:**

    - `ValueError`: `step` is negative, a history array is not 1-D or the lengths
      differ.
    - `TypeError`: `meta` is not JSON-serialisable; `state` has a leaf that cannot be
      saved.
    - `FileNotFoundError` / `PermissionError`: the directory of `path` does not
      exist or is not writable.
    """
    path = pathlib.Path(path)
    step = check_nonnegative_int("step", step)
    history_arrays = check_history(history, require_step=False)
    meta_json = to_json("meta", meta)
    if jax.process_index() != 0:
        return path
    data, structure = serialise(state)
    with atomic_h5(path, "checkpoint") as file:
        file.attrs.update(
            {
                "format": CHECKPOINT_FORMAT,
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "step": step,
                "sha256": hashlib.sha256(data).hexdigest(),
                "structure": json.dumps(structure),
                "meta": meta_json,
                "sciinr_version": sciinr_version(),
                "jax_version": jax.__version__,
                "created": now(),
            }
        )
        file.create_dataset("state", data=np.frombuffer(data, dtype=np.uint8))
        group = file.create_group("history", track_order=True)
        for key, array in history_arrays.items():
            group.create_dataset(key, data=array)
    return path


def _read(path: pathlib.Path) -> tuple[dict[str, Any], bytes, dict[str, np.ndarray]]:
    """Root attributes, state bytes and history of a checkpoint file."""
    if not path.exists():
        raise CheckpointError(f"No checkpoint at '{path}': the file does not exist.")
    if not path.is_file():
        raise CheckpointError(f"Cannot load checkpoint '{path}': it is not a file.")
    try:
        with h5py.File(path, "r") as file:
            attrs = {key: attr_value(value) for key, value in file.attrs.items()}
            check_format(
                attrs,
                f"'{path}'",
                format=CHECKPOINT_FORMAT,
                version=CHECKPOINT_FORMAT_VERSION,
                what="checkpoint",
                error=CheckpointError,
            )
            state = file.get("state")
            if (
                not isinstance(state, h5py.Dataset)
                or state.dtype != np.uint8
                or state.ndim != 1
            ):
                raise CheckpointError(
                    f"Checkpoint '{path}' has no /state dataset of bytes; it is not a "
                    "complete sciinr checkpoint."
                )
            data = state[()].tobytes()
            history = {}
            if "history" in file:
                history = {key: ds[()] for key, ds in file["history"].items()}
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"Cannot read checkpoint '{path}': it is not an HDF5 file, or it is "
            f"truncated or corrupted ({err})."
        ) from err
    return attrs, data, history


def _is_structure(structure: Any) -> bool:
    """Whether a decoded `structure` attribute has the layout that we write."""
    return isinstance(structure, list) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and isinstance(entry.get("shape"), list)
        and isinstance(entry.get("dtype"), str)
        for entry in structure
    )


def load_checkpoint(path: PathLike, like: PyTree) -> Checkpoint:
    """Read a checkpoint written by [`sciinr.io.save_checkpoint`][].

    Safe on files from untrusted sources: nothing is unpickled or evaluated; leaves
    are read with `np.load(allow_pickle=False)` after the stored structure has been
    checked against `like`.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a template with the structure of the saved state (e.g. the freshly
      built field, optimizer state and key of the run being resumed, or
      `eqx.filter_eval_shape` of them); it provides the shapes, dtypes and leaf
      types of the result, and the leaves that are not stored.

    **Returns:**

    A [`sciinr.io.Checkpoint`][]. JAX array leaves come back as JAX arrays with the
    sharding of the corresponding leaf of `like`, typed keys as typed keys, NumPy
    and Python scalars as such.

    **Raises:**

    - `CheckpointError` (a `ValueError`): the file does not exist, is not an HDF5
      file or is truncated, is not a sciinr checkpoint, its bytes do not match their
      SHA-256 (corrupted: the checksum guards against accidents, not against someone
      who rewrites the file; safety against malicious files comes from never
      unpickling), its structure differs from `like` (the
      message names the first differing leaf and both shapes/dtypes), or its leaves
      cannot be deserialised.
    """
    path = pathlib.Path(path)
    attrs, data, history = _read(path)
    if hashlib.sha256(data).hexdigest() != attrs.get("sha256"):
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupted (checksum mismatch): the SHA-256 of "
            "its /state bytes does not match the checksum stored in the file."
        )
    try:
        structure = json.loads(attrs["structure"])
        meta = json.loads(attrs.get("meta", "{}"))
        step = attrs["step"]
        if not isinstance(step, int) or not _is_structure(structure):
            raise TypeError("malformed `structure` or `step` attribute")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint '{path}' has malformed metadata attributes ({err})."
        ) from err
    mismatch = structure_mismatch(structure, leaf_structure(like))
    if mismatch is not None:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the template `like`: {mismatch}. "
            "Was the model, the optimizer or the problem changed since the checkpoint "
            "was written? Resume with the same configuration, or start a new run."
        )
    try:
        state = deserialise(data, like, structure)
    except Exception as err:
        raise CheckpointError(
            f"Cannot deserialise checkpoint '{path}' into the template `like`: {err}"
        ) from err
    return Checkpoint(state=state, step=step, history=history, meta=meta)
