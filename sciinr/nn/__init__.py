"""Field representations: per-point Equinox modules and the batched `apply`."""

from ._activation import ACTIVATIONS as ACTIVATIONS
from ._deeponet import DeepONet as DeepONet
from ._encoding import (
    AbstractEncoding as AbstractEncoding,
    FourierFeatures as FourierFeatures,
    PositionalEncoding as PositionalEncoding,
)
from ._field import AbstractField as AbstractField, apply as apply, COORDS as COORDS
from ._grid_field import AbstractGridField as AbstractGridField
from ._init import glorot_normal as glorot_normal
from ._linear import (
    FactorizedLinear as FactorizedLinear,
    glorot_init as glorot_init,
    glorot_linear as glorot_linear,
    LINEARS as LINEARS,
    make_linear as make_linear,
)
from ._mlp import CoordinateMLP as CoordinateMLP
from ._multihead import (
    HEADS as HEADS,
    MultiHeadBody as MultiHeadBody,
    MultiHeadField as MultiHeadField,
)
from ._norm import (
    CoordinateBatchNorm as CoordinateBatchNorm,
    freeze_statistics as freeze_statistics,
    has_batch_statistics as has_batch_statistics,
    make_norm as make_norm,
    NORMS as NORMS,
)
from ._periodic import PeriodicEmbedding as PeriodicEmbedding
from ._siren import Siren as Siren
from ._trainable import (
    NonTrainable as NonTrainable,
    num_parameters as num_parameters,
    trainable as trainable,
)
