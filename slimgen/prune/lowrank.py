"""Low-rank factorization as a pruning method: layers replaced by two thinner ones (truncated SVD).

Channel pruning removes channels; this keeps every channel and removes rank: a layer whose weight
(read over its input or output channels, :func:`slimgen.models.factorized.matrix`) is close to a
low-rank matrix becomes a 1x1 map and the layer at that rank. The chosen layers, each one's rank and
the weight energy it keeps are recorded in the step (``factorized_layers``), the layers left whole
with the reason (``kept_layers``). A rank that would not store fewer weights than the layer is
refused for a named layer and skipped otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.factorized import LAYERS, LowRank, factorize, matrix, weights_at, why_not
from slimgen.models.inputs import GenInputs
from slimgen.prune.calibration import PruneContext
from slimgen.prune.configs import LowRankFactorization
from slimgen.prune.kernel import output_layer


def rank_for(layer: nn.Module, config: LowRankFactorization) -> int:
    """``config.rank`` (capped at the layer's full rank), or the smallest rank keeping ``config.energy``."""
    m = matrix(layer, config.side)
    full = min(m.shape)
    if config.rank is not None:
        return min(config.rank, full)
    s2 = torch.linalg.svdvals(m.double()) ** 2
    kept = s2.cumsum(0) / s2.sum().clamp_min(1e-30)
    return min(int((kept < config.energy - 1e-12).sum()) + 1, full)


def _too_big(layer: nn.Module, rank: int, side: str) -> str | None:
    """Why factorizing ``layer`` at ``rank`` does not pay (it would not store fewer weights), or None."""
    after = weights_at(layer, rank, side)
    if after < layer.weight.numel():
        return None
    return f"at rank {rank} ({side} side; its full rank is {min(matrix(layer, side).shape)}) it would store " \
           f"{after:,} weights, not fewer than its {layer.weight.numel():,}"


def plan(model: nn.Module, config: LowRankFactorization, example: torch.Tensor | GenInputs | None
         ) -> tuple[dict[str, int], dict[str, str]]:
    """``({layer: rank}, {layer left whole: why})``: the named layers (refusing what cannot be done), else the
    default choice (see :class:`LowRankFactorization`)."""
    modules = dict(model.named_modules())
    chosen: dict[str, int] = {}
    left: dict[str, str] = {}
    if config.layers:
        for name in config.layers:
            if name not in modules or not name:
                near = [n for n, m in modules.items() if isinstance(m, LAYERS)]
                raise ConfigError(f"layers names {name!r}, which the model does not have; its layers: "
                                  f"{', '.join(near) or 'none'}")
            why = why_not(modules[name])
            if why is not None:
                if config.required:
                    raise ConfigError(f"cannot factorize {name!r}: it {why}")
                left[name] = why
                continue
            rank = rank_for(modules[name], config)
            too_big = _too_big(modules[name], rank, config.side)
            if too_big is not None:
                if config.required:
                    raise ConfigError(f"cannot factorize {name!r}: {too_big}; give a lower rank or energy")
                left[name] = too_big
                continue
            chosen[name] = rank
        return chosen, left
    output = output_layer(model, example) if example is not None else None
    inside = [n for n, m in modules.items() if isinstance(m, LowRank)]  # factorized before: left as they are
    for name, m in modules.items():
        if not isinstance(m, LAYERS) or any(name.startswith(p + ".") for p in inside):
            continue
        why = why_not(m)
        if why is not None:
            left[name] = why
        elif name == output:
            left[name] = "writes the model's output (name it in layers to factorize it too)"
        elif (too_big := _too_big(m, rank := rank_for(m, config), config.side)) is not None:
            left[name] = too_big
        else:
            chosen[name] = rank
    return chosen, left


def factorize_layers(model: nn.Module, config: LowRankFactorization, ctx: PruneContext
                     ) -> tuple[nn.Module, dict[str, Any], dict[str, str]]:
    """Factorize the layers of :func:`plan` in place: the model, ``{layer: {rank, energy}}`` and the layers left."""
    example = ctx.example_inputs
    chosen, left = plan(model, config, example)
    if not chosen:
        why = "; ".join(f"{n}: {r}" for n, r in left.items()) or "it has no Conv2d/ConvTranspose2d/Linear layer"
        if config.required:
            raise ConfigError(f"low-rank factorization found no layer to factorize ({why})")
        warnings.warn(f"low-rank factorization found no layer to factorize, so the step changed nothing ({why})",
                      stacklevel=2)
        return model, {}, left
    for name, why in left.items() if config.layers else ():
        warnings.warn(f"low-rank factorization left {name} whole: {why}", stacklevel=2)
    done: dict[str, Any] = {}
    for name, rank in chosen.items():
        low, kept = factorize(model.get_submodule(name), rank, config.side)
        model.set_submodule(name, low)
        done[name] = {"rank": rank, "energy": round(kept, 6)}
    return model, done, left
