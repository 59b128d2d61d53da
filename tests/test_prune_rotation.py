"""Latent rotation: lossless, makes the latent layer sparse-friendly, and guards same-latent comparisons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.data import ImageSet
from slimgen.distill import Distillation, distill
from slimgen.errors import ConfigError
from slimgen.evaluate import evaluate
from slimgen.models import ModelBundle, VAEDecoder, VAEEncoder, load_folder, sample_latents, save_folder
from slimgen.prune import LatentRotation, MagnitudePruning, prune, rotate_latent
from slimgen.prune.rotation import latent_rows, sparse_rotation, top_energy
from slimgen.train.finetune import FineTuning, finetune

FAST = LatentRotation(steps=300, lr=0.02)


def _planted(d: int = 8, k: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows R S (d, k): S with one +-1 per column (density 1/d), R a random rotation; returns (rows, S)."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.zeros(d, k)
    sparse[torch.randint(d, (k,), generator=g), torch.arange(k)] = torch.randn(k, generator=g).sign()
    r, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return r @ sparse, sparse


def _recovered_rotation(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Q with after = Q^T before, solved by least squares from the two (d, k) row matrices."""
    return torch.linalg.lstsq(before.T.double(), after.T.double()).solution.float()  # (d, d)


def test_sparse_rotation_is_orthogonal_and_undoes_a_planted_rotation() -> None:
    rows, sparse = _planted()
    q = sparse_rotation(rows, steps=1500, lr=0.02)
    assert torch.allclose(q.T @ q, torch.eye(8), atol=1e-5)
    # the planted basis puts all the energy in 1/8 of the entries; the mixed one does not
    assert top_energy(sparse, 1 / 8) == pytest.approx(1.0, abs=1e-6)
    assert top_energy(rows, 1 / 8) < 0.6
    assert top_energy(q.T @ rows, 1 / 8) > 0.97


def _vae_decoder_bundle() -> ModelBundle:
    """A decoder-only generator bundle (the latent enters through a Linear layer with a bias)."""
    torch.manual_seed(0)
    kwargs = {"nz": 8, "channels": 1, "image_size": 28, "widths": [8, 4]}
    dec = VAEDecoder(**kwargs)
    dec.train()(torch.randn(16, 8))
    return ModelBundle.from_modules("gan", {"generator": dec.eval()}, {"generator": kwargs}, latent_dim=8)


@pytest.mark.parametrize("which", ["dcgan", "decoder"])
def test_rotated_generator_draws_g_of_qz(which: str, tiny_gan: ModelBundle, tmp_path: Path) -> None:
    """ConvTranspose (DCGAN) and Linear (decoder) latent layers: G'(z) = G(Qz) with Q orthogonal; saves and reloads."""
    bundle = tiny_gan if which == "dcgan" else _vae_decoder_bundle()
    weights = {k: v.clone() for k, v in bundle.generator.state_dict().items()}
    rotated = rotate_latent(bundle, FAST)
    assert all(torch.equal(v, weights[k]) for k, v in bundle.generator.state_dict().items())  # input left unchanged
    assert bundle.steps == []
    layer = "net.0" if which == "dcgan" else "fc"
    before = latent_rows(dict(bundle.generator.named_modules())[layer]).detach()
    after = latent_rows(dict(rotated.generator.named_modules())[layer]).detach()
    q = _recovered_rotation(before, after)
    assert torch.allclose(q.T @ q, torch.eye(8), atol=1e-4)
    assert not torch.allclose(q, torch.eye(8), atol=1e-2)  # it really rotated
    z = sample_latents(32, 8, seed=3)
    with torch.no_grad():
        assert torch.allclose(rotated.generator(z), bundle.generator(z @ q.T), atol=1e-4)
        assert not torch.allclose(rotated.generator(z), bundle.generator(z), atol=1e-2)
    step = rotated.steps[-1]
    assert step["step"] == "rotate_latent" and step["layer"] == layer
    assert step["top10_energy_after"] > step["top10_energy_before"]
    loaded = load_folder(save_folder(rotated, tmp_path / "rotated"))
    assert loaded.steps[-1]["rotation"] == step["rotation"]
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), rotated.generator(z))


def _linear_generator(rows: torch.Tensor) -> ModelBundle:
    """z (B, d) -> tanh(Linear(z)) (B, 1, 10, 20) with the given latent rows (d, 200) as its weight."""
    gen = nn.Sequential(nn.Linear(rows.shape[0], 200, bias=False), nn.Tanh(), nn.Unflatten(1, (1, 10, 20)))
    gen[0].weight.data = rows.T.clone()
    return ModelBundle.from_modules("gan", {"generator": gen.eval()}, {"generator": {}}, latent_dim=rows.shape[0],
                                    image_shape=(1, 10, 20))


