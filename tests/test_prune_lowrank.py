"""Low-rank factorization: exact at full rank on every layer kind and side, the truncated SVD below it, the
layers and ranks chosen as documented, folders that rebuild it (also after channel pruning, on a user's
graph-rewritten model), ONNX export and int8 quantization of the result, and one-line errors."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.cost import count_macs, count_params
from slimgen.export import export_onnx
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.models.factorized import LowRank, factorize, matrix
from slimgen.prune import ChannelPruning, KernelPruning, LowRankFactorization, prune

LAYERS = [
    (nn.Conv2d(6, 5, 3, 2, 1), (2, 6, 9, 9)),
    (nn.Conv2d(6, 5, 3, 1, 1, padding_mode="reflect"), (2, 6, 8, 8)),
    (nn.ConvTranspose2d(6, 5, 4, 2, 1), (2, 6, 7, 7)),
    (nn.ConvTranspose2d(6, 5, 3, 2, 1, output_padding=1, bias=False), (2, 6, 5, 5)),
    (nn.Linear(6, 5), (3, 6)),
]


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(("layer", "shape"), LAYERS)
def test_full_rank_is_exact_and_lower_rank_is_the_truncated_svd(layer: nn.Module, shape: tuple[int, ...],
                                                                side: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    full = min(matrix(layer, side).shape)
    low, kept = factorize(layer, full, side)
    assert isinstance(low, LowRank) and low.rank == full and kept == pytest.approx(1.0)
    with torch.no_grad():
        assert torch.allclose(low(x), layer(x), atol=1e-5)
    low2, kept2 = factorize(layer, 2, side)
    s2 = torch.linalg.svdvals(matrix(layer, side).double()) ** 2
    assert kept2 == pytest.approx(float(s2[:2].sum() / s2.sum()), rel=1e-6)
    # the two halves compute the layer with its weight replaced by the best rank-2 approximation (Eckart-Young)
    u, s, vh = torch.linalg.svd(matrix(layer, side).double(), full_matrices=False)
    ref = copy.deepcopy(layer)
    with torch.no_grad():
        ref.weight.copy_(_from_matrix(layer, side, (u[:, :2] * s[:2]) @ vh[:2]))
        assert torch.allclose(low2(x), ref(x), atol=1e-5)
        assert not torch.allclose(low2(x), layer(x), atol=1e-3)


def _from_matrix(layer: nn.Module, side: str, m: torch.Tensor) -> torch.Tensor:
    """The weight of ``layer``'s layout whose :func:`matrix` on ``side`` is ``m`` (the inverse reshape)."""
    w = layer.weight
    rows_first = isinstance(layer, nn.ConvTranspose2d) == (side == "input")
    if rows_first:
        return m.reshape(w.shape).to(w.dtype)
    return m.reshape(w.shape[1], w.shape[0], *w.shape[2:]).transpose(0, 1).to(w.dtype)


def test_dcgan_latent_layer_factorized_saves_loads_prunes_exports(tiny_gan: ModelBundle, tmp_path) -> None:
    out = prune(tiny_gan, LowRankFactorization(rank=4, layers=("net.0",)))
    g0, g1 = tiny_gan.generator, out.generator
    step = out.steps[-1]
    assert step["method"] == "LowRankFactorization" and set(step["factorized_layers"]) == {"net.0"}
    assert step["factorized_layers"]["net.0"]["rank"] == 4 and 0 < step["factorized_layers"]["net.0"]["energy"] < 1
    assert isinstance(g1.net[0], LowRank) and g1.net[0][0].weight.shape == (4, 8, 1, 1)
    z = torch.randn(5, 8)
    # weights and MACs of the 8 -> 16 x 7 x 7 layer: 8*16*49 before, 4*(8 + 16*49) after
    assert count_params(g0) - count_params(g1) == 8 * 16 * 49 - 4 * (8 + 16 * 49)
    assert count_macs(g0, z) - count_macs(g1, z) == 8 * 16 * 49 - 4 * (8 + 16 * 49)
    save_folder(out, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["parts"]["generator"]["factorized"] == {
        "net.0": {"rank": 4, "side": "input"}}
    loaded = load_folder(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), g1(z))
    # channel pruning afterwards narrows the rank too; the folder records the rank it has
    narrow = prune(out, ChannelPruning(ratio=0.5, importance="l1"))
    cropped = prune(narrow, KernelPruning(size=2))
    save_folder(cropped, tmp_path / "n")
    again = load_folder(tmp_path / "n")
    with torch.no_grad():
        assert torch.equal(again.generator(z), cropped.generator(z))
    assert again.generator.net[0].rank == cropped.generator.net[0].rank <= 4
    path = export_onnx(again, tmp_path / "m.onnx")
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path))
    got = sess.run(None, {sess.get_inputs()[0].name: z.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), cropped.generator(z).detach(), atol=1e-5)


