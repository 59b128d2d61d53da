"""Quantization: linear and k-means weights, int8 activations, quantization-aware training.

One frozen dataclass per scheme and one verb, ``quantize(model, config, *, calibration=...)``.
The ConvTranspose2d -> Conv2d + PixelShuffle rewrite used before int8 export lives in
:mod:`slimgen.quantize.rewrite`.
"""

from slimgen.quantize.apply import quantizable_weights, quantize, register_quantizer
from slimgen.quantize.configs import (
    ActivationQuant,
    KMeansQuant,
    LinearQuant,
    NaiveQuant,
    QuantAwareTraining,
    Quantization,
)
from slimgen.quantize.linear import QuantizedTensor, naive_quantize, quantize_linear
from slimgen.quantize.rewrite import rewrite_conv_transpose

__all__ = [
    "ActivationQuant", "KMeansQuant", "LinearQuant", "NaiveQuant", "QuantAwareTraining", "Quantization", "QuantizedTensor",
    "naive_quantize", "quantizable_weights", "quantize", "quantize_linear", "register_quantizer",
    "rewrite_conv_transpose",
]
