"""The distillation distances as pure tensor functions; the maths lives once in :mod:`slimgen.train.objectives`."""

from slimgen.train.objectives import (
    discriminator_loss,
    feature_distance,
    generator_adversarial,
    kl_to_prior,
    output_distance,
    perceptual_distance,
)

__all__ = ["discriminator_loss", "feature_distance", "generator_adversarial", "kl_to_prior", "output_distance",
           "perceptual_distance"]
