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


class _Residual(nn.Module):
    """x + conv(act(norm(conv(x)))): two 3x3 convolutions at constant width and size (B, C, H, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.SiLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x + self.body(x))


class ResidualClassifier(nn.Module):
    """A second, independent classifier design: image (B, C, S, S) in [-1, 1] -> logits (B, num_classes).

    Deliberately unlike :class:`ImageClassifier` (so that the two feature spaces do not share
    blind spots by construction): strided convolutions instead of max-pooling, residual blocks,
    SiLU instead of ReLU, and features taken by global average pooling (B, width * 4) instead of
    a fully connected layer over the flattened map. ``features`` gives (B, feature_dim).
    """

    def __init__(self, channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 24) -> None:
        super().__init__()
        self.feature_dim = 4 * width

        def down(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True)]

        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.SiLU(inplace=True),
            *down(width, 2 * width), _Residual(2 * width),  # (B, 2w, S/2, S/2)
            *down(2 * width, 4 * width), _Residual(4 * width),  # (B, 4w, S/4, S/4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
