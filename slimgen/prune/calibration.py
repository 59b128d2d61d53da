"""What data-driven importances need: the calibration loss, its gradients and mean activations.

A generator has no labels. With a critic (the discriminator) the loss is the non-saturating
generator loss ``BCE(D(G(z)), 1)``, the objective the generator was trained on; without one it
is the output norm ``0.5 * mean(f(x)^2)``, which needs nothing but the model. The
``output_projection`` loss ``sum(v * f(x))``, with a fresh Gaussian ``v`` shaped like the output
for every batch, has gradients whose squares estimate the Gauss-Newton (Fisher) diagonal of an
L2 loss to the model's own outputs: |w * dL/dw| summed over batches then ranks weights like
Optimal Brain Damage's w^2 * H_ii (how much the outputs move when w is zeroed). Channel Taylor
importance reads the gradient summed over batches instead, whose size estimates the same
quantity with more noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, call, carried_inputs
from slimgen.models.mode import in_mode
from slimgen.train.objectives import generator_adversarial


@dataclass(frozen=True)
class PruneContext:
    """Inputs a pruner may need besides the model and its config.

    ``example_inputs``: one batch the model accepts, (B, ...) (graph tracing, MAC checks).
    ``calibration``: (N, ...) inputs for data-driven importances (latents for a generator).
    ``critic``: a module scoring the model's outputs (the discriminator), or None.
    ``notes``: what a pruner reports for the step record (``cropped_layers``, ``kept_layers``, ...).
    """

    example_inputs: torch.Tensor | GenInputs | None = None
    calibration: torch.Tensor | GenInputs | None = None
    critic: nn.Module | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def need_calibration(self, method: str) -> torch.Tensor | GenInputs:
        if self.calibration is None:
            raise ConfigError(f"{method} needs calibration inputs: pass calibration=(N, ...) inputs of the model")
        return self.calibration

    def need_example_inputs(self, method: str) -> torch.Tensor | GenInputs:
        if self.example_inputs is not None:
            return self.example_inputs
        if self.calibration is not None:
            return self.calibration[:2]
        raise ConfigError(f"{method} needs example_inputs: one batch (B, ...) the model accepts")


def resolve_loss(loss: str, critic: nn.Module | None) -> str:
    """``auto`` -> ``adversarial`` when a critic is available, else ``output_norm``."""
    if loss == "auto":
        return "adversarial" if critic is not None else "output_norm"
    if loss == "adversarial" and critic is None:
        raise ConfigError("loss='adversarial' needs a discriminator: prune the generator of a GAN model folder")
    return loss


def resolve_importance(importance: str, ctx: PruneContext) -> str:
    """Channel importance ``auto`` -> ``taylor`` where calibration inputs are available, else ``l1``."""
    if importance == "auto":
        return "taylor" if ctx.calibration is not None else "l1"
    return importance


PROJECTION_SEED = 7


def calibration_loss(model: nn.Module, batch: torch.Tensor | GenInputs, *, loss: str, critic: nn.Module | None,
                     index: int = 0) -> torch.Tensor:
    """Scalar loss of ``model`` on calibration batch number ``index`` (B, ...) or generator inputs."""
    out = call(model, batch)
    if loss == "output_projection":
        g = torch.Generator().manual_seed(PROJECTION_SEED + index)
        v = torch.randn(out.shape, generator=g).to(out)  # (B, ...) like the output
        return (out * v).sum() / out.shape[0]
    if loss == "adversarial":
        assert critic is not None
        labels = (batch.y,) if isinstance(batch, GenInputs) and batch.y is not None else ()
        spec = carried_inputs(model)  # the critic reads images in the generator's own image_range
        images = out if spec is None else spec.to_native(out)
        return generator_adversarial(critic(images, *labels))  # a conditional critic scores D(x, y)
    return 0.5 * out.pow(2).mean()


@contextmanager
def _frozen(module: nn.Module | None) -> Iterator[None]:
    """Keep gradients out of ``module``'s parameters for the duration."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(f)


def for_each_gradient(
    model: nn.Module, ctx: PruneContext, *, loss: str, batch_size: int, method: str,
    on_batch: Callable[[], None],
) -> None:
    """Backpropagate the calibration loss batch by batch (eval mode); ``on_batch`` reads ``.grad`` after each.

    Gradients are zeroed before every batch, so ``on_batch`` sees the gradient of that batch only.
    """
    data = ctx.need_calibration(method)
    loss = resolve_loss(loss, ctx.critic)
    with in_mode(model), _frozen(ctx.critic):
        for index, start in enumerate(range(0, len(data), batch_size)):
            model.zero_grad(set_to_none=True)
            calibration_loss(model, data[start:start + batch_size], loss=loss, critic=ctx.critic,
                             index=index).backward()
            on_batch()


def accumulate_gradients(model: nn.Module, ctx: PruneContext, *, loss: str, batch_size: int, method: str) -> None:
    """Leave in every parameter's ``.grad`` the sum of the calibration-loss gradients over all batches."""
    sums: dict[nn.Parameter, torch.Tensor] = {}

    def add() -> None:
        for p in model.parameters():
            if p.grad is not None:
                sums[p] = sums.get(p, torch.zeros_like(p)) + p.grad

    for_each_gradient(model, ctx, loss=loss, batch_size=batch_size, method=method, on_batch=add)
    for p in model.parameters():
        p.grad = sums.get(p)


def channel_activity(x: torch.Tensor, *, channel_dim: int) -> torch.Tensor:
    """Mean |x| per channel: (B, C, ...) with channel_dim=1, or (..., F) with channel_dim=-1 -> (C,)."""
    x = x.detach().abs().movedim(channel_dim, 0)
    return x.reshape(x.shape[0], -1).mean(1)


@torch.no_grad()
def input_activity(model: nn.Module, ctx: PruneContext, *, batch_size: int, method: str) -> dict[nn.Module, torch.Tensor]:
    """Mean |input| per input channel of every Conv/ConvTranspose/Linear layer over the calibration inputs.

    A layer's input is the previous layer's feature map after its norm and activation, so
    this is the "mean feature-map activation" importance of the channels it reads.
    """
    data = ctx.need_calibration(method)
    sums: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        dim = -1 if isinstance(module, nn.Linear) else 1
        act = channel_activity(args[0], channel_dim=dim)
        sums[module] = sums.get(module, torch.zeros_like(act)) + act

    layers = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with in_mode(model):
            for start in range(0, len(data), batch_size):
                call(model, data[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
    return sums
