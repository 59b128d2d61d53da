"""Channel pruning: expected widths and MACs, the VAE decoder's Linear -> reshape, a user's generator
with a residual block and a skip concatenation, importances, and the documented errors."""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.cost import count_macs
from slimgen.models import DCGANGenerator, ModelBundle, VAEDecoder, VAEEncoder, load_folder, save_folder
from slimgen.prune import ChannelPruning, prune
from slimgen.prune.reshape import find_reshape_couplings
from slimgen.prune.structured import kept_layers


class SkipGenerator(nn.Module):
    """A user's generator: Linear -> view, a residual block (add) and a skip concatenation."""

    def __init__(self, nz: int = 8, width: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(nz, width * 7 * 7)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(4, width), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, 1, 1))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2),
                                 nn.ReLU())
        self.out = nn.Conv2d(width // 2, 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, 7, 7)  # (B, w, 7, 7)
        h = self.up1(h)  # (B, w, 14, 14)
        r = h + self.res(h)  # residual add
        h = torch.cat([h, r], dim=1)  # (B, 2w, 14, 14) skip concatenation
        return torch.tanh(self.out(self.up2(h)))  # (B, 1, 28, 28)


class ScaledGenerator(nn.Module):
    """A generator with a layer type channel pruning does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(8, 16, 7)
        self.scale = Scale(16)
        self.out = nn.ConvTranspose2d(16, 1, 4, 4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.scale(self.conv(z[:, :, None, None])))


class Scale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s


def _convt_macs(c_in: int, c_out: int, k: int, h_in: int) -> int:
    """MACs of a ConvTranspose2d: every input pixel scatters a k x k x c_out patch per input channel."""
    return c_in * c_out * k * k * h_in * h_in


def _bundle(generator: nn.Module, kwargs: dict, latent_dim: int = 8, kind: str = "gan",
            extra: dict | None = None) -> ModelBundle:
    generator.train()(torch.randn(16, latent_dim))  # non-trivial BatchNorm statistics
    parts = {"generator": generator.eval(), **(extra or {})}
    kw = {"generator": kwargs, **{n: {} for n in (extra or {})}}
    return ModelBundle.from_modules(kind, parts, kw, latent_dim=latent_dim, image_shape=(1, 28, 28))


def test_dcgan_half_channels_cut_inner_macs_four_times(tiny_gan: ModelBundle) -> None:
    z = torch.randn(2, 8)
    pruned = prune(tiny_gan, ChannelPruning(ratio=0.5)).generator
    net = pruned.net
    assert [net[0].out_channels, net[3].out_channels, net[6].out_channels] == [8, 4, 1]  # image channel kept
    assert net[0].in_channels == 8  # latent input kept
    before = _convt_macs(8, 16, 7, 1) + _convt_macs(16, 8, 4, 7) + _convt_macs(8, 1, 4, 14)
    after = _convt_macs(8, 8, 7, 1) + _convt_macs(8, 4, 4, 7) + _convt_macs(4, 1, 4, 14)
    assert count_macs(tiny_gan.generator, z) == before
    assert count_macs(pruned, z) == after
    assert _convt_macs(16, 8, 4, 7) == 4 * _convt_macs(8, 4, 4, 7)  # the inner layer loses 4x


def test_dcgan_widths_are_written_to_the_spec(tiny_gan: ModelBundle, tmp_path) -> None:
    pruned = prune(tiny_gan, ChannelPruning(ratio=0.75))
    assert pruned.specs["generator"].kwargs["widths"] == [4, 2]
    save_folder(pruned, tmp_path / "m")
    z = torch.randn(3, 8)
    assert torch.equal(load_folder(tmp_path / "m").generator(z), pruned.generator(z))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "activation", "taylor"])
@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_every_importance_prunes_and_reloads(importance: str, scope: str, tiny_gan: ModelBundle, tmp_path) -> None:
    bundle = tiny_gan.copy()
    with torch.no_grad():  # distinct BatchNorm scales so bn_scale has something to rank
        for m in bundle.generator.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.linspace(0.1, 2.0, m.num_features))
    pruned = prune(bundle, ChannelPruning(ratio=0.5, importance=importance, scope=scope))  # type: ignore[arg-type]
    z = torch.randn(3, 8)
    kept = sum(p.numel() for p in pruned.generator.parameters())
    assert kept < sum(p.numel() for p in bundle.generator.parameters())
    assert pruned.generator(z).shape == (3, 1, 28, 28)
    save_folder(pruned, tmp_path / "m")
    assert torch.equal(load_folder(tmp_path / "m").generator(z), pruned.generator(z))


def test_bn_scale_removes_the_channels_of_smallest_gamma(tiny_gan: ModelBundle) -> None:
    bundle = tiny_gan.copy()
    bn = bundle.generator.net[1]
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1.0, 17.0))  # channels 8..15 have the largest scales
    pruned = prune(bundle, ChannelPruning(ratio=0.5, importance="bn_scale"))
    assert torch.equal(pruned.generator.net[1].weight.detach(), torch.arange(9.0, 17.0))


def test_vae_decoder_every_layer_shrinks(tmp_path) -> None:
    torch.manual_seed(0)
    dec, enc = VAEDecoder(nz=16, widths=[64, 32]), VAEEncoder(nz=16)
    bundle = _bundle(dec, {"nz": 16, "widths": [64, 32]}, latent_dim=16, kind="vae", extra={"encoder": enc})
    pruned = prune(bundle, ChannelPruning(ratio=0.5))
    g = pruned.generator
    assert g.fc.out_features == 32 * 7 * 7  # the Linear that is reshaped into channels shrinks with them
    assert (g.net[1].in_channels, g.net[1].out_channels, g.net[2].num_features) == (32, 16, 16)
    assert (g.net[4].in_channels, g.net[4].out_channels) == (16, 1)
    z = torch.randn(4, 16)
    assert g(z).shape == (4, 1, 28, 28)
    save_folder(pruned, tmp_path / "vae")
    assert torch.equal(load_folder(tmp_path / "vae").generator(z), g(z))


def test_reshape_pruning_keeps_whole_channel_groups() -> None:
    """The kept Linear rows are exactly the 49-feature groups of the kept channels."""
    torch.manual_seed(0)
    dec = VAEDecoder(nz=16, widths=[8, 4]).eval()
    with torch.no_grad():
        dec.fc.weight.mul_(torch.arange(1.0, 9.0).repeat_interleave(49)[:, None])  # channel c scaled by c + 1
        dec.net[1].weight.fill_(0.01)  # so the Linear rows decide the ranking
    rows = dec.fc.weight.detach().clone()
    pruned = prune(dec, ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 16))
    assert torch.equal(pruned.fc.weight.detach(), rows[4 * 49:])  # channels 4..7 kept, whole groups


def test_user_generator_with_residual_and_concat(tmp_path) -> None:
    torch.manual_seed(0)
    bundle = _bundle(SkipGenerator(), {"nz": 8, "width": 16})
    pruned = prune(bundle, ChannelPruning(ratio=0.5))
    g = pruned.generator
    assert g.fc.out_features == 8 * 49
    assert (g.up1[0].in_channels, g.up1[0].out_channels) == (8, 8)
    assert (g.res[0].out_channels, g.res[1].num_channels, g.res[3].out_channels) == (8, 8, 8)  # add stays aligned
    assert (g.up2[0].in_channels, g.up2[0].out_channels) == (16, 4)  # concat of two 8-channel maps
    assert (g.out.in_channels, g.out.out_channels) == (4, 1)
    z = torch.randn(3, 8)
    assert g(z).shape == (3, 1, 28, 28)
    assert count_macs(g, z) < count_macs(bundle.generator, z) / 3
    save_folder(pruned, tmp_path / "user")
    loaded = load_folder(tmp_path / "user")
    assert loaded.specs["generator"].arch.endswith(":SkipGenerator")
    assert torch.equal(loaded.generator(z), g(z))


def test_reshape_coupling_is_found() -> None:
    couplings = find_reshape_couplings(SkipGenerator().eval(), torch.randn(2, 8))
    assert len(couplings) == 1 and couplings[0].channels == 16 and couplings[0].k == 49
    assert find_reshape_couplings(DCGANGenerator(nz=8, widths=[16, 8]).eval(), torch.randn(2, 8)) == []


def test_ratio_that_removes_every_channel_is_an_error(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match=r"ratio 0.9 would remove every channel of layer 'net.3' \(8 channels"):
        prune(tiny_gan, ChannelPruning(ratio=0.9))


def test_ratio_that_removes_every_reshaped_channel_is_an_error() -> None:
    with pytest.raises(ConfigError, match="would remove every channel of layer 'fc' \\(2 channels"):
        prune(VAEDecoder(nz=4, widths=[2, 16]), ChannelPruning(ratio=0.6), example_inputs=torch.randn(2, 4))


class Mix(nn.Module):
    """A custom layer with a (C, C) matrix applied by hand, its output channels then rolled by one: not a free
    (1, C, ...) parameter, and not a layer whose weight's columns are its output channels (without the roll it
    would be one, and prunes: see the hand-written layer tests below)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.w).roll(1, dims=1)


