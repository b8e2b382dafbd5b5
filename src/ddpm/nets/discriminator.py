"""The PatchGAN discriminator of pix2pix (Isola et al. 2017, §3.2.2), as taming-transformers and
latent diffusion use it (``taming/modules/discriminator/model.py``: NLayerDiscriminator).

Each output logit judges one overlapping patch of the input (70×70 pixels for three layers), so the
adversarial loss rewards sharp local texture rather than global layout, which the reconstruction loss
already pins down (Esser et al. 2021, §3.1).
"""

from __future__ import annotations

from torch import Tensor, nn

KERNEL, PADDING = 4, 1  # pix2pix's 4×4 convolutions with padding 1
LEAKY_SLOPE = 0.2
MAX_CHANNEL_MULT = 8  # channels stop doubling at 8 × base_channels


def patch_grid_size(image_size: int, num_layers: int) -> int:
    """Height of the logit grid for ``image_size`` inputs: num_layers stride-2 convs, then two stride-1."""
    size = image_size
    for stride in [2] * num_layers + [1, 1]:
        size = (size + 2 * PADDING - KERNEL) // stride + 1
    return size


class NLayerDiscriminator(nn.Module):
    """x (B, C, H, W) → patch logits (B, 1, h, w): conv(stride 2) + LeakyReLU, then num_layers − 1
    conv(stride 2) + BatchNorm + LeakyReLU with doubling channels, one conv(stride 1) + BatchNorm +
    LeakyReLU, and a final conv(stride 1) to one channel. Initialised as pix2pix: conv weights
    N(0, 0.02), BatchNorm scales N(1, 0.02)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels),
                            ("num_layers", num_layers)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} {value!r} must be a positive integer")
        self.num_layers = num_layers
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, KERNEL, stride=2, padding=PADDING),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        mult = 1
        for n in range(1, num_layers + 1):
            previous, mult = mult, min(2**n, MAX_CHANNEL_MULT)
            stride = 2 if n < num_layers else 1  # the last of these keeps the resolution
            layers += [
                # no bias: BatchNorm's shift replaces it
                nn.Conv2d(
                    base_channels * previous, base_channels * mult, KERNEL, stride, PADDING, bias=False
                ),
                nn.BatchNorm2d(base_channels * mult),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
        layers.append(nn.Conv2d(base_channels * mult, 1, KERNEL, stride=1, padding=PADDING))
        self.main = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        smallest = min(x.shape[-2:])
        if patch_grid_size(smallest, self.num_layers) < 1:
            fits = [n for n in range(1, self.num_layers) if patch_grid_size(smallest, n) >= 1]
            allowed = f"num_layers ≤ {fits[-1]}" if fits else "larger images"
            raise ValueError(
                f"image size {smallest} is too small for a {self.num_layers}-layer patch discriminator; "
                f"use {allowed}"
            )
        return self.main(x)  # (B, 1, h, w)
