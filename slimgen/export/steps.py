"""``export`` as a registered method: the recipe step writing runnable files into the step's folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from slimgen.errors import ConfigError
from slimgen.export.onnx import ONNX_NAME, export_onnx
from slimgen.export.torchscript import export_torchscript
from slimgen.methods import MethodContext, register_method
from slimgen.models import ModelBundle

EXPORT_FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class Export:
    """Write runnable exports into the step's folder (model.onnx, model.ts).

    ``int8``: the ONNX file as int8 QDQ (None: as the model is, int8 after int8 activations), calibrated
    exactly as ``slimgen export`` does:
    ``calibration`` inputs of the calibration contract (None: the n that ``quantize`` recorded,
    else 512), or the inputs ``quantize`` was given. ``dequantize``: a folder with quantized weights that
    the file holds as float32 (ONNX without ``int8``, TorchScript) is refused unless this says so, as
    ``slimgen export --dequantize``: e.g. mixed-precision weights (``layer_bits``) have no int8 graph of
    their own, so their ONNX file is float32 on purpose.
    """

    formats: list[str] = field(default_factory=lambda: ["onnx"])
    int8: bool | None = None
    calibration: int | None = None
    dequantize: bool = False

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in EXPORT_FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"formats must be a non-empty list of {', '.join(EXPORT_FORMATS)}; got {self.formats}")
        if self.calibration is not None and (isinstance(self.calibration, bool) or self.calibration < 1):
            raise ConfigError(f"calibration must be >= 1 latents, got {self.calibration}")


@register_method("export", Export, needs_onnx=lambda config: "onnx" in config.formats)
def export_step(bundle: ModelBundle, config: Export, ctx: MethodContext) -> ModelBundle:
    """Write the exports into ``ctx.folder``; the model itself is unchanged."""
    if ctx.folder is None:
        raise ConfigError("export writes into a step folder: run it in a recipe or with slimgen apply --out")
    if "onnx" in config.formats:
        export_onnx(bundle, ctx.folder / ONNX_NAME, int8=config.int8, calibration=config.calibration,
                    dequantize=config.dequantize)
    if "torchscript" in config.formats:
        export_torchscript(bundle, ctx.folder / "model.ts", dequantize=config.dequantize)
    return bundle
