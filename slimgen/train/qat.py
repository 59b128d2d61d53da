"""Quantization-aware training, a preset of the one trainer: fine-tuning with a :class:`FakeQuant` hook
(fake quantization as ``torch.nn.utils.parametrize`` parametrizations on the weights), then real
quantization of the result. ``quantize(bundle, QuantAwareTraining(...), data=...)`` reaches it through
the quantizer registry (:func:`slimgen.quantize.apply.register_training`), so quantize never imports
the trainer.

Linear schemes and k-means with a fixed codebook use a straight-through estimator (forward:
the quantized weight; backward: identity). ``KMeansQuant(finetune_centroids=True)`` trains the
shared centroids instead (Deep Compression): the weight is ``codebook[indices]`` with fixed
indices, so each centroid's gradient is the sum over its cluster; the float weight it replaces
is frozen for the run (it gets no gradient, which DistributedDataParallel would reject).

Under torchrun the fine-tuning runs on every rank (:mod:`slimgen.train.finetune`) and every
rank quantizes the same result; the caller writes it from rank 0 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.models.folder import ModelBundle
from slimgen.quantize.apply import (
    codebook_encoding,
    layer_configs,
    quantizable_weights,
    quantize_in_place,
    register_training,
)
from slimgen.quantize.configs import KMeansQuant, LinearQuant, QuantAwareTraining
from slimgen.quantize.kmeans import _kmeans_codebook, codebook_of, nearest_centroid
from slimgen.quantize.linear import quantize_linear
from slimgen.train.finetune import FineTuning, finetune
from slimgen.train.trainer import Hook


class LinearFakeQuant(nn.Module):
    """w -> dequantize(quantize(w)) in the forward pass, identity gradient (STE)."""

    def __init__(self, config: LinearQuant, axis: int, per_channel: bool) -> None:
        super().__init__()
        self.config, self.axis, self.per_channel = config, axis, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        c = self.config
        deq = quantize_linear(w.detach(), c.bits, c.symmetric, self.per_channel, c.scale, axis=self.axis,
                              percentile=c.percentile).dequantize()
        return w + (deq - w).detach()


class CodebookSTE(nn.Module):
    """w -> its nearest centroid of a fixed codebook (K,) in the forward pass, identity gradient."""

    def __init__(self, codebook: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("codebook", codebook.clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.codebook[nearest_centroid(w, self.codebook)] - w).detach()


class SharedCentroids(nn.Module):
    """w -> codebook[indices]: the trainable codebook (K,) replaces the weight; indices are fixed."""

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.clone())
        self.register_buffer("indices", indices.clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.indices]


def _fake_quantizer(layer: nn.Module, axis: int, config: LinearQuant | KMeansQuant) -> nn.Module:
    if isinstance(config, LinearQuant):
        return LinearFakeQuant(config, axis, config.per_channel and getattr(layer, "groups", 1) == 1)
    codebook, idx = _kmeans_codebook(layer.weight, config.bits, config.init, config.iterations)
    return SharedCentroids(codebook, idx) if config.finetune_centroids else CodebookSTE(codebook)


def attach_fake_quant(module: nn.Module, config: LinearQuant | KMeansQuant) -> list[nn.Module]:
    """Parametrize every Conv/ConvTranspose/Linear weight of ``module`` in place; returns the layers."""
    layers = []
    found = layer_configs(module, config) if isinstance(config, LinearQuant) else [
        (name, layer, axis, config) for name, layer, axis in quantizable_weights(module)]
    for _, layer, axis, layer_config in found:
        if parametrize.is_parametrized(layer, "weight"):
            raise ConfigError("a layer already carries a weight parametrization; remove it before QAT")
        quantizer = _fake_quantizer(layer, axis, layer_config)
        parametrize.register_parametrization(layer, "weight", quantizer, unsafe=True)
        if isinstance(quantizer, SharedCentroids):  # the codebook trains; the float weight is unused
            layer.parametrizations.weight.original.requires_grad_(False)
        layers.append(layer)
    return layers


def detach_fake_quant(module: nn.Module) -> None:
    """Replace every weight parametrization by the (fake-quantized) value it computes, trainable again."""
    for _, layer, _ in quantizable_weights(module):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer.weight.requires_grad_(True)


def _finalize_kmeans(module: nn.Module, config: KMeansQuant) -> dict[str, Any]:
    encodings = {}
    for name, layer, _ in quantizable_weights(module):
        if codebook_of(layer.weight, config.bits) is None:
            raise ConfigError(f"{name}: more than 2^{config.bits} distinct values after QAT")
        encodings[name] = codebook_encoding(config)
    return encodings


class FakeQuant(Hook):
    """Trainer hook: the model's weights fake-quantized with ``config`` for the run (straight-through or
    shared centroids), then the parametrizations replaced by the values they compute."""

    def __init__(self, config: LinearQuant | KMeansQuant) -> None:
        self.config = config

    def start(self, model: nn.Module) -> None:
        attach_fake_quant(model, self.config)

    def end(self, model: nn.Module) -> None:
        detach_fake_quant(model)


@register_training(QuantAwareTraining)
def quantize_aware(bundle: ModelBundle, config: QuantAwareTraining, *, data: ImageSet | None = None,
                   score: Callable[[nn.Module], float] | None = None, checkpoint_dir: str | Path | None = None,
                   resume: bool = False, device: str = "cpu") -> ModelBundle:
    """Fine-tune the generator with fake-quantized weights (teacher: ``bundle`` as it is), then quantize
    for real with ``config.weights``; returns a new bundle.

    Under torchrun ``config.batch_size`` is the global batch (see :func:`slimgen.train.finetune.finetune`).
    """
    if data is None:
        raise ConfigError("quantization-aware training needs real images: pass data=ImageSet")
    weights = config.weights
    if tuple(weights.parts) != ("generator",):
        raise ConfigError("quantization-aware training quantizes the generator only: use parts=('generator',)")
    ft = FineTuning(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                    teacher_weight=config.teacher_weight, steps_per_epoch=config.steps_per_epoch)
    out = finetune(bundle, ft, data=data, teacher=bundle, score=score, checkpoint_dir=checkpoint_dir,
                   resume=resume, device=device, hooks=(FakeQuant(weights),))
    if isinstance(weights, KMeansQuant):
        encodings = _finalize_kmeans(out.generator, weights)
    else:
        encodings = quantize_in_place(out.generator, weights)
    out.encodings = {**out.encodings, **{f"generator.{k}": v for k, v in encodings.items()}}
    step = {"step": "quantize", "method": "QuantAwareTraining", **{k: v for k, v in asdict(config).items() if k != "weights"},
            "weights": {"method": type(weights).__name__, **asdict(weights)}}
    return out.with_step(step)
