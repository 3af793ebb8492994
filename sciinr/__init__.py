"""sciinr: coordinate networks for scientific machine learning in JAX + Equinox."""

import importlib.metadata

from . import metrics as metrics, nn as nn


try:
    __version__ = importlib.metadata.version("sciinr")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0+unknown"
