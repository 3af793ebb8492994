"""Arrays across the processes of a multi-process run (`jax.distributed`).

In a multi-process run every process holds a copy of the replicated arrays (field,
optimizer state, problem data) on its own devices, and sharded arrays (batches,
predictions) are split between processes. Moving such arrays is collective: every
process calls the same function on the same pytree, in the same order.

Every function here takes the plain single-process path whenever all devices belong
to this process, so single-process runs behave (and perform) exactly as without
them.
"""

import zlib
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from ..io._pytree import is_key


def process_count(mesh: Mesh | None) -> int:
    """The number of processes whose devices are in `mesh` (1 without a mesh)."""
    if mesh is None:
        return 1
    return len({device.process_index for device in mesh.devices.flat})


def _spans_processes(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def _host(x: Any) -> np.ndarray:
    """This process's host copy of a replicated array (typed keys: their data)."""
    if is_key(x):
        x = jr.key_data(x)
    if _spans_processes(x):
        if not x.is_fully_replicated:
            raise ValueError(
                "An array is sharded over several processes where a replicated one "
                f"was expected (shape {x.shape}, sharding {x.sharding})."
            )
        x = x.addressable_data(0)
    return np.asarray(x)


_SAME_EVERYWHERE = (
    "Every process must build the same problem and field and pass the same `key` "
    "(the same seed on every process, not one per process)."
)


def check_same(tree: PyTree, what: str, advice: str = _SAME_EVERYWHERE) -> None:
    """Raise a `ValueError` naming the first array of `tree` that is not the same on
    every process (compared by CRC-32 of its bytes, shape and dtype).

    A no-op on one process. Replicated values built independently on each process
    (the problem's data, the initial field, the key) must agree bit for bit, or the
    replicas would silently train different models. Collective: two small
    all-gathers.
    """
    if jax.process_count() == 1:
        return
    leaves = [
        (jtu.keystr(path), _host(x))
        for path, x in jtu.tree_leaves_with_path(tree)
        if eqx.is_array(x)
    ]
    prints = np.array(
        [
            zlib.crc32(f"{a.shape}{a.dtype}".encode() + np.ascontiguousarray(a).data)
            for _, a in leaves
        ],
        dtype=np.uint32,
    )
    counts = multihost_utils.process_allgather(np.array([len(prints)], np.int32))
    if len(set(counts.ravel().tolist())) > 1:
        raise ValueError(
            f"The {what} has a different number of arrays on different processes "
            f"(per process: {counts.ravel().tolist()}). {advice}"
        )
    gathered = multihost_utils.process_allgather(prints)  # (processes, leaves)
    differs = np.any(gathered != gathered[:1], axis=0)
    if differs.any():
        index = int(np.argmax(differs))
        process = int(np.argmax(gathered[:, index] != gathered[0, index]))
        raise ValueError(
            f"The {what} differs between processes: the array at "
            f"`{leaves[index][0]}` on process {process} is not the one on process 0. "
            + advice
        )


def _from_host(x: Any, sharding: NamedSharding) -> jax.Array:
    """`x` replicated with `sharding`, built on each process from its host copy.

    `jax.device_put` cannot do this for an array committed to one device (such as a
    restored checkpoint's): that would be a cross-process transfer.
    """
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if is_key(x):
        data = _from_host(jr.key_data(x), sharding)
        return jr.wrap_key_data(data, impl=jr.key_impl(x))
    host = _host(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: PyTree, mesh: Mesh | None) -> PyTree:
    """Every array of `tree` replicated over `mesh` (unchanged without a mesh)."""
    if mesh is None:
        return tree
    replicated = NamedSharding(mesh, PartitionSpec())
    if replicated.is_fully_addressable:
        # `device_put` (not a jitted reshard) also moves arrays that are committed
        # to one device, such as a restored checkpoint's.
        put = lambda x: jax.device_put(x, replicated)
    else:
        put = lambda x: _from_host(x, replicated)
    return jtu.tree_map(lambda x: put(x) if eqx.is_array(x) else x, tree)


def fetch(tree: PyTree) -> PyTree:
    """`jax.device_get(tree)`, where arrays that span processes are first gathered
    (replicated ones are read from this process's copy).

    Collective when some array is sharded over several processes.
    """

    def get(x):
        if not _spans_processes(x):
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        return multihost_utils.process_allgather(x, tiled=True)

    return jax.device_get(jtu.tree_map(get, tree))


def local(tree: PyTree) -> PyTree:
    """Arrays replicated over several processes replaced by this process's copy, so
    that one process can compute with them alone (e.g. render a figure)."""

    def get(x):
        if not _spans_processes(x):
            return x
        if not x.is_fully_replicated:
            raise ValueError(
                "An array is sharded over several processes; pass the `mesh` it "
                "lives on, so that every process takes part in the computation."
            )
        return x.addressable_data(0)

    return jtu.tree_map(get, tree)


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op on one process).

    After process 0 writes a file, so that no process reads it before it is
    complete (a resumed run starting right after the previous one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
