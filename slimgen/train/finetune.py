"""Adversarial fine-tuning of a (compressed) generator, optionally pulled towards a teacher.

Works on any generator ``(B, latent_dim) -> (B, C, H, W)``, including one carrying
``torch.nn.utils.prune`` masks or ``torch.nn.utils.parametrize`` parametrizations (fake
quantization): it only calls the module and steps its parameters. Weights stored sparse
(``sparse_*`` encodings) are kept at zero by masks attached for the run and folded back at
the end; masks or parametrizations that the caller attached are left in place.

Under torchrun every rank calls :func:`finetune` with the same arguments: generator and
discriminator train in DistributedDataParallel on shards of each global batch (see
:mod:`slimgen.train.distributed`); rank 0 alone scores each epoch, and every rank keeps the
best epoch by that shared score, so all ranks return the same generator; rank 0 alone writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.evaluate.selection import Selection, selection_scorer
from slimgen.models import ModelBundle
from slimgen.models.frame import check_same_frame
from slimgen.models.inputs import InputSpec
from slimgen.train.loop import LoopSettings, check_precision, check_schedule, resolve_device
from slimgen.train.objectives import Objective, TeacherMatch
from slimgen.train.objectives import Penalty as PenaltyTerm
from slimgen.train.tasks import GANTask
from slimgen.train.trainer import (  # noqa: F401  (BestKeeper, freeze_zeros, unfreeze: the old import path)
    BestKeeper,
    Hook,
    KeepZeros,
    Score,
    StepCallback,
    fit,
    freeze_zeros,
    frozen_copy,
    register_preset,
    sparse_layers,
    unfreeze,
)

Penalty = Callable[[nn.Module], torch.Tensor]
StepHook = Callable[[int, nn.Module], None]


@dataclass(frozen=True)
class FineTuning:
    """Adversarial fine-tuning settings.

    ``teacher_weight``: weight of the L1 distance between student and teacher images on the
    same latents when a teacher is given (0 = adversarial loss only). Default 100: fine-tuning
    as distillation after pruning, the tuned ``channels 50% + FT`` row of bench/results/prune.md
    (the L1 term must outweigh the adversarial loss; bench/results/defaults.md). ``steps_per_epoch``: batches per epoch (None =
    one pass over the data). ``eval_n``: samples for the per-epoch score that picks the best
    epoch (it overrides ``select.n``). ``select``: how that score is taken
    (:class:`slimgen.evaluate.selection.Selection`: reference ``auto`` = the data set when its
    images have the model's shape, else the teacher's samples; always in a training feature
    space). ``lr_schedule``: ``constant`` or ``cosine`` (decayed per epoch towards 0, see
    :func:`slimgen.train.loop.lr_factor`). ``precision``: the training step's arithmetic, ``auto``
    (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16`` (autocast; weights stay float32) or ``fast``
    (bf16 where the device has bf16 units, fp32 elsewhere: :func:`slimgen.train.loop.resolve_precision`).
    """

    epochs: int = 5
    lr: float = 2e-4
    batch_size: int = 64
    teacher_weight: float = 100.0
    steps_per_epoch: int | None = None
    seed: int = 0
    eval_n: int = 2000
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    select: Selection = field(default_factory=Selection)
    precision: Literal["auto", "fp32", "bf16", "fast"] = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_schedule(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
                       lr_schedule=self.lr_schedule)
        if isinstance(self.select, Mapping):
            object.__setattr__(self, "select", Selection(**self.select))
        if not isinstance(self.select, Selection):
            raise ConfigError(f"select must be a Selection or a mapping of its settings, got {type(self.select).__name__}")
        if self.teacher_weight < 0:
            raise ConfigError(f"teacher_weight must be >= 0, got {self.teacher_weight}")
        if self.eval_n < 2:
            raise ConfigError(f"eval_n must be >= 2, got {self.eval_n}")
        object.__setattr__(self, "betas", tuple(self.betas))


class FineTuneTask(GANTask):
    """The fine-tuning preset: the GAN objective plus an L1 term to the teacher's images on the same
    inputs (logged weighted, as ``g_teacher``) and an optional penalty on the generator."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, inputs: InputSpec, config: FineTuning,
                 teacher: nn.Module | None, penalty: Penalty | None, hooks: tuple[Hook, ...] = ()) -> None:
        extra: list[Objective] = []
        if teacher is not None and config.teacher_weight > 0:
            extra.append(TeacherMatch(teacher, output=config.teacher_weight, names={"output": "g_teacher"},
                                      log_weighted=True))
        if penalty is not None:
            extra.append(PenaltyTerm(penalty))
        super().__init__(generator, discriminator, inputs=inputs, lr=config.lr, betas=config.betas, extra=tuple(extra),
                         hooks=hooks)


# --- the verb -----------------------------------------------------------------------------------------

