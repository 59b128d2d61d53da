"""Class-conditional DCGAN: label embeddings concatenated to the generator's latent and the discriminator's image.

The generator is the DCGAN generator of :mod:`slimgen.models.dcgan` whose first
ConvTranspose2d reads ``nz + embed_dim`` channels: the latent (B, nz) and a learned embedding
of the label y (B,) int64, concatenated and viewed as (B, nz + embed_dim, 1, 1). The
discriminator is the DCGAN discriminator reading the image plus one more channel, a learned
per-class map of the image's size (embedding-concat conditioning). A first version used a
projection discriminator (Miyato and Koyama 2018) without spectral norm; its generator learned
to ignore the latent (one image per class, pixel std across latents 0.016 after 5 epochs).
A pruned or slimmer model is the same class with other ``widths``.
"""

from __future__ import annotations

import torch
from torch import nn

from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator


def _check_classes(num_classes: int, embed_dim: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if embed_dim < 1:
        raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")


class ConditionalDCGANGenerator(nn.Module):
    """``G(z, y)``: latent (B, nz) or (B, nz, 1, 1) and labels (B,) int64 in [0, num_classes)
    -> image (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, nz: int = 64, num_classes: int = 10, embed_dim: int = 16, channels: int = 1,
                 image_size: int = 28, widths: list[int] | None = None) -> None:
        super().__init__()
        _check_classes(num_classes, embed_dim)
        self.nz, self.num_classes = nz, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)  # (classes, embed_dim)
        # the unconditional DCGAN's layers, reading the concatenated (B, nz + embed_dim, 1, 1)
        self.net = DCGANGenerator(nz + embed_dim, channels, image_size, widths).net

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)  # (B, nz)
        h = torch.cat([z, self.embed(y)], dim=1)  # (B, nz + embed_dim)
        return self.net(h[:, :, None, None])


class ConditionalDCGANDiscriminator(nn.Module):
    """``D(x, y)``: image (B, channels, image_size, image_size) and labels (B,) -> logit (B,).

    The label's learned embedding, one value per pixel, is an extra input channel: the DCGAN
    discriminator reads (B, channels + 1, image_size, image_size).
    """

    def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28,
                 widths: list[int] | None = None) -> None:
        super().__init__()
        _check_classes(num_classes, 1)
        self.image_size = image_size
        self.embed = nn.Embedding(num_classes, image_size * image_size)  # (classes, H * W)
        self.net = DCGANDiscriminator(channels + 1, image_size, widths).net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        label_map = self.embed(y).view(-1, 1, self.image_size, self.image_size)  # (B, 1, H, W)
        return self.net(torch.cat([x, label_map], dim=1)).flatten()  # (B,)
