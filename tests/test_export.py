"""Export: ONNX fp32 and int8 (QDQ, real QLinearConv) and TorchScript files that run without
slimgen and match the model folder on the same latents; the CLI commands."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.cost import stored_bytes
from slimgen.export import OnnxGenerator, export_onnx, export_torchscript
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.quantize import ActivationQuant, LinearQuant, quantize
from slimgen.runtime.engines import available, onnx_engine

INT8_PSNR_DB = 30.0  # int8 W+A vs fp32 outputs in [-1, 1] (peak-to-peak 2); the shipped teacher gets 36.9 dB (quantize.md)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


@pytest.fixture
def folder(tiny_gan: ModelBundle, tmp_path: Path) -> Path:
    return save_folder(tiny_gan, tmp_path / "model")


def _reference(folder: Path, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_folder(folder).generator(z)


def test_fp32_onnx_matches_the_folder_at_any_batch(folder: Path) -> None:
    path = export_onnx(load_folder(folder))
    assert path == folder / "model.onnx"
    model = onnx.load(str(path))
    assert model.ir_version <= 13 and not any(t.data_location == 1 for t in model.graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        z = torch.randn(batch, 8)
        out = session.run(None, {"z": z.numpy()})[0]
        np.testing.assert_allclose(out, _reference(folder, z).numpy(), atol=1e-5)


def test_int8_onnx_runs_integer_kernels_and_stays_close(folder: Path, tmp_path: Path) -> None:
    path = export_onnx(load_folder(folder), tmp_path / "int8.onnx", int8=True, calibration=torch.randn(64, 8),
                       float_output_layer=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "ConvTranspose" not in ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in optimized and "Conv" not in optimized  # ONNX Runtime runs integer convolutions
    z = torch.randn(200, 8)
    out = torch.from_numpy(session.run(None, {"z": z.numpy()})[0])
    assert psnr(out, _reference(folder, z)) > INT8_PSNR_DB


@pytest.mark.parametrize("saturates", [True, False])
def test_int8_weights_keep_to_7_bits_on_a_cpu_whose_int8_kernels_saturate(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturates: bool) -> None:
    """On an x86 CPU without VNNI, ONNX Runtime's u8s8 kernels add two uint8 x int8 products in 16 bits and
    saturate on full-range weights: there the export keeps weights in [-64, 63] (reduce_range) and says so in
    the file's metadata; elsewhere they use the full int8 range."""
    from onnx import numpy_helper

    from slimgen.export import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "int8_saturates", lambda: saturates)
    path = export_onnx(load_folder(folder), tmp_path / "int8.onnx", int8=True, calibration=torch.randn(64, 8))
    model = onnx.load(str(path))
    assert {p.key: p.value for p in model.metadata_props}["slimgen_int8_weight_bits"] == ("7" if saturates else "8")
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights
    widest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert widest <= 64 if saturates else widest == 127  # symmetric per-channel: each channel's largest weight maps to the edge
    z = torch.randn(200, 8)
    out = torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"z": z.numpy()})[0])
    assert psnr(out, _reference(folder, z)) > INT8_PSNR_DB
    monkeypatch.setattr(onnx_export, "int8_saturates", lambda: True)  # the file run where int8 kernels saturate
    spec = load_folder(folder).inputs
    engines = [rt for rt in ("onnxruntime", "openvino") if available(rt)]
    runs = [lambda: OnnxGenerator(path)] + [lambda rt=rt: onnx_engine(path, spec, runtime=rt) for rt in engines]
    for run_file in runs:  # the file loaded directly, and as an engine of each runtime (OpenVINO's kernels saturate too)
        if saturates:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # 7-bit weights: nothing to say
                run_file()
        else:
            with pytest.warns(UserWarning, match="full-range int8 weights, and this CPU has no VNNI"):
                run_file()


def test_int8_onnx_shuffles_move_uint8_values_in_onnx_runtime(folder: Path, tmp_path: Path) -> None:
    """Each DepthToSpace sits between Q/DQ (quantized like Reshape), so ONNX Runtime's optimized graph feeds it
    uint8 values (a QLinearConv's output, through ORT's layout Transpose), never a DequantizeLinear's float
    output, and the activations are fused into the integer convolutions; the quantizer's registry is restored."""
    from onnxruntime.quantization.registry import QDQRegistry

    path = export_onnx(load_folder(folder), tmp_path / "int8.onnx", int8=True, calibration=torch.randn(64, 8))
    assert "DepthToSpace" not in QDQRegistry
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(tmp_path / "optimized.onnx")).graph.node
    producer = {out: n.op_type for n in nodes for out in n.output}
    shuffles = [n for n in nodes if n.op_type == "DepthToSpace"]
    assert shuffles and all(producer[n.input[0]] in ("QLinearConv", "Transpose") for n in shuffles)
    assert "Relu" not in {n.op_type for n in nodes}  # fused into the integer convolutions


