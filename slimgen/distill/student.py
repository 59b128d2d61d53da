"""Slimmer students: the teacher's zoo architecture with fewer channels per level, freshly initialised."""

from __future__ import annotations

import copy

import torch

from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, PartSpec, build
from slimgen.models.dcgan import default_widths

SLIMMABLE = ("dcgan_generator", "vae_decoder")
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


def slim_student(teacher: ModelBundle, width_multiplier: float | list[float], *, seed: int = 0) -> ModelBundle:
    """A copy of ``teacher`` whose generator is the same zoo architecture with slimmer, randomly initialised levels.

    ``width_multiplier``: one factor in (0, 1] for every level or one per level (DCGAN 28x28:
    two levels, teacher widths [128, 64] at 0.5 -> [64, 32]). The other parts (discriminator,
    VAE encoder) are kept as they are. Supports ``dcgan_generator`` and ``vae_decoder``; for
    other generators prune the teacher (``slimgen.prune``) instead.
    """
    spec = teacher.specs["generator"] if "generator" in teacher.specs else None
    if spec is None or spec.arch not in SLIMMABLE:
        arch = spec.arch if spec is not None else "none"
        raise ConfigError(f"slim_student supports the generators {', '.join(SLIMMABLE)}, got {arch}; "
                          "prune the teacher to get a smaller student of another architecture")
    widths = slim_widths(_teacher_widths(spec), width_multiplier)
    kwargs = {**spec.kwargs, "widths": widths}
    torch.manual_seed(seed)
    generator = build(spec.arch, kwargs)
    out = copy.deepcopy(ModelBundle(kind=teacher.kind, parts={k: v for k, v in teacher.parts.items() if k != "generator"},
                                    specs={k: v for k, v in teacher.specs.items() if k != "generator"},
                                    inputs=teacher.inputs, image_shape=teacher.image_shape,
                                    steps=teacher.steps, meta=teacher.meta,
                                    encodings={k: v for k, v in teacher.encodings.items() if not k.startswith("generator.")}))
    out.parts["generator"], out.specs["generator"] = generator.eval(), PartSpec(spec.arch, kwargs)
    return out.with_step({"step": "slim_student", "width_multiplier": width_multiplier, "widths": widths, "seed": seed})
