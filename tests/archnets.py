"""Generators written the way GAN code in the wild is written (hard-coded reshapes, stored widths).

Test helper: the classes a user "chose" and names on the command line as ``archnets:Class``
(pytest puts ``tests/`` on ``sys.path``). Small widths and random weights keep the tests fast.
Every generator returns (B, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class HardcodedViewG(nn.Module):
    """Linear -> ``view(-1, 32, 7, 7)`` (a literal channel count) -> ConvTranspose2d x2: (B, 16) -> (B, 1, 28, 28)."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 32 * 7 * 7)
        self.bn0 = nn.BatchNorm2d(32)
        self.up1 = nn.ConvTranspose2d(32, 16, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.up2 = nn.ConvTranspose2d(16, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 32, 7, 7)  # (B, 32, 7, 7): the width is written into the code
        x = F.relu(self.bn0(x))
        x = F.leaky_relu(self.bn1(self.up1(x)), 0.2)  # (B, 16, 14, 14)
        return torch.tanh(self.up2(x))  # (B, 1, 28, 28)


class WidthAttrG(nn.Module):
    """Linear -> ``reshape(B, self.width, 4, 4)`` -> Upsample + Conv (SiLU) -> Conv + PixelShuffle: (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, width * 16)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(width, width // 2, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(width // 2, affine=True)
        self.conv2 = nn.Conv2d(width // 2, 4 * 8, 3, padding=1)  # 4 = 2 x 2 sub-pixel phases
        self.shuffle = nn.PixelShuffle(2)
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.size(0)
        x = self.fc(z).reshape(b, self.width, 4, 4)  # (B, width, 4, 4)
        x = F.silu(self.norm1(self.conv1(self.up(x))))  # (B, width/2, 8, 8)
        x = F.leaky_relu(self.shuffle(self.conv2(x)), 0.2)  # (B, 8, 16, 16)
        return torch.tanh(self.out(x))


class _ResBlockUp(nn.Module):
    """SNGAN generator block: BN-ReLU-Upsample-Conv3x3-BN-ReLU-Conv3x3 plus an Upsample-Conv1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))  # residual add


class SNGANResNetG(nn.Module):
    """SNGAN-style ResNet generator: Linear -> view(-1, ch, 4, 4) -> 2 up-blocks -> BN-ReLU-Conv3x3: (B, 16) -> (B, 3, 16, 16)."""

    def __init__(self, latent_dim: int = 16, ch: int = 32) -> None:
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(latent_dim, 4 * 4 * ch)
        self.block1, self.block2 = _ResBlockUp(ch, ch), _ResBlockUp(ch, ch)
        self.bn = nn.BatchNorm2d(ch)
        self.conv_out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.ch, 4, 4)  # (B, ch, 4, 4)
        h = self.block2(self.block1(h))  # (B, ch, 16, 16)
        return torch.tanh(self.conv_out(F.relu(self.bn(h))))


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine, then a per-class scale and shift read from an embedding (BigGAN/SNGAN cBN)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.embed = nn.Embedding(num_classes, num_features * 2)
        nn.init.ones_(self.embed.weight[:, :num_features])
        nn.init.zeros_(self.embed.weight[:, num_features:])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.embed(y).chunk(2, 1)  # (B, C) each
        return gamma.view(-1, self.num_features, 1, 1) * self.bn(x) + beta.view(-1, self.num_features, 1, 1)


