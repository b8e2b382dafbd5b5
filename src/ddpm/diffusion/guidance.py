"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around any class-conditional denoiser.

Convention: the guidance scale s of diffusers (``guidance_scale``), Stable Diffusion and k-diffusion,

    ε̃(x, c) = ε(x, ∅) + s · (ε(x, c) − ε(x, ∅)),   s ≥ 0.

s = 0 is exactly the unconditional prediction (one call with the null label for every sample), s = 1
exactly the conditional one (one plain call); other s use one call on a doubled batch, and s > 1
trades diversity for class fidelity. Ho & Salimans' eq. 6, ε̃ = (1 + w) ε(x, c) − w ε(x, ∅), is the
same line with w = s − 1 (their w = 0 is our s = 1). We use s because issue 10 asks that a guidance of
0 be the unconditional prediction and that class fidelity rise with it from there.

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
    """Refuse anything but a finite number s ≥ 0 (bools and strings included)."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise ValueError(f"guidance scale {guidance_scale!r} is invalid; give a number s ≥ 0")
    if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(
            f"guidance scale s={guidance_scale!r} is invalid; it must be finite and ≥ 0"
            " (0 = unconditional, 1 = conditional)"
        )


def guided_output(conditional: Tensor, unconditional: Tensor, guidance_scale: float) -> Tensor:
    """unconditional + s · (conditional − unconditional); Ho & Salimans 2022 eq. 6 with w = s − 1."""
    return unconditional + guidance_scale * (conditional - unconditional)


class ClassifierFreeGuidance:
    """``ClassifierFreeGuidance(model, s, null_label)(x_t, t, class_labels=y)`` → the guided output.

    ``model`` must accept ``class_labels`` (B,) with ``null_label`` meaning "no label" (the label the
    network was trained with under label dropout). s = 1 is one plain call with the labels y; s = 0 is
    one call with ``null_label`` in place of every label; any other s gets the conditional and
    unconditional predictions from one forward call on a doubled batch [x_t; x_t] with labels [y; ∅],
    other conditioning tensors with a leading batch dimension doubled with it and anything else passed
    as is. ``label_key`` names the keyword the labels travel under. ``learned_variance=True`` (a network
    whose output is its prediction's C channels, then C variance channels): only the prediction is
    guided, the variance channels are the conditional call's (GLIDE's and DiT's ``model_fn``), since
    extrapolating them would leave eq. 15's range [β̃, β].
    """

    def __init__(
        self,
        model: Denoiser,
        guidance_scale: float,
        null_label: int,
        *,
        label_key: str = "class_labels",
        learned_variance: bool = False,
    ) -> None:
        check_guidance_scale(guidance_scale)
        if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
            raise ValueError(f"null_label={null_label!r} is invalid; give the integer index of 'no label'")
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self.null_label = null_label
        self.label_key = label_key
        self.learned_variance = learned_variance

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        labels = cond.get(self.label_key)
        if labels is None:
            raise ValueError(f"classifier-free guidance needs {self.label_key}=…; got none for this batch")
        if self.guidance_scale == 1.0:
            return self.model(x_t, t, **cond)  # exactly the conditional prediction
        labels = torch.as_tensor(labels, device=x_t.device)
        null = torch.full_like(labels, self.null_label)  # (B,)
        if self.guidance_scale == 0.0:
            return self.model(x_t, t, **{**cond, self.label_key: null})  # exactly the unconditional one
        batch = x_t.shape[0]
        doubled = {key: _double(value, batch) for key, value in cond.items() if key != self.label_key}
        output = self.model(
            torch.cat([x_t, x_t]),  # (2B, …)
            _double(t, batch),
            **doubled,
            **{self.label_key: torch.cat([labels, null])},  # (2B,): conditional half, then ∅
        )
        conditional, unconditional = output[:batch], output[batch:]
        if not self.learned_variance:
            return guided_output(conditional, unconditional, self.guidance_scale)
        channels = x_t.shape[1]  # the prediction's; the variance channels follow
        guided = guided_output(conditional[:, :channels], unconditional[:, :channels], self.guidance_scale)
        return torch.cat([guided, conditional[:, channels:]], dim=1)  # (B, 2C, …)


def _double(value: Any, batch: int) -> Any:
    """[value; value] along dim 0 for per-sample tensors (B, …); scalars and others unchanged."""
    if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value
