"""The DDPM U-Net (Ho et al. 2020, appendix B; a port of diffusion_tf/models/unet.py).

Submodule names follow the paper's code: temb.dense[0..1], conv_in, down[i].block[j], down[i].attn[j],
down[i].downsample, mid.block_1, mid.attn_1, mid.block_2, up[i].block[j], up[i].attn[j],
up[i].upsample, norm_out, conv_out. Level i works at resolution image_size / 2^i in both paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ddpm.nets.attention import AttnBlock
from ddpm.nets.blocks import Downsample, ResnetBlock, Upsample, norm_silu
from ddpm.nets.configs import UNetConfig, halvings
from ddpm.nets.embeddings import ClassEmbedding, TimeEmbedding, broadcast_timesteps
from ddpm.nets.init import ZERO_SCALE, paper_init_


class DownLevel(nn.Module):
    """One resolution of the down path: residual blocks, their attention (if any), then downsampling."""

    def __init__(
        self, blocks: list[ResnetBlock], attns: list[AttnBlock], downsample: Downsample | None
    ) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)  # empty, or one per block
        self.downsample = downsample  # None at the lowest resolution


class UpLevel(nn.Module):
    """One resolution of the up path: residual blocks, their attention (if any), then upsampling."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock], upsample: Upsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)  # empty, or one per block
        self.upsample = upsample  # None at full resolution


class Middle(nn.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, temb_dim: int, config: UNetConfig) -> None:
        super().__init__()
        block_args = (temb_dim, config.dropout, config.num_groups, config.norm_eps)
        self.block_1 = ResnetBlock(channels, channels, *block_args)
        self.attn_1 = AttnBlock(channels, config.num_heads, config.num_groups, config.norm_eps)
        self.block_2 = ResnetBlock(channels, channels, *block_args)

    def forward(self, h: Tensor, temb_act: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h, temb_act)), temb_act)


