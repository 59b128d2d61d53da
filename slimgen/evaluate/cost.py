"""Cost of a model: parameters, non-zero parameters, MACs per image and latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), which counts
ConvTranspose2d correctly; thop and torch-pruning's counter overcount it by stride squared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (elements), zeros included."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates per image: FLOPs of one forward on ``example_input`` / 2 / batch size."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2 // example_input.shape[0])


def median_latency_ms(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def torch_latency_ms(model: nn.Module, example_input: torch.Tensor, *, warmup: int = 3, repeats: int = 20) -> float:
    """Median latency of ``model(example_input)`` in eval mode, milliseconds per call (whole batch)."""
    model.eval()
    return median_latency_ms(lambda: model(example_input), warmup=warmup, repeats=repeats)
