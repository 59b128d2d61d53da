"""Pruning: config validation, the contract every registered method meets, and unstructured specifics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.cost import count_macs, count_nonzero_params, count_params
from slimgen.models import DCGANGenerator, ModelBundle, load_folder, save_folder, weight_bytes
from slimgen.prune import (
    PRUNERS,
    ChannelPruning,
    GradientPruning,
    KernelPruning,
    LowRankFactorization,
    MagnitudePruning,
    RandomPruning,
    ThresholdPruning,
    prune,
    sparsity_of,
)
from slimgen.prune.unstructured import global_masks, layerwise_masks, prunable_layers, threshold_masks

# one example config per registered method: the contract test below runs them all
EXAMPLES = {
    MagnitudePruning: MagnitudePruning(sparsity=0.5),
    RandomPruning: RandomPruning(sparsity=0.5, seed=3),
    GradientPruning: GradientPruning(sparsity=0.5, scope="layerwise"),
    ThresholdPruning: ThresholdPruning(threshold=0.01),
    ChannelPruning: ChannelPruning(ratio=0.5),
    KernelPruning: KernelPruning(size=2),
    LowRankFactorization: LowRankFactorization(rank=4, layers=("net.0",)),
}
UNSTRUCTURED = [MagnitudePruning, RandomPruning, GradientPruning]


def test_every_registered_method_has_an_example() -> None:
    assert set(EXAMPLES) == set(PRUNERS)


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in prunable_layers(module).items()}


def _expected_nonzero(config: object, before: nn.Module) -> int:
    """Non-zero parameters the method must leave, computed from the unpruned weights."""
    weights = _weights(before)
    other = count_nonzero_params(before) - sum(int((w != 0).sum()) for w in weights.values())
    if isinstance(config, ThresholdPruning):
        return other + sum(int((w.abs() >= config.threshold).sum()) for w in weights.values())
    return other + sum(w.numel() - round(config.sparsity * w.numel()) for w in weights.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("config", list(EXAMPLES.values()), ids=lambda c: type(c).__name__)
def test_method_contract(config: object, tiny_gan: ModelBundle, tmp_path) -> None:
    z = torch.randn(4, 8)
    before = {k: v.clone() for k, v in tiny_gan.state_dict().items()}
    pruned = prune(tiny_gan, config)
    g0, g1 = tiny_gan.generator, pruned.generator
    # the input bundle is untouched, the output has the same image shape
    assert all(torch.equal(before[k], v) for k, v in tiny_gan.state_dict().items())
    assert g1.eval()(z).shape == g0(z).shape == (4, 1, 28, 28)
    # the cost went down by the expected amount
    if isinstance(config, ChannelPruning):
        half = DCGANGenerator(nz=8, widths=[8, 4])
        assert count_params(g1) == count_params(half) < count_params(g0)
        assert count_macs(g1, z) == count_macs(half, z)
    elif isinstance(config, KernelPruning):  # the 16 -> 8 stride-2 layer keeps 4 of its 16 taps
        assert count_macs(g0, z) - count_macs(g1, z) == 7 * 7 * 16 * 8 * 12
        assert count_params(g0) - count_params(g1) == 16 * 8 * 12
    elif isinstance(config, LowRankFactorization):  # the 8 -> 16 x 7 x 7 latent layer at rank 4
        assert count_params(g0) - count_params(g1) == 8 * 16 * 49 - 4 * (8 + 16 * 49)
        assert count_macs(g0, z) - count_macs(g1, z) == 8 * 16 * 49 - 4 * (8 + 16 * 49)
    else:
        assert count_params(g1) == count_params(g0)
        assert count_nonzero_params(g1) == _expected_nonzero(config, g0)
        assert all(enc.codec == "sparse_bitmask" for enc in pruned.encodings.values())
    # the step is recorded and the folder reloads to identical outputs without the original
    assert pruned.steps[-1]["method"] == type(config).__name__
    save_folder(pruned, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    assert torch.equal(loaded.generator(z), g1.eval()(z))
    assert loaded.steps[-1]["method"] == type(config).__name__


@pytest.mark.parametrize("cls", UNSTRUCTURED)
@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_invalid_sparsity_is_rejected(cls: type, bad: float) -> None:
    with pytest.raises(ConfigError, match=r"sparsity must be in the open interval \(0, 1\)"):
        cls(sparsity=bad)


@pytest.mark.parametrize("bad", [0.0, 1.0, 2.0])
def test_invalid_channel_ratio_is_rejected(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"ratio must be in the open interval \(0, 1\)"):
        ChannelPruning(ratio=bad)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scope": "per-layer"}, "scope must be one of layerwise, global"),
    ({"sparsity": None}, "give exactly one of sparsity and threshold"),
    ({"sparsity": 0.5, "threshold": 0.1}, "give exactly one of sparsity and threshold"),
    ({"sparsity": None, "threshold": -1.0}, "threshold must be > 0"),
])
def test_invalid_magnitude_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MagnitudePruning(**kwargs)


def test_invalid_channel_importance() -> None:
    with pytest.raises(ConfigError, match="importance must be one of l1, l2, bn_scale, activation, taylor"):
        ChannelPruning(importance="l3")  # type: ignore[arg-type]


def test_layerwise_masks_prune_exactly_the_lowest_scores() -> None:
    scores = {"a": torch.tensor([[4.0, 1.0], [3.0, 2.0]]), "b": torch.arange(10.0)}
    masks = layerwise_masks(scores, 0.5)
    assert masks["a"].tolist() == [[True, False], [True, False]]
    assert masks["b"].tolist() == [False] * 5 + [True] * 5


def test_global_masks_rank_across_tensors() -> None:
    scores = {"a": torch.tensor([10.0, 20.0]), "b": torch.tensor([1.0, 2.0, 3.0, 30.0])}
    masks = global_masks(scores, 0.5)
    assert masks["a"].tolist() == [True, True]
    assert masks["b"].tolist() == [False, False, False, True]


def test_threshold_masks_keep_scores_at_or_above() -> None:
    masks = threshold_masks({"a": torch.tensor([0.005, 0.01, -0.5])}, 0.01)
    assert masks["a"].tolist() == [False, True, False]  # scores, not weights: callers pass |w|


def test_global_scope_gives_uneven_layers_with_the_same_total(tiny_gan: ModelBundle) -> None:
    pruned = prune(tiny_gan, MagnitudePruning(sparsity=0.8, scope="global"))
    g = pruned.generator
    per_layer = [float((w == 0).float().mean()) for w in _weights(g).values()]
    assert sparsity_of(g) == pytest.approx(0.8, abs=1e-3)
    assert max(per_layer) - min(per_layer) > 0.05


def test_gradient_pruning_uses_the_discriminator_loss_in_a_gan(tiny_gan: ModelBundle) -> None:
    adversarial = prune(tiny_gan, GradientPruning(sparsity=0.7))
    norm = prune(tiny_gan, GradientPruning(sparsity=0.7, loss="output_norm"))
    assert adversarial.steps[-1]["loss_used"] == "adversarial"
    assert norm.steps[-1]["loss_used"] == "output_norm"
    masks = [(_weights(b.generator)["net.0"] != 0) for b in (adversarial, norm)]
    assert not torch.equal(masks[0], masks[1])  # a different loss ranks weights differently


def test_gradient_pruning_of_a_bare_module_needs_calibration() -> None:
    g = DCGANGenerator(nz=8, widths=[16, 8])
    with pytest.raises(ConfigError, match="needs calibration inputs"):
        prune(g, GradientPruning(sparsity=0.5))
    pruned = prune(g, GradientPruning(sparsity=0.5, criterion="fisher"), calibration=torch.randn(32, 8))
    assert sparsity_of(pruned) == pytest.approx(0.5, abs=1e-3)
    assert sparsity_of(g) == 0.0  # the input module is untouched


def test_output_projection_prunes_what_moves_the_outputs_least() -> None:
    # equal weights; input 0 varies 100x more than input 1, so zeroing a weight that reads
    # input 1 barely moves the outputs: those go first, whatever their magnitude says. The
    # large bias of output 1 does not matter to how far a weight moves the outputs, but it
    # dominates the output norm's gradients, which keep that row instead.
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.copy_(torch.tensor([0.0, 1e4]))
    calibration = torch.randn(64, 2) * torch.tensor([10.0, 0.1])  # (N, 2)
    config = GradientPruning(sparsity=0.5, scope="layerwise", loss="output_projection", batch_size=8)
    pruned = prune(layer, config, calibration=calibration)
    assert torch.equal(pruned.weight != 0, torch.tensor([[True, False]] * 2))
    norm = prune(layer, replace(config, loss="output_norm"), calibration=calibration)
    assert torch.equal(norm.weight != 0, torch.tensor([[False, False], [True, True]]))
    again = prune(layer, config, calibration=calibration)
    assert torch.equal(again.weight, pruned.weight)  # the projections are seeded: same masks every time
    with pytest.raises(ConfigError, match="loss must be one of auto, adversarial, output_norm, output_projection"):
        GradientPruning(loss="projection")  # type: ignore[arg-type]


def test_adversarial_loss_without_discriminator_is_an_error() -> None:
    g = DCGANGenerator(nz=8, widths=[16, 8])
    with pytest.raises(ConfigError, match="loss='adversarial' needs a discriminator"):
        prune(g, GradientPruning(sparsity=0.5, loss="adversarial"), calibration=torch.randn(8, 8))


def test_threshold_baseline_zeroes_small_weights_only(tiny_gan: ModelBundle) -> None:
    pruned = prune(tiny_gan, ThresholdPruning(0.01))
    for w0, w1 in zip(_weights(tiny_gan.generator).values(), _weights(pruned.generator).values(), strict=True):
        assert torch.equal(w1, torch.where(w0.abs() < 0.01, torch.zeros_like(w0), w0))


def test_unstructured_90_percent_shrinks_stored_bytes(tiny_gan: ModelBundle, tmp_path) -> None:
    dense_path = save_folder(tiny_gan, tmp_path / "dense")
    pruned = prune(tiny_gan, MagnitudePruning(sparsity=0.9))
    sparse_path = save_folder(pruned, tmp_path / "sparse")
    weights = _weights(tiny_gan.generator).values()
    dense_part = sum(4 * w.numel() for w in weights)
    packed_part = sum(math.ceil(w.numel() / 8) + 4 * (w.numel() - round(0.9 * w.numel())) for w in weights)
    saved = weight_bytes(dense_path) - weight_bytes(sparse_path)
    assert saved >= dense_part - packed_part - 1024  # 1 KiB for the extra safetensors header entries
    assert packed_part * 5 < dense_part


def test_unstructured_needs_a_weight_layer() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Tanh())
    with pytest.raises(ConfigError, match="nothing to prune: Sequential has no Conv/ConvTranspose/Linear layer"):
        prune(model, MagnitudePruning(sparsity=0.5))


def test_unknown_config_type_is_an_error(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="no pruning method for dict"):
        prune(tiny_gan, {"ratio": 0.5})


def test_prune_discriminator_part(tiny_gan: ModelBundle, tmp_path) -> None:
    pruned = prune(tiny_gan, ChannelPruning(ratio=0.5), part="discriminator")
    d = pruned.discriminator
    assert d is not None
    x = torch.randn(3, 1, 28, 28)
    assert d(x).shape == (3,)
    assert pruned.specs["discriminator"].kwargs["widths"] == [4, 8]
    assert count_params(pruned.generator) == count_params(tiny_gan.generator)  # only the named part changes
    save_folder(pruned, tmp_path / "m")
    assert torch.equal(load_folder(tmp_path / "m").discriminator(x), d.eval()(x))


def test_unknown_part_is_an_error(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="no part 'encoder' to prune; this model has: generator, discriminator"):
        prune(tiny_gan, ChannelPruning(), part="encoder")
