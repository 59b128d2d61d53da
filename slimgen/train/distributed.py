"""Multi-process training on torch.distributed: torchrun detection, DDP, BatchNorm sync, sharding.

Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment), the
training loop joins the process group (gloo on CPU, NCCL on CUDA, one GPU per process:
``cuda:LOCAL_RANK``), wraps what a task trains in DistributedDataParallel and gives every rank
a strided slice of each global batch. Without torchrun every function here is a no-op, so
single-process training is unchanged. Every training-type step runs this way: ``train`` (GAN,
VAE, classifier tasks), ``finetune`` (also under QAT and gradual pruning) and ``distill``; rank
0 alone evaluates an epoch (FID for the best epoch), and the loop hands its record to every
rank (``on_record``) so that all ranks keep the same best weights.

Sharding: the loop draws the same seeded permutation on every rank and cuts it into global
batches of ``batch_size`` exactly as a single process would; rank ``r`` of ``W`` takes
``batch[r::W]``. Over an epoch that is what ``DistributedSampler`` hands each rank (its
``indices[rank::W]`` of one permutation, taken ``batch_size / W`` at a time), but with the
single-process permutation, so a W-process run sees the same global batches as a 1-process run.
Random draws per sample (GAN latents, flips) go through :func:`shard_draw`: the global batch's
draw from the epoch generator, then the rank's slice. With SyncBatchNorm a W-process run then
equals the 1-process run up to float rounding (DDP averages per-rank mean-loss gradients).
Not covered: draws from the global RNG (dropout masks), which each rank seeds with
``(seed, epoch, rank)`` so ranks differ from each other; a model with dropout trains equivalently
but not identically. Parameters with no effect on the loss (a conv bias right before BatchNorm)
get rounding-noise gradients that Adam scales to full steps, so they differ even when the
model's outputs agree.

BatchNorm: in train mode, per-rank statistics of a ``batch_size / W`` shard differ from the
global batch's, which changes what a GAN learns; :func:`sync_batchnorm` (on by default under
torchrun) converts BatchNorm layers to ``torch.nn.SyncBatchNorm`` on CUDA. torch's SyncBatchNorm
refuses CPU tensors, so on CPU (gloo) the same maths runs in :class:`AllReduceBatchNorm`, whose
statistics are summed with torch.distributed's differentiable ``all_reduce``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from slimgen.errors import SlimgenError
from slimgen.models.inputs import GenInputs, InputSpec

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher with the same environment) started this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on the process that writes files and shows progress: rank 0, or the only process.

    Under torchrun before (or without) joining the group, torchrun's ``RANK`` decides, so a
    command that never trains (post-training quantization) still writes from one process only.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched_by_torchrun() or os.environ["RANK"] == "0"


def setup(device: torch.device) -> bool:
    """Join the process group torchrun describes, once; returns whether this run is multi-process.

    A group the caller initialized itself (``torch.multiprocessing.spawn``) is used as it is.

    Backend: NCCL for a CUDA ``device`` (which must be ``cuda:LOCAL_RANK``), gloo otherwise.
    Rendezvous comes from torchrun's ``MASTER_ADDR``/``MASTER_PORT`` (``env://``).
    """
    if launched_by_torchrun() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        # a process that exits with the group still up can abort in gloo's threads
        # ("terminate called without an active exception"): leave it at exit, library use included
        atexit.register(teardown)
    return is_distributed()


def teardown() -> None:
    """Leave the process group (end of a CLI command); a no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_batch(batch_size: int) -> int:
    """Each rank's share of a global batch of ``batch_size``; the split must be even."""
    w = world_size()
    if batch_size % w:
        raise SlimgenError(f"batch_size {batch_size} cannot be split evenly across {w} processes; "
                           f"use a multiple of {w}")
    return batch_size // w


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch (B, ...): ``batch[rank::world]``, (B / W, ...)."""
    return batch[rank()::world_size()] if is_distributed() else batch


def shard_draw(draw: Callable[[int], torch.Tensor], local: int) -> torch.Tensor:
    """``draw(n)`` for the global batch of ``local * W`` rows, then this rank's slice (local, ...).

    Tasks draw per-sample randomness (latents, flips) through this so that every rank consumes
    the epoch generator exactly as a single process does and gets its own samples' draws.
    """
    return shard(draw(local * world_size()))


def shard_inputs(spec: InputSpec, rng: torch.Generator, local: int) -> GenInputs:
    """Generator inputs of the global batch (``local * W`` samples drawn from ``rng`` through the input
    contract), then this rank's ``local`` of them: the same per-sample draws as one process."""
    full = spec.sample(local * world_size(), rng)
    return GenInputs(shard(full.z), None if full.y is None else shard(full.y))


def mean_across_ranks(values: list[float], device: torch.device) -> list[float]:
    """The mean of each value over all ranks (identity in a single process)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value; identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm whose train-mode statistics cover the global batch of all ranks, on any device.

    The same maths as ``torch.nn.SyncBatchNorm`` (which accepts only GPU tensors): per-channel
    sums of x and x^2 and the count are summed over ranks with the differentiable
    ``torch.distributed.nn.functional.all_reduce``, so gradients flow through the statistics.
    Sums are taken in float64. Eval mode, or no process group, is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        c, dims = x.shape[1], [d for d in range(x.dim()) if d != 1]
        xd = x.double()
        count = torch.full((1,), x.numel() / c, dtype=torch.float64, device=x.device)
        stats = _differentiable_sum(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises
        self._track(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """Update running statistics as BatchNorm does (momentum, or a cumulative mean if None)."""
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased_var.to(self.running_var.dtype), alpha=m)


def _differentiable_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks whose backward sums the gradients over ranks too.

    ``torch.distributed.nn.functional.all_reduce`` warns that it is deprecated in favour of the
    private functional collectives, which have no autograd for all_reduce; it still works.
    """
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


Undo = list[tuple[nn.Module, str, nn.Module]]


def _synced_copy(bn: _BatchNorm, device: torch.device) -> _BatchNorm:
    """A sync BatchNorm sharing ``bn``'s parameters and buffers (optimizers keep working)."""
    cls = nn.SyncBatchNorm if device.type == "cuda" else AllReduceBatchNorm
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    return new.train(bn.training)


def sync_batchnorm(module: nn.Module, device: torch.device) -> Undo:
    """Swap every BatchNorm child of ``module`` for a synchronised one, in place; returns the undo list.

    Parameters and buffers are the same tensors, so optimizers, checkpoints (same state-dict
    keys) and model folders do not notice. :func:`restore_batchnorm` swaps the originals back.
    A root that is itself a BatchNorm is left alone.
    """
    undo: Undo = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCHNORMS):
                setattr(parent, name, _synced_copy(child, device))
                undo.append((parent, name, child))
    return undo


def restore_batchnorm(undo: Undo) -> None:
    """Put back the BatchNorm layers :func:`sync_batchnorm` replaced (their state is shared)."""
    for parent, name, original in reversed(undo):
        original.train(getattr(parent, name).training)
        setattr(parent, name, original)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel, on its GPU for CUDA; modules without trainable weights stay bare."""
    from torch.nn.parallel import DistributedDataParallel

    if not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
