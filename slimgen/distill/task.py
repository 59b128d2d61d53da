"""The distillation preset of the one trainer: student and teacher on the same inputs, weighted terms.

The step is :class:`slimgen.train.trainer.Trainer`'s (DDP wrappers, per-sample draws through the
epoch generator, see :mod:`slimgen.train.distributed`); this module only picks the objectives:
teacher terms (output, feature, perceptual), the VAE terms through an encoder, the adversarial term.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimgen.distill.config import DistillLosses
from slimgen.distill.features import FeaturePair, build_adapters
from slimgen.models.inputs import InputSpec
from slimgen.train.objectives import Adversarial, EncoderTerms, Objective, TeacherMatch, check_training_extractor
from slimgen.train.trainer import Hook, Trainer


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


class DistillTask(Trainer):
    """The :class:`slimgen.train.loop.Task` of distillation.

    ``modules`` (saved in every checkpoint): ``generator`` (the student), ``adapters`` (1x1 convs
    of the feature term), ``encoder`` and ``discriminator`` when they train. The teacher, a frozen
    encoder and the extractor stay out: they never change. Logs the unweighted terms, ``total``
    and the discriminator's ``loss_d``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, inputs: InputSpec, losses: DistillLosses,
                 pairs: list[FeaturePair], critics: Critics, lr: float, betas: tuple[float, float],
                 hooks: tuple[Hook, ...] = (), discriminator_lr: float | None = None) -> None:
        check_training_extractor(critics.extractor)
        self.student, self.teacher, self.losses, self.pairs, self.critics = student, teacher, losses, pairs, critics
        self.adapters = build_adapters(pairs).to(next(student.parameters()).device)
        objectives: list[Objective] = []
        if any(getattr(losses, k) > 0 for k in ("output", "feature", "perceptual")):
            objectives.append(TeacherMatch(teacher, output=losses.output, output_loss=losses.output_loss,
                                           feature=losses.feature, pairs=pairs, adapters=self.adapters,
                                           perceptual=losses.perceptual, extractor=critics.extractor))
        if critics.encoder is not None and (losses.vae_recon > 0 or losses.vae_kl > 0):
            objectives.append(EncoderTerms(critics.encoder, recon=losses.vae_recon, kl=losses.vae_kl,
                                           trained=critics.train_encoder, names=("vae_recon", "vae_kl")))
        if critics.discriminator is not None:
            objectives.append(Adversarial(critics.discriminator, lr=discriminator_lr or lr, betas=betas,
                                          weight=losses.adversarial, conditional=inputs.conditional,
                                          real_from=teacher if losses.adversarial_real == "teacher" else None,
                                          every=losses.adversarial_every))
        super().__init__(student, objectives, lr=lr, betas=betas, inputs=inputs, hooks=hooks, log_total=True)
