"""The latent frame of a model: which latent rotations (``rotate_latent`` steps) its generator has folded in.

Two generators compared on the same latents (distillation targets, the teacher term of
fine-tuning, fidelity) must share their frame: a rotated generator maps z to the image the
original maps Qz to, so comparing it with the original image for image measures the
rotation, not the compression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimgen.errors import ConfigError

if TYPE_CHECKING:
    from slimgen.models.folder import ModelBundle

ROTATE_STEP = "rotate_latent"


def latent_frame(steps: list[dict[str, Any]]) -> tuple[str, ...]:
    """Fingerprints of the latent rotations in a bundle's step history, oldest first (() if none)."""
    return tuple(str(s.get("rotation")) for s in steps if s.get("step") == ROTATE_STEP)


def check_same_frame(model: ModelBundle, teacher: ModelBundle, *, what: str) -> None:
    """ConfigError unless the two bundles' generators share their latent frame; ``what`` names the comparison."""
    mine, theirs = latent_frame(model.steps), latent_frame(teacher.steps)
    if mine != theirs:
        raise ConfigError(
            f"{what} compares images on the same latents, but the two models' latents are rotated differently "
            f"(rotate_latent steps {list(mine) or 'none'} vs {list(theirs) or 'none'}): use as the teacher the "
            "rotated model the student was pruned from")
