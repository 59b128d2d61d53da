"""Training from scratch as presets of the one trainer: DCGAN (adversarial), conditional DCGAN, VAE (ELBO),
classifier (cross-entropy). Each only chooses objectives and optimizer settings; the step itself is
:class:`slimgen.train.trainer.Trainer`'s, so a multi-process run uses the same per-sample draws as one
process (see :mod:`slimgen.train.distributed`).
"""

from __future__ import annotations

from torch import nn

from slimgen.models.inputs import InputSpec
from slimgen.train.objectives import Adversarial, CrossEntropy, EncoderTerms
from slimgen.train.trainer import Hook, Trainer


class GANTask(Trainer):
    """Non-saturating GAN loss (Goodfellow et al.) with Adam, as in DCGAN; logs ``loss_d`` and ``g_adv``.

    ``inputs``: the generator's input contract (a plain int: the classic (B, latent_dim) latent).
    ``conditional``: the discriminator takes the labels too, ``D(x, y)`` (default: when ``inputs`` has
    classes). ``extra``: more generator objectives after the adversarial one (fine-tuning's teacher term
    and penalty).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, inputs: InputSpec | int,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), conditional: bool | None = None,
                 extra: tuple = (), hooks: tuple[Hook, ...] = ()) -> None:
        spec = InputSpec.latent(inputs) if isinstance(inputs, int) else inputs
        conditional = spec.conditional if conditional is None else conditional
        adversarial = Adversarial(discriminator, lr=lr, betas=betas, name="g_adv", conditional=conditional)
        super().__init__(generator, [adversarial, *extra], lr=lr, betas=betas, inputs=spec, hooks=hooks)
        self.generator, self.discriminator = generator, discriminator


class ConditionalGANTask(GANTask):
    """Class-conditional GAN: ``G(z, y)`` and ``D(x, y)``. Real images are scored with their data-set
    labels; fakes get labels drawn uniformly from [0, num_classes) with the epoch generator (after the
    latents, as the input contract draws them), so every class is trained alike."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, latent_dim: int, num_classes: int,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        super().__init__(generator, discriminator, inputs=InputSpec((latent_dim,), num_classes=num_classes), lr=lr,
                         betas=betas, conditional=True)
        self.latent_dim, self.num_classes = latent_dim, num_classes


class VAETask(Trainer):
    """ELBO with a Gaussian decoder of fixed scale ``sigma`` on images in [-1, 1]; logs ``recon`` and ``kl``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, lr: float = 1e-3, sigma: float = 0.2) -> None:
        super().__init__(decoder, [EncoderTerms(encoder, sigma=sigma)], lr=lr, sample=False, optimizer="vae")
        self.encoder, self.decoder, self.sigma = encoder, decoder, sigma


class ClassifierTask(Trainer):
    """Cross-entropy with Adam and random horizontal flips; logs ``loss``."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-3) -> None:
        super().__init__(model, [CrossEntropy()], lr=lr, sample=False, model_key="classifier", optimizer="classifier")