class ConditionalG(nn.Module):
    """Class-conditional generator G(z, y) with conditional BatchNorm: (B, 16), (B,) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, num_classes: int = 4, ch: int = 32) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, ch * 4 * 4)
        self.cbn0 = ConditionalBatchNorm2d(ch, num_classes)
        self.up1 = nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1)
        self.cbn1 = ConditionalBatchNorm2d(ch // 2, num_classes)
        self.up2 = nn.ConvTranspose2d(ch // 2, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.size(0), 32, 4, 4)  # a literal width again
        x = F.relu(self.cbn0(x, y))
        x = F.relu(self.cbn1(self.up1(x), y))  # (B, 16, 8, 8)
        return torch.tanh(self.up2(x))  # (B, 1, 16, 16)


class UNetG(nn.Module):
    """U-Net-style generator: Linear -> view -> down/up path with GroupNorm and skip concatenations: (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, ch: int = 32, groups: int = 8) -> None:
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(latent_dim, ch * 8 * 8)
        self.enc1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.gn1 = nn.GroupNorm(groups, ch)
        self.down = nn.Conv2d(ch, 2 * ch, 4, 2, 1)  # (B, 2ch, 4, 4)
        self.gn2 = nn.GroupNorm(groups, 2 * ch)
        self.mid = nn.Conv2d(2 * ch, 2 * ch, 3, padding=1)
        self.gn3 = nn.GroupNorm(groups, 2 * ch)
        self.up = nn.Upsample(scale_factor=2)
        self.dec1 = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.gn4 = nn.GroupNorm(groups, ch)
        self.fuse = nn.Conv2d(2 * ch, ch, 3, padding=1)  # reads cat([up path, skip])
        self.gn5 = nn.GroupNorm(groups, ch)
        self.final_up = nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1)
        self.out = nn.Conv2d(ch // 2, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.ch, 8, 8)  # (B, ch, 8, 8)
        e1 = F.silu(self.gn1(self.enc1(x)))
        e2 = F.silu(self.gn2(self.down(e1)))  # (B, 2ch, 4, 4)
        m = F.silu(self.gn3(self.mid(e2))) + e2  # residual add
        d1 = F.silu(self.gn4(self.dec1(self.up(m))))  # (B, ch, 8, 8)
        f = F.silu(self.gn5(self.fuse(torch.cat([d1, e1], dim=1))))  # skip concatenation
        return torch.tanh(self.out(F.silu(self.final_up(f))))  # (B, 1, 16, 16)


class InfoGANStyleG(nn.Module):
    """Two Linear -> BatchNorm1d -> ReLU stages, then ``view(-1, 32, 4, 4)`` (InfoGAN/ACGAN code in the wild): (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, hidden: int = 64, ch: int = 32) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, ch * 4 * 4), nn.BatchNorm1d(ch * 4 * 4), nn.ReLU(inplace=True),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ch // 2, 1, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, 32, 4, 4)  # (B, ch * 16) features normalised by BatchNorm1d, then a literal width
        return self.deconv(x)  # (B, 1, 16, 16)


class _SelfAttention(nn.Module):
    """SAGAN self-attention: 1x1 query/key convs (C/8), value conv (C), softmax over positions, gamma-weighted residual."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(ch, ch // 8, 1)
        self.key = nn.Conv2d(ch, ch // 8, 1)
        self.value = nn.Conv2d(ch, ch, 1)
        self.gamma = nn.Parameter(torch.full((1,), 0.5))  # SAGAN starts it at 0; non-zero so the block matters here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).view(b, -1, h * w).permute(0, 2, 1)  # (B, N, C/8)
        k = self.key(x).view(b, -1, h * w)  # (B, C/8, N)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N, N)
        v = self.value(x).view(b, -1, h * w)  # (B, C, N)
        out = torch.bmm(v, attn.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x


class SAGANStyleG(nn.Module):
    """Linear -> view -> ConvTranspose2d -> SAGAN self-attention -> ConvTranspose2d: (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, ch: int = 32) -> None:
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(latent_dim, ch * 4 * 4)
        self.up1 = nn.ConvTranspose2d(ch, ch, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(ch)
        self.attn = _SelfAttention(ch)
        self.up2 = nn.ConvTranspose2d(ch, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, self.ch, 4, 4)  # (B, ch, 4, 4)
        x = self.attn(F.relu(self.bn1(self.up1(x))))  # (B, ch, 8, 8)
        return torch.tanh(self.up2(x))  # (B, 1, 16, 16)


class FlattenD(nn.Module):
    """Discriminator with a hard-coded flatten ``view(-1, 32 * 7 * 7)``: (B, 1, 28, 28) -> (B, 1) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 4, 2, 1)
        self.c2 = nn.Conv2d(16, 32, 4, 2, 1)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 7 * 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.c1(x), 0.2)
        h = F.leaky_relu(self.bn(self.c2(h)), 0.2)  # (B, 32, 7, 7)
        return self.fc(h.view(-1, 32 * 7 * 7))


class PReLUDepthwiseG(nn.Module):
    """4-D latent (B, 16, 1, 1) -> ConvT + InstanceNorm(affine) + PReLU(C) -> ConvT + BN + PReLU(C) -> depthwise
    Conv3x3 -> ConvT: (B, 3, 28, 28)."""

    def __init__(self, nz: int = 16, w: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, w, 7, 1, 0), nn.InstanceNorm2d(w, affine=True), nn.PReLU(w),
            nn.ConvTranspose2d(w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.PReLU(w),
            nn.Conv2d(w, w, 3, 1, 1, groups=w), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SpectralNormG(nn.Module):
    """SAGAN/BigGAN-style normalized layers: parametrized spectral norm (Linear, last conv) and weight norm,
    bilinear upsampling, GroupNorm: (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, nz: int = 16, w: int = 16) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm, weight_norm

        self.w = w
        self.fc = spectral_norm(nn.Linear(nz, w * 4 * 4))
        self.c1 = weight_norm(nn.Conv2d(w, w, 3, 1, 1))
        self.n1 = nn.GroupNorm(4, w)
        self.c2 = spectral_norm(nn.Conv2d(w, 1, 3, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.w, 4, 4)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.n1(self.c1(x)))
        return torch.tanh(self.c2(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))


class LegacySpectralNormG(nn.Module):
    """Older hook-based ``torch.nn.utils.spectral_norm`` / ``weight_norm``: (B, 16, 1, 1) -> (B, 1, 28, 28)."""

    def __init__(self, nz: int = 16, w: int = 16) -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # weight_norm's deprecation notice: users still have such code
            self.net = nn.Sequential(
                nn.utils.spectral_norm(nn.ConvTranspose2d(nz, w, 7, 1, 0)), nn.BatchNorm2d(w), nn.ReLU(),
                nn.utils.weight_norm(nn.ConvTranspose2d(w, w, 4, 2, 1)), nn.ReLU(),
                nn.utils.spectral_norm(nn.ConvTranspose2d(w, 1, 4, 2, 1)), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FlatLatentConvG(nn.Module):
    """A first ConvTranspose2d fed by ``z[:, :, None, None]``: the latent is (B, 16), not (B, 16, 1, 1)."""

    def __init__(self, nz: int = 16, w: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(nz, w, 7, 1, 0), nn.BatchNorm2d(w), nn.ReLU(),
                                 nn.ConvTranspose2d(w, 1, 4, 4, 0), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class ConstInputG(nn.Module):
    """StyleGAN-like: a learned constant (1, C, 4, 4) scaled per sample by a mapped latent, then ConvTranspose2d x2:
    (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, nz: int = 16, w: int = 16) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, w, 4, 4))
        self.map = nn.Sequential(nn.Linear(nz, nz), nn.LeakyReLU(0.2), nn.Linear(nz, w))
        self.c1 = nn.ConvTranspose2d(w, w, 4, 2, 1)
        self.c2 = nn.ConvTranspose2d(w, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.map(z)[:, :, None, None]  # (B, C, 1, 1)
        x = self.const.expand(z.size(0), -1, -1, -1) * (1 + s)
        return torch.tanh(self.c2(F.leaky_relu(self.c1(x), 0.2)))


class WSConv2d(nn.Module):
    """Weight-scaled convolution as popular ProGAN implementations write it: a child Conv2d whose bias moved to a
    1-D parameter (C,) of this module, added after the scaled convolution."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1, gain: float = 2.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p)
        self.scale = (gain / (cin * k**2)) ** 0.5
        self.bias = self.conv.bias
        self.conv.bias = None
        nn.init.normal_(self.conv.weight)
        nn.init.normal_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x * self.scale) + self.bias.view(1, self.bias.shape[0], 1, 1)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class WSProGANG(nn.Module):
    """ProGAN-style: pixel norm, weight-scaled convolutions, nearest upsampling: (B, 16, 1, 1) -> (B, 1, 28, 28)."""

    def __init__(self, nz: int = 16, w: int = 16) -> None:
        super().__init__()
        self.initial = nn.Sequential(PixelNorm(), nn.ConvTranspose2d(nz, w, 7, 1, 0), nn.LeakyReLU(0.2),
                                     WSConv2d(w, w), nn.LeakyReLU(0.2), PixelNorm())
        self.b1, self.b2 = WSConv2d(w, w), WSConv2d(w, w // 2)
        self.rgb = WSConv2d(w // 2, 1, 1, 1, 0, gain=1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.initial(z)
        x = F.leaky_relu(self.b1(F.interpolate(x, scale_factor=2)), 0.2)
        x = F.leaky_relu(self.b2(F.interpolate(x, scale_factor=2)), 0.2)
        return torch.tanh(self.rgb(x))


class EqualConv2d(nn.Module):
    """Equalized learning rate as StyleGAN2 ports write it: weight and bias held by the leaf itself, the scale
    applied in forward (``F.conv2d(x, weight * scale, bias)``)."""

    def __init__(self, cin: int, cout: int, k: int, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.scale, self.padding = 1 / math.sqrt(cin * k * k), padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    """Equalized Linear with a learning-rate multiplier (StyleGAN's mapping network)."""

    def __init__(self, cin: int, cout: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.scale, self.lr_mul = lr_mul / math.sqrt(cin), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class SquaredConv(nn.Module):
    """A hand-written layer that is not a standard one (its output is squared): left as it is."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1) ** 2


class EqualizedG(nn.Module):
    """StyleGAN-flavoured: an equalized mapping MLP, EqualLinear -> view(-1, 16, 7, 7), equalized 3x3 convolutions
    with nearest upsampling and a 1x1 to-image layer: (B, 16) -> (B, 1, 28, 28)."""

    def __init__(self, nz: int = 16, w: int = 16, squared: bool = False) -> None:
        super().__init__()
        self.w = w
        self.mapping = nn.Sequential(EqualLinear(nz, nz, 0.01), nn.LeakyReLU(0.2), EqualLinear(nz, nz, 0.01))
        self.fc = EqualLinear(nz, w * 7 * 7)
        self.c1 = SquaredConv(w, w) if squared else EqualConv2d(w, w, 3, padding=1)
        self.c2 = EqualConv2d(w, w // 2, 3, padding=1)
        self.rgb = EqualConv2d(w // 2, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc(self.mapping(z)).view(-1, self.w, 7, 7), 0.2)
        x = F.leaky_relu(self.c1(F.interpolate(x, scale_factor=2)), 0.2)
        x = F.leaky_relu(self.c2(F.interpolate(x, scale_factor=2)), 0.2)
        return torch.tanh(self.rgb(x))


class _AdaIN(nn.Module):
    """Adaptive instance norm: one Linear of the style vector gives each channel's scale and shift, chunked."""

    def __init__(self, c: int, w_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(c)
        self.style = nn.Linear(w_dim, 2 * c)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s, b = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + s) + b


class _StyleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.shift = nn.Parameter(torch.randn(1, cout, 1, 1) * 0.1)
        self.ada = _AdaIN(cout, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)) + self.shift
        return F.leaky_relu(self.ada(x, w), 0.2)


class AdaINStyleG(nn.Module):
    """StyleGAN-like: a mapping MLP z -> w, a learned constant, AdaIN blocks (FiLM by a chunked Linear), 1x1 toRGB."""

    def __init__(self, nz: int = 16, w_dim: int = 16, ch: tuple[int, int] = (32, 16)) -> None:
        super().__init__()
        self.mapping = nn.Sequential(nn.Linear(nz, w_dim), nn.LeakyReLU(0.2), nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2))
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.blocks = nn.ModuleList([_StyleBlock(ch[0], ch[0], w_dim), _StyleBlock(ch[0], ch[1], w_dim)])
        self.to_rgb = nn.Conv2d(ch[1], 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        for block in self.blocks:
            x = block(x, w)
        return torch.tanh(self.to_rgb(x))


class SliceGLU(nn.Module):
    """FastGAN's GLU: the first half of the channels gated by the sigmoid of the second, written with slices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nc = x.size(1) // 2
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


class ChunkGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, 1)
        return a * torch.sigmoid(b)


class _GLUUp(nn.Module):
    def __init__(self, cin: int, cout: int, glu: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout * 2)
        self.glu = glu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.glu(self.bn(self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))))


class FastGANLikeG(nn.Module):
    """FastGAN-like: ConvTranspose2d 1 -> 4 then two nearest x2 blocks, each conv -> BatchNorm -> GLU (``glu``:
    ``slice`` as FastGAN writes it, ``chunk``, or ``nn`` for nn.GLU(1)), a literal ``view``, a 3x3 conv to the image:
    (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, nz: int = 16, ch: tuple[int, int, int] = (32, 16, 8), glu: str = "slice") -> None:
        super().__init__()
        make = {"slice": SliceGLU, "chunk": ChunkGLU, "nn": lambda: nn.GLU(1)}[glu]
        self.init = nn.Sequential(nn.ConvTranspose2d(nz, ch[0] * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0] * 2),
                                  make())
        self.up1, self.up2 = _GLUUp(ch[0], ch[1], make()), _GLUUp(ch[1], ch[2], make())
        self.out = nn.Conv2d(ch[2], 1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.up2(self.up1(self.init(z.view(-1, 16, 1, 1))))))


