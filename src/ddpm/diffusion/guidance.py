"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around any class-conditional denoiser.

Convention (the paper's eq. 6): ε̃(x, c) = (1 + w) ε(x, c) − w ε(x, ∅), with guidance scale w ≥ 0.
w = 0 is the conditional model (returned as is, without the unconditional call); larger w trades
diversity for class fidelity. The "CFG scale" s of other tools (s = 1 conditional) is s = 1 + w.

The combination is applied to the raw network output, whatever it predicts: ε, x₀ and v are each an
affine function of the others at fixed (x_t, ᾱ_t) (``process.predict_x0_eps``), so guiding the raw
output equals guiding ε. The wrapper is itself a denoiser ``model(x_t, t, **cond)``, so every sampler
takes it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]  # model(x_t, t, **cond) -> Tensor of x_t's shape


def check_guidance_scale(guidance_scale: float) -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise ValueError(f"guidance scale {guidance_scale!r} is invalid; give a number w ≥ 0")
    if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance scale w={guidance_scale!r} is invalid; it must be finite and ≥ 0")


def guided_output(conditional: Tensor, unconditional: Tensor, guidance_scale: float) -> Tensor:
    """(1 + w) · conditional − w · unconditional (Ho & Salimans 2022, eq. 6)."""
    return (1.0 + guidance_scale) * conditional - guidance_scale * unconditional


class ClassifierFreeGuidance:
    """``ClassifierFreeGuidance(model, w, null_label)(x_t, t, class_labels=y)`` → the guided output.

    ``model`` must accept ``class_labels`` (B,) with ``null_label`` meaning "no label" (the label the
    network was trained with under label dropout). For w > 0 the conditional and unconditional
    predictions come from one forward call on a doubled batch [x_t; x_t] with labels [y; ∅]; other
    conditioning tensors with a leading batch dimension are doubled with it, anything else is passed as
    is. ``label_key`` names the keyword the labels travel under.
    """

    def __init__(
        self, model: Denoiser, guidance_scale: float, null_label: int, *, label_key: str = "class_labels"
    ) -> None:
        check_guidance_scale(guidance_scale)
        if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
            raise ValueError(f"null_label={null_label!r} is invalid; give the integer index of 'no label'")
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.label_key = label_key

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        labels = cond.get(self.label_key)
        if labels is None:
            raise ValueError(f"classifier-free guidance needs {self.label_key}=…; got none for this batch")
        if self.guidance_scale == 0.0:
            return self.model(x_t, t, **cond)  # exactly the conditional prediction
        labels = torch.as_tensor(labels, device=x_t.device)
        batch = x_t.shape[0]
        null = torch.full_like(labels, self.null_label)  # (B,)
        doubled = {key: _double(value, batch) for key, value in cond.items() if key != self.label_key}
        output = self.model(
            torch.cat([x_t, x_t]),  # (2B, …)
            _double(t, batch),
            **doubled,
            **{self.label_key: torch.cat([labels, null])},  # (2B,): conditional half, then ∅
        )
        conditional, unconditional = output[:batch], output[batch:]
        return guided_output(conditional, unconditional, self.guidance_scale)


def _double(value: Any, batch: int) -> Any:
    """[value; value] along dim 0 for per-sample tensors (B, …); scalars and others unchanged."""
    if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value
