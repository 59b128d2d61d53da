"""Export a bundle's generator to ONNX: fp32, or int8 QDQ with static calibration (ONNX Runtime).

The int8 path first rewrites every ConvTranspose2d into Conv2d + PixelShuffle (or a Linear for
a 1x1 input), exactly, because ONNX Runtime has int8 kernels for Conv and MatMul
(QLinearConv) but none for ConvTranspose; it also folds BatchNorm and clamps the pre-Tanh
output where Tanh saturates (see :func:`slimgen.quantize.rewrite.prepare_for_int8`). Activation ranges are calibrated on latents with
the observer recorded by ``quantize(..., ActivationQuant(...))`` (percentile by default).
The files run with ``onnxruntime`` alone: input ``z`` (B, latent_dim) -> ``image`` (B, C, H, W).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.models.folder import ModelBundle
from slimgen.quantize.apply import check_calibration
from slimgen.quantize.configs import OBSERVERS
from slimgen.quantize.rewrite import prepare_for_int8

ONNX_NAME = "model.onnx"
OPSET = 18
CALIBRATION_BATCH = 64


def _default_path(bundle: ModelBundle, path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    if bundle.path is None:
        raise ModelFolderError("this model has no folder: pass the output path of the export")
    return Path(bundle.path) / ONNX_NAME


def _latent_dim(bundle: ModelBundle) -> int:
    if bundle.latent_dim is None:
        raise ModelFolderError("this model folder records no latent_dim; cannot build the exported input")
    return int(bundle.latent_dim)


def export_fp32(generator: nn.Module, path: Path, latent_dim: int, *, dynamic_batch: bool = True) -> Path:
    """``generator`` (B, latent_dim) -> (B, C, H, W) to a single-file ONNX model at ``path``."""
    example = torch.zeros(2, latent_dim)
    dynamic = {"z": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(generator).eval(), (example,), str(path), input_names=["z"],
                          output_names=["image"], dynamo=True, external_data=False, dynamic_shapes=dynamic,
                          opset_version=OPSET, verbose=False, report=False)
    return path


class _LatentReader:
    """onnxruntime CalibrationDataReader over latents (N, latent_dim) in batches."""

    def __init__(self, z: torch.Tensor) -> None:
        self._batches: Iterator[torch.Tensor] = iter(z.split(CALIBRATION_BATCH))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"z": batch.float().numpy()}


def _calibrate_options(observer: str) -> tuple[object, dict[str, object]]:
    from onnxruntime.quantization import CalibrationMethod

    if observer not in OBSERVERS:
        raise ConfigError(f"observer must be one of {list(OBSERVERS)}, got {observer!r}")
    return {
        "minmax": (CalibrationMethod.MinMax, {}),
        "moving_average": (CalibrationMethod.MinMax, {"CalibMovingAverage": True, "CalibMovingAverageConstant": 0.01}),
        "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.999}),
        "histogram": (CalibrationMethod.Entropy, {}),
    }[observer]


def quantize_onnx_int8(fp32_path: Path, path: Path, calibration: torch.Tensor, *, observer: str = "percentile") -> Path:
    """Static int8 QDQ quantization of an fp32 ONNX model: per-channel int8 weights, uint8 activations."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method, extra = _calibrate_options(observer)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(path), _LatentReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options=extra)
    return path


def export_onnx(bundle: ModelBundle, path: str | Path | None = None, *, int8: bool = False,
                calibration: torch.Tensor | None = None, dynamic_batch: bool = True,
                observer: str | None = None) -> Path:
    """Export the generator to ONNX (default: ``<model folder>/model.onnx``); returns the path.

    ``int8``: rewrite ConvTranspose2d exactly, then quantize statically (QDQ) with activation
    ranges from ``calibration`` latents (N, latent_dim); default: the number and observer that
    ``ActivationQuant`` recorded, else 512 seeded latents and the percentile observer.
    """
    out = _default_path(bundle, path)
    latent_dim = _latent_dim(bundle)
    generator = copy.deepcopy(bundle.generator).eval()
    if not int8:
        return export_fp32(generator, out, latent_dim, dynamic_batch=dynamic_batch)
    recorded = bundle.meta.get("activation_quant", {})
    z = check_calibration(calibration, latent_dim, int(recorded.get("calibration", 512)))
    generator = prepare_for_int8(generator, z[:2])  # same outputs; int8 Conv/MatMul end to end
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_fp32(generator, Path(tmp) / "fp32.onnx", latent_dim, dynamic_batch=dynamic_batch)
        return quantize_onnx_int8(fp32, out, z, observer=observer or recorded.get("observer", "percentile"))


class OnnxGenerator(nn.Module):
    """An exported ONNX generator run by ONNX Runtime, callable like the generator: (B, latent_dim) -> (B, C, H, W)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_numpy(self, z: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"z": z})[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_numpy(z.detach().float().contiguous().numpy()))
