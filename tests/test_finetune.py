"""Adversarial fine-tuning: zeros stay zero, best epoch kept, resume, teacher loss, parametrizations, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.prune import ChannelPruning, MagnitudePruning, SparsityTraining, penalty_for, prune, sparsity_of
from slimgen.train.finetune import FineTuning, finetune

FAST = FineTuning(epochs=2, steps_per_epoch=3, batch_size=16)


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach().clone() for m in module.modules() if isinstance(m, nn.ConvTranspose2d)]


def test_finetuning_keeps_pruned_weights_at_zero(tiny_gan: ModelBundle, tiny_images: ImageSet, tmp_path) -> None:
    pruned = prune(tiny_gan, MagnitudePruning(sparsity=0.9, scope="layerwise"))  # every layer keeps weights to train
    tuned = finetune(pruned, FAST, data=tiny_images, teacher=tiny_gan)
    for before, after in zip(_weights(pruned.generator), _weights(tuned.generator), strict=True):
        assert torch.equal(after[before == 0], torch.zeros_like(after[before == 0]))  # pruned stay zero
        assert not torch.equal(after[before != 0], before[before != 0])  # the rest trained
    assert not any(k.endswith(("_orig", "_mask")) for k in tuned.generator.state_dict())  # masks folded back
    assert sparsity_of(tuned.generator) == pytest.approx(0.9, abs=1e-3)
    assert sparsity_of(pruned.generator) == pytest.approx(0.9, abs=1e-3)  # input untouched
    save_folder(tuned, tmp_path / "m")
    z = torch.randn(2, 8)
    assert torch.equal(load_folder(tmp_path / "m").generator(z), tuned.generator(z))


def test_best_epoch_by_score_is_returned(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    states: dict[int, dict[str, torch.Tensor]] = {}
    scores = iter([3.0, 1.0, 2.0])

    def remember(epoch: int, g: nn.Module) -> dict[str, float]:
        states[epoch] = {k: v.clone() for k, v in g.state_dict().items()}
        return {}

    config = FineTuning(epochs=3, steps_per_epoch=2, batch_size=16)
    tuned = finetune(tiny_gan, config, data=tiny_images, score=lambda g: next(scores), on_epoch=remember)
    assert tuned.steps[-1]["best_epoch"] == 2 and tuned.steps[-1]["best_score"] == 1.0
    for k, v in tuned.generator.state_dict().items():
        assert torch.equal(v, states[2][k])
    assert not all(torch.equal(v, states[3][k]) for k, v in tuned.generator.state_dict().items())


def test_resume_gives_the_same_result(tiny_gan: ModelBundle, tiny_images: ImageSet, tmp_path) -> None:
    pruned = prune(tiny_gan, MagnitudePruning(sparsity=0.5))
    straight = finetune(pruned, FAST, data=tiny_images, teacher=tiny_gan)
    one = FineTuning(epochs=1, steps_per_epoch=3, batch_size=16)
    finetune(pruned, one, data=tiny_images, teacher=tiny_gan, checkpoint_dir=tmp_path)
    resumed = finetune(pruned, FAST, data=tiny_images, teacher=tiny_gan, checkpoint_dir=tmp_path, resume=True)
    for k, v in straight.generator.state_dict().items():
        assert torch.allclose(v, resumed.generator.state_dict()[k], atol=1e-6)


def test_teacher_loss_is_used(tiny_gan: ModelBundle, tiny_images: ImageSet, tmp_path) -> None:
    student = prune(tiny_gan, ChannelPruning(ratio=0.5))
    config = FineTuning(epochs=1, steps_per_epoch=2, batch_size=16, teacher_weight=10.0)
    finetune(student, config, data=tiny_images, teacher=tiny_gan, checkpoint_dir=tmp_path)
    history = json.loads((tmp_path / "state.json").read_text())["history"]
    assert history[-1]["g_teacher"] > 0


def test_sparsity_training_shrinks_norm_scales(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    def bn_l1(b: ModelBundle) -> float:
        return sum(m.weight.abs().sum().item() for m in b.generator.modules() if isinstance(m, nn.BatchNorm2d))

    config = FineTuning(epochs=1, steps_per_epoch=3, batch_size=16, lr=1e-2)
    plain = finetune(tiny_gan, config, data=tiny_images)
    slimmed = finetune(tiny_gan, config, data=tiny_images, penalty=penalty_for(SparsityTraining(l1_bn=1.0)))
    assert bn_l1(slimmed) < bn_l1(plain) - 0.5


class _RoundWeights(nn.Module):
    """A fake-quantization parametrization (straight-through rounding to a 1/64 grid)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + ((w * 64).round() / 64 - w).detach()


