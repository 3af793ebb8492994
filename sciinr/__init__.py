"""sciinr: coordinate networks for scientific machine learning in JAX + Equinox."""

import importlib.metadata

from . import (
    checks as checks,
    diff as diff,
    distributed as distributed,
    io as io,
    metrics as metrics,
    nn as nn,
)
from ._grid import grid as grid
from ._problem import AbstractProblem as AbstractProblem
from ._trainer import (
    evaluate as evaluate,
    fit as fit,
    FitResult as FitResult,
    NonFiniteLossError as NonFiniteLossError,
    predict as predict,
)


try:
    __version__ = importlib.metadata.version("sciinr")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0+unknown"
