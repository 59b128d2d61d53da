"""How compression code sees any generative model: inputs of its contract in, images out.

DCGAN generators, VAE decoders, class-conditional generators and a user's generator all map
the inputs of their :class:`~slimgen.models.inputs.InputSpec` (z of any shape, labels y) to
(B, C, H, W) in [-1, 1] (through ``run``, from the contract's ``image_range``), so one adapter
serves them; the model kind only says which part is the generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from slimgen.models.inputs import GenInputs, run
from slimgen.models.mode import in_mode


def sample_latents(n: int, latent_dim: int, *, seed: int = 0) -> torch.Tensor:
    """(n, latent_dim) standard normal latents: ``InputSpec.latent(latent_dim).draw(n, seed=seed).z``.

    Kept for scripts and older callers; library code draws through the model's InputSpec.
    """
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor | GenInputs, *, batch_size: int = 500) -> Iterator[torch.Tensor]:
    """Yield image batches (b, C, H, W) clamped to [-1, 1], in eval mode (mapped from the generator's own
    ``image_range`` by :func:`slimgen.models.inputs.run`).

    ``z`` is a ``GenInputs`` batch (any latent shape, optional labels) or a bare latent tensor.
    """
    inputs = z if isinstance(z, GenInputs) else GenInputs(z)
    with in_mode(generator):
        for batch in inputs.split(batch_size):
            yield run(generator, batch).clamp(-1, 1)


def generate_all(generator: nn.Module, z: torch.Tensor | GenInputs, *, batch_size: int = 500) -> torch.Tensor:
    """All images for ``z`` as one (N, C, H, W) tensor."""
    return torch.cat(list(generate(generator, z, batch_size=batch_size)))