def test_free_per_channel_parameters_prune_with_their_layer_and_other_custom_layers_are_an_error() -> None:
    """A (1, C, 1, 1) scale in a custom module (or a StyleGAN-style learned constant (1, C, 4, 4)) loses the
    channels its layer loses; a custom layer holding anything else is one error line naming it."""
    z = torch.randn(2, 8)
    g = ScaledGenerator().eval()
    with torch.no_grad():
        g.scale.s.uniform_(0.5, 2.0)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.conv.out_channels == 8 and small.scale.s.shape == (1, 8, 1, 1) and small.out.in_channels == 8
    kept = [int((g.conv.bias - b).abs().argmin()) for b in small.conv.bias]  # the original channel of each kept one
    assert torch.equal(small.scale.s.flatten(), g.scale.s.flatten()[kept])  # the scale followed its channels
    assert small(z).shape == g(z).shape
    mixed = ScaledGenerator()
    mixed.scale = Mix(16)
    with pytest.raises(ConfigError, match="cannot prune layer 'scale' of type Mix"):
        prune(mixed, ChannelPruning(ratio=0.5), example_inputs=z)
    # every refused layer named in the one line, with the flags that keep them: no run per layer to find the next
    two = nn.Sequential(nn.Conv2d(16, 8, 1), Mix(8), nn.ReLU(), Mix(8), nn.Conv2d(8, 1, 1))
    with pytest.raises(ConfigError) as err:
        prune(two, ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 16, 4, 4))
    assert "layer '1' of type Mix (and 1 more: '3')" in str(err.value) and str(err.value).endswith(
        "(list them in ignore=(...) to keep their channels: --ignore 1 --ignore 3)")
    assert prune(two, ChannelPruning(ratio=0.5, ignore=("1", "3")), example_inputs=torch.randn(2, 16, 4, 4))[0]\
        .out_channels == 8  # their channels kept, with the conv that makes them


class _WSFirst(nn.Module):
    """A weight-scaled 1x1 convolution (ProGAN style, its bias a 1-D parameter) on the latent, then the output layer."""

    def __init__(self) -> None:
        super().__init__()
        from tests.archnets import WSConv2d

        self.ws = WSConv2d(8, 16, 1, 1, 0)
        self.out = nn.ConvTranspose2d(16, 1, 4, 1, 0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(F.leaky_relu(self.ws(z[:, :, None, None]), 0.2)))


def test_a_1d_bias_of_a_custom_layer_keeps_the_channels_of_its_convolution() -> None:
    torch.manual_seed(0)
    g = _WSFirst().eval()
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=torch.randn(2, 8))
    assert small.ws.conv.out_channels == small.ws.bias.numel() == small.out.in_channels == 8
    rows = g.ws.conv.weight.flatten(1)  # (16, 8): the latent side is never pruned, so each kept row is one of these
    kept = [int((rows - r).abs().sum(1).argmin()) for r in small.ws.conv.weight.flatten(1)]
    assert len(set(kept)) == 8 and torch.equal(small.ws.bias, g.ws.bias[kept])


