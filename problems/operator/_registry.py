"""The operator problems by name."""

from typing import Any, Literal

from sciinr.checks import resolve_option

from ._diffusion_reaction import DiffusionReaction
from ._ode import Antiderivative, NonlinearODE, Pendulum
from ._problem import AbstractOperatorProblem


OPERATORS: dict[str, type[AbstractOperatorProblem]] = {
    "antiderivative": Antiderivative,
    "nonlinear_ode": NonlinearODE,
    "pendulum": Pendulum,
    "diffusion_reaction": DiffusionReaction,
}
"""The operator problems by name (the `--operator` choices of
`examples/deeponet.py`)."""


def make_problem(
    operator: Literal[
        "antiderivative", "nonlinear_ode", "pendulum", "diffusion_reaction"
    ]
    | str,
    **kwargs: Any,
) -> AbstractOperatorProblem:
    """Build the operator problem named `operator` with keyword arguments `kwargs`.

    **Raises:**

    `ValueError` listing the valid names for an unknown `operator`.
    """
    return resolve_option("operator", operator, OPERATORS)(**kwargs)
