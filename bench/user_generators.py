"""A user-style Fashion-MNIST generator as GAN code in the wild writes it, and the same code edited.

``HardcodedReshapeG`` reshapes its Linear output with a literal width, ``view(-1, 128, 7, 7)``;
``EditedReshapeG`` is the same network with the reshape a user would have to write for
pruning to work, ``view(B, -1, 7, 7)``. Both have the same parameters (same state-dict keys), so
one set of trained weights loads into either. Used by ``bench/bench_arch.py``.
"""

from __future__ import annotations

import torch
from torch import nn


class HardcodedReshapeG(nn.Module):
    """(B, 64) latents -> (B, 1, 28, 28) images in [-1, 1]; Linear -> view(-1, 128, 7, 7) -> 2 ConvTranspose2d."""

    def __init__(self, latent_dim: int = 64) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 128 * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        self.up1 = nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.up2 = nn.ConvTranspose2d(64, 1, 4, 2, 1)

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z).view(-1, 128, 7, 7)  # (B, 128, 7, 7): the width is written into the code

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.trunk(z)))
        x = torch.relu(self.bn1(self.up1(x)))  # (B, 64, 14, 14)
        return torch.tanh(self.up2(x))  # (B, 1, 28, 28)


class EditedReshapeG(HardcodedReshapeG):
    """The same network with its reshape edited to ``view(B, -1, 7, 7)``."""

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z).view(z.size(0), -1, 7, 7)  # (B, C, 7, 7), C follows the Linear's width