def test_rotation_lets_magnitude_pruning_keep_the_images() -> None:
    """Magnitude pruning to the hidden density (7 of 8 weights) of a latent layer sparse in a hidden basis: near-lossless once rotated."""
    rows, _ = _planted()
    plain = _linear_generator(rows)
    rotated = rotate_latent(plain, LatentRotation(steps=1500, lr=0.02))
    z = sample_latents(256, 8, seed=4)

    def error(bundle: ModelBundle) -> float:
        pruned = prune(bundle, MagnitudePruning(sparsity=7 / 8))
        with torch.no_grad():
            return float((pruned.generator(z) - bundle.generator(z)).abs().mean())

    assert error(rotated) < 0.05 * error(plain)


def test_same_latent_comparisons_need_the_same_rotation(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    rotated = rotate_latent(tiny_gan, FAST)
    student = prune(rotated, MagnitudePruning(sparsity=0.5))
    config = Distillation(epochs=1, steps_per_epoch=1, batch_size=8)
    with pytest.raises(ConfigError, match="rotated differently"):
        distill(student, tiny_gan, config, data=tiny_images, device="cpu")
    with pytest.raises(ConfigError, match="rotated differently"):
        finetune(student, FineTuning(epochs=1, steps_per_epoch=1, batch_size=8, teacher_weight=1.0),
                 data=tiny_images, teacher=tiny_gan, device="cpu")
    with pytest.raises(ConfigError, match="rotated differently"):
        evaluate(student, teacher=tiny_gan, reference="digits", n=16, latency=False, write=False)
    out = distill(student, rotated, config, data=tiny_images, device="cpu")  # the rotated teacher is fine
    assert [s["step"] for s in out.steps][-3:-1] == ["rotate_latent", "prune"]


def test_rotation_rejects_what_it_cannot_rotate_losslessly(tiny_gan: ModelBundle) -> None:
    kwargs = {"nz": 8, "channels": 1, "image_size": 28, "widths": [8, 4]}
    ek = {"nz": 8, "channels": 1, "image_size": 28, "widths": [4, 8]}
    vae = ModelBundle.from_modules("vae", {"generator": VAEDecoder(**kwargs), "encoder": VAEEncoder(**ek)},
                                   {"generator": kwargs, "encoder": ek}, latent_dim=8)
    with pytest.raises(ConfigError, match="VAE"):
        rotate_latent(vae, FAST)
    with pytest.raises(ConfigError, match="rotate before pruning"):
        _masked_rotation(tiny_gan)
    with pytest.raises(ConfigError, match=r"stored sparse.*rotate before pruning or quantizing"):
        rotate_latent(prune(tiny_gan, MagnitudePruning(sparsity=0.5)), FAST)
    shifted = nn.Sequential(_AddOne(), nn.Linear(8, 200), nn.Tanh(), nn.Unflatten(1, (1, 10, 20)))
    affine = ModelBundle.from_modules("gan", {"generator": shifted.eval()}, {"generator": {}}, latent_dim=8,
                                      image_shape=(1, 10, 20))
    with pytest.raises(ConfigError, match="differs from G\\(Qz\\)"):
        rotate_latent(affine, FAST)
    wider = nn.Sequential(_Concat(), nn.Linear(16, 200), nn.Tanh(), nn.Unflatten(1, (1, 10, 20)))
    concat = ModelBundle.from_modules("gan", {"generator": wider.eval()}, {"generator": {}}, latent_dim=8,
                                      image_shape=(1, 10, 20))
    with pytest.raises(ConfigError, match="not the 8-dim latent"):
        rotate_latent(concat, FAST)
    for bad in ({"steps": 0}, {"steps": 2.5}, {"lr": 0.0}):
        with pytest.raises(ConfigError):
            LatentRotation(**bad)  # type: ignore[arg-type]


class _AddOne(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + 1.0


class _Concat(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z.pow(2)], dim=1)


def _masked_rotation(bundle: ModelBundle) -> None:
    from slimgen.prune import attach_masks

    masked = bundle.copy()
    layer = masked.generator.net[0]
    attach_masks(masked.generator, {"net.0": torch.ones_like(layer.weight, dtype=torch.bool)})
    rotate_latent(masked, FAST)


def test_cli_rotates_a_folder_that_then_prunes_and_distils(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    save_folder(tiny_gan, tmp_path / "teacher")
    result = CliRunner().invoke(app, ["rotate-latent", str(tmp_path / "teacher"), "--out", str(tmp_path / "rotated"),
                                      "--steps", "200"])
    assert result.exit_code == 0, result.output
    assert "prune and distil it against" in result.output
    rotated = load_folder(tmp_path / "rotated")
    assert rotated.steps[-1]["step"] == "rotate_latent"
    assert "latent basis rotated" in (tmp_path / "rotated" / "card.md").read_text()
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "rotated"), "--method", "magnitude", "--ratio", "0.5",
                                      "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    assert [s["step"] for s in load_folder(tmp_path / "pruned").steps][-2:] == ["rotate_latent", "prune"]
    bad = CliRunner().invoke(app, ["rotate-latent", str(tmp_path / "teacher"), "--out", str(tmp_path / "x"),
                                   "--steps", "0"])
    assert isinstance(bad.exception, ConfigError) and "steps must be an integer >= 1" in str(bad.exception)
    assert not (tmp_path / "x").exists()
