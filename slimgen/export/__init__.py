"""Export: ONNX (fp32, int8 QDQ) and TorchScript files that run without slimgen."""

from slimgen.export.onnx import ONNX_NAME, OnnxGenerator, export_onnx
from slimgen.export.torchscript import TORCHSCRIPT_NAME, export_torchscript

__all__ = ["ONNX_NAME", "TORCHSCRIPT_NAME", "OnnxGenerator", "export_onnx", "export_torchscript"]
