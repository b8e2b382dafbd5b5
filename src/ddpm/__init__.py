"""Denoising diffusion probabilistic models (Ho, Jain, Abbeel 2020) for images.

import ddpm
model = ddpm.load("runs/digits")      # a run directory, a checkpoint folder or a diffusers model folder
images = model.sample(16)             # (16, C, H, W) in [-1, 1], with the run's own sampler
ddpm.to_pil(images)[0]
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The notebook API, imported on first use so that ``import ddpm.diffusion`` (or ``ddpm --help``) does not
# load the networks and the model layer.
_MODEL_API = ("DiffusionModel", "ModelSpec", "SamplingConfig", "build_model", "load", "to_pil", "to_uint8")


def load(path: Any, *, weights: str = "ema", device: Any = "cpu") -> Any:
    """A :class:`DiffusionModel` from a run directory or checkpoint folder (``ddpm.model.load``; ``weights``
    ema or raw) or from a diffusers model folder in either layout (``from_diffusers``: one set of weights)."""
    from ddpm.interop.diffusers import is_diffusers_folder

    if is_diffusers_folder(path):
        from ddpm.interop.diffusers_model import from_diffusers

        return from_diffusers(path, device=device)
    from ddpm import model

    return model.load(path, weights=weights, device=device)


def __getattr__(name: str) -> Any:
    if name in _MODEL_API:
        from ddpm import model

        return getattr(model, name)
    raise AttributeError(f"module 'ddpm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODEL_API])


__all__ = [*_MODEL_API, "__version__"]