class _GatedG(nn.Module):
    """GLU-style gating: each ConvTranspose2d's output is split in two halves by chunk, a * sigmoid(b)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ConvTranspose2d(8, 32, 7, 1, 0)
        self.up = nn.ConvTranspose2d(16, 32, 4, 2, 1)
        self.out = nn.ConvTranspose2d(16, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a, b = self.first(z[:, :, None, None]).chunk(2, dim=1)
        a, b = self.up(a * torch.sigmoid(b)).chunk(2, dim=1)
        return torch.tanh(self.out(a * torch.sigmoid(b)))


def test_layers_torch_pruning_leaves_whole_are_reported_not_passed_off_as_pruned() -> None:
    """torch-pruning removes nothing from channels split by chunk (L1 importance) or far too many (Taylor): slimgen
    says so (an error naming the layers it could not prune, since here that is all of them; an error naming the
    over-cut layers) instead of passing off a silently unpruned or mangled model. (Where other layers do prune, the
    unpruned ones are a warning and listed in kept_layers: the depthwise + noise test below.)"""
    torch.manual_seed(0)
    g = _GatedG().eval()
    with pytest.raises(ConfigError, match=r"found no channel it could remove: .* those of 'first', 'up'"):
        prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 8))
    bundle = ModelBundle.from_modules("gan", {"generator": g}, {"generator": {}}, latent_dim=8, image_shape=(1, 28, 28))
    # with Taylor importance torch-pruning cuts the same layers to 2 of 32 channels: refused, naming them
    with pytest.raises(ConfigError, match=r"cut 'first' to 2 of 32 channels.*chunk/split.*ignore"):
        prune(bundle, ChannelPruning(ratio=0.5, importance="taylor"))
    assert prune(bundle, ChannelPruning(ratio=0.5, importance="taylor", ignore=("first", "up"))).generator(
        torch.randn(2, 8)).shape == (2, 1, 28, 28)


class _LinearGatedG(nn.Module):
    """Linear -> view(-1, 2w, 7, 7) -> chunk gating, then a ConvTranspose2d gated the same way."""

    def __init__(self, nz: int = 8, w: int = 8) -> None:
        super().__init__()
        self.w = w
        self.fc = nn.Linear(nz, 2 * w * 7 * 7)
        self.up = nn.ConvTranspose2d(w, 2 * w, 4, 2, 1)
        self.out = nn.ConvTranspose2d(w, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a, b = self.fc(z).view(-1, 2 * self.w, 7, 7).chunk(2, dim=1)
        a, b = self.up(a * torch.sigmoid(b)).chunk(2, dim=1)
        return torch.tanh(self.out(a * torch.sigmoid(b)))


def test_a_failing_chunk_coupling_names_the_layers_it_cannot_prune() -> None:
    """torch-pruning's groups for both chunk-gated layers index past their widths. Before, the prune failed naming
    them for --ignore; now those groups are left whole by themselves, and as that leaves nothing to prune here, the
    one-line error says so, naming them."""
    torch.manual_seed(0)
    z = torch.randn(2, 8)
    with pytest.raises(ConfigError, match=r"found no channel it could remove: .* those of 'fc', 'up' \(their channels are split"):
        prune(_LinearGatedG().eval(), ChannelPruning(ratio=0.5), example_inputs=z)
    assert prune(_LinearGatedG().eval(), ChannelPruning(ratio=0.5, ignore=("fc", "up")), example_inputs=z)(z).shape \
        == (2, 1, 28, 28)


def test_channel_pruning_of_a_bare_module_needs_example_inputs() -> None:
    with pytest.raises(ConfigError, match="ChannelPruning needs example_inputs"):
        prune(DCGANGenerator(nz=8, widths=[16, 8]), ChannelPruning())


def test_ignored_layers_keep_their_channels(tiny_gan: ModelBundle) -> None:
    pruned = prune(tiny_gan, ChannelPruning(ratio=0.5, ignore=("net.0",)))
    assert pruned.generator.net[0].out_channels == 16
    assert pruned.generator.net[3].out_channels == 4


def test_ignoring_an_unknown_layer_is_an_error(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match=r"ignore names 'net\.99', which is not a layer of DCGANGenerator"):
        prune(tiny_gan, ChannelPruning(ratio=0.5, ignore=("net.99",)))


def test_layer_ratios_shape_the_student(tiny_gan: ModelBundle, tmp_path) -> None:
    """net.0 keeps 1/4 of its 16 channels, every other layer half; the reshaped VAE Linear follows its own ratio."""
    pruned = prune(tiny_gan, ChannelPruning(ratio=0.5, layer_ratios={"net.0": 0.75}))
    assert pruned.specs["generator"].kwargs["widths"] == [4, 4]
    save_folder(pruned, tmp_path / "m")
    z = torch.randn(3, 8)
    assert torch.equal(load_folder(tmp_path / "m").generator(z), pruned.generator(z))
    dec = VAEDecoder(nz=16, widths=[8, 4]).eval()
    small = prune(dec, ChannelPruning(ratio=0.5, layer_ratios={"fc": 0.75}), example_inputs=torch.randn(2, 16))
    assert (small.fc.out_features, small.net[1].out_channels) == (2 * 49, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer_ratios": {"net.99": 0.5}}, r"layer_ratios names 'net\.99', which is not a layer"),
    ({"layer_ratios": {"net.0": 0.5}, "scope": "global"}, "layer_ratios applies to scope uniform only"),
    ({"layer_ratios": {"net.0": 0.95}}, r"would remove every channel of layer 'net\.0'"),
])
def test_bad_layer_ratios_are_errors(tiny_gan: ModelBundle, kwargs: dict, message: str) -> None:
    config = ChannelPruning(ratio=0.5, **kwargs)
    with pytest.raises(ConfigError, match=message):
        prune(tiny_gan, config)


@pytest.mark.parametrize("value", [1.0, 0.0, "half", True])
def test_layer_ratio_outside_zero_one_is_refused_before_any_work(value: object) -> None:
    with pytest.raises(ConfigError, match=r"layer_ratios\['net\.0'\]"):
        ChannelPruning(layer_ratios={"net.0": value})  # type: ignore[dict-item]


class _FreeParamsG(nn.Module):
    """A Linear reshaped into channels, a free per-channel bias (1, C, 1, 1) on that map, a learned constant
    added to it, a scalar gate: every kind of parameter torch-pruning calls "unwrapped"."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 4 * 4)
        self.bias = nn.Parameter(torch.randn(1, 16, 1, 1))
        self.const = nn.Parameter(torch.randn(1, 16, 4, 4))
        self.gamma = nn.Parameter(torch.tensor(0.5))
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.out = nn.Conv2d(8, 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 16, 4, 4) + self.bias + self.gamma * self.const
        return torch.tanh(self.out(F.relu(self.up(F.relu(h)))))


def test_torch_prunings_unwrapped_parameter_warning_does_not_reach_the_user() -> None:
    """slimgen tells torch-pruning which free parameters it prunes and along which dimension: the constant keeps
    its 4x4 map (torch-pruning alone would cut its last dimension) and no "Unwrapped parameters" warning is shown."""
    torch.manual_seed(0)
    g = _FreeParamsG().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 8))
    assert not [w for w in caught if "Unwrapped" in str(w.message)], [str(w.message) for w in caught]
    assert small.fc.out_features == 8 * 16 and small.up.in_channels == 8
    assert small.bias.shape == (1, 8, 1, 1) and small.const.shape == (1, 8, 4, 4) and small.gamma.shape == ()
    assert small(torch.randn(3, 8)).shape == (3, 1, 8, 8)


