"""Time and class embeddings shared by the U-Net and the MLP denoiser."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ddpm.nets.init import paper_init_


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of timesteps (Transformer positions; DDPM appendix B, get_timestep_embedding).

    Frequencies 10000^(−i/(half−1)) for i < half = dim // 2, sines first then cosines, zero-padded to
    ``dim`` when odd (as the paper's code and diffusers' ``Timesteps(dim, False, 1)``).
    t: (B,) integer or float timesteps -> (B, dim) float32.
    """
    half = dim // 2
    # Computed here in float32, not kept as a buffer that .to(dtype) could round.
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) * (
        -math.log(10000.0) / max(half - 1, 1)
    )
    angles = t.to(torch.float32)[:, None] * exponent.exp()[None, :]  # (B, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


def broadcast_timesteps(t: Tensor | int | float, batch_size: int, device: torch.device) -> Tensor:
    """t as a (B,) tensor: python scalars and 0-dim tensors are repeated for the whole batch."""
    if not isinstance(t, Tensor):
        return torch.full((batch_size,), t, device=device, dtype=torch.float32)
    if t.ndim == 0:
        return t.to(device).expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(
            f"timesteps of shape {tuple(t.shape)} do not match batch size {batch_size}; give (B,) or a scalar"
        )
    return t.to(device)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding → Linear → SiLU → Linear (DDPM appendix B: temb dense0, dense1)."""

    def __init__(self, sinusoid_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.dense = nn.ModuleList([nn.Linear(sinusoid_dim, embed_dim), nn.Linear(embed_dim, embed_dim)])
        for layer in self.dense:
            paper_init_(layer)

    def forward(self, t: Tensor) -> Tensor:
        # t: (B,) -> (B, embed_dim)
        emb = timestep_embedding(t, self.sinusoid_dim).to(self.dense[0].weight.dtype)
        return self.dense[1](nn.functional.silu(self.dense[0](emb)))


class ClassEmbedding(nn.Module):
    """Learned class vectors added to the time embedding; index num_classes is the null label.

    The null label lets one network be both conditional and unconditional, as classifier-free
    guidance needs (Ho & Salimans 2022): train with labels randomly replaced by num_classes.
    """

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, class_labels: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        """class_labels: (B,) integers in [0, num_classes], or None for the null label -> (B, embed_dim).

        Label values are checked only for CPU tensors: on an accelerator the check would force a
        device sync in every training step, and an out-of-range index fails inside the embedding.
        """
        if class_labels is None:
            class_labels = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)
        elif (
            class_labels.shape != (batch_size,)
            or class_labels.is_floating_point()
            or class_labels.is_complex()
        ):
            raise ValueError(
                f"class_labels must be an integer tensor of shape ({batch_size},); "
                f"got {class_labels.dtype} of shape {tuple(class_labels.shape)}"
            )
        elif class_labels.device.type == "cpu" and class_labels.numel():
            low, high = int(class_labels.min()), int(class_labels.max())
            if low < 0 or high > self.num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"class label {bad} is out of range; allowed 0..{self.num_classes - 1}, "
                    f"or {self.num_classes} for no label"
                )
        return self.embedding(class_labels)
