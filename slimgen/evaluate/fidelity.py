"""Fidelity of a compressed model to its teacher on the same latents.

PSNR and SSIM (torchmetrics) compare the images pixel by pixel; the feature distance
compares what the feature extractor sees. A student can match the teacher's FID while no
longer following it on a given latent; these numbers catch that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure


@dataclass(frozen=True)
class Fidelity:
    """psnr in dB (higher is closer), ssim in [-1, 1] (1 = identical), feature_distance: mean L2 (>= 0)."""

    psnr: float
    ssim: float
    feature_distance: float


class FidelityMeter:
    """Accumulates fidelity over batches of paired student/teacher images and features."""

    def __init__(self) -> None:
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self._dist_sum = 0.0
        self._count = 0

    def update_images(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        """Paired images (B, C, H, W) in [-1, 1]."""
        s, t = (student.float() + 1) / 2, (teacher.float() + 1) / 2  # to [0, 1]
        self.psnr.update(s, t)
        self.ssim.update(s, t)

    def update_features(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        """Paired features (B, d)."""
        self._dist_sum += float(torch.linalg.vector_norm(student.double() - teacher.double(), dim=1).sum())
        self._count += len(student)

    def compute(self) -> Fidelity:
        psnr = float(self.psnr.compute())
        return Fidelity(psnr=psnr, ssim=float(self.ssim.compute()),
                        feature_distance=self._dist_sum / max(1, self._count))


def measure_fidelity(student: torch.Tensor, teacher: torch.Tensor, *, student_features: torch.Tensor | None = None,
             teacher_features: torch.Tensor | None = None) -> Fidelity:
    """Fidelity of student images (N, C, H, W) in [-1, 1] to teacher images on the same latents.

    ``feature_distance`` is NaN unless both feature sets (N, d) are given.
    """
    meter = FidelityMeter()
    meter.update_images(student, teacher)
    if student_features is None or teacher_features is None:
        f = meter.compute()
        return Fidelity(f.psnr, f.ssim, float("nan"))
    meter.update_features(student_features, teacher_features)
    return meter.compute()
