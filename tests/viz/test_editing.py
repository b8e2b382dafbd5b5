"""Pictures of conditional generation and editing label their rows and columns."""

import torch

from ddpm.viz.editing import (
    class_grid_figure,
    guidance_sweep_figure,
    inpainting_figure,
    interpolation_figure,
    reconstruction_figure,
)


def test_pictures_label_their_rows_and_columns():
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    figure = class_grid_figure(images, torch.tensor([3, 3, 3, 7, 7, 7]), 3)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["3", "7"]
    figure = guidance_sweep_figure(images.reshape(2, 3, 1, 8, 8), [0.0, 2.0])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["s=0", "s=2"]
    figure = interpolation_figure(torch.zeros(5, 1, 8, 8))
    weights = [f"{w:.2f}" for w in (0, 0.25, 0.5, 0.75, 1)]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == weights
    figure = inpainting_figure(images[:2], torch.ones(8, 8), images[:2])
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["input", "masked", "inpainted"]
    figure = reconstruction_figure(images[:2], images[:2])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["input", "DDIM"]


def test_the_control_picture_has_rows_control_samples_real_and_grays_controls_of_colour_images():
    from ddpm.viz.editing import control_cells, control_figure

    controls, images = torch.ones(3, 1, 8, 8), torch.zeros(3, 3, 8, 8)
    cells = control_cells(controls, images, images)
    assert cells.shape == (3, 3, 3, 8, 8) and torch.equal(cells[0], torch.ones(3, 3, 8, 8))
    figure = control_figure(controls, images, images)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["control", "samples", "real"]