def test_a_chunked_style_layer_loses_the_same_channels_as_the_layer_it_modulates(tmp_path) -> None:
    """AdaIN / FiLM: ``s, b = style(w).chunk(2)`` scales and shifts the conv's channels. Both chunks of the style
    Linear lose exactly the conv channels pruned (it stayed whole before, the conv too); the norm without weights
    keeps its pruned width through a save and load (config.json geometry), so it does not warn."""
    from tests.archnets import AdaINStyleG

    torch.manual_seed(0)
    g = AdaINStyleG().eval()
    z = torch.randn(2, 16)
    for importance in ("l1", "taylor"):
        bundle = ModelBundle.from_modules("gan", {"generator": copy.deepcopy(g)}, {"generator": {}}, latent_dim=16,
                                          image_shape=(1, 16, 16))
        bundle.specs["generator"].arch = "tests.archnets:AdaINStyleG"
        small = prune(bundle, ChannelPruning(ratio=0.5, importance=importance))
        s0, s1 = g.blocks[1], small.generator.blocks[1]
        assert s1.conv.out_channels == 8 and s1.ada.style.out_features == 16 and s1.ada.norm.num_features == 8
        kept = [int((s0.conv.bias - b).abs().argmin()) for b in s1.conv.bias]  # the original index of each kept one
        assert torch.equal(s1.ada.style.bias, s0.ada.style.bias[kept + [16 + k for k in kept]])
        assert torch.equal(s1.shift.flatten(), s0.shift.flatten()[kept])
        assert not small.steps[-1]["kept_layers"].get("blocks.1.ada.style")
    save_folder(small, tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_folder(tmp_path / "m", trust_code=["tests.archnets:*"])
        assert back.generator.blocks[1].ada.norm.num_features == 8
        assert torch.equal(back.generator(z), small.generator(z))
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["parts"]["generator"]["geometry"]["blocks.1.ada.norm"] == {"num_features": 8}
    config["parts"]["generator"]["geometry"]["blocks.1.ada.norm"] = {"num_features": 0}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="must map num_features to an integer >= 1"):
        load_folder(tmp_path / "m", trust_code=["tests.archnets:*"])


def test_a_learned_constant_input_loses_channels_with_the_layers_that_read_it() -> None:
    """StyleGAN's ``const`` (1, C, 4, 4) produces channels no layer does, so torch-pruning roots no group at it: it
    and the first conv's input kept all C before. Now both lose the channels that conv's input weights rank lowest
    (l1), the same ones; global scope (ranking across layers) leaves the constant whole."""
    from tests.archnets import AdaINStyleG

    torch.manual_seed(0)
    g = AdaINStyleG().eval()
    z = torch.randn(2, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=z)
    w0 = g.blocks[0].conv.weight
    expect = sorted(w0.abs().sum((0, 2, 3)).argsort(stable=True)[16:].tolist())  # the 16 strongest input channels
    assert small.const.shape == (1, 16, 4, 4) and small.blocks[0].conv.in_channels == 16
    assert torch.equal(small.const, g.const[:, expect]) and torch.equal(small.blocks[0].conv.weight[:, :, 0, 0],
                                                                        w0[:, expect][small_rows(g, small), :, 0, 0])
    assert small(z).shape == (2, 1, 16, 16)
    whole = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, scope="global"), example_inputs=z)
    assert whole.const.shape == (1, 32, 4, 4)


