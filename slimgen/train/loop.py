"""The one epoch loop every training-type step uses: seeded, checkpointed, resumable, NaN-safe.

Under torchrun the same loop runs on every rank: see :mod:`slimgen.train.distributed` for how
batches, random draws, BatchNorm statistics and gradients are shared, and which rank writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen._env import cpu_has_bf16
from slimgen.data import ImageSet
from slimgen.errors import ConfigError, SlimgenError, TrainingDiverged
from slimgen.train import distributed
from slimgen.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint

PRECISIONS = ("auto", "fp32", "bf16", "fast")
LR_SCHEDULES = ("constant", "cosine")


def resolve_device(device: str = "auto") -> torch.device:
    """cpu, cuda or auto (cuda when available); under torchrun, cuda means ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise SlimgenError(f"device must be cpu, cuda or auto, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SlimgenError("--device cuda: no CUDA device is available")
    if device == "cuda" and distributed.launched_by_torchrun():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(device)


class Task(Protocol):
    """One kind of training: its modules, optimizers and one optimisation step on a batch.

    ``modules``: what is checkpointed. ``train_modules``: the trained modules that ``step``
    calls (usually the same keys; frozen ones such as a teacher stay out); the loop replaces
    its entries by DistributedDataParallel wrappers under torchrun and puts the plain modules
    back afterwards. A task without ``train_modules`` runs in one process only.
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        """One step on a batch (B, C, H, W); returns losses as floats."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int = 128  # the global batch: split across processes under torchrun
    seed: int = 0
    steps_per_epoch: int | None = None  # None: one pass over the data
    lr_schedule: str = "constant"  # or "cosine": see lr_factor

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SlimgenError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SlimgenError(f"batch_size must be >= 1, got {self.batch_size}")
        _check_lr_schedule(self.lr_schedule)


def _check_lr_schedule(schedule: str) -> None:
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate in epoch ``epoch`` (0-based) of ``epochs``.

    ``constant``: 1. ``cosine``: 0.5 * (1 + cos(pi * epoch / epochs)), from 1 in the first epoch
    down to nearly 0 in the last (it never reaches 0: the last epoch still trains).
    """
    _check_lr_schedule(schedule)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 1.0


def _set_lr(task: Task, settings: LoopSettings, epoch: int) -> None:
    """Set every optimizer's learning rate for ``epoch`` from the base rate kept in its param groups.

    The base rate is stored as ``initial_lr`` in each param group, which the optimizer's state
    dict (and so the checkpoint) carries: a resumed run sets the same rates as an unbroken one.
    """
    factor = lr_factor(settings.lr_schedule, epoch, settings.epochs)
    for opt in task.optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def check_schedule(*, epochs: int, lr: float, batch_size: int, steps_per_epoch: int | None,
                   lr_schedule: str = "constant") -> None:
    """Validate the settings every training-type config shares; raises ConfigError with the bad value."""
    _check_lr_schedule(lr_schedule)
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be >= 1 or None, got {steps_per_epoch}")


def check_precision(precision: str) -> None:
    """ConfigError unless ``precision`` is a training precision (auto, fp32, bf16, fast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bf16 arithmetic units: a CUDA GPU that supports bf16, or a CPU with AMX-BF16 or
    AVX512-BF16. Elsewhere bf16 autocast is emulated in fp32 and far slower than fp32 (e.g. on an AVX2 CPU)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic a training ``precision`` runs in on ``device``: ``bf16`` or ``fp32``.

    ``auto``: bf16 autocast on CUDA, fp32 elsewhere. ``fast``: bf16 where the device computes bf16 natively
    (:func:`native_bf16`), fp32 elsewhere, so a recipe that trains in bf16 for speed on one machine is not
    many times slower on another. ``bf16`` is taken as asked, with a warning where it is not native.
    """
    check_precision(precision)
    if precision == "fast":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(f"bf16 training on {_device_name(device)}, which has no bf16 arithmetic: autocast emulates it, "
                      "far slower than fp32; precision 'fast' trains in bf16 only where the device has it",
                      stacklevel=1)  # one place, so the default filter shows it once however many callers resolve
    return precision


def _device_name(device: torch.device) -> str:
    return "this CPU (no AMX-BF16 or AVX512-BF16)" if device.type == "cpu" else f"device {device}"


def _bars_off() -> bool:
    """``TQDM_DISABLE`` set now. tqdm reads its own switch once, at import, and an explicit ``disable=`` (needed
    for the other ranks) overrides it anyway."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def _epoch_rng(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _batch_indices(order: torch.Tensor, b: int, batch_size: int) -> torch.Tensor:
    """Indices of global batch ``b`` (batch_size,), wrapping around the epoch's permutation."""
    n = len(order)
    idx = order[(b * batch_size) % n:][:batch_size]
    if len(idx) < batch_size:  # wrap around for steps_per_epoch beyond one pass
        idx = torch.cat([idx, order[: batch_size - len(idx)]])
    return idx


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast for a resolved ``bf16`` (:func:`resolve_precision`); nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _distributed_task(task: Task, device: torch.device, sync_batchnorm: bool) -> Iterator[None]:
    """Under torchrun: BatchNorm synced and ``task.train_modules`` in DDP for the block, undone after."""
    if not distributed.setup(device):
        yield
        return
    plain = getattr(task, "train_modules", None)
    if not isinstance(plain, dict):
        raise SlimgenError(f"{type(task).__name__} cannot train on several processes: it has no "
                           "train_modules (the modules its step() calls, which the loop wraps in DDP)")
    originals = dict(plain)
    undo = [u for m in originals.values() for u in distributed.sync_batchnorm(m, device)] if sync_batchnorm else []
    try:
        for name, module in originals.items():
            plain[name] = distributed.wrap_ddp(module, device)
        yield
    finally:
        plain.update(originals)
        distributed.restore_batchnorm(undo)


def _check_finite(losses: dict[str, float], desc: str, epoch: int, b: int, checkpoint_dir: str | Path | None) -> None:
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"{desc}: loss {bad[0]} became {losses[bad[0]]} in epoch {epoch + 1}, batch {b + 1}; "
            f"stopped, the last good checkpoint (epoch {epoch}) is kept"
            + (f" in {checkpoint_dir}" if checkpoint_dir else "")
        )


def _run_epoch(task: Task, data: ImageSet, settings: LoopSettings, epoch: int, *, device: torch.device,
               precision: str, desc: str, checkpoint_dir: str | Path | None) -> dict[str, float]:
    """One epoch on this rank's shard of every global batch; returns the mean losses over all ranks."""
    rng = _epoch_rng(settings.seed, epoch)
    # dropout and other global-RNG users: rank 0 as a single process, other ranks draw other masks
    torch.manual_seed(settings.seed * 100_003 + epoch + 1_000_003 * distributed.rank())
    order = torch.randperm(len(data), generator=rng)  # the same on every rank
    for m in task.modules.values():
        m.train()
    batches = settings.steps_per_epoch or max(1, len(data) // settings.batch_size)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # a term that runs on some steps only (adversarial ``every``) is averaged over those
    bar = tqdm(range(batches), desc=f"{desc} {epoch + 1}/{settings.epochs}", leave=False, dynamic_ncols=True,
               disable=not distributed.is_main() or _bars_off())
    for b in bar:
        idx = distributed.shard(_batch_indices(order, b, settings.batch_size))  # (B / W,)
        images = data.images[idx].to(device)
        labels = None if data.labels is None else data.labels[idx].to(device)
        with _autocast(device, precision):
            losses = task.step(images, labels, rng)
        losses = dict(zip(losses, distributed.mean_across_ranks(list(losses.values()), device), strict=True))
        _check_finite(losses, desc, epoch, b, checkpoint_dir)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        if b % 10 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
    bar.close()
    return {k: v / counts[k] for k, v in sums.items()}


def run_epochs(
    task: Task, data: ImageSet, settings: LoopSettings, *, checkpoint_dir: str | Path | None = None,
    resume: bool = False, device: torch.device | None = None, desc: str = "train",
    on_epoch_end: Callable[[int], dict[str, float]] | None = None, sync_batchnorm: bool = True,
    precision: str = "auto", on_record: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``task`` for ``settings.epochs`` epochs; returns one dict of mean losses per epoch.

    Everything random in epoch ``e`` (shuffling, latents, dropout) derives from ``(seed, e)``, so
    resuming from the checkpoint after epoch ``e`` gives the same result as not stopping.
    A checkpoint is written atomically after every epoch when ``checkpoint_dir`` is given.

    Under torchrun (see :mod:`slimgen.train.distributed`) every rank runs this with the same
    arguments: ``settings.batch_size`` is the global batch, split evenly across ranks; all ranks
    resume from the same checkpoint (on a shared filesystem for several machines); rank 0 alone
    writes checkpoints, shows progress and runs ``on_epoch_end`` (whose record every rank then
    gets). ``on_record(epoch, record)`` then runs on every rank with that shared record, before
    the checkpoint: for decisions all ranks must take alike (keeping the best epoch's weights).
    ``sync_batchnorm``: BatchNorm statistics over the global batch when multi-process.
    ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16``, or ``fast`` (bf16
    where the device has bf16 arithmetic, else fp32); see :func:`resolve_precision`.
    """
    device = device or torch.device("cpu")
    precision = resolve_precision(precision, device)  # a ConfigError (a SlimgenError) for an unknown one
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        if checkpoint_dir is None or not has_checkpoint(checkpoint_dir):
            raise SlimgenError(f"--resume: no checkpoint in {checkpoint_dir}")
        meta = load_checkpoint(checkpoint_dir, modules=task.modules, optimizers=task.optimizers)
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
    with _distributed_task(task, device, sync_batchnorm):
        distributed.local_batch(settings.batch_size)  # an uneven split fails before any work
        if history and history[-1].get(PENDING) and (on_epoch_end is not None or on_record is not None):
            _finish_epoch(task, history, start_epoch, on_epoch_end, on_record, checkpoint_dir)  # scoring failed last time
        for epoch in range(start_epoch, settings.epochs):
            t0 = time.perf_counter()
            _set_lr(task, settings, epoch)
            record = _run_epoch(task, data, settings, epoch, device=device, precision=precision, desc=desc,
                                checkpoint_dir=checkpoint_dir)
            record["epoch"] = epoch + 1
            record["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(record)
            if on_epoch_end is not None or on_record is not None:
                # the epoch's weights reach the disk before anything scores them: a failure while
                # scoring leaves a resumable run whose resume scores this epoch first
                record[PENDING] = 1.0
                _checkpoint(task, history, epoch + 1, checkpoint_dir)
                _finish_epoch(task, history, epoch + 1, on_epoch_end, on_record, None)
            _end_epoch(task, history, epoch, settings, desc, checkpoint_dir)
    return history


PENDING = "pending_score"  # in a checkpoint's last history record: the epoch's weights are saved, not yet scored


def _checkpoint(task: Task, history: list[dict[str, float]], epoch: int, checkpoint_dir: str | Path | None) -> None:
    if checkpoint_dir is not None and distributed.is_main():
        save_checkpoint(checkpoint_dir, modules=task.modules, optimizers=task.optimizers, epoch=epoch, history=history)
    distributed.barrier()


def _finish_epoch(task: Task, history: list[dict[str, float]], epoch: int,
                  on_epoch_end: Callable[[int], dict[str, float]] | None,
                  on_record: Callable[[int, dict[str, float]], None] | None, checkpoint_dir: str | Path | None) -> None:
    """Score epoch ``epoch`` (rank 0's ``on_epoch_end``, shared) and let every rank act on the record."""
    record = history[-1]
    if on_epoch_end is not None:
        record.update(distributed.from_main(on_epoch_end(epoch) if distributed.is_main() else None))
    record.pop(PENDING, None)
    if on_record is not None:
        on_record(epoch, record)
    if checkpoint_dir is not None:  # a resumed epoch: record its score now
        _checkpoint(task, history, epoch, checkpoint_dir)


def _end_epoch(task: Task, history: list[dict[str, float]], epoch: int, settings: LoopSettings, desc: str,
               checkpoint_dir: str | Path | None) -> None:
    """Rank 0 reports and checkpoints; the other ranks wait until the checkpoint is complete."""
    if distributed.is_main():
        tqdm.write(f"{desc} epoch {epoch + 1}/{settings.epochs}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in history[-1].items() if k != "epoch"))
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, modules=task.modules, optimizers=task.optimizers,
                            epoch=epoch + 1, history=history)
    distributed.barrier()
