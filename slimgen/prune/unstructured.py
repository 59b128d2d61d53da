"""Unstructured pruning: per-weight scores, masks from scores, masks applied with torch.nn.utils.prune.

Scores and masks are pure tensor maths; :func:`attach_masks` and :func:`make_permanent` are
the module surgery. While a mask is attached, ``weight = weight_orig * weight_mask`` is
recomputed on every forward, so fine-tuning cannot revive a pruned weight.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from slimgen.errors import ConfigError
from slimgen.prune.calibration import PruneContext, for_each_gradient

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv/ConvTranspose/Linear layers (with a weight) by qualified name; an error if there are none."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE) and getattr(m, "weight", None) is not None}
    if not layers:
        kinds = sorted({type(m).__name__ for m in model.modules() if list(m.parameters(recurse=False))})
        raise ConfigError(
            f"nothing to prune: {type(model).__name__} has no Conv/ConvTranspose/Linear layer "
            f"(its parameter layers are: {', '.join(kinds) or 'none'}); unstructured pruning supports those three"
        )
    return layers


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the forward uses it, with an attached mask applied (fresh, not the cached attribute)."""
    if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
        return module.weight_orig * module.weight_mask
    return module.weight


# --- scores: {layer name: tensor shaped like the weight}, higher = more important ------------------

@torch.no_grad()
def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: effective_weight(m).detach().abs() for n, m in prunable_layers(model).items()}


def random_scores(model: nn.Module, *, seed: int) -> dict[str, torch.Tensor]:
    """Uniform random scores; weights already zero score 0 so they stay pruned."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in prunable_layers(model).items():
        w = effective_weight(m).detach()
        out[n] = torch.rand(w.shape, generator=g).to(w.device) * (w != 0)
    return out


def gradient_scores(model: nn.Module, ctx: PruneContext, *, criterion: str, loss: str, batch_size: int) -> dict[str, torch.Tensor]:
    """Sum over calibration batches of |w * dL/dw| (``taylor``) or (dL/dw)^2 (``fisher``)."""
    layers = prunable_layers(model)
    sums = {n: torch.zeros_like(effective_weight(m)).detach() for n, m in layers.items()}

    def add() -> None:
        for n, m in layers.items():
            param = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            if param.grad is None:
                continue
            w = effective_weight(m).detach()
            g = param.grad.detach()
            sums[n] += (w * g).abs() if criterion == "taylor" else g.pow(2) * (w != 0)

    for_each_gradient(model, ctx, loss=loss, batch_size=batch_size, method="GradientPruning", on_batch=add)
    model.zero_grad(set_to_none=True)
    return sums


# --- masks: {name: bool tensor}, True = keep -----------------------------------------------------

def _keep_top(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Bool mask of ``scores``' shape that drops exactly the ``n_prune`` lowest scores (stable order)."""
    flat = scores.flatten()
    mask = torch.ones_like(flat, dtype=torch.bool)
    order = torch.sort(flat, stable=True).indices
    mask[order[:n_prune]] = False
    return mask.view(scores.shape)


def layerwise_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Every tensor loses round(sparsity * numel) of its lowest-scoring elements."""
    return {n: _keep_top(s, round(sparsity * s.numel())) for n, s in scores.items()}


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """round(sparsity * total) lowest scores over all tensors together are dropped (layers end up uneven)."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten().float() for n in names])
    keep = _keep_top(flat, round(sparsity * flat.numel()))
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start:start + size].view(scores[n].shape)
        start += size
    return out


def threshold_masks(scores: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """Keep exactly the elements scoring >= ``threshold``."""
    return {n: s >= threshold for n, s in scores.items()}


def masks_for(scores: dict[str, torch.Tensor], *, sparsity: float | None, threshold: float | None,
              scope: str) -> dict[str, torch.Tensor]:
    if threshold is not None:
        return threshold_masks(scores, threshold)
    assert sparsity is not None
    return global_masks(scores, sparsity) if scope == "global" else layerwise_masks(scores, sparsity)


# --- module surgery --------------------------------------------------------------------------------

def has_mask(module: nn.Module, name: str = "weight") -> bool:
    return torch_prune.is_pruned(module) and hasattr(module, f"{name}_mask")


def attach_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach (or overwrite in place) a ``weight`` mask on each named layer via torch.nn.utils.prune."""
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if has_mask(module):
            module.weight_mask.copy_(mask.to(module.weight_mask))
            with torch.no_grad():
                module.weight = module.weight_orig * module.weight_mask  # refresh the cached attribute
        else:
            torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
    return model


def make_permanent(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """Fold every attached pruning mask (or those of layers ``names``) into a plain weight with zeros."""
    for name, module in model.named_modules():
        if names is not None and name not in names:
            continue
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod | torch_prune.PruningContainer):
                torch_prune.remove(module, hook._tensor_name)
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of Conv/ConvTranspose/Linear weight elements that are zero."""
    ws = [effective_weight(m) for m in prunable_layers(model).values()]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total
