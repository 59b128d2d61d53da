"""The one trainer: a model, a mix of objectives, hooks; run by the one epoch loop.

:class:`Trainer` is the :class:`slimgen.train.loop.Task` of every training-type step. Each step
it draws the generator's inputs from the epoch generator (when it samples), runs the trained model
once (recording the feature maps objectives tap), asks each :mod:`objective <slimgen.train.objectives>`
for its terms (an adversarial objective first steps its discriminator), adds the weighted terms
and takes one Adam step on the model and the helpers that train with it, then runs the hooks.

Presets are thin: DCGAN/VAE/classifier training (:mod:`slimgen.train.tasks`), fine-tuning
(:mod:`slimgen.train.finetune`), distillation (:mod:`slimgen.distill`), quantization-aware
training (:mod:`slimgen.train.qat`); gradual pruning is a :class:`MaskSchedule` hook and iterative
pruning a loop of presets (:mod:`slimgen.train.schedules`). :func:`fit` is the part every
model-in/model-out preset shares: best-epoch selection, checkpoints and resume (via
:func:`slimgen.train.loop.run_epochs`, which also owns DDP), hooks undone at the end.

| hook | start | every step | end |
| --- | --- | --- | --- |
| :class:`KeepZeros` | ``weight != 0`` masks on sparse-stored layers | | masks folded back |
| :class:`MaskSchedule` | magnitude masks at the initial sparsity | masks raised along a schedule | |
| :class:`StepCallback` | | ``fn(global_step, model)`` | |
| :class:`EMA` | a frozen copy | moving average of the weights | (``fit`` keeps the average) |
| ``FakeQuant`` (:mod:`slimgen.train.qat`) | weights fake-quantized (parametrizations) | | parametrizations removed |
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.io import read_json, write_atomic, write_json
from slimgen.models.inputs import InputSpec, carried_inputs, run
from slimgen.train import distributed
from slimgen.train.checkpoint import META, has_checkpoint
from slimgen.train.distributed import shard_inputs
from slimgen.train.loop import LoopSettings, resolve_precision, run_epochs
from slimgen.train.objectives import Batch, Objective, tap

Score = Callable[[nn.Module], float]
BEST, BEST_META = "best.safetensors", "best.json"


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode with no gradients: a teacher, a frozen encoder, an extractor."""
    import copy

    return copy.deepcopy(module).eval().requires_grad_(False)


# --- hooks --------------------------------------------------------------------------------------------

