"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models").

A trained U-Net stays frozen; a trainable copy of its first half (time/class embedding, conv_in, the down
path and the middle block, :class:`ddpm.nets.unet.UNetEncoder`) reads the noisy input plus a control
image, and its features join the frozen net's skip connections and middle output through zero-initialised
1×1 convolutions (§3.1, eq. 2): at initialisation the controlled net *is* the base, bit for bit, and
training cannot damage it.

    branch = ControlBranch.from_base(base_unet, ControlNetConfig(control_channels=1))
    net = ControlledUNet(base_unet, branch)
    eps = net(x_t, t, class_labels, control=edges, control_scale=1.0)

Structure as lllyasviel/ControlNet's cldm.py and diffusers' ControlNetModel: the hint encoder's output is
added to the copy's conv_in output; one zero conv per skip tensor and one for the middle output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ddpm.nets.configs import UNetConfig
from ddpm.nets.init import paper_init_
from ddpm.nets.unet import UNet, UNetEncoder


@dataclass(frozen=True)
class ControlNetConfig:
    """The control branch's own parts; the copied half of the U-Net takes the base's UNetConfig."""

    control_channels: int = 1  # channels of the control image (1: edges, masks, gray; C: low-res drafts)
    hint_channels: tuple[int, ...] = (16, 32)  # hint encoder stages, each two 3×3 convs with SiLU
    # control-image size / input size: 1 for pixel runs, the codec's factor for latent runs (a power of 2;
    # stages 1, 2, … halve the resolution until it is reached, as the paper's 512 → 64 hint encoder)
    hint_downsample: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hint_channels", tuple(self.hint_channels))
        _check_positive("control_channels", self.control_channels)
        if not self.hint_channels:
            raise ValueError("hint_channels is empty; give at least one stage, e.g. (16, 32)")
        for channels in self.hint_channels:
            _check_positive("hint_channels entry", channels)
        factor = self.hint_downsample
        _check_positive("hint_downsample", factor)
        if factor & (factor - 1):
            raise ValueError(f"hint_downsample {factor} is not a power of 2; allowed: 1, 2, 4, 8, …")
        if self.halvings >= len(self.hint_channels):
            raise ValueError(
                f"hint_downsample {factor} needs at least {self.halvings + 1} hint_channels stages "
                f"(one per halving after the first); got {len(self.hint_channels)}"
            )

    @property
    def halvings(self) -> int:
        return int(math.log2(self.hint_downsample))


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive integer")


