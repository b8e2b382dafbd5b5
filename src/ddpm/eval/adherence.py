"""How closely generated samples follow their ControlNet controls (issue 21): one measure per control kind.

Samples and controls are images in [-1, 1] (N, C, H, W), sample i made from control i; binary controls
(edges, masks) are +1 where the feature is (:mod:`ddpm.data.controls`). Each measure returns an
:class:`Adherence`: the value of every sample and their mean. Report it beside the same measure for
samples of the base model without control (chance) and for the real images the controls came from (the
ceiling): ``edge_adherence(real, canny_edges(real))`` is 1 by construction, the others near their best.

    edge_adherence      F1 of the samples' Canny edges against the control edges, 1-pixel tolerance
    mask_adherence      IoU of the samples' foreground masks with the control masks
    lowres_adherence    PSNR of the area-downsampled sample against the draft's low-resolution image
    gray_adherence      PSNR of the sample's BT.601 luma against the gray control

Both PSNRs are capped at PSNR_CAP_DB (100 dB) per sample: a real image against its own control differs by
float rounding only (~166 dB for a draft) or not at all (+inf, which JSON cannot hold), and no sample comes
near 100 dB, so the cap changes only the ceiling, to a number that reads as "exact".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from torch import Tensor

from ddpm.data.controls import canny_edges, foreground_mask, luma

# 8-neighbourhood, per image: "within 1 pixel" counts diagonal neighbours, as a 1-px shift in x and y.
_TOLERANCE_1PX = np.ones((1, 3, 3), dtype=bool)
PSNR_CAP_DB = 100.0  # the adherence PSNRs' largest value: an error of 1e-5 of the [-1, 1] range per pixel


@dataclass(frozen=True)
class Adherence:
    """One measure over a set of samples."""

    name: str  # e.g. "edge_f1", "mask_iou", "lowres_psnr_db", "gray_psnr_db"
    per_sample: Tensor  # (N,) float64, sample i against control i
    mean: float  # mean of per_sample (finite: PSNRs are capped at PSNR_CAP_DB)


def _adherence(name: str, per_sample: Tensor) -> Adherence:
    values = per_sample.double().cpu()
    return Adherence(name, values, float(values.mean()))


def edge_f1(sample_edges: Tensor, control_edges: Tensor, *, tolerance: int = 1) -> Adherence:
    """F1 of two edge maps per image, (N, H, W) or (N, 1, H, W) bool (or > 0 for ±1 maps).

    Precision: the share of the sample's edge pixels within ``tolerance`` pixels (8-neighbourhood, so a
    diagonal step counts) of a control edge pixel; recall: the share of control edge pixels within
    ``tolerance`` of a sample edge pixel; F1 = 2PR / (P + R). Two empty maps agree (F1 = 1); one empty
    map against a non-empty one scores 0.
    """
    sample, control = _binary(sample_edges, "sample_edges"), _binary(control_edges, "control_edges")
    _check_same_shape(sample, control)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance {tolerance!r} must be a whole number of pixels ≥ 0")
    near_control = _dilate(control, tolerance)
    near_sample = _dilate(sample, tolerance)
    sample_count, control_count = sample.sum(axis=(1, 2)), control.sum(axis=(1, 2))
    precision = (sample & near_control).sum(axis=(1, 2)) / np.maximum(sample_count, 1)
    recall = (control & near_sample).sum(axis=(1, 2)) / np.maximum(control_count, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    f1[(sample_count == 0) & (control_count == 0)] = 1.0
    return _adherence("edge_f1", torch.from_numpy(f1))


def mask_iou(sample_masks: Tensor, control_masks: Tensor) -> Adherence:
    """Intersection over union of two binary masks per image, (N, H, W) or (N, 1, H, W) bool (or > 0);
    two empty masks agree (IoU = 1)."""
    sample, control = _binary(sample_masks, "sample_masks"), _binary(control_masks, "control_masks")
    _check_same_shape(sample, control)
    intersection = (sample & control).sum(axis=(1, 2))
    union = (sample | control).sum(axis=(1, 2))
    iou = np.where(union == 0, 1.0, intersection / np.maximum(union, 1))
    return _adherence("mask_iou", torch.from_numpy(iou.astype(np.float64)))


def psnr(
    images: Tensor, references: Tensor, *, data_range: float = 2.0, cap_db: float | None = None
) -> Tensor:
    """(N,) peak signal-to-noise ratio in dB, 10·log10(data_range² / MSE) per image; ``data_range`` 2 for
    images in [-1, 1]; +inf where an image equals its reference, or ``cap_db`` at most when given."""
    _check_same_shape(images, references)
    mse = (images.double() - references.double()).square().flatten(1).mean(dim=1)
    values = 10 * torch.log10(data_range**2 / mse)  # mse = 0 → +inf
    return values if cap_db is None else values.clamp(max=cap_db)


def edge_adherence(samples: Tensor, controls: Tensor, **canny: float) -> Adherence:
    """:func:`edge_f1` of the samples' Canny edges (:func:`ddpm.data.controls.canny_edges`, with ``canny``
    options, which should be those that made the controls) against the edge controls (> 0)."""
    return edge_f1(canny_edges(samples, **canny) > 0, controls > 0)


def mask_adherence(samples: Tensor, controls: Tensor, *, threshold: float = 0.0) -> Adherence:
    """:func:`mask_iou` of the samples' foreground masks (:func:`ddpm.data.controls.foreground_mask`)
    against the mask controls (> 0)."""
    return mask_iou(foreground_mask(samples, threshold=threshold) > 0, controls > 0)


def lowres_adherence(samples: Tensor, drafts: Tensor, *, factor: int = 4) -> Adherence:
    """PSNR (dB, at most PSNR_CAP_DB) of the samples area-downsampled by ``factor`` against the drafts'
    low-resolution images (their own area-downsampling, exact for a nearest-upsampled draft)."""
    _check_same_shape(samples, drafts)
    if samples.shape[2] % factor or samples.shape[3] % factor:
        raise ValueError(
            f"image size {tuple(samples.shape[2:])} is not divisible by the draft factor {factor}"
        )
    low = F.avg_pool2d(samples.double(), factor), F.avg_pool2d(drafts.double(), factor)
    values = psnr(*low, cap_db=PSNR_CAP_DB)
    return _adherence("lowres_psnr_db", values)


def gray_adherence(samples: Tensor, controls: Tensor) -> Adherence:
    """PSNR (dB, at most PSNR_CAP_DB) of the samples' BT.601 luma (:func:`ddpm.data.controls.luma`) against
    the gray controls."""
    return _adherence("gray_psnr_db", psnr(luma(samples), controls, cap_db=PSNR_CAP_DB))


ADHERENCE: dict[str, Callable[[Tensor, Tensor], Adherence]] = {
    "canny": edge_adherence,
    "mask": mask_adherence,
    "lowres": lowres_adherence,
    "gray": gray_adherence,
}  # keyed like ddpm.data.controls.CONTROLS


def adherence(kind: str, samples: Tensor, controls: Tensor) -> Adherence:
    """The measure for a control of ``kind`` (a key of ADHERENCE), with each measure's defaults."""
    if kind not in ADHERENCE:
        raise ValueError(f"no adherence measure for control {kind!r}; allowed: {', '.join(ADHERENCE)}")
    return ADHERENCE[kind](samples, controls)


