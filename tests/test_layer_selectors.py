"""``<first>`` / ``<last>`` layer names: picked by the forward pass (not module order), a factorized layer
counted once, resolved the same in pruning, quantization and quantization-aware distillation, recorded
as the model's own names, and a malformed selector is a one-line error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.models.factorized import LowRank
from slimgen.models.layers import call_sequence, resolve_config, resolve_name
from slimgen.prune import ChannelPruning, KernelPruning, LowRankFactorization, prune
from slimgen.quantize import LinearQuant, quantize


class BackwardG(nn.Module):
    """A user's generator whose layers are defined in the reverse of the order they run: module order says
    ``to_img`` comes first, the forward pass says ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.to_img = nn.Conv2d(8, 1, 3, 1, 1)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(8, 16 * 7 * 7)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.fc(z).view(-1, 16, 7, 7)))
        return torch.tanh(self.to_img(torch.relu(self.up(x))))


def _bundle() -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle.from_modules("gan", {"generator": BackwardG().eval()}, {"generator": {}}, latent_dim=8,
                                    image_shape=(1, 14, 14))


def test_first_and_last_follow_the_forward_pass_not_module_order() -> None:
    g = BackwardG().eval()
    assert next(n for n, m in g.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)) == "to_img"
    order = call_sequence(g, torch.randn(2, 8))
    assert order == ["fc", "up", "to_img"]
    assert (resolve_name("<first>", order), resolve_name("<last>", order)) == ("fc", "to_img")
    assert resolve_name("<second>", order) == "up" and resolve_name("<second>.0", order) == "up.0"
    with pytest.raises(ConfigError, match="picks the second layer of the forward pass, but only 'fc' ran"):
        resolve_name("<second>", ["fc"])
    assert resolve_name("<first>.1", order) == "fc.1" and resolve_name("up", order) == "up"


def test_a_factorized_layer_is_one_layer_and_its_halves_are_named_through_it(tmp_path) -> None:
    b = prune(_bundle(), LowRankFactorization(rank=4, layers=("<first>",)))
    assert isinstance(b.generator.fc, LowRank)
    step = b.steps[-1]
    assert list(step["config"]["layers"]) == ["fc"] and list(step["factorized_layers"]) == ["fc"]  # the model's own names
    assert call_sequence(b.generator, torch.randn(2, 8)) == ["fc", "up", "to_img"]
    assert call_sequence(b.generator, torch.randn(2, 8), collapse=False) == ["fc.0", "fc.1", "up", "to_img"]
    q = quantize(b, LinearQuant(bits=8, layer_bits={"<first>.1": 5, "<last>": 6}))
    bits = {k: e.params["bits"] for k, e in q.encodings.items() if "bits" in e.params}
    assert bits["generator.fc.1.weight"] == 5 and bits["generator.to_img.weight"] == 6
    assert bits["generator.fc.0.weight"] == 8 and bits["generator.up.weight"] == 8
    assert q.steps[-1]["layer_bits"] == {"fc.1": 5, "to_img": 6}
    loaded = load_folder(save_folder(q, tmp_path / "q"))
    assert loaded.encodings["generator.fc.1.weight"].params["bits"] == 5


def test_halves_of_a_layer_left_whole_name_the_layer_or_nothing() -> None:
    """A recipe that factorizes ``<first>`` where it pays (``required: false``) and then names its halves runs on
    a model whose first layer stayed whole: ``<first>.1`` is the layer, ``<first>.0`` (the bottleneck) is left out."""
    b = prune(_bundle(), LowRankFactorization(rank=8, layers=("<first>",), required=False))  # rank 8 of an 8-wide fc
    assert not isinstance(b.generator.fc, LowRank)
    with pytest.warns(UserWarning, match="rank bottleneck of a factorized layer, but fc was left whole"):
        pruned = prune(b, ChannelPruning(ratio=0.5, ignore=("<first>.0",)))
    assert list(pruned.steps[-1]["config"]["ignore"]) == []
    with pytest.warns(UserWarning, match="weight half of a factorized layer, but fc was left whole: it names fc"):
        q = quantize(b, LinearQuant(bits=8, layer_bits={"<first>.1": 5}))
    assert q.encodings["generator.fc.weight"].params["bits"] == 5
    with pytest.raises(ConfigError, match="the rank bottleneck of a factorized layer, but fc was left whole"):
        prune(b, LowRankFactorization(rank=2, layers=("<first>.0",)))
    with pytest.raises(ConfigError, match="not a layer"):  # a layer's own name is taken as written
        prune(b, ChannelPruning(ratio=0.5, ignore=("fc.0",)))


