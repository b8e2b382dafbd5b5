"""The residual MLP denoiser for 2-D points."""

from __future__ import annotations

import pytest
import torch

from ddpm.nets import MLPConfig, MLPDenoiser, count_parameters


def perturbed(net: torch.nn.Module) -> torch.nn.Module:
    # The output layer and every residual branch start at scale 1e-10 (as the U-Net); shake them.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return net


def test_output_shape_equals_input_shape():
    for dim in (2, 5):
        net = MLPDenoiser(MLPConfig(dim=dim, hidden_dim=32, num_layers=2, time_embed_dim=16))
        assert net(torch.randn(7, dim), torch.randint(0, 1000, (7,))).shape == (7, dim)


def test_default_config_size():
    # 4 residual blocks of width 128 with a 128-dim sinusoidal time embedding.
    assert count_parameters(MLPDenoiser(MLPConfig())) == 233_090


def test_initial_output_is_near_zero():
    net = MLPDenoiser(MLPConfig())
    assert net(torch.randn(5, 2), 10).abs().max() < 1e-3


def test_every_parameter_gets_a_finite_nonzero_gradient():
    torch.manual_seed(0)
    net = perturbed(MLPDenoiser(MLPConfig(hidden_dim=32, num_layers=2, num_classes=2, dropout=0.1))).train()
    net(torch.randn(6, 2), torch.arange(6) * 150, torch.tensor([0, 1, 2, 0, 1, 2])).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_time_and_class_change_the_output_and_eval_is_deterministic():
    torch.manual_seed(1)
    net = perturbed(MLPDenoiser(MLPConfig(hidden_dim=32, num_layers=2, num_classes=3))).eval()
    x = torch.randn(4, 2)
    with torch.no_grad():
        base = net(x, 5, torch.tensor([0, 0, 0, 0]))
        assert torch.equal(base, net(x, 5, torch.tensor([0, 0, 0, 0])))
        assert not torch.allclose(base, net(x, 900, torch.tensor([0, 0, 0, 0])), atol=1e-4)
        assert not torch.allclose(base, net(x, 5, torch.tensor([1, 1, 1, 1])), atol=1e-4)
        torch.testing.assert_close(net(x, 5), net(x, 5, torch.tensor([3, 3, 3, 3])), rtol=0, atol=0)


def test_dropout_makes_training_calls_differ():
    torch.manual_seed(2)
    net = perturbed(MLPDenoiser(MLPConfig(hidden_dim=32, num_layers=2, dropout=0.5))).train()
    x = torch.randn(4, 2)
    with torch.no_grad():
        assert not torch.allclose(net(x, 5), net(x, 5), atol=1e-4)


def test_input_of_wrong_shape_is_rejected():
    net = MLPDenoiser(MLPConfig())
    with pytest.raises(ValueError, match=r"input of shape \(4, 3\) is not \(B, 2\) for this MLPDenoiser"):
        net(torch.randn(4, 3), 0)


def test_class_labels_on_unconditional_mlp_are_rejected():
    net = MLPDenoiser(MLPConfig())
    with pytest.raises(ValueError, match="class_labels given to an unconditional MLPDenoiser"):
        net(torch.randn(2, 2), 0, torch.tensor([0, 1]))


def test_out_of_range_class_label_is_rejected():
    net = MLPDenoiser(MLPConfig(num_classes=2))
    with pytest.raises(ValueError, match=r"class label 3 is out of range; allowed 0..1, or 2 for no label"):
        net(torch.randn(2, 2), 0, torch.tensor([0, 3]))
