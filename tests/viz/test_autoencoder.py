"""Pictures of latent diffusion's first stage: originals above their reconstructions in pairs of rows, and
each latent channel as a heat map on one shared colour scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpm.diffusion import make_schedule
from ddpm.viz.autoencoder import (
    RECONSTRUCTION_ROW_LABELS,
    latent_channels_figure,
    latent_limit,
    reconstruction_pairs_figure,
    reconstruction_pairs_table,
)
from ddpm.viz.grid import to_uint8
from ddpm.viz.process import forward_table
from tests.viz.fakes import fake_images


def test_originals_sit_above_their_reconstructions_in_pairs_of_rows():
    originals, rebuilt = fake_images(20, seed=0), fake_images(20, seed=1)
    table = reconstruction_pairs_table(originals, rebuilt, columns=8)  # 20 images: 2 full pairs of 8
    assert table.pixels.shape == (4 * (8 + 1) + 1, 8 * (8 + 1) + 1, 1)  # 4 rows, 8 columns, padding 1
    assert table.row_labels == RECONSTRUCTION_ROW_LABELS * 2
    for row, col, image in (
        (0, 3, originals[3]),
        (1, 3, rebuilt[3]),
        (2, 5, originals[13]),
        (3, 5, rebuilt[13]),
    ):
        cell = table.pixels[1 + 9 * row : 9 + 9 * row, 1 + 9 * col : 9 + 9 * col, 0]  # 8×8 after 1 px padding
        assert np.array_equal(cell, to_uint8(image)[0]), (row, col)
    figure = reconstruction_pairs_figure(originals, rebuilt, columns=8)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["original", "reconstruction"] * 2


def test_reconstructions_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"reconstructions have shape \(4, 1, 4, 4\); the originals"):
        reconstruction_pairs_table(fake_images(4), fake_images(4, size=4))


def test_each_latent_channel_is_a_heat_map_on_one_scale_with_a_colourbar():
    images = fake_images(3)
    latents = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    figure = latent_channels_figure(images, latents)
    assert len(figure.axes) == 3 * (1 + 4) + 1  # image + 4 channels per row, and the colourbar
    heat_maps = [ax.images[0] for ax in figure.axes[:-1] if ax.images[0].get_cmap().name == "RdBu_r"]
    assert len(heat_maps) == 3 * 4
    limit = latent_limit(latents)
    assert all(h.get_clim() == (-limit, limit) for h in heat_maps)
    assert figure.axes[-1].get_ylim() == pytest.approx((-limit, limit))
    with pytest.raises(ValueError, match=r"latents must be \(N, c, h, w\) with N = 3 \(one per image\)"):
        latent_channels_figure(images, latents[:2])


def test_the_shared_scale_is_not_set_by_one_outlier():
    latents = torch.linspace(-1, 1, 1000)
    latents[0] = -50.0
    assert latent_limit(latents) == pytest.approx(1.0, abs=0.01)


def test_a_latent_forward_strip_noises_latents_and_shows_them_decoded():
    latents = torch.zeros(2, 4, 4, 4)
    decoded = []

    def decode(z: torch.Tensor) -> torch.Tensor:  # 4×4×4 latents → 1×8×8 images
        decoded.append(z)
        return F.interpolate(z[:, :1], scale_factor=2).clamp(-1, 1)

    table = forward_table(latents, make_schedule("linear", 1000), [0, 500, 1000], decode=decode)
    assert table.pixels.shape == (2 * 9 + 1, 3 * 9 + 1, 1)
    assert [tuple(z.shape) for z in decoded] == [(2, 4, 4, 4)] * 3
    assert torch.equal(decoded[0], latents) and decoded[2].std() > 0.5  # x₀ itself, then near N(0, I)
