"""Kernel pruning: a cropped kernel computes exactly what the original computes with the other taps zeroed,
output shapes stay, MACs fall, folders round-trip, exports run it, and bad requests are one-line errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.cost import count_macs
from slimgen.export import export_onnx
from slimgen.models import ModelBundle, load_folder, save_folder, state_of
from slimgen.prune import ChannelPruning, KernelPruning, prune
from slimgen.prune.kernel import crop, crop_plan


def _zero_outside(conv: nn.Module, size: int) -> nn.Module:
    """A copy of ``conv`` with the taps a crop to ``size`` drops set to zero (same geometry)."""
    plan = crop_plan(conv, size)
    assert not isinstance(plan, str), plan
    (a0, a1), _, _ = plan
    ref = copy.deepcopy(conv)
    mask = torch.zeros_like(ref.weight)
    mask[:, :, a0:a0 + size, a1:a1 + size] = 1
    with torch.no_grad():
        ref.weight.mul_(mask)
    return ref


@pytest.mark.parametrize(("layer", "size", "shape"), [
    (nn.ConvTranspose2d(6, 5, 4, 2, 1), 2, (2, 6, 7, 7)),  # DCGAN's stride-2 layer: one tap per output pixel
    (nn.ConvTranspose2d(6, 5, 4, 2, 1), 3, (2, 6, 7, 7)),  # asymmetric window, output padding 1
    (nn.ConvTranspose2d(6, 5, 5, 2, 2, output_padding=1), 3, (2, 6, 5, 6)),
    (nn.ConvTranspose2d(6, 6, 4, 2, 1, groups=3), 2, (2, 6, 7, 7)),
    (nn.Conv2d(6, 5, 3, 1, 1), 1, (2, 6, 9, 9)),  # centred crop of a 3x3
    (nn.Conv2d(6, 5, 5, 2, 2), 3, (2, 6, 11, 11)),
])
def test_crop_equals_zeroing_the_dropped_taps(layer: nn.Module, size: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    ref = _zero_outside(layer, size)
    crop(layer, size)
    assert tuple(layer.weight.shape[2:]) == (size, size) and tuple(layer.kernel_size) == (size, size)
    assert torch.allclose(layer(x), ref(x), atol=1e-6)


def test_window_with_most_weight_energy_is_kept() -> None:
    conv = nn.ConvTranspose2d(2, 2, 4, 2, 1)  # valid windows for 3 taps: offset 0 (op 1) or 1 (op -1: invalid)
    plan = crop_plan(conv, 3)
    assert plan == ([0, 0], [1, 1], [1, 1])
    conv = nn.ConvTranspose2d(2, 2, 5, 2, 2, output_padding=1)  # 3 taps: offsets 0 (op 2: invalid), 1, 2 (op -2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1:4, 1:4] = 1.0
    assert crop_plan(conv, 3)[0] == [1, 1]


def test_impossible_crops_say_why() -> None:
    assert "no 2-tap window" in crop_plan(nn.ConvTranspose2d(4, 4, 7, 1, 0), 2)  # the latent layer: size changes
    assert "no 2-tap window" in crop_plan(nn.Conv2d(4, 4, 3, 1, 1), 2)  # an even crop of an odd kernel moves pixels
    assert "dilated" in crop_plan(nn.Conv2d(4, 4, 3, 1, 2, dilation=2), 1)
    assert "without input" in crop_plan(nn.ConvTranspose2d(4, 4, 4, 2, 1), 1)
    assert "padding='same'" in crop_plan(nn.Conv2d(4, 4, 3, padding="same"), 1)
    assert "not a Conv2d" in crop_plan(nn.Linear(4, 4), 1)


def test_dcgan_kernel_pruning_folder_round_trip_and_export(tiny_gan: ModelBundle, tmp_path) -> None:
    narrow = prune(tiny_gan, ChannelPruning(ratio=0.5, importance="l1"))
    cropped = prune(narrow, KernelPruning(size=2))
    g0, g1 = narrow.generator, cropped.generator
    step = cropped.steps[-1]
    assert step["cropped_layers"] == ["net.3"]  # the 7x7 latent layer cannot be cropped, the image layer is kept
    assert set(step["kept_layers"]) == {"net.0", "net.6"}
    z = torch.randn(4, 8)
    ref = copy.deepcopy(g0)
    ref.net[3] = _zero_outside(ref.net[3], 2)
    with torch.no_grad():
        assert torch.allclose(g1(z), ref(z), atol=1e-6)
        assert g1(z).shape == g0(z).shape == (4, 1, 28, 28)
    layer_macs = 7 * 7 * 8 * 4 * 16  # in pixels x in x out x taps of the 8 -> 4 stride-2 layer
    assert count_macs(g0, z) - count_macs(g1, z) == layer_macs * 3 // 4
    save_folder(cropped, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    assert loaded.generator.net[3].padding == (0, 0) and loaded.generator.net[3].kernel_size == (2, 2)
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), g1(z))
    path = export_onnx(loaded, tmp_path / "m.onnx")
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path))
    out = sess.run(None, {sess.get_inputs()[0].name: z.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), g1(z).detach(), atol=1e-5)


class UserG(nn.Module):
    """A user's generator: Linear -> view, a 4x4 stride-2 transposed conv, a 3x3 conv, a 3x3 image conv (14x14)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 7 * 7)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.mid = nn.Conv2d(8, 8, 3, 1, 1)
        self.out = nn.Conv2d(8, 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(self.fc(z).view(-1, 16, 7, 7)))
        return torch.tanh(self.out(torch.relu(self.mid(h))))


