"""Issue 15: channel pruning and slim students of generators as users write them, through the CLI.

Each case is a class from ``tests/archnets.py`` (or diffusers' AutoencoderKL decoder) named on
the command line as ``module:Class``, with random weights and small widths.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import archnets
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.evaluate.cost import count_macs
from slimgen.models import InputSpec, ModelBundle, load_folder, save_folder
from slimgen.models.graph import graph_record
from slimgen.prune import ChannelPruning, KernelPruning, prune
from slimgen.prune.structured import kept_layers
from slimgen.runtime.engines import available

diffusers = pytest.importorskip("diffusers")

# name: (arch, kwargs, input contract, image shape, reshapes rewritten, latents not (B, d) or class-conditional)
CASES = {
    "hardcoded_view": ("archnets:HardcodedViewG", {}, InputSpec(latent_shape=(16,)), (1, 28, 28), True, False),
    "self_width": ("archnets:WidthAttrG", {"width": 32}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "sngan_resnet": ("archnets:SNGANResNetG", {"ch": 32}, InputSpec(latent_shape=(16,)), (3, 16, 16), True, False),
    "linear_bn1d_view": ("archnets:InfoGANStyleG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "sagan_attention": ("archnets:SAGANStyleG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "conditional_bn": ("archnets:ConditionalG", {}, InputSpec(latent_shape=(16,), num_classes=4), (1, 16, 16), True, True),
    "unet_groupnorm": ("archnets:UNetG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "adain_style": ("archnets:AdaINStyleG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), False, False),
    "fastgan_glu": ("archnets:FastGANLikeG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "inline_modules": ("archnets:InlineModulesG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "glu_pixel_shuffle": ("archnets:GatedShuffleG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), True, False),
    "multiscale_skip": ("archnets:MultiScaleSkipG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), False, False),
    "layernorm": ("archnets:LayerNormG", {}, InputSpec(latent_shape=(16,)), (1, 16, 16), False, False),
    "stylegan2_modulated": ("archnets:ModulatedG", {"noise": False}, InputSpec(latent_shape=(16,)), (1, 16, 16), False, False),
    "sd_vae_decoder": ("slimgen.models.sd_vae:SDVAEDecoder", {"block_out_channels": [32, 64], "norm_num_groups": 16},
                       InputSpec(latent_shape=(4, 4, 4)), (3, 8, 8), False, True),
}
RATIO = 0.5
# MACs after pruning / before, at most; default 0.55 (interior layers lose 3/4, the ends 1/2)
MAC_BOUND = {"sagan_attention": 0.8,  # the residual stream tied to SAGAN's value projection stays whole (0.75 measured)
             "multiscale_skip": 0.7}  # its first stage, the largest layer, keeps its outputs (0.65 measured)
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.Embedding)


def _teacher(name: str, tmp: Path) -> tuple[Path, ModelBundle]:
    arch, kwargs, spec, image_shape, _, _ = CASES[name]
    from slimgen.models.registry import build

    torch.manual_seed(0)
    g = build(arch, kwargs)
    with torch.no_grad():
        g.train()(*spec.draw(8, seed=1).args())  # non-trivial BatchNorm statistics
    bundle = ModelBundle.from_modules("gan", {"generator": g.eval()}, {"generator": kwargs}, inputs=spec,
                                      image_shape=image_shape)
    bundle.specs["generator"].arch = arch
    return save_folder(bundle, tmp / "teacher"), bundle


def _width(m: nn.Module) -> int:
    """Output width: channels, features, or embedding dim."""
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.Embedding):
        return m.embedding_dim
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return m.num_features
    return m.out_channels


def _invoke(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, ModelBundle]:
    """(name, folder, teacher bundle) of one architecture, its teacher pruned 50% through the CLI into folder/p."""
    tmp = tmp_path_factory.mktemp(request.param)
    folder, teacher = _teacher(request.param, tmp)
    _invoke(["prune", str(folder), "--method", "channels", "--ratio", str(RATIO), "--out", str(tmp / "p")])
    return request.param, tmp, teacher


def test_channel_pruning_through_the_cli(case: tuple[str, Path, ModelBundle]) -> None:
    name, tmp, teacher = case
    spec, rewritten = CASES[name][2], CASES[name][4]
    pruned = load_folder(tmp / "p")
    g0, g1 = teacher.generator, pruned.generator
    inputs = spec.draw(3, seed=7)
    x = inputs.args()

    # every prunable layer at half width, except the ones the step lists (with a reason)
    kept = pruned.steps[-1]["kept_layers"]
    assert all(isinstance(r, str) and r for r in kept.values())
    after = dict(g1.named_modules())
    checked = 0
    for lname, m in g0.named_modules():
        if not isinstance(m, _LAYERS) or not list(m.parameters(recurse=False)):
            continue
        w0, w1 = _width(m), _width(after[lname])
        if lname in kept:
            assert w1 == w0, f"{lname} is listed as kept ({kept[lname]}) but went {w0} -> {w1}"
        elif isinstance(m, nn.Embedding):  # conditional norm: per-class scale and shift of the pruned channels
            assert w1 == w0 // 2, (lname, w0, w1)
        else:
            assert w1 == int(w0 * (1 - RATIO)), f"{lname}: {w0} -> {w1}, expected {int(w0 * (1 - RATIO))}"
        checked += 1
    assert checked >= 5

    # MACs: interior layers lose both halves (1/4), the ends one (1/2); attention matmuls keep their dims
    macs0, macs1 = count_macs(g0, inputs), count_macs(g1, inputs)
    assert 0.2 * macs0 < macs1 <= MAC_BOUND.get(name, 0.55) * macs0, (macs0, macs1)

    # same output shape; the reshapes of the user's code were rewritten and recorded, not stored as code
    with torch.no_grad():
        assert g1(*x).shape == g0(*x).shape
    part = json.loads((tmp / "p" / "config.json").read_text())["parts"]["generator"]
    assert part["arch"] == CASES[name][0]
    assert ("graph" in part) == rewritten and (graph_record(g1) is not None) == rewritten
    assert not [p for p in (tmp / "p").iterdir() if p.suffix in (".py", ".pt", ".pkl")]

    # the library call in memory gives exactly what the CLI saved and loading rebuilt
    api = prune(teacher, ChannelPruning(ratio=RATIO))
    with torch.no_grad():
        assert torch.equal(api.generator(*x), g1(*x))


def test_kernel_pruning_of_the_pruned_model(case: tuple[str, Path, ModelBundle]) -> None:
    """Cropping kernels on top of channel pruning (4x4 stride-2 layers to 2x2 where there are any, else 3x3 to
    1x1), through the CLI: same output shape, fewer MACs, saved and loaded to identical images."""
    name, tmp, _ = case
    pruned = load_folder(tmp / "p")
    has_strided = any(isinstance(m, nn.ConvTranspose2d | nn.Conv2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
                      for m in pruned.generator.modules())
    size = 2 if has_strided else 1
    if not any(isinstance(m, nn.ConvTranspose2d | nn.Conv2d) and max(m.kernel_size) > size
               for m in pruned.generator.modules()):  # modulated convs only: nothing kernel pruning can crop, said so
        result = CliRunner().invoke(app, ["prune", str(tmp / "p"), "--method", "kernel", "--kernel-size", str(size),
                                          "--out", str(tmp / "k")])
        assert result.exit_code != 0 and "found no layer to crop" in str(result.exception)
        return
    _invoke(["prune", str(tmp / "p"), "--method", "kernel", "--kernel-size", str(size), "--out", str(tmp / "k")])
    cropped = load_folder(tmp / "k")
    assert cropped.steps[-1]["cropped_layers"]
    spec = CASES[name][2]
    x = spec.draw(3, seed=5).args()
    with torch.no_grad():
        assert cropped.generator(*x).shape == pruned.generator(*x).shape
        assert count_macs(cropped.generator, spec.draw(1, seed=5)) < count_macs(pruned.generator, spec.draw(1, seed=5))
        in_memory = prune(pruned, KernelPruning(size=size))  # what the CLI saved and loading rebuilt
        assert torch.equal(in_memory.generator(*x), cropped.generator(*x))


def test_int8_onnx_export_of_the_pruned_model(case: tuple[str, Path, ModelBundle]) -> None:
    import onnx
    import onnxruntime as ort

    name, tmp, _ = case
    _invoke(["export", str(tmp / "p"), "--format", "onnx", "--int8", "--calibration", "16", "--out", str(tmp / "m.onnx")])
    ops = {n.op_type for n in onnx.load(str(tmp / "m.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    session = ort.InferenceSession(str(tmp / "m.onnx"))
    spec, shape = CASES[name][2], CASES[name][3]
    inputs = spec.draw(64, seed=3).args()
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), inputs, strict=True)}
    out = session.run(None, feed)[0]
    assert out.shape == (64, *shape)
    with torch.no_grad():  # int8 stays close to the float model it came from, judged against the images' own spread:
        ref = load_folder(tmp / "p").generator(*inputs).numpy()  # random weights draw low-contrast images
    err, spread = float(abs(out - ref).mean()), float(ref.std())
    # mean |error| / spread measured 0.21 for the diffusers decoder (14 GroupNorms), 0.11 for the U-Net, below 0.1
    # for the others; an unrelated image of the same spread gives about 1.1
    assert err < 0.3 * spread, (name, err, spread)
    if available("openvino"):  # the same int8 file runs in OpenVINO too, giving ONNX Runtime's images
        from slimgen.runtime.engines import onnx_engine

        engine = onnx_engine(tmp / "m.onnx", spec, runtime="openvino", threads=1)
        with torch.no_grad():
            ov = engine(*inputs).numpy()
        assert ov.shape == out.shape and float(abs(ov - out).mean()) < 0.3 * spread


def _data_bytes(path: Path) -> int:
    """A safetensors file's tensor bytes: its size less the 8-byte length and the JSON header (the header, names and
    shapes, is a large share of a tiny model's file and grows with the scales int8 adds)."""
    with path.open("rb") as f:
        return path.stat().st_size - 8 - int.from_bytes(f.read(8), "little")


