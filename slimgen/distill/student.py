"""Slimmer students: the teacher's own structure with fewer channels, for zoo and user classes alike.

Zoo generators are rebuilt from their ``widths`` kwarg. Any other generator (a user's
``module:Class``, a diffusers decoder) is slimmed through the same graph channel pruning
uses (:mod:`slimgen.prune.structured`): every prunable layer keeps ``round-down(C * width)``
of its channels (the output layer and the layers :func:`slimgen.prune.structured.kept_layers`
lists keep all), chosen by L1 norm (``init="strongest"``, the teacher's strongest channels
and their weights) or re-initialised with the layers' own ``reset_parameters`` (``init="random"``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, PartSpec, build, set_inputs
from slimgen.models.dcgan import default_widths
from slimgen.prune import ChannelPruning, bundle_context, prune_module

SLIMMABLE = ("dcgan_generator", "vae_decoder")
INITS = ("random", "strongest")


@dataclass(frozen=True)
class SlimStudent:
    """A slimmer student of the teacher's own class (recipe step ``slim_student``, CLI ``distill --width``).

    ``width``: fraction of channels kept per layer, in (0, 1). ``init``: ``random`` (fresh
    weights) or ``strongest`` (keep the teacher's channels of largest L1 norm, with their weights).
    """

    width: float = 0.5
    init: Literal["random", "strongest"] = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.width < 1:
            raise ConfigError(f"width must be in the open interval (0, 1), got {self.width}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}; got {self.init!r}")
_VAE_DEFAULT_WIDTHS = [64, 32]


def _teacher_widths(spec: PartSpec) -> list[int]:
    """The per-level widths the generator's spec builds (its kwargs, else the architecture's default)."""
    widths = spec.kwargs.get("widths")
    if widths is not None:
        return [int(w) for w in widths]
    if spec.arch == "dcgan_generator":
        return default_widths(int(spec.kwargs.get("image_size", 28)))
    return list(_VAE_DEFAULT_WIDTHS)


def slim_widths(widths: list[int], width_multiplier: float | list[float]) -> list[int]:
    """round(w * m) per level (at least 1); one multiplier for all levels or one per level, each in (0, 1]."""
    mults = list(width_multiplier) if isinstance(width_multiplier, list | tuple) else [width_multiplier] * len(widths)
    if len(mults) != len(widths):
        raise ConfigError(f"width_multiplier needs one value per level ({len(widths)} for widths {widths}), got {mults}")
    for m in mults:
        if not 0 < m <= 1:
            raise ConfigError(f"width_multiplier must be in (0, 1], got {m}")
    return [max(1, round(w * m)) for w, m in zip(widths, mults, strict=True)]


def slim_student(teacher: ModelBundle, width_multiplier: float | list[float], *, seed: int = 0,
                 init: Literal["random", "strongest"] = "random") -> ModelBundle:
    """A copy of ``teacher`` whose generator has ``width_multiplier`` of the channels of each layer.

    ``width_multiplier``: one factor in (0, 1] (zoo generators also take one per level: DCGAN
    28x28 teacher widths [128, 64] at 0.5 -> [64, 32]). Zoo generators with ``init="random"``
    are rebuilt from their ``widths`` kwarg; every other generator, and ``init="strongest"``,
    is slimmed through channel pruning of the teacher's own structure (see the module
    docstring). The other parts (discriminator, VAE encoder) are kept as they are.
    """
    spec = teacher.specs["generator"] if "generator" in teacher.specs else None
    if spec is None:
        raise ConfigError("slim_student needs a teacher with a generator part")
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    out = copy.deepcopy(ModelBundle(kind=teacher.kind, parts={k: v for k, v in teacher.parts.items() if k != "generator"},
                                    specs={k: v for k, v in teacher.specs.items() if k != "generator"},
                                    inputs=teacher.inputs, image_shape=teacher.image_shape,
                                    steps=teacher.steps, meta=teacher.meta,
                                    encodings={k: v for k, v in teacher.encodings.items() if not k.startswith("generator.")}))
    if spec.arch in SLIMMABLE and init == "random":
        widths = slim_widths(_teacher_widths(spec), width_multiplier)
        kwargs = {**spec.kwargs, "widths": widths}
        torch.manual_seed(seed)
        generator, new_spec = build(spec.arch, kwargs), PartSpec(spec.arch, kwargs)
        record: dict[str, object] = {"widths": widths}
    else:
        if isinstance(width_multiplier, list | tuple):
            raise ConfigError(f"a {spec.arch} student takes one width multiplier, not one per level ({width_multiplier})")
        if not 0 < width_multiplier < 1:
            raise ConfigError(f"width_multiplier must be in (0, 1) for a {spec.arch} student, got {width_multiplier}")
        generator = _slim_by_pruning(teacher, float(width_multiplier), init=init, seed=seed)
        new_spec = PartSpec(spec.arch, dict(spec.kwargs))
        record = {"init": init}
    out.parts["generator"], out.specs["generator"] = generator.eval(), new_spec
    if out.inputs is not None:
        set_inputs(generator, out.inputs)
    return out.with_step({"step": "slim_student", "width_multiplier": width_multiplier, "seed": seed, **record})


def _slim_by_pruning(teacher: ModelBundle, width: float, *, init: str, seed: int) -> nn.Module:
    """The teacher's generator with ``1 - width`` of every prunable layer's channels removed (L1), maybe re-initialised."""
    ctx = bundle_context(teacher, "generator")
    generator, _ = prune_module(copy.deepcopy(teacher.generator), ChannelPruning(ratio=1 - width, importance="l1"), ctx)
    if init == "random":
        torch.manual_seed(seed)
        for module in generator.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not generator:
                reset()
    return generator
