"""Built-in problems for `sciinr.fit`: what to fit (images, CT, PDEs, operators)."""

from . import pinn as pinn
from .ct import ComputedTomography as ComputedTomography
from .image import ImageRegression as ImageRegression
from .operator import (
    Antiderivative as Antiderivative,
    DiffusionReaction as DiffusionReaction,
    NonlinearODE as NonlinearODE,
    Pendulum as Pendulum,
)
from .signals import (
    disk_mask as disk_mask,
    IMAGES as IMAGES,
    load_image as load_image,
    perlin_noise as perlin_noise,
    phantom as phantom,
    PHANTOMS as PHANTOMS,
    random_ellipses as random_ellipses,
    shepp_logan as shepp_logan,
    text_image as text_image,
)
