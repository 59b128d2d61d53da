"""DCGAN generator and discriminator for 28x28, 32x32 and 64x64 images with configurable widths.

The generator starts with a ConvTranspose2d on a (B, nz, 1, 1) latent, so a channel pruner
follows every coupling (no Linear -> view). A pruned or slimmer model is the same class with
other ``widths``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

# image size -> (first feature-map size, number of stride-2 upsamplings)
_GEOMETRY = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _check_geometry(image_size: int, widths: tuple[int, ...] | list[int]) -> int:
    if image_size not in _GEOMETRY:
        raise ValueError(f"image_size must be one of {sorted(_GEOMETRY)}, got {image_size}")
    start, ups = _GEOMETRY[image_size]
    if len(widths) != ups:
        raise ValueError(f"image_size {image_size} needs {ups} widths (one per feature-map level), got {list(widths)}")
    if any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must be positive, got {list(widths)}")
    return start


def default_widths(image_size: int, base: int = 64) -> list[int]:
    """Widths that halve at every upsampling, ending at ``base``: 28 -> [2b, b], 64 -> [8b, 4b, 2b, b]."""
    _, ups = _GEOMETRY[image_size]
    return [base * 2 ** (ups - 1 - i) for i in range(ups)]


class DCGANGenerator(nn.Module):
    """Latent (B, nz) or (B, nz, 1, 1) -> image (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, nz: int = 64, channels: int = 1, image_size: int = 28, widths: list[int] | None = None) -> None:
        super().__init__()
        widths = list(widths) if widths is not None else default_widths(image_size)
        start = _check_geometry(image_size, widths)
        self.nz = nz
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], start, 1, 0, bias=False),  # (B, w0, start, start)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]  # (B, C, H, W)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]  # (B, nz, 1, 1)
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Image (B, channels, image_size, image_size) -> real/fake logit (B,)."""

    def __init__(self, channels: int = 1, image_size: int = 28, widths: list[int] | None = None) -> None:
        super().__init__()
        widths = list(widths) if widths is not None else default_widths(image_size)[::-1]
        start = _check_geometry(image_size, widths)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(widths[-1], 1, start, 1, 0)]  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B,)
