"""One distillation step: student and teacher on the same latents, weighted loss terms, one Adam step.

``step`` calls the trained modules through ``train_modules`` (DistributedDataParallel wrappers
under torchrun) and draws latents and noise with ``shard_draw``, so a multi-process run uses the
same per-sample draws as one process (see :mod:`slimgen.train.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimgen.distill.config import DistillLosses
from slimgen.distill.features import FeaturePair, build_adapters, tap
from slimgen.distill.losses import (
    discriminator_loss,
    feature_distance,
    generator_adversarial,
    kl_to_prior,
    output_distance,
    perceptual_distance,
)
from slimgen.models.inputs import GenInputs, InputSpec, run
from slimgen.train.distributed import shard_draw, shard_inputs


@dataclass
class Critics:
    """The optional helpers of a distillation run besides student and teacher generators.

    ``discriminator``: trained alongside (adversarial term). ``encoder``: maps images (B, C, H, W)
    to (mu, logvar) (VAE terms); trained when ``train_encoder``. ``extractor``: frozen, images in
    [0, 1] -> features (B, d) (perceptual term).
    """

    discriminator: nn.Module | None = None
    encoder: nn.Module | None = None
    train_encoder: bool = False
    extractor: nn.Module | None = None


class DistillTask:
    """The :class:`slimgen.train.loop.Task` of distillation.

    ``modules`` (saved in every checkpoint): ``generator`` (the student), ``adapters`` (1x1 convs
    of the feature term), ``discriminator`` and ``encoder`` when they train. The teacher, a frozen
    encoder and the extractor stay out: they never change. ``train_modules``: the same modules,
    which ``step`` calls (the training loop swaps in DDP wrappers under torchrun).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, inputs: InputSpec, losses: DistillLosses,
                 pairs: list[FeaturePair], critics: Critics, lr: float, betas: tuple[float, float]) -> None:
        self.student, self.teacher, self.inputs, self.losses = student, teacher, inputs, losses
        self.pairs, self.critics = pairs, critics
        self.adapters = build_adapters(pairs).to(next(student.parameters()).device)
        self.modules: dict[str, nn.Module] = {"generator": student}
        params = list(student.parameters())
        if pairs:
            self.modules["adapters"] = self.adapters
            params += list(self.adapters.parameters())
        if critics.encoder is not None and critics.train_encoder:
            self.modules["encoder"] = critics.encoder
            params += list(critics.encoder.parameters())
        self.optimizers: dict[str, torch.optim.Optimizer] = {"generator": torch.optim.Adam(params, lr=lr, betas=betas)}
        if critics.discriminator is not None:
            self.modules["discriminator"] = critics.discriminator
            self.optimizers["discriminator"] = torch.optim.Adam(critics.discriminator.parameters(), lr=lr, betas=betas)
        self.train_modules: dict[str, nn.Module] = dict(self.modules)

    def _needs_teacher(self) -> bool:
        return any(getattr(self.losses, k) > 0 for k in ("output", "feature", "perceptual"))

    def teacher_terms(self, fake: torch.Tensor, z: GenInputs, student_maps: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        """Output, feature and perceptual distances of the student's images fake (B, C, H, W) from inputs z."""
        terms: dict[str, torch.Tensor] = {}
        if not self._needs_teacher():
            return terms
        with torch.no_grad(), tap(self.teacher, [p.teacher for p in self.pairs]) as teacher_maps:
            target = run(self.teacher, z)  # (B, C, H, W)
        if self.losses.output > 0:
            terms["output"] = output_distance(fake, target, self.losses.output_loss)
        if self.losses.feature > 0:
            adapted = self.train_modules["adapters"]({p.key: student_maps[p.student] for p in self.pairs})  # (B, C_t, H, W)
            terms["feature"] = feature_distance(adapted, teacher_maps, [(p.key, p.teacher) for p in self.pairs])
        if self.losses.perceptual > 0 and self.critics.extractor is not None:
            with torch.no_grad():
                target_features = self.critics.extractor((target + 1) / 2)  # (B, d)
            terms["perceptual"] = perceptual_distance(self.critics.extractor((fake + 1) / 2), target_features)
        return terms

    def vae_terms(self, images: torch.Tensor, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Reconstruction of real images (B, C, H, W) through the encoder and the student, and the encoder's KL."""
        if self.critics.encoder is None or (self.losses.vae_recon == 0 and self.losses.vae_kl == 0):
            return {}
        encoder = self.train_modules.get("encoder", self.critics.encoder)  # frozen: not trained, not wrapped
        with torch.set_grad_enabled(self.critics.train_encoder):
            mu, logvar = encoder(images)  # (B, nz) each
        terms: dict[str, torch.Tensor] = {}
        if self.losses.vae_recon > 0:
            eps = shard_draw(lambda n: torch.randn(n, *mu.shape[1:], generator=rng), mu.shape[0])
            z = mu + eps.to(mu) * torch.exp(0.5 * logvar)  # reparameterisation, (B, nz)
            terms["vae_recon"] = output_distance(self.train_modules["generator"](z), images, "l2")
        if self.losses.vae_kl > 0:
            terms["vae_kl"] = kl_to_prior(mu, logvar)
        return terms

    def _discriminator_step(self, images: torch.Tensor, fake: torch.Tensor) -> float:
        d, opt = self.train_modules["discriminator"], self.optimizers["discriminator"]
        loss = discriminator_loss(d(images), d(fake))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        """One step on real images (B, C, H, W); returns the unweighted distances, ``total`` and ``loss_d``."""
        z = shard_inputs(self.inputs, rng, images.shape[0]).to(images.device)  # z (B, *latent_shape), y (B,)
        with tap(self.student, [p.student for p in self.pairs]) as student_maps:  # hooks inside the plain module
            fake = run(self.train_modules["generator"], z)  # (B, C, H, W)
        logs: dict[str, float] = {}
        terms = self.teacher_terms(fake, z, student_maps)
        terms.update(self.vae_terms(images, rng))
        if self.critics.discriminator is not None:
            logs["loss_d"] = self._discriminator_step(images, fake.detach())
            terms["adversarial"] = generator_adversarial(self.train_modules["discriminator"](fake))
        total = torch.stack([getattr(self.losses, k) * v for k, v in terms.items()]).sum()
        opt = self.optimizers["generator"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {**logs, **{k: v.item() for k, v in terms.items()}, "total": total.item()}