@pytest.mark.parametrize("glu", ["slice", "chunk", "nn"])
def test_a_glu_unit_loses_pairs_of_channels_and_computes_what_the_model_did_without_them(glu: str) -> None:
    """FastGAN's conv -> BatchNorm -> GLU: output channel c is the layer's channels c and C + c. Before, channel
    pruning failed (torch-pruning ranks 2C channels as one set and loses the pairs; through slices it tracks
    nothing). Now each GLU channel removed takes both rows of the layer and both norm entries, and the pruned model
    computes exactly what the original does with those GLU channels zeroed."""
    from slimgen.prune.gated import gated_units
    from tests.archnets import FastGANLikeG

    torch.manual_seed(0)
    g = FastGANLikeG(glu=glu).eval()
    for m in g.modules():  # distinct running statistics identify each norm entry
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features))
            m.running_var.copy_(torch.rand(m.num_features) + 0.5)
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=z)
    dropped = {}
    for unit, norm in (("init", "init.1"), ("up1", "up1.bn"), ("up2", "up2.bn")):
        before, after = g.get_submodule(norm).running_mean, small.get_submodule(norm).running_mean
        c = len(before) // 2
        kept = [int((before - v).abs().argmin()) for v in after]
        assert len(kept) == c and kept[c // 2:] == [k + c for k in kept[: c // 2]]  # pairs c and C + c, in order
        dropped[unit] = sorted(set(range(c)) - set(kept[: c // 2]))
    hooks = [g.get_submodule(f"{unit}.2" if unit == "init" else f"{unit}.glu").register_forward_hook(
        lambda m, a, out, d=d: out.index_fill(1, torch.tensor(d), 0.0)) for unit, d in dropped.items()]
    with torch.no_grad():
        expected = g(z)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        torch.testing.assert_close(small(z), expected, atol=1e-5, rtol=1e-4)
    # layer_ratios name the unit's layer and count GLU channels: 0.25 of 16 leaves 12, 24 rows
    ratios = ChannelPruning(ratio=0.5, layer_ratios={"up1.conv": 0.25})
    assert prune(copy.deepcopy(g), ratios, example_inputs=z).get_submodule("up1.conv").out_channels == 24
    # finding the units runs the model (and each lent unit) in eval mode: a model in train mode keeps its statistics
    t = copy.deepcopy(g).train()
    state = copy.deepcopy(t.state_dict())
    assert len(gated_units(t, lambda m: m(z), [])) == 3 and t.training
    assert all(torch.equal(v, state[k]) for k, v in t.state_dict().items())


def test_glu_units_under_spectral_norm_in_a_traced_graph_prune() -> None:
    """FastGAN puts spectral norm on every conv and reshapes its latent with a literal view: the GLU modules are
    found before the parametrized convs are baked and kept whole in the traced graph, so the units still prune;
    a model returning a tuple is compared element by element."""
    from tests.archnets import FastGANLikeG

    torch.manual_seed(0)
    g = FastGANLikeG().eval()
    g.up1.conv = torch.nn.utils.parametrizations.spectral_norm(g.up1.conv)
    z = torch.randn(2, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.get_submodule("up1.conv").weight.shape == (16, 16, 3, 3) and small(z).shape == (2, 1, 16, 16)

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = FastGANLikeG()

        def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.g(z)
            return x, x.mean()

    assert prune(Pair().eval(), ChannelPruning(ratio=0.5), example_inputs=z).g.up1.conv.out_channels == 16


def small_rows(g: nn.Module, small: nn.Module) -> list[int]:
    """The original output channel of each kept output channel of the first block's conv (matched by bias)."""
    return [int((g.blocks[0].conv.bias - b).abs().argmin()) for b in small.blocks[0].conv.bias]


class _SubPixelG(nn.Module):
    """Sub-pixel upsampling, functional and as a module: conv -> pixel_shuffle(2) -> conv -> PixelShuffle(2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 4 * 4)
        self.up1 = nn.Conv2d(16, 4 * 12, 3, 1, 1)
        self.up2 = nn.Conv2d(12, 4 * 8, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.out = nn.Conv2d(8, 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(z).view(-1, 16, 4, 4))
        x = F.leaky_relu(F.pixel_shuffle(self.up1(x), 2), 0.2)
        x = F.relu(self.shuffle(self.up2(x)))
        return torch.tanh(self.out(x))


def test_a_conv_feeding_a_pixel_shuffle_loses_whole_sub_pixel_blocks() -> None:
    """Channel c after a pixel shuffle is the conv's channels 4c..4c+3: pruning removes those blocks together and
    the next conv's input channel c with them (the conv stayed whole before: torch-pruning maps c to c)."""
    torch.manual_seed(0)
    g = _SubPixelG().eval()
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=torch.randn(2, 8))
    assert (small.up1.out_channels, small.up2.in_channels, small.up2.out_channels, small.out.in_channels) == (24, 6, 16, 4)
    def origin(name: str) -> list[int]:  # the original row of each kept row (biases are distinct random numbers)
        b0, b1 = getattr(g, name).bias, getattr(small, name).bias
        return [int((b0 - b).abs().argmin()) for b in b1]

    for a, b in (("up1", "up2"), ("up2", "out")):
        rows, nxt_rows = origin(a), origin(b)
        for j in range(len(rows) // 4):  # each kept block is one whole block of the original, in order
            c = rows[4 * j] // 4
            assert rows[4 * j:4 * j + 4] == [4 * c + k for k in range(4)]
            # the channel after the shuffle that block makes is the next conv's input channel j now (c before)
            assert torch.equal(getattr(small, b).weight[:, j], getattr(g, b).weight[nxt_rows, c])
    assert small(torch.randn(3, 8)).shape == (3, 1, 16, 16)
    ratios = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, layer_ratios={"up1": 0.25}), example_inputs=torch.randn(2, 8))
    assert (ratios.up1.out_channels, ratios.up2.out_channels) == (36, 16)  # its own ratio counts channels after the shuffle


def _dead(g: nn.Module) -> dict[str, list[int]]:
    """Zero half the channels of every group of a :class:`tests.archnets.ModulatedG` (rows of the layers that make them,
    columns and affine rows of those that read them, their noise strength): channels that change nothing. Returns
    the dead channels by group."""
    gen = torch.Generator().manual_seed(3)
    dead = {k: sorted(torch.randperm(c, generator=gen)[: c // 2].tolist())
            for k, c in (("const", 32), ("conv0", 32), ("ups.0", 16), ("ups.1", 16))}
    out_dim = g.conv0.weight.ndim - 4

    def cut_in(m: nn.Module, idx: list[int]) -> None:
        m.weight.data.index_fill_(out_dim + 1, torch.tensor(idx), 0.0)
        m.affine.weight.data[idx] = 0.0
        m.affine.bias.data[idx] = 0.0

    def cut_out(m: nn.Module, idx: list[int]) -> None:
        m.weight.data.index_fill_(out_dim, torch.tensor(idx), 0.0)
        m.bias.data[idx] = 0.0

    with torch.no_grad():
        g.const.data[:, dead["const"]] = 0.0
        cut_in(g.conv0, dead["const"])
        cut_out(g.conv0, dead["conv0"])
        for m in (g.rgb0, g.ups[0]):
            cut_in(m, dead["conv0"])
        for i, key in enumerate(("ups.0", "ups.1")):
            cut_out(g.ups[i], dead[key])
            g.noises[i].strength.data[:, dead[key]] = 0.0
            cut_in(g.rgbs[i], dead[key])
        cut_in(g.ups[1], dead["ups.0"])
    return dead


@pytest.mark.parametrize("fused", [True, False])
def test_a_stylegan2_modulated_conv_loses_channels_with_its_affine_and_computes_the_same_without_dead_ones(
        fused: bool) -> None:
    """StyleGAN2's modulated conv (a weight scaled per sample by its affine's output, demodulated; fused as a conv
    grouped over the batch with a (1, C_out, C_in, k, k) weight and ``self.out_channel`` read in forward, or not).
    Before, channel pruning refused such a model in one line. Now each one is a layer: its input channels go with
    its affine's rows and the producer's channels, its output channels with its bias, the noise strength and the
    next layers. With half of every group's channels made dead (zero rows and columns), l1 pruning removes exactly
    those and the model computes what it did (noise drawn the same), its image channels kept."""
    from tests.archnets import ModulatedG

    torch.manual_seed(0)
    g = ModulatedG(fused=fused).eval()
    _dead(g)
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1", ignore=("mapping.0", "mapping.2")),
                  example_inputs=z)
    lead = (1,) if fused else ()
    assert small.const.shape == (1, 16, 4, 4)
    assert small.conv0.weight.shape == (*lead, 16, 16, 3, 3) and small.conv0.bias.shape == (16,)
    assert small.conv0.affine.out_features == 16 and small.rgb0.affine.out_features == 16
    assert small.ups[0].weight.shape == (*lead, 8, 16, 3, 3) and small.ups[1].weight.shape == (*lead, 8, 8, 3, 3)
    assert small.noises[1].strength.shape == (1, 8, 1, 1)
    assert small.rgbs[1].weight.shape == (*lead, 1, 8, 1, 1) and small.rgb0.weight.shape[len(lead)] == 1  # the image
    assert small.ups[1].out_channel == 8 and small.ups[1].in_channel == 8  # widths a fused forward reads
    assert type(small.conv0) is type(g.conv0)  # the user's own class, back in place
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        expected = g(z)
        torch.manual_seed(1)
        torch.testing.assert_close(small(z), expected, atol=1e-5, rtol=1e-4)
    kept = kept_layers(small, z)
    assert set(kept) == {"rgbs.1"}, kept  # the image layer, named as the module (not its affine)


def test_a_modulated_conv_layer_ratio_and_a_saved_folder() -> None:
    """``layer_ratios`` names the module; the pruned model saves and loads (shapes and the width attributes its
    forward reads) and computes the same."""
    from slimgen.models.inputs import InputSpec
    from tests.archnets import ModulatedG

    torch.manual_seed(0)
    g = ModulatedG(fused=True, noise=False).eval()
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, layer_ratios={"ups.0": 0.25}), example_inputs=z)
    assert small.ups[0].weight.shape[1] == 12 and small.ups[0].out_channel == 12
    bundle = ModelBundle.from_modules("gan", {"generator": small}, {"generator": {"fused": True, "noise": False}},
                                      inputs=InputSpec(latent_shape=(16,)), image_shape=(1, 16, 16))
    bundle.specs["generator"].arch = "tests.archnets:ModulatedG"
    with tempfile.TemporaryDirectory() as tmp:
        back = load_folder(save_folder(bundle, Path(tmp) / "m"), trust_code=("tests.archnets:*",))
    assert back.generator.ups[0].out_channel == 12
    with torch.no_grad():
        torch.testing.assert_close(back.generator(z), small(z))


def test_rosinality_style_rgb_biases_keep_the_image_channels() -> None:
    """rosinality's ToRGB adds a free (1, C_img, 1, 1) bias to each modulated toRGB output. Its group holds no
    Conv or Linear output, so it looked like a learned source (StyleGAN's constant) and was cut with the image
    channels (and a second such bias, already pruned with the first, was looked up stale: KeyError). The
    modulated layers count as layers there now: the image keeps its 3 channels; the constant loses half."""
    from tests.archnets import ModulatedG

    torch.manual_seed(0)
    g = ModulatedG(channels=3, rgb_bias=True, noise=False).eval()
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small(z).shape == (3, 3, 16, 16) and small.rgb_bias.shape == (1, 3, 1, 1)
    assert small.const.shape == (1, 16, 4, 4) and small.conv0.weight.shape[:2] == (16, 16)



def test_hand_written_layers_with_a_fused_activation_lose_channels_and_compute_the_same_without_dead_ones() -> None:
    """rosinality's EqualLinear with its leaky ReLU fused in, an equalized (transposed) conv with its activation:
    no torch layer computes them, so standardize leaves them, and channel pruning refused the model in one line
    (three of rosinality's mapping layers needed --ignore). Each is now a layer of its own: the weight's output
    dimension (found by a trial on its recorded input: the square (in, out) weight of ``mapping.1`` is read the right
    way round) with the bias, its input dimension with the producer. With half of every group's channels dead
    (zero rows, bias entries and the next layer's columns), l1 pruning removes exactly those and the model computes
    what it did; a saved folder loads back the same."""
    from slimgen.models.inputs import InputSpec
    from tests.archnets import OwnLayersG

    torch.manual_seed(0)
    g = OwnLayersG().eval()
    gen = torch.Generator().manual_seed(1)
    dead = {k: torch.randperm(c, generator=gen)[: c // 2] for k, c in (("m0", 32), ("m1", 32), ("up", 32), ("conv", 16))}
    with torch.no_grad():  # (module, weight dim, dead channels): rows that make them (with the bias), columns that read
        for m, d, key in ((g.mapping[0], 0, "m0"), (g.mapping[1], 1, "m1"), (g.up, 1, "up"), (g.conv, 0, "conv")):
            m.weight.index_fill_(d, dead[key], 0.0)
            m.bias[dead[key]] = 0.0
        for m, d, key in ((g.mapping[1], 0, "m0"), (g.up, 0, "m1"), (g.conv, 1, "up"), (g.out, 1, "conv")):
            m.weight.index_fill_(d, dead[key], 0.0)
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=z)
    assert small.mapping[0].weight.shape == (16, 16) and small.mapping[1].weight.shape == (16, 16)
    assert small.up.weight.shape == (16, 16, 4, 4) and small.conv.weight.shape == (8, 16, 3, 3)
    assert small.conv.bias.shape == (8,) and small.out.weight.shape == (1, 8, 3, 3)
    assert type(small.mapping[0]) is type(g.mapping[0])  # the user's own class, back in place
    alive = [i for i in range(32) if i not in dead["m1"].tolist()]
    torch.testing.assert_close(small.mapping[1].weight, g.mapping[1].weight[:, alive][
        [i for i in range(32) if i not in dead["m0"].tolist()]])  # the (in, out) weight: columns are its outputs
    with torch.no_grad():
        torch.testing.assert_close(small(z), g(z), atol=1e-5, rtol=1e-4)
    assert set(kept_layers(small, z)) == {"out"}
    bundle = ModelBundle.from_modules("gan", {"generator": small}, {"generator": {}},
                                      inputs=InputSpec(latent_shape=(16,)), image_shape=(1, 8, 8))
    bundle.specs["generator"].arch = "tests.archnets:OwnLayersG"
    with tempfile.TemporaryDirectory() as tmp:
        back = load_folder(save_folder(bundle, Path(tmp) / "m"), trust_code=("tests.archnets:*",))
    with torch.no_grad():
        torch.testing.assert_close(back.generator(z), small(z))


def test_a_hand_written_layer_whose_channels_are_not_its_weights_is_refused_by_name() -> None:
    """A hand-written layer whose forward reverses its output channels: removing a row of its weight would remove
    another output channel than the one ranked. The trial finds that; the model is refused in one line naming it
    and the flag that keeps it, and pruning with that flag works."""
    from tests.archnets import OwnLayersG

    torch.manual_seed(0)
    g = OwnLayersG(flip=True).eval()
    z = torch.randn(3, 16)
    with pytest.raises(ConfigError, match=r"cannot prune layer 'flip' of type Flipped.*--ignore flip\)$"):
        prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, ignore=("flip",)), example_inputs=z)
    # an ignored layer keeps its tensors: torch-pruning took its weight for a free parameter and cut it to (8, 16)
    assert small.flip.weight.shape == (16, 16) and small.up.weight.shape == (16, 16, 4, 4)
    assert small(z).shape == (3, 1, 8, 8)


def test_a_rejected_graph_rewrite_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """A literal reshape (``gain.view(-1, 1, 1, 1)``) makes slimgen try width-agnostic rewrites of the traced graph;
    a rewrite that fails is rejected, but torch.fx printed a page of traceback for it on stderr first."""
    from tests.archnets import OwnLayersG

    torch.manual_seed(0)
    z = torch.randn(3, 16)
    small = prune(OwnLayersG(flip=True, view=True).eval(), ChannelPruning(ratio=0.5, ignore=("flip",)), example_inputs=z)
    assert small(z).shape == (3, 1, 8, 8) and small.conv.weight.shape == (8, 16, 3, 3)
    assert "Traceback" not in capsys.readouterr().err


def test_a_model_that_no_longer_runs_after_pruning_is_one_line_on_stderr_too(capsys: pytest.CaptureFixture[str],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """When the pruned (traced) model fails, torch.fx printed a page of generated code on stderr before slimgen's
    one-line error; now the one line is all."""
    from slimgen.prune import structured

    monkeypatch.setattr(structured, "RETRIES", 0)  # no layer kept whole to make it run
    with pytest.raises(ConfigError, match="after channel pruning the model no longer runs"):
        prune(_TokenStem(hidden=False).eval(), ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 8))
    assert "Traceback" not in capsys.readouterr().err


class _NoiseDepthwise(nn.Module):
    """A noise channel drawn in forward, concatenated to a conv's output, into a depthwise-separable block."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(8, 16 * 16), nn.Unflatten(1, (16, 4, 4)))
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(17, 17, 3, padding=1, groups=17)
        self.pw = nn.Sequential(nn.Conv2d(17, 8, 1), nn.ReLU())
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.head(z))
        x = torch.cat([x, torch.randn(x.shape[0], 1, *x.shape[2:])], 1)
        return torch.tanh(self.out(self.pw(self.dw(x))))


def test_a_group_torch_pruning_cannot_index_keeps_its_channels_and_the_rest_prunes() -> None:
    """torch-pruning's group for a depthwise conv fed by [a conv's output, a noise channel drawn in forward] indexes
    past the conv's width: the whole prune failed ("could not group this model's channels (IndexError ...)"). Now that
    group keeps its channels, named under kept_layers with the warning; the rest of the model prunes and runs."""
    torch.manual_seed(0)
    g = _NoiseDepthwise().eval()
    z = torch.randn(2, 8)
    with pytest.warns(UserWarning, match=r"removed no channel of 'conv.0', 'dw'.*concatenated with a tensor no layer"):
        small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.conv[0].out_channels == 16 and small.dw.out_channels == 17  # the group that cannot be indexed
    bundle = ModelBundle.from_modules("gan", {"generator": g}, {"generator": {}}, latent_dim=8, image_shape=(1, 4, 4))
    with pytest.warns(UserWarning, match="removed no channel"):
        step = prune(bundle, ChannelPruning(ratio=0.5, importance="l1")).steps[-1]
    assert "torch-pruning found no way" in step["kept_layers"]["dw"] and "conv.0" in step["kept_layers"]
    assert small.pw[0].out_channels == 4 and small.head[0].out_features == 8 * 16 and small.conv[0].in_channels == 8
    assert small(z).shape == (2, 1, 4, 4)


class _MHA(nn.Module):
    """nn.MultiheadAttention over the positions of a feature map, as a residual block (GroupNorm before)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, c)
        self.attn = nn.MultiheadAttention(c, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(t, t, t, need_weights=False)[0].transpose(1, 2).reshape(b, c, h, w)


def test_multihead_attention_is_left_whole_and_the_rest_prunes() -> None:
    """nn.MultiheadAttention was refused in one line (--ignore it); now it is left whole like the projections of
    hand-written attention: its embedding width and the channels tied to it (the residual stream, the norm, the layers
    making it) keep their width, named under kept_layers; the layers after it prune."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.BatchNorm2d(16), nn.ReLU(), _MHA(16),
                      nn.ConvTranspose2d(16, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1),
                      nn.Tanh()).eval()
    z = torch.randn(2, 8, 1, 1)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small[3].attn.embed_dim == 16 and small[0].out_channels == 16 and small[4].out_channels == 8
    assert small(z).shape == (2, 1, 8, 8)
    kept = kept_layers(small, z)
    assert "nn.MultiheadAttention" in kept["3.attn"] and "tied to '3.attn'" in kept["0"]


def test_rosinality_style_mapping_and_modulated_convs_prune_without_ignore() -> None:
    """rosinality's StyleGAN2 shape: a mapping of EqualLinears with the activation fused in, feeding the modulated
    convs' affines. Stop 35 needed --ignore for each mapping layer; now the style width goes too (the mapping's rows
    with the affines' columns), the image keeps its 3 channels."""
    from tests.archnets import EqualLinearAct, ModulatedG

    torch.manual_seed(0)
    g = ModulatedG(fused=True, channels=3, rgb_bias=True, noise=False)
    g.mapping = nn.Sequential(*(EqualLinearAct(16, 16) for _ in range(3)))
    g.eval()
    z = torch.randn(3, 16)
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.mapping[0].weight.shape == (8, 16) and small.mapping[2].weight.shape == (8, 8)
    assert small.conv0.affine.in_features == 8 and small.rgbs[1].affine.in_features == 8
    assert small(z).shape == (3, 3, 16, 16) and set(kept_layers(small, z)) == {"rgbs.1"}


class _LiteralScale(nn.Module):
    """A per-channel scale (1, C, 1, 1) read through a literal reshape ``view(1, 16, 1, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.rand(1, 16, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s.view(1, 16, 1, 1)


def test_a_scale_module_with_a_literal_reshape_is_still_traced_through() -> None:
    """Modules that could be a hand-written layer stay whole (leaves) in the traced graph; a (1, C, 1, 1) scale is a
    free parameter, not such a layer, and its literal reshape must still be rewritten (a first version of the
    hand-written layers made it a leaf: the pruned model failed on view(1, 16, 1, 1))."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.ConvTranspose2d(8, 16, 4, 1, 0), nn.ReLU(), _LiteralScale(), nn.Conv2d(16, 1, 3, padding=1))
    z = torch.randn(2, 8, 1, 1)
    small = prune(g.eval(), ChannelPruning(ratio=0.5), example_inputs=z)
    assert small.get_submodule("2").s.shape == (1, 8, 1, 1) and small(z).shape == (2, 1, 4, 4)


class _MixedG(nn.Module):
    """Hand-written layers (lent, prunable) before a conv whose group torch-pruning cannot index (noise + depthwise)."""

    def __init__(self) -> None:
        super().__init__()
        from tests.archnets import EqualLinearAct

        self.m0, self.m1 = EqualLinearAct(8, 16), EqualLinearAct(16, 16)
        self.conv = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(17, 17, 3, padding=1, groups=17)
        self.out = nn.Conv2d(17, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.m1(self.m0(z))[:, :, None, None].expand(-1, -1, 4, 4))
        return self.out(self.dw(torch.cat([x, torch.randn(x.shape[0], 1, 4, 4)], 1)))


def test_only_hand_written_layers_pruned_is_still_a_prune() -> None:
    """Every torch layer left whole but the hand-written ones pruned: a warning naming the whole ones, not the
    "found no channel it could remove" error (a first version counted torch layers only)."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="removed no channel of 'conv', 'dw'"):
        small = prune(_MixedG().eval(), ChannelPruning(ratio=0.5), example_inputs=torch.randn(2, 8))
    assert small.m0.weight.shape == (8, 8) and small.m1.weight.shape == (8, 8) and small.conv.in_channels == 8
    assert small.conv.out_channels == 16 and small(torch.randn(2, 8)).shape == (2, 1, 4, 4)


class _ViewLayerNorm(nn.Module):
    """A Linear reshaped into (B, 16, 7, 7) and normalized over the whole map by LayerNorm([16, 7, 7]) (a stem that
    avoids batch statistics), then a transposed conv and the image conv."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 49)
        self.norm = nn.LayerNorm([16, 7, 7], elementwise_affine=affine)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.fc(z).view(-1, 16, 7, 7)))
        return torch.tanh(self.out(F.relu(self.up(x))))


