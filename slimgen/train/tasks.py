"""Training tasks: DCGAN (adversarial), VAE (ELBO) and classifier (cross-entropy).

``step`` calls the modules in ``train_modules`` (DDP wrappers under torchrun, see
:mod:`slimgen.train.distributed`) and draws per-sample randomness with ``shard_draw``, so a
multi-process run uses the same latents and flips per sample as a single process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimgen.models.inputs import GenInputs, InputSpec
from slimgen.models.vae import VAEDecoder, VAEEncoder
from slimgen.train.distributed import shard_draw, shard_inputs


class GANTask:
    """Non-saturating GAN loss (Goodfellow et al.) with Adam, as in DCGAN."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, inputs: InputSpec | int,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        """``inputs``: the generator's input contract (a plain int: the classic (B, latent_dim) latent)."""
        self.generator, self.discriminator = generator, discriminator
        self.inputs = InputSpec.latent(inputs) if isinstance(inputs, int) else inputs
        self.modules = {"generator": generator, "discriminator": discriminator}
        self.train_modules: dict[str, nn.Module] = dict(self.modules)
        self.optimizers = {
            "generator": torch.optim.Adam(generator.parameters(), lr=lr, betas=betas),
            "discriminator": torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas),
        }

    def generator_loss(self, fake: torch.Tensor, inputs: GenInputs) -> dict[str, torch.Tensor]:
        """Losses of the generator on its fakes (B, C, H, W) from ``inputs``; subclasses add terms (distillation)."""
        logits = self.train_modules["discriminator"](fake)
        return {"g_adv": F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))}

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        b = images.shape[0]
        z = shard_inputs(self.inputs, rng, b).to(images.device)  # z (B, *latent_shape), y (B,)
        d, g = self.train_modules["discriminator"], self.train_modules["generator"]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]
        fake = g(*z.args())
        real_logits, fake_logits = d(images), d(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        g_losses = self.generator_loss(fake, z)
        loss_g = sum(g_losses.values())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()  # type: ignore[union-attr]
        opt_g.step()
        return {"loss_d": loss_d.item(), **{k: v.item() for k, v in g_losses.items()}}


class VAETask:
    """ELBO with a Gaussian decoder of fixed scale ``sigma`` on images in [-1, 1]."""

    def __init__(self, encoder: VAEEncoder, decoder: VAEDecoder, *, lr: float = 1e-3, sigma: float = 0.2) -> None:
        self.encoder, self.decoder, self.sigma = encoder, decoder, sigma
        self.modules = {"encoder": encoder, "generator": decoder}
        self.train_modules: dict[str, nn.Module] = dict(self.modules)
        self.optimizers = {"vae": torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)}

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        mu, logvar = self.train_modules["encoder"](images)  # (B, nz) each
        eps = shard_draw(lambda n: torch.randn(n, *mu.shape[1:], generator=rng), mu.shape[0])
        z = mu + eps.to(mu.device) * torch.exp(0.5 * logvar)  # reparameterisation, (B, nz)
        recon = self.train_modules["generator"](z)
        b = images.shape[0]
        rec = F.mse_loss(recon, images, reduction="sum") / (2 * self.sigma**2 * b)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        loss = rec + kl
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"recon": rec.item(), "kl": kl.item()}


class ClassifierTask:
    """Cross-entropy with Adam and random horizontal flips."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-3) -> None:
        self.model = model
        self.modules = {"classifier": model}
        self.train_modules: dict[str, nn.Module] = dict(self.modules)
        self.optimizers = {"classifier": torch.optim.Adam(model.parameters(), lr=lr)}

    def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
        if labels is None:
            raise ValueError("classifier training needs labels")
        # random horizontal flips: cheap augmentation that Fashion-MNIST tolerates
        flip = shard_draw(lambda n: torch.rand(n, generator=rng), images.shape[0]) < 0.5
        images = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
        loss = F.cross_entropy(self.train_modules["classifier"](images), labels)
        opt = self.optimizers["classifier"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}
