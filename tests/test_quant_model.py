"""Quantizing whole models: the verb's contract, model folders that really shrink, the exact
ConvTranspose2d rewrite and quantization-aware training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimgen.errors import ConfigError
from slimgen.evaluate.cost import stored_bytes
from slimgen.models import DCGANGenerator, ModelBundle, load_folder, save_folder, weight_bytes
from slimgen.quantize import (
    ActivationQuant,
    KMeansQuant,
    LinearQuant,
    NaiveQuant,
    QuantAwareTraining,
    quantizable_weights,
    quantize,
    rewrite_conv_transpose,
)
from slimgen.quantize.kmeans import codebook_of
from slimgen.quantize.rewrite import Rewritten, fold_batchnorm, prepare_for_int8
from slimgen.storage import CODECS

SCHEMES = [
    LinearQuant(bits=8), LinearQuant(bits=4, symmetric=False), LinearQuant(bits=2, per_channel=False),
    LinearQuant(bits=4, scale="mse"), LinearQuant(bits=8, scale="percentile"),
    LinearQuant(bits=4, output_layer_bits=8, entropy_coding="lzma"), LinearQuant(bits=5), LinearQuant(bits=3, entropy_coding="lzma"),
    KMeansQuant(bits=4), KMeansQuant(bits=2, init="density", entropy_coding="lzma"), NaiveQuant(bits=4),
    ActivationQuant(calibration=16),
]


def test_output_layer_bits_quantizes_only_the_last_layer_differently(tiny_gan: ModelBundle) -> None:
    q = quantize(tiny_gan, LinearQuant(bits=4, output_layer_bits=8))
    bits = [q.encodings[f"generator.{n}"].params["bits"] for n, _, _ in quantizable_weights(q.generator)]
    assert len(bits) >= 2 and bits == [4] * (len(bits) - 1) + [8]
    last = quantizable_weights(q.generator)[-1][1].weight
    assert 16 < last.unique().numel() <= 255  # more levels than int4 allows, on an int8 grid
    with pytest.raises(ConfigError, match="output_layer_bits"):
        LinearQuant(bits=4, output_layer_bits=9)


def _levels(weight: torch.Tensor) -> list[int]:
    """Distinct values per output channel of a ConvTranspose weight (in, out, kh, kw)."""
    return [weight[:, c].unique().numel() for c in range(weight.shape[1])]


def test_layer_bits_give_one_layer_its_own_width(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    """Mixed precision: the named layer at its own width (odd widths too), packed smaller on disk, reloaded
    identical; the other layers keep ``bits`` and the output layer its ``output_layer_bits``."""
    names = [n for n, _, _ in quantizable_weights(tiny_gan.generator)]
    assert names == ["net.0.weight", "net.3.weight", "net.6.weight"]
    config = LinearQuant(bits=8, output_layer_bits=4, layer_bits={"net.0": 5})
    q = quantize(tiny_gan, config)
    assert [q.encodings[f"generator.{n}"].params["bits"] for n in names] == [5, 8, 4]
    assert 15 < max(_levels(q.generator.net[0].weight)) <= 31  # a 5-bit symmetric grid: more than int4's 15 levels
    assert max(_levels(q.generator.net[3].weight)) > 31
    z = torch.randn(4, 8)
    save_folder(q, tmp_path / "mixed")
    save_folder(quantize(tiny_gan, LinearQuant(bits=8, output_layer_bits=4)), tmp_path / "int8")
    back = load_folder(tmp_path / "mixed")
    assert torch.equal(back.generator(z), q.generator(z))
    size = {k: stored_bytes(tmp_path / k / "model.safetensors", prefix="generator.") for k in ("mixed", "int8")}
    assert size["mixed"] < size["int8"]
    # a layer the map names wins over output_layer_bits; a name that is no layer is refused
    assert quantize(tiny_gan, LinearQuant(bits=8, output_layer_bits=4, layer_bits={"net.6": 2})).encodings[
        "generator.net.6.weight"].params["bits"] == 2
    with pytest.raises(ConfigError, match=r"net\.5"):
        quantize(tiny_gan, LinearQuant(layer_bits={"net.5": 4}))


def _generator_bundle(widths: list[int], nz: int = 16) -> ModelBundle:
    torch.manual_seed(0)
    kw = {"nz": nz, "channels": 1, "image_size": 28, "widths": widths}
    g = DCGANGenerator(**kw)
    g.train()(torch.randn(16, nz))
    return ModelBundle.from_modules("gan", {"generator": g.eval()}, {"generator": kw}, latent_dim=nz)


@pytest.mark.parametrize("config", SCHEMES, ids=lambda c: f"{type(c).__name__}-{c.bits}")
def test_every_scheme_saves_packed_and_reloads_identical(config: object, tiny_gan: ModelBundle, tmp_path: Path) -> None:
    z = torch.randn(4, 8)
    before = {k: v.clone() for k, v in tiny_gan.state_dict().items()}
    q = quantize(tiny_gan, config)
    assert all(torch.equal(before[k], v) for k, v in tiny_gan.state_dict().items()), "input bundle was modified"
    names = [f"generator.{n}" for n, _, _ in quantizable_weights(q.generator)]
    if isinstance(config, ActivationQuant):  # float_output_layer: the image output layer keeps fp32 weights
        assert names[-1] not in q.encodings
        names = names[:-1]
    assert set(names) <= set(q.encodings) and all(q.encodings[n].codec in CODECS for n in names)
    assert not any(k.startswith("discriminator.") for k in q.encodings), "parts=('generator',) by default"
    save_folder(q, tmp_path)
    loaded = load_folder(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), q.generator(z))
    assert loaded.encodings == q.encodings  # config.json records the scheme per tensor
    assert loaded.steps[-1]["step"] == "quantize" and loaded.steps[-1]["method"] == type(config).__name__
    save_folder(loaded, tmp_path / "again")  # a reloaded quantized model saves again, bit for bit
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


@pytest.mark.parametrize(("config", "min_ratio"), [
    (LinearQuant(bits=8), 3.9), (LinearQuant(bits=4), 7.7), (LinearQuant(bits=2), 15.0),
    (LinearQuant(bits=4, symmetric=False), 7.5), (KMeansQuant(bits=4), 7.9), (KMeansQuant(bits=2), 15.5),
])
def test_stored_weights_really_shrink(config: object, min_ratio: float, tmp_path: Path) -> None:
    bundle = _generator_bundle([64, 32])
    save_folder(bundle, tmp_path / "fp32")
    save_folder(quantize(bundle, config), tmp_path / "q")
    names = [f"generator.{n}" for n, _, _ in quantizable_weights(bundle.generator)]
    fp32 = sum(stored_bytes(tmp_path / "fp32" / "model.safetensors", prefix=n) for n in names)
    packed = sum(stored_bytes(tmp_path / "q" / "model.safetensors", prefix=n) for n in names)
    assert fp32 / packed >= min_ratio
    assert weight_bytes(tmp_path / "q") < weight_bytes(tmp_path / "fp32") / (min_ratio * 0.8)  # the whole file too


def test_entropy_coded_kmeans_is_smaller_than_packed(tmp_path: Path) -> None:
    bundle = _generator_bundle([64, 32])
    for _, layer, _ in quantizable_weights(bundle.generator):  # bell-shaped, as trained weights are (DCGAN init)
        nn.init.normal_(layer.weight, 0.0, 0.02)
    save_folder(quantize(bundle, KMeansQuant(bits=4)), tmp_path / "packed")
    save_folder(quantize(bundle, KMeansQuant(bits=4, entropy_coding="lzma")), tmp_path / "coded")
    assert weight_bytes(tmp_path / "coded") < weight_bytes(tmp_path / "packed")


def test_quantized_weights_lie_on_their_grid(tiny_gan: ModelBundle) -> None:
    q = quantize(tiny_gan, KMeansQuant(bits=2))
    assert all(codebook_of(layer.weight, 2) is not None for _, layer, _ in quantizable_weights(q.generator))
    q8 = quantize(tiny_gan, LinearQuant(bits=8, per_channel=True))
    w = q8.generator.net[0].weight  # ConvTranspose2d (in, out, k, k): per-channel scales along dim 1
    scale = torch.tensor(q8.encodings["generator.net.0.weight"].params["scale"])
    assert scale.shape == (w.shape[1],)
    codes = w / scale.view(1, -1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-3)


def test_quantize_a_plain_module_returns_a_quantized_copy() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(5, 2))
    q = quantize(m, KMeansQuant(bits=1))
    assert isinstance(q, nn.Sequential) and q is not m
    assert torch.unique(q[0].weight).numel() <= 2 and torch.unique(m[0].weight).numel() > 2


def test_more_bits_means_closer_outputs(tiny_gan: ModelBundle) -> None:
    z = torch.randn(32, 8)
    with torch.no_grad():
        ref = tiny_gan.generator(z)
        err = {b: (quantize(tiny_gan, LinearQuant(bits=b)).generator(z) - ref).pow(2).mean() for b in (2, 4, 8)}
    assert err[8] < err[4] < err[2]
    assert err[8] < 1e-4


def test_activation_quant_records_calibration_and_rejects_empty(tiny_gan: ModelBundle) -> None:
    q = quantize(tiny_gan, ActivationQuant(observer="percentile", calibration=32))
    assert q.meta["activation_quant"] == {"bits": 8, "observer": "percentile", "calibration": 32, "percentile": 99.5,
                                         "float_output_layer": True, "calibration_seed": 1234,
                                         "per_channel": True, "symmetric": True}
    assert q.encodings["generator.net.0.weight"].params["bits"] == 8
    with pytest.raises(ConfigError, match="calibration set is empty"):
        quantize(tiny_gan, ActivationQuant(), calibration=torch.empty(0, 8))


def test_unknown_config_and_missing_part_errors(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="no quantizer for str"):
        quantize(tiny_gan, "int8")
    with pytest.raises(ConfigError, match="cannot quantize part\\(s\\) \\['encoder'\\]"):
        quantize(tiny_gan, LinearQuant(parts=("encoder",)))


def test_rewrite_matches_the_generator_and_removes_conv_transpose(tiny_gan: ModelBundle) -> None:
    g = tiny_gan.generator
    z = torch.randn(8, 8)
    rewritten = rewrite_conv_transpose(g, z[:1])
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    assert isinstance(rewritten.net[0][1], nn.Linear)  # the 1x1-input first layer became a matmul
    with torch.no_grad():
        torch.testing.assert_close(rewritten(z), g(z), atol=1e-6, rtol=0)
        folded = fold_batchnorm(rewritten)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(z), g(z), atol=1e-5, rtol=0)
        ready = prepare_for_int8(g, z[:1])  # + a clamp at +-8 before the Tanh (tanh(8) = 1 - 2.3e-7)
        assert any(isinstance(m, nn.Hardtanh) and m.max_val == 8.0 for m in ready.modules())
        torch.testing.assert_close(ready(z), g(z), atol=1e-5, rtol=0)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in g.modules()), "the input model is left unchanged"


@pytest.mark.parametrize(("k", "s", "p", "op"), [(4, 2, 1, 0), (2, 2, 0, 0), (3, 1, 1, 0), (3, 2, 1, 1), (6, 3, 0, 0),
                                                 (5, 1, 2, 0), (4, 2, 3, 0), (1, 1, 0, 0)])
@pytest.mark.parametrize("per_phase", [True, False])
def test_rewrite_is_exact_for_other_kernel_stride_padding(k: int, s: int, p: int, op: int, per_phase: bool) -> None:
    torch.manual_seed(k * 10 + s)
    layer = nn.ConvTranspose2d(3, 5, k, s, p, op)
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(rewrite_conv_transpose(layer, x, per_phase=per_phase)(x), layer(x), atol=1e-5, rtol=0)


def test_per_phase_kernels_avoid_zero_taps() -> None:
    layer = nn.ConvTranspose2d(8, 4, 4, 2, 1)
    x = torch.randn(1, 8, 7, 7)
    split = rewrite_conv_transpose(layer, x).core
    fused = rewrite_conv_transpose(layer, x, per_phase=False).core
    assert split.kernel_size == (2, 2) and fused.kernel_size == (3, 3)  # 16 vs 36 MACs per output, ConvT needs 16
    assert split.weight.numel() == layer.weight.numel() and int((split.weight == 0).sum()) == 0


@pytest.mark.parametrize(("layer", "message"), [
    (nn.ConvTranspose2d(4, 4, 3, 2, 1), "output size is not a multiple of the stride"),
    (nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2), "grouped or dilated"),
    (nn.ConvTranspose2d(4, 4, (4, 3), 2, 1), "non-square kernel"),
])
def test_a_layer_with_no_exact_rewrite_stays_a_conv_transpose_with_a_warning(layer: nn.Module, message: str) -> None:
    """Not the whole int8 export refused (CycleGAN's ConvTranspose2d(k=3, s=2, p=1) was): the layer stays as it is
    (ONNX Runtime runs it dequantized) and the warning says which and why."""
    x = torch.randn(1, 4, 5, 5)
    with pytest.warns(UserWarning, match=f"kept as ConvTranspose2d.*{message}"):
        out = rewrite_conv_transpose(layer, x)
    assert isinstance(out, nn.ConvTranspose2d)
    with torch.no_grad():
        torch.testing.assert_close(out(x), layer(x))


class _OutputSized(nn.Module):
    """A ConvTranspose2d(k=4, s=2, p=1) the rewrite handles, then a ConvTranspose2d(k=3, s=2, p=1) called with
    ``output_size``: the call, not the module, fixes its size (12 x 12, not 11 x 11)."""

    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(4, 6, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(6, 2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up1(x))
        return self.up2(h, output_size=(2 * h.shape[-2], 2 * h.shape[-1]))


def test_a_conv_transpose_called_with_output_size_is_kept_and_the_rest_rewritten() -> None:
    torch.manual_seed(0)
    model, x = _OutputSized().eval(), torch.randn(2, 4, 3, 3)
    with pytest.warns(UserWarning, match=r"up2 \(called with output_size\)"):
        ready = prepare_for_int8(model, x)
    assert isinstance(ready.up1, Rewritten) and isinstance(ready.up2, nn.ConvTranspose2d)
    with torch.no_grad():
        torch.testing.assert_close(ready(x), model(x), atol=1e-5, rtol=0)


def test_qat_trains_through_fake_quant_and_stores_int4(tiny_gan: ModelBundle, tiny_images: object, tmp_path: Path) -> None:
    config = QuantAwareTraining(weights=LinearQuant(bits=4), epochs=1, steps_per_epoch=2, batch_size=8, lr=1e-3)
    q = quantize(tiny_gan, config, data=tiny_images)
    ptq = quantize(tiny_gan, LinearQuant(bits=4))
    layers = [layer for _, layer, _ in quantizable_weights(q.generator)]
    assert not any(parametrize.is_parametrized(layer) for layer in layers)
    assert not torch.equal(layers[0].weight, ptq.generator.net[0].weight), "fine-tuning changed the weights"
    assert q.steps[-1]["method"] == "QuantAwareTraining" and q.steps[-1]["weights"]["bits"] == 4
    save_folder(q, tmp_path)  # the linear codec refuses weights off their int4 grid, so this proves they are on it
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(load_folder(tmp_path).generator(z), q.generator(z))


def test_qat_trains_mixed_precision_at_each_layers_width(tiny_gan: ModelBundle, tiny_images: object,
                                                        tmp_path: Path) -> None:
    config = QuantAwareTraining(weights=LinearQuant(bits=8, layer_bits={"net.0": 3}), epochs=1, steps_per_epoch=2,
                                batch_size=8, lr=1e-3)
    q = quantize(tiny_gan, config, data=tiny_images)
    assert max(_levels(q.generator.net[0].weight)) <= 7  # int3 symmetric: 7 levels per output channel
    assert max(_levels(q.generator.net[3].weight)) > 7
    save_folder(q, tmp_path)  # refused if a weight left its grid
    assert load_folder(tmp_path).encodings["generator.net.0.weight"].params["bits"] == 3


def test_qat_kmeans_trains_the_shared_centroids(tiny_gan: ModelBundle, tiny_images: object) -> None:
    config = QuantAwareTraining(weights=KMeansQuant(bits=2, finetune_centroids=True), epochs=1, steps_per_epoch=2,
                                batch_size=8, lr=1e-2)
    q = quantize(tiny_gan, config, data=tiny_images)
    ptq = quantize(tiny_gan, KMeansQuant(bits=2))
    w, w0 = q.generator.net[3].weight, ptq.generator.net[3].weight
    assert codebook_of(w, 2) is not None
    assert not torch.equal(torch.unique(w), torch.unique(w0)), "the centroids moved"


def test_qat_needs_data(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="needs real images"):
        quantize(tiny_gan, QuantAwareTraining())


def test_int8_weights_cover_hand_written_linears_and_reload(tmp_path: Path) -> None:
    """A user's hand-written linear (rosinality's EqualLinear, weight (out, in) or (in, out)) was left float by
    int8 weight quantization (only torch layers and conv-shaped own weights were covered): now each row on its own
    int8 grid, stored packed, loaded back the same."""
    from slimgen.models.inputs import InputSpec
    from tests.archnets import OwnLayersG

    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("gan", {"generator": OwnLayersG().eval()}, {"generator": {}},
                                      inputs=InputSpec(latent_shape=(16,)), image_shape=(1, 8, 8))
    bundle.specs["generator"].arch = "tests.archnets:OwnLayersG"
    names = [n for n, _, _ in quantizable_weights(bundle.generator)]
    assert {"mapping.0.weight", "mapping.1.weight", "up.weight", "conv.weight", "out.weight"} == set(names)
    q = quantize(bundle, LinearQuant(bits=8))
    w = q.generator.mapping[0].weight
    assert all(w[r].unique().numel() <= 255 for r in range(w.shape[0])) and "generator.mapping.1.weight" in q.encodings
    back = load_folder(save_folder(q, tmp_path / "q"), trust_code=("tests.archnets:*",))
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.generator(z), q.generator(z))
    save_folder(bundle, tmp_path / "f")
    assert stored_bytes(tmp_path / "q" / "model.safetensors") < 0.5 * stored_bytes(tmp_path / "f" / "model.safetensors")