def test_int8_weights_of_the_pruned_model(case: tuple[str, Path, ModelBundle]) -> None:
    name, tmp, _ = case
    _invoke(["quantize", str(tmp / "p"), "--weights", "int8", "--per-channel", "--activations", "none", "--out", str(tmp / "q")])
    pruned, quantized = load_folder(tmp / "p"), load_folder(tmp / "q")
    assert _data_bytes(tmp / "q" / "model.safetensors") < 0.4 * _data_bytes(tmp / "p" / "model.safetensors")
    x = CASES[name][2].draw(4, seed=3).args()
    with torch.no_grad():
        a, b = pruned.generator(*x), quantized.generator(*x)
    assert a.shape == b.shape and 0 < (a - b).abs().max() < 0.1


def test_distill_width_half_builds_and_trains_a_student(case: tuple[str, Path, ModelBundle]) -> None:
    name, tmp, teacher = case
    _invoke(["distill", str(tmp / "teacher"), "--width", "0.5", "--init", "strongest", "--epochs", "1",
             "--steps-per-epoch", "2", "--batch-size", "8", "--no-select", "--threads", "1", "--out", str(tmp / "s")])
    student = load_folder(tmp / "s")
    inputs = CASES[name][2].draw(2, seed=3)
    x = inputs.args()
    assert count_macs(student.generator, inputs) <= MAC_BOUND.get(name, 0.55) * count_macs(teacher.generator, inputs)
    with torch.no_grad():
        assert student.generator(*x).shape == teacher.generator(*x).shape
    assert [s["step"] for s in student.steps[-2:]] == ["slim_student", "distill"]