def test_int8_export_keeps_only_the_image_output_layer_float_by_default(folder: Path, tmp_path: Path) -> None:
    path = export_onnx(load_folder(folder), tmp_path / "int8.onnx", int8=True, calibration=torch.randn(64, 8))
    graph = onnx.load(str(path)).graph
    made_by = {out: n for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    # int8 weights reach a layer through DequantizeLinear; the float output layer reads its fp32 initializer directly
    dequantized = [n.input[1] in made_by and made_by[n.input[1]].op_type == "DequantizeLinear" for n in convs]
    assert len(convs) >= 2 and dequantized == [True] * (len(convs) - 1) + [False]
    # the fp32 output layer is not rewritten: ONNX Runtime's float ConvTranspose beats Conv + DepthToSpace
    assert [n.op_type for n in convs][-1] == "ConvTranspose" and "ConvTranspose" not in [n.op_type for n in convs[:-1]]
    assert [n.op_type for n in graph.node].count("DepthToSpace") == 1  # only the int8 middle layer's pixel shuffle
    z = torch.randn(50, 8)
    assert psnr(OnnxGenerator(path)(z), _reference(folder, z)) > INT8_PSNR_DB


def test_int8_export_of_an_activation_quantized_model_matches_it(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    q = quantize(tiny_gan, ActivationQuant(observer="percentile", calibration=64))
    save_folder(q, tmp_path / "q")
    path = export_onnx(load_folder(tmp_path / "q"), int8=True)  # recorded observer and calibration size
    z = torch.randn(100, 8)
    with torch.no_grad():
        assert psnr(OnnxGenerator(path)(z), q.generator(z)) > INT8_PSNR_DB


def test_int8_export_rejects_an_empty_calibration_set(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calibration set is empty"):
        export_onnx(load_folder(folder), tmp_path / "x.onnx", int8=True, calibration=torch.empty(0, 8))


def test_torchscript_matches_the_folder(folder: Path) -> None:
    path = export_torchscript(load_folder(folder))
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(z), _reference(folder, z), atol=1e-6, rtol=0)


def test_exported_files_run_without_slimgen(folder: Path, tmp_path: Path) -> None:
    q = quantize(load_folder(folder), LinearQuant(bits=4))
    export_onnx(q, tmp_path / "g.onnx", dequantize=True)  # float32 copies of the 4-bit weights, asked for
    export_torchscript(q, tmp_path / "g.pt", dequantize=True)
    z = torch.randn(2, 8)
    np.save(tmp_path / "z.npy", z.numpy())
    code = (
        "import sys, numpy as np, onnxruntime as ort, torch\n"
        f"z = np.load({str(tmp_path / 'z.npy')!r})\n"
        f"a = ort.InferenceSession({str(tmp_path / 'g.onnx')!r}).run(None, {{'z': z}})[0]\n"
        f"b = torch.jit.load({str(tmp_path / 'g.pt')!r})(torch.from_numpy(z)).detach().numpy()\n"
        "assert not any(m.startswith('slimgen') for m in sys.modules)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, np.stack([a, b]))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)
    out = np.load(tmp_path / "out.npy")
    with torch.no_grad():
        ref = q.generator(z).numpy()
    np.testing.assert_allclose(out[0], ref, atol=1e-5)
    np.testing.assert_allclose(out[1], ref, atol=1e-5)


def test_export_without_a_folder_needs_a_path(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ModelFolderError, match="pass the output path"):
        export_onnx(tiny_gan)


def test_cli_quantize_then_export_int8(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "q"
    result = runner.invoke(app, ["quantize", str(folder), "--weights", "int8", "--activations", "int8",
                                 "--calibration", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_folder(out).meta["activation_quant"]["calibration"] == 32
    result = runner.invoke(app, ["export", str(out), "--format", "onnx", "--int8", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").is_file()
    result = runner.invoke(app, ["export", str(out), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code != 0  # no flag was given: the error is what TorchScript cannot hold, not about flags
    said = f"{result.output} {result.exception}"
    assert "TorchScript cannot hold" in said and "--int8, --bf16" not in said, said
    result = runner.invoke(app, ["quantize", str(folder), "--weights", "kmeans2", "--entropy", "lzma", "--out",
                                 str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert load_folder(tmp_path / "k").encodings["generator.net.0.weight"].codec == "codebook"


def test_cli_mixed_precision_distil_then_quantize(folder: Path, tmp_path: Path) -> None:
    """``distill --fake-quant int8 --layer-bits net.0=3`` then ``quantize`` the same way: the distilled
    student is already on the grid, so quantizing it changes no output; stored smaller than all-int8."""
    runner = CliRunner()
    d, q, q8 = tmp_path / "d", tmp_path / "q", tmp_path / "q8"
    result = runner.invoke(app, ["distill", str(folder), "--width", "0.5", "--epochs", "1", "--steps-per-epoch", "2",
                                 "--batch-size", "8", "--no-select", "--adversarial", "0", "--fake-quant", "int8",
                                 "--layer-bits", "net.0=3", "--device", "cpu", "--out", str(d)])
    assert result.exit_code == 0, result.output
    for out, extra in ((q, ["--layer-bits", "net.0=3"]), (q8, [])):
        result = runner.invoke(app, ["quantize", str(d), "--weights", "int8", *extra, "--activations", "none",
                                     "--entropy", "lzma", "--out", str(out)])
        assert result.exit_code == 0, result.output
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(load_folder(q).generator(z), load_folder(d).generator(z))
    assert load_folder(q).encodings["generator.net.0.weight"].params["bits"] == 3
    assert stored_bytes(q / "model.safetensors", prefix="generator.") < stored_bytes(q8 / "model.safetensors",
                                                                                     prefix="generator.")


def test_cli_qat_takes_its_teacher_weight(folder: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "data.npy", (torch.rand(32, 1, 28, 28) * 2 - 1).numpy())
    result = CliRunner().invoke(app, ["quantize", str(folder), "--weights", "int4", "--qat-epochs", "1", "--qat-steps",
                                      "2", "--qat-batch-size", "8", "--qat-teacher-weight", "25", "--dataset",
                                      str(tmp_path / "data.npy"), "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    step = load_folder(tmp_path / "q").steps[-1]
    assert step["method"] == "QuantAwareTraining" and step["teacher_weight"] == 25.0


@pytest.mark.parametrize(("args", "message"), [
    (["quantize", "{m}", "--weights", "int9", "--out", "{o}"], "LinearQuant bits must be one of [8, 7, 6, 5, 4, 3, 2], got 9"),
    (["quantize", "{m}", "--layer-bits", "net.0=5", "--activations", "int8", "--out", "{o}"],
     "int8 activations need int8 linear weights (the int8 graph re-quantizes every weight to int8), got LinearQuant "
     "with layers below 8 bits (net.0: 5)"),
    (["quantize", "{m}", "--layer-bits", "net.7=5", "--out", "{o}"], "layer_bits names no Conv/ConvTranspose/Linear layer"),
    (["quantize", "{m}", "--weights", "kmeans4", "--layer-bits", "net.0=5", "--out", "{o}"],
     "--layer-bits applies to int* weights"),
    (["quantize", "{m}", "--weights", "int4", "--activations", "int8", "--out", "{o}"], "int8 activations need int8 linear weights"),
    (["export", "{m}", "--int8", "--calibration", "0", "--out", "{o}"], "calibration set is empty"),
])
def test_cli_errors_are_one_line(folder: Path, tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(m=folder, o=tmp_path / "o") for a in args]
    result = subprocess.run([sys.executable, "-m", "slimgen", *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_int8_export_keeps_onnx_runtimes_per_tensor_fallback_notes_off_the_terminal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ONNX Runtime logs on the root logger each 1-D weight it cannot quantize per channel (a GroupNorm's scale:
    "Axis 1 is out-of-range"); that is about its graph, not the user's model, so the export keeps it quiet."""
    import logging

    from torch import nn

    from slimgen.models import InputSpec

    class GroupNormG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 16 * 4 * 4)
            self.body = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16),
                                      nn.SiLU(), nn.Conv2d(16, 1, 1), nn.Tanh())

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.body(self.fc(z).view(-1, 16, 4, 4))

    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("gan", {"generator": GroupNormG().eval()}, {"generator": {}},
                                      inputs=InputSpec(latent_shape=(8,)), image_shape=(1, 8, 8))
    with caplog.at_level(logging.WARNING):
        export_onnx(bundle, tmp_path / "g.onnx", int8=True, calibration=torch.randn(32, 8))
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    assert logging.getLogger().level == logging.WARNING  # the root logger's level is back
