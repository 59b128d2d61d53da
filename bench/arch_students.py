"""Student architectures tried against channel pruning at the same MACs (bench/sweep_kernel.py), as a user's classes.

    .venv/bin/python bench/arch_students.py KIND '{"c1": 64, "c2": 28}' OUT.safetensors

writes the weights of a student of zoo:dcgan-fmnist (latent (64,), images 1x28x28); ``sweep_kernel.py``
imports them with ``slimgen import --arch arch_students:KIND`` (``PYTHONPATH=bench``) and distils with
``slimgen --trust-code arch_students:KIND distill``. Kinds:

- ``SepG``: the teacher's 4x4 stride-2 middle layer replaced by a depthwise 4x4 stride-2 transposed
  convolution and a 1x1 convolution (MobileNet-style); random initial weights.
- ``GroupG``: the teacher's structure with the middle layer in ``groups`` groups; initial weights: the
  teacher's ``c1`` / ``c2`` channels of largest BatchNorm-scaled L1 norm, the middle layer's
  block-diagonal.
- ``KernG``: the teacher's structure with the middle layer's kernel cropped to ``k`` (2: one input tap
  per output pixel; 3: output padding 1); initial weights: the same channels, the kernel's taps that
  keep every output pixel in place (what ``slimgen prune --method kernel`` keeps).
- ``KernDW``: ``KernG`` with ``k`` 2 plus 3x3 depthwise convolutions that give the one-tap middle layer its
  spatial context back: ``pre`` on the ``c1`` maps at 7x7 (before it), ``post`` on the ``c2`` maps at 14x14
  (after it, before its BatchNorm); all three are linear, so together they are one factorized large-kernel
  layer. Initial weights: ``KernG``'s, the depthwise kernels the identity (a centre tap of 1), so the
  student starts as the cropped one. ``rank`` > 0 also factorizes the latent layer along its input
  channels: a 1x1 map of the latent to ``rank`` channels, then the 7x7 layer from those (initial
  weights: the truncated SVD of the layer's weight read as a (latent, c1 * 49) matrix).
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn


class SepG(nn.Module):
    def __init__(self, latent_dim: int = 64, c1: int = 64, c2: int = 28) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, c1, 7, 1, 0, bias=False), nn.BatchNorm2d(c1), nn.ReLU(True),
            nn.ConvTranspose2d(c1, c1, 4, 2, 1, groups=c1, bias=False),
            nn.Conv2d(c1, c2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(True),
            nn.ConvTranspose2d(c2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))  # (B, 64) -> (B, 1, 28, 28)


class GroupG(nn.Module):
    def __init__(self, latent_dim: int = 64, c1: int = 48, c2: int = 24, groups: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, c1, 7, 1, 0, bias=False), nn.BatchNorm2d(c1), nn.ReLU(True),
            nn.ConvTranspose2d(c1, c2, 4, 2, 1, groups=groups, bias=False), nn.BatchNorm2d(c2), nn.ReLU(True),
            nn.ConvTranspose2d(c2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class KernG(nn.Module):
    def __init__(self, latent_dim: int = 64, c1: int = 64, c2: int = 32, k: int = 2) -> None:
        super().__init__()
        pad, out_pad = {2: (0, 0), 3: (1, 1), 4: (1, 0)}[k]
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, c1, 7, 1, 0, bias=False), nn.BatchNorm2d(c1), nn.ReLU(True),
            nn.ConvTranspose2d(c1, c2, k, 2, pad, output_padding=out_pad, bias=False), nn.BatchNorm2d(c2),
            nn.ReLU(True), nn.ConvTranspose2d(c2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class KernDW(nn.Module):
    def __init__(self, latent_dim: int = 64, c1: int = 58, c2: int = 30, pre: bool = True, post: bool = True,
                 rank: int = 0) -> None:
        super().__init__()
        first: nn.Module = nn.ConvTranspose2d(latent_dim, c1, 7, 1, 0, bias=False)
        if rank:
            first = nn.Sequential(nn.ConvTranspose2d(latent_dim, rank, 1, bias=False),
                                  nn.ConvTranspose2d(rank, c1, 7, 1, 0, bias=False))
        self.head = nn.Sequential(first, nn.BatchNorm2d(c1), nn.ReLU(True))
        self.pre = nn.Conv2d(c1, c1, 3, 1, 1, groups=c1, bias=False) if pre else nn.Identity()
        self.mid = nn.ConvTranspose2d(c1, c2, 2, 2, 0, bias=False)
        self.post = nn.Conv2d(c2, c2, 3, 1, 1, groups=c2, bias=False) if post else nn.Identity()
        self.tail = nn.Sequential(nn.BatchNorm2d(c2), nn.ReLU(True), nn.ConvTranspose2d(c2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.head(z.view(z.shape[0], -1, 1, 1))
        return self.tail(self.post(self.mid(self.pre(x))))


def _kerndw_from(student: KernDW, kern: KernG) -> None:
    """KernDW's weights from a KernG of the same widths; the depthwise kernels set to the identity."""
    k = kern.net
    with torch.no_grad():
        if isinstance(student.head[0], nn.Sequential):  # truncated SVD of the (latent, c1 * 49) matrix
            w = k[0].weight  # (latent, c1, 7, 7)
            rank = student.head[0][0].out_channels
            u, sv, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
            student.head[0][0].weight.copy_((u[:, :rank] * sv[:rank].sqrt())[:, :, None, None])
            student.head[0][1].weight.copy_((sv[:rank, None].sqrt() * vh[:rank]).reshape(rank, *w.shape[1:]))
        else:
            student.head[0].load_state_dict(k[0].state_dict())
        student.head[1].load_state_dict(k[1].state_dict())
        student.mid.weight.copy_(k[3].weight)
        student.tail[0].load_state_dict(k[4].state_dict())
        student.tail[2].load_state_dict(k[6].state_dict())
        for dw in (student.pre, student.post):
            if isinstance(dw, nn.Conv2d):
                dw.weight.zero_()
                dw.weight[:, :, 1, 1] = 1.0