@pytest.mark.parametrize("affine", [True, False])
def test_a_linear_reshaped_into_a_layernormed_map_loses_whole_channel_groups_with_the_norm(affine: bool,
                                                                                          tmp_path: Path) -> None:
    """Linear -> view(B, C, 7, 7) -> LayerNorm([C, 7, 7]): channel c is the Linear's features [49c, 49c + 49), the
    norm's slice c and the next layer's input channel c; all three lose the same channels (the Linear was kept whole
    before, its coupling not followed through a LayerNorm), and the folder reloads (a norm without weights from its
    recorded shape)."""
    torch.manual_seed(0)
    g = _ViewLayerNorm(affine).eval()
    with torch.no_grad():
        g.fc.bias.copy_(torch.arange(16.0).repeat_interleave(49))  # channel c's features carry bias c
        if affine:
            g.norm.weight.copy_(torch.arange(1.0, 17.0)[:, None, None].expand(16, 7, 7))
    small = prune(copy.deepcopy(g), ChannelPruning(ratio=0.5, importance="l1"), example_inputs=torch.randn(2, 8))
    assert small.fc.out_features == 8 * 49 and small.norm.normalized_shape == (8, 7, 7) and small.up.in_channels == 8
    kept = small.fc.bias.view(8, 49)[:, 0].long().tolist()
    assert torch.equal(small.fc.bias.view(8, 49), torch.tensor(kept, dtype=torch.float)[:, None].expand(8, 49))
    assert torch.equal(small.fc.weight.view(8, 49, 8), g.fc.weight.view(16, 49, 8)[kept])  # whole groups
    out_kept = [int((g.up.bias - b).abs().argmin()) for b in small.up.bias]  # its own output channels prune too
    assert torch.equal(small.up.weight, g.up.weight[kept][:, out_kept])  # the consumer lost the same input channels
    if affine:
        assert torch.equal(small.norm.weight, g.norm.weight[kept]) and torch.equal(small.norm.bias, g.norm.bias[kept])
    z = torch.randn(3, 8)
    assert small(z).shape == (3, 1, 14, 14)
    bundle = ModelBundle.from_modules("gan", {"generator": g}, {"generator": {"affine": affine}}, latent_dim=8,
                                      image_shape=(1, 14, 14))
    pruned = prune(bundle, ChannelPruning(ratio=0.5))
    save_folder(pruned, tmp_path / "ln")
    loaded = load_folder(tmp_path / "ln").generator
    assert loaded.norm.normalized_shape == (8, 7, 7) and torch.equal(loaded(z), pruned.generator(z))


