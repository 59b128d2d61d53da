"""Real-world generator shapes written the way their authors write them (imported as ``tests.contract_models:X``).

``TutorialGenerator`` is the PyTorch DCGAN tutorial's generator, layer for layer (latents
(B, nz, 1, 1), 64x64 images, ``self.main``, a ``forward(input)``); ``ngf`` small in tests.
``ConditionalGenerator`` concatenates a label embedding to the latent (B, nz) and maps it
through Linear -> reshape -> ConvTranspose2d, as class-conditional GANs commonly do.
The others are broken on purpose (bad-input tests).
"""

from __future__ import annotations

import torch
from torch import nn

from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator


class TutorialGenerator(nn.Module):
    def __init__(self, ngpu: int = 1, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),  # (B, nc, 64, 64)
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class ConditionalGenerator(nn.Module):
    def __init__(self, nz: int = 16, num_classes: int = 10, embed: int = 10, ngf: int = 8, nc: int = 1) -> None:
        super().__init__()
        self.ngf = ngf
        self.label_emb = nn.Embedding(num_classes, embed)
        self.fc = nn.Sequential(nn.Linear(nz + embed, ngf * 4 * 4 * 4), nn.ReLU(True))
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1), nn.Tanh(),  # (B, nc, 32, 32)
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.label_emb(y)], dim=1))  # (B, 4 ngf * 16)
        return self.conv(h.view(h.shape[0], -1, 4, 4))  # (B, 4 ngf, 4, 4) -> (B, nc, 32, 32)


class TupleGenerator(TutorialGenerator):
    """Returns (images, features): slimgen needs the images alone."""

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.main(input), input


class WideRangeGenerator(TutorialGenerator):
    """Outputs in [0, 255]-like range instead of [-1, 1]."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return (self.main(input) + 1) * 127.5


class TutorialDiscriminator(nn.Module):
    def __init__(self, ngpu: int = 1, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # (B, 1, 1, 1) logits
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class _SigmoidTwice(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(2 * x)  # = (tanh(x) + 1) / 2


class SigmoidDCGAN(DCGANGenerator):
    """slimgen's DCGAN generator with images in [0, 1]: its final tanh is sigmoid(2x) = (tanh(x) + 1) / 2, so on
    the same weights its images are the tanh generator's, mapped from [-1, 1] to [0, 1]."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net[-1] = _SigmoidTwice()


class UnitRangeDiscriminator(DCGANDiscriminator):
    """slimgen's DCGAN discriminator trained on images in [0, 1]: D(2x - 1) of the [-1, 1] one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.min() >= -1e-4 and x.max() <= 1 + 1e-4, "a [0, 1] discriminator was fed images outside [0, 1]"
        return super().forward(x * 2 - 1)


class LinearOutputGenerator(TutorialGenerator):
    """ProGAN / StyleGAN style: no final tanh, images nominally in [-1, 1] and clamped for display."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main[:-1](input) * 1000  # random weights: a spread well beyond [-1, 1]


class HalfTanhGenerator(TutorialGenerator):
    """Images in [0, 1] written as (tanh(x) + 1) / 2: the last operation is an addition, not a sigmoid."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return (self.main(input) + 1) / 2


class OneHotGenerator(nn.Module):
    """A conditional generator written for one-hot labels, as many cGAN tutorials write it: ``torch.cat([z, y], 1)``
    with ``y`` float (B, num_classes), Linear -> view(-1, 4 ngf, 4, 4) -> ConvTranspose2d."""

    def __init__(self, nz: int = 16, num_classes: int = 4, ngf: int = 8) -> None:
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Sequential(nn.Linear(nz + num_classes, ngf * 4 * 4 * 4), nn.ReLU(True))
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1), nn.Tanh(),  # (B, 1, 16, 16)
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(self.fc(torch.cat([z, y], 1)).view(-1, self.ngf * 4, 4, 4))


class OneHotDiscriminator(nn.Module):
    """Its critic: conv features of the image, concatenated with the one-hot label, to one logit."""

    def __init__(self, num_classes: int = 4, ndf: int = 8) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, ndf, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(ndf, ndf, 4, 2, 1),
                                  nn.LeakyReLU(0.2), nn.Flatten())
        self.fc = nn.Linear(ndf * 16 + num_classes, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.conv(x), y], 1))


class FullyConvGenerator(nn.Module):
    """A VAE-decoder-like generator whose first layer is a 3x3 "same" convolution: latents (B, 4, H, W) of any size,
    images (B, 1, 4H, 4W). Imported with a guessed (4, 1, 1) latent it gave 4x4 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, 16, 3, padding=1)
        self.up = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(16, 1, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.conv_in(z)))


class LabelMapGenerator(nn.Module):
    """A cGAN whose label embedding joins as channels after the latent's reshape, not at the first layer:
    fc(z).view(B, 16, 4, 4) concatenated with emb(y) broadcast to 4x4. Its first Linear reads z alone, so the latent
    is its whole width (the import guessed that width less the embedding's and stopped)."""

    def __init__(self, nz: int = 12, num_classes: int = 5, embed: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(nz, 16 * 16)
        self.emb = nn.Embedding(num_classes, embed)
        self.net = nn.Sequential(nn.ConvTranspose2d(16 + embed, 8, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(z)).view(-1, 16, 4, 4)
        return self.net(torch.cat([x, self.emb(y)[:, :, None, None].expand(-1, -1, 4, 4)], 1))


class _CondNorm(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma, self.beta = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * (1 + self.gamma(y)[:, :, None, None]) + self.beta(y)[:, :, None, None]


class CondNormGenerator(nn.Module):
    """BigGAN-style: the labels reach the model only through class-conditional norms, two nn.Embedding(6, C) each
    (four in all); no single embedding to read the class count off."""

    def __init__(self, nz: int = 10, num_classes: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(nz, 8 * 16)
        self.n1, self.c1 = _CondNorm(8, num_classes), nn.ConvTranspose2d(8, 4, 4, 2, 1)
        self.n2, self.c2 = _CondNorm(4, num_classes), nn.ConvTranspose2d(4, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 8, 4, 4)
        x = self.c1(torch.relu(self.n1(x, y)))
        return torch.tanh(self.c2(torch.relu(self.n2(x, y))))
