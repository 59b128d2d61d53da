"""``slimgen export`` commands (registered on the shared app)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from slimgen.cli.app import app


class ExportFormat(StrEnum):
    onnx = "onnx"
    openvino = "openvino"
    torchscript = "torchscript"


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="onnx, openvino (IR) or torchscript"),
    out: Path | None = typer.Option(None, "--out", help="file to write (default: model.onnx / model.xml / model.pt in the folder; "
                                                  "openvino: an .xml file or a folder for model.xml + .bin)"),
    int8: bool | None = typer.Option(
        None, "--int8/--fp32", help="int8 QDQ weights and activations (onnx, openvino); default: int8 for a folder "
        "quantized with int8 activations, else fp32"),
    bf16: bool = typer.Option(False, "--bf16", help="openvino: fp32 weights, run in bf16 (recorded in the IR)"),
    dequantize: bool = typer.Option(False, "--dequantize", help="write a quantized folder's weights as float32 on purpose"),
    calibration: int | None = typer.Option(None, help="calibration latents for int8 (default: recorded, else 512)"),
    observer: str | None = typer.Option(None, help="activation observer for int8 (default: recorded, else percentile)"),
) -> None:
    """Export a model's generator to a file that runs without slimgen (ONNX Runtime, OpenVINO or torch.jit).

    A quantized folder is exported quantized (int8) or, without --int8, refused with one line unless
    --dequantize asks for float32 weights: never a silent float32 file.
    """
    from slimgen.errors import ConfigError
    from slimgen.export import export_onnx, export_openvino, export_torchscript
    from slimgen.export.onnx import int8_by_default
    from slimgen.models import load_folder
    from slimgen.models.zoo import is_shipped

    if out is None and model.startswith("zoo:"):
        raise ConfigError(f"{model} is a shipped model: pass --out FILE rather than writing into the installed package")
    if out is not None and is_shipped(out):
        raise ConfigError(f"{out}: inside the shipped zoo; slimgen never writes into the installed package")
    if calibration is not None and calibration < 1:
        raise ConfigError(f"calibration set is empty: --calibration must be >= 1, got {calibration}")
    bundle = load_folder(model)
    if int8 is None:  # a quantized folder exports int8 by default; TorchScript says itself what it cannot hold
        int8 = int8_by_default(bundle) and format is not ExportFormat.torchscript
    if int8 and bf16:
        raise ConfigError("--bf16 and --int8 exclude each other: int8 graphs keep their float layers in f32")
    if format is ExportFormat.torchscript:
        if int8 or bf16 or calibration is not None or observer is not None:
            raise ConfigError("--int8, --bf16, --calibration and --observer apply to --format onnx/openvino only")
        path, what = export_torchscript(bundle, out, dequantize=dequantize), "float32"
    elif format is ExportFormat.openvino:
        if observer is not None:
            raise ConfigError("--observer applies to --format onnx (the OpenVINO IR uses the recorded observer)")
        precision = "int8" if int8 else "bf16" if bf16 else "fp32"
        path = export_openvino(bundle, out, precision=precision, calibration=calibration, dequantize=dequantize)
        what = {"int8": "int8 QDQ", "bf16": "float32 weights, bf16 inference", "fp32": "float32"}[precision]
    else:
        if bf16:
            raise ConfigError("--bf16 applies to --format openvino (ONNX Runtime has no bf16 CPU kernels)")
        path = export_onnx(bundle, out, int8=int8, calibration=calibration, observer=observer, dequantize=dequantize)
        what = "int8 QDQ" if int8 else "float32"
    size = sum(f.stat().st_size for f in (path, path.with_suffix(".bin")) if f.is_file())
    typer.echo(f"wrote {path} ({what}, {size:,} bytes)")
