"""The ``prune`` verb: a registry of handlers keyed on the config class, for modules and model folders."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, TypeVar

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.cost import count_params
from slimgen.methods import MethodContext, register_method
from slimgen.models import ModelBundle, build, generate_all, set_inputs
from slimgen.models.inputs import CALIBRATION_SEED, GenInputs, calibration_inputs, carried_inputs
from slimgen.models.layers import resolve_config, uses_selectors
from slimgen.models.pretrained import detached_copy
from slimgen.models.state import add_encodings, record_step
from slimgen.prune.calibration import PruneContext, resolve_importance, resolve_loss
from slimgen.prune.configs import (
    ChannelPruning,
    GradientPruning,
    KernelPruning,
    LowRankFactorization,
    MagnitudePruning,
    RandomPruning,
    ThresholdPruning,
)
from slimgen.prune.kernel import prune_kernels
from slimgen.prune.lowrank import factorize_layers
from slimgen.prune.structured import UNPRUNED, kept_layers, prune_channels, root_widths, unpruned_layers
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
C = TypeVar("C")
SPARSE_CODEC = "sparse_bitmask"
CALIBRATION_N = 256


def register_pruner(config_type: type, name: str, *, on_context: Callable[[Any, MethodContext], None] | None = None
                    ) -> Callable[[Handler], Handler]:
    """Register ``handler(model, config, ctx) -> (pruned model, names of weight tensors left sparse)``.

    A handler prunes ``model`` in place and returns it (channel pruning may return the model's
    width-agnostic graph module instead); unstructured handlers leave their masks attached.
    The method is registered once: :func:`prune` dispatches on ``config_type``, and ``name`` is
    its recipe step and ``slimgen apply`` name (:mod:`slimgen.methods`; ``on_context`` as there).
    """
    def deco(fn: Handler) -> Handler:
        PRUNERS[config_type] = fn
        register_method(name, config_type, on_context=on_context)(_prune_step)
        return fn

    return deco


def _prune_step(model: Any, config: object, ctx: MethodContext) -> Any:
    """A pruning method as a step: :func:`prune` with the calibration contract's inputs (recorded in the step)."""
    return prune(model, config)


def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> tuple[nn.Module, list[str]]:
    attach_masks(model, masks)
    return model, [f"{name}.weight" for name in masks]


@register_pruner(MagnitudePruning, "prune_magnitude")
def _magnitude(model: nn.Module, config: MagnitudePruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = magnitude_scores(model)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=config.threshold, scope=config.scope))


@register_pruner(RandomPruning, "prune_random")
def _random(model: nn.Module, config: RandomPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = random_scores(model, seed=config.seed)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=None, scope=config.scope))


