"""The ``quantize`` verb: a registry of handlers keyed on the config class, plus module surgery.

A handler quantizes the weights of one module in place (float weights become the dequantized
values, so the model runs unchanged) and returns the storage encodings of those weights,
keyed by state-dict name. On a :class:`ModelBundle` the encodings are recorded per tensor, so
``model.safetensors`` holds the packed integers and ``config.json`` the scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, TypeVar

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.methods import MethodContext, register_method
from slimgen.models.folder import ModelBundle
from slimgen.models.inputs import CALIBRATION_SEED, GenInputs, InputSpec, as_inputs, calibration_inputs, carried_inputs
from slimgen.models.layers import resolve_config, uses_selectors
from slimgen.models.pretrained import detached_copy
from slimgen.models.state import add_encodings, record_step, state_of
from slimgen.models.surgery import conv_weight_of, users_layer
from slimgen.quantize.configs import (
    ActivationQuant,
    KMeansQuant,
    LinearQuant,
    NaiveQuant,
    Quantization,
    parse_quantization,
)
from slimgen.quantize.kmeans import _kmeans_codebook, codebook_of
from slimgen.quantize.linear import naive_quantize, quantize_linear
from slimgen.storage import Encoding

Model = TypeVar("Model", nn.Module, ModelBundle)
Handler = Callable[[nn.Module, Any, "torch.Tensor | None"], dict[str, Encoding]]
_HANDLERS: dict[type, Handler] = {}


_TRAINING: dict[type, Callable[..., ModelBundle]] = {}


def register_quantizer(config_cls: type) -> Callable[[Handler], Handler]:
    """Register ``fn(module, config, calibration) -> {weight name: Encoding}`` for ``config_cls``."""
    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_cls] = fn
        return fn
    return deco


def register_training(config_cls: type) -> Callable[[Callable[..., ModelBundle]], Callable[..., ModelBundle]]:
    """Register ``fn(bundle, config, **train) -> ModelBundle`` for a scheme that trains (quantization-aware
    training, :mod:`slimgen.train.qat`): the trainer registers itself here, so this layer never imports it."""
    def deco(fn: Callable[..., ModelBundle]) -> Callable[..., ModelBundle]:
        _TRAINING[config_cls] = fn
        return fn
    return deco


def quantize_in_place(module: nn.Module, config: Any, calibration: torch.Tensor | None = None) -> dict[str, Encoding]:
    """Run ``config``'s registered handler on ``module`` in place; returns ``{weight name: Encoding}``."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no quantizer for {type(config).__name__}; known: {', '.join(sorted(_known()))}")
    return handler(module, config, calibration)


def _known() -> list[str]:
    return [c.__name__ for c in (*_HANDLERS, *_TRAINING)]


