"""The PatchGAN discriminator: its logit grid, pix2pix's layer layout and init, and small-input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddpm.nets.discriminator import NLayerDiscriminator, patch_grid_size


@pytest.mark.parametrize(
    ("image_size", "num_layers", "grid"),
    [(256, 3, 30), (28, 3, 1), (32, 3, 2), (32, 2, 6), (8, 1, 2)],  # 256 → 30×30: pix2pix's 70×70 patches
)
def test_logit_grid_sizes(image_size, num_layers, grid):
    assert patch_grid_size(image_size, num_layers) == grid
    if image_size <= 32:
        d = NLayerDiscriminator(in_channels=3, base_channels=8, num_layers=num_layers)
        assert d(torch.randn(2, 3, image_size, image_size)).shape == (2, 1, grid, grid)


def test_layout_and_init_follow_pix2pix():
    torch.manual_seed(0)
    d = NLayerDiscriminator(in_channels=3, base_channels=64, num_layers=3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1),
    ]  # fmt: skip
    assert [c.bias is None for c in convs] == [False, True, True, True, False]  # BatchNorm shifts instead
    # 4×4 kernels: 3·64·16 + 64 | 64·128·16 + 2·128 | 128·256·16 + 2·256 | 256·512·16 + 2·512 | 512·16 + 1
    assert sum(p.numel() for p in d.parameters()) == 3_136 + 131_328 + 524_800 + 2_098_176 + 8_193
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001


def test_too_small_images_are_refused_in_one_line():
    d = NLayerDiscriminator(in_channels=1, base_channels=8, num_layers=3)
    message = r"^image size 8 is too small for a 3-layer patch discriminator; use num_layers ≤ 1$"
    with pytest.raises(ValueError, match=message):
        d(torch.zeros(1, 1, 8, 8))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"^num_layers 0 must be a positive integer$"):
        NLayerDiscriminator(num_layers=0)
