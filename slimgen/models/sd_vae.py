"""The decoder of a Stable-Diffusion-style VAE (diffusers' ``AutoencoderKL``) as a slimgen generator.

``SDVAEDecoder`` maps latents (B, latent_channels, h, w) to images (B, out_channels, h * 2^(L-1),
w * 2^(L-1)) for L = len(block_out_channels), exactly as ``AutoencoderKL.decode`` does
(``post_quant_conv`` then the ``Decoder``: GroupNorm, SiLU, a mid-block self-attention,
Upsample2D). Its constructor takes the ``AutoencoderKL`` config keys, so a model folder stores
them as JSON kwargs; weights of a diffusers checkpoint load with the ``decoder.`` and
``post_quant_conv.`` keys unchanged. Needs ``pip install diffusers`` (slimgen's ``diffusers``
extra).
"""

from __future__ import annotations

import torch
from torch import nn

from slimgen.errors import ModelFolderError


class SDVAEDecoder(nn.Module):
    """``AutoencoderKL``'s decoding path: (B, latent_channels, h, w) latents -> (B, out_channels, H, W) images.

    Outputs are not clamped (``AutoencoderKL.decode`` does not clamp either); they lie near [-1, 1].
    """

    def __init__(self, block_out_channels: tuple[int, ...] | list[int] = (32, 64), layers_per_block: int = 1,
                 latent_channels: int = 4, norm_num_groups: int = 16, out_channels: int = 3,
                 up_block_types: tuple[str, ...] | list[str] | None = None) -> None:
        super().__init__()
        try:
            from diffusers import AutoencoderKL
        except ImportError as exc:
            raise ModelFolderError("SDVAEDecoder needs diffusers: pip install 'slimgen[diffusers]'") from exc
        levels = len(block_out_channels)
        vae = AutoencoderKL(
            in_channels=out_channels, out_channels=out_channels, latent_channels=latent_channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=tuple(up_block_types) if up_block_types else ("UpDecoderBlock2D",) * levels,
        )
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))  # (B, latent_channels, h, w) -> (B, out_channels, H, W)