class Hook:
    """Something the trainer does around training: ``start`` before the optimizers exist (so new
    parameters, e.g. a trainable codebook, are optimised), ``on_step`` after every optimisation step
    (``step`` counts from 1 over the whole run, resumes included), ``end`` after the best epoch's weights
    are back (in reverse order of the hooks)."""

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Modules checkpointed with the run (not optimised), e.g. an EMA copy."""
        return {}

    def start(self, model: nn.Module) -> None:
        pass

    def on_step(self, step: int, model: nn.Module) -> None:
        pass

    def end(self, model: nn.Module) -> None:
        pass


def sparse_layers(bundle: Any, part: str = "generator") -> list[str]:
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


class KeepZeros(Hook):
    """Weights stored sparse stay zero: ``torch.nn.utils.prune`` masks on ``layers`` for the run (layers
    that already carry a mask or a parametrization keep theirs), folded back at the end."""

    def __init__(self, layers: list[str]) -> None:
        self.layers, self.masked = layers, []

    def start(self, model: nn.Module) -> None:
        self.masked = freeze_zeros(model, self.layers)

    def end(self, model: nn.Module) -> None:
        unfreeze(model, self.masked)


class StepCallback(Hook):
    """``fn(global_step, model)`` after every optimisation step."""

    def __init__(self, fn: Callable[[int, nn.Module], None]) -> None:
        self.fn = fn

    def on_step(self, step: int, model: nn.Module) -> None:
        self.fn(step, model)


class EMA(Hook):
    """An exponential moving average of the model's weights (Polyak averaging, as GAN training uses it):
    after every step ``shadow = d * shadow + (1 - d) * model`` with ``d = min(decay, (1 + step) / (10 + step))``
    (a short warm-up), buffers (BatchNorm statistics) copied. :func:`fit` scores and keeps the average,
    and the model ends with the best epoch's averaged weights. The average is checkpointed as ``ema``.

    The copied statistics are the live weights' activations, not the average's: before the average is
    scored, :meth:`refresh` recomputes them ("standing statistics") as exact means over
    ``batchnorm_batches`` batches of 64 inputs the model's contract draws (fixed seeds, none an
    evaluation seed), run through the average. Only a model that carries its input contract (a
    generator) and has BatchNorm layers is refreshed; 0 keeps the copied statistics. Under torchrun rank 0
    refreshes (it scores, and writes the model)."""

    BATCH, SEED = 64, 7_000_003  # refresh batches: size, and the first seed (far from the evaluation seeds 0, 1, ...)

    def __init__(self, decay: float, *, batchnorm_batches: int = 32) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema decay must be in (0, 1), got {decay}")
        self.decay, self.batchnorm_batches = decay, batchnorm_batches
        self.shadow: nn.Module | None = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the average's BatchNorm running statistics on its own activations (see the class)."""
        shadow = self.shadow
        spec = carried_inputs(shadow)
        norms = [m for m in shadow.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats] if shadow is not None else []
        if spec is None or not norms or self.batchnorm_batches < 1:
            return
        device = next(shadow.parameters()).device
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: every batch counts alike
            m.train()
        try:
            for i in range(self.batchnorm_batches):
                run(shadow, spec.draw(self.BATCH, seed=self.SEED + i).to(device))
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
                m.eval()

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {} if self.shadow is None else {"ema": self.shadow}

    def start(self, model: nn.Module) -> None:
        self.shadow = frozen_copy(model)

    @torch.no_grad()
    def on_step(self, step: int, model: nn.Module) -> None:
        assert self.shadow is not None
        d = min(self.decay, (1 + step) / (10 + step))
        for avg, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - d)
        for avg, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            avg.copy_(b)


class MaskSchedule(Hook):
    """Masks whose sparsity follows ``target(step)``: ``set_sparsity(model, target(0))`` at the start,
    then at every step that ``due(step)`` says (gradual magnitude pruning, Zhu & Gupta)."""

    def __init__(self, set_sparsity: Callable[[nn.Module, float], None], target: Callable[[int], float],
                 due: Callable[[int], bool], initial: float) -> None:
        self.set_sparsity, self.target, self.due, self.initial = set_sparsity, target, due, initial

    def start(self, model: nn.Module) -> None:
        self.set_sparsity(model, self.initial)

    def on_step(self, step: int, model: nn.Module) -> None:
        if self.due(step):
            self.set_sparsity(model, self.target(step))


# --- the trainer ----------------------------------------------------------------------------------------

