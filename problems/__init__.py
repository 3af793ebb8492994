"""Built-in problems for `sciinr.fit`: what to fit (images, CT, PDEs, operators)."""

from . import pinn as pinn
from .image import ImageRegression as ImageRegression
from .operator import (
    Antiderivative as Antiderivative,
    DiffusionReaction as DiffusionReaction,
    NonlinearODE as NonlinearODE,
    Pendulum as Pendulum,
)
from .signals import (
    IMAGES as IMAGES,
    load_image as load_image,
    perlin_noise as perlin_noise,
    text_image as text_image,
)