def _discriminator(bundle: ModelBundle, teacher: ModelBundle | None) -> nn.Module:
    """The teacher's discriminator if it has one, else the bundle's own (a copy either way)."""
    import copy

    for source in (teacher, bundle):
        if source is not None and source.discriminator is not None:
            return copy.deepcopy(source.discriminator)
    raise ConfigError("fine-tuning needs a discriminator: neither the model nor the teacher has one")


def finetune(
    bundle: ModelBundle, config: FineTuning, *, data: ImageSet, teacher: ModelBundle | None = None,
    score: Score | None = None, penalty: Penalty | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False, device: str = "auto", on_epoch: Callable[[int, nn.Module], dict[str, float]] | None = None,
    on_step: StepHook | None = None, hooks: Sequence[Hook] = (),
) -> ModelBundle:
    """Fine-tune ``bundle``'s generator adversarially; returns a new bundle (the input is left unchanged).

    ``data``: real images (N, C, H, W) in [-1, 1]. ``teacher``: its discriminator is used (else
    the bundle's), and with ``config.teacher_weight > 0`` its generator's images on the same
    latents are an L1 target. ``score(generator) -> float`` (lower is better, e.g. FID) runs
    after each epoch and the best epoch's generator is returned; without it, the last.
    ``penalty(generator) -> scalar`` is added to the generator loss (sparsity training).
    ``on_step(global_step, generator)`` runs after every optimisation step (gradual pruning).
    ``hooks``: more trainer hooks (:class:`slimgen.train.trainer.Hook`: fake quantization, mask
    schedules), started in order before the kept zeros, ended after them.
    One checkpoint per epoch in ``checkpoint_dir``; ``resume`` continues from it.
    Under torchrun ``config.batch_size`` is the global batch; ``score`` and ``on_epoch`` run on
    rank 0 only (module docstring).
    """
    if bundle.inputs is None:
        raise ConfigError(f"a {bundle.kind} model without an input contract cannot be fine-tuned as a generator")
    if teacher is not None and config.teacher_weight > 0:
        check_same_frame(bundle, teacher, what="fine-tuning's teacher term")
    if bundle.inputs.conditional and data.labels is None:
        raise ConfigError(f"fine-tuning a class-conditional model scores real images with their labels, D(x, y), "
                          f"but the data {data.name} has none: use labelled data")
    dev = resolve_device(device)
    out = bundle.copy()
    g = out.generator.to(dev)
    d = _discriminator(out, teacher).to(dev)
    t = frozen_copy(teacher.generator).to(dev) if teacher is not None and config.teacher_weight > 0 else None
    run_hooks: list[Hook] = [*hooks, KeepZeros(sparse_layers(out))]
    if on_step is not None:
        run_hooks.append(StepCallback(on_step))
    task = FineTuneTask(g, d, inputs=out.inputs, config=config, teacher=t, penalty=penalty, hooks=tuple(run_hooks))
    settings = LoopSettings(config.epochs, config.batch_size, config.seed, config.steps_per_epoch, config.lr_schedule)
    done = fit(task, data, settings, device=dev, desc="finetune", score=score, on_epoch=on_epoch,
               checkpoint_dir=checkpoint_dir, resume=resume, precision=config.precision)
    out.parts["generator"] = g.cpu().eval()
    step: dict[str, Any] = {"step": "finetune", "config": asdict(config), **done.record()}
    if score is not None:
        step["best_score"] = done.best.score
    if teacher is not None:
        step["teacher"] = str(teacher.path) if teacher.path else "in memory"
    step["discriminator"] = "teacher" if teacher is not None and teacher.discriminator is not None else "model"
    return out.with_step(step)


@register_preset(FineTuning)
def _finetune_preset(bundle: ModelBundle, config: FineTuning, *, teacher: ModelBundle | None, **kwargs: Any
                     ) -> ModelBundle:
    return finetune(bundle, config, teacher=teacher, **kwargs)


def fid_scorer(inputs: InputSpec | int, *, n: int = 2000, seed: int = 1) -> Score | None:
    """``generator -> FID`` on ``n`` samples against Fashion-MNIST in the training feature space.

    Kept for callers of the old API; :func:`scorer_for` also handles models of other shapes
    (teacher-referenced) and a named reference. Seed 1 keeps the selection latents apart from
    the seed-0 latents used for reporting.
    """
    from slimgen.evaluate import fid_score

    def score(generator: nn.Module) -> float:
        return float(fid_score(generator, inputs, n=n, seed=seed))

    return score


def scorer_for(config: FineTuning | Selection, bundle: ModelBundle, *, teacher: ModelBundle | None = None,
               dataset: str = "fashion-mnist") -> Score:
    """The best-epoch score of a fine-tuning (``config.select`` with ``n = config.eval_n``) or of a
    :class:`Selection`, for ``bundle`` imitating ``teacher`` (or its own starting point), in a
    training feature space; checked now, reference read at the first scoring."""
    selection = replace(config.select, n=config.eval_n) if isinstance(config, FineTuning) else config
    return selection_scorer(selection, model=bundle, teacher=teacher, dataset=dataset)
