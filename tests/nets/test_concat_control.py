"""The concat-control U-Net, ControlNet's baseline (issue 21): its input is [x_t, control] on channels, its
output x_t's prediction; no control is the blank control; controls that do not fit are refused in one line."""

from __future__ import annotations

import pytest
import torch

from ddpm.nets import UNet
from ddpm.nets.concat_control import BLANK, ConcatControlUNet
from tests.nets.test_controlnet import inputs, random_control
from tests.nets.test_unet import perturbed, small_config


def make_net(control_channels: int = 1, **unet) -> ConcatControlUNet:
    torch.manual_seed(0)
    return perturbed(ConcatControlUNet(small_config(**unet), control_channels))


def test_the_input_holds_image_and_control_channels_and_the_output_the_images():
    net = make_net(control_channels=2)
    assert net.conv_in.in_channels == net.config.in_channels == 3 + 2 and net.image_channels == 3
    x, t = inputs()
    assert net(x, t, control=random_control((3, 2, 16, 16))).shape == x.shape
    learned = ConcatControlUNet(small_config(out_channels=6), 1)  # a learned variance: 2 C out, C + 1 in
    assert (learned.conv_in.in_channels, learned.conv_out.out_channels) == (4, 6)
    # its weights are a plain UNet's of the widened config: a state dict loads into one and back
    assert UNet(net.config).load_state_dict(net.state_dict()) is not None


def test_the_control_changes_the_output_and_none_is_the_blank_control():
    net, (x, t) = make_net(), inputs()
    control = random_control((3, 1, 16, 16))
    with torch.no_grad():
        steered, dropped = net(x, t, control=control), net(x, t)
        assert torch.equal(dropped, net(x, t, control=torch.full_like(control, BLANK)))
        assert (steered - dropped).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample reads its control
        # exactly a UNet over the concatenation
        plain = UNet(net.config)
        plain.load_state_dict(net.state_dict())
        assert torch.equal(steered, plain(torch.cat([x, control], dim=1), t))


@pytest.mark.parametrize(
    "control, message",
    [
        (torch.zeros(3, 2, 16, 16), r"control \(3, 2, 16, 16\) does not fit .* shape \(3, 1, 16, 16\)"),
        (torch.zeros(3, 1, 8, 8), r"control \(3, 1, 8, 8\) does not fit"),
        (torch.zeros(2, 1, 16, 16), r"control \(2, 1, 16, 16\) does not fit"),
        (torch.zeros(3, 1, 16, 16, dtype=torch.long), r"control \(3, 1, 16, 16\) does not fit .* float"),
        ("edges.png", r"control str does not fit"),
    ],
)
def test_controls_that_do_not_fit_are_refused_in_one_line(control, message):
    x, t = inputs()
    with pytest.raises(ValueError, match=message) as error:
        make_net()(x, t, control=control)
    assert "\n" not in str(error.value)


def test_bad_inputs_and_channels_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"input of shape \(3, 4, 16, 16\) is not \(B, 3, H, W\)"):
        make_net()(torch.zeros(3, 4, 16, 16), torch.zeros(3))
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match=rf"control_channels {bad!r} must be a positive integer"):
            ConcatControlUNet(small_config(), bad)