def _strongest(conv: nn.Module, bn: nn.Module, k: int) -> torch.Tensor:
    score = conv.weight.abs().sum((0, 2, 3)) * bn.weight.abs()  # ConvTranspose weight (in, out, kh, kw)
    return score.argsort(descending=True)[:k].sort().values


def from_teacher(student: nn.Module, teacher: nn.Module, c1: int, c2: int) -> None:
    """Copy the teacher's strongest channels into a GroupG / KernG student (see the module docstring)."""
    t, s = teacher.net, student.net
    i1, i2 = _strongest(t[0], t[1], c1), _strongest(t[3], t[4], c2)
    with torch.no_grad():
        s[0].weight.copy_(t[0].weight[:, i1])
        for attr in ("weight", "bias", "running_mean", "running_var"):
            getattr(s[1], attr).copy_(getattr(t[1], attr)[i1])
            getattr(s[4], attr).copy_(getattr(t[4], attr)[i2])
        w = t[3].weight[i1][:, i2]  # (c1, c2, 4, 4)
        if isinstance(student, GroupG):
            g = s[3].groups
            gi, go = c1 // g, c2 // g
            s[3].weight.copy_(torch.cat([w[j * gi:(j + 1) * gi, j * go:(j + 1) * go] for j in range(g)], 0))
        else:
            taps = {2: slice(1, 3), 3: slice(0, 3), 4: slice(0, 4)}[s[3].kernel_size[0]]
            s[3].weight.copy_(w[:, :, taps, taps])
        s[6].weight.copy_(t[6].weight[i2])
        s[6].bias.copy_(t[6].bias)


def main() -> None:
    from safetensors.torch import save_file

    from slimgen.models import load_folder

    kind, kwargs, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    student = {"SepG": SepG, "GroupG": GroupG, "KernG": KernG, "KernDW": KernDW}[kind](**kwargs)
    if kind == "KernDW":
        kern = KernG(c1=kwargs["c1"], c2=kwargs["c2"], k=2)
        from_teacher(kern, load_folder("zoo:dcgan-fmnist").generator, kwargs["c1"], kwargs["c2"])
        _kerndw_from(student, kern)
    elif kind != "SepG":
        from_teacher(student, load_folder("zoo:dcgan-fmnist").generator, kwargs["c1"], kwargs["c2"])
    save_file(student.state_dict(), out)


if __name__ == "__main__":
    main()