def quantizable_weights(module: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(state-dict name of the weight, layer, output-channel axis) for every Conv/ConvTranspose/Linear, and every
    layer of the model's own classes with a conv-shaped ``weight`` (1, ..., C_out, C_in, k, k) (a StyleGAN2
    modulated conv, whose forward scales that weight per sample) or a 2-D one (a hand-written linear; axis 0, its
    rows, whichever way its forward reads them: per-row scales dequantize exactly either way).

    The output-channel axis is 0 for Conv and Linear weights (out, in, ...) and 1 for
    ConvTranspose weights (in, out / groups, ...); a modulated conv's is its C_out.
    """
    found = []
    for name, layer in module.named_modules():
        key = f"{name}.weight" if name else "weight"
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            found.append((key, layer, 1))
        elif isinstance(layer, nn.modules.conv._ConvNd | nn.Linear):
            found.append((key, layer, 0))
        elif (own := conv_weight_of(layer)) is not None:
            found.append((key, layer, own[1]))
        elif users_layer(layer) and isinstance(w := layer._parameters.get("weight"), nn.Parameter) and w.ndim == 2:
            found.append((key, layer, 0))  # a hand-written linear (rosinality's EqualLinear): one scale per row
    return found


def _set_weight(layer: nn.Module, value: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(value)


def check_calibration(calibration: torch.Tensor | GenInputs | int | None, spec: InputSpec | None, n: int) -> GenInputs:
    """Calibration inputs: the given ones (GenInputs, or latents (N, *latent_shape)), or the calibration
    contract's inputs drawn from ``spec`` (:func:`slimgen.models.inputs.calibration_inputs`): ``calibration``
    of them when it is a number, else ``n``; never empty."""
    if calibration is None or isinstance(calibration, int):
        if spec is None:
            raise ConfigError("calibration inputs are needed: this model carries no input contract to draw them from")
        return calibration_inputs(spec, n if calibration is None else calibration)
    inputs = as_inputs(calibration)
    if len(inputs) == 0 or inputs.z.numel() == 0:
        raise ConfigError("calibration set is empty: pass at least one input (N, *latent_shape) with N >= 1")
    return inputs


def activation_settings(config: ActivationQuant, calibration: GenInputs, *, drawn: bool) -> dict[str, Any]:
    """What ActivationQuant records (on the module and in config.json) for the int8 export to calibrate with."""
    settings: dict[str, Any] = {"bits": config.bits, "observer": config.observer, "calibration": len(calibration),
                                "percentile": config.percentile, "float_output_layer": config.float_output_layer,
                                "per_channel": config.per_channel, "symmetric": config.symmetric}
    if config.scale_type != "float":  # float scales are what a folder without the key always meant
        settings["scale_type"] = config.scale_type
    if drawn:
        settings["calibration_seed"] = CALIBRATION_SEED
    else:
        settings["calibration_inputs"] = "given"  # kept on the model and in calibration.safetensors
    return settings


def output_layer(module: nn.Module) -> str | None:
    """Weight name of the image output layer: the last Conv/ConvTranspose/Linear in module order (the
    ONNX export picks the last one in graph order; the two agree for sequential generators)."""
    found = quantizable_weights(module)
    return found[-1][0] if found else None


def layer_configs(module: nn.Module, config: LinearQuant) -> list[tuple[str, nn.Module, int, LinearQuant]]:
    """:func:`quantizable_weights` with each layer's settings: a layer named in ``config.layer_bits`` at
    its own bits, else the :func:`output_layer` at ``config.output_layer_bits`` when set, every other
    layer at ``config.bits``. A ``layer_bits`` name that is no quantizable layer is a ConfigError."""
    found = quantizable_weights(module)
    layers = {name.removesuffix("weight").rstrip("."): name for name, _, _ in found}
    unknown = sorted(set(config.layer_bits) - set(layers))
    if unknown:
        raise ConfigError(f"layer_bits names no Conv/ConvTranspose/Linear layer of the model: {', '.join(unknown)} "
                          f"(its layers: {', '.join(layers) or 'none'})")
    bits = {layers[n]: b for n, b in config.layer_bits.items()}
    last = output_layer(module)
    if last is not None and last not in bits and config.output_layer_bits:
        bits[last] = config.output_layer_bits
    return [(name, layer, axis, replace(config, bits=bits[name]) if name in bits else config)
            for name, layer, axis in found]


@register_quantizer(LinearQuant)
def _linear(module: nn.Module, config: LinearQuant, calibration: torch.Tensor | None, *,
            skip: tuple[str, ...] = ()) -> dict[str, Encoding]:
    encodings = {}
    for name, layer, axis, layer_config in layer_configs(module, config):
        if name in skip:
            continue
        per_channel = layer_config.per_channel and getattr(layer, "groups", 1) == 1
        qt = quantize_linear(layer.weight, layer_config.bits, layer_config.symmetric, per_channel, layer_config.scale,
                             axis=axis, percentile=layer_config.percentile, scale_type=layer_config.scale_type)
        _set_weight(layer, qt.dequantize())
        grid: dict[str, Any] = {"scale": qt.scale.reshape(-1).tolist()}
        if layer_config.scale_type == "pow2":  # fixed point: w = q * 2^-exponent, the exponents stored instead of scales
            grid = {"scale_type": "pow2", "exponent": qt.exponent.reshape(-1).tolist()}
        encodings[name] = Encoding("linear", {
            "bits": layer_config.bits, "symmetric": layer_config.symmetric, "axis": qt.axis, "scale_method": layer_config.scale,
            **grid, "zero_point": qt.zero_point.reshape(-1).tolist(), "entropy": layer_config.entropy_coding})
    return encodings


@register_quantizer(KMeansQuant)
def _kmeans(module: nn.Module, config: KMeansQuant, calibration: torch.Tensor | None) -> dict[str, Encoding]:
    encodings = {}
    for name, layer, _ in quantizable_weights(module):
        codebook, idx = _kmeans_codebook(layer.weight, config.bits, config.init, config.iterations)
        _set_weight(layer, codebook[idx])
        encodings[name] = codebook_encoding(config)
    return encodings


def codebook_encoding(config: KMeansQuant) -> Encoding:
    return Encoding("codebook", {"bits": config.bits, "entropy": config.entropy_coding, "method": "kmeans",
                                 "init": config.init})


@register_quantizer(NaiveQuant)
def _naive(module: nn.Module, config: NaiveQuant, calibration: torch.Tensor | None) -> dict[str, Encoding]:
    encodings = {}
    for name, layer, _ in quantizable_weights(module):
        _set_weight(layer, naive_quantize(layer.weight.detach(), config.bits))
        # up to 2^b + 1 levels: the codebook codec stores them with b + 1 bit indices
        bits = config.bits + 1 if codebook_of(layer.weight, config.bits) is None else config.bits
        encodings[name] = Encoding("codebook", {"bits": bits, "entropy": "none", "method": "naive"})
    return encodings


@register_quantizer(ActivationQuant)
def _activations(module: nn.Module, config: ActivationQuant, calibration: torch.Tensor | None) -> dict[str, Encoding]:
    """int8 per-channel symmetric weights (the :func:`output_layer`'s stay float with ``float_output_layer``);
    activations are quantized at ONNX export (see export_onnx)."""
    last = output_layer(module)
    skip = (last,) if config.float_output_layer and last is not None else ()
    weights = LinearQuant(bits=8, symmetric=config.symmetric, per_channel=config.per_channel, scale=config.scale,
                          entropy_coding=config.entropy_coding, scale_type=config.scale_type)
    return _linear(module, weights, calibration, skip=skip)


def _step(config: Any) -> dict[str, Any]:
    return {"step": "quantize", "method": type(config).__name__, **asdict(config)}


def quantize(model: Model, config: Any, *, calibration: torch.Tensor | GenInputs | int | None = None, **train: Any) -> Model:
    """Quantize a module or a bundle's parts (``config.parts``); returns a quantized copy of the same type.

    ``calibration``: for ActivationQuant, inputs (GenInputs or latents (N, *latent_shape)), not
    empty, or a number N of the calibration contract's inputs (default ``config.calibration``).
    The model records the observer and N; the activation ranges are calibrated when the int8
    model is built (:func:`slimgen.export.export_onnx`) on the same inputs: given ones are kept
    on the model (and saved with it as ``calibration.safetensors``), else the contract's N
    inputs drawn with seed ``CALIBRATION_SEED``.
    ``train``: keyword arguments of quantization-aware training (``data=`` real images, and
    optionally ``score=``, ``checkpoint_dir=``, ``resume=``, ``device=``).
    """
    if isinstance(config, Quantization):
        for one in config.steps:
            model = quantize(model, one, calibration=calibration)
        return model
    trains = _TRAINING.get(type(config))
    if trains is not None:
        if not isinstance(model, ModelBundle):
            raise ConfigError(f"{type(config).__name__} needs a ModelBundle (generator and discriminator)")
        return trains(model, config, **train)  # type: ignore[return-value]
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no quantizer for {type(config).__name__}; known: {', '.join(sorted(_known()))}")
    if isinstance(model, nn.Module):
        return _quantize_module(model, config, handler, calibration)
    return _quantize_bundle(model, config, handler, calibration)


def _given(calibration: object) -> bool:
    """Whether ``calibration`` is inputs themselves (kept and exported with), not a count drawn by the contract."""
    return isinstance(calibration, torch.Tensor | GenInputs)


def _quantize_module(model: nn.Module, config: Any, handler: Handler, calibration: torch.Tensor | GenInputs | None
                     ) -> nn.Module:
    """A quantized copy of a plain module; its state gains the encodings (and activation settings)."""
    module = detached_copy(model)
    if uses_selectors(config):  # <first> / <second> / <last>: one forward pass on the contract's inputs or the given ones
        spec = carried_inputs(module)
        example = calibration_inputs(spec, 2) if spec is not None else \
            as_inputs(calibration)[:2] if _given(calibration) else None
        config = resolve_config(config, module, example)
    step = _step(config)
    if isinstance(config, ActivationQuant):
        z = check_calibration(calibration, carried_inputs(module), config.calibration)
        state_of(module).activation_quant = activation_settings(config, z, drawn=not _given(calibration))
        state_of(module).calibration = z if _given(calibration) else None
        step["calibration"] = len(z)
    add_encodings(module, handler(module, config, calibration))
    record_step(module, step)
    return module


def _example(bundle: ModelBundle, part: str) -> GenInputs | torch.Tensor | None:
    """Inputs one forward pass of a part runs on, to resolve ``<first>`` / ``<last>`` layer names: the input
    contract's for the generator, images for the other parts."""
    if part == "generator":
        return calibration_inputs(bundle.inputs, 2) if bundle.inputs is not None else None
    return torch.zeros(2, *bundle.image_shape) if bundle.image_shape else None


def _quantize_bundle(bundle: ModelBundle, config: Any, handler: Handler, calibration: torch.Tensor | None) -> ModelBundle:
    missing = [p for p in config.parts if p not in bundle.parts]
    if missing:
        raise ConfigError(f"cannot quantize part(s) {missing}: this model has {sorted(bundle.parts)}")
    out = bundle.copy()
    configs = {part: resolve_config(config, out.parts[part], _example(out, part)) if uses_selectors(config) else config
               for part in config.parts}
    step = _step(configs[config.parts[0]] if config.parts else config)
    if isinstance(config, ActivationQuant):
        z = check_calibration(calibration, out.inputs, config.calibration)
        out.meta = {**out.meta, "activation_quant": activation_settings(config, z, drawn=not _given(calibration))}
        out.calibration = z if _given(calibration) else None
        step["calibration"] = len(z)
    for part in config.parts:
        encodings = handler(out.parts[part], configs[part], calibration)
        out.encodings = {**out.encodings, **{f"{part}.{k}": v for k, v in encodings.items()}}
    return out.with_step(step).sync_state()


@register_method("quantize", Quantization, parse=parse_quantization,
                 needs_onnx=lambda config: any(isinstance(one, ActivationQuant) for one in config.steps))
def quantize_step(model: Model, config: Quantization, ctx: MethodContext) -> Model:
    """The recipe's ``quantize`` step: weights and/or int8 activations (calibration contract: n and seed recorded)."""
    return quantize(model, config)