@register_pruner(GradientPruning, "prune_gradient")
def _gradient(model: nn.Module, config: GradientPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    scores = gradient_scores(model, ctx, criterion=config.criterion, loss=config.loss, batch_size=config.batch_size)
    return _apply_masks(model, masks_for(scores, sparsity=config.sparsity, threshold=config.threshold, scope=config.scope))


@register_pruner(ThresholdPruning, "prune_threshold")
def _threshold(model: nn.Module, config: ThresholdPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    return _apply_masks(model, threshold_masks(magnitude_scores(model), config.threshold))


@register_pruner(ChannelPruning, "prune_channels")
def _channels(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    return prune_channels(model, config, ctx), []


@register_pruner(KernelPruning, "prune_kernel")
def _kernel(model: nn.Module, config: KernelPruning, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    return prune_kernels(model, config, ctx), []


def _factorize_target(config: LowRankFactorization, ctx: MethodContext) -> None:
    """``teacher: true``: what later training steps learn from is factorized the same way (a new model; the
    run's teacher, which quality is reported against, stays as it is)."""
    if not config.teacher or ctx.learn_from is None:
        return
    with warnings.catch_warnings():  # the step's own run says it
        warnings.simplefilter("ignore")
        target = prune(ctx.learn_from, replace(config, teacher=False))
    if not target.steps[-1].get("factorized_layers"):  # required: false and nothing to factorize: the same teacher
        return
    ctx.target = target
    layers = ", ".join(ctx.target.steps[-1].get("factorized_layers") or []) or "none"
    change = f"factorized like prune_lowrank (rank {config.rank or f'for energy {config.energy}'}: {layers})"
    ctx.target_note = f"{ctx.target_note}, then {change}" if ctx.target_note else f"the run's teacher {change}"


@register_pruner(LowRankFactorization, "prune_lowrank", on_context=_factorize_target)
def _lowrank(model: nn.Module, config: LowRankFactorization, ctx: PruneContext) -> tuple[nn.Module, list[str]]:
    model, done, left = factorize_layers(model, config, ctx)
    ctx.notes.update(factorized_layers=done, kept_layers=left)
    return model, []


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


Inputs = torch.Tensor | GenInputs


def prune(model: M, config: object, *, example_inputs: Inputs | None = None,
          calibration: Inputs | None = None, part: str = "generator") -> M:
    """Return a pruned copy of ``model`` (an ``nn.Module`` or a ``ModelBundle``); the input is left unchanged.

    ``example_inputs``: one batch the model accepts, a tensor (B, ...) or generator inputs
    (needed by ChannelPruning). ``calibration``: N such inputs for data-driven scores
    (gradient, activation, taylor). Both default to the calibration contract's inputs
    (:func:`slimgen.models.inputs.calibration_inputs`) when the generator carries its input
    contract (a module from a model folder or with ``set_inputs``; for a bundle, ``part`` names
    the part to prune and the other parts get the generator's images). Pruned weights get a
    sparse storage encoding and the step is recorded, on the module's state or in the bundle.
    """
    if isinstance(model, ModelBundle):
        return _prune_bundle(model, config, part=part, example_inputs=example_inputs, calibration=calibration)
    out = detached_copy(model)
    spec = carried_inputs(out) if calibration is None else None
    if spec is not None:
        calibration = calibration_inputs(spec, CALIBRATION_N)
    ctx = PruneContext(example_inputs=example_inputs, calibration=calibration)
    config = _resolved(config, out, ctx)
    out, sparse = prune_module(out, config, ctx)  # channel pruning may return the model's rewritten graph
    add_encodings(out, {name: Encoding(SPARSE_CODEC) for name in sparse})
    record_step(out, {**_step_record(config, ctx, count_params(model), count_params(out), calibrated=spec is not None),
                      **ctx.notes})
    return out


def _resolved(config: C, model: nn.Module, ctx: PruneContext) -> C:
    """``config`` with its ``<first>`` / ``<last>`` layer names made the model's own (:mod:`slimgen.models.layers`);
    the step records the resolved names."""
    if not uses_selectors(config):
        return config
    return resolve_config(config, model, ctx.need_example_inputs("a <first> / <second> / <last> layer name"))


def _step_record(config: object, ctx: PruneContext, before: int, after: int, *, part: str = "generator",
                 calibrated: bool) -> dict[str, Any]:
    step: dict[str, Any] = {"step": "prune", "method": type(config).__name__, "part": part, "config": asdict(config),
                            "params_before": before, "params_after": after}
    if calibrated and ctx.calibration is not None:
        step["calibration"] = {"n": len(ctx.calibration), "seed": CALIBRATION_SEED}
    if hasattr(config, "loss"):
        step["loss_used"] = resolve_loss(config.loss, ctx.critic)
    if hasattr(config, "importance"):
        step["importance_used"] = resolve_importance(config.importance, ctx)
    return step


def bundle_context(bundle: ModelBundle, part: str, *, example_inputs: Inputs | None = None,
                   calibration: Inputs | None = None, n: int = CALIBRATION_N) -> PruneContext:
    """Default inputs for pruning ``bundle.parts[part]``: the calibration contract's generator inputs for the
    generator, the generator's images of them (in its ``image_range``) for other parts."""
    if part not in bundle.parts:
        raise ConfigError(f"no part {part!r} to prune; this model has: {', '.join(bundle.parts)}")
    critic = bundle.discriminator if part == "generator" else None
    inputs: Inputs
    if part == "generator":
        if bundle.inputs is None:
            raise ConfigError("the model records no input contract; pass example_inputs and calibration")
        inputs = calibration_inputs(bundle.inputs, n)
    else:
        # the generator's images in its own image_range: what its discriminator reads
        inputs = bundle.inputs.to_native(generate_all(bundle.generator, calibration_inputs(bundle.inputs, n))) \
            if "generator" in bundle.parts and bundle.inputs is not None else torch.zeros(2, *bundle.image_shape)
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


def _prune_bundle(bundle: ModelBundle, config: object, *, part: str, example_inputs: Inputs | None,
                  calibration: Inputs | None) -> ModelBundle:
    out = bundle.copy()
    ctx = bundle_context(out, part, example_inputs=example_inputs, calibration=calibration)
    module = out.parts[part]
    config = _resolved(config, module, ctx)
    before = count_params(module)
    kept = kept_layers(module, ctx.need_example_inputs("ChannelPruning"), config.ignore) \
        if isinstance(config, ChannelPruning) else None
    widths = root_widths(module, kept or {})
    module, sparse = prune_module(module, config, ctx)
    if kept is not None:
        extra = ctx.notes.pop("kept_to_run", {})
        if extra:  # layers the pruning kept whole so the model runs: listed with what shares their channels
            kept = kept_layers(module, ctx.need_example_inputs("ChannelPruning"), (*config.ignore, *extra), extra)
        kept.update({name: UNPRUNED for name in unpruned_layers(module, widths, config) if name not in kept})
    out.parts[part] = module
    if part == "generator" and out.inputs is not None:
        set_inputs(module, out.inputs)
    for name in sparse:
        out.encodings[f"{part}.{name}"] = Encoding(SPARSE_CODEC)
    _refresh_widths(out, part)
    step = _step_record(config, ctx, before, count_params(module), part=part, calibrated=calibration is None)
    if kept is not None:
        step["kept_layers"] = kept
    step.update(ctx.notes)
    return out.with_step(step).sync_state()
