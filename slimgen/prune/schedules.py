"""Pruning schedules: one-shot (:func:`slimgen.prune.prune`), iterative, and gradual magnitude pruning.

The sparsity targets are pure functions. The trainer drives the schedules: gradual pruning is a
:class:`slimgen.train.trainer.MaskSchedule` hook in one fine-tuning run; iterative pruning alternates
``prune`` with the training preset its config selects (:func:`slimgen.train.trainer.tune`: fine-tuning,
distillation), so this module imports neither preset's package.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.prune.api import SPARSE_CODEC, prune
from slimgen.prune.configs import Scope, _check_choice, _check_fraction
from slimgen.prune.unstructured import (
    attach_masks,
    magnitude_scores,
    make_permanent,
    masks_for,
    prunable_layers,
    sparsity_of,
)
from slimgen.storage import Encoding
from slimgen.train.checkpoint import has_checkpoint
from slimgen.train.finetune import FineTuning, Score, finetune
from slimgen.train.trainer import MaskSchedule, tune


def cubic_sparsity(step: int, *, final: float, initial: float = 0.0, begin: int = 0, end: int) -> float:
    """Zhu & Gupta (2017) gradual pruning target at ``step``.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3 for t0 <= t <= t1; s_i before t0, s_f after t1.
    Prunes fast at first, when many redundant weights remain, and slowly near the end.
    """
    if end <= begin:
        raise ConfigError(f"end ({end}) must be after begin ({begin})")
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def geometric_targets(final: float, steps: int) -> list[float]:
    """Cumulative fractions removed after each of ``steps`` equal steps: 1 - (1 - final)^(i / steps).

    Each step removes the same fraction of what is left; the last target is ``final``.
    """
    return [1.0 - (1.0 - final) ** (i / steps) for i in range(1, steps + 1)]


def per_step_ratio(final: float, steps: int) -> float:
    """Fraction of the *current* channels to remove per step so ``steps`` steps remove ``final`` in total."""
    return 1.0 - (1.0 - final) ** (1.0 / steps)


# --- iterative: prune a step, fine-tune, repeat ---------------------------------------------------------

@dataclass(frozen=True)
class IterativePruning:
    """Reach ``method``'s ratio/sparsity in ``steps`` rounds of prune + fine-tune (geometric steps)."""

    steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ConfigError(f"steps must be >= 2 for iterative pruning (1 is one-shot), got {self.steps}")


def step_config(method: Any, final: float, steps: int, index: int) -> Any:
    """The method config for round ``index`` (0-based): channel ratio per round, or cumulative sparsity."""
    if hasattr(method, "ratio"):
        return dataclasses.replace(method, ratio=per_step_ratio(final, steps))
    if getattr(method, "sparsity", None) is not None:
        return dataclasses.replace(method, sparsity=geometric_targets(final, steps)[index])
    raise ConfigError(f"{type(method).__name__} has no ratio or sparsity to schedule iteratively")


def prune_iteratively(
    bundle: ModelBundle, method: Any, schedule: IterativePruning, finetuning: Any, *,
    data: ImageSet,
    teacher: ModelBundle | None = None, score: Score | None = None, part: str = "generator",
    work_dir: str | Path | None = None, resume: bool = False, device: str = "auto",
    last: Any = None,
) -> ModelBundle:
    """Prune ``method`` in ``schedule.steps`` rounds, fine-tuning after each; returns the final bundle.

    ``finetuning``: adversarial fine-tuning (:class:`FineTuning`) or distillation from ``teacher``
    (default: the unpruned ``bundle``) with :class:`slimgen.distill.Distillation`; either keeps
    the pruned weights at zero. ``last``: other settings for the final round (often longer: the
    last weights removed cost the most), else ``finetuning``. Each finished round is saved to
    ``work_dir/round-{i}``; ``resume`` restarts after the last one.
    """
    final = method.ratio if hasattr(method, "ratio") else method.sparsity
    if final is None:
        raise ConfigError("iterative pruning needs a target ratio or sparsity, not a threshold")
    work = Path(work_dir) if work_dir is not None else None
    current, start = bundle, 0
    if resume and work is not None:
        done = [i for i in range(schedule.steps) if (work / f"round-{i}" / "config.json").is_file()]
        if done:
            start = done[-1] + 1
            current = load_folder(work / f"round-{done[-1]}")
    for i in range(start, schedule.steps):
        pruned = prune(current, step_config(method, final, schedule.steps, i), part=part)
        ft_dir = work / f"round-{i}-checkpoint" if work is not None else None
        tuning_resume = resume and ft_dir is not None and has_checkpoint(ft_dir)
        tuning = last if last is not None and i == schedule.steps - 1 else finetuning
        current = tune(pruned, tuning, data=data, teacher=teacher or bundle, score=score, checkpoint_dir=ft_dir,
                       resume=tuning_resume, device=device)
        if work is not None:
            save_folder(current, work / f"round-{i}")
    return current


