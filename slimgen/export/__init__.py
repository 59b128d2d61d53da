"""Export: ONNX (fp32, int8 QDQ), OpenVINO IR (fp32, bf16, int8) and TorchScript files that run without slimgen."""

from slimgen.export.onnx import ONNX_NAME, OnnxGenerator, export_onnx
from slimgen.export.openvino import OPENVINO_NAME, export_openvino
from slimgen.export.torchscript import TORCHSCRIPT_NAME, export_torchscript

__all__ = ["ONNX_NAME", "OPENVINO_NAME", "TORCHSCRIPT_NAME", "OnnxGenerator", "export_onnx", "export_openvino",
           "export_torchscript"]
