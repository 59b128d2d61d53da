"""Schedules (cubic, geometric, iterative, gradual) and sparsity training."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.prune import (
    ChannelPruning,
    GradualPruning,
    IterativePruning,
    MagnitudePruning,
    SparsityTraining,
    cubic_sparsity,
    prune_gradually,
    prune_iteratively,
    sparsity_of,
    sparsity_penalty,
)
from slimgen.prune.schedules import geometric_targets, per_step_ratio
from slimgen.train.finetune import FineTuning

FAST = FineTuning(epochs=1, steps_per_epoch=2, batch_size=16)


def test_cubic_sparsity_follows_zhu_and_gupta() -> None:
    kw = {"final": 0.9, "initial": 0.1, "begin": 100, "end": 300}
    assert cubic_sparsity(0, **kw) == pytest.approx(0.1)
    assert cubic_sparsity(100, **kw) == pytest.approx(0.1)
    assert cubic_sparsity(200, **kw) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5**3)
    assert cubic_sparsity(300, **kw) == pytest.approx(0.9)
    assert cubic_sparsity(10_000, **kw) == pytest.approx(0.9)
    values = [cubic_sparsity(t, **kw) for t in range(100, 301, 10)]
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)  # fast first, then slower


def test_cubic_sparsity_rejects_an_empty_window() -> None:
    with pytest.raises(ConfigError, match=r"end \(5\) must be after begin \(5\)"):
        cubic_sparsity(0, final=0.5, begin=5, end=5)


def test_geometric_targets_reach_the_final_value() -> None:
    targets = geometric_targets(0.75, 2)
    assert targets == pytest.approx([0.5, 0.75])
    r = per_step_ratio(0.75, 2)
    assert 1 - (1 - r) ** 2 == pytest.approx(0.75)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": 0.5, "initial_sparsity": 0.5}, r"initial_sparsity must be in \[0, sparsity=0.5\)"),
    ({"begin_step": 10, "end_step": 10}, "need 0 <= begin_step < end_step"),
    ({"frequency": 0}, "frequency must be >= 1"),
])
def test_gradual_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GradualPruning(**kwargs)


def test_iterative_needs_two_steps() -> None:
    with pytest.raises(ConfigError, match="steps must be >= 2"):
        IterativePruning(steps=1)


def test_gradual_pruning_reaches_the_target_and_saves_sparse(tiny_gan: ModelBundle, tiny_images: ImageSet,
                                                             tmp_path) -> None:
    seen: list[float] = []
    config = GradualPruning(sparsity=0.8, end_step=6, frequency=2)
    result = prune_gradually(tiny_gan, config, FineTuning(epochs=2, steps_per_epoch=4, batch_size=16),
                             data=tiny_images, score=lambda g: seen.append(sparsity_of(g)) or 0.0)
    assert sparsity_of(result.generator) == pytest.approx(0.8, abs=1e-3)
    assert seen == [pytest.approx(0.8, abs=1e-3)]  # epoch 1 ends mid-schedule: not a candidate for best
    assert result.steps[-1]["step"] == "gradual_prune"
    assert all(e.codec == "sparse_bitmask" for e in result.encodings.values())
    save_folder(result, tmp_path / "m")
    z = torch.randn(2, 8)
    assert torch.equal(load_folder(tmp_path / "m").generator(z), result.generator(z))


def test_gradual_pruning_must_fit_the_run(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    with pytest.raises(ConfigError, match="fine-tuning runs 2 steps but the schedule ends at step 10"):
        prune_gradually(tiny_gan, GradualPruning(end_step=10), FAST, data=tiny_images)


def test_iterative_magnitude_reaches_the_final_sparsity(tiny_gan: ModelBundle, tiny_images: ImageSet,
                                                        tmp_path) -> None:
    result = prune_iteratively(tiny_gan, MagnitudePruning(sparsity=0.75), IterativePruning(steps=2), FAST,
                               data=tiny_images, work_dir=tmp_path)
    assert [s["step"] for s in result.steps] == ["prune", "finetune", "prune", "finetune"]
    assert [s["config"]["sparsity"] for s in result.steps if s["step"] == "prune"] == pytest.approx([0.5, 0.75])
    assert sparsity_of(result.generator) == pytest.approx(0.75, abs=1e-3)
    assert (tmp_path / "round-1" / "config.json").is_file()
    again = prune_iteratively(tiny_gan, MagnitudePruning(sparsity=0.75), IterativePruning(steps=2), FAST,
                              data=tiny_images, work_dir=tmp_path, resume=True)
    assert torch.equal(again.generator.net[0].weight, result.generator.net[0].weight)  # nothing left to redo


def test_iterative_pruning_can_distil_after_each_round(tiny_gan: ModelBundle, tiny_images: ImageSet,
                                                       tmp_path) -> None:
    from slimgen.distill import Distillation

    config = Distillation(epochs=1, steps_per_epoch=3, batch_size=16, lr=1e-3, losses={"output": 1.0})
    longer = Distillation(epochs=2, steps_per_epoch=3, batch_size=16, lr=1e-3, losses={"output": 1.0})
    result = prune_iteratively(tiny_gan, MagnitudePruning(sparsity=0.75), IterativePruning(steps=2), config,
                               data=tiny_images, work_dir=tmp_path, last=longer)
    assert [s["step"] for s in result.steps] == ["prune", "distill", "prune", "distill"]
    assert [s["epochs_run"] for s in result.steps if s["step"] == "distill"] == [1, 2]  # the last round: ``last``
    assert sparsity_of(result.generator) == pytest.approx(0.75, abs=1e-3)  # distillation kept the zeros
    first = load_folder(tmp_path / "round-0")
    pruned_first = first.generator.net[0].weight == 0
    assert (result.generator.net[0].weight[pruned_first] == 0).all()  # round 1 only adds zeros
    assert (tmp_path / "round-1-checkpoint" / "state.json").is_file()


def test_iterative_channel_pruning_shrinks_in_steps(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    result = prune_iteratively(tiny_gan, ChannelPruning(ratio=0.75), IterativePruning(steps=2), FAST,
                               data=tiny_images)
    widths = [s["params_after"] for s in result.steps if s["step"] == "prune"]
    assert widths[0] > widths[1]
    assert result.generator.net[0].out_channels == 4  # 16 -> 8 -> 4
    assert result.generator(torch.randn(2, 8)).shape == (2, 1, 28, 28)


def test_sparsity_penalty_sums_weights_and_norm_scales() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        model[1].weight.copy_(torch.tensor([3.0, -1.0]))
    value = sparsity_penalty(model, SparsityTraining(l1_weight=0.1, l1_bn=0.01))
    assert value.item() == pytest.approx(0.1 * 3.5 + 0.01 * 4.0)


def test_sparsity_training_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs l1_weight > 0 or l1_bn > 0"):
        SparsityTraining(l1_weight=0.0, l1_bn=0.0)
    with pytest.raises(ConfigError, match="must be >= 0"):
        SparsityTraining(l1_weight=-1.0)
