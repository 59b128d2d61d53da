"""Export a bundle's generator to TorchScript: ``torch.jit.load(path)(z)`` runs without slimgen.

The file holds float32 weights (a quantized model's dequantized values, so its outputs match
the model folder); for int8 storage and int8 kernels use the ONNX export with ``int8=True``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from slimgen.errors import ModelFolderError
from slimgen.models.folder import ModelBundle

TORCHSCRIPT_NAME = "model.pt"


def export_torchscript(bundle: ModelBundle, path: str | Path | None = None) -> Path:
    """Trace the generator on inputs of its contract (z (B, *latent_shape)[, y (B,)]) and save it
    (default ``<model folder>/model.pt``)."""
    if bundle.inputs is None:
        raise ModelFolderError("this model folder records no input contract; cannot trace the generator")
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
