"""What every speed number is made of: multiply-accumulates per image and the median latency of a call.

They live with the runtimes (which bench with them) so that :mod:`slimgen.evaluate.cost`, one layer
up, can use them too; MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), which
counts ConvTranspose2d correctly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimgen.models.inputs import GenInputs, call
from slimgen.models.mode import in_mode


def count_macs(model: nn.Module, example_input: torch.Tensor | GenInputs) -> int:
    """Multiply-accumulates per image: FLOPs of one forward on ``example_input`` (a batch (B, ...) or
    generator inputs) / 2 / batch size.

    Runs with gradients on: FlopCounterMode hooks every module's inputs into autograd, and under no_grad a view
    of a parameter passed to a submodule (StyleGAN's ``const.expand(B, ...)``) has no grad function to hook.
    """
    with in_mode(model), torch.enable_grad(), FlopCounterMode(display=False) as counter:
        call(model, example_input)
    return int(counter.get_total_flops() // 2 // len(example_input))


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
