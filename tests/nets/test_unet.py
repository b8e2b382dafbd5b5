"""The DDPM U-Net: shapes, gradients, dropout, conditioning, memory formats, input errors."""

from __future__ import annotations

import pytest
import torch

from ddpm.nets import UNet, UNetConfig


def small_config(**overrides) -> UNetConfig:
    """Two levels, attention at the lower one, a channel change: every code path in few ops."""
    fields = dict(
        in_channels=3, image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(8,), num_heads=2, dropout=0.0, num_groups=4,
    )  # fmt: skip
    fields.update(overrides)
    return UNetConfig(**fields)


def perturbed(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The paper's init makes every residual branch and the output (almost) zero; shake the weights so
    that outputs and gradients depend on every layer."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return net


@pytest.fixture(scope="module")
def net() -> UNet:
    torch.manual_seed(0)
    return perturbed(UNet(small_config())).eval()


@pytest.mark.parametrize(
    ("channels", "height", "width"),
    [(1, 8, 8), (3, 16, 16), (1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 16, 24)],
)
def test_output_shape_equals_input_shape(channels, height, width):
    # Two levels so that 28 (28 -> 14) is allowed; attention refers to image_size 8 -> level 1.
    config = small_config(in_channels=channels, image_size=8, base_channels=8, attention_resolutions=(4,))
    net = UNet(config).eval()
    x = torch.randn(2, channels, height, width)
    with torch.no_grad():
        assert net(x, torch.tensor([3, 999])).shape == x.shape


def test_out_channels_can_differ_from_in_channels():
    net = UNet(small_config(in_channels=1, out_channels=2))
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 16), 5).shape == (2, 2, 16, 16)


def test_initial_output_is_near_zero_as_in_the_paper():
    # conv_out starts at scale 1e-10 (init_scale=0 in diffusion_tf): the first prediction is ~0.
    net = UNet(small_config()).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16), 10).abs().max() < 1e-3


def test_every_parameter_gets_a_finite_nonzero_gradient():
    torch.manual_seed(1)
    net = perturbed(UNet(small_config(num_classes=3, dropout=0.1))).train()
    x = torch.randn(4, 3, 16, 16)
    # Labels 0..3 (3 is the null label) so that every row of the class embedding is used.
    net(x, torch.tensor([0, 250, 500, 999]), torch.tensor([0, 1, 2, 3])).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_unconditional_net_has_no_class_embedding():
    net = UNet(small_config())
    assert net.class_embedding is None
    assert not any("class" in name for name, _ in net.named_parameters())


def test_eval_mode_is_deterministic(net):
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))


def test_train_mode_dropout_makes_calls_differ():
    torch.manual_seed(2)
    net = perturbed(UNet(small_config(dropout=0.3))).train()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    with torch.no_grad():
        first, second = net(x, t), net(x, t)
        assert not torch.allclose(first, second, atol=1e-4)
        net.eval()
        assert torch.equal(net(x, t), net(x, t))


def test_timestep_changes_the_output(net):
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(net(x, 10), net(x, 900), atol=1e-4)


def test_scalar_timestep_matches_a_batch_of_indices(net):
    # Every form of t goes through broadcast_timesteps (tested in test_embeddings); one forward suffices.
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, 7.0), net(x, torch.full((3,), 7, dtype=torch.long)), rtol=0, atol=0)


def test_class_labels_change_the_output_and_null_label_is_accepted():
    torch.manual_seed(3)
    net = perturbed(UNet(small_config(num_classes=4))).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 100])
    with torch.no_grad():
        out_0 = net(x, t, torch.tensor([0, 0]))
        out_1 = net(x, t, torch.tensor([1, 1]))
        out_null = net(x, t, torch.tensor([4, 4]))
        assert not torch.allclose(out_0, out_1, atol=1e-4)
        assert not torch.allclose(out_0, out_null, atol=1e-4)
        # No labels on a conditional net means the null label: the unconditional output of CFG.
        torch.testing.assert_close(net(x, t), out_null, rtol=0, atol=0)