class ModConv(nn.Module):
    """StyleGAN2's modulated conv: the weight scaled per sample by ``affine(w)`` (one scale per input channel),
    demodulated (``demod``), run either fused (rosinality's and NVIDIA's grouped conv over the batch: the weight
    (1, C_out, C_in, k, k) and ``self.out_channel`` read in forward) or not (scale x, conv with the shared
    weight (C_out, C_in, k, k), scale the output: what exports to ONNX)."""

    def __init__(self, cin: int, cout: int, k: int, w_dim: int, demod: bool = True, fused: bool = False,
                 bias: bool = True) -> None:
        super().__init__()
        shape = (1, cout, cin, k, k) if fused else (cout, cin, k, k)
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(0.1 * torch.randn(cout)) if bias else None
        self.affine = nn.Linear(w_dim, cin)
        nn.init.ones_(self.affine.bias)
        self.scale, self.demod, self.fused, self.pad = 1 / math.sqrt(cin * k * k), demod, fused, k // 2
        self.in_channel, self.out_channel = cin, cout

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        s = self.affine(w)  # (B, C_in)
        weight = self.scale * (self.weight if self.fused else self.weight[None])  # (1, C_out, C_in, k, k)
        wb = weight * s[:, None, :, None, None]  # (B, C_out, C_in, k, k)
        d = torch.rsqrt(wb.pow(2).sum(dim=(2, 3, 4)) + 1e-8) if self.demod else None  # (B, C_out)
        if self.fused:
            wb = wb * d[:, :, None, None, None] if d is not None else wb
            y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), wb.reshape(b * self.out_channel, *wb.shape[2:]),
                         padding=self.pad, groups=b)
            y = y.reshape(b, self.out_channel, *y.shape[2:])
        else:
            y = F.conv2d(x * s[:, :, None, None], weight[0], padding=self.pad)
            y = y * d[:, :, None, None] if d is not None else y
        return y + self.bias[None, :, None, None] if self.bias is not None else y


