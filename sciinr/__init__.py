"""sciinr: coordinate networks for scientific machine learning in JAX + Equinox."""

import importlib.metadata

from . import io as io, metrics as metrics, nn as nn
from ._problem import AbstractProblem as AbstractProblem
from ._trainer import (
    fit as fit,
    FitResult as FitResult,
    NonFiniteLossError as NonFiniteLossError,
)


try:
    __version__ = importlib.metadata.version("sciinr")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0+unknown"
