"""Power-of-two (fixed-point) scales: exact powers of two, error against float scales, folder
round trip with the exponents stored, the CLI flag, and the int8 QDQ export run by ONNX Runtime
and OpenVINO."""

from __future__ import annotations

import importlib.util
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from slimgen.cli import main
from slimgen.errors import ConfigError
from slimgen.export import export_onnx
from slimgen.export.fixedpoint import all_pow2, qdq_scales
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.quantize import ActivationQuant, KMeansQuant, LinearQuant, quantize, quantize_linear
from slimgen.quantize.apply import quantizable_weights
from slimgen.quantize.configs import parse_weights
from slimgen.quantize.linear import pow2_exponent, round_up_pow2


@st.composite
def weights(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.sampled_from([1e-3, 0.05, 1.0, 30.0]))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * magnitude


@settings(max_examples=40, deadline=None)
@given(w=weights(), bits=st.sampled_from([8, 4, 2]), symmetric=st.booleans(), per_channel=st.booleans())
def test_pow2_scales_are_exact_powers_of_two_and_cost_at_most_one_bit(w: torch.Tensor, bits: int, symmetric: bool,
                                                                      per_channel: bool) -> None:
    flt = quantize_linear(w, bits, symmetric, per_channel, axis=0)
    p2 = quantize_linear(w, bits, symmetric, per_channel, axis=0, scale_type="pow2")
    p = p2.exponent
    assert p is not None and p.dtype == torch.int32
    assert torch.equal(p2.scale, torch.ldexp(torch.ones(p.shape), -p))  # scale == 2^-p exactly
    assert torch.equal(p2.q.float(), torch.round(p2.q.float()))  # the codes are integers: q = round(w * 2^p)
    # the float scale rounded up: never finer, less than twice as coarse
    assert bool((p2.scale >= flt.scale).all()) and bool((p2.scale < 2 * flt.scale).all())
    # min/max range: no clipping on either grid, so the error is at most half a step of each
    err_p2 = (p2.dequantize() - w).abs()
    assert float(err_p2.max()) <= float(p2.scale.max()) / 2 * (1 + 1e-5) + 1e-12
    assert float(err_p2.max()) <= float(flt.scale.max()) * (1 + 1e-5) + 1e-12  # bounded by one float step


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_pow2_error_is_at_least_the_float_error_and_bounded(bits: int, per_channel: bool) -> None:
    for seed in range(5):
        w = torch.randn(32, 64, 3, 3, generator=torch.Generator().manual_seed(seed)) * 0.05
        flt = (quantize_linear(w, bits, True, per_channel).dequantize() - w).pow(2).mean()
        p2 = (quantize_linear(w, bits, True, per_channel, scale_type="pow2").dequantize() - w).pow(2).mean()
        assert flt <= p2 <= 4 * flt  # a step at most 2x the float one: squared error at most 4x


def test_round_up_pow2_and_exponent_of() -> None:
    s = torch.tensor([0.25, 0.3, 1.0, 3.0, 1e-6])
    assert round_up_pow2(s).tolist() == [0.25, 0.5, 1.0, 4.0, 2.0**-19]
    assert pow2_exponent(torch.tensor([0.25, 4.0])).tolist() == [2, -2]
    assert pow2_exponent(torch.tensor([0.25, 0.3])) is None


def test_pow2_mse_search_picks_a_pow2_scale() -> None:
    w = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    qt = quantize_linear(w, 4, True, True, "mse", scale_type="pow2")
    assert qt.exponent is not None