class _TokenStem(nn.Module):
    """TransGAN's stem without a position embedding: latent -> 16 tokens of width 16 (channels last, ``view``), a
    residual MLP over LayerNorm, tokens back to a (B, 16, 4, 4) map, then a pixel shuffle and a 1x1 conv to the image
    (``shuffle``) or a transposed conv."""

    def __init__(self, hidden: bool = True, shuffle: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16 * 16)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16)) if hidden else nn.Linear(16, 16)
        self.shuffle = shuffle
        self.out = nn.Conv2d(4, 1, 1) if shuffle else nn.ConvTranspose2d(16, 1, 2, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 16, 16)
        x = (x + self.mlp(F.relu(self.norm(x)))).transpose(1, 2).reshape(-1, 16, 4, 4)
        return torch.tanh(self.out(F.pixel_shuffle(x, 2) if self.shuffle else x))


def test_a_linear_on_tokens_transposed_into_a_map_is_no_reshape_coupling() -> None:
    """``mlp(tokens).transpose(1, 2).reshape(B, C, 4, 4)``: the MLP's last Linear was taken for one reshaped into the
    next conv's channels (groups of features), which is not what a transpose lays out (with a pixel shuffle on the way
    the pruned model failed); now the residual width stays (named in a warning) and the MLP's hidden width prunes."""
    torch.manual_seed(0)
    z = torch.randn(2, 8)
    assert find_reshape_couplings(_TokenStem(shuffle=True).eval(), z) == []
    with pytest.warns(UserWarning, match="removed no channel of 'fc', 'mlp.2'"):
        small = prune(_TokenStem(shuffle=True).eval(), ChannelPruning(ratio=0.5), example_inputs=z)
    hidden, back = small.get_submodule("mlp.0"), small.get_submodule("mlp.2")  # a traced graph's plain Modules
    assert small.fc.out_features == 256 and hidden.out_features == 32 and back.in_features == 32
    assert small(z).shape == (2, 1, 8, 8)


def test_a_linear_whose_output_a_view_cannot_take_after_pruning_is_kept_whole() -> None:
    """torch-pruning ties the tokens' width to ``fc``'s outputs one to one and cuts 8 of its 256 features; the pruned
    model then fails in ``fc(z).view(B, N, C)``, outside any layer, so no layer was named to keep whole and the prune
    stopped. The layer that made the tensor (the last to finish) is now kept whole and the prune tried again; here
    nothing else can shrink, which a warning says."""
    torch.manual_seed(0)
    z = torch.randn(2, 8)
    with pytest.warns(UserWarning) as seen:
        same = prune(_TokenStem(hidden=False).eval(), ChannelPruning(ratio=0.5), example_inputs=z)
    said = " ".join(str(w.message) for w in seen)
    assert "kept 'fc' whole: the model pruned without it no longer ran" in said
    assert "channel pruning removed nothing: every layer's output channels are tied to" in said and "('fc')" in said
    assert same.fc.out_features == 256 and same(z).shape == (2, 1, 8, 8)
