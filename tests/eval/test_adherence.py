"""Adherence of samples to their ControlNet controls: edge F1 with a 1-pixel tolerance, mask IoU and PSNRs
with known values, and the real image as the ceiling of each measure (PSNRs capped at 100 dB)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ddpm.data.controls import canny_edges, foreground_mask, grayscale, lowres_draft, luma
from ddpm.eval.adherence import (
    ADHERENCE,
    ADHERENCE_NAMES,
    PSNR_CAP_DB,
    adherence,
    edge_adherence,
    edge_f1,
    gray_adherence,
    lowres_adherence,
    mask_adherence,
    mask_iou,
    psnr,
)


def line_map(column: int = 5, size: int = 12, rows: slice = slice(2, 10)) -> torch.Tensor:
    """(1, size, size) bool: a vertical edge segment."""
    edges = torch.zeros(1, size, size, dtype=torch.bool)
    edges[0, rows, column] = True
    return edges


def test_edge_f1_of_a_map_with_itself_is_one():
    edges = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.8
    result = edge_f1(edges, edges)
    assert result.per_sample.tolist() == [1.0, 1.0, 1.0] and result.mean == 1.0


@pytest.mark.parametrize(("dy", "dx"), [(0, 1), (1, 0), (1, 1), (-1, 1)])
def test_edge_f1_forgives_a_one_pixel_shift_and_no_more(dy, dx):
    edges = line_map()
    shifted = torch.roll(edges, shifts=(dy, dx), dims=(1, 2))
    assert edge_f1(shifted, edges).mean == 1.0
    assert edge_f1(shifted, edges, tolerance=0).mean < 1.0  # the tolerance is what forgives it
    assert edge_f1(torch.roll(edges, shifts=2, dims=2), edges).mean == 0.0  # 2 px off: no match


def test_edge_f1_against_empty_maps():
    edges, empty = line_map(), torch.zeros(1, 12, 12, dtype=torch.bool)
    assert edge_f1(edges, empty).mean == 0.0
    assert edge_f1(empty, edges).mean == 0.0
    assert edge_f1(empty, empty).mean == 1.0  # nothing to find and nothing found


def test_edge_f1_known_value_with_extra_edges():
    control = line_map(column=2)
    sample = control | line_map(column=9)  # the control's edge plus as many false ones
    # precision 1/2, recall 1 → F1 = 2·(1/2)·1 / (3/2) = 2/3
    assert edge_f1(sample, control).mean == pytest.approx(2 / 3)
    assert edge_f1(control, sample).mean == pytest.approx(2 / 3)  # recall 1/2, precision 1


def test_edge_f1_takes_plus_minus_one_maps_with_a_channel():
    edges = line_map()
    as_image = edges[:, None].float() * 2 - 1  # (1, 1, H, W) in {−1, +1}, as canny_edges gives
    assert edge_f1(as_image, edges).mean == 1.0


def test_mask_iou_known_values():
    a = torch.zeros(2, 8, 8, dtype=torch.bool)
    b = torch.zeros(2, 8, 8, dtype=torch.bool)
    a[0, 0:4, 0:4] = True
    b[0, 0:4, 2:6] = True  # overlap 4×2 = 8, union 16 + 16 − 8 = 24
    result = mask_iou(a, b)
    assert result.per_sample.tolist() == pytest.approx([1 / 3, 1.0])  # image 1: both empty
    assert result.mean == pytest.approx((1 / 3 + 1) / 2)


def test_psnr_known_values():
    images = torch.zeros(2, 1, 4, 4)
    references = images.clone()
    references[0] += 0.2  # MSE 0.04 → 10·log10(4 / 0.04) = 20 dB over the range [-1, 1]
    values = psnr(images, references)
    assert values[0].item() == pytest.approx(20.0)
    assert math.isinf(values[1].item())  # identical
    capped = psnr(images, references, cap_db=100.0)
    assert capped.tolist() == pytest.approx([20.0, 100.0])  # the cap only bounds the identical pair


def test_adherence_psnrs_are_capped_so_the_ceiling_is_finite_json():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    own = {"lowres": lowres_draft(images), "gray": grayscale(images)}  # rounding error only / none at all
    assert psnr(F.avg_pool2d(images.double(), 4), F.avg_pool2d(own["lowres"].double(), 4)).min() > 100
    assert math.isinf(psnr(luma(images), own["gray"]).min())
    for kind, controls in own.items():
        result = adherence(kind, images, controls)
        assert result.per_sample.tolist() == [PSNR_CAP_DB] * 2 and result.mean == PSNR_CAP_DB
        assert json.loads(json.dumps(result.mean)) == 100.0  # not Infinity, which JSON has not
        assert "capped at 100" in ADHERENCE_NAMES[kind]


def test_lowres_adherence_compares_block_means():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    draft = lowres_draft(images)
    assert lowres_adherence(images, draft).mean == PSNR_CAP_DB  # the ceiling: the image its draft came from
    assert lowres_adherence(draft + 0.1, draft).per_sample.tolist() == pytest.approx([26.0206, 26.0206])
    # detail inside the blocks does not count: only the block means are compared
    checker = (torch.arange(16).view(1, 1, 1, 16) + torch.arange(16).view(1, 1, 16, 1)) % 2 * 0.2 - 0.1
    assert lowres_adherence(draft + checker, draft).mean == PSNR_CAP_DB


def test_gray_adherence_compares_luma():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    gray = grayscale(images)
    assert gray_adherence(images, gray).mean == PSNR_CAP_DB
    assert gray_adherence(images, gray - 0.2).per_sample.tolist() == pytest.approx([20.0, 20.0])


def test_real_images_are_the_ceiling_of_edges_and_masks():
    images = -torch.ones(2, 1, 24, 24)
    images[0, :, 6:18, 6:18] = 1.0
    images[1, :, 3:12, 10:20] = 1.0
    assert edge_adherence(images, canny_edges(images)).mean == 1.0
    assert mask_adherence(images, foreground_mask(images)).mean == 1.0
    swapped = images.flip(0)  # each sample against the other one's control
    assert edge_adherence(swapped, canny_edges(images)).mean < 0.5
    assert mask_adherence(swapped, foreground_mask(images)).mean < 0.5


def test_adherence_by_kind():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    names = {
        kind: adherence(kind, images, images[:, :1] if kind != "lowres" else images).name
        for kind in ADHERENCE
    }
    assert names == {
        "canny": "edge_f1",
        "mask": "mask_iou",
        "lowres": "lowres_psnr_db",
        "gray": "gray_psnr_db",
    }


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: adherence("depth", torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)),
            r"control 'depth'; allowed",
        ),
        (
            lambda: edge_f1(torch.zeros(2, 8, 8), torch.zeros(1, 8, 8)),
            r"samples of shape \(2, 8, 8\) and controls of shape \(1, 8, 8\) differ",
        ),
        (
            lambda: edge_f1(torch.zeros(8, 8), torch.zeros(8, 8)),
            r"sample_edges of shape \(8, 8\) is not \(N, H, W\)",
        ),
        (lambda: edge_f1(line_map(), line_map(), tolerance=-1), r"tolerance -1 must be a whole number"),
        (
            lambda: mask_iou(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)),
            r"sample_masks of shape \(1, 2, 8, 8\)",
        ),
        (
            lambda: gray_adherence(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 4, 4)),
            r"differ; give one control",
        ),
        (
            lambda: lowres_adherence(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)),
            r"not divisible by .* 4",
        ),
    ],
)
def test_bad_input_is_refused_in_one_line(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_adherence_levels_measure_controlled_chance_and_ceiling_on_the_same_controls():
    from ddpm.eval.adherence import adherence_levels

    real = torch.rand(3, 1, 12, 12) * 2 - 1
    masks = foreground_mask(real)
    levels = adherence_levels("mask", masks, controlled=real, uncontrolled=-real, real=real)
    assert list(levels) == ["controlled", "chance", "ceiling"]
    assert levels["ceiling"].mean == levels["controlled"].mean == 1.0 and levels["chance"].mean < 0.1
