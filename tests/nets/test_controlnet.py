"""ControlNet: the controlled net starts as the base bit for bit, learns only in its branch, and refuses
controls that do not fit (Zhang, Rao & Agrawala 2023)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from ddpm.nets import ControlBranch, ControlledUNet, ControlNetConfig, UNet
from tests.nets.test_unet import perturbed, small_config


def make_net(seed: int = 0, control: ControlNetConfig | None = None, **unet) -> ControlledUNet:
    torch.manual_seed(seed)
    base = perturbed(UNet(small_config(**unet)), seed=seed)  # outputs depend on every layer
    config = ControlNetConfig() if control is None else control
    return ControlledUNet(base, ControlBranch.from_base(base, config))


def inputs(batch: int = 3, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator), torch.tensor([0, 400, 999])[:batch]


def random_control(shape: tuple[int, ...], seed: int = 2) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def weights_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def train_branch(net: ControlledUNet, steps: int, lr: float = 0.05) -> torch.Tensor:
    """``steps`` SGD steps on the branch alone (a regression to a fixed target); the last loss."""
    x, t = inputs()
    control, target = random_control((3, 1, 16, 16)), torch.randn(3, 3, 16, 16)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (net(x, t, control=control) - target).square().mean()
        loss.backward()
        optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("num_classes", [None, 4])
@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0, "per_residual", "guess"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_at_initialisation_the_controlled_net_is_the_base_bit_for_bit(num_classes, scale, mode):
    net = make_net(num_classes=num_classes)
    x, t = inputs()
    labels = None if num_classes is None else torch.tensor([0, 3, 4])  # 4: the null label
    control = random_control((3, 1, 16, 16))
    options = {"control_scale": 1.0, "guess_mode": scale == "guess"}
    if isinstance(scale, float):
        options["control_scale"] = scale
    elif scale == "per_residual":
        options["control_scale"] = [0.5 + i for i in range(net.branch.num_residuals)]
    getattr(net, mode)()
    with torch.no_grad():
        expected = net.base(x, t, labels)
        got = net(x, t, labels, control=control, **options)
    assert torch.equal(got, expected)
    assert expected.abs().mean() > 0.1  # a real output, not a trivially zero one
    with torch.no_grad():  # exact zeros, not merely too small to show in float32 sums
        residuals = net.branch(x, t, labels, control)
    assert all(torch.count_nonzero(r) == 0 for r in residuals)


def test_the_branch_starts_as_a_copy_of_the_base_encoder_in_its_own_tensors():
    net = make_net()
    base = net.base.state_dict()
    copied = {name: value for name, value in net.branch.state_dict().items() if name in base}
    assert {name.split(".")[0] for name in copied} == {"temb", "conv_in", "down", "mid"}
    for name, value in copied.items():
        assert torch.equal(value, base[name]), name
        assert value.data_ptr() != base[name].data_ptr(), name


def test_base_is_frozen_and_stays_in_eval_mode():
    net = make_net(dropout=0.3).train()
    assert not net.base.training and net.branch.training
    assert not any(p.requires_grad for p in net.base.parameters())
    assert all(p.requires_grad for p in net.branch.parameters())


def test_training_moves_the_branch_and_never_the_base():
    net = make_net()
    before, base_hash = [p.detach().clone() for p in net.branch.parameters()], weights_hash(net.base)
    x, t = inputs()
    control = random_control((3, 1, 16, 16))
    with torch.no_grad():
        initial = net.eval()(x, t, control=control)
    train_branch(net, steps=1)
    # Step 1 moved only the zero convs (everything before them saw a zero weight downstream) ...
    moved = {
        n for (n, p), b in zip(net.branch.named_parameters(), before, strict=True) if not torch.equal(p, b)
    }
    assert moved and all(n.startswith(("zero_convs.", "middle_out.")) for n in moved), moved
    with torch.no_grad():
        after = net.eval()(x, t, control=control)
        other = net(x, t, control=random_control((3, 1, 16, 16), seed=9))
    assert not torch.equal(after, initial)
    assert torch.equal(net(x, t), initial)  # without a control: still the base
    assert torch.equal(other, after)  # the hint encoder's own zero conv still hides the control
    # ... two more steps open the whole branch, the hint encoder last (its own zero conv first).
    train_branch(net, steps=2)
    for name, p in net.branch.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    for p in net.base.parameters():
        assert p.grad is None
    assert weights_hash(net.base) == base_hash
    with torch.no_grad():
        a = net.eval()(x, t, control=control)
        b = net(x, t, control=random_control((3, 1, 16, 16), seed=9))
    assert not torch.equal(a, b)  # the output now depends on the control image


def test_control_scale_zero_and_no_control_are_the_base_after_training():
    net = make_net()
    train_branch(net, steps=3)
    x, t = inputs()
    control = random_control((3, 1, 16, 16))
    with torch.no_grad():
        base = net.base(x, t)
        assert torch.equal(net.eval()(x, t, control=control, control_scale=0.0), base)
        assert torch.equal(net(x, t, control=control, control_scale=[0.0] * net.branch.num_residuals), base)
        assert torch.equal(net(x, t), base)
        assert not torch.equal(net(x, t, control=control), base)
    calls = []
    net.branch.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net(x, t, control=control, control_scale=0.0)
    assert not calls  # a zero scale does not run the branch at all


def test_control_scale_scales_the_residuals_linearly():
    net = make_net()
    train_branch(net, steps=3)
    x, t = inputs()
    control = random_control((3, 1, 16, 16))
    residuals = net.branch.eval()(x, t, None, control)
    with torch.no_grad():
        half = net.eval()(x, t, control=control, control_scale=0.5)
        manual = net.base(
            x, t, skip_residuals=[0.5 * r for r in residuals[:-1]], middle_residual=0.5 * residuals[-1]
        )
    torch.testing.assert_close(half, manual, rtol=0, atol=0)


def test_guess_mode_ramps_scales_from_a_tenth_to_one():
    net = make_net()
    scales = net.scales(2.0, guess_mode=True)
    assert len(scales) == net.branch.num_residuals
    assert scales[0] == pytest.approx(0.2) and scales[-1] == pytest.approx(2.0)
    assert scales == sorted(scales)
    assert net.scales(2.0) == [2.0] * net.branch.num_residuals


def test_hint_downsample_reads_a_larger_control_image():
    # A latent run: the control image is at pixel resolution, f times the latent's.
    net = make_net(control=ControlNetConfig(control_channels=3, hint_channels=(8, 16, 16), hint_downsample=4))
    x, t = inputs(batch=2)
    with torch.no_grad():
        out = net.eval()(x, t, control=random_control((2, 3, 64, 64)))
        assert torch.equal(out, net.base(x, t))
    with pytest.raises(ValueError, match=r"needs a float tensor of shape \(2, 3, 64, 64\)"):
        net(x, t, control=random_control((2, 3, 16, 16)))


def test_gradient_checkpointing_gives_the_same_branch_gradients():
    grads = []
    for checkpointing in (False, True):
        net = make_net(gradient_checkpointing=checkpointing)
        train_branch(net, steps=3)
        grads.append({n: p.grad.clone() for n, p in net.branch.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("control", "match"),
    [
        (random_control((3, 3, 16, 16)), r"control torch.float32 of shape \(3, 3, 16, 16\) does not fit"),
        (random_control((3, 1, 8, 8)), r"needs a float tensor of shape \(3, 1, 16, 16\)"),
        (random_control((2, 1, 16, 16)), r"shape \(2, 1, 16, 16\) does not fit"),
        (torch.zeros(3, 1, 16, 16, dtype=torch.uint8), r"control torch.uint8 of shape"),
        ([[0.0]], r"control list does not fit"),
    ],
)
def test_controls_that_do_not_fit_are_refused(control, match):
    net = make_net().eval()
    x, t = inputs()
    with pytest.raises(ValueError, match=match):
        net(x, t, control=control)
    with pytest.raises(ValueError, match=match):  # also where the branch is skipped
        net(x, t, control=control, control_scale=0.0)


@pytest.mark.parametrize(
    ("scale", "match"),
    [
        ([1.0, 2.0], r"control_scale \[1.0, 2.0\] is invalid; give one finite number or \d+"),
        (float("nan"), r"control_scale nan is invalid"),
        (True, r"control_scale True is invalid"),
    ],
)
def test_bad_control_scales_are_refused(scale, match):
    net = make_net().eval()
    x, t = inputs()
    with pytest.raises(ValueError, match=match):
        net(x, t, control=random_control((3, 1, 16, 16)), control_scale=scale)


def test_a_branch_of_another_unet_is_refused():
    base = UNet(small_config())
    other = ControlBranch(small_config(base_channels=8), ControlNetConfig())
    with pytest.raises(ValueError, match="the control branch was made for another U-Net"):
        ControlledUNet(base, other)
    # dropout and gradient checkpointing do not change the weights' shapes: allowed
    same = ControlBranch(
        dataclasses.replace(base.config, dropout=0.3, gradient_checkpointing=True), ControlNetConfig()
    )
    ControlledUNet(base, same)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"control_channels": 0}, r"control_channels 0 must be a positive integer"),
        ({"hint_channels": ()}, r"hint_channels is empty"),
        ({"hint_channels": (16, -1)}, r"hint_channels entry -1 must be a positive integer"),
        ({"hint_downsample": 3}, r"hint_downsample 3 is not a power of 2"),
        ({"hint_downsample": 4}, r"hint_downsample 4 needs at least 3 hint_channels stages.*got 2"),
    ],
)
def test_config_errors_name_the_bad_value(fields, match):
    with pytest.raises(ValueError, match=match):
        ControlNetConfig(**fields)


def test_unet_residuals_hook():
    net = perturbed(UNet(small_config())).eval()
    x, t = inputs()
    with torch.no_grad():
        plain = net(x, t)
        hs, h = net.encode(x, net.embed(t, None, x))
        zeros = [torch.zeros_like(s) for s in hs]
        assert torch.equal(net(x, t, skip_residuals=zeros, middle_residual=torch.zeros_like(h)), plain)
        assert not torch.equal(net(x, t, middle_residual=torch.ones_like(h)), plain)
        assert not torch.equal(net(x, t, skip_residuals=[torch.ones_like(s) for s in hs]), plain)
    with pytest.raises(
        ValueError, match=rf"2 skip residuals given; this UNet has {len(hs)} skip connections"
    ):
        net(x, t, skip_residuals=zeros[:2])
