"""The honest baseline beside ControlNet (issue 21): one U-Net trained from scratch whose input is the noisy
image with its control image concatenated on channels, as SR3 (Saharia et al. 2021) and Palette (Saharia et
al. 2022) condition on an image, and as ControlNet's paper compares against ("trained from scratch" with the
condition as extra input channels, Zhang, Rao & Agrawala 2023 §4).

    net = ConcatControlUNet(UNetConfig(in_channels=1, ...), control_channels=1)  # conv_in reads 1 + 1
    eps = net(x_t, t, class_labels, control=edges)  # control=None: the blank control, all −1

Unlike a ControlNet it reuses nothing: every control kind is a new network trained from the first step, and
there is no strength knob. Training blanks a share of the controls (control.drop_rate) to :data:`BLANK`, the
value a ControlNet run blanks its controls to, so the same network is also the model without control.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ddpm.nets.configs import UNetConfig
from ddpm.nets.unet import UNet

BLANK = -1.0  # the dropped ("no control") control image: all −1 (black), as a ControlNet run blanks it


class ConcatControlUNet(UNet):
    """``net(x, t, class_labels=None, *, control=None)``: a :class:`UNet` over [x, control] (B, C + c, H, W)
    → x's prediction (B, C_out, H, W). Built from the images' UNetConfig (``in_channels`` = C, as a plain
    run's): its own ``config`` reads C + c channels and still predicts C_out; its weights are a plain
    UNet's of that config."""

    def __init__(self, config: UNetConfig, control_channels: int) -> None:
        positive = isinstance(control_channels, int) and not isinstance(control_channels, bool)
        if not (positive and control_channels > 0):
            raise ValueError(f"control_channels {control_channels!r} must be a positive integer")
        out_channels = config.resolved_out_channels  # the images' prediction, not the input's width
        super().__init__(replace(config, in_channels=config.in_channels + control_channels,
                                 out_channels=out_channels))  # fmt: skip
        self.control_channels = control_channels

    @property
    def image_channels(self) -> int:
        """Channels of x (and of the prediction, without a learned variance)."""
        return self.config.in_channels - self.control_channels

    def forward(
        self, x: Tensor, t: Tensor | int | float, class_labels: Tensor | None = None, *,
        control: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """x: (B, C, H, W); control: float (B, c, H, W) in [-1, 1], or None for the blank control."""
        if x.ndim != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"input of shape {tuple(x.shape)} is not (B, {self.image_channels}, H, W) for "
                             "this concat-control UNet")  # fmt: skip
        wanted = (x.shape[0], self.control_channels, x.shape[2], x.shape[3])
        if control is None:
            control = x.new_full(wanted, BLANK)
        elif not (isinstance(control, Tensor) and control.is_floating_point() and control.shape == wanted):
            got = tuple(control.shape) if isinstance(control, Tensor) else type(control).__name__
            raise ValueError(f"control {got} does not fit this concat-control UNet; it needs a float tensor "
                             f"of shape {wanted} (B, control channels, H, W) for input "
                             f"{tuple(x.shape)}")  # fmt: skip
        return super().forward(torch.cat([x, control.to(x.dtype)], dim=1), t, class_labels)