def test_selectors_name_the_same_layers_as_the_dcgan_names(tiny_gan: ModelBundle) -> None:
    """The shipped recipes' ``<first>`` is the DCGAN's ``net.0``: the same pruning, weight for weight."""
    z = torch.randn(3, 8)
    for by_name, by_place in [
        (ChannelPruning(ratio=0.5, layer_ratios={"net.0": 0.25}, importance="l1"),
         ChannelPruning(ratio=0.5, layer_ratios={"<first>": 0.25}, importance="l1")),
        (LowRankFactorization(rank=3, layers=("net.0",)), LowRankFactorization(rank=3, layers=("<first>",))),
    ]:
        a, b = prune(tiny_gan, by_name), prune(tiny_gan, by_place)
        assert a.steps[-1]["config"] == b.steps[-1]["config"]
        with torch.no_grad():
            assert torch.equal(a.generator(z), b.generator(z))
    a, b = prune(tiny_gan, LowRankFactorization(rank=3, layers=("net.3",))), \
        prune(tiny_gan, LowRankFactorization(rank=3, layers=("<second>",)))  # the frontier's middle layer
    assert a.steps[-1]["config"] == b.steps[-1]["config"] and isinstance(b.generator.net[3], LowRank)
    cropped = prune(tiny_gan, KernelPruning(size=2, layers=("<last>",)))  # the image layer, when named
    assert cropped.generator.net[6].kernel_size == (2, 2) and cropped.generator.net[3].kernel_size == (4, 4)


@pytest.mark.parametrize("name", ["<middle>", "<first>x", "<first", "<last>1"])
def test_a_malformed_selector_is_a_one_line_error(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown layer selector") as info:
        prune(_bundle(), LowRankFactorization(rank=4, layers=(name,)))
    assert "\n" not in str(info.value)


def test_a_layer_named_twice_is_refused_or_taken_once(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="names one layer twice"):
        prune(tiny_gan, ChannelPruning(ratio=0.5, layer_ratios={"net.0": 0.25, "<first>": 0.5}, importance="l1"))
    config = resolve_config(LowRankFactorization(rank=3, layers=("net.0", "<first>")), tiny_gan.generator,
                            torch.randn(2, 8))
    assert config.layers == ("net.0",)


def test_a_selector_without_inputs_to_run_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs example inputs"):
        resolve_config(LowRankFactorization(rank=4, layers=("<first>",)), BackwardG(), None)
    config = LowRankFactorization(rank=4, layers=("fc",))
    assert resolve_config(config, BackwardG(), None) is config  # plain names need no forward pass


class RGBGen(nn.Module):
    """A user's 3x16x16 generator, layers defined image-first: no shipped data set holds its images."""

    def __init__(self) -> None:
        super().__init__()
        self.to_rgb = nn.Conv2d(8, 3, 3, 1, 1)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.fc = nn.Linear(8, 16 * 8 * 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_rgb(torch.relu(self.up(torch.relu(self.fc(z).view(-1, 16, 8, 8))))))


RECIPE = """teacher: {teacher}
steps:
  - prune_channels: {{ratio: 0.5, importance: taylor}}
  - prune_lowrank: {{rank: 4, layers: [<first>]}}
  - quantize: {{weights: {{bits: 8, entropy_coding: lzma, layer_bits: {{<first>.1: 6}}}}}}
evaluate: {{n: 64, latency: false}}
"""


def test_a_recipe_with_selectors_runs_on_a_users_rgb_generator_scored_against_its_teacher(tmp_path) -> None:
    """The shipped recipes' shape of steps on a generator that is no DCGAN and has no shipped data: the
    selectors find ``fc``, and every row (the teacher's too) is scored against the teacher's own samples."""
    import json

    from slimgen.models.registry import trust_code
    from slimgen.pipeline import compress, parse_recipe

    trust_code("tests.test_layer_selectors:RGBGen")
    torch.manual_seed(0)
    teacher = ModelBundle.from_modules("gan", {"generator": RGBGen().eval()}, {"generator": {}}, latent_dim=8,
                                       image_shape=(3, 16, 16))
    folder = save_folder(teacher, tmp_path / "teacher")
    result = compress(parse_recipe(RECIPE.format(teacher=folder), source="r.yaml"), out=tmp_path / "run")
    assert [r["step"] for r in result.rows][-1] == "03-quantize"
    assert all(r["reference_kind"] == "teacher" for r in result.rows)
    final = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    prune_steps = [s for s in final["steps"] if s["step"] == "prune"]
    assert list(prune_steps[-1]["factorized_layers"]) == ["fc"]
    assert final["steps"][-1]["layer_bits"] == {"fc.1": 6}


def test_quantization_aware_distillation_records_the_students_own_layer_names(tiny_gan: ModelBundle) -> None:
    from slimgen.distill import Distillation, distill

    student = prune(tiny_gan, LowRankFactorization(rank=3, layers=("<first>",)))
    config = Distillation(epochs=1, lr=1e-3, batch_size=4, steps_per_epoch=2, losses={"output": 1.0, "adversarial": 0},
                          fake_quant={"bits": 8, "layer_bits": {"<first>.1": 4}})
    out = distill(student, tiny_gan, config, device="cpu")
    assert out.steps[-1]["config"]["fake_quant"]["layer_bits"] == {"net.0.1": 4}
    w = out.generator.net[0][1].weight
    assert max(w[:, c].unique().numel() for c in range(w.shape[1])) <= 15  # net.0.1 trained on the 4-bit grid