class NoiseStrength(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.full((1, c, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.strength * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device)


class ModulatedG(nn.Module):
    """StyleGAN2-lite: a mapping MLP, a learned constant, modulated convs with per-channel noise strength, and
    skip toRGB outputs summed over resolutions: (B, 16) -> (B, 1, 16, 16). ``fused``: rosinality's grouped conv."""

    def __init__(self, nz: int = 16, w_dim: int = 16, ch: tuple[int, int, int] = (32, 16, 16),
                 fused: bool = False, noise: bool = True, channels: int = 1, rgb_bias: bool = False) -> None:
        super().__init__()
        self.mapping = nn.Sequential(nn.Linear(nz, w_dim), nn.LeakyReLU(0.2), nn.Linear(w_dim, w_dim))
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.conv0 = ModConv(ch[0], ch[0], 3, w_dim, fused=fused)
        self.rgb0 = ModConv(ch[0], channels, 1, w_dim, demod=False, fused=fused)
        self.ups = nn.ModuleList([ModConv(a, b, 3, w_dim, fused=fused) for a, b in itertools.pairwise(ch)])
        self.noises = nn.ModuleList([NoiseStrength(c) if noise else nn.Identity() for c in ch[1:]])
        self.rgbs = nn.ModuleList([ModConv(c, channels, 1, w_dim, demod=False, fused=fused, bias=False)
                                   for c in ch[1:]])
        # rosinality's ToRGB: a free (1, C_img, 1, 1) bias added to each skip output (the image channels: kept)
        self.rgb_bias = nn.Parameter(torch.zeros(1, channels, 1, 1)) if rgb_bias else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = F.leaky_relu(self.conv0(self.const.repeat(z.shape[0], 1, 1, 1), w), 0.2)
        rgb = self.rgb0(x, w)
        for up, noise, to_rgb in zip(self.ups, self.noises, self.rgbs, strict=True):
            x = F.leaky_relu(noise(up(F.interpolate(x, scale_factor=2, mode="nearest"), w)), 0.2)
            out = to_rgb(x, w) + (self.rgb_bias if self.rgb_bias is not None else 0.0)
            rgb = F.interpolate(rgb, scale_factor=2, mode="nearest") + out
        return torch.tanh(rgb)


class EqualLinearAct(nn.Module):
    """rosinality's ``EqualLinear`` with its activation fused in: ``lrelu(x @ (w * scale).T + b * lr_mul) * sqrt(2)``.
    No torch layer computes it, so it is not standardized. ``transposed``: the weight kept (in, out), ``x @ w``."""

    def __init__(self, i: int, o: int, lr_mul: float = 0.01, transposed: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(i, o) if transposed else torch.randn(o, i) / lr_mul)
        self.bias = nn.Parameter(torch.randn(o) * 0.1)
        self.scale, self.lr_mul, self.transposed = 1 / math.sqrt(i) * lr_mul, lr_mul, transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ (self.weight * self.scale) if self.transposed else F.linear(x, self.weight * self.scale)
        return F.leaky_relu(out + self.bias * self.lr_mul, 0.2) * math.sqrt(2)


class EqualConvAct(nn.Module):
    """An equalized conv with the activation fused in (weight (out, in, k, k)), or a transposed one (weight
    (in, out, k, k), ``F.conv_transpose2d``, stride 2)."""

    def __init__(self, i: int, o: int, k: int, transposed: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(i, o, k, k) if transposed else torch.randn(o, i, k, k))
        self.bias = nn.Parameter(torch.randn(o) * 0.1)
        self.scale, self.transposed, self.k = 1 / math.sqrt(i * k * k), transposed, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        out = F.conv_transpose2d(x, w, stride=2, padding=self.k // 2 - 1) if self.transposed else \
            F.conv2d(x, w, padding=self.k // 2)
        return F.leaky_relu(out + self.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


class Flipped(nn.Module):
    """A hand-written linear whose forward reverses its output channels: its weight's rows are not its outputs'."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) / math.sqrt(i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.linear(x, self.weight), 0.2).flip(1)


class OwnLayersG(nn.Module):
    """A generator of hand-written layers only torch cannot compute as one of its own: a rosinality mapping (the
    second EqualLinear square and kept (in, out)), a transposed equalized conv from the style (B, 32, 1, 1) to 4x4,
    an equalized conv at 8x8, and a plain Conv2d to the image: (B, 16) -> (B, 1, 8, 8). ``flip``: a
    :class:`Flipped` layer on the latent scales the 8x8 features per sample."""

    def __init__(self, nz: int = 16, flip: bool = False, view: bool = False) -> None:
        super().__init__()
        self.view = view  # the gain reshaped by view(-1, 1, 1, 1) (a literal reshape: the model is traced)
        self.mapping = nn.Sequential(EqualLinearAct(nz, 32), EqualLinearAct(32, 32, transposed=True))
        self.up = EqualConvAct(32, 32, 4, transposed=True)
        self.conv = EqualConvAct(32, 16, 3)
        self.flip = Flipped(nz, 16) if flip else None
        self.out = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = F.interpolate(self.up(w[:, :, None, None].expand(-1, -1, 2, 2)), scale_factor=2)
        x = self.conv(x)
        if self.flip is not None:  # a per-sample gain from the latent
            gain = self.flip(z).mean(1)
            x = x * (gain.view(-1, 1, 1, 1) if self.view else gain[:, None, None, None])
        return torch.tanh(self.out(x))


class InlineModulesG(nn.Module):
    """ProGAN-lite whose parameter-free modules are made in forward, not kept (``PixelNorm()(x)``,
    ``nn.Upsample(...)(x)``, ``nn.LeakyReLU(0.2)(x)``), after a Linear -> ``view(B, 32, 4, 4)``:
    (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 32 * 16)
        self.conv1 = nn.Conv2d(32, 24, 3, padding=1)
        self.conv2 = nn.Conv2d(24, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.to_image = nn.Conv2d(16, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = PixelNorm()(self.fc(z).view(z.shape[0], 32, 4, 4))  # a literal width, then modules made on the fly
        for conv in (self.conv1, self.conv2):
            x = nn.LeakyReLU(0.2)(PixelNorm()(conv(nn.Upsample(scale_factor=2, mode="nearest")(x))))
        x = nn.LeakyReLU(0.2)(PixelNorm()(self.conv3(x)))
        return torch.tanh(self.to_image(x))


class GatedShuffleG(nn.Module):
    """An inline gate before a sub-pixel upsampling: ``a, b = conv(x).chunk(2, 1); pixel_shuffle(a * sigmoid(b), 2)``
    after a Linear -> ``view``; the gate keeps its channels (they reach the shuffle through the chunk):
    (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 32 * 16)
        self.gate = nn.Conv2d(32, 2 * 4 * 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 4 * 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.size(0), 32, 4, 4)
        a, b = self.gate(x).chunk(2, dim=1)
        x = F.pixel_shuffle(a * torch.sigmoid(b), 2)  # (B, 16, 8, 8)
        x = F.relu(self.bn(F.pixel_shuffle(self.conv(x), 2)))  # (B, 16, 16, 16)
        return torch.tanh(self.out(F.relu(self.conv2(x))))


class MultiScaleSkipG(nn.Module):
    """MSG-GAN-like: a Linear -> Unflatten stem x0 concatenated, at every scale, with the stage's input (at the first
    stage x0 itself, resized: ``cat([x0, interpolate(x0)])``), and a sum of per-stage toRGB outputs. torch-pruning
    groups the first stage's channels wrongly (the pruned model no longer ran): that layer is kept whole, the rest
    prunes. (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(latent_dim, width * 4 * 4), nn.Unflatten(1, (width, 4, 4)), nn.ReLU())
        self.ups = nn.ModuleList([nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, 12, 3, padding=1),
                                                nn.BatchNorm2d(12), nn.ReLU()),
                                  nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(12 + width, 8, 3, padding=1),
                                                nn.BatchNorm2d(8), nn.ReLU())])
        self.rgbs = nn.ModuleList([nn.Conv2d(12, 1, 1), nn.Conv2d(8, 1, 1)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(z)
        x, img = x0, None
        for up, rgb in zip(self.ups, self.rgbs, strict=True):
            x = up(torch.cat([x, F.interpolate(x0, size=x.shape[-2:])], 1))
            img = rgb(x) if img is None else F.interpolate(img, scale_factor=2) + rgb(x)
        return torch.tanh(img)


class LayerNormG(nn.Module):
    """LayerNorms as generators write them: over a Linear's features (C,), over a feature map's (C, H, W) with
    weights, and over (C, H, W) without weights. torch-pruning alone takes the last dimension of normalized_shape
    for the channels (W). (B, 16) -> (B, 1, 16, 16)."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 32)
        self.ln0 = nn.LayerNorm(32)
        self.stem = nn.ConvTranspose2d(32, 16, 4)
        self.ln1 = nn.LayerNorm([16, 4, 4])
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.ln2 = nn.LayerNorm([16, 8, 8], elementwise_affine=False)
        self.rgb = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.ln0(self.fc(z)))[:, :, None, None]
        x = F.relu(self.ln1(self.stem(x)))
        x = F.relu(self.ln2(self.conv(F.relu(self.mid(F.interpolate(x, scale_factor=2))))))
        return torch.tanh(self.rgb(F.interpolate(x, scale_factor=2)))
