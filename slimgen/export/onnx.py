"""Export a bundle's generator to ONNX: fp32, or int8 QDQ with static calibration (ONNX Runtime).

The int8 path first rewrites every ConvTranspose2d into Conv2d + PixelShuffle (or a Linear for
a 1x1 input), exactly, because ONNX Runtime has int8 kernels for Conv and MatMul
(QLinearConv) but none for ConvTranspose; it also folds BatchNorm and clamps the pre-Tanh
output where Tanh saturates (see :func:`slimgen.quantize.rewrite.prepare_for_int8`). Activation ranges are calibrated on latents with
the observer recorded by ``quantize(..., ActivationQuant(...))`` (percentile by default).
The files run with ``onnxruntime`` alone, with the inputs of the model's input contract: ``z``
(B, *latent_shape) float32, and ``y`` (B,) int64 for a class-conditional model -> ``image`` (B, C, H, W).
Calibration inputs follow the calibration contract (:func:`slimgen.models.inputs.calibration_inputs`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimgen._env import int8_saturates
from slimgen.errors import ConfigError, ModelFolderError
from slimgen.models.folder import ModelBundle
from slimgen.models.inputs import GenInputs, InputSpec, as_inputs
from slimgen.models.state import state_of
from slimgen.quantize.apply import check_calibration, output_layer
from slimgen.quantize.configs import OBSERVERS, ActivationQuant
from slimgen.quantize.rewrite import activations_before_shuffle, fold_batchnorm, prepare_for_int8, rewrite_conv_transpose

ONNX_NAME = "model.onnx"
OPSET = 18
CALIBRATION_BATCH = 64


def _default_path(bundle: ModelBundle, path: str | Path | None, name: str = ONNX_NAME) -> Path:
    if path is not None:
        return Path(path)
    if bundle.path is None:
        raise ModelFolderError("this model has no folder: pass the output path of the export")
    return Path(bundle.path) / name


def quantized_weights(bundle: ModelBundle) -> list[str]:
    """Generator tensors whose folder encoding is quantized (linear or codebook codes), by name."""
    return sorted(k for k, e in bundle.encodings.items() if k.startswith("generator.") and e.codec in ("linear", "codebook"))


def check_not_silently_float(bundle: ModelBundle, *, int8: bool, dequantize: bool, fmt: str = "ONNX") -> None:
    """Refuse to write float weights for a quantized folder unless the user asked for that (``dequantize``).

    A folder with int8 activations is exported int8 by default (the caller passes ``int8=True``)."""
    quantized = quantized_weights(bundle)
    if int8 or dequantize or not quantized:
        return
    codecs = sorted({f"{bundle.encodings[k].codec} {bundle.encodings[k].params.get('bits', '?')}-bit" for k in quantized})
    raise ConfigError(
        f"this folder's generator weights are quantized ({', '.join(codecs)}; {len(quantized)} tensors) and this {fmt} "
        "export would hold them as float32: pass --int8 (int8 weights and activations, ONNX/OpenVINO) "
        "or --dequantize to write the dequantized values as float32 on purpose")


def _spec(bundle: ModelBundle) -> InputSpec:
    if bundle.inputs is None:
        raise ModelFolderError("this model folder records no input contract; cannot build the exported input")
    return bundle.inputs


def input_names(spec: InputSpec) -> list[str]:
    """ONNX input names: ``z``, and ``y`` for a class-conditional model."""
    return ["z", "y"] if spec.conditional else ["z"]


def export_fp32(generator: nn.Module, path: Path, spec: InputSpec | int, *, dynamic_batch: bool = True) -> Path:
    """``generator`` (inputs of ``spec``: z (B, *latent_shape), y (B,) int64) -> (B, C, H, W) to one ONNX file.

    ``spec`` may be a plain latent size for the classic (B, latent_dim) latent.
    """
    spec = InputSpec.latent(spec) if isinstance(spec, int) else spec
    example = spec.draw(2, seed=0)
    names = input_names(spec)
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in names) if dynamic_batch else None  # positional: any forward() argument names
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(copy.deepcopy(generator).eval(), example.args(), str(path), input_names=names,
                              output_names=["image"], dynamo=True, external_data=False, dynamic_shapes=dynamic,
                              opset_version=OPSET, verbose=False, report=False)
        except Exception as exc:  # torch.onnx's errors are pages long: one line a user can act on
            raise ConfigError(f"ONNX cannot express this model: {_onnx_reason(exc)}; run it in PyTorch (float or int8 "
                              "weights: quantize --activations none; export --format torchscript or safetensors)") from exc
    return path


def _onnx_reason(exc: Exception) -> str:
    text = str(exc)
    if "Unsupported attribute type" in text and "SymbolicTensor" in text:
        op = re.search(r"operator '::(\w+)'", text)
        return (f"its forward makes a setting of {op.group(1) if op else 'an operator'} from the batch size (e.g. conv "
                "groups = batch, a StyleGAN2-style modulated conv), which an ONNX graph with a free batch cannot hold")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"torch.onnx.export failed ({type(exc).__name__}: {first[:200]})"


def onnx_feed(inputs: GenInputs) -> dict[str, np.ndarray]:
    """ONNX Runtime's input dict for generator inputs: ``z`` float32, ``y`` int64 when conditional."""
    feed = {"z": inputs.z.detach().float().contiguous().numpy()}
    if inputs.y is not None:
        feed["y"] = inputs.y.detach().long().contiguous().numpy()
    return feed


