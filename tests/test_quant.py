"""Quantization maths and packed storage: error bounds, packing round trips, codecs, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.quantize import (
    ActivationQuant,
    KMeansQuant,
    LinearQuant,
    NaiveQuant,
    QuantAwareTraining,
    naive_quantize,
    quantize_linear,
)
from slimgen.quantize.codecs import pack_uint, unpack_uint
from slimgen.quantize.configs import parse_weights
from slimgen.quantize.kmeans import _kmeans_codebook
from slimgen.quantize.linear import _channels_first, clipping_range, qrange
from slimgen.storage import Encoding, decode_tensor, encode_tensor

FAST = settings(max_examples=40, deadline=None)


@st.composite
def weights(draw: st.DrawFn) -> torch.Tensor:
    """Random float tensors of 1-4 dims (odd sizes included), varied scales, sometimes with outliers."""
    shape = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.sampled_from([1e-3, 0.05, 1.0, 30.0]))
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude
    if draw(st.booleans()):
        w.view(-1)[0] = magnitude * 10  # an outlier
    return w


@FAST
@given(w=weights(), bits=st.sampled_from([8, 6, 5, 4, 3, 2]), symmetric=st.booleans(), per_channel=st.booleans(),
       method=st.sampled_from(["minmax", "percentile", "mse"]))
def test_linear_error_at_most_half_a_step_inside_the_clipping_range(w: torch.Tensor, bits: int, symmetric: bool,
                                                                     per_channel: bool, method: str) -> None:
    qt = quantize_linear(w, bits, symmetric, per_channel, method, axis=0)
    lo_q, hi_q = qrange(bits, symmetric)
    assert qt.q.min() >= lo_q and qt.q.max() <= hi_q
    ax = qt.axis
    lo, hi = clipping_range(w, bits, symmetric, ax, method)
    rows = _channels_first(w, ax)
    err = (_channels_first(qt.dequantize(), ax) - rows).abs()
    step = qt.scale.reshape(-1, 1).expand_as(rows) if ax is not None else qt.scale.expand_as(rows)
    if symmetric:  # the grid covers [-max(|lo|, |hi|), max(|lo|, |hi|)]
        amax = torch.maximum(lo.abs(), hi.abs()).reshape(-1, 1)
        inside = rows.abs() <= amax
    else:
        inside = (rows >= torch.clamp(lo, max=0).reshape(-1, 1)) & (rows <= torch.clamp(hi, min=0).reshape(-1, 1))
    assert bool((err[inside] <= step[inside] / 2 * (1 + 1e-5) + 1e-12).all())


@FAST
@given(w=weights(), bits=st.sampled_from([8, 7, 5, 4, 2]))
def test_minmax_covers_every_element(w: torch.Tensor, bits: int) -> None:
    qt = quantize_linear(w, bits, True, True, "minmax")
    step = qt.scale.reshape(-1, *[1] * (w.ndim - 1))
    assert bool(((qt.dequantize() - w).abs() <= step / 2 * (1 + 1e-5) + 1e-12).all())


def test_per_channel_beats_per_tensor_on_channels_of_different_scale() -> None:
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 0, 8)[:, None]
    per_t = (quantize_linear(w, 4, True, False).dequantize() - w)[0].pow(2).mean()  # the smallest channel
    per_c = (quantize_linear(w, 4, True, True).dequantize() - w)[0].pow(2).mean()
    assert per_c < per_t / 100


def test_mse_scale_not_worse_than_minmax_with_outliers() -> None:
    w = torch.randn(4, 256)
    w[:, 0] = 20.0
    err = {m: (quantize_linear(w, 4, True, True, m).dequantize() - w).pow(2).mean() for m in ("minmax", "mse")}
    assert err["mse"] < err["minmax"]


def test_symmetric_grid_keeps_zero_exact_and_conv_transpose_axis() -> None:
    w = torch.randn(3, 5, 2, 2)
    w[:, 2] = 0
    qt = quantize_linear(w, 4, True, True, axis=1)
    assert qt.scale.shape == (5,) and torch.equal(qt.dequantize()[:, 2], torch.zeros(3, 2, 2))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 17, 1001])
def test_pack_round_trip_every_width_and_odd_sizes(bits: int, n: int) -> None:
    codes = torch.randint(0, 2**bits, (n,), generator=torch.Generator().manual_seed(n * bits))
    packed = pack_uint(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n * bits / 8)
    assert torch.equal(unpack_uint(packed, bits, n), codes)


def test_four_bit_codes_share_a_byte_low_nibble_first() -> None:
    assert pack_uint(torch.tensor([1, 2, 15]), 4).tolist() == [0x21, 0x0F]


def _linear_encoding(w: torch.Tensor, bits: int, symmetric: bool, per_channel: bool) -> tuple[torch.Tensor, Encoding]:
    qt = quantize_linear(w, bits, symmetric, per_channel, axis=0)
    enc = Encoding("linear", {"bits": bits, "symmetric": symmetric, "axis": qt.axis, "scale": qt.scale.reshape(-1).tolist(),
                              "zero_point": qt.zero_point.reshape(-1).tolist()})
    return qt.dequantize(), enc


@pytest.mark.parametrize("bits", [8, 6, 5, 4, 3, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_codec_round_trip_is_exact_and_packed(bits: int, symmetric: bool, per_channel: bool) -> None:
    w = torch.randn(5, 3, 3, 3)  # 135 elements: odd
    deq, enc = _linear_encoding(w, bits, symmetric, per_channel)
    stored, meta = encode_tensor("t", deq, enc)
    assert stored["t.__q"].dtype == torch.uint8 and stored["t.__q"].numel() == math.ceil(135 * bits / 8)
    assert torch.equal(decode_tensor("t", stored, meta), deq)


def test_linear_codec_refuses_a_tensor_off_its_grid() -> None:
    deq, enc = _linear_encoding(torch.randn(4, 4), 4, True, True)
    with pytest.raises(ModelFolderError, match="off its quantization grid"):
        encode_tensor("t", deq + 0.013, enc)


@pytest.mark.parametrize("init", ["linear", "density"])
def test_kmeans_codebook_has_2b_centroids_and_beats_uniform_grid(init: str) -> None:
    w = torch.cat([torch.randn(2000) * 0.1, torch.randn(50) * 2])  # heavy tails
    codebook, idx = _kmeans_codebook(w, 4, init)
    assert codebook.shape == (16,) and idx.shape == w.shape and int(idx.max()) < 16
    kmeans_err = (codebook[idx] - w).pow(2).mean()
    uniform_err = (quantize_linear(w, 4, False, False).dequantize() - w).pow(2).mean()
    assert kmeans_err < uniform_err


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("entropy", ["none", "lzma", "zlib"])
def test_codebook_codec_round_trip(bits: int, entropy: str) -> None:
    w = torch.randn(7, 3, 5) * 0.2
    codebook, idx = _kmeans_codebook(w, bits)
    deq = codebook[idx]
    stored, meta = encode_tensor("t", deq, Encoding("codebook", {"bits": bits, "entropy": entropy}))
    assert torch.equal(decode_tensor("t", stored, meta), deq)
    assert meta["packed_bytes"] == math.ceil(105 * bits / 8)
    if entropy == "none":
        assert stored["t.__indices"].numel() == meta["packed_bytes"]


def test_entropy_coding_shrinks_skewed_indices() -> None:
    codebook = torch.linspace(-1, 1, 16)
    idx = torch.where(torch.rand(20000, generator=torch.Generator().manual_seed(0)) < 0.9, 7, torch.arange(20000) % 16)
    deq = codebook[idx]
    _, plain = encode_tensor("t", deq, Encoding("codebook", {"bits": 4, "entropy": "none"}))
    stored, coded = encode_tensor("t", deq, Encoding("codebook", {"bits": 4, "entropy": "lzma"}))
    assert coded["stored_index_bytes"] < plain["stored_index_bytes"] / 2
    assert torch.equal(decode_tensor("t", stored, coded), deq)


def test_codebook_codec_refuses_too_many_values() -> None:
    with pytest.raises(ModelFolderError, match="more than 2\\^2 distinct values"):
        encode_tensor("t", torch.randn(100), Encoding("codebook", {"bits": 2}))


def test_naive_formula_is_the_tutorial_one() -> None:
    w = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    delta = 2.0 / 2**2
    assert torch.allclose(naive_quantize(w, 2), torch.round(w / delta) * delta - 1.0)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: LinearQuant(bits=1), "LinearQuant bits must be one of \\[8, 7, 6, 5, 4, 3, 2\\], got 1"),
    (lambda: LinearQuant(bits=16), "LinearQuant bits must be one of \\[8, 7, 6, 5, 4, 3, 2\\], got 16"),
    (lambda: LinearQuant(scale="max"), "LinearQuant scale must be one of"),
    (lambda: KMeansQuant(bits=9), "KMeansQuant bits must be an integer in 1..8, got 9"),
    (lambda: KMeansQuant(init="random"), "KMeansQuant init must be one of"),
    (lambda: NaiveQuant(bits=5), "NaiveQuant bits must be one of"),
    (lambda: ActivationQuant(bits=4), "ActivationQuant bits must be 8"),
    (lambda: ActivationQuant(calibration=0), "ActivationQuant calibration must be a positive number of latents, got 0"),
    (lambda: ActivationQuant(observer="kl"), "ActivationQuant observer must be one of"),
    (lambda: QuantAwareTraining(epochs=0), "QuantAwareTraining epochs must be a positive integer, got 0"),
    (lambda: parse_weights("int9"), "LinearQuant bits must be one of"),
    (lambda: parse_weights("int1"), "LinearQuant bits must be one of"),
    (lambda: LinearQuant(layer_bits={"net.0": 9}), r"layer_bits\['net.0'\] must be one of"),
    (lambda: LinearQuant(layer_bits={"net.0": True}), r"layer_bits\['net.0'\] must be one of"),
    (lambda: LinearQuant(layer_bits=["net.0"]), "layer_bits must map layer names to bits"),
    (lambda: parse_weights("fp8"), "unknown weight scheme 'fp8'"),
])
def test_invalid_configs_raise_clear_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_parse_weights_builds_the_dataclass() -> None:
    assert parse_weights("int4", per_channel=False) == LinearQuant(bits=4, per_channel=False)
    assert parse_weights("kmeans2", entropy_coding="lzma") == KMeansQuant(bits=2, entropy_coding="lzma")
    assert parse_weights("naive8") == NaiveQuant(bits=8)


@pytest.mark.parametrize("entropy", ["lzma", "zlib"])
def test_linear_codec_entropy_coding_is_lossless_and_shrinks_bell_shaped_weights(entropy: str) -> None:
    torch.manual_seed(0)
    deq, enc = _linear_encoding(torch.randn(64, 32, 3, 3) * 0.05, 8, True, True)  # codes far from uniform
    plain, plain_meta = encode_tensor("t", deq, enc)
    coded, meta = encode_tensor("t", deq, Encoding("linear", {**enc.params, "entropy": entropy}))
    assert meta["layout"] != "plain" and coded["t.__q"].numel() < 0.97 * plain["t.__q"].numel()
    assert torch.equal(decode_tensor("t", coded, meta), deq)
    assert torch.equal(decode_tensor("t", plain, plain_meta), deq)


def test_linear_quant_entropy_coding_is_validated_and_parsed() -> None:
    with pytest.raises(ConfigError, match="entropy_coding"):
        LinearQuant(entropy_coding="huffman")
    assert parse_weights("int8", entropy_coding="lzma") == LinearQuant(bits=8, entropy_coding="lzma")
