"""A convolutional VAE for 28x28 / 32x32 images; its decoder is a generator of N(0, I) latents."""

from __future__ import annotations

import torch
from torch import nn

_START = {28: 7, 32: 8}


class VAEEncoder(nn.Module):
    """Image (B, C, S, S) -> (mu, logvar), each (B, nz)."""

    def __init__(self, nz: int = 16, channels: int = 1, image_size: int = 28, widths: list[int] | None = None) -> None:
        super().__init__()
        if image_size not in _START:
            raise ValueError(f"image_size must be one of {sorted(_START)}, got {image_size}")
        w0, w1 = widths if widths is not None else (32, 64)
        s = _START[image_size]
        self.nz = nz
        self.net = nn.Sequential(
            nn.Conv2d(channels, w0, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),  # (B, w0, S/2, S/2)
            nn.Conv2d(w0, w1, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),  # (B, w1, s, s)
            nn.Flatten(),
        )
        self.head = nn.Linear(w1 * s * s, 2 * nz)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.net(x)).chunk(2, dim=1)
        return mu, logvar


class VAEDecoder(nn.Module):
    """Latent (B, nz) -> image (B, C, S, S) in [-1, 1]. Starts with Linear -> reshape to (B, w0, s, s)."""

    def __init__(self, nz: int = 16, channels: int = 1, image_size: int = 28, widths: list[int] | None = None) -> None:
        super().__init__()
        if image_size not in _START:
            raise ValueError(f"image_size must be one of {sorted(_START)}, got {image_size}")
        self.widths = list(widths) if widths is not None else [64, 32]
        w0, w1 = self.widths
        self.start = _START[image_size]
        self.nz = nz
        self.fc = nn.Linear(nz, w0 * self.start * self.start)
        self.net = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w0, w1, 4, 2, 1), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),  # (B, w1, S/2, S/2)
            nn.ConvTranspose2d(w1, channels, 4, 2, 1), nn.Tanh(),  # (B, C, S, S)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z.flatten(1)).view(z.shape[0], -1, self.start, self.start)  # (B, w0, s, s)
        return self.net(h)