def zero_conv(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Conv2d:
    """A convolution whose weight and bias are exactly 0 (the paper's "zero convolution", §3.1): its output
    is 0 until training moves it, so whatever it joins starts unchanged."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class HintEncoder(nn.Module):
    """Control image (B, control_channels, f·H, f·W) → (B, out_channels, H, W) features (§3.3's tiny
    network E(·)): stages of two 3×3 convs with SiLU, the first conv of stages 1, 2, … striding by 2 until
    the factor f = hint_downsample is reached, then a zero-initialised 3×3 conv."""

    def __init__(self, config: ControlNetConfig, out_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = config.control_channels
        for stage, channels in enumerate(config.hint_channels):
            stride = 2 if 1 <= stage <= config.halvings else 1
            first = nn.Conv2d(in_ch, channels, 3, stride=stride, padding=1)
            for conv in (first, nn.Conv2d(channels, channels, 3, padding=1)):
                paper_init_(conv)
                layers += [conv, nn.SiLU()]
            in_ch = channels
        layers.append(zero_conv(in_ch, out_channels, kernel_size=3))
        self.layers = nn.Sequential(*layers)

    def forward(self, control: Tensor) -> Tensor:
        return self.layers(control)


class ControlBranch(UNetEncoder):
    """The trainable copy: ``branch(x, t, class_labels, control)`` → residuals, one per skip tensor of the
    base (shallowest first) and last one for its middle output, each through its zero 1×1 conv."""

    def __init__(self, unet_config: UNetConfig, config: ControlNetConfig) -> None:
        super().__init__(unet_config)
        self.control_config = config
        self.hint = HintEncoder(config, unet_config.base_channels)
        self.zero_convs = nn.ModuleList(zero_conv(c, c) for c in self.skip_channels)
        self.middle_out = zero_conv(self.middle_channels, self.middle_channels)

    @classmethod
    def from_base(cls, base: UNet, config: ControlNetConfig) -> ControlBranch:
        """A branch whose copied half starts as ``base``'s weights (§3.2), on base's device and dtype."""
        branch = cls(base.config, config)
        own = branch.state_dict()
        copied = {name: value for name, value in base.state_dict().items() if name in own}
        branch.load_state_dict(copied, strict=False)
        new = {name.split(".")[0] for name in own if name not in copied}
        assert new == {"hint", "zero_convs", "middle_out"}, new  # every encoder tensor came from base
        reference = next(base.parameters())
        return branch.to(device=reference.device, dtype=reference.dtype)

    @property
    def num_residuals(self) -> int:
        """Residuals per forward: one per skip connection, then the middle output's."""
        return len(self.skip_channels) + 1

    def forward(
        self, x: Tensor, t: Tensor | int | float, class_labels: Tensor | None, control: Tensor
    ) -> list[Tensor]:
        self.check_input(x)
        self.check_control(control, x)
        temb_act = self.embed(t, class_labels, x)
        hs, h = self.encode(x, temb_act, hint=self.hint(control))
        return [conv(skip) for conv, skip in zip(self.zero_convs, hs, strict=True)] + [self.middle_out(h)]

    def check_control(self, control: Tensor, x: Tensor) -> None:
        """control must be a float (B, control_channels, f·H, f·W) batch for an input x of (B, C, H, W)."""
        factor, channels = self.control_config.hint_downsample, self.control_config.control_channels
        wanted = (x.shape[0], channels, factor * x.shape[2], factor * x.shape[3])
        is_tensor = isinstance(control, Tensor)
        if not (is_tensor and control.is_floating_point() and tuple(control.shape) == wanted):
            got = f"{control.dtype} of shape {tuple(control.shape)}" if is_tensor else type(control).__name__
            raise ValueError(
                f"control {got} does not fit this ControlNet; it needs a float tensor of shape "
                f"{wanted} (B, control channels, H, W) for input {tuple(x.shape)}"
            )


class ControlledUNet(nn.Module):
    """A frozen base UNet steered by a :class:`ControlBranch`:
    ``net(x, t, class_labels=None, *, control=None, control_scale=1.0, guess_mode=False)``.

    control=None (or every scale 0) is exactly ``base(x, t, class_labels)``. Otherwise the branch's
    residuals, times ``control_scale`` (one number, or one per residual: skip connections shallowest
    first, then the middle), are added to the base's skip connections and middle output. ``guess_mode``
    further scales them by 10^(−1 … 0), shallowest to deepest (diffusers' ControlNetModel; the paper's
    0.825^(12−i), §4.4) so that deep features carry the control; withholding the control from the
    unconditional half of classifier-free guidance, the other half of guess mode, is the caller's.
    The base is frozen (no gradients) and kept in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, base: UNet, branch: ControlBranch) -> None:
        super().__init__()
        if not isinstance(base, UNet):
            raise ValueError(f"a ControlNet steers a UNet; got {type(base).__name__}")
        if _structure(branch.config) != _structure(base.config):
            raise ValueError(
                "the control branch was made for another U-Net (its UNetConfig differs from the base's "
                "beyond dropout and gradient_checkpointing); make it with ControlBranch.from_base(base, …)"
            )
        self.base = base.requires_grad_(False).eval()
        self.branch = branch
        self.config = base.config

    def train(self, mode: bool = True) -> ControlledUNet:
        super().train(mode)
        self.base.eval()  # frozen: no dropout, no gradient checkpointing in the base
        return self

    def forward(
        self,
        x: Tensor,
        t: Tensor | int | float,
        class_labels: Tensor | None = None,
        *,
        control: Tensor | None = None,
        control_scale: float | Sequence[float] = 1.0,
        guess_mode: bool = False,
    ) -> Tensor:
        if control is None:
            return self.base(x, t, class_labels)
        scales = self.scales(control_scale, guess_mode)
        if not any(scales):
            self.branch.check_control(control, x)
            return self.base(x, t, class_labels)
        residuals = [s * r for s, r in zip(scales, self.branch(x, t, class_labels, control), strict=True)]
        return self.base(x, t, class_labels, skip_residuals=residuals[:-1], middle_residual=residuals[-1])

    def scales(self, control_scale: float | Sequence[float], guess_mode: bool = False) -> list[float]:
        """One multiplier per residual (skip connections shallowest first, then the middle)."""
        count = self.branch.num_residuals
        if _is_number(control_scale):
            values = [control_scale] * count
        else:  # a sequence of numbers; anything else fails the length check below
            values = list(control_scale) if isinstance(control_scale, (list, tuple)) else []
        if len(values) != count or not all(_is_number(v) and math.isfinite(v) for v in values):
            raise ValueError(
                f"control_scale {control_scale!r} is invalid; give one finite number or {count} "
                f"(one per skip connection, shallowest first, then the middle)"
            )
        if guess_mode:
            ramp = torch.logspace(-1, 0, count, dtype=torch.float64).tolist()
            values = [v * r for v, r in zip(values, ramp, strict=True)]
        return [float(v) for v in values]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _structure(config: UNetConfig) -> UNetConfig:
    """What fixes the parameter shapes: a config less its training-only switches."""
    return replace(config, dropout=0.0, gradient_checkpointing=False)
