"""Export a bundle's generator to OpenVINO IR (``model.xml`` + ``model.bin``): fp32, bf16 or int8.

The IR is converted from the same ONNX graph as :func:`slimgen.export.export_onnx` (int8: the
QDQ graph with the ConvTranspose2d rewrite; OpenVINO runs its quantized Conv/MatMul in int8
with VNNI/AMX). ``bf16`` keeps float32 weights and records ``INFERENCE_PRECISION_HINT=bf16``
in the IR's runtime options, so ``openvino.Core().compile_model("model.xml", "CPU")`` runs it
in bf16 on a CPU that has bf16 (AVX-512 BF16, AMX) without further settings. Inputs ``z``
(B, *latent_shape) float32 [and ``y`` (B,) int64] -> ``image`` (B, C, H, W).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.export.onnx import _default_path, _spec, check_not_silently_float, export_generator_onnx, int8_by_default
from slimgen.models.folder import ModelBundle
from slimgen.models.inputs import GenInputs

OPENVINO_NAME = "model.xml"


def export_openvino(bundle: ModelBundle, path: str | Path | None = None, *, precision: str | None = None,
                    calibration: GenInputs | torch.Tensor | int | None = None, dequantize: bool = False) -> Path:
    """Write ``<folder>/model.xml`` (+ ``.bin``) or ``path`` (an .xml file, or a folder to hold model.xml and
    model.bin); returns the .xml path.

    ``precision``: ``fp32``, ``bf16`` or ``int8`` (None: int8 for a folder quantized with int8
    activations, else fp32). As for ONNX, quantized weights are never written as float32 silently.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelFolderError("OpenVINO is not installed (pip install openvino): cannot write an IR") from exc
    if precision is None:
        precision = "int8" if int8_by_default(bundle) else "fp32"
    if precision not in ("fp32", "bf16", "int8"):
        raise ConfigError(f"OpenVINO IR precision must be fp32, bf16 or int8, got {precision!r}")
    check_not_silently_float(bundle, int8=precision == "int8", dequantize=dequantize, fmt="OpenVINO")
    out = _default_path(bundle, path, OPENVINO_NAME)
    if out.is_dir() or (path is not None and not out.suffix):  # a folder: the IR's two files go into it
        out = out / OPENVINO_NAME
    if out.suffix != ".xml":
        raise ConfigError(f"{out}: an OpenVINO IR path must end in .xml (its weights go beside it in .bin)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_generator_onnx(bundle.generator, _spec(bundle), Path(tmp) / "g.onnx", int8=precision == "int8",
                                     meta=bundle.meta, calibration=calibration)
        model = ov.convert_model(str(onnx))
    if precision == "bf16":
        model.set_rt_info("bf16", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, str(out), compress_to_fp16=False)
    return out