def test_linear_batchnorm1d_unflatten_prunes_whole_channels() -> None:
    """Linear -> BatchNorm1d -> nn.Unflatten(1, (C, 4, 4)): each removed channel takes its 16 features from both."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(16, 32 * 16), nn.BatchNorm1d(32 * 16), nn.ReLU(), nn.Unflatten(1, (32, 4, 4)),
                      nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Tanh())
    with torch.no_grad():
        g[1].weight.uniform_(0.5, 2.0)
        g.train()(torch.randn(8, 16))
    g.eval()
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small[0].out_features == small[1].num_features == 16 * 16 and small[4].in_channels == 16
    rows = [int((g[0].weight - r).abs().sum(1).argmin()) for r in small[0].weight]  # original feature of each kept row
    assert torch.equal(small[1].weight, g[1].weight[rows]) and torch.equal(small[1].running_var, g[1].running_var[rows])
    assert rows == [c * 16 + j for c in sorted({r // 16 for r in rows}) for j in range(16)]  # whole channels, in order
    assert small(z).shape == g(z).shape


def test_self_attention_is_left_whole_and_listed() -> None:
    """SAGAN attention: q/k/v keep their channels, and so does the residual stream tied to v; both are listed with reasons."""
    torch.manual_seed(0)
    g = archnets.SAGANStyleG().eval()
    z = torch.randn(3, 16)
    kept = kept_layers(g, z)
    assert {"attn.query", "attn.key", "attn.value", "up1", "bn1"} <= kept.keys()
    assert "self-attention" in kept["attn.value"] and "kept whole" in kept["up1"]
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.attn.query.out_channels == 4 and small.attn.value.out_channels == 32 and small.fc.out_features == 16 * 16
    assert small(z).shape == (3, 1, 16, 16)


def test_ignore_keeps_a_layer_whole(tmp_path: Path) -> None:
    folder, _ = _teacher("sngan_resnet", tmp_path)
    _invoke(["prune", str(folder), "--ratio", "0.5", "--ignore", "block1.conv1", "--out", str(tmp_path / "p")])
    g = load_folder(tmp_path / "p").generator
    assert g.get_submodule("block1.conv1").out_channels == 32 and g.get_submodule("block2.conv1").out_channels == 16


def test_discriminator_part_prunes_through_the_cli(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g, d = archnets.HardcodedViewG().eval(), archnets.FlattenD().eval()
    bundle = ModelBundle.from_modules("gan", {"generator": g, "discriminator": d}, {}, inputs=InputSpec(latent_shape=(16,)))
    save_folder(bundle, tmp_path / "gan")
    _invoke(["prune", str(tmp_path / "gan"), "--part", "discriminator", "--ratio", "0.5", "--out", str(tmp_path / "p")])
    small = load_folder(tmp_path / "p")
    assert small.discriminator.c2.out_channels == 16 and small.discriminator.fc.in_features == 16 * 7 * 7
    assert small.generator.up1.out_channels == 16  # the other part is untouched
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert small.discriminator(x).shape == (3, 1)


def test_discriminator_with_hard_coded_flatten_prunes() -> None:
    d = archnets.FlattenD().eval()
    x = torch.randn(3, 1, 28, 28)
    small = prune(d, ChannelPruning(ratio=0.5), example_inputs=x[:2])
    assert small.c2.out_channels == 16 and small.fc.in_features == 16 * 7 * 7
    assert small(x).shape == (3, 1)
    assert count_macs(small, x) < 0.4 * count_macs(d, x)


def test_a_class_changed_since_saving_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = _teacher("hardcoded_view", tmp_path)
    _invoke(["prune", str(folder), "--ratio", "0.5", "--out", str(tmp_path / "p")])
    monkeypatch.setattr(archnets.HardcodedViewG, "forward", lambda self, z: torch.tanh(self.up2(self.up1(
        self.fc(z).view(z.size(0), -1, 7, 7)))))  # the user fixed their reshape: no literal left to rewrite
    from slimgen.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match="recorded reshape"):
        load_folder(tmp_path / "p")


def test_recipes_take_ignore_and_a_slim_student_step() -> None:
    from slimgen.distill import SlimStudent
    from slimgen.errors import ConfigError
    from slimgen.pipeline.recipe import parse_recipe

    recipe = parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n"
                          "  - prune_channels: {ratio: 0.5, ignore: [block1.conv1, fc]}\n"
                          "  - slim_student: {width: 0.5, init: strongest}\n")
    configs = [s.config for s in recipe.steps]
    assert configs[0] == ChannelPruning(ratio=0.5, ignore=("block1.conv1", "fc"))
    assert configs[1] == SlimStudent(width=0.5, init="strongest")
    with pytest.raises(ConfigError, match=r"init(:| must be one of) .*random.*strongest"):
        parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n  - slim_student: {width: 0.5, init: best}\n")


@pytest.mark.parametrize("arch, latent", [("PReLUDepthwiseG", (16, 1, 1)), ("SpectralNormG", (16,)),
                                          ("LegacySpectralNormG", (16, 1, 1)), ("ConstInputG", (16,)),
                                          ("WSProGANG", (16, 1, 1)), ("EqualizedG", (16,)), ("LayerNormG", (16,))])
def test_normalized_prelu_depthwise_and_constant_input_generators_prune_save_and_load(arch: str, latent: tuple[int, ...],
                                                                       tmp_path: Path) -> None:
    """Spectral / weight norm (parametrized and hook-based) is baked at import into the plain weight it computes
    (same images in eval mode), and so are equalized-lr layers; PReLU(C), depthwise convolutions and LayerNorms
    (over (C,) or (C, H, W), with or without weights) lose channels with their producers; the pruned folder loads
    back to the same images."""
    import warnings

    from slimgen.models.importer import import_model
    from slimgen.models.standard import candidates
    from slimgen.models.surgery import reparametrized

    torch.manual_seed(0)
    g = getattr(archnets, arch)()
    with torch.no_grad():
        g.train()(torch.randn(8, *latent))  # BN statistics and spectral-norm vectors away from their start
    g.eval()
    torch.save(g.state_dict(), tmp_path / "g.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = import_model(tmp_path / "g.pt", f"archnets:{arch}", latent_shape=latent)
    z = bundle.inputs.draw(4, seed=1).z
    with torch.no_grad():
        assert not reparametrized(bundle.generator) and torch.allclose(bundle.generator(z), g(z), atol=1e-5)
        assert not candidates(bundle.generator)  # hand-written layers that compute standard ones were swapped
    small = prune(bundle, ChannelPruning(ratio=0.5))
    assert count_macs(small.generator, z[:1]) < 0.6 * count_macs(g, z[:1])
    save_folder(small, tmp_path / "p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_folder(tmp_path / "p").generator
    with torch.no_grad():
        assert torch.equal(loaded(z), small.generator(z))
    if arch == "PReLUDepthwiseG":
        assert loaded.net[2].num_parameters == loaded.net[6].groups == loaded.net[6].out_channels == 8
    if arch == "ConstInputG":  # the constant loses the channels of the layers it is tied to
        assert loaded.const.shape == (1, 8, 4, 4) and loaded.map[2].out_features == loaded.c1.in_channels == 8
    if arch == "EqualizedG":  # equalized-lr leaves became the layers they compute, and load back as such
        assert isinstance(loaded.c1, nn.Conv2d) and isinstance(loaded.fc, nn.Linear) and loaded.c1.out_channels == 8
        assert isinstance(loaded.rgb, nn.Conv2d) and loaded.rgb.out_channels == 1
    if arch == "LayerNormG":  # each LayerNorm loses the channels of its layer, along its channel dimension
        assert loaded.ln0.normalized_shape == (16,) and loaded.ln1.normalized_shape == (8, 4, 4)
        assert loaded.ln2.normalized_shape == (8, 8, 8) and loaded.ln1.weight.shape == (8, 4, 4)
        assert loaded.fc.out_features == loaded.stem.in_channels == 16 and loaded.conv.out_channels == 8
    if arch == "WSProGANG":  # a weight-scaled conv's 1-D bias keeps the channels its convolution keeps
        for layer in (loaded.b1, loaded.b2):
            assert layer.bias.shape == (layer.conv.out_channels,) and layer.conv.out_channels < 16


def test_a_hand_written_layer_that_is_no_standard_layer_stays_and_prunes_as_the_users_own(tmp_path: Path) -> None:
    from slimgen.errors import ModelFolderError
    from slimgen.models.standard import restore_standard, standardize

    torch.manual_seed(0)
    g = archnets.EqualizedG(squared=True).eval()
    z = torch.randn(4, 16)
    before = g(z)
    swapped = standardize(g, lambda m: m(z))
    assert "c1" not in swapped and {"fc", "c2", "rgb", "mapping.0", "mapping.2"} <= set(swapped)
    assert swapped["c2"] == {"op": "conv2d", "stride": [1, 1], "padding": [1, 1]}
    assert isinstance(g.c1, archnets.SquaredConv) and torch.allclose(g(z), before, atol=1e-5)
    # it stays the user's own layer, and (since its channels act one by one) prunes as one: it was refused before
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    # the Linear reshaped into it (view(-1, 16, 7, 7)) loses the 7 x 7 outputs of each channel it loses
    assert small.fc.out_features == g.fc.out_features // 2 and small.c1.weight.shape[1] == g.c1.weight.shape[1] // 2
    assert isinstance(small.c1, archnets.SquaredConv) and small.c1.weight.shape[0] == g.c1.weight.shape[0] // 2
    assert small(z).shape == before.shape
    for bad, message in (({"c2": {"op": "conv3d"}}, "has op 'conv3d'"), ({"nope": {"op": "linear"}}, "'nope'"),
                         ({"c2": {"op": "conv2d"}}, "malformed")):
        with pytest.raises(ModelFolderError, match=message):
            restore_standard(archnets.EqualizedG(), bad)


def test_layernorm_channel_dimension_is_read_off_its_input() -> None:
    """Channels first where a LayerNorm covers all but the batch, last on tokens (B, N, C); a LayerNorm over a map's
    (H, W) only has no channel dimension, and channel pruning refuses it in one line naming it."""
    from slimgen.errors import ConfigError
    from slimgen.prune.layernorm import channel_dims

    class Norms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.feat, self.tokens, self.maps, self.spatial = (nn.LayerNorm(8), nn.LayerNorm(8), nn.LayerNorm([8, 4, 4]),
                                                               nn.LayerNorm([4, 4]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.tokens(x.flatten(2).transpose(1, 2))  # (B, 16, 8)
            return self.spatial(self.maps(x)) + self.feat(x.mean((2, 3)))[:, :, None, None] + t.mean()

    dims, why = channel_dims(Norms(), lambda m: m(torch.randn(2, 8, 4, 4)))
    assert dims == {"feat": -1, "tokens": -1, "maps": -3} and set(why) == {"spatial"}
    assert "over the last 2 of its input's 4 dimensions" in why["spatial"]
    g = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm([8, 8]), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    with pytest.raises(ConfigError, match="cannot prune layer '1' of type LayerNorm, a LayerNorm over the last 2 of its "
                                          "input's 4 dimensions: none of them is a channel dimension") as e:
        prune(g, ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 3, 8, 8))
    assert "\n" not in str(e.value) and "--ignore 1" in str(e.value)
