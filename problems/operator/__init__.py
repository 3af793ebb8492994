r"""Operator learning: random input functions, Diffrax-generated solutions, and the
DeepONet problems that learn $G: u \mapsto s$."""

from ._cache import default_cache_dir as default_cache_dir
from ._dataset import DroppedSamplesWarning as DroppedSamplesWarning
from ._diffusion_reaction import DiffusionReaction as DiffusionReaction
from ._grf import (
    chebyshev_random_field as chebyshev_random_field,
    gaussian_random_field as gaussian_random_field,
    interpolate as interpolate,
    KERNELS as KERNELS,
)
from ._ode import (
    AbstractODEOperator as AbstractODEOperator,
    Antiderivative as Antiderivative,
    NonlinearODE as NonlinearODE,
    Pendulum as Pendulum,
)
from ._problem import (
    AbstractOperatorProblem as AbstractOperatorProblem,
    OperatorData as OperatorData,
)
from ._registry import make_problem as make_problem, OPERATORS as OPERATORS
