"""Latent rotation: a lossless change of a generator's latent basis that makes its first layer prunable.

Latents are drawn from N(0, I), and so is Qz for any orthogonal Q (d, d): the generator
G'(z) = G(Qz) draws exactly the images G draws, so FID, KID and precision/recall do not change
(in expectation; a fixed set of latents gives other images). G' costs nothing extra: Q folds
into the layer that reads the latent. What does change is which weights are large.
:func:`rotate_latent` picks the Q that minimises the L1 norm of that layer's weights in the new
basis, which gathers their energy into few weights, so that unstructured pruning removes less of
it. On the DCGAN zoo teacher (a 64 -> 128 x 7 x 7 ConvTranspose2d, 75% of the weights) the
largest 10% of that layer's weights hold 51% of its squared norm before and 87% after.

The rotated model maps z to the image the original maps Qz to: prune, distil and fine-tune
against the rotated model. Distillation, fine-tuning's teacher term and fidelity check this
through the fingerprint recorded in the step (:mod:`slimgen.models.frame`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import torch
from torch import nn
from torch.nn.utils import parametrizations
from tqdm.auto import tqdm

from slimgen.errors import ConfigError
from slimgen.methods import MethodContext, register_method
from slimgen.models import ModelBundle, generate_all, sample_latents
from slimgen.models.frame import ROTATE_STEP
from slimgen.models.mode import in_mode
from slimgen.prune.configs import LatentRotation
from slimgen.prune.unstructured import PRUNABLE

CHECK_N = 64  # latents of the losslessness check


# --- tensor maths ------------------------------------------------------------------------------

def sparse_rotation(rows: torch.Tensor, *, steps: int, lr: float, progress: bool = False) -> torch.Tensor:
    """Orthogonal Q (d, d) that (locally) minimises sum |Q^T rows| for ``rows`` (d, k); float64 Adam from Q = I."""
    d = rows.shape[0]
    basis = nn.Linear(d, d, bias=False, dtype=torch.float64)
    parametrizations.orthogonal(basis, orthogonal_map="matrix_exp")
    with torch.no_grad():
        basis.weight = torch.eye(d, dtype=torch.float64)
    target = rows.detach().to(torch.float64)
    opt = torch.optim.Adam(basis.parameters(), lr=lr)
    for _ in tqdm(range(steps), desc="rotating the latent basis", disable=not progress, leave=False):
        loss = torch.sqrt((basis.weight.T @ target).pow(2) + 1e-6).sum()  # smooth L1
        opt.zero_grad()
        loss.backward()
        opt.step()
    return basis.weight.detach().to(rows.dtype)


def top_energy(rows: torch.Tensor, density: float = 0.1) -> float:
    """Fraction of the squared norm of ``rows`` held by its largest ``density`` fraction of entries."""
    a = rows.detach().abs().flatten().to(torch.float64)
    top = a.topk(max(1, int(density * a.numel()))).values
    return float(top.pow(2).sum() / a.pow(2).sum().clamp_min(1e-30))


def latent_rows(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as (d, k): one row per latent dimension (input feature or channel)."""
    w = layer.weight
    if isinstance(layer, nn.Linear):
        return w.T  # (in, out)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return w.reshape(w.shape[0], -1)  # (in, out * k * k)
    return w.transpose(0, 1).reshape(w.shape[1], -1)  # conv: (in, out * k * k)


def _set_rows(layer: nn.Module, rows: torch.Tensor) -> None:
    w = layer.weight
    if isinstance(layer, nn.Linear):
        new = rows.T
    elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
        new = rows.reshape(w.shape)
    else:
        new = rows.reshape(w.shape[1], w.shape[0], *w.shape[2:]).transpose(0, 1)
    with torch.no_grad():
        w.copy_(new)