class _LatentReader:
    """onnxruntime CalibrationDataReader over generator inputs (z (N, *latent_shape), y (N,)) in batches."""

    def __init__(self, z: torch.Tensor | GenInputs) -> None:
        self._batches: Iterator[GenInputs] = as_inputs(z).split(CALIBRATION_BATCH)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else onnx_feed(batch)


def _calibrate_options(observer: str, percentile: float) -> tuple[object, dict[str, object]]:
    from onnxruntime.quantization import CalibrationMethod

    if observer not in OBSERVERS:
        raise ConfigError(f"observer must be one of {list(OBSERVERS)}, got {observer!r}")
    return {
        "minmax": (CalibrationMethod.MinMax, {}),
        "moving_average": (CalibrationMethod.MinMax, {"CalibMovingAverage": True, "CalibMovingAverageConstant": 0.01}),
        "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": percentile}),
        "histogram": (CalibrationMethod.Entropy, {}),
    }[observer]


def _float_nodes(model_path: Path, *, output_layer: bool) -> list[str]:
    """Nodes of an ONNX graph left out of int8 quantization (one read of the file): with ``output_layer`` the last
    Conv/Gemm/MatMul (the image output layer), and every LayerNormalization whose scale or bias has more than one
    dimension (a LayerNorm over a feature map's (C, H, W)): ONNX Runtime's QDQ quantizer fails on those (its
    int32-bias check compares an array as a scalar), so they stay in float between DequantizeLinear and
    QuantizeLinear."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    compute = [n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    dims = {i.name: len(i.dims) for i in graph.initializer}
    norms = [n.name for n in graph.node if n.op_type == "LayerNormalization"
             and any(dims.get(i, 0) > 1 for i in n.input[1:])]
    return (compute[-1:] if output_layer else []) + norms


@contextlib.contextmanager
def _depth_to_space_quantized() -> Iterator[None]:
    """Within the block, ONNX Runtime's QDQ quantizer treats DepthToSpace as a data-movement op (as it does
    Reshape, Transpose, Slice): it gets QuantizeLinear/DequantizeLinear around it, so ORT runs it on uint8.

    Exact for per-tensor activation scales (a permutation of values). The headline model's ORT int8
    profile (batch 64, 1 thread, median per node): DepthToSpace on the dequantized float tensor was
    the largest node (0.59 ms of 2.1 ms), 0.37 ms on uint8. Exporting PixelShuffle as Reshape/
    Transpose/Reshape instead (which the quantizer does wrap) was slower: ORT's 6-D uint8 Transpose
    took 1.17 ms. ORT's CPU DepthToSpace has a uint8 kernel; OpenVINO's graph is left as it was.
    """
    from onnxruntime.quantization.operators.direct_q8 import QDQDirect8BitOp
    from onnxruntime.quantization.registry import QDQRegistry

    had = "DepthToSpace" in QDQRegistry
    QDQRegistry.setdefault("DepthToSpace", QDQDirect8BitOp)
    try:
        yield
    finally:
        if not had:
            del QDQRegistry["DepthToSpace"]


def _unclash_intermediate_names(path: Path) -> None:
    """Rename the graph's intermediate tensors so none ends in a digit (in place).

    ONNX Runtime's quantizer gives the copy of a bias initializer shared by several nodes the name
    of the original plus a number (``val_12`` -> ``val_126``) without checking activation names;
    the exporter's ``val_N`` names then collide and a node reads the copied constant instead of
    its input (seen on GroupNorm -> InstanceNormalization sharing ``val_12`` in diffusers'
    attention decoder: the attention MatMul got a (16,) constant and ORT refused the file).
    Intermediate names ending in ``_t`` cannot be the original's name plus a number.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    rename = {o: f"{o}_t" for n in graph.node for o in n.output if o and o not in keep}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for info in graph.value_info:
        info.name = rename.get(info.name, info.name)
    onnx.save(model, str(path))


