"""Training: resume equals an uninterrupted run; a NaN loss stops and keeps the last good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimgen.data import ImageSet
from slimgen.errors import SlimgenError, TrainingDiverged
from slimgen.models import load_folder
from slimgen.train import DCGANTraining, VAETraining, train
from slimgen.train.checkpoint import has_checkpoint, load_checkpoint

TINY = {"epochs": 3, "batch_size": 16, "latent_dim": 8, "generator_widths": [8, 4], "discriminator_widths": [4, 8]}


def _states_equal(a: Path, b: Path) -> None:
    ma, mb = load_folder(a), load_folder(b)
    for part in ma.parts:
        sa, sb = ma.parts[part].state_dict(), mb.parts[part].state_dict()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}.{k} differs"


def test_resume_equals_uninterrupted(tiny_images: ImageSet, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(DCGANTraining(**TINY), out=full, data=tiny_images, steps_per_epoch=3, device="cpu")
    part = tmp_path / "part"
    train(DCGANTraining(**{**TINY, "epochs": 1}), out=part, data=tiny_images, steps_per_epoch=3, device="cpu")
    assert load_checkpoint(part / "checkpoint", modules={}, optimizers={})["epoch"] == 1
    train(DCGANTraining(**TINY), out=part, data=tiny_images, steps_per_epoch=3, device="cpu", resume=True)
    _states_equal(full, part)
    # and a different seed really gives different weights (the comparison can fail)
    other = tmp_path / "other"
    train(DCGANTraining(**{**TINY, "seed": 1}), out=other, data=tiny_images, steps_per_epoch=3, device="cpu")
    with pytest.raises(AssertionError):
        _states_equal(full, other)


def test_vae_trains_and_loads(tiny_images: ImageSet, tmp_path: Path) -> None:
    bundle = train(VAETraining(epochs=1, batch_size=32, latent_dim=4), out=tmp_path / "v", data=tiny_images,
                   steps_per_epoch=2, device="cpu")
    loaded = load_folder(tmp_path / "v")
    assert loaded.kind == "vae" and set(loaded.parts) == {"generator", "encoder"}
    z = torch.randn(3, 4)
    assert torch.equal(bundle.generator(z), loaded.generator(z))


def test_nan_stops_and_keeps_last_checkpoint(tiny_images: ImageSet, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(DCGANTraining(**{**TINY, "epochs": 1}), out=out, data=tiny_images, steps_per_epoch=2, device="cpu")
    before = (out / "checkpoint" / "state.safetensors").read_bytes()
    bad = ImageSet(tiny_images.images.clone(), None, "nan")
    bad.images[:] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"became nan in epoch 2.*last good checkpoint \(epoch 1\)"):
        train(DCGANTraining(**{**TINY, "epochs": 2}), out=out, data=bad, steps_per_epoch=2, device="cpu", resume=True)
    assert has_checkpoint(out / "checkpoint")
    assert (out / "checkpoint" / "state.safetensors").read_bytes() == before


def test_lr_factor_decays_along_a_cosine_and_never_reaches_zero() -> None:
    from slimgen.train.loop import lr_factor

    assert [lr_factor("constant", e, 4) for e in range(4)] == [1.0] * 4
    cosine = [lr_factor("cosine", e, 4) for e in range(4)]
    assert cosine == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    with pytest.raises(SlimgenError, match="lr_schedule must be one of constant, cosine, got 'step'"):
        lr_factor("step", 0, 4)
