"""The distillation distances as pure tensor functions (no modules are changed here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def output_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) difference of images (B, C, H, W); a scalar."""
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "l2":
        return F.mse_loss(student, teacher)
    raise ValueError(f"output distance must be l1 or l2, got {kind!r}")


def feature_distance(adapted: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean over pairs of MSE(adapted student map (B, C_t, H, W), teacher map (B, C_t, H, W)).

    ``pairs``: (key in ``adapted``, teacher layer) pairs; the student maps (B, C_s, H, W) were
    mapped to the teacher's channels by the 1x1 adapters before.
    """
    terms = [F.mse_loss(adapted[key], teacher[t]) for key, t in pairs]
    return torch.stack(terms).mean()


def perceptual_distance(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of classifier features (B, d)."""
    return F.mse_loss(student_features, teacher_features)


def generator_adversarial(logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log sigmoid(D(G(z))) from discriminator logits (B,)."""
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of real (B,) as 1 and fake (B,) as 0."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent (B, nz), averaged over the batch."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]
