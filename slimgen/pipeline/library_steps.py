"""Recipe steps backed by the library's own configs and verbs (no second code path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimgen.distill import Distillation, distill
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle
from slimgen.models.inputs import GenInputs, calibration_inputs
from slimgen.pipeline.steps import RunContext, register_step
from slimgen.prune import (
    ChannelPruning,
    GradientPruning,
    LatentRotation,
    MagnitudePruning,
    RandomPruning,
    ThresholdPruning,
    prune,
    rotate_latent,
)
from slimgen.quantize import ActivationQuant, KMeansQuant, LinearQuant, NaiveQuant, quantize
from slimgen.train.finetune import FineTuning, fid_scorer, finetune

_PRUNE_STEPS = {"prune_channels": ChannelPruning, "prune_magnitude": MagnitudePruning, "prune_gradient": GradientPruning,
                "prune_random": RandomPruning, "prune_threshold": ThresholdPruning}
_WEIGHT_METHODS = {"linear": LinearQuant, "kmeans": KMeansQuant, "naive": NaiveQuant}
_EXPORT_FORMATS = ("onnx", "torchscript")


def _calibration(bundle: ModelBundle, n: int) -> GenInputs:
    """The calibration contract's ``n`` inputs (the same seed as the CLI's prune, quantize and export)."""
    if bundle.inputs is None:
        raise ConfigError("this model records no input contract to draw calibration inputs from")
    return calibration_inputs(bundle.inputs, n)


def _register_prune(name: str, cls: type) -> None:
    @register_step(name, cls)
    def _apply(bundle: ModelBundle, config: Any, ctx: RunContext) -> ModelBundle:
        return prune(bundle, config)  # calibration: the contract's 256 inputs, recorded in the step


for _name, _cls in _PRUNE_STEPS.items():
    _register_prune(_name, _cls)


@register_step("rotate_latent", LatentRotation, replaces_teacher=True)
def _rotate_latent(bundle: ModelBundle, config: LatentRotation, ctx: RunContext) -> ModelBundle:
    return rotate_latent(bundle, config, progress=True)


@register_step("finetune", FineTuning)
def _finetune(bundle: ModelBundle, config: FineTuning, ctx: RunContext) -> ModelBundle:
    return finetune(bundle, config, data=ctx.data, teacher=ctx.teacher,
                    score=fid_scorer(bundle.inputs or 1, n=config.eval_n), checkpoint_dir=ctx.work_dir,
                    resume=(ctx.work_dir / "state.json").is_file())


@register_step("distill", Distillation)
def _distill(bundle: ModelBundle, config: Distillation, ctx: RunContext) -> ModelBundle:
    return distill(bundle, ctx.teacher, config, data=ctx.data, checkpoint_dir=ctx.work_dir,
                   resume=(ctx.work_dir / "state.json").is_file(), score=fid_scorer(bundle.inputs or 1, n=2000))


@dataclass(frozen=True)
class QuantizeStep:
    """Weights (linear, k-means or naive) and optionally int8 activations, as one recipe step."""

    weights: LinearQuant | KMeansQuant | NaiveQuant | None = None
    activations: ActivationQuant | None = None

    def __post_init__(self) -> None:
        if self.weights is None and self.activations is None:
            raise ConfigError("quantize needs 'weights', 'activations' or both")


def _parse_quantize(values: Any, where: str) -> QuantizeStep:
    from slimgen.pipeline.recipe import build_dataclass

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with 'weights' and/or 'activations', got {values!r}")
    unknown = sorted(set(values) - {"weights", "activations"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: activations, weights")
    weights = None
    if values.get("weights") is not None:
        w = dict(values["weights"])
        method = w.pop("method", "linear")
        if method not in _WEIGHT_METHODS:
            raise ConfigError(f"{where}, weights: method must be one of {', '.join(_WEIGHT_METHODS)}, got {method!r}")
        weights = build_dataclass(_WEIGHT_METHODS[method], w, f"{where}, weights")
    activations = None
    if values.get("activations") is not None:
        activations = build_dataclass(ActivationQuant, values["activations"], f"{where}, activations")
    try:
        return QuantizeStep(weights, activations)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@register_step("quantize", QuantizeStep, parse=_parse_quantize)
def _quantize(bundle: ModelBundle, config: QuantizeStep, ctx: RunContext) -> ModelBundle:
    if config.weights is not None:
        bundle = quantize(bundle, config.weights)
    if config.activations is not None:
        bundle = quantize(bundle, config.activations)  # calibration contract: n and seed recorded
    return bundle


@dataclass(frozen=True)
class ExportStep:
    """Write runnable exports into the step's folder (model.onnx, model.ts)."""

    formats: list[str] = field(default_factory=lambda: ["onnx"])
    int8: bool = False
    calibration: int | None = None  # None: the n that quantize recorded (else 512), drawn by the calibration contract

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in _EXPORT_FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"formats must be a non-empty list of {', '.join(_EXPORT_FORMATS)}; got {self.formats}")
        if self.calibration is not None and self.calibration < 1:
            raise ConfigError(f"calibration must be >= 1 latents, got {self.calibration}")


@register_step("export", ExportStep)
def _export(bundle: ModelBundle, config: ExportStep, ctx: RunContext) -> ModelBundle:
    from slimgen.export import export_onnx, export_torchscript

    assert ctx.folder is not None
    if "onnx" in config.formats:
        calib = _calibration(bundle, config.calibration) if config.int8 and config.calibration else None
        export_onnx(bundle, ctx.folder / "model.onnx", int8=config.int8, calibration=calib)
    if "torchscript" in config.formats:
        export_torchscript(bundle, ctx.folder / "model.ts")
    return bundle