def test_channels_last_gives_the_same_output(net):
    x, t = torch.randn(2, 3, 16, 24), torch.tensor([5, 600])
    with torch.no_grad():
        expected = net(x, t)
        net_cl = UNet(net.config).eval()
        net_cl.load_state_dict(net.state_dict())
        net_cl = net_cl.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_runs_under_cpu_bfloat16_autocast(net):
    # Mixed precision is the trainer's choice; the net must only stay close to its float32 output.
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        expected = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert out.shape == x.shape
    assert (out.float() - expected).norm() / expected.norm() < 0.05


def test_batch_elements_are_independent(net):
    # GroupNorm normalises per sample: one image's output does not depend on its batch mates.
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([5, 50, 500])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t)[1:2], net(x[1:2], t[1:2]), rtol=1e-5, atol=1e-5)


def test_image_size_not_divisible_is_rejected():
    net = UNet(small_config(channel_mult=(1, 2, 2, 2)))  # the check runs before any layer
    with pytest.raises(ValueError, match=r"image size 30×30 cannot be halved 3 times; .* multiples of 8"):
        net(torch.randn(1, 3, 30, 30), 0)


def test_non_square_size_not_divisible_is_rejected(net):
    with pytest.raises(ValueError, match=r"image size 16×15 cannot be halved once; .* multiples of 2"):
        net(torch.randn(1, 3, 16, 15), 0)


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (3, 16, 16), (1, 3, 16, 16, 1)])
def test_input_of_wrong_shape_is_rejected(net, shape):
    with pytest.raises(ValueError, match=r"is not \(B, 3, H, W\) for this UNet"):
        net(torch.randn(shape), 0)


def test_timesteps_of_wrong_length_are_rejected(net):
    with pytest.raises(ValueError, match=r"timesteps of shape \(3,\) do not match batch size 2"):
        net(torch.randn(2, 3, 16, 16), torch.tensor([1, 2, 3]))


def test_class_labels_on_unconditional_net_are_rejected(net):
    with pytest.raises(ValueError, match="class_labels given to an unconditional UNet"):
        net(torch.randn(2, 3, 16, 16), 0, torch.tensor([0, 1]))


@pytest.mark.parametrize(("label", "bad"), [(5, "5"), (-1, "-1")])
def test_out_of_range_class_label_is_rejected(label, bad):
    net = UNet(small_config(num_classes=4))
    with pytest.raises(
        ValueError, match=rf"class label {bad} is out of range; allowed 0..3, or 4 for no label"
    ):
        net(torch.randn(2, 3, 16, 16), 0, torch.tensor([0, label]))


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0]), torch.tensor([0, 1, 2]), torch.tensor(1)])
def test_class_labels_of_wrong_type_or_shape_are_rejected(labels):
    net = UNet(small_config(num_classes=4))
    with pytest.raises(ValueError, match=r"class_labels must be an integer tensor of shape \(2,\)"):
        net(torch.randn(2, 3, 16, 16), 0, labels)


def test_submodule_names_follow_the_papers_code():
    names = {name for name, _ in UNet(small_config()).named_modules()}
    for expected in [
        "temb.dense.0", "conv_in", "down.0.block.0", "down.0.downsample", "down.1.attn.0", "mid.block_1",
        "mid.attn_1", "mid.block_2", "up.0.block.1", "up.1.attn.1", "up.1.upsample", "norm_out", "conv_out",
        "down.1.block.0.nin_shortcut",
    ]:  # fmt: skip
        assert expected in names, expected
    # No downsampling below the lowest level, no upsampling above the highest, no attention at level 0.
    assert "down.1.downsample.conv" not in names
    assert "up.0.upsample.conv" not in names
    assert "down.0.attn.0" not in names
