"""The PyTorch DCGAN tutorial's 64x64 generator, written as a user would, and its training run.

This module plays "the user's generator" in the any-generator benchmark (bench/bench_anygen.py):
the classes below follow the architecture of the PyTorch DCGAN tutorial (nz=100 latents of
shape (B, 100, 1, 1), ngf=ndf=64, ConvTranspose2d + BatchNorm + ReLU, Tanh; 3x64x64 RGB) and
slimgen knows nothing about them beyond ``bench.tutorial_dcgan:Generator``.

Training (``python bench/tutorial_dcgan.py --out DIR --threads 1``) uses slimgen's own epoch
loop (:func:`slimgen.train.run_epochs` with the non-saturating GAN task): seeded, one checkpoint
per epoch in DIR/checkpoint, ``--resume`` continues. After every epoch DIR/tutorial_dcgan.pt is
rewritten atomically as the tutorial saves its models, a checkpoint dict
``{"epoch", "netG_state_dict", "netD_state_dict"}`` (tensors and ints only, so it loads with
``torch.load(weights_only=True)``), and DIR/snapshots/netG-EEE.pt keeps each epoch's generator.

Data: Fashion-MNIST train (60,000 images) resized bilinearly from 28x28 to 64x64 and repeated
to 3 channels (the tutorial's nc=3; the channels are equal, so the generator learns grey RGB).
Differences from the tutorial: the discriminator returns a logit (B,) and the loss is
``binary_cross_entropy_with_logits`` (numerically the tutorial's Sigmoid + BCELoss); an "epoch"
is ``--steps-per-epoch`` batches drawn from a fresh permutation (default 150 x 128 images), so
a checkpoint lands every few minutes on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NZ, NGF, NDF, NC = 100, 64, 64, 3


class Generator(nn.Module):
    """Latent (B, nz, 1, 1) -> image (B, nc, 64, 64) in [-1, 1] (the DCGAN tutorial's netG)."""

    def __init__(self, nz: int = NZ, ngf: int = NGF, nc: int = NC) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # (B, 8ngf, 4, 4)
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # (B, 4ngf, 8, 8)
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # (B, 2ngf, 16, 16)
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # (B, ngf, 32, 32)
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # (B, nc, 64, 64)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    """Image (B, nc, 64, 64) -> real/fake logit (B,) (the tutorial's netD without its final Sigmoid)."""

    def __init__(self, ndf: int = NDF, nc: int = NC) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),  # (B, ndf, 32, 32)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # (B, 2ndf, 16, 16)
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # (B, 4ndf, 8, 8)
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # (B, 8ndf, 4, 4)
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # (B, 1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()  # (B,)


def weights_init(m: nn.Module) -> None:
    """The tutorial's initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def fashion_mnist_64(split: str = "train", *, channels: int = NC):
    """Fashion-MNIST ``split`` as an ImageSet of (N, channels, 64, 64) in [-1, 1], bilinear 28 -> 64.

    The channels are a stride-0 view of one grey channel (no copy); indexing a batch copies it.
    """
    from slimgen.data import ImageSet, load_dataset

    data = load_dataset("fashion-mnist", split)
    out = torch.empty(len(data), 1, 64, 64)
    for s in range(0, len(data), 5000):  # (5000, 1, 28, 28) at a time
        out[s:s + 5000] = F.interpolate(data.images[s:s + 5000], size=(64, 64), mode="bilinear",
                                        align_corners=False).clamp_(-1, 1)
    return ImageSet(out.expand(-1, channels, -1, -1), data.labels, f"{data.name} 64x64x{channels}")


def _save_dict(path: Path, obj: dict) -> None:
    from slimgen.io import write_atomic

    write_atomic(path, lambda p: torch.save(obj, p))


def train(out: Path, *, epochs: int, steps_per_epoch: int, batch_size: int = 128, lr: float = 2e-4,
          seed: int = 0, resume: bool = False, data: object = None) -> list[dict[str, float]]:
    """Train Generator + Discriminator with slimgen's loop; writes ``out/tutorial_dcgan.pt`` every epoch.

    ``data``: an ImageSet of (N, 3, 64, 64) images in [-1, 1] (default: :func:`fashion_mnist_64`).
    """
    from slimgen.io import write_json, write_text
    from slimgen.models import InputSpec
    from slimgen.train import LoopSettings, run_epochs
    from slimgen.train.tasks import GANTask

    torch.manual_seed(seed)
    net_g, net_d = Generator(), Discriminator()
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    data = data if data is not None else fashion_mnist_64("train")
    task = GANTask(net_g, net_d, inputs=InputSpec((NZ, 1, 1)), lr=lr)
    t0 = time.perf_counter()

    def save_epoch(epoch: int) -> dict[str, float]:
        g_state = {k: v.detach().cpu().clone() for k, v in net_g.state_dict().items()}
        d_state = {k: v.detach().cpu().clone() for k, v in net_d.state_dict().items()}
        _save_dict(out / "snapshots" / f"netG-{epoch:03d}.pt", {"epoch": epoch, "netG_state_dict": g_state})
        _save_dict(out / "tutorial_dcgan.pt", {"epoch": epoch, "netG_state_dict": g_state, "netD_state_dict": d_state})
        return {}

    settings = LoopSettings(epochs, batch_size, seed, steps_per_epoch)
    history = run_epochs(task, data, settings, checkpoint_dir=out / "checkpoint", resume=resume,
                         desc="tutorial-dcgan", on_epoch_end=save_epoch)
    write_json(out / "history.json", history)
    minutes = sum(h.get("seconds", 0.0) for h in history) / 60
    last = history[-1]
    write_text(out / "card.md", "\n".join([
        "# DCGAN tutorial generator, Fashion-MNIST 64x64x3", "",
        f"- command: `{' '.join(sys.argv)}`",
        f"- architecture: bench.tutorial_dcgan:Generator (nz={NZ}, ngf={NGF}, nc={NC}), "
        f"{sum(p.numel() for p in net_g.parameters()):,} parameters",
        f"- data: {data.name}, {len(data)} images; {epochs} epochs of {steps_per_epoch} batches of {batch_size}",
        f"- seed: {seed}; lr {lr}, Adam betas (0.5, 0.999)",
        f"- trained: {minutes:.1f} min over {len(history)} epochs, {torch.get_num_threads()} threads "
        f"(this call: {(time.perf_counter() - t0) / 60:.1f} min), torch {torch.__version__}",
        f"- last epoch: {', '.join(f'{k}={v:.4g}' for k, v in last.items())}", "",
    ]))
    return history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
          seed=args.seed, resume=args.resume)
    print(f"wrote {args.out / 'tutorial_dcgan.pt'}")


if __name__ == "__main__":
    main()
