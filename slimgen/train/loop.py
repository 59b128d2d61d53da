"""The one epoch loop every training-type step uses: seeded, checkpointed, resumable, NaN-safe."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen.data import ImageSet
from slimgen.errors import SlimgenError, TrainingDiverged
from slimgen.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise SlimgenError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SlimgenError("--device cuda: no CUDA device is available")
    return torch.device(device)


class Task(Protocol):
    """One kind of training: its modules, optimizers and one optimisation step on a batch."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        """One step on a batch (B, C, H, W); returns losses as floats."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int = 128
    seed: int = 0
    steps_per_epoch: int | None = None  # None: one pass over the data

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SlimgenError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SlimgenError(f"batch_size must be >= 1, got {self.batch_size}")


def _epoch_rng(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def run_epochs(
    task: Task, data: ImageSet, settings: LoopSettings, *, checkpoint_dir: str | Path | None = None,
    resume: bool = False, device: torch.device | None = None, desc: str = "train",
    on_epoch_end: Callable[[int], dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Train ``task`` for ``settings.epochs`` epochs; returns one dict of mean losses per epoch.

    Everything random in epoch ``e`` (shuffling, latents, dropout) derives from ``(seed, e)``, so
    resuming from the checkpoint after epoch ``e`` gives the same result as not stopping.
    A checkpoint is written atomically after every epoch when ``checkpoint_dir`` is given.
    """
    device = device or torch.device("cpu")
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        if checkpoint_dir is None or not has_checkpoint(checkpoint_dir):
            raise SlimgenError(f"--resume: no checkpoint in {checkpoint_dir}")
        meta = load_checkpoint(checkpoint_dir, modules=task.modules, optimizers=task.optimizers)
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
    n = len(data)
    batches = settings.steps_per_epoch or max(1, n // settings.batch_size)
    for epoch in range(start_epoch, settings.epochs):
        rng = _epoch_rng(settings.seed, epoch)
        torch.manual_seed(settings.seed * 100_003 + epoch)  # dropout and other global-RNG users
        order = torch.randperm(n, generator=rng)
        for m in task.modules.values():
            m.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        bar = tqdm(range(batches), desc=f"{desc} {epoch + 1}/{settings.epochs}", leave=False, dynamic_ncols=True)
        for b in bar:
            idx = order[(b * settings.batch_size) % n:][: settings.batch_size]
            if len(idx) < settings.batch_size:  # wrap around for steps_per_epoch beyond one pass
                idx = torch.cat([idx, order[: settings.batch_size - len(idx)]])
            images = data.images[idx].to(device)
            labels = None if data.labels is None else data.labels[idx].to(device)
            losses = task.step(images, labels, rng)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise TrainingDiverged(
                    f"{desc}: loss {bad[0]} became {losses[bad[0]]} in epoch {epoch + 1}, batch {b + 1}; "
                    f"stopped, the last good checkpoint (epoch {epoch}) is kept"
                    + (f" in {checkpoint_dir}" if checkpoint_dir else "")
                )
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if b % 10 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        bar.close()
        record = {k: v / batches for k, v in sums.items()}
        record["epoch"] = epoch + 1
        record["seconds"] = round(time.perf_counter() - t0, 2)
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch + 1))
        history.append(record)
        tqdm.write(f"{desc} epoch {epoch + 1}/{settings.epochs}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, modules=task.modules, optimizers=task.optimizers,
                            epoch=epoch + 1, history=history)
    return history
