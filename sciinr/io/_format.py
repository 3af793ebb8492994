"""The format markers and metadata shared by run files and checkpoints."""

import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np


RUN_FORMAT = "sciinr"
RUN_FORMAT_VERSION = 1


def sciinr_version() -> str:
    from .. import __version__  # sciinr/__init__.py imports us before defining it

    return __version__


def now() -> str:
    """The current time in ISO-8601, UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_format(
    attrs: Mapping[str, Any],
    where: str,
    *,
    format: str,
    version: int,
    what: str,
    error: type[Exception] = ValueError,
) -> None:
    """Raise `error` unless `attrs` mark a file of `format`, version <= `version`.

    `where` names the file (or group) in the message, e.g. `"'run.h5'"`."""
    if attrs.get("format") != format:
        raise error(
            f"{where} is not a sciinr {what} (its `format` attribute is "
            f"{attrs.get('format')!r}, expected {format!r})."
        )
    found = attrs.get("format_version")
    if not isinstance(found, int) or found > version:
        raise error(
            f"{where} has {what} format version {found!r}; this sciinr reads "
            f"version {version} and earlier. Upgrade sciinr."
        )
