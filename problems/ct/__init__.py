"""Sparse-view computed tomography: a differentiable parallel-beam projector for
images and fields, filtered back projection, and the reconstruction problem.

The phantoms live in [`problems.signals`][] (shared with the other problems) and are
re-exported here.
"""

from ..signals import (
    disk_mask as disk_mask,
    ellipse_image as ellipse_image,
    MODIFIED_SHEPP_LOGAN as MODIFIED_SHEPP_LOGAN,
    phantom as phantom,
    PHANTOMS as PHANTOMS,
    random_ellipses as random_ellipses,
    shepp_logan as shepp_logan,
)
from ._fbp import fbp as fbp, ramp_filter as ramp_filter
from ._problem import ComputedTomography as ComputedTomography
from ._projector import (
    backproject as backproject,
    radon as radon,
    radon_field as radon_field,
    ray_points as ray_points,
)
