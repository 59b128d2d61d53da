"""Calibration on real Fashion-MNIST with the shipped classifier's features.

Real train images against the test images must score close; blurring and dropping classes
must make FID and KID worse step by step; noise must be far worse. 1,000 images a side (and
features extracted once per module) keep each test to seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimgen.data import load_dataset
from slimgen.data.dataset import to_uint8
from slimgen.evaluate import Features, class_histogram, extract, fid, fid_score, kid, load_extractor, precision_recall
from tests.conftest import needs_fmnist

N = 1000
BLURS = (0.5, 1.0, 2.0)
pytestmark = needs_fmnist


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@pytest.fixture(scope="module")
def space() -> dict:
    """Features (shipped classifier) of N test images, 3N train images, blurred train images and noise."""
    torch.set_num_threads(2)
    ext = load_extractor(None)
    test = load_dataset("fashion-mnist", "test").subset(N, seed=0)
    train = load_dataset("fashion-mnist", "train").subset(3 * N, seed=1)
    train_feats = extract(ext, train.images)
    noise = torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {
        "test": extract(ext, test.images),
        "train": Features(train_feats.features[:N], train_feats.logits[:N]),
        "train_all": train_feats, "train_labels": train.labels,
        "blur": {s: extract(ext, gaussian_blur(train.images[:N], s)) for s in BLURS},
        "noise": extract(ext, noise),
    }


def _scores(real: Features, fake: Features) -> tuple[float, float]:
    """(FID, KID mean) of fake against real."""
    return fid(real.features, fake.features), kid(real.features, fake.features, subsets=20, subset_size=300)[0]


def test_real_train_vs_test_is_small_and_noise_far_worse(space: dict) -> None:
    real_fid, real_kid = _scores(space["test"], space["train"])
    blur_fid, blur_kid = _scores(space["test"], space["blur"][1.0])
    noise_fid, noise_kid = _scores(space["test"], space["noise"])
    assert real_fid < 0.1 * blur_fid and real_fid < 0.03 * noise_fid
    assert noise_fid > 1.5 * blur_fid
    assert abs(real_kid) < 0.05 * blur_kid and noise_kid > blur_kid
    p, r = precision_recall(space["test"].features, space["train"].features)
    assert p > 0.8 and r > 0.8
    assert precision_recall(space["test"].features, space["noise"].features)[1] < 0.05  # noise covers nothing


def test_fid_and_kid_rise_monotonically_with_blur(space: dict) -> None:
    scores = [_scores(space["test"], space["train"])] + [_scores(space["test"], space["blur"][s]) for s in BLURS]
    fids, kids = zip(*scores, strict=True)
    assert list(fids) == sorted(fids) and len(set(fids)) == len(fids)
    assert list(kids) == sorted(kids) and len(set(kids)) == len(kids)


def test_fid_and_kid_rise_as_classes_are_dropped_and_recall_falls(space: dict) -> None:
    feats, labels = space["train_all"], space["train_labels"]
    fids, kids, recalls = [], [], []
    for kept in (10, 7, 4, 1):
        idx = torch.nonzero(labels < kept).squeeze(1)[:N]  # (<= N,) images of the first `kept` classes
        fake = Features(feats.features[idx], feats.logits[idx])
        f, k = _scores(space["test"], fake)
        fids.append(f)
        kids.append(k)
        recalls.append(precision_recall(space["test"].features, fake.features)[1])
    assert fids == sorted(fids) and len(set(fids)) == 4
    assert kids == sorted(kids) and len(set(kids)) == 4
    assert recalls == sorted(recalls, reverse=True) and recalls[-1] < 0.5 * recalls[0]


def test_classifier_histogram_sees_the_dropped_classes(space: dict) -> None:
    feats, labels = space["train_all"], space["train_labels"]
    idx = torch.nonzero(labels < 5).squeeze(1)
    hist = torch.tensor(class_histogram(feats.logits[idx]))
    assert hist[5:].sum() < 0.05 and hist[:5].min() > 0.1


def test_fid_score_helper_is_deterministic_and_keeps_train_mode(space: dict, tiny_gan, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SLIMGEN_CACHE", str(tmp_path / "cache"))
    ref = tmp_path / "fmnist-test-300.npy"  # a small reference keeps the test fast; the default is all 10,000
    np.save(ref, to_uint8(load_dataset("fashion-mnist", "test").subset(300, seed=2).images).numpy())
    g = tiny_gan.generator.train()
    score = fid_score(g, 8, n=200, seed=0, reference=str(ref))
    assert g.training
    assert score == fid_score(g, 8, n=200, seed=0, reference=str(ref))
    assert list((tmp_path / "cache").glob("reference/*-test-fmnist-classifier-*.safetensors"))
    assert score > 10 * fid(space["test"].features, space["train"].features)  # a random generator is far off
    with torch.no_grad():
        next(g.parameters()).fill_(float("nan"))
    assert fid_score(g, 8, n=200, seed=0, reference=str(ref)) == math.inf  # a diverged checkpoint is never best