def quantize_onnx_int8(fp32_path: Path, path: Path, calibration: torch.Tensor | GenInputs, *, observer: str = ActivationQuant.observer,
                       percentile: float = ActivationQuant.percentile,
                       float_output_layer: bool = ActivationQuant.float_output_layer,
                       per_channel: bool = ActivationQuant.per_channel, symmetric: bool = ActivationQuant.symmetric,
                       scale_type: str = ActivationQuant.scale_type, int8_shuffles: bool = False,
                       reduce_range: bool | None = None) -> Path:
    """Static int8 QDQ quantization of an fp32 ONNX model: int8 weights (per channel or per tensor, symmetric
    or with a zero point, as ActivationQuant recorded), uint8 activations.

    ``reduce_range``: weights on 7 bits ([-64, 63]) so ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI
    do not saturate (their 16-bit sums of two uint8 x int8 products overflow on full-range weights: on an
    AVX2 EPYC the int8 SD-VAE decoder of tests/test_arch.py erred 0.31 of the images' spread at 8 bits,
    0.19 at 7); None: 7 bits where this machine is such a CPU (:func:`slimgen._env.int8_saturates`), else 8.
    The file's metadata says which (``slimgen_int8_weight_bits``).

    ``float_output_layer``: leave the last Conv/Gemm out of quantization (it runs in fp32).
    ``scale_type="pow2"``: every scale rounded up to a power of two (:func:`slimgen.export.fixedpoint.pow2_qdq`).
    ``int8_shuffles``: DepthToSpace too, between QuantizeLinear/DequantizeLinear like Reshape (see
    :func:`_depth_to_space_quantized`)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method, extra = _calibrate_options(observer, percentile)
    extra = {**extra, "WeightSymmetric": symmetric}
    if reduce_range is None:
        reduce_range = int8_saturates()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        _unclash_intermediate_names(pre)
        shuffles = _depth_to_space_quantized() if int8_shuffles else contextlib.nullcontext()
        # ORT prints its calibration progress to stdout, and logs on the root logger what it does about tensors it
        # cannot quantize per channel (1-D weights: "Axis 1 is out-of-range"); neither is about the user's model
        with shuffles, contextlib.redirect_stdout(io.StringIO()), _root_logger_at(logging.ERROR):
            quantize_static(str(pre), str(path), _LatentReader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, extra_options=extra, reduce_range=reduce_range,
                            nodes_to_exclude=_float_nodes(pre, output_layer=float_output_layer))
    _set_metadata(path, slimgen_int8_weight_bits="7" if reduce_range else "8")
    if scale_type == "pow2":
        from slimgen.export.fixedpoint import pow2_qdq

        pow2_qdq(path)
    return path


@contextlib.contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    """The root logger at ``level`` inside the block, its own level restored afterwards."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def _set_metadata(path: Path, **props: str) -> None:
    """Add (or replace) metadata entries of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export_generator_onnx(generator: nn.Module, spec: InputSpec, path: Path, *, int8: bool, meta: dict[str, Any],
                          calibration: torch.Tensor | GenInputs | int | None = None, dynamic_batch: bool = True,
                          observer: str | None = None, percentile: float | None = None,
                          float_output_layer: bool | None = None, rewrite: bool = False) -> Path:
    """Export a generator module (fp32, or int8 QDQ calibrated as ``meta["activation_quant"]`` records); see export_onnx.

    ``rewrite``: the graph for OpenVINO. fp32: every ConvTranspose2d rewritten exactly (Conv2d +
    DepthToSpace, or MatMul), BatchNorm folded and activations moved before DepthToSpace, because
    OpenVINO runs Convolution and FullyConnected in bf16/AMX but keeps Deconvolution in f32 (zoo
    teacher, batch 64, 1 thread: 24 ms as exported, 17.5 ms rewritten in f32, 6.0 ms rewritten in
    bf16). int8: the output layer is rewritten too (it stays float, as a Conv2d instead of an f32
    Deconvolution). Without ``rewrite`` (the int8 graph for ONNX Runtime): activations are moved
    before the shuffle too (ORT fuses them into QLinearConv), and DepthToSpace runs on uint8
    (:func:`_depth_to_space_quantized`).
    """
    generator = copy.deepcopy(generator).eval()
    if not int8:
        if rewrite:
            generator = fold_batchnorm(rewrite_conv_transpose(generator, spec.draw(2, seed=0)))
            generator = activations_before_shuffle(generator)
        return export_fp32(generator, path, spec, dynamic_batch=dynamic_batch)
    recorded = meta.get("activation_quant", {})
    given = state_of(generator).calibration if calibration is None else None  # the inputs quantize was given
    z = check_calibration(given if given is not None else calibration, spec, int(recorded.get("calibration", 512)))
    # folders quantized before these settings existed recorded none of them: their old behaviour
    legacy = {"percentile": 99.999, "float_output_layer": False} if recorded else {}
    settings = {**asdict(ActivationQuant()), **legacy, **recorded}
    float_last = settings["float_output_layer"] if float_output_layer is None else float_output_layer
    last = output_layer(generator)
    keep = (last.removesuffix(".weight"),) if float_last and last is not None and not rewrite else ()
    generator = prepare_for_int8(generator, z[:2], keep=keep)  # same outputs; Conv/MatMul that ONNX Runtime runs in int8
    generator = activations_before_shuffle(generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_fp32(generator, Path(tmp) / "fp32.onnx", spec, dynamic_batch=dynamic_batch)
        return quantize_onnx_int8(
            fp32, path, z, observer=observer or settings["observer"],
            percentile=percentile if percentile is not None else settings["percentile"], float_output_layer=float_last,
            per_channel=settings["per_channel"], symmetric=settings["symmetric"],
            scale_type=settings.get("scale_type", "float"), int8_shuffles=not rewrite)


def int8_by_default(bundle: ModelBundle) -> bool:
    """The export precision rule: a model quantized with int8 activations exports as int8, any other as fp32."""
    return bool(bundle.meta.get("activation_quant"))


def export_onnx(bundle: ModelBundle | nn.Module, path: str | Path | None = None, *, int8: bool | None = None,
                calibration: torch.Tensor | GenInputs | int | None = None, dynamic_batch: bool = True,
                observer: str | None = None, percentile: float | None = None,
                float_output_layer: bool | None = None, dequantize: bool = False) -> Path:
    """Export the generator to ONNX (default: ``<model folder>/model.onnx``); returns the path.

    ``bundle``: a model bundle, or a plain generator carrying its input contract and state
    (:mod:`slimgen.models.state`: its recorded activation settings are used).
    ``int8``: rewrite ConvTranspose2d exactly, then quantize statically (QDQ) with activation
    ranges from ``calibration`` inputs (GenInputs or latents (N, *latent_shape)); ``observer``,
    ``percentile`` and ``float_output_layer`` as in :class:`ActivationQuant`. Defaults: what
    ``ActivationQuant`` recorded, else ActivationQuant's defaults; without ``calibration``, the
    calibration contract's inputs (the same ones ``quantize`` recorded: n and seed).
    ``int8=None`` exports the folder as it is: int8 when it was quantized with int8 activations,
    else fp32. A folder with quantized weights is never written as float32 silently: without
    ``int8`` it raises ConfigError unless ``dequantize`` says the float32 copy is wanted.
    """
    if isinstance(bundle, nn.Module):
        from slimgen.models.pretrained import bundle_of

        bundle = bundle_of(bundle)
    out = _default_path(bundle, path)
    spec = _spec(bundle)
    if int8 is None:
        int8 = int8_by_default(bundle)
    check_not_silently_float(bundle, int8=int8, dequantize=dequantize)
    return export_generator_onnx(bundle.generator, spec, out, int8=int8, meta=bundle.meta, calibration=calibration,
                                 dynamic_batch=dynamic_batch, observer=observer, percentile=percentile,
                                 float_output_layer=float_output_layer)


def warn_if_saturating(path: str | Path, metadata: Mapping[str, str], runtime: str, *, stacklevel: int = 2) -> None:
    """Warn when the file at ``path`` (its ``metadata``) holds full-range int8 weights and this CPU's int8 kernels
    saturate on them (``runtime``'s: ONNX Runtime's and OpenVINO's alike, bench/results/int8_range.md)."""
    if metadata.get("slimgen_int8_weight_bits") == "8" and int8_saturates():
        warnings.warn(f"{path} holds full-range int8 weights, and this CPU has no VNNI: {runtime}'s int8 kernels "
                      "saturate on them here; export it again on this machine (7-bit weights)", stacklevel=stacklevel)


class OnnxGenerator(nn.Module):
    """An exported ONNX generator run by ONNX Runtime, callable like the generator: z (B, *latent_shape)
    [, y (B,) int64] -> (B, C, H, W)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        warn_if_saturating(path, self.session.get_modelmeta().custom_metadata_map, "ONNX Runtime", stacklevel=3)

    def run_numpy(self, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        return self.session.run(None, {"z": z} if y is None else {"z": z, "y": y})[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, onnx_feed(GenInputs(z, y)))[0])
