"""Physics-informed neural networks: PDE residual problems with initial and boundary
conditions, loss weighting (gradient-norm balancing, causal), hard constraints, and
built-in PDEs whose reference solutions the package computes itself."""

from ._builtins import (
    Advection1D as Advection1D,
    AllenCahn1D as AllenCahn1D,
    Burgers1D as Burgers1D,
    Helmholtz2D as Helmholtz2D,
    PDES as PDES,
    Poisson2D as Poisson2D,
)
from ._conditions import (
    AbstractCondition as AbstractCondition,
    boundary_condition as boundary_condition,
    BOUNDARY_CONDITIONS as BOUNDARY_CONDITIONS,
    DirichletBC as DirichletBC,
    InitialCondition as InitialCondition,
    NeumannBC as NeumannBC,
    PeriodicBC as PeriodicBC,
)
from ._domain import Domain as Domain
from ._pde import PDEProblem as PDEProblem, Reference as Reference, RESIDUAL as RESIDUAL
from ._reference import (
    allen_cahn_reference as allen_cahn_reference,
    burgers_cole_hopf as burgers_cole_hopf,
    burgers_reference as burgers_reference,
    etdrk4 as etdrk4,
)
from ._weighting import (
    AbstractWeighting as AbstractWeighting,
    Causal as Causal,
    causal_weights as causal_weights,
    FixedWeights as FixedWeights,
    grad_norm_weights as grad_norm_weights,
    GradNorm as GradNorm,
)
