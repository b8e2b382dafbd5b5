"""Exponential moving average of model weights (DDPM §4: decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds an averaged copy of a model: θ̄ ← d θ̄ + (1 − d) θ after every optimizer step.

    With ``warmup`` the decay is capped at (1 + n)/(10 + n) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates), so a run of a few thousand steps is not dominated
    by its random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = [p for p in self.model.parameters() if p.dtype.is_floating_point]
        params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # θ̄ + (1−d)(θ − θ̄)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1
