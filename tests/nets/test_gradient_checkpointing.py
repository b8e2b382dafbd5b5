"""Gradient checkpointing of the U-Net: same outputs and gradients, fewer activations kept for backward."""

from __future__ import annotations

import dataclasses

import torch

from ddpm.nets import UNet
from tests.nets.test_unet import perturbed, small_config


def _forward_backward(
    config, seed: int = 0, train: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Output, parameter gradients, and bytes autograd keeps outside checkpointed blocks."""
    torch.manual_seed(0)
    net = perturbed(UNet(config)).train(train)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    kept = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(seed)  # dropout masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = net(x, torch.tensor([3, 700]))
    out.square().mean().backward()
    return out.detach(), {name: p.grad for name, p in net.named_parameters()}, sum(kept)


def test_checkpointing_gives_the_same_output_and_gradients_with_dropout():
    config = small_config(dropout=0.3)
    out, grads, kept = _forward_backward(config)
    out_ckpt, grads_ckpt, kept_ckpt = _forward_backward(
        dataclasses.replace(config, gradient_checkpointing=True)
    )
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=0)  # dropout masks replayed exactly
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert kept_ckpt < 0.5 * kept, (kept_ckpt, kept)


def test_checkpointing_is_off_in_eval_mode():
    config = small_config()
    _, _, kept = _forward_backward(config, train=False)
    _, _, kept_ckpt = _forward_backward(dataclasses.replace(config, gradient_checkpointing=True), train=False)
    assert kept_ckpt == kept
