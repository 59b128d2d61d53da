"""``slimgen export`` commands (registered on the shared app)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from slimgen.cli.app import app


class ExportFormat(StrEnum):
    onnx = "onnx"
    torchscript = "torchscript"


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="onnx or torchscript"),
    out: Path | None = typer.Option(None, "--out", help="file to write (default: model.onnx / model.pt in the folder)"),
    int8: bool = typer.Option(False, "--int8", help="ONNX int8 QDQ (weights and activations, static calibration)"),
    calibration: int | None = typer.Option(None, help="calibration latents for --int8 (default: recorded, else 512)"),
    observer: str | None = typer.Option(None, help="activation observer for --int8 (default: recorded, else percentile)"),
) -> None:
    """Export a model's generator to a file that runs without slimgen (ONNX Runtime or torch.jit)."""
    from slimgen.errors import ConfigError
    from slimgen.export import export_onnx, export_torchscript
    from slimgen.models import load_folder
    from slimgen.models.inputs import calibration_inputs
    from slimgen.models.zoo import is_shipped

    if out is None and model.startswith("zoo:"):
        raise ConfigError(f"{model} is a shipped model: pass --out FILE rather than writing into the installed package")
    if out is not None and is_shipped(out):
        raise ConfigError(f"{out}: inside the shipped zoo; slimgen never writes into the installed package")
    bundle = load_folder(model)
    if format is ExportFormat.torchscript:
        if int8 or calibration is not None or observer is not None:
            raise ConfigError("--int8, --calibration and --observer apply to --format onnx only")
        path = export_torchscript(bundle, out)
    else:
        if calibration is not None and calibration < 1:
            raise ConfigError(f"calibration set is empty: --calibration must be >= 1, got {calibration}")
        z = calibration_inputs(bundle.inputs, calibration) if calibration and bundle.inputs is not None else None
        path = export_onnx(bundle, out, int8=int8, calibration=z, observer=observer)
    typer.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")