def test_int8_quantization_of_a_factorized_model_is_int8_and_reloads(tiny_gan: ModelBundle, tmp_path) -> None:
    from slimgen.quantize import LinearQuant, Quantization, quantize

    out = prune(tiny_gan, LowRankFactorization(rank=4, layers=("net.0",)))
    q = quantize(out, Quantization(weights=LinearQuant(bits=8)))
    codecs = {k: e.codec for k, e in q.encodings.items()}
    assert any(k.startswith("generator.net.0.0.") for k in codecs) and any(k.startswith("generator.net.0.1.")
                                                                            for k in codecs)
    save_folder(q, tmp_path / "q")
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(load_folder(tmp_path / "q").generator(z), q.generator(z), atol=1e-6)


def test_default_choice_energy_and_skipped_layers(tiny_gan: ModelBundle) -> None:
    out = prune(tiny_gan, LowRankFactorization(energy=0.5))
    step = out.steps[-1]
    assert "net.6" in step["kept_layers"] and "output" in step["kept_layers"]["net.6"]
    for name, rec in step["factorized_layers"].items():
        layer = tiny_gan.generator.get_submodule(name)
        s2 = torch.linalg.svdvals(matrix(layer, "input").double()) ** 2
        kept = (s2.cumsum(0) / s2.sum()).tolist()
        rank = rec["rank"]
        assert kept[rank - 1] >= 0.5 - 1e-9 and (rank == 1 or kept[rank - 2] < 0.5)  # the smallest such rank
    # a rank no smaller in weights is skipped by default and refused when named
    whole = prune(tiny_gan, LowRankFactorization(rank=8, layers=("net.3",)))
    assert whole.steps[-1]["factorized_layers"]["net.3"]["rank"] == 8  # 8 x (16 + 8*16) < 16 * 8 * 16
    with pytest.raises(ConfigError, match="found no layer to factorize"):
        prune(tiny_gan, LowRankFactorization(energy=1.0))
    with pytest.raises(ConfigError, match="not fewer than"):
        prune(tiny_gan, LowRankFactorization(rank=8, layers=("net.0",)))


