"""A small CNN classifier; its penultimate features are slimgen's default metric space."""

from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """Image (B, C, S, S) in [-1, 1] -> logits (B, num_classes); ``features`` gives (B, feature_dim)."""

    def __init__(self, channels: int = 1, image_size: int = 28, num_classes: int = 10, feature_dim: int = 128) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 32, S/2, S/2)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (B, 64, S/4, S/4)
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * (image_size // 4) ** 2, feature_dim), nn.ReLU(inplace=True),  # (B, feature_dim)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