def test_parametrized_generator_fine_tunes(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    bundle = tiny_gan.copy()
    layer = bundle.generator.net[3]
    parametrize.register_parametrization(layer, "weight", _RoundWeights())
    tuned = finetune(bundle, FAST, data=tiny_images)
    tuned_layer = tuned.generator.net[3]
    assert parametrize.is_parametrized(tuned_layer, "weight")  # the caller's parametrization is left in place
    w = tuned_layer.weight.detach()
    assert torch.equal(w, (w * 64).round() / 64)
    assert not torch.equal(tuned_layer.parametrizations.weight.original, layer.parametrizations.weight.original)


def test_finetuning_needs_a_discriminator(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    bundle = tiny_gan.copy()
    del bundle.parts["discriminator"], bundle.specs["discriminator"]
    with pytest.raises(ConfigError, match="fine-tuning needs a discriminator"):
        finetune(bundle, FAST, data=tiny_images)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"teacher_weight": -1.0}, "teacher_weight must be >= 0"),
    ({"steps_per_epoch": 0}, "steps_per_epoch must be >= 1 or None"),
    ({"lr_schedule": "exp"}, "lr_schedule must be one of constant, cosine, got 'exp'"),
])
def test_finetuning_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FineTuning(**kwargs)


def test_cli_prune_and_finetune(tiny_gan: ModelBundle, tiny_images: ImageSet, tmp_path) -> None:
    save_folder(tiny_gan, tmp_path / "teacher")
    np.save(tmp_path / "data.npy", tiny_images.images.numpy())
    runner = CliRunner()
    result = runner.invoke(app, ["prune", str(tmp_path / "teacher"), "--method", "channels", "--ratio", "0.5",
                                 "--importance", "taylor", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    pruned = load_folder(tmp_path / "p")
    assert pruned.generator.net[0].out_channels == 8
    assert pruned.steps[-1]["config"]["importance"] == "taylor"
    args = ["finetune", str(tmp_path / "p"), "--teacher", str(tmp_path / "teacher"), "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "16", "--teacher-weight", "1", "--no-select",
            "--dataset", str(tmp_path / "data.npy"), "--out", str(tmp_path / "ft")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    tuned = load_folder(tmp_path / "ft")
    assert [s["step"] for s in tuned.steps] == ["prune", "finetune"]
    assert tuned.generator.net[0].out_channels == 8
    result = runner.invoke(app, [*args[:5], "2", *args[6:], "--resume"])  # one more epoch from the checkpoint
    assert result.exit_code == 0, result.output
    assert load_folder(tmp_path / "ft").steps[-1]["epochs_run"] == 2


def test_cli_prune_gradient_with_the_output_projection_loss(tiny_gan: ModelBundle, tmp_path) -> None:
    save_folder(tiny_gan, tmp_path / "teacher")
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "teacher"), "--method", "gradient", "--ratio", "0.8",
                                      "--loss", "output_projection", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    step = load_folder(tmp_path / "p").steps[-1]
    assert step["config"]["loss"] == step["loss_used"] == "output_projection"
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "teacher"), "--method", "gradient", "--loss", "pixels",
                                      "--out", str(tmp_path / "q")])
    assert isinstance(result.exception, ConfigError) and "loss must be one of" in str(result.exception)


def test_cli_prune_rejects_a_bad_ratio(tiny_gan: ModelBundle, tmp_path) -> None:
    save_folder(tiny_gan, tmp_path / "teacher")
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "teacher"), "--method", "magnitude", "--ratio", "1.2",
                                      "--out", str(tmp_path / "p")])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "open interval (0, 1)" in str(result.exception)
    assert not (tmp_path / "p").exists()