class UserG(nn.Module):
    """A user's generator with a Linear -> literal view, so channel pruning runs it as a rewritten graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 7 * 7)
        self.bn = nn.BatchNorm2d(16)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.out = nn.Conv2d(8, 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.fc(z).view(-1, 16, 7, 7)))
        return torch.tanh(self.out(torch.relu(self.up(x))))


@pytest.mark.parametrize("order", ["factorize first", "channels first"])
def test_user_generator_linear_layer_factorized_with_channel_pruning_round_trip(order: str, tmp_path) -> None:
    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("gan", {"generator": UserG().eval()}, {"generator": {}}, latent_dim=8,
                                      image_shape=(1, 14, 14))
    steps = [LowRankFactorization(rank=4, layers=("fc",)), ChannelPruning(ratio=0.5, importance="l1")]
    for config in steps if order == "factorize first" else steps[::-1]:
        bundle = prune(bundle, config)
    assert isinstance(bundle.generator.get_submodule("fc"), LowRank)
    z = torch.randn(3, 8)
    save_folder(bundle, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    with torch.no_grad():
        assert loaded.generator(z).shape == (3, 1, 14, 14)
        assert torch.equal(loaded.generator(z), bundle.generator(z))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 0}, "rank must be an integer >= 1"),
    ({"rank": 2, "energy": 0.9}, "not both"),
    ({"energy": 1.5}, r"energy must be in \(0, 1\]"),
    ({"side": "left"}, "side must be one of"),
    ({"rank": 2, "required": "no"}, "required must be true or false"),
])
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LowRankFactorization(**kwargs)


def test_bad_layers_and_grouped_layers_are_one_line_errors(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match=r"does not have; its layers: net\.0, net\.3, net\.6"):
        prune(tiny_gan, LowRankFactorization(rank=2, layers=("net.9",)))
    with pytest.raises(ConfigError, match="not a Conv2d, ConvTranspose2d or Linear"):
        prune(tiny_gan, LowRankFactorization(rank=2, layers=("net.1",)))
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1, groups=2), nn.Conv2d(4, 1, 1))
    with pytest.raises(ConfigError, match="grouped convolution"):
        prune(grouped, LowRankFactorization(rank=1, layers=("0",)), example_inputs=torch.randn(1, 4, 5, 5))


def test_required_false_leaves_a_layer_that_would_not_shrink_whole_and_says_why(tiny_gan: ModelBundle) -> None:
    """The default recipe's rank 32 on a generator whose latent is 8 wide (a VAE's is 16): refused by default; with
    required: false the layer stays whole (a warning, kept_layers), and so does the teacher a recipe learns from."""
    with pytest.raises(ConfigError, match=r"would store .* not fewer than"):
        prune(tiny_gan, LowRankFactorization(rank=32, layers=("<first>",)))
    with pytest.warns(UserWarning, match=r"found no layer to factorize, so the step changed nothing \(net\.0: at rank 8"):
        same = prune(tiny_gan, LowRankFactorization(rank=32, layers=("<first>",), required=False))
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(same.generator(z), tiny_gan.generator(z))
    assert "net.0" in same.steps[-1]["kept_layers"] and not same.steps[-1]["factorized_layers"]
    with pytest.warns(UserWarning, match=r"left net\.0 whole: at rank 8"):  # one of two named layers cannot shrink
        some = prune(tiny_gan, LowRankFactorization(rank=8, layers=("net.0", "net.3"), required=False))
    assert list(some.steps[-1]["factorized_layers"]) == ["net.3"]

    from slimgen.methods import MethodContext
    from slimgen.prune.api import _factorize_target

    ctx = MethodContext(teacher=tiny_gan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the step's own run warns, not the teacher's
        _factorize_target(LowRankFactorization(rank=32, layers=("<first>",), teacher=True, required=False), ctx)
    assert ctx.target is None and ctx.learn_from is tiny_gan


def test_folder_with_a_bad_factorized_record_is_refused(tiny_gan: ModelBundle, tmp_path) -> None:
    save_folder(prune(tiny_gan, LowRankFactorization(rank=4, layers=("net.0",))), tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    good = json.loads(path.read_text())
    for bad, message in [({"net.9": {"rank": 4, "side": "input"}}, "does not have"),
                         ({"net.0": {"rank": 0, "side": "input"}}, "rank: integer >= 1"),
                         ({"net.0": {"rank": 4, "side": "up"}}, "rank: integer >= 1"),
                         ({"net.1": {"rank": 4, "side": "input"}}, "not a Conv2d"),
                         (["net.0"], "must be a mapping")]:
        config = copy.deepcopy(good)
        config["parts"]["generator"]["factorized"] = bad
        path.write_text(json.dumps(config))
        with pytest.raises(ModelFolderError, match=message):
            load_folder(tmp_path / "m")


def test_cli_lowrank_method_and_its_errors(tiny_gan: ModelBundle, tmp_path) -> None:
    from test_prune_kernel import _cli

    save_folder(tiny_gan, tmp_path / "gan")
    code, out = _cli("prune", tmp_path / "gan", "--method", "lowrank", "--rank", "3", "--layer", "net.0",
                     "--out", tmp_path / "lr")
    assert code == 0, out
    assert load_folder(tmp_path / "lr").generator.net[0].rank == 3
    for args, message in [(("--method", "lowrank", "--rank", "0"), "rank must be an integer"),
                          (("--method", "lowrank", "--layer", "net.9"), "does not have"),
                          (("--method", "channels", "--rank", "3"), "apply to --method lowrank only"),
                          (("--method", "magnitude", "--layer", "net.0"), "applies to --method kernel and lowrank")]:
        code, out = _cli("prune", tmp_path / "gan", *args, "--out", tmp_path / "x")
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and message in errors[0], out


def test_recipe_step_prune_lowrank_reads_its_settings() -> None:
    from slimgen.pipeline import parse_recipe

    text = ("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_lowrank: {rank: 32, layers: [net.0]}\n"
            "  - prune_lowrank: {energy: 0.9, side: output}\n")
    steps = parse_recipe(text, source="r.yaml").steps
    assert steps[0].config == LowRankFactorization(rank=32, layers=("net.0",))
    assert steps[1].config == LowRankFactorization(energy=0.9, side="output")
    with pytest.raises(ConfigError, match=r"r\.yaml:3.*unknown key 'ranks'"):
        parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_lowrank: {ranks: 3}\n", source="r.yaml")


def test_int8_preparation_folds_the_batchnorm_after_a_factorized_layer(tiny_gan: ModelBundle) -> None:
    from slimgen.quantize.rewrite import prepare_for_int8

    g = prune(tiny_gan, LowRankFactorization(rank=4, layers=("net.0",))).generator.eval()
    z = torch.randn(4, 8)
    ready = prepare_for_int8(g, z)
    assert isinstance(ready.net[0], LowRank) and isinstance(ready.net[1], nn.Identity)  # folded into its last half
    with torch.no_grad():
        assert torch.allclose(ready(z), g(z), atol=1e-5)


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_factorized_transposed_conv_takes_output_size_as_the_layer_did(side: str) -> None:
    """U-Net/pix2pix decoders call a transposed convolution with ``output_size``; its factorized pair does too."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(8, 6, 3, 2, 1).eval()
    x = torch.randn(2, 8, 7, 7)
    low, _ = factorize(layer, min(matrix(layer, side).shape), side)  # full rank: the same layer
    with torch.no_grad():
        want = layer(x, output_size=(14, 14))
        assert want.shape == (2, 6, 14, 14) and torch.allclose(low(x, output_size=(14, 14)), want, atol=1e-5)
        assert torch.allclose(low(x), layer(x), atol=1e-5)