def test_user_generator_named_layers_and_sizes() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 8)
    model = UserG().eval()
    everything = prune(model, KernelPruning(size=1), example_inputs=z)  # up: 1 tap < stride 2; mid: yes
    assert everything.mid.kernel_size == (1, 1) and everything.up.kernel_size == (4, 4)
    assert everything.out.kernel_size == (3, 3)  # the image layer stays unless named
    named = prune(model, KernelPruning(size=1, layers=("mid", "out")), example_inputs=z)
    assert named.out.kernel_size == (1, 1) and named(z).shape == model(z).shape
    assert model.mid.kernel_size == (3, 3)  # prune returns a copy


@pytest.mark.parametrize(("config", "message"), [
    (lambda: KernelPruning(size=2, layers=("nope",)), "does not have"),
    (lambda: KernelPruning(size=2, layers=("fc",)), "not a Conv2d"),
    (lambda: KernelPruning(size=2, layers=("mid",)), "no 2-tap window"),
    (lambda: KernelPruning(size=4, layers=("up",)), "already at most"),
    (lambda: KernelPruning(size=5), "found no layer to crop"),
])
def test_bad_requests_are_one_line_errors(config, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        prune(UserG().eval(), config(), example_inputs=torch.randn(2, 8))
    assert "\n" not in str(err.value)


def test_not_required_kernel_pruning_changes_nothing_where_nothing_applies_and_says_why() -> None:
    """``required: false`` (the default recipe's): on a generator no layer of which can be cropped to the size,
    the step returns the same weights, warns, and records each layer left whole with the reason."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (8, 2, 2)), nn.Upsample(scale_factor=2), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU(),
                          nn.Upsample(scale_factor=2), nn.Conv2d(8, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 1, 1)).eval()
    z = torch.randn(2, 32)
    with pytest.raises(ConfigError, match="found no layer to crop"):
        prune(model, KernelPruning(size=2), example_inputs=z)
    with pytest.warns(UserWarning, match="found no layer to crop, so the step changed nothing"):
        out = prune(model, KernelPruning(size=2, required=False), example_inputs=z)
    assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), model.state_dict().values(), strict=True))
    step = state_of(out).steps[-1]
    assert step["cropped_layers"] == [] and set(step["kept_layers"]) == {"2", "5"}  # 3x3, stride 1: no 2-tap window
    assert "no 2-tap window" in step["kept_layers"]["2"]
    assert step["config"]["required"] is False
    with pytest.raises(ConfigError, match="required must be true or false"):
        KernelPruning(required="no")  # type: ignore[arg-type]


class FixedSizeG(UserG):
    """``up`` called with ``output_size=(14, 14)`` (pix2pix/U-Net decoders do): a cropped 2x2 kernel cannot give it."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(16, 8, 3, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(self.fc(z).view(-1, 16, 7, 7), output_size=(14, 14)))
        return torch.tanh(self.out(torch.relu(self.mid(h))))


def test_a_layer_whose_crop_stops_the_forward_stays_whole_and_says_why() -> None:
    torch.manual_seed(0)
    z, model = torch.randn(2, 8), FixedSizeG().eval()
    with pytest.warns(UserWarning, match="left up whole: cropped, the model's forward fails"):
        out = prune(model, KernelPruning(size=2, required=False), example_inputs=z)
    assert out.up.kernel_size == (3, 3) and out.up.weight.shape == (16, 8, 3, 3) and out.up.padding == (1, 1)
    assert torch.equal(out(z), model(z))
    step = state_of(out).steps[-1]
    assert step["cropped_layers"] == [] and "output size" in step["kept_layers"]["up"]
    with pytest.raises(ConfigError, match="cannot crop the kernel of 'up' to 2: cropped, the model's forward fails"):
        prune(model, KernelPruning(size=2, layers=("up",)), example_inputs=z)
    with pytest.raises(ConfigError, match="found no layer to crop"):
        prune(model, KernelPruning(size=2), example_inputs=z)


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_size_is_validated(size) -> None:
    with pytest.raises(ConfigError, match="size must be an integer"):
        KernelPruning(size=size)


def _cli(*args: object) -> tuple[int, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from slimgen.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, buf.getvalue()


def test_cli_kernel_method_and_its_errors(tiny_gan: ModelBundle, tmp_path) -> None:
    save_folder(tiny_gan, tmp_path / "gan")
    code, out = _cli("prune", tmp_path / "gan", "--method", "kernel", "--out", tmp_path / "k2")
    assert code == 0, out
    loaded = load_folder(tmp_path / "k2")
    assert loaded.generator.net[3].kernel_size == (2, 2) and loaded.steps[-1]["cropped_layers"] == ["net.3"]
    for args, message in [(("--method", "kernel", "--layer", "net.0"), "no 2-tap window"),
                          (("--method", "kernel", "--kernel-size", "0"), "size must be an integer"),
                          (("--method", "channels", "--kernel-size", "3"), "applies to --method kernel only")]:
        code, out = _cli("prune", tmp_path / "gan", *args, "--out", tmp_path / "x")
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and message in errors[0], out


def test_folder_with_bad_geometry_is_refused(tiny_gan: ModelBundle, tmp_path) -> None:
    import json

    from slimgen.errors import ModelFolderError

    save_folder(prune(tiny_gan, KernelPruning(size=2)), tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    good = json.loads(config_path.read_text())
    assert good["parts"]["generator"]["geometry"] == {"net.3": {"padding": [0, 0]}}
    for bad, message in [({"net.9": {"padding": [0, 0]}}, "no convolution"),
                         ({"net.3": {"stride": [1, 1]}}, "must map"),
                         ({"net.3": {"padding": [0, -1]}}, "integers >= 0"),
                         (["net.3"], "must be a mapping")]:
        config = copy.deepcopy(good)
        config["parts"]["generator"]["geometry"] = bad
        config_path.write_text(json.dumps(config))
        with pytest.raises(ModelFolderError, match=message):
            load_folder(tmp_path / "m")


@pytest.mark.parametrize("order", ["channels first", "kernels first"])
def test_user_generator_with_a_literal_reshape_channels_and_kernels_save_and_load(order: str, tmp_path) -> None:
    """UserG's view(-1, 16, 7, 7) makes channel pruning run it as a rewritten graph; kernels crop in either order."""
    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("gan", {"generator": UserG().eval()}, {"generator": {}}, latent_dim=8,
                                      image_shape=(1, 14, 14))
    steps = [ChannelPruning(ratio=0.5, importance="l1"), KernelPruning(size=2, layers=("up",))]
    for config in steps if order == "channels first" else steps[::-1]:
        bundle = prune(bundle, config)
    g = bundle.generator
    up = g.get_submodule("up")
    assert up.kernel_size == (2, 2) and up.padding == (0, 0) and up.out_channels == 4
    z = torch.randn(3, 8)
    save_folder(bundle, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    with torch.no_grad():
        assert loaded.generator(z).shape == (3, 1, 14, 14)
        assert torch.equal(loaded.generator(z), g(z))


def test_discriminator_kernels_crop_centred_and_reload(tiny_gan: ModelBundle, tmp_path) -> None:
    pruned = prune(tiny_gan, KernelPruning(size=2), part="discriminator")
    d0, d1 = tiny_gan.discriminator, pruned.discriminator
    step = pruned.steps[-1]
    assert step["part"] == "discriminator" and step["cropped_layers"]
    assert all("output" in why for why in step["kept_layers"].values())  # the logit layer is not cropped
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert d1(x).shape == d0(x).shape
    for name in step["cropped_layers"]:
        layer = d1.get_submodule(name)
        assert isinstance(layer, nn.Conv2d) and layer.kernel_size == (2, 2)
    save_folder(pruned, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(load_folder(tmp_path / "m").discriminator(x), d1(x))
