"""Class-conditional DCGAN: label embedding concatenated to the latent; projection discriminator.

The generator is the DCGAN generator of :mod:`slimgen.models.dcgan` whose first
ConvTranspose2d reads ``nz + embed_dim`` channels: the latent (B, nz) and a learned embedding
of the label y (B,) int64, concatenated and viewed as (B, nz + embed_dim, 1, 1). The
discriminator is the DCGAN discriminator's convolutions plus a projection term (Miyato and
Koyama, "cGANs with Projection Discriminator", 2018): ``logit = head(h) + <embed(y), mean_hw h>``,
the embedding initialised like a Linear layer's weight (U(-1/sqrt(w), 1/sqrt(w))) so that the
projection starts at the scale of the unconditional head (no spectral norm here).
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
    """``D(x, y)``: image (B, channels, image_size, image_size) and labels (B,) -> logit (B,)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28,
                 widths: list[int] | None = None) -> None:
        super().__init__()
        _check_classes(num_classes, 1)
        base = DCGANDiscriminator(channels, image_size, widths).net
        self.features = base[:-1]  # (B, w_last, s, s)
        self.head = base[-1]  # Conv2d(w_last, 1, s): the unconditional logit (B, 1, 1, 1)
        width = self.head.in_channels
        self.embed = nn.Embedding(num_classes, width)  # (classes, w_last)
        nn.init.uniform_(self.embed.weight, -width ** -0.5, width ** -0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, w_last, s, s)
        projection = (self.embed(y) * h.mean(dim=(2, 3))).sum(dim=1)  # (B,)
        return self.head(h).flatten() + projection
