"""Sparsity training: an L1 penalty on weights and on norm scales (network slimming)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from slimgen.prune.configs import SparsityTraining

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


def sparsity_penalty(model: nn.Module, config: SparsityTraining) -> torch.Tensor:
    """Scalar ``l1_weight * sum|w|`` (Conv/ConvTranspose/Linear weights) + ``l1_bn * sum|gamma|`` (norm scales)."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for m in model.modules():
        w = getattr(m, "weight", None)
        if w is None:
            continue
        if config.l1_weight and isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
            total = total + config.l1_weight * w.abs().sum()
        elif config.l1_bn and isinstance(m, _NORMS):
            total = total + config.l1_bn * w.abs().sum()
    return total


def penalty_for(config: SparsityTraining) -> Callable[[nn.Module], torch.Tensor]:
    """The ``penalty`` argument of :func:`slimgen.train.finetune.finetune` for ``config``."""
    return functools.partial(sparsity_penalty, config=config)
