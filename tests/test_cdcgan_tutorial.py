"""The user-style DCGAN-tutorial generator of bench/tutorial_dcgan.py and its training run."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.tutorial_dcgan import Generator, train
from slimgen.data import ImageSet


def test_tutorial_generator_has_the_tutorial_shapes() -> None:
    g = Generator().eval()
    assert sum(p.numel() for p in g.parameters()) == 3_576_704  # the tutorial's netG (nz=100, ngf=64, nc=3)
    with torch.no_grad():
        x = g(torch.randn(2, 100, 1, 1))
    assert x.shape == (2, 3, 64, 64) and x.abs().max() <= 1


def test_training_writes_a_tutorial_checkpoint_dict_each_epoch_and_resumes(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(16, 3, 64, 64, generator=gen) * 2 - 1, None, "random")
    train(tmp_path / "full", epochs=2, steps_per_epoch=1, batch_size=4, data=data)
    train(tmp_path / "part", epochs=1, steps_per_epoch=1, batch_size=4, data=data)
    assert torch.load(tmp_path / "part" / "tutorial_dcgan.pt", weights_only=True)["epoch"] == 1
    train(tmp_path / "part", epochs=2, steps_per_epoch=1, batch_size=4, data=data, resume=True)
    full = torch.load(tmp_path / "full" / "tutorial_dcgan.pt", weights_only=True)  # plain tensors: no pickle needed
    part = torch.load(tmp_path / "part" / "tutorial_dcgan.pt", weights_only=True)
    assert full["epoch"] == part["epoch"] == 2 and set(full) == {"epoch", "netG_state_dict", "netD_state_dict"}
    for k, v in full["netG_state_dict"].items():
        assert torch.allclose(v, part["netG_state_dict"][k]), k
    g = Generator()
    g.load_state_dict(full["netG_state_dict"])  # what a user's script does with the tutorial's checkpoint
    assert (tmp_path / "full" / "snapshots" / "netG-001.pt").is_file()
    assert (tmp_path / "full" / "card.md").read_text().startswith("# DCGAN tutorial generator")