# --- gradual magnitude pruning (Zhu & Gupta) during fine-tuning ------------------------------------------

GRADUAL_END = 0.75  # fraction of a run's optimisation steps by which gradual pruning reaches its sparsity
GRADUAL_UPDATES = 20  # mask updates between the start and end_step


@dataclass(frozen=True)
class GradualPruning:
    """Magnitude masks of the generator raised from ``initial_sparsity`` to ``sparsity`` along the cubic
    schedule between optimisation steps ``begin_step`` and ``end_step``, updated every ``frequency`` steps.

    The defaults (``end_step`` 1000, ``frequency`` 50) are :func:`fit_to_run`'s rule for a run of 1334
    steps; :func:`fit_to_run` places the end in a run of any length (as ``slimgen finetune --gradual-sparsity``).
    """

    sparsity: float = 0.9
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 50
    scope: Scope = "layerwise"

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        if not 0.0 <= self.initial_sparsity < self.sparsity:
            raise ConfigError(f"initial_sparsity must be in [0, sparsity={self.sparsity}), got {self.initial_sparsity}")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise ConfigError(f"need 0 <= begin_step < end_step, got {self.begin_step} and {self.end_step}")
        if self.frequency < 1:
            raise ConfigError(f"frequency must be >= 1, got {self.frequency}")
        _check_choice("scope", self.scope, ("layerwise", "global"))


def fit_to_run(config: GradualPruning, total_steps: int, *, end_step: int | None = None,
               end_fraction: float = GRADUAL_END) -> GradualPruning:
    """``config`` with its schedule fitted to a run of ``total_steps`` optimisation steps: full sparsity at
    ``end_step`` (default: ``end_fraction`` of the run, at least step 1), masks updated ``GRADUAL_UPDATES``
    times on the way (every ``end_step // GRADUAL_UPDATES`` steps, at least every step)."""
    end = end_step or max(1, int(total_steps * end_fraction))
    return dataclasses.replace(config, end_step=end, frequency=max(1, end // GRADUAL_UPDATES))


def _set_sparsity(module: nn.Module, sparsity: float, scope: str) -> None:
    attach_masks(module, masks_for(magnitude_scores(module), sparsity=sparsity, threshold=None, scope=scope))


def target_at(config: GradualPruning, step: int) -> float:
    return cubic_sparsity(step, final=config.sparsity, initial=config.initial_sparsity,
                          begin=config.begin_step, end=config.end_step)


def prune_gradually(
    bundle: ModelBundle, config: GradualPruning, finetuning: FineTuning, *, data: ImageSet,
    teacher: ModelBundle | None = None, score: Score | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False, device: str = "auto",
) -> ModelBundle:
    """Fine-tune the generator while its magnitude masks follow :func:`cubic_sparsity`; returns a new bundle.

    The run must reach ``end_step`` (epochs * steps per epoch); only epochs at the final
    sparsity compete for the best ``score``.
    """
    batches = finetuning.steps_per_epoch or max(1, len(data) // finetuning.batch_size)
    if finetuning.epochs * batches < config.end_step:
        raise ConfigError(f"fine-tuning runs {finetuning.epochs * batches} steps but the schedule ends at step "
                          f"{config.end_step}: raise epochs or steps_per_epoch, or lower end_step")
    def due(step: int) -> bool:
        return (step <= config.end_step and (step - config.begin_step) % config.frequency == 0) or step == config.end_step

    masks = MaskSchedule(lambda m, s: _set_sparsity(m, s, config.scope), lambda step: target_at(config, step), due,
                         config.initial_sparsity)

    def final_only(generator: nn.Module) -> float:
        reached = sparsity_of(generator) >= config.sparsity - 1e-3
        return score(generator) if score is not None and reached else math.inf

    out = finetune(bundle, finetuning, data=data, teacher=teacher, score=final_only if score is not None else None,
                   checkpoint_dir=checkpoint_dir, resume=resume, device=device, hooks=(masks,))
    names = list(prunable_layers(out.generator))
    make_permanent(out.generator)
    for name in names:
        out.encodings[f"generator.{name}.weight"] = Encoding(SPARSE_CODEC)
    out.steps[-1] = {**out.steps[-1], "step": "gradual_prune", "schedule": asdict(config)}
    return out
