"""Runtimes: every (runtime, precision) matches the PyTorch model within a stated tolerance, bench's
JSON, the fallback when a runtime is missing, an int8-activation folder run as int8, exports of
quantized folders that are never silently float, and report latencies from one interleaved run."""

from __future__ import annotations

import builtins
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimgen.data.dataset import to_uint8
from slimgen.errors import ConfigError
from slimgen.export import OnnxGenerator, export_onnx, export_openvino
from slimgen.models import InputSpec, ModelBundle, load_folder, save_folder, set_inputs
from slimgen.quantize import ActivationQuant, LinearQuant, quantize
from slimgen.runtime import COMBOS, available, build_engine, default_choice
from slimgen.runtime.bench import bench, interleaved_latency, psnr
from slimgen.runtime.engines import COMPILED, STREAMS, compile_unavailable
from slimgen.runtime.hardware import rates_from_flags
from slimgen.sample import sample_to_file
from slimgen.train.loop import native_bf16

# Tolerances, outputs in [-1, 1]: fp32 runtimes agree to float summation order; bf16 keeps 8 mantissa
# bits (the zoo teacher: 54.5 dB); int8 weights and activations of a random tiny model: > 25 dB (the zoo
# teacher: 27 dB with its float output layer, 37 dB before the pre-Tanh clamp's grid, quantize.md).
FP32_ATOL = 1e-4
BF16_PSNR_DB = 35.0
INT8_PSNR_DB = 25.0
needs_openvino = pytest.mark.skipif(not available("openvino"), reason="openvino not installed")
NATIVE_BF16 = native_bf16(torch.device("cpu"))  # AMX-BF16 or AVX512-BF16: OpenVINO takes a bf16 hint only there


@pytest.fixture(scope="module")
def engines_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.mark.parametrize(("runtime", "precision"), COMBOS)
def test_each_runtime_matches_pytorch(tiny_gan: ModelBundle, tmp_path: Path, runtime: str, precision: str) -> None:
    if not available(runtime):
        pytest.skip(f"{runtime} not installed")
    z = tiny_gan.inputs.draw(16, seed=3).z
    with torch.no_grad():
        ref = tiny_gan.generator(z)
    if (runtime, precision) == ("openvino", "bf16") and not NATIVE_BF16:  # it would run f32 under a bf16 label
        with pytest.raises(ConfigError, match="OpenVINO runs f32, not bf16, on this CPU"):
            build_engine(tiny_gan.generator, runtime, precision, threads=1, meta=tiny_gan.meta, workdir=tmp_path)
        return
    engine = build_engine(tiny_gan.generator, runtime, precision, threads=1, meta=tiny_gan.meta, workdir=tmp_path)
    out = engine(z)
    assert (engine.runtime, engine.precision) == (runtime, precision)
    assert out.shape == ref.shape and out.dtype == torch.float32
    if precision == "fp32":
        torch.testing.assert_close(out, ref, atol=FP32_ATOL, rtol=0)
    else:
        limit = BF16_PSNR_DB if precision == "bf16" else INT8_PSNR_DB
        assert limit < psnr(out, ref) < math.inf  # close, and really computed in the lower precision


