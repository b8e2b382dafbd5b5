"""U-Net building blocks of DDPM appendix B (diffusion_tf/models/unet.py): residual block, resampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.nets.init import ZERO_SCALE, paper_init_


def norm_silu(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """SiLU(GroupNorm(x)). Without autograd the SiLU overwrites the fresh normalised tensor; with
    autograd it does not, since an in-place SiLU would make autograd keep a copy of its input."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


def inverted_dropout(h: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as F.dropout, with the mask drawn by torch.rand: on CPU that is about twice as
    fast as F.dropout's Bernoulli sampling. Overwrites h, which must not be needed by autograd."""
    if not training or p == 0.0:
        return h
    keep = torch.rand_like(h).ge_(p)  # 1.0 with probability 1 − p, else 0.0; same dtype as h
    return h.mul_(keep.mul_(1.0 / (1.0 - p)))


def group_norm(channels: int, num_groups: int, eps: float) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups, channels, eps=eps)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → conv3x3, + Dense(SiLU(temb)), GroupNorm → SiLU → dropout → conv3x3, + skip.

    The skip is a 1×1 conv (the paper's nin_shortcut) when the channel count changes. With
    ``temb_dim=None`` there is no time input (the autoencoder's blocks, LDM's ``temb_channels=0``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_dim: int | None,
        dropout: float,
        num_groups: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = None if temb_dim is None else nn.Linear(temb_dim, out_channels)
        self.norm2 = group_norm(out_channels, num_groups, eps)
        self.dropout = dropout
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        paper_init_(self.conv1)
        if self.temb_proj is not None:
            paper_init_(self.temb_proj)
        paper_init_(self.conv2, scale=ZERO_SCALE)
        if self.nin_shortcut is not None:
            paper_init_(self.nin_shortcut)

    def forward(self, x: Tensor, temb_act: Tensor | None = None) -> Tensor:
        # x: (B, C_in, H, W); temb_act: (B, temb_dim), already SiLU-activated once per forward.
        # In-place adds are safe below: no backward needs a conv's output.
        h = self.conv1(norm_silu(self.norm1, x))  # (B, C_out, H, W)
        if self.temb_proj is not None:
            h.add_(self.temb_proj(temb_act)[:, :, None, None])
        h = inverted_dropout(norm_silu(self.norm2, h), self.dropout, self.training)
        h = self.conv2(h)
        return h.add_(x if self.nin_shortcut is None else self.nin_shortcut(x))

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"


class Downsample(nn.Module):
    """Halve H and W: 3×3 conv with stride 2 and TF 'SAME' padding (pad 1 bottom/right), or 2×2 avg-pool."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None
        if self.conv is not None:
            paper_init_(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, C, H/2, W/2)
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour ×2, then a 3×3 conv (the paper's resamp_with_conv)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None
        if self.conv is not None:
            paper_init_(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, C, 2H, 2W)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)
