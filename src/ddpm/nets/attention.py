"""Self-attention over spatial positions (DDPM appendix B: attn_block; multi-head as in later work)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.nets.init import ZERO_SCALE, paper_init_


class AttnBlock(nn.Module):
    """x + proj_out(Attention(q, k, v)) with q, k, v = 1×1 projections of GroupNorm(x).

    One Linear makes q, k and v together (the paper's three NIN layers q, k, v stacked in that order).
    Tokens are taken as (B, H·W, C), which is a free view when x is channels_last.
    """

    def __init__(self, channels: int, num_heads: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)
        # Initialise q, k, v as three separate C×C layers, as the paper's code does.
        for chunk in self.qkv.weight.data.view(3, channels, channels):
            nn.init.xavier_uniform_(chunk)
        nn.init.zeros_(self.qkv.bias)
        paper_init_(self.proj_out, scale=ZERO_SCALE)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        heads, head_dim, tokens = self.num_heads, channels // self.num_heads, height * width
        h = self.norm(x).permute(0, 2, 3, 1).reshape(batch, tokens, channels)  # (B, L, C)
        qkv = (
            self.qkv(h).view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        )  # (3, B, heads, L, d)
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, L, d), softmax(qkᵀ/√d) v
        h = h.transpose(1, 2).reshape(batch, tokens, channels)  # (B, L, C)
        h = self.proj_out(h).view(batch, height, width, channels).permute(0, 3, 1, 2)  # (B, C, H, W)
        return x + h