@pytest.mark.parametrize("per_channel", [True, False])
def test_folder_stores_the_exponents_and_round_trips(tiny_gan: ModelBundle, tmp_path: Path, per_channel: bool) -> None:
    q = quantize(tiny_gan, LinearQuant(bits=4, per_channel=per_channel, scale_type="pow2", entropy_coding="lzma"))
    save_folder(q, tmp_path)
    names = [f"generator.{n}" for n, _, _ in quantizable_weights(q.generator)]
    config = json.loads((tmp_path / "config.json").read_text())
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        for name in names:
            params = config["tensors"][name]["params"]
            assert params["scale_type"] == "pow2" and "scale" not in params
            exponent = f.get_tensor(f"{name}.__exponent")
            assert exponent.dtype == torch.int8 and exponent.tolist() == params["exponent"]
            assert f"{name}.__scale" not in keys
            assert len(params["exponent"]) == (q.generator.get_parameter(name.removeprefix("generator.")).shape[
                quantizable_weights(q.generator)[names.index(name)][2]] if per_channel else 1)
    loaded = load_folder(tmp_path)
    assert loaded.encodings == q.encodings
    for name, layer, axis in quantizable_weights(loaded.generator):
        w = layer.weight.detach()
        p = torch.tensor(q.encodings[f"generator.{name}"].params["exponent"])
        codes = w * torch.ldexp(torch.ones(p.shape), p).view([-1 if i == axis else 1 for i in range(w.ndim)] if
                                                               per_channel else [])
        assert torch.equal(codes, codes.round()) and float(codes.abs().max()) <= 7  # W_int = W * 2^p, int4
        assert torch.equal(w, q.generator.get_parameter(name).detach())
    save_folder(loaded, tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_scale_type_is_validated() -> None:
    with pytest.raises(ConfigError, match="scale_type must be one of"):
        LinearQuant(scale_type="pow3")
    with pytest.raises(ConfigError, match="scale_type must be one of"):
        ActivationQuant(scale_type="fixed")
    with pytest.raises(ConfigError, match="applies to linear weights"):
        parse_weights("kmeans4", scale_type="pow2")
    assert isinstance(parse_weights("kmeans4"), KMeansQuant)
    assert parse_weights("int4", scale_type="pow2") == LinearQuant(bits=4, scale_type="pow2")


def test_cli_quantize_with_pow2_scales(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    save_folder(tiny_gan, tmp_path / "model")
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf), pytest.raises(SystemExit) as exc:
        main(["quantize", str(tmp_path / "model"), "--out", str(tmp_path / "q"), "--weights", "int8",
              "--scale-type", "pow2", "--per-tensor"])
    assert exc.value.code == 0
    enc = load_folder(tmp_path / "q").encodings["generator.net.0.weight"]
    assert enc.params["scale_type"] == "pow2" and len(enc.params["exponent"]) == 1
    with redirect_stdout(buf), redirect_stderr(buf), pytest.raises(SystemExit) as exc:
        main(["quantize", str(tmp_path / "model"), "--out", str(tmp_path / "bad"), "--scale-type", "pow3"])
    assert exc.value.code == 2 and "scale_type must be one of" in buf.getvalue()


def _int8_export(bundle: ModelBundle, scale_type: str, path: Path) -> Path:
    q = quantize(bundle, ActivationQuant(calibration=64, scale_type=scale_type, float_output_layer=False))
    q = load_folder(save_folder(q, path.with_suffix("")))  # the folder records the scale type for export
    assert q.meta["activation_quant"].get("scale_type", "float") == scale_type
    return export_onnx(q, path, calibration=q.inputs.draw(64, seed=3))


def test_pow2_int8_onnx_has_only_pow2_scales_and_runs_integer_kernels(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    flt = _int8_export(tiny_gan, "float", tmp_path / "float.onnx")
    p2 = _int8_export(tiny_gan, "pow2", tmp_path / "pow2.onnx")
    scales = qdq_scales(p2)
    assert len(scales) >= 6 and all_pow2(scales) and not all_pow2(qdq_scales(flt))
    graph = onnx.load(str(p2)).graph
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    made_by = {out: n for n in graph.node for out in n.output}
    for node in graph.node:  # int32 biases on the product grid of their input's and weight's scales
        if node.op_type == "Conv" and len(node.input) > 2:
            x, w, b = (made_by[i] for i in node.input)
            np.testing.assert_array_equal(arrays[b.input[1]], arrays[x.input[1]] * arrays[w.input[1]])
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(p2), options, providers=["CPUExecutionProvider"])
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    z = tiny_gan.inputs.draw(128, seed=5).z
    with torch.no_grad():
        ref = tiny_gan.generator(z).numpy()
    out_p2 = session.run(None, {"z": z.numpy()})[0]
    out_flt = ort.InferenceSession(str(flt), providers=["CPUExecutionProvider"]).run(None, {"z": z.numpy()})[0]
    mse_p2, mse_flt = float(((out_p2 - ref) ** 2).mean()), float(((out_flt - ref) ** 2).mean())
    assert 10 * np.log10(4 / mse_p2) > 25.0  # still an int8 copy of the generator, in dB for [-1, 1]
    assert mse_p2 < 10 * mse_flt + 1e-6


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_pow2_int8_openvino_export_runs(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    import openvino as ov

    from slimgen.export.openvino import export_openvino

    q = quantize(tiny_gan, ActivationQuant(calibration=64, scale_type="pow2"))
    xml = export_openvino(q, tmp_path / "g.xml")
    z = tiny_gan.inputs.draw(16, seed=5).z
    out = ov.Core().compile_model(str(xml), "CPU")(z.numpy())[0]
    with torch.no_grad():
        ref = tiny_gan.generator(z).numpy()
    assert out.shape == ref.shape and 10 * np.log10(4 / float(((out - ref) ** 2).mean())) > 25.0


def test_recipe_field_scale_type() -> None:
    from slimgen.pipeline import parse_recipe

    recipe = parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: {method: linear, bits: 8, "
                          "scale_type: pow2}, activations: {scale_type: pow2}}\n", source="pow2.yaml")
    step = recipe.steps[0].config
    assert step.weights == LinearQuant(bits=8, scale_type="pow2") and step.activations.scale_type == "pow2"
    with pytest.raises(ConfigError, match="scale_type must be one of"):
        parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: {method: linear, scale_type: "
                     "fixed}}\n", source="bad.yaml")