def fingerprint(q: torch.Tensor) -> str:
    """16 hex digits identifying a rotation (sha256 of its float32 bytes)."""
    return hashlib.sha256(q.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


# --- module surgery ----------------------------------------------------------------------------

def latent_layer(generator: nn.Module, latent_dim: int) -> tuple[str, nn.Module]:
    """The first Linear/Conv/ConvTranspose layer the forward calls, if it reads the whole latent; else ConfigError."""
    names = {m: n for n, m in generator.named_modules() if isinstance(m, PRUNABLE)}
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        calls.append((module, args[0]))

    hooks = [m.register_forward_pre_hook(record) for m in names]
    try:
        with torch.no_grad(), in_mode(generator):
            generator(sample_latents(2, latent_dim))
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        raise ConfigError(f"{type(generator).__name__} calls no Linear/Conv/ConvTranspose layer; nothing to rotate")
    layer, x = calls[0]
    per_sample = x[0].numel()
    channels = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    if getattr(layer, "groups", 1) != 1:
        raise ConfigError(f"the latent layer {names[layer]} is a grouped convolution; rotate_latent needs groups=1")
    if per_sample != latent_dim or channels != latent_dim:
        raise ConfigError(
            f"the first layer {names[layer]} ({type(layer).__name__}) reads {per_sample} values per sample with "
            f"{channels} input features, not the {latent_dim}-dim latent; rotate_latent needs a generator whose "
            "latent goes straight into a Linear, Conv or ConvTranspose layer")
    return names[layer], layer


def _rotated_latents(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return z @ q.T  # (N, d): row n is Q z_n


def rotate_latent(bundle: ModelBundle, config: LatentRotation | None = None, *, progress: bool = False) -> ModelBundle:
    """A copy of ``bundle`` whose generator is G'(z) = G(Qz), Q chosen to make the latent layer sparse-friendly.

    Rotate the teacher once, then prune, distil and fine-tune against the rotated model (its
    images for given latents differ from the original's; its image distribution does not).
    Checked on ``CHECK_N`` latents: G'(z) equals G(Qz) up to float rounding. ConfigError for a
    VAE (its encoder's diagonal posterior does not rotate), a generator already pruned or
    quantized (masks attached or tensors stored sparse/quantized: rotating would fill the zeros
    and leave the quantization grid), or one whose latent does not enter through one
    Linear/Conv/ConvTranspose layer.
    """
    config = config or LatentRotation()
    if "encoder" in bundle.parts:
        raise ConfigError("rotate_latent does not support VAEs: the encoder's diagonal posterior does not stay "
                          "diagonal under a rotation of the latents")
    if not bundle.latent_dim:
        raise ConfigError("rotate_latent needs a generator with a latent_dim")
    out = bundle.copy()
    g = out.generator
    if any(hasattr(m, "weight_orig") for m in g.modules()):
        raise ConfigError("rotate_latent needs a generator without attached pruning masks: rotate before pruning")
    encoded = sorted(k for k in out.encodings if k.startswith("generator."))
    if encoded:
        raise ConfigError(f"rotate_latent needs a float, unpruned generator, but {encoded[0]} is stored "
                          f"{out.encodings[encoded[0]].codec}: rotate before pruning or quantizing")
    name, layer = latent_layer(g, out.latent_dim)
    rows = latent_rows(layer)  # (d, k)
    q = sparse_rotation(rows, steps=config.steps, lr=config.lr, progress=progress)  # (d, d)
    before, rotated = top_energy(rows), q.T @ rows.detach()
    _set_rows(layer, rotated)
    z = sample_latents(CHECK_N, out.latent_dim, seed=1)
    want, got = generate_all(bundle.generator, _rotated_latents(z, q)), generate_all(g, z)
    err = float((want - got).abs().max())
    if err > 1e-3:
        raise ConfigError(f"the rotated generator differs from G(Qz) by up to {err:.3g}: its latent must enter only "
                          f"through {name}, linearly")
    step = {"step": ROTATE_STEP, "part": "generator", "layer": name, "config": asdict(config),
            "rotation": fingerprint(q), "top10_energy_before": round(before, 4),
            "top10_energy_after": round(top_energy(rotated), 4), "max_abs_error": err}
    return out.with_step(step)


@register_method(ROTATE_STEP, LatentRotation, replaces_teacher=True)
def _rotate_step(bundle: ModelBundle, config: LatentRotation, ctx: MethodContext) -> ModelBundle:
    """The recipe step: its model becomes the teacher of every later step."""
    return rotate_latent(bundle, config, progress=True)