# how reports name each measure
ADHERENCE_NAMES = {
    "canny": "edge F1",
    "mask": "mask IoU",
    "lowres": f"low-res PSNR (dB, capped at {PSNR_CAP_DB:.0f})",
    "gray": f"gray PSNR (dB, capped at {PSNR_CAP_DB:.0f})",
}


def adherence_levels(
    kind: str, controls: Tensor, *, controlled: Tensor, uncontrolled: Tensor, real: Tensor
) -> dict[str, Adherence]:
    """The measure of ``kind`` at its three levels, on the same controls: ``controlled`` samples (drawn with
    them), ``uncontrolled`` ones (the base model without control: chance) and the ``real`` images the
    controls came from (the ceiling). Keys: controlled, chance, ceiling."""
    levels = {"controlled": controlled, "chance": uncontrolled, "ceiling": real}
    return {level: adherence(kind, images, controls) for level, images in levels.items()}


def _dilate(masks: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance == 0:
        return masks
    return binary_dilation(masks, structure=_TOLERANCE_1PX, iterations=tolerance)


def _binary(maps: Tensor | np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) bool from (N, H, W) or (N, 1, H, W), bool or numeric (> 0 is set)."""
    array = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} of shape {array.shape} is not (N, H, W) or (N, 1, H, W)")
    return array if array.dtype == bool else array > 0


def _check_same_shape(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"samples of shape {tuple(a.shape)} and controls of shape {tuple(b.shape)} differ; "
            "give one control per sample, at the samples' size"
        )
