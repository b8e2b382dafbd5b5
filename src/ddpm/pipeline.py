"""The notebook API: load a trained run, draw samples, get tensors or PIL images.

import ddpm
model = ddpm.load("runs/digits")
images = model.sample(16, sampler="ddim", steps=50)   # float tensor in [-1, 1]
ddpm.to_pil(images)[0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ddpm.diffusion import NoiseSchedule, make_schedule
from ddpm.diffusion.eps_scaling import EpsilonScaling, check_eps_scale
from ddpm.diffusion.guidance import ClassifierFreeGuidance, check_guidance_scale
from ddpm.diffusion.samplers import SAMPLERS, SampleResult, sample_seeds
from ddpm.nets import build_net
from ddpm.train.checkpoint import CheckpointError, latest_valid_checkpoint, load_checkpoint
from ddpm.train.config import TrainConfig, config_from_dict


@dataclass
class DiffusionModel:
    """A denoiser network with its schedule and declared parameterization."""

    net: nn.Module
    schedule: NoiseSchedule
    parameterization: str
    sample_shape: tuple[int, ...]  # (C, H, W) for images, (2,) for points
    kind: str  # "images" or "points"
    config: TrainConfig | None = None
    step: int = 0  # training steps behind these weights

    @property
    def num_classes(self) -> int | None:
        return (
            getattr(self.net, "num_classes", None) if self.config is None else self.config.model.num_classes
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def sample_with_result(
        self,
        n: int,
        *,
        sampler: str = "ddim",
        steps: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        clip_x0: float | None = None,
        labels: Tensor | Sequence[int] | None = None,
        guidance: float = 1.0,
        eps_scale: float = 1.0,
        progress: Callable[[int], None] | None = None,
        **sampler_options: Any,
    ) -> list[SampleResult]:
        """Draw ``n`` samples in batches; image i depends only on (seed, i), not on batch_size.

        ``labels`` (one class index per sample) conditions a class-conditional model. ``guidance`` is the
        classifier-free guidance scale s ≥ 0 (diffusers' ``guidance_scale``): ε(x, ∅) + s (ε(x, y) − ε(x, ∅))
        (see ``ddpm.diffusion.guidance``; Ho & Salimans 2022 eq. 6 with w = s − 1). The default s = 1 is
        the plain model, s = 0 the unconditional prediction, s > 1 stronger guidance; s ≠ 1 needs
        ``labels``. ``eps_scale`` λ divides the predicted noise, ε̂ / λ, at every step (epsilon scaling,
        Ning et al. 2024, ``ddpm.diffusion.eps_scaling``); 1 is the plain model.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if n < 1 or batch_size < 1:
            raise ValueError(f"n={n} and batch_size={batch_size} must both be ≥ 1")
        if clip_x0 is None and self.kind == "images":
            clip_x0 = 1.0  # images live in [-1, 1]
        if steps is not None:
            sampler_options["steps"] = steps
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if labels.numel() != n:
                raise ValueError(f"got {labels.numel()} labels for n={n} samples; give one per sample")
            if self.num_classes is None:
                raise ValueError("labels given to an unconditional model; train with data.class_conditional")
        check_guidance_scale(guidance)
        if guidance != 1 and self.num_classes is None:
            raise ValueError(
                f"guidance={guidance} needs a class-conditional model; "
                "this one has no labels (leave it at 1.0)"
            )
        if guidance != 1 and labels is None:
            raise ValueError(f"guidance={guidance} needs labels: guidance steers samples towards a class")
        check_eps_scale(eps_scale)
        denoiser = self.net if guidance == 1 else ClassifierFreeGuidance(self.net, guidance, self.num_classes)
        if eps_scale != 1:
            denoiser = EpsilonScaling(denoiser, eps_scale, self.schedule, self.parameterization)
        seeds = sample_seeds(seed, n)
        results = []
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                batch_seeds = seeds[start : start + batch_size]
                result = SAMPLERS[sampler](
                    denoiser,
                    self.schedule,
                    (len(batch_seeds), *self.sample_shape),
                    parameterization=self.parameterization,
                    seeds=batch_seeds,
                    device=self.device,
                    clip_x0=clip_x0,
                    cond=None
                    if labels is None
                    else {"class_labels": labels[start : start + batch_size].to(self.device)},
                    **sampler_options,
                )
                results.append(result)
                if progress is not None:
                    progress(len(batch_seeds))
        return results

    def sample(self, n: int, **options: Any) -> Tensor:
        """``n`` samples on the CPU: images in [-1, 1] (N, C, H, W) or points (N, 2)."""
        return torch.cat([r.samples.cpu() for r in self.sample_with_result(n, **options)])


def build_model(
    config: TrainConfig, sample_shape: Sequence[int], kind: str, net: nn.Module | None = None
) -> DiffusionModel:
    """The model ``config`` describes around ``net`` (default: a new, untrained network — a baseline)."""
    return DiffusionModel(
        net=build_net(config.model) if net is None else net,
        schedule=make_schedule(config.diffusion.schedule, config.diffusion.num_steps),
        parameterization=config.diffusion.parameterization,
        sample_shape=tuple(sample_shape),
        kind=kind,
        config=config,
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (→ its newest valid checkpoint) or a checkpoint folder."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    if (path / "checkpoints").is_dir():
        found = latest_valid_checkpoint(path)
        if found is None:
            raise CheckpointError(f"run directory {path} has no complete checkpoint yet")
        return found
    raise CheckpointError(f"{str(path)!r} is neither a run directory nor a checkpoint folder")


def load(path: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a run directory or checkpoint folder; ``weights`` is ``ema`` (default) or ``raw``."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights={weights!r} is not allowed; choose ema or raw")
    checkpoint = load_checkpoint(resolve_checkpoint(path), with_optimizer=False)
    config = config_from_dict(checkpoint.meta["config"])
    model = build_model(config, checkpoint.meta["sample_shape"], checkpoint.meta["kind"])
    model.net.load_state_dict(checkpoint.ema if weights == "ema" else checkpoint.model)
    model.net.to(device).eval()
    model.step = checkpoint.step
    return model


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W) → uint8 (N, H, W, C), rounding to the nearest level."""
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


def to_pil(images: Tensor) -> list[Image.Image]:
    """[-1, 1] (N, C, H, W) → PIL images (mode L or RGB)."""
    array = to_uint8(images)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]
