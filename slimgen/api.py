"""The Python API in one namespace: ``import slimgen.api as sg``.

The verbs (``sg.prune``, ``sg.distill``, ``sg.quantize``, ``sg.finetune``, ``sg.evaluate``,
``sg.export_onnx``, ``sg.save_pretrained`` / ``sg.load_pretrained``, ``sg.apply_method`` for any
registered method by its recipe name), the input contract (``sg.InputSpec``, ``sg.set_inputs``)
and the methods' config classes. Every verb takes a plain ``nn.Module`` (its compression state
travels on it, :func:`sg.state_of`) or a model folder's bundle. (The package's subpackages
``slimgen.prune`` etc. hold these verbs; this module is the flat facade over them.)
"""

from slimgen.distill import Distillation, DistillLosses, SlimStudent, distill, slim_student
from slimgen.evaluate import evaluate
from slimgen.export import export_onnx, export_openvino, export_torchscript
from slimgen.methods import METHODS, apply_method, register_method
from slimgen.models import (
    GenInputs,
    InputSpec,
    ModelBundle,
    calibration_inputs,
    load_folder,
    load_pretrained,
    save_folder,
    save_pretrained,
    set_inputs,
    state_of,
    trust_code,
)
from slimgen.pipeline import compress, load_recipe
from slimgen.prune import (
    ChannelPruning,
    GradientPruning,
    LatentRotation,
    MagnitudePruning,
    RandomPruning,
    ThresholdPruning,
    prune,
)
from slimgen.quantize import ActivationQuant, KMeansQuant, LinearQuant, Quantization, quantize
from slimgen.train.finetune import FineTuning, finetune

__all__ = [
    "METHODS",
    "ActivationQuant",
    "ChannelPruning",
    "DistillLosses",
    "Distillation",
    "FineTuning",
    "GenInputs",
    "GradientPruning",
    "InputSpec",
    "KMeansQuant",
    "LatentRotation",
    "LinearQuant",
    "MagnitudePruning",
    "ModelBundle",
    "Quantization",
    "RandomPruning",
    "SlimStudent",
    "ThresholdPruning",
    "apply_method",
    "calibration_inputs",
    "compress",
    "distill",
    "evaluate",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "finetune",
    "load_folder",
    "load_pretrained",
    "load_recipe",
    "prune",
    "quantize",
    "register_method",
    "save_folder",
    "save_pretrained",
    "set_inputs",
    "slim_student",
    "state_of",
    "trust_code",
]
