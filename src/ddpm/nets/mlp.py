"""A residual MLP denoiser for low-dimensional points (2-D swiss roll, moons, Gaussian mixtures)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.nets.configs import MLPConfig
from ddpm.nets.embeddings import ClassEmbedding, TimeEmbedding, broadcast_timesteps
from ddpm.nets.init import ZERO_SCALE, paper_init_


class MLPBlock(nn.Module):
    """h + Linear(dropout(SiLU(Linear(SiLU(LayerNorm(h))) + Dense(temb)))): the U-Net's residual block
    with dense layers in place of convolutions and LayerNorm in place of GroupNorm."""

    def __init__(self, hidden_dim: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.dense1 = nn.Linear(hidden_dim, hidden_dim)
        self.temb_proj = nn.Linear(temb_dim, hidden_dim)
        self.dense2 = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = dropout
        paper_init_(self.dense1)
        paper_init_(self.temb_proj)
        paper_init_(self.dense2, scale=ZERO_SCALE)

    def forward(self, h: Tensor, temb_act: Tensor) -> Tensor:
        # h: (B, hidden); temb_act: (B, temb_dim), SiLU already applied.
        r = self.dense1(F.silu(self.norm(h))) + self.temb_proj(temb_act)
        r = F.dropout(F.silu(r), self.dropout, self.training)
        return h + self.dense2(r)


class MLPDenoiser(nn.Module):
    """``MLPDenoiser(config)(x, t, class_labels=None) -> Tensor``: (B, dim) points in, (B, dim) out."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_dim
        self.temb = TimeEmbedding(config.time_embed_dim, hidden)
        self.class_embedding = (
            None if config.num_classes is None else ClassEmbedding(config.num_classes, hidden)
        )
        self.dense_in = nn.Linear(config.dim, hidden)
        self.blocks = nn.ModuleList(
            MLPBlock(hidden, hidden, config.dropout) for _ in range(config.num_layers)
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.dense_out = nn.Linear(hidden, config.dim)
        paper_init_(self.dense_in)
        paper_init_(self.dense_out, scale=ZERO_SCALE)

    def forward(self, x: Tensor, t: Tensor | int | float, class_labels: Tensor | None = None) -> Tensor:
        """x: (B, dim); t: (B,) timestep indices or a scalar; class_labels: (B,) or None (null label)."""
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(
                f"input of shape {tuple(x.shape)} is not (B, {self.config.dim}) for this MLPDenoiser"
            )
        batch = x.shape[0]
        temb = self.temb(broadcast_timesteps(t, batch, x.device))  # (B, hidden)
        if self.class_embedding is not None:
            temb = temb + self.class_embedding(class_labels, batch, x.device)
        elif class_labels is not None:
            raise ValueError(
                "class_labels given to an unconditional MLPDenoiser; set num_classes in MLPConfig"
            )
        temb_act = F.silu(temb)
        h = self.dense_in(x)  # (B, hidden)
        for block in self.blocks:
            h = block(h, temb_act)
        return self.dense_out(F.silu(self.norm_out(h)))  # (B, dim)