class UNetEncoder(nn.Module):
    """The U-Net's first half: time (and class) embedding, ``conv_in``, the down path and the middle block.

    :class:`UNet` adds the up path to it; ControlNet's control branch is a trainable copy of exactly this
    half (Zhang, Rao & Agrawala 2023, §3.2), so both share the code that runs it and its parameter names.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch, temb_dim = config.base_channels, 4 * config.base_channels
        block_args = (temb_dim, config.dropout, config.num_groups, config.norm_eps)
        attn_args = (config.num_heads, config.num_groups, config.norm_eps)
        attention_levels = set(config.attention_levels)
        last = config.num_levels - 1

        self.temb = TimeEmbedding(ch, temb_dim)
        self.class_embedding = (
            None if config.num_classes is None else ClassEmbedding(config.num_classes, temb_dim)
        )
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        paper_init_(self.conv_in)

        # Down path: remember the channel count of every tensor pushed on the skip stack (the paper's hs).
        skip_channels = [ch]
        in_ch = ch
        down = []
        for level, out_ch in enumerate(config.level_channels):
            blocks, attns = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(in_ch, out_ch, *block_args))
                if level in attention_levels:
                    attns.append(AttnBlock(out_ch, *attn_args))
                in_ch = out_ch
                skip_channels.append(in_ch)
            resample = Downsample(in_ch, config.resamp_with_conv) if level != last else None
            if resample is not None:
                skip_channels.append(in_ch)
            down.append(DownLevel(blocks, attns, resample))
        self.down = nn.ModuleList(down)
        self.skip_channels = tuple(skip_channels)  # channels of each skip tensor, shallowest first

        self.mid = Middle(in_ch, temb_dim, config)

    @property
    def middle_channels(self) -> int:
        return self.config.level_channels[-1]

    def embed(self, t: Tensor | int | float, class_labels: Tensor | None, x: Tensor) -> Tensor:
        """SiLU(time embedding + class embedding), (B, 4·ch): every residual block starts its time path
        with SiLU, so it is done once per forward. A class-conditional net given class_labels=None uses
        the null label (unconditional output)."""
        batch = x.shape[0]
        temb = self.temb(broadcast_timesteps(t, batch, x.device))  # (B, 4·ch)
        if self.class_embedding is not None:
            temb = temb + self.class_embedding(class_labels, batch, x.device)
        elif class_labels is not None:
            raise ValueError("class_labels given to an unconditional UNet; set num_classes in UNetConfig")
        return F.silu(temb)

    def encode(self, x: Tensor, temb_act: Tensor, hint: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """The skip stack hs (one tensor per ``skip_channels`` entry) and the middle block's output.

        ``hint`` (B, ch, H, W), if given, is added to conv_in's output: where ControlNet's branch reads
        its control image (the guided hint of lllyasviel/ControlNet's cldm.py).
        """
        h = self.conv_in(x)  # (B, ch, H, W)
        hs = [h if hint is None else h + hint]
        for level in self.down:
            for j, block in enumerate(level.block):
                h = self._run(block, hs[-1], temb_act)
                if level.attn:
                    h = self._run(level.attn[j], h)
                hs.append(h)
            if level.downsample is not None:
                hs.append(level.downsample(hs[-1]))
        return hs, self._run(self.mid, hs[-1], temb_act)

    def _run(self, block: nn.Module, *inputs: Tensor) -> Tensor:
        """``block(*inputs)``; with gradient checkpointing (training only) its activations are not kept
        but recomputed during backward, with the same dropout masks (the RNG state is replayed)."""
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def check_input(self, x: Tensor) -> None:
        """x must be (B, in_channels, H, W) with H, W positive multiples of the downsample factor."""
        config = self.config
        if x.ndim != 4 or x.shape[1] != config.in_channels:
            raise ValueError(
                f"input of shape {tuple(x.shape)} is not (B, {config.in_channels}, H, W) for this UNet"
            )
        height, width, factor = x.shape[2], x.shape[3], config.downsample_factor
        if height % factor or width % factor or height == 0 or width == 0:
            raise ValueError(
                f"image size {height}×{width} cannot be halved {halvings(config.num_levels - 1)}; "
                f"height and width must be positive multiples of {factor}"
            )


class UNet(UNetEncoder):
    """ε-network (or x₀, v) of DDPM: ``UNet(config)(x, t, class_labels=None) -> Tensor`` shaped like x.

    Works for any H, W divisible by ``config.downsample_factor``; attention runs at the levels whose
    height at ``config.image_size`` is listed in ``attention_resolutions``, whatever the input size.

    Speed notes: the time embedding and its SiLU are computed once per forward; activations are
    overwritten in place wherever autograd allows (everywhere without autograd). Both memory formats
    work: ``net.to(memory_format=torch.channels_last)`` with channels_last inputs gives the same output
    (on this CPU about as fast as NCHW, since GroupNorm is slow in channels_last); CPU bfloat16
    autocast works too (about 1.9× faster for the CIFAR-10 net on an AVX512-BF16 CPU).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)  # embeddings, conv_in, down path, middle (in this order: same init RNG)
        temb_dim = 4 * config.base_channels
        block_args = (temb_dim, config.dropout, config.num_groups, config.norm_eps)
        attn_args = (config.num_heads, config.num_groups, config.norm_eps)
        attention_levels = set(config.attention_levels)

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip tensor (concatenated).
        skip_channels = list(self.skip_channels)
        in_ch = self.middle_channels
        up = [None] * config.num_levels
        for level in reversed(range(config.num_levels)):
            out_ch = config.level_channels[level]
            blocks, attns = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(in_ch + skip_channels.pop(), out_ch, *block_args))
                if level in attention_levels:
                    attns.append(AttnBlock(out_ch, *attn_args))
                in_ch = out_ch
            resample = Upsample(in_ch, config.resamp_with_conv) if level != 0 else None
            up[level] = UpLevel(blocks, attns, resample)
        self.up = nn.ModuleList(up)

        self.norm_out = nn.GroupNorm(config.num_groups, in_ch, eps=config.norm_eps)
        self.conv_out = nn.Conv2d(in_ch, config.resolved_out_channels, 3, padding=1)
        paper_init_(self.conv_out, scale=ZERO_SCALE)

    def forward(
        self,
        x: Tensor,
        t: Tensor | int | float,
        class_labels: Tensor | None = None,
        *,
        skip_residuals: Sequence[Tensor] | None = None,
        middle_residual: Tensor | None = None,
    ) -> Tensor:
        """x: (B, C, H, W); t: (B,) timestep indices (int or float) or a scalar; class_labels: (B,) or None.

        A class-conditional net given class_labels=None uses the null label (unconditional output).
        ``skip_residuals`` (one per ``skip_channels`` entry, shaped like that skip tensor) and
        ``middle_residual`` are added to the skip connections and the middle block's output before the
        up path reads them: how ControlNet's branch steers this net (Zhang, Rao & Agrawala 2023, eq. 2).
        """
        self.check_input(x)
        temb_act = self.embed(t, class_labels, x)
        hs, h = self.encode(x, temb_act)
        if skip_residuals is not None:
            if len(skip_residuals) != len(hs):
                raise ValueError(
                    f"{len(skip_residuals)} skip residuals given; this UNet has {len(hs)} skip connections"
                )
            hs = [skip + residual for skip, residual in zip(hs, skip_residuals, strict=True)]
        if middle_residual is not None:
            h = h + middle_residual
        return self.decode(h, hs, temb_act)

    def decode(self, h: Tensor, hs: list[Tensor], temb_act: Tensor) -> Tensor:
        """The up path from the middle output h, eating the skip stack hs (emptied), → (B, C_out, H, W)."""
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = self._run(block, torch.cat([h, hs.pop()], dim=1), temb_act)
                if level.attn:
                    h = self._run(level.attn[j], h)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(norm_silu(self.norm_out, h))