def test_bench_json_fields(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    folder = save_folder(tiny_gan, tmp_path / "m")
    cmd = [sys.executable, "-m", "slimgen", "bench", str(folder), "--batch", "4", "--threads", "1", "--rounds", "1",
           "--repeats", "2", "--no-compile", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["batch"] == 4 and data["threads"] == 1 and data["load"]
    rows = data["runtimes"]
    expected = [c for c in COMBOS if available(c[0]) and (NATIVE_BF16 or c != ("openvino", "bf16"))]
    assert [(r["runtime"], r["precision"]) for r in rows] == [("pytorch", "fp32"), *expected]  # teacher first
    if not NATIVE_BF16 and available("openvino"):  # listed as skipped, with the reason, not run as f32
        assert "OpenVINO runs f32, not bf16" in data["skipped"]["openvino bf16"]
    for r in rows:
        assert {"runtime", "precision", "ms", "images_per_s", "macs_per_s", "vs_teacher", "peak_fraction", "psnr"} <= set(r)
        assert r["ms"] > 0 and r["images_per_s"] == pytest.approx(4 / (r["ms"] / 1e3), rel=0.01)
        assert r["macs_per_s"] == pytest.approx(data["macs_per_image"] * r["images_per_s"], rel=0.01)
        assert 0 < r["peak_fraction"] < 1
    assert rows[0]["vs_teacher"] == 1.0 and rows[0]["psnr"] == "inf"
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert int8 and all(INT8_PSNR_DB < r["psnr"] < 200 for r in int8)


needs_compile = pytest.mark.skipif(compile_unavailable() is not None, reason=str(compile_unavailable()))


@needs_compile
def test_torch_compile_contenders(tiny_gan: ModelBundle) -> None:
    """bench's torch.compile rows: compiled before timing (the compile time is stated, not timed), fp32 equal to
    eager within FP32_ATOL, bf16 really computed in bf16; teacher and eager rows unchanged."""
    result = bench(tiny_gan, batch=4, threads=1, rounds=1, repeats=2, combos=(("pytorch", "fp32"),), compiled=True,
                   streams=False)
    rows = {(r.runtime, r.precision): r for r in result.runtimes[1:]}
    assert list(rows) == [("pytorch", "fp32"), (COMPILED, "fp32"), (COMPILED, "bf16")]
    for precision in ("fp32", "bf16"):
        row = rows[(COMPILED, precision)]
        assert row.ms > 0 and "inductor" in row.detail
        seconds = float(row.detail.split("compiling took ")[1].split(" s")[0])
        assert seconds > 0  # compiled at the first call, before the timed calls
    assert rows[(COMPILED, "fp32")].psnr > 10 * math.log10(4 / FP32_ATOL**2)
    assert BF16_PSNR_DB < rows[(COMPILED, "bf16")].psnr < math.inf


@needs_openvino
def test_openvino_streams_split_the_batch_and_match_one_stream(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    """Throughput mode: the batch (an odd size too) split over 2 streams gives the one-stream engine's images."""
    one = build_engine(tiny_gan.generator, "openvino", "int8", threads=2, meta=tiny_gan.meta, workdir=tmp_path)
    two = build_engine(tiny_gan.generator, STREAMS, "int8", threads=2, meta=tiny_gan.meta, workdir=tmp_path)
    assert (two.runtime, two.precision) == (STREAMS, "int8") and "2 streams" in two.detail
    assert "ConvTranspose as Conv + DepthToSpace" in one.detail  # the DCGAN's ConvTranspose layers were rewritten
    for n in (16, 7):
        z = tiny_gan.inputs.draw(n, seed=5).z
        torch.testing.assert_close(two(z), one(z), atol=2 / 255, rtol=0)  # the same graph; rounding may differ


def test_torch_compile_is_skipped_with_its_reason(tiny_gan: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimgen.runtime.bench as rb

    monkeypatch.setattr(rb, "compile_unavailable", lambda: "torch.compile: no C++ compiler on PATH")
    result = bench(tiny_gan, batch=2, threads=1, rounds=1, repeats=1, combos=(), compiled=True)
    assert [r.runtime for r in result.runtimes] == ["pytorch"]
    assert result.skipped == {f"{COMPILED} fp32": "torch.compile: no C++ compiler on PATH",
                              f"{COMPILED} bf16": "torch.compile: no C++ compiler on PATH",
                              f"{STREAMS} bf16": "one thread: one stream (the openvino rows)",
                              f"{STREAMS} int8": "one thread: one stream (the openvino rows)"}


def test_peak_rates_follow_the_flags() -> None:
    spr = rates_from_flags({"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "fma", "avx2"})[0]
    assert spr == {"fp32": 32, "bf16": 512, "int8": 1024}
    icx = rates_from_flags({"avx512f", "avx512_vnni", "fma", "avx2"})[0]
    assert icx == {"fp32": 32, "bf16": 32, "int8": 128}


def _hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = builtins.__import__

    def fake(name: str, *args: object, **kwargs: object) -> object:
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {module!r}")
        return real(name, *args, **kwargs)

    real_import_module = importlib.import_module

    def fake_import_module(name: str, package: str | None = None) -> object:  # a dotted name gives the submodule
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {module!r}")
        return real_import_module(name, package)

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr("importlib.import_module", fake_import_module)


def test_fallback_when_openvino_is_missing(tiny_gan: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "openvino")
    assert not available("openvino")
    assert default_choice(None, "int8", int8_folder=False) == ("onnxruntime", "int8")  # the portable default
    assert default_choice(None, None, int8_folder=True) == ("onnxruntime", "int8")
    assert default_choice("auto", "bf16", int8_folder=False) == ("pytorch", "bf16")
    with pytest.raises(ConfigError, match="openvino is not installed"):
        default_choice("openvino", "int8", int8_folder=False)
    result = bench(tiny_gan, batch=2, threads=1, rounds=1, repeats=1,
                   combos=(("pytorch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")), compiled=False)
    assert [r.runtime for r in result.runtimes] == ["pytorch", "pytorch", "onnxruntime"], result.skipped
    assert "not installed" in result.skipped["openvino fp32"]


def test_choice_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="runtime must be one of auto, pytorch, onnxruntime, openvino"):
        default_choice("tensorrt", None, int8_folder=False)
    with pytest.raises(ConfigError, match="pytorch runs fp32, bf16, not int8"):
        default_choice("pytorch", "int8", int8_folder=False)
    with pytest.raises(ConfigError, match="only --precision int8 runs that model"):
        default_choice(None, "fp32", int8_folder=True)


@pytest.fixture
def act_folder(tiny_gan: ModelBundle, tmp_path: Path) -> Path:
    q = quantize(tiny_gan, ActivationQuant(calibration=64), calibration=tiny_gan.inputs.draw(64, seed=1234).z)
    return save_folder(q, tmp_path / "act")


def test_int8_activation_folder_samples_with_its_int8_activations(act_folder: Path, tmp_path: Path) -> None:
    """sample runs the folder's int8 graph: its images match the exported int8 ONNX (ONNX Runtime) on the same
    latents to within 2 grey levels of 255 (OpenVINO and ONNX Runtime round a few values differently)
    and are further from the float-activation PyTorch module than the int8 runtimes are from each other."""
    ran = sample_to_file(act_folder, tmp_path / "s.npy", n=32, seed=0)
    assert "int8" in ran
    images = np.load(tmp_path / "s.npy").astype(int)
    q = load_folder(act_folder)
    z = q.inputs.draw(32, seed=0).z
    ort_int8 = to_uint8(OnnxGenerator(export_onnx(q, tmp_path / "q.onnx")).forward(z).clamp(-1, 1)).numpy().astype(int)
    with torch.no_grad():
        float_acts = to_uint8(q.generator(z).clamp(-1, 1)).numpy().astype(int)
    assert np.abs(images - ort_int8).max() <= 2
    assert np.abs(images - ort_int8).mean() < np.abs(float_acts - ort_int8).mean()


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_export_of_a_quantized_folder_is_never_silently_float(act_folder: Path, tiny_gan: ModelBundle, tmp_path: Path) -> None:
    q = load_folder(act_folder)
    assert "QuantizeLinear" in _ops(export_onnx(q, tmp_path / "a.onnx"))  # int8 activations: exported int8 by default
    w4 = quantize(tiny_gan, LinearQuant(bits=4))
    with pytest.raises(ConfigError, match=r"--int8 .* or --dequantize"):
        export_onnx(w4, tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()
    assert "QuantizeLinear" not in _ops(export_onnx(w4, tmp_path / "c.onnx", dequantize=True))  # asked for
    folder = save_folder(w4, tmp_path / "w4")
    for fmt in ("onnx", "openvino", "torchscript"):
        result = subprocess.run([sys.executable, "-m", "slimgen", "export", str(folder), "--format", fmt, "--out",
                                 str(tmp_path / f"x-{fmt}")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "--dequantize" in result.stderr


@needs_openvino
@needs_openvino
def test_openvino_claims_no_conv_transpose_rewrite_for_a_model_without_one(tmp_path: Path) -> None:
    g = nn.Sequential(nn.Linear(8, 16), nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 1, 3, 1, 1), nn.Tanh()).eval()
    set_inputs(g, InputSpec(latent_shape=(8,)))
    engine = build_engine(g, "openvino", "fp32", threads=1, workdir=tmp_path)
    assert "ConvTranspose" not in engine.detail and engine(torch.randn(2, 8)).shape == (2, 1, 4, 4)


def test_openvino_floats_reads_the_compiled_hint() -> None:
    import openvino as ov

    from slimgen.runtime.engines import openvino_floats

    assert openvino_floats(ov.Type.bf16) == "bf16" and openvino_floats(ov.Type.f32) == "f32"
    assert openvino_floats(ov.Type.f16) == "f32"  # only bf16 counts as bf16


@needs_openvino
def test_openvino_ir_int8_and_bf16(act_folder: Path, tiny_gan: ModelBundle, tmp_path: Path) -> None:
    import openvino as ov

    q = load_folder(act_folder)
    xml = export_openvino(q, tmp_path / "q.xml")  # int8 by default for this folder
    model = ov.Core().read_model(str(xml))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # OpenVINO's int8 form of QDQ
    bf16 = export_openvino(tiny_gan, tmp_path / "b.xml", precision="bf16")
    compiled = ov.Core().compile_model(str(bf16), "CPU")  # the IR's own hint; a CPU without bf16 units runs f32
    expected = "<Type: 'bfloat16'>" if NATIVE_BF16 else "<Type: 'float32'>"
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == expected
    z = tiny_gan.inputs.draw(8, seed=0).z
    out = torch.from_numpy(compiled.create_infer_request().infer({0: z.numpy()})[compiled.outputs[0]].copy())
    with torch.no_grad():
        assert BF16_PSNR_DB < psnr(out, tiny_gan.generator(z))


@needs_openvino
def test_openvino_ir_into_a_folder_and_a_wrong_suffix(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    """The IR is two files: ``--out DIR`` (new or existing) writes DIR/model.xml and .bin; another suffix is refused
    in one line."""
    assert export_openvino(tiny_gan, tmp_path / "ir") == tmp_path / "ir" / "model.xml"
    assert (tmp_path / "ir" / "model.bin").is_file()
    (tmp_path / "there.d").mkdir()
    assert export_openvino(tiny_gan, tmp_path / "there.d") == tmp_path / "there.d" / "model.xml"
    with pytest.raises(ConfigError, match=r"must end in \.xml"):
        export_openvino(tiny_gan, tmp_path / "g.onnx")


def test_latencies_come_from_one_interleaved_run(tiny_gan: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimgen.runtime.bench as rb

    calls: list[list[str]] = []
    real = rb.interleaved_ms

    def spy(fns: dict, **kw: int) -> dict[str, float]:
        calls.append(list(fns))
        return real(fns, **kw)

    monkeypatch.setattr(rb, "interleaved_ms", spy)
    teacher = build_engine(tiny_gan.generator, "pytorch", "fp32")
    small = build_engine(quantize(tiny_gan, LinearQuant(bits=8)).generator, "pytorch", "fp32")
    run = interleaved_latency({"00-teacher": teacher, "01-q": small}, threads=1, rounds=2, repeats=2)
    assert len(calls) == 1 and sorted(calls[0]) == ["00-teacher\tb1", "00-teacher\tb64", "01-q\tb1", "01-q\tb64"]
    assert set(run.ms) == {"00-teacher", "01-q"} and all(v > 0 for m in run.ms.values() for v in m.values())
    assert "one interleaved run" in run.describe() and "1 threads" in run.describe()


def test_activations_before_shuffle_is_exact(tiny_gan: ModelBundle) -> None:
    from torch import nn

    from slimgen.quantize.rewrite import Rewritten, activations_before_shuffle, fold_batchnorm, rewrite_conv_transpose

    z = tiny_gan.inputs.draw(8, seed=0).z
    g = fold_batchnorm(rewrite_conv_transpose(tiny_gan.generator, z))
    moved = activations_before_shuffle(g)
    blocks = [m for m in moved.modules() if isinstance(m, Rewritten)]
    assert blocks and all(any(isinstance(m, nn.ReLU | nn.Tanh) for m in b) for b in blocks)  # each block took its activation
    with torch.no_grad():
        torch.testing.assert_close(moved(z), tiny_gan.generator(z), atol=1e-5, rtol=0)
