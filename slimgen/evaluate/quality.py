"""Quality of generated images against real ones, computed on extracted features.

FID, KID and the Inception-Score-style score are torchmetrics' own code. Features are
extracted once (see :mod:`slimgen.evaluate.features`) and handed to the metrics through a
pass-through ``feature=`` module, so the real set's features can be cached on disk and the
same features serve every metric. Precision/recall (Kynkaanniemi et al. 2019, k-NN
manifolds), which torchmetrics lacks, is the small glue below.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from slimgen.errors import ConfigError
from slimgen.evaluate.features import Features


class PassThrough(nn.Module):
    """A torchmetrics ``feature=`` module for features that are already extracted: (N, d) -> (N, d)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_pair(real: torch.Tensor, fake: torch.Tensor, minimum: int) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"features must be (N, d) with equal d, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise ConfigError("features contain NaN or Inf (a broken model or extractor)")
    if min(len(real), len(fake)) < minimum:
        raise ConfigError(f"need at least {minimum} real and fake samples, got {len(real)} and {len(fake)}")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to real (N, d) and fake (M, d) features (torchmetrics)."""
    _check_pair(real, fake, 2)
    metric = FrechetInceptionDistance(feature=PassThrough(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets`` random subsets), cubic polynomial kernel.

    ``subset_size`` shrinks to the smaller set's size when either set is smaller.
    """
    _check_pair(real, fake, 2)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=PassThrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.float(), real=True)  # float32: the kernel sums need no more, and it is twice as fast
    metric.update(fake.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E KL(p(y|x) || p(y))) over ``splits`` splits of logits (N, K): (mean, std); higher is better."""
    if len(logits) < 2 * splits:
        splits = max(1, len(logits) // 2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of a single split
        metric = InceptionScore(feature=PassThrough(logits.shape[1]), splits=splits)
        metric.update(logits.double())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def class_histogram(logits: torch.Tensor) -> list[float]:
    """Fraction of samples predicted as each class (K,), from logits (N, K); sums to 1."""
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
    return (counts.double() / max(1, len(logits))).tolist()


def kth_neighbour_radius(x: torch.Tensor, k: int = 3, chunk: int = 1000) -> torch.Tensor:
    """Distance (N,) from each row of x (N, d) to its k-th nearest other row (the row itself is the 0th)."""
    x = x.float()
    radii = [torch.cdist(x[i:i + chunk], x).topk(k + 1, dim=1, largest=False).values[:, k]
             for i in range(0, len(x), chunk)]
    return torch.cat(radii)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, chunk: int = 1000,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds, both in [0, 1].

    Precision: fraction of fake samples inside the real manifold (union of balls reaching each
    real sample's k-th nearest real neighbour); recall: the same with roles swapped.
    ``real_radii`` (N,) are the real set's k-NN radii if already known (cached with the reference).
    """
    _check_pair(real, fake, k + 1)
    real, fake = real.float(), fake.float()
    real_radii = kth_neighbour_radius(real, k, chunk) if real_radii is None else real_radii.float()
    fake_radii = kth_neighbour_radius(fake, k, chunk)
    fake_inside = torch.zeros(len(fake), dtype=torch.bool)
    real_inside = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(fake), chunk):  # one pass over the (M, N) fake-to-real distances
        d = torch.cdist(fake[i:i + chunk], real)  # (c, N)
        fake_inside[i:i + chunk] = (d <= real_radii[None]).any(dim=1)
        real_inside |= (d <= fake_radii[i:i + chunk, None]).any(dim=0)
    return float(fake_inside.double().mean()), float(real_inside.double().mean())


@dataclass(frozen=True)
class Quality:
    """Quality metrics of a fake set against a real set in one feature space."""

    fid: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    inception_score: float | None
    inception_score_std: float | None
    class_histogram: list[float] | None


def measure_quality(real: Features, fake: Features, *, seed: int = 0, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, k: int = 3, real_radii: torch.Tensor | None = None) -> Quality:
    """Every quality metric for fake features against real features (same extractor)."""
    kid_mean, kid_std = kid(real.features, fake.features, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real.features, fake.features, k=k, real_radii=real_radii)
    is_mean = is_std = hist = None
    if fake.logits is not None:
        is_mean, is_std = inception_score(fake.logits, seed=seed)
        hist = class_histogram(fake.logits)
    return Quality(fid=fid(real.features, fake.features), kid_mean=kid_mean, kid_std=kid_std,
                   precision=precision, recall=recall, inception_score=is_mean,
                   inception_score_std=is_std, class_histogram=hist)
