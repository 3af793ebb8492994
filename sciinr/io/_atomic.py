"""Atomic HDF5 writes: a temporary file next to the target, fsync, rename."""

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator

import h5py


# HDF5 1.8 object headers: dense attribute storage (attributes over 64 KiB, such as
# a long `field` repr or `config`) and readable by every netCDF-4 / h5netcdf reader.
_LIBVER = ("v108", "latest")

PathLike = str | os.PathLike


def _umask() -> int:
    # Read-and-restore is the only portable way to read the umask (not thread-safe,
    # but the window is two system calls).
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_h5(path: PathLike, what: str = "file") -> Iterator[h5py.File]:
    """Write an HDF5 file atomically: never a half-written file at `path`.

    Opens a temporary HDF5 file next to `path` for writing and yields it; when the
    block ends without an exception the file is flushed to disk (`fsync`) and renamed
    onto `path` (`os.replace`, atomic on POSIX file systems). On any exception the
    temporary file is removed and the exception propagates, so `path` either keeps
    its previous content or does not exist. [`sciinr.io.save_run`][] and the
    checkpoints write through this; use it for HDF5 files of your own.

    **Arguments:**

    - `path`: the file to write; its directory must exist.
    - `what`: what the file is, for error messages (`"run file"`, `"cache file"`).

    **Raises:**

    `IsADirectoryError`, `FileNotFoundError` (the directory does not exist) or
    `PermissionError`, naming the path, before anything is written.

    !!! example

        ```python
        with sciinr.io.atomic_h5("table.h5", "table") as f:
            f.create_dataset("x", data=np.arange(10))
        ```
    """
    path = pathlib.Path(path)
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
