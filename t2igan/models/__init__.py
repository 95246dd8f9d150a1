"""Generator and discriminator architectures, built from plain keyword arguments."""

from t2igan.models.discriminator import Discriminator, build_discriminator
from t2igan.models.generator import build_generator

__all__ = ["Discriminator", "build_discriminator", "build_generator"]
