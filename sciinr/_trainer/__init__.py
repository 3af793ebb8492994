"""The trainer: `fit`, and `evaluate`/`predict` compiled once and shared with it."""

from ._errors import NonFiniteLossError as NonFiniteLossError
from ._fit import (
    evaluate as evaluate,
    fit as fit,
    FitResult as FitResult,
    predict as predict,
)