class Trainer:
    """One optimisation step of ``model`` on a mix of ``objectives``; a :class:`slimgen.train.loop.Task`.

    ``model_key``: the model's name in ``modules`` and in checkpoints. ``sample``: draw inputs
    through ``inputs`` (the input contract) and run the model on them each step (generators), else
    objectives read the real batch only (VAE ELBO, classifier). One Adam (``lr``, ``betas``) named
    ``optimizer`` steps the model and the helpers objectives train with it; a helper with its own
    optimizer (a discriminator) is stepped by its objective. ``hooks`` start here (before the
    optimizers) and end in :meth:`finish`. ``log_total``: report the weighted sum as ``total``.

    ``modules`` (checkpointed): the model, then each objective's helpers. ``train_modules``: the same,
    replaced by DDP wrappers by the loop under torchrun; frozen modules (a teacher) stay out.
    """

    def __init__(self, model: nn.Module, objectives: Sequence[Objective], *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), inputs: InputSpec | None = None, sample: bool = True,
                 model_key: str = "generator", optimizer: str = "generator", hooks: Sequence[Hook] = (),
                 log_total: bool = False) -> None:
        if sample and inputs is None:
            raise ValueError("a sampling trainer needs the model's input contract")
        self.model, self.model_key, self.inputs, self.sample = model, model_key, inputs, sample
        self.objectives, self.hooks, self.log_total = list(objectives), list(hooks), log_total
        for hook in self.hooks:
            hook.start(model)
        self.modules: dict[str, nn.Module] = {model_key: model}
        params = list(model.parameters())
        for objective in self.objectives:
            for name, module in objective.modules.items():
                self.modules[name] = module
                if name not in objective.optimizers:  # trains with the model
                    params += list(module.parameters())
        self.optimizers: dict[str, torch.optim.Optimizer] = {optimizer: torch.optim.Adam(params, lr=lr, betas=betas)}
        self._main = optimizer
        for objective in self.objectives:
            self.optimizers.update(objective.optimizers)
        self.train_modules: dict[str, nn.Module] = dict(self.modules)
        for hook in self.hooks:  # checkpointed, neither optimised nor wrapped
            self.modules.update(hook.modules)
        self.taps = [t for o in self.objectives for t in o.taps]
        self.global_step = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        """One step on real images (B, C, H, W); returns the objectives' logs and terms (and ``total``) as floats."""
        batch = Batch(self, images, labels, rng)
        if self.sample:
            assert self.inputs is not None
            batch.inputs = shard_inputs(self.inputs, rng, images.shape[0]).to(images.device)  # z (B, ...), y (B,)
            with tap(self.model, self.taps) as maps:  # hooks inside the plain module
                batch.fake = run(self.train_modules[self.model_key], batch.inputs)  # (B, C, H, W)
            batch.maps = maps
        logged: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        for objective in self.objectives:
            for name, value in objective(batch).items():
                term = objective.weights.get(name, 1.0) * value
                weighted.append(term)
                logged[name] = term if objective.log_weighted else value
        total = torch.stack(weighted).sum()
        opt = self.optimizers[self._main]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        self.global_step += 1
        for hook in self.hooks:
            hook.on_step(self.global_step, self.model)
        out = {**batch.logs, **{k: v.item() for k, v in logged.items()}}
        if self.log_total:
            out["total"] = total.item()
        return out

    def finish(self) -> None:
        """End the hooks, last first (masks folded back, parametrizations removed)."""
        for hook in reversed(self.hooks):
            hook.end(self.model)


# --- best epoch ---------------------------------------------------------------------------------------

