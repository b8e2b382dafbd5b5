"""Network configs: frozen dataclasses, one comment per field, and the named U-Net presets.

A preset is a named config, nothing more. Lists (as TOML gives them) are accepted for tuple fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UNetConfig:
    """The DDPM U-Net (Ho et al. 2020, appendix B; diffusion_tf/models/unet.py)."""

    in_channels: int = 3  # image channels in (1 grey, 3 RGB, or latent channels)
    out_channels: int | None = None  # channels out; None means in_channels (ε, x₀ or v has x's shape)
    image_size: int = 32  # height of the training images; attention_resolutions refer to it
    base_channels: int = 128  # channels of the first level; level i has base_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # one entry per resolution level; each level halves H, W
    num_res_blocks: int = 2  # residual blocks per level going down; the up path has one more per level
    attention_resolutions: tuple[int, ...] = (16,)  # feature heights (at image_size) with self-attention
    num_heads: int = 1  # attention heads; must divide the channels wherever attention runs
    dropout: float = 0.1  # dropout before the second conv of every residual block
    num_groups: int = 32  # GroupNorm groups; must divide every level's channel count
    num_classes: int | None = None  # class-conditional if set; label num_classes means "no label" (CFG)
    resamp_with_conv: bool = True  # 3x3 conv in down/upsampling (the paper); False: avg-pool / plain resize
    norm_eps: float = 1e-6  # GroupNorm epsilon (tf.contrib group_norm default, as the paper's code)
    gradient_checkpointing: bool = False  # training: recompute block activations in backward (less memory)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        _check_positive("in_channels", self.in_channels)
        if self.out_channels is not None:
            _check_positive("out_channels", self.out_channels)
        _check_positive("image_size", self.image_size)
        _check_positive("base_channels", self.base_channels)
        if not self.channel_mult:
            raise ValueError("channel_mult is empty; give at least one level, e.g. (1, 2, 2, 2)")
        for mult in self.channel_mult:
            _check_positive("channel_mult entry", mult)
        _check_positive("num_res_blocks", self.num_res_blocks)
        _check_positive("num_heads", self.num_heads)
        _check_positive("num_groups", self.num_groups)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} is outside [0, 1)")
        if self.num_classes is not None:
            _check_positive("num_classes", self.num_classes)
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps {self.norm_eps} must be > 0")
        factor = self.downsample_factor
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} cannot be halved {halvings(self.num_levels - 1)}; "
                f"it must be divisible by {factor} for {self.num_levels} levels"
            )
        for channels in self.level_channels:
            if channels % self.num_groups:
                raise ValueError(
                    f"num_groups {self.num_groups} does not divide {channels} channels; "
                    f"it must divide base_channels * m for every m in channel_mult {self.channel_mult}"
                )
        allowed = [self.image_size >> level for level in range(self.num_levels)]
        for resolution in self.attention_resolutions:
            if resolution not in allowed:
                raise ValueError(
                    f"attention resolution {resolution} is not a level of this U-Net; "
                    f"allowed for image_size {self.image_size}: {allowed}"
                )
        for level in sorted(set(self.attention_levels) | {self.num_levels - 1}):  # the middle attends too
            channels = self.level_channels[level]
            if channels % self.num_heads:
                raise ValueError(
                    f"num_heads {self.num_heads} does not divide {channels} channels "
                    f"at attention level {level}"
                )

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def downsample_factor(self) -> int:
        """H and W must be divisible by this: the net halves them num_levels − 1 times."""
        return 2 ** (self.num_levels - 1)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * mult for mult in self.channel_mult)

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """Levels (0 = full resolution) whose feature height at image_size is in attention_resolutions."""
        return tuple(
            level
            for level in range(self.num_levels)
            if self.image_size >> level in self.attention_resolutions
        )

    @property
    def resolved_out_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels


@dataclass(frozen=True)
class MLPConfig:
    """A residual MLP denoiser for low-dimensional points (the 2-D swiss roll of Sohl-Dickstein et al.)."""

    dim: int = 2  # dimension of the data points (input and output)
    hidden_dim: int = 128  # width of every hidden layer
    num_layers: int = 4  # residual blocks, each LayerNorm → SiLU → Linear (+ time) → SiLU → Linear
    time_embed_dim: int = 128  # sinusoidal time-embedding size before its MLP (even)
    num_classes: int | None = None  # class-conditional if set; label num_classes means "no label" (CFG)
    dropout: float = 0.0  # dropout inside each residual block

    def __post_init__(self) -> None:
        _check_positive("dim", self.dim)
        _check_positive("hidden_dim", self.hidden_dim)
        _check_positive("num_layers", self.num_layers)
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim {self.time_embed_dim} must be even and >= 2")
        if self.num_classes is not None:
            _check_positive("num_classes", self.num_classes)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} is outside [0, 1)")


def halvings(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive integer")


UNET_PRESETS: dict[str, UNetConfig] = {
    # CIFAR-10 32×32 net of the paper (35.7M parameters; diffusers' google/ddpm-cifar10-32).
    "ddpm-cifar10": UNetConfig(
        in_channels=3, image_size=32, base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), dropout=0.1,
    ),
    # CelebA-HQ / LSUN 256×256 net of the paper (≈114M parameters; google/ddpm-celebahq-256).
    "ddpm-256": UNetConfig(
        in_channels=3, image_size=256, base_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
        attention_resolutions=(16,), dropout=0.0,
    ),
    # scikit-learn's 8×8 digits (8 → 4): ≈1.0M parameters, small enough for minutes on a laptop CPU.
    "digits": UNetConfig(
        in_channels=1, image_size=8, base_channels=32, channel_mult=(1, 2), num_res_blocks=2,
        attention_resolutions=(4,), dropout=0.1, num_groups=8,
    ),
    # MNIST / Fashion-MNIST 28×28 (28 → 14 → 7): ≈1.1M parameters.
    "mnist": UNetConfig(
        in_channels=1, image_size=28, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(7,), dropout=0.1, num_groups=8,
    ),
}  # fmt: skip
