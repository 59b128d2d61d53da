"""Power-of-two (fixed-point) scales in an int8 QDQ ONNX model.

ONNX Runtime's static quantization picks float32 scales. For hardware that shifts instead of
multiplying, every scale of the QDQ graph is rounded up to a power of two after calibration
(the range it covered stays covered, at most one bit of resolution is lost):

- weights (int8 initializers behind a DequantizeLinear): requantized on the new grid from their
  dequantized values; a weight already on a power-of-two grid (``LinearQuant(scale_type="pow2")``)
  stays exact, since a finer power-of-two grid holds every point of a coarser one;
- activations (QuantizeLinear / DequantizeLinear pairs, uint8): the scale rounded up and the
  zero point scaled to keep the same zero;
- int32 biases: requantized with scale = input scale x weight scale, as QLinearConv expects.

A QDQ model with power-of-two scales is ordinary ONNX; ONNX Runtime and OpenVINO run it as any
int8 QDQ model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimgen.quantize.linear import pow2_exponent, round_up_pow2

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int32): (-(2**31), 2**31 - 1)}


def _pow2(scale: np.ndarray) -> np.ndarray:
    return round_up_pow2(torch.from_numpy(np.array(scale, dtype=np.float32))).numpy()


def _along(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Per-channel (C,) -> broadcastable against an ``ndim`` array along ``axis``; scalars unchanged."""
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _requantize(q: np.ndarray, zp: np.ndarray, old: np.ndarray, new: np.ndarray, axis: int, new_zp: np.ndarray | None = None
                ) -> np.ndarray:
    """Integer codes ``q`` on grid (old scale, zp) -> codes on (new scale, ``new_zp`` or zp), clipped to q's dtype."""
    lo, hi = _RANGES[q.dtype]
    zp_new = zp if new_zp is None else new_zp
    w = (q.astype(np.float64) - _along(zp, q.ndim, axis)) * _along(old, q.ndim, axis)
    out = np.round(w / _along(new, q.ndim, axis)) + _along(zp_new, q.ndim, axis)
    return np.clip(out, lo, hi).astype(q.dtype)


def pow2_qdq(path: str | Path) -> Path:
    """Round every scale of the QDQ ONNX model at ``path`` up to a power of two, in place; returns ``path``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    new: dict[str, np.ndarray] = {}

    def axis_of(node: onnx.NodeProto) -> int:
        return next((a.i for a in node.attribute if a.name == "axis"), 1)

    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in arrays]
    biases = [n for n in qdq if n.op_type == "DequantizeLinear" and arrays.get(n.input[0], np.zeros(0, np.uint8)).dtype == np.int32]
    for node in qdq:
        scale_name = node.input[1]
        if node in biases or scale_name in new:
            continue
        old = arrays[scale_name]
        scale = new[scale_name] = _pow2(old)
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] in arrays else None
        data = arrays.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if data is not None and data.dtype in (np.int8, np.uint8):  # a weight: requantize its codes
            zp = arrays[zp_name] if zp_name else np.zeros_like(old, dtype=data.dtype)
            new[node.input[0]] = _requantize(data, zp, old, scale, axis_of(node) % data.ndim)
        elif zp_name:  # an activation: keep the represented zero
            zp = arrays[zp_name]
            lo, hi = _RANGES[zp.dtype]
            new[zp_name] = np.clip(np.round(zp.astype(np.float64) * old / scale), lo, hi).astype(zp.dtype)
    for node in biases:
        consumer = next(n for n in graph.node if node.output[0] in n.input)
        x_dq, w_dq = (producer.get(name) for name in consumer.input[:2])
        if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue
        scale = (new.get(x_dq.input[1], arrays[x_dq.input[1]]) * new.get(w_dq.input[1], arrays[w_dq.input[1]])).astype(np.float32)
        q, old = arrays[node.input[0]], arrays[node.input[1]]
        new[node.input[0]] = _requantize(q, np.zeros_like(old, dtype=np.int32), old, scale, 0)
        new[node.input[1]] = scale.reshape(old.shape)
    for init in graph.initializer:
        if init.name in new:
            init.CopyFrom(numpy_helper.from_array(new[init.name].reshape(arrays[init.name].shape), init.name))
    onnx.save(model, str(path))
    return Path(path)


def qdq_scales(path: str | Path) -> dict[str, np.ndarray]:
    """Every scale initializer of the Quantize/DequantizeLinear nodes of an ONNX model, by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {i.name: i for i in graph.initializer}
    names = {n.input[1] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    return {name: numpy_helper.to_array(arrays[name]) for name in sorted(names) if name in arrays}


def all_pow2(scales: dict[str, np.ndarray]) -> bool:
    """True when every scale (any shape) is an exact power of two."""
    return all(pow2_exponent(torch.from_numpy(np.array(s, dtype=np.float32))) is not None for s in scales.values())
