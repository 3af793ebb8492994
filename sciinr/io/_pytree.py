"""Pytree (de)serialisation through `eqx.tree_serialise_leaves`.

Typed PRNG keys and Python scalars become plain NumPy arrays; the structure (key path,
kind, shape and dtype of every stored leaf) is recorded so that a mismatching
template is reported by name before anything is deserialised. Nothing is pickled.
"""

import io
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree


def is_key(x: Any) -> bool:
    """Whether `x` is a typed PRNG key array (or its `ShapeDtypeStruct`)."""
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of an array; typed keys become their raw `key_data`.

    A JAX array replicated over several hosts is read from this host's copy.
    """
    if is_key(x):
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


def _leaf_kind(x: Any) -> str | None:
    """How a leaf is stored; `None` for leaves that are not stored (functions...)."""
    if is_key(x):
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


def leaf_structure(tree: PyTree) -> list[dict[str, Any]]:
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
    return to_numpy(x)


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


def serialise(tree: PyTree) -> tuple[bytes, list[dict[str, Any]]]:
    """The `eqx.tree_serialise_leaves` bytes of `tree`, and its structure."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, jtu.tree_map(_encode_for_save, tree))
    return buffer.getvalue(), leaf_structure(tree)


def deserialise(
    data: bytes, like: PyTree, structure: list[dict[str, Any]] | None = None
) -> PyTree:
    """Rebuild a pytree like `like` from `serialise` bytes.

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


def structure_mismatch(
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


def param_names(tree: PyTree) -> dict[str, tuple[str, np.ndarray]]:
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
        names[unique] = (jtu.keystr(path), to_numpy(leaf))
    return names
