"""Export a bundle's generator to TorchScript: ``torch.jit.load(path)(z)`` runs without slimgen.

The file holds float32 weights (a quantized model's dequantized values, so its outputs match
the model folder); for int8 storage and int8 kernels use the ONNX export with ``int8=True``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.export.onnx import check_not_silently_float
from slimgen.models.folder import ModelBundle

TORCHSCRIPT_NAME = "model.pt"


def export_torchscript(bundle: ModelBundle, path: str | Path | None = None, *, dequantize: bool = False) -> Path:
    """Trace the generator on its inputs (B, *latent_shape) [+ labels] and save it (default ``<model folder>/model.pt``).

    TorchScript holds float32 weights: a folder with quantized weights is exported only with
    ``dequantize=True`` (ConfigError otherwise), so a float file is never written silently.
    """
    if bundle.inputs is None:
        raise ModelFolderError("this model folder records no input contract (inputs / latent_dim); cannot trace the generator")
    if bundle.meta.get("activation_quant"):  # first: --dequantize would not help here
        raise ConfigError("this folder was quantized with int8 activations, which TorchScript cannot hold: "
                          "export --format onnx or openvino (int8)")
    check_not_silently_float(bundle, int8=False, dequantize=dequantize, fmt="TorchScript")
    if path is None:
        if bundle.path is None:
            raise ModelFolderError("this model has no folder: pass the output path of the export")
        path = Path(bundle.path) / TORCHSCRIPT_NAME
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = copy.deepcopy(bundle.generator).eval()
    example = bundle.inputs.draw(2, seed=0).args()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(generator, example, check_trace=False)
        torch.jit.save(traced, str(path))
    return path