class BestKeeper:
    """Keeps the model state of the lowest score seen; persisted next to the checkpoint for resume.

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


# --- presets by config class ---------------------------------------------------------------------------

Preset = Callable[..., Any]
PRESETS: dict[type, Preset] = {}


def register_preset(config_cls: type) -> Callable[[Preset], Preset]:
    """Register ``fn(bundle, config, *, data, teacher, score, checkpoint_dir, resume, device) -> bundle``, the
    preset that trains with a ``config_cls`` config (fine-tuning, distillation). Schedules that alternate
    pruning and training (:func:`slimgen.prune.schedules.prune_iteratively`) call :func:`tune`, so they
    never import the packages whose presets they run."""
    def deco(fn: Preset) -> Preset:
        PRESETS[config_cls] = fn
        return fn
    return deco


def tune(bundle: Any, config: Any, **kwargs: Any) -> Any:
    """Run the preset registered for ``type(config)`` on ``bundle`` (keyword arguments as in
    :func:`register_preset`); returns the trained bundle."""
    preset = PRESETS.get(type(config))
    if preset is None:
        known = ", ".join(sorted(c.__name__ for c in PRESETS))
        raise ConfigError(f"no training preset for {type(config).__name__}; known: {known}")
    return preset(bundle, config, **kwargs)


# --- what every model-in/model-out preset shares --------------------------------------------------------

@dataclass
class Fit:
    """The outcome of :func:`fit`: the loss history (one dict per epoch), the best-epoch keeper, seconds."""

    history: list[dict[str, float]]
    best: BestKeeper
    seconds: float
    precision: str = "fp32"  # the arithmetic the steps ran in (:func:`slimgen.train.loop.resolve_precision`)

    def record(self) -> dict[str, Any]:
        """The step-record fields every preset writes: epochs run, best epoch (the last without a score),
        seconds, the arithmetic the steps ran in (``fp32`` or ``bf16``), and the process count under torchrun."""
        out: dict[str, Any] = {"epochs_run": len(self.history), "best_epoch": self.best.epoch or len(self.history),
                               "seconds": round(self.seconds, 1), "precision_ran": self.precision}
        if distributed.world_size() > 1:
            out["processes"] = distributed.world_size()
        return out


def _first_step(checkpoint_dir: Path | None, resume: bool, batches: int) -> int:
    if not resume or checkpoint_dir is None or not has_checkpoint(checkpoint_dir):
        return 0
    return int(read_json(checkpoint_dir / META)["epoch"]) * batches


def fit(trainer: Trainer, data: ImageSet, settings: LoopSettings, *, device: torch.device, desc: str,
        score: Score | None = None, on_epoch: Callable[[int, nn.Module], dict[str, float]] | None = None,
        checkpoint_dir: str | Path | None = None, resume: bool = False, precision: str = "auto") -> Fit:
    """Train ``trainer`` for ``settings``; the model ends with the best epoch's weights and its hooks ended.

    ``score(model) -> float`` (lower is better; always in a training feature space) runs after each epoch
    on rank 0 (model in eval mode) and the best epoch is kept; without it, the last. ``on_epoch(epoch,
    model)`` adds to the epoch's record. One checkpoint per epoch in ``checkpoint_dir`` (and the best
    epoch's weights beside it); ``resume`` continues from it, hook step counts included. ``precision``:
    as in :func:`slimgen.train.loop.run_epochs` (``auto``, ``fp32``, ``bf16`` autocast or ``fast``); the
    :class:`Fit` records what it resolved to.
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ema_hook = next((h for h in trainer.hooks if isinstance(h, EMA)), None)
    ema = None if ema_hook is None else ema_hook.shadow
    model = trainer.model if ema is None else ema  # what is scored and kept
    batches = settings.steps_per_epoch or max(1, len(data) // settings.batch_size)
    trainer.global_step = _first_step(folder, resume, batches)
    best = BestKeeper(model, folder)
    if resume:
        best.restore_saved()

    def after_epoch(epoch: int) -> dict[str, float]:  # rank 0 only
        record: dict[str, float] = {}
        if ema_hook is not None:
            ema_hook.refresh()  # the average's own BatchNorm statistics, before it is scored and kept
        if score is not None:
            model.eval()
            record["score"] = float(score(model))
        if on_epoch is not None:
            record.update(on_epoch(epoch, model))
        return record

    def keep_best(epoch: int, record: dict[str, float]) -> None:  # every rank, on rank 0's record
        if score is not None:
            best.offer(epoch, record["score"])

    t0 = time.perf_counter()
    ran = resolve_precision(precision, device)
    history = run_epochs(trainer, data, settings, checkpoint_dir=folder, resume=resume, device=device, desc=desc,
                         on_epoch_end=after_epoch, on_record=keep_best, precision=ran)
    best.load_best()
    if ema is not None:
        trainer.model.load_state_dict(ema.state_dict())
    trainer.finish()
    return Fit(history, best, time.perf_counter() - t0, ran)
