"""The ``prune`` verb: a registry of handlers keyed on the config class, for modules and model folders."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.cost import count_params
from slimgen.models import ModelBundle, build, generate_all, sample_latents, set_inputs
from slimgen.prune.calibration import PruneContext, resolve_loss
from slimgen.prune.configs import ChannelPruning, GradientPruning, MagnitudePruning, RandomPruning, ThresholdPruning
from slimgen.prune.structured import kept_layers, prune_channels
from slimgen.prune.unstructured import (
    attach_masks,
    gradient_scores,
    magnitude_scores,
    make_permanent,
    masks_for,
    random_scores,
    threshold_masks,
)
from slimgen.storage import Encoding

Handler = Callable[[nn.Module, Any, PruneContext], tuple[nn.Module, list[str]]]
PRUNERS: dict[type, Handler] = {}
M = TypeVar("M", nn.Module, ModelBundle)
SPARSE_CODEC = "sparse_bitmask"
CALIBRATION_N = 256


def register_pruner(config_type: type) -> Callable[[Handler], Handler]:
    """Register ``handler(model, config, ctx) -> (pruned model, names of weight tensors left sparse)``.

    A handler prunes ``model`` in place and returns it (channel pruning may return the model's
    width-agnostic graph module instead); unstructured handlers leave their masks attached.
    """
    def deco(fn: Handler) -> Handler:
        PRUNERS[config_type] = fn
        return fn

    return deco


def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> tuple[nn.Module, list[str]]:
    attach_masks(model, masks)
    return model, [f"{name}.weight" for name in masks]


@register_pruner(MagnitudePruning)
def _magnitude(model: nn.Module, config: MagnitudePruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = magnitude_scores(model)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=config.threshold, scope=config.scope))


@register_pruner(RandomPruning)
def _random(model: nn.Module, config: RandomPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = random_scores(model, seed=config.seed)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=None, scope=config.scope))


@register_pruner(GradientPruning)
def _gradient(model: nn.Module, config: GradientPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = gradient_scores(model, ctx, criterion=config.criterion, loss=config.loss, batch_size=config.batch_size)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=config.threshold, scope=config.scope))


@register_pruner(ThresholdPruning)
def _threshold(model: nn.Module, config: ThresholdPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    return _apply_masks(model, threshold_masks(magnitude_scores(model), config.threshold))


@register_pruner(ChannelPruning)
def _channels(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    return prune_channels(model, config, ctx), []


def _handler(config: object) -> Handler:
    handler = PRUNERS.get(type(config))
    if handler is None:
        known = ", ".join(t.__name__ for t in PRUNERS)
        raise ConfigError(f"no pruning method for {type(config).__name__}; known: {known}")
    return handler


def prune_module(model: nn.Module, config: object, ctx: PruneContext, *, keep_masks: bool = False) -> tuple[
        nn.Module, list[str]]:
    """Prune ``model`` in place; returns it and the names of the weights left sparse.

    With ``keep_masks`` the torch.nn.utils.prune masks stay attached (for fine-tuning), else
    they are folded into the weights.
    """
    model, sparse = _handler(config)(model, config, ctx)
    if not keep_masks:
        make_permanent(model)
    return model, sparse


def prune(model: M, config: object, *, example_inputs: torch.Tensor | None = None,
          calibration: torch.Tensor | None = None, part: str = "generator") -> M:
    """Return a pruned copy of ``model`` (an ``nn.Module`` or a ``ModelBundle``); the input is left unchanged.

    ``example_inputs``: one batch (B, ...) the model accepts (needed by ChannelPruning).
    ``calibration``: (N, ...) inputs for data-driven scores (gradient, activation, taylor).
    For a bundle, ``part`` names the part to prune; both default to latents (generator) or the
    generator's images (other parts), pruned weights get a sparse storage encoding, and the
    step is recorded in the bundle's history.
    """
    if isinstance(model, ModelBundle):
        return _prune_bundle(model, config, part=part, example_inputs=example_inputs, calibration=calibration)
    ctx = PruneContext(example_inputs=example_inputs, calibration=calibration)
    return prune_module(copy.deepcopy(model), config, ctx)[0]


def bundle_context(bundle: ModelBundle, part: str, *, example_inputs: torch.Tensor | None = None,
                   calibration: torch.Tensor | None = None, n: int = CALIBRATION_N) -> PruneContext:
    """Default inputs for pruning ``bundle.parts[part]``: latents for the generator, its images for other parts."""
    if part not in bundle.parts:
        raise ConfigError(f"no part {part!r} to prune; this model has: {', '.join(bundle.parts)}")
    critic = bundle.discriminator if part == "generator" else None
    if part == "generator":
        if bundle.inputs is None:
            raise ConfigError("the generator part has no input contract (inputs/latent_dim); pass example_inputs and calibration")
        drawn = bundle.inputs.draw(n, seed=12345)  # z (n, *latent_shape), y (n,) for a conditional generator
        if drawn.y is not None:  # G(z, y): the pruner runs it on (z, y); calibration batches are latents only
            example = example_inputs if example_inputs is not None else drawn[:2].args()
            return PruneContext(example_inputs=example, calibration=calibration, critic=None)  # type: ignore[arg-type]
        inputs = drawn.z
    else:
        inputs = generate_all(bundle.generator, sample_latents(n, bundle.latent_dim or 1, seed=12345)) \
            if "generator" in bundle.parts and bundle.latent_dim else torch.zeros(2, *bundle.image_shape)
    example = example_inputs if example_inputs is not None else inputs[:2]
    return PruneContext(example_inputs=example, calibration=calibration if calibration is not None else inputs,
                        critic=critic)


def _refresh_widths(bundle: ModelBundle, part: str) -> None:
    """Update a part's ``widths`` kwarg to its pruned layer widths when that rebuilds exactly the same shapes.

    Generic guess: the out-channels of the first len(widths) layers. If a fresh build with
    those widths does not reproduce every tensor shape, the kwargs stay and the shapes
    recorded in config.json describe the pruned layers instead.
    """
    spec, module = bundle.specs[part], bundle.parts[part]
    widths = spec.kwargs.get("widths")
    layers = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    if not isinstance(widths, list) or len(layers) != len(widths) + 1:
        return
    guess = [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers[:-1]]
    kwargs = {**spec.kwargs, "widths": guess}
    try:
        fresh = build(spec.arch, kwargs).state_dict()
    except Exception:  # any failure means the guess is wrong; the shapes in config.json still work
        return
    current = module.state_dict()
    if fresh.keys() == current.keys() and all(fresh[k].shape == v.shape for k, v in current.items()):
        spec.kwargs = kwargs


def _prune_bundle(bundle: ModelBundle, config: object, *, part: str, example_inputs: torch.Tensor | None,
                  calibration: torch.Tensor | None) -> ModelBundle:
    out = bundle.copy()
    ctx = bundle_context(out, part, example_inputs=example_inputs, calibration=calibration)
    module = out.parts[part]
    before = count_params(module)
    kept = kept_layers(module, ctx.need_example_inputs("ChannelPruning"), config.ignore) \
        if isinstance(config, ChannelPruning) else None
    module, sparse = prune_module(module, config, ctx)
    out.parts[part] = module
    if part == "generator" and out.inputs is not None:
        set_inputs(module, out.inputs)
    for name in sparse:
        out.encodings[f"{part}.{name}"] = Encoding(SPARSE_CODEC)
    _refresh_widths(out, part)
    step: dict[str, Any] = {"step": "prune", "method": type(config).__name__, "part": part, "config": asdict(config),
                            "params_before": before, "params_after": count_params(module)}
    if kept is not None:
        step["kept_layers"] = kept
    if hasattr(config, "loss"):
        step["loss_used"] = resolve_loss(config.loss, ctx.critic)
    return out.with_step(step)
