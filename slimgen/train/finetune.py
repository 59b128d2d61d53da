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

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.evaluate.selection import Selection, selection_scorer
from slimgen.io import read_json, write_atomic, write_json
from slimgen.models import ModelBundle
from slimgen.models.frame import check_same_frame
from slimgen.models.inputs import GenInputs, InputSpec, run
from slimgen.train import distributed
from slimgen.train.checkpoint import META, has_checkpoint
from slimgen.train.loop import LoopSettings, check_schedule, resolve_device, run_epochs
from slimgen.train.tasks import GANTask

Score = Callable[[nn.Module], float]
Penalty = Callable[[nn.Module], torch.Tensor]
StepHook = Callable[[int, nn.Module], None]
BEST, BEST_META = "best.safetensors", "best.json"


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
    :func:`slimgen.train.loop.lr_factor`).
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

    def __post_init__(self) -> None:
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
    """GAN step whose generator loss adds an L1 term to the teacher's images and an optional penalty."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, inputs: InputSpec, config: FineTuning,
                 teacher: nn.Module | None, penalty: Penalty | None, on_step: StepHook | None, first_step: int) -> None:
        super().__init__(generator, discriminator, inputs=inputs, lr=config.lr, betas=config.betas)
        self.teacher, self.teacher_weight, self.penalty = teacher, config.teacher_weight, penalty
        self.on_step, self.global_step = on_step, first_step

    def generator_loss(self, fake: torch.Tensor, inputs: GenInputs) -> dict[str, torch.Tensor]:
        """Losses on fakes (B, C, H, W) from generator inputs (z (B, *latent_shape), y)."""
        losses = super().generator_loss(fake, inputs)
        if self.teacher is not None and self.teacher_weight > 0:
            with torch.no_grad():
                target = run(self.teacher, inputs)  # (B, C, H, W)
            losses["g_teacher"] = self.teacher_weight * F.l1_loss(fake, target)
        if self.penalty is not None:
            losses["penalty"] = self.penalty(self.generator)
        return losses

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        out = super().step(images, labels, rng)
        self.global_step += 1
        if self.on_step is not None:
            self.on_step(self.global_step, self.generator)
        return out


# --- keeping sparse weights at zero -----------------------------------------------------------------

def sparse_layers(bundle: ModelBundle, part: str = "generator") -> list[str]:
    """Layers of ``part`` whose ``weight`` is stored with a sparse codec (their zeros must stay zero)."""
    prefix = f"{part}."
    return [name[len(prefix):-len(".weight")] for name, enc in bundle.encodings.items()
            if name.startswith(prefix) and name.endswith(".weight") and enc.codec.startswith("sparse")]


def freeze_zeros(module: nn.Module, layers: list[str]) -> list[str]:
    """Attach ``weight != 0`` masks to ``layers`` that carry no mask or parametrization yet; returns those masked."""
    from torch.nn.utils import parametrize
    from torch.nn.utils import prune as torch_prune

    done = []
    for name in layers:
        layer = module.get_submodule(name)
        if torch_prune.is_pruned(layer) or parametrize.is_parametrized(layer, "weight"):
            continue
        torch_prune.custom_from_mask(layer, "weight", layer.weight.detach() != 0)
        done.append(name)
    return done


def unfreeze(module: nn.Module, layers: list[str]) -> None:
    from torch.nn.utils import prune as torch_prune

    for name in layers:
        torch_prune.remove(module.get_submodule(name), "weight")


# --- best epoch ---------------------------------------------------------------------------------------

class BestKeeper:
    """Keeps the generator state of the lowest score seen; persisted next to the checkpoint for resume.

    Under torchrun every rank offers the same (rank 0's) scores and keeps the state in memory;
    rank 0 alone writes ``best.safetensors``/``best.json``, which every rank reads on resume.
    """

    def __init__(self, module: nn.Module, folder: Path | None) -> None:
        self.module, self.folder = module, folder
        self.score, self.epoch = math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, score: float) -> None:
        if not score < self.score:
            return
        self.score, self.epoch = score, epoch
        self.state = {k: v.detach().cpu().clone().contiguous() for k, v in self.module.state_dict().items()}
        if self.folder is not None and distributed.is_main():
            state = self.state
            write_atomic(self.folder / BEST, lambda p: save_file(state, str(p)))
            write_json(self.folder / BEST_META, {"epoch": epoch, "score": score})

    def restore_saved(self) -> None:
        if self.folder is None or not (self.folder / BEST_META).is_file():
            return
        meta = read_json(self.folder / BEST_META)
        self.score, self.epoch = float(meta["score"]), int(meta["epoch"])
        self.state = load_file(str(self.folder / BEST))

    def load_best(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


# --- the verb -----------------------------------------------------------------------------------------

def _discriminator(bundle: ModelBundle, teacher: ModelBundle | None) -> nn.Module:
    """The teacher's discriminator if it has one, else the bundle's own (a copy either way)."""
    import copy

    for source in (teacher, bundle):
        if source is not None and source.discriminator is not None:
            return copy.deepcopy(source.discriminator)
    raise ConfigError("fine-tuning needs a discriminator: neither the model nor the teacher has one")


def _frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    module = copy.deepcopy(module).eval()
    return module.requires_grad_(False)


def _first_step(checkpoint_dir: Path | None, resume: bool, batches: int) -> int:
    if not resume or checkpoint_dir is None or not has_checkpoint(checkpoint_dir):
        return 0
    return int(read_json(checkpoint_dir / META)["epoch"]) * batches


def finetune(
    bundle: ModelBundle, config: FineTuning, *, data: ImageSet, teacher: ModelBundle | None = None,
    score: Score | None = None, penalty: Penalty | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False, device: str = "auto", on_epoch: Callable[[int, nn.Module], dict[str, float]] | None = None,
    on_step: StepHook | None = None,
) -> ModelBundle:
    """Fine-tune ``bundle``'s generator adversarially; returns a new bundle (the input is left unchanged).

    ``data``: real images (N, C, H, W) in [-1, 1]. ``teacher``: its discriminator is used (else
    the bundle's), and with ``config.teacher_weight > 0`` its generator's images on the same
    latents are an L1 target. ``score(generator) -> float`` (lower is better, e.g. FID) runs
    after each epoch and the best epoch's generator is returned; without it, the last.
    ``penalty(generator) -> scalar`` is added to the generator loss (sparsity training).
    ``on_step(global_step, generator)`` runs after every optimisation step (gradual pruning).
    One checkpoint per epoch in ``checkpoint_dir``; ``resume`` continues from it.
    Under torchrun ``config.batch_size`` is the global batch; ``score`` and ``on_epoch`` run on
    rank 0 only (module docstring).
    """
    if bundle.inputs is None:
        raise ConfigError(f"a {bundle.kind} model without an input contract cannot be fine-tuned as a generator")
    if teacher is not None and config.teacher_weight > 0:
        check_same_frame(bundle, teacher, what="fine-tuning's teacher term")
    dev = resolve_device(device)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    out = bundle.copy()
    g = out.generator.to(dev)
    d = _discriminator(out, teacher).to(dev)
    t = _frozen_copy(teacher.generator).to(dev) if teacher is not None and config.teacher_weight > 0 else None
    frozen = freeze_zeros(g, sparse_layers(out))
    batches = config.steps_per_epoch or max(1, len(data) // config.batch_size)
    task = FineTuneTask(g, d, inputs=out.inputs, config=config, teacher=t, penalty=penalty,
                        on_step=on_step, first_step=_first_step(folder, resume, batches))
    best = BestKeeper(g, folder)
    if resume:
        best.restore_saved()

    def after_epoch(epoch: int) -> dict[str, float]:  # rank 0 only
        record: dict[str, float] = {}
        if score is not None:
            g.eval()
            record["score"] = float(score(g))
        if on_epoch is not None:
            record.update(on_epoch(epoch, g))
        return record

    def keep_best(epoch: int, record: dict[str, float]) -> None:  # every rank, on rank 0's record
        if score is not None:
            best.offer(epoch, record["score"])

    t0 = time.perf_counter()
    settings = LoopSettings(config.epochs, config.batch_size, config.seed, config.steps_per_epoch, config.lr_schedule)
    history = run_epochs(task, data, settings,
                         checkpoint_dir=folder, resume=resume, device=dev, desc="finetune", on_epoch_end=after_epoch,
                         on_record=keep_best)
    best.load_best()
    unfreeze(g, frozen)
    out.parts["generator"] = g.cpu().eval()
    step: dict[str, Any] = {"step": "finetune", "config": asdict(config), "epochs_run": len(history),
                            "best_epoch": best.epoch or len(history), "seconds": round(time.perf_counter() - t0, 1)}
    if score is not None:
        step["best_score"] = best.score
    if distributed.world_size() > 1:
        step["processes"] = distributed.world_size()
    if teacher is not None:
        step["teacher"] = str(teacher.path) if teacher.path else "in memory"
    step["discriminator"] = "teacher" if teacher is not None and teacher.discriminator is not None else "model"
    return out.with_step(step)


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
