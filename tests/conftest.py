"""Shared fixtures: tiny models and data so the suite stays fast on two cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from slimgen.data import ImageSet
from slimgen.models import DCGANDiscriminator, DCGANGenerator, ModelBundle

FMNIST = Path(os.environ.get("SLIMGEN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
needs_fmnist = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _fresh_evaluation_memo() -> None:
    """Each test starts with an empty in-process evaluation memo (slimgen/evaluate/memo.py): what one test evaluated
    never spares another's computation."""
    from slimgen.evaluate.memo import MEMO

    MEMO.clear()


@pytest.fixture
def tiny_gan() -> ModelBundle:
    """A small random DCGAN bundle (1x28x28, latent 8, widths [16, 8]) in eval mode."""
    return make_tiny_gan()


def make_tiny_gan() -> ModelBundle:
    """:func:`tiny_gan` as a plain function (bench/trainer_regression.py trains it too)."""
    torch.manual_seed(0)
    gk = {"nz": 8, "channels": 1, "image_size": 28, "widths": [16, 8]}
    dk = {"channels": 1, "image_size": 28, "widths": [8, 16]}
    g, d = DCGANGenerator(**gk), DCGANDiscriminator(**dk)
    # one forward in train mode gives BatchNorm non-trivial running statistics
    g.train()(torch.randn(16, 8))
    return ModelBundle.from_modules("gan", {"generator": g.eval(), "discriminator": d.eval()},
                                    {"generator": gk, "discriminator": dk}, latent_dim=8, image_shape=(1, 28, 28))


@pytest.fixture
def tiny_images() -> ImageSet:
    """256 random-blob images (1x28x28) in [-1, 1] with labels 0..3."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 28, 28, generator=g).mul(2).sub(1)
    return ImageSet(x, torch.arange(256) % 4, "random")
