"""The first-stage objective: reconstruction sums, the KL weight, the hinge losses, Esser et al.'s adaptive
weight against its definition, the GAN's switch-on step, and the config's one-line errors."""

from __future__ import annotations

import pytest
import torch

from ddpm.nets import AutoencoderConfig, AutoencoderKL, DiagonalGaussian
from ddpm.nets.discriminator import NLayerDiscriminator
from ddpm.train.autoencoder_loss import (
    AutoencoderLoss,
    AutoencoderLossConfig,
    adaptive_weight,
    discriminator_loss,
    hinge_discriminator_loss,
    reconstruction_loss,
)


def test_reconstruction_sums_l1_and_l2_over_pixels_per_sample():
    x = torch.zeros(2, 1, 2, 2)
    recon = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.5, 0.5, 0.5, 0.5]]).view(2, 1, 2, 2)
    assert reconstruction_loss(x, recon, 1.0, 0.0).tolist() == [4.0, 2.0]
    assert reconstruction_loss(x, recon, 0.0, 1.0).tolist() == [6.0, 1.0]
    assert reconstruction_loss(x, recon, 0.5, 2.0).tolist() == [14.0, 3.0]


def test_total_is_reconstruction_plus_weighted_kl_while_the_gan_is_off():
    generator = torch.Generator().manual_seed(0)
    x, recon = torch.randn(3, 1, 4, 4, generator=generator), torch.randn(3, 1, 4, 4, generator=generator)
    posterior = DiagonalGaussian(torch.randn(3, 2, 2, 2, generator=generator), torch.zeros(3, 2, 2, 2))
    terms = AutoencoderLoss()(x, recon, posterior, step=10**6)  # disc_weight 0: never on
    expected_rec = (x - recon).abs().sum(dim=(1, 2, 3))
    expected_kl = 0.5 * posterior.mean.square().sum(dim=(1, 2, 3))  # σ = 1: ½ Σ μ²
    torch.testing.assert_close(terms.reconstruction, expected_rec)
    torch.testing.assert_close(terms.kl, expected_kl)
    torch.testing.assert_close(terms.total, expected_rec + 1e-6 * expected_kl)
    assert terms.gan is None and terms.gan_weight == 0.0


def test_hinge_discriminator_loss_per_sample():
    real = torch.tensor([2.0, 0.0, -1.0]).view(3, 1, 1, 1)
    fake = torch.tensor([-2.0, 0.0, 1.0]).view(3, 1, 1, 1)
    # ½ (relu(1 − real) + relu(1 + fake)): confident and right → 0; undecided → 1; wrong → 2
    assert hinge_discriminator_loss(real, fake).tolist() == [0.0, 1.0, 2.0]


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    # ∇(a·w) = a, ∇(b·w) = b: λ = ‖a‖ / (‖b‖ + 1e-4) = 5 / 1.0001
    weight = adaptive_weight((a * w).sum(), (b * w).sum(), w)
    assert weight.item() == pytest.approx(5 / 1.0001, rel=1e-6) and not weight.requires_grad
    # a GAN loss with no gradient there would give 5 / 1e-4: clamped to 1e4
    assert adaptive_weight((a * w).sum(), (0 * w).sum(), w).item() == 1e4


def tiny_models():
    torch.manual_seed(0)
    config = AutoencoderConfig(in_channels=1, image_size=16, block_out_channels=(8, 8), norm_num_groups=4)
    return AutoencoderKL(config), NLayerDiscriminator(in_channels=1, base_channels=8, num_layers=1)


def test_the_gan_term_switches_on_at_disc_start_steps_with_the_adaptive_weight():
    ae, disc = tiny_models()
    loss = AutoencoderLoss(AutoencoderLossConfig(disc_weight=0.5, disc_start_steps=100))
    x = torch.randn(2, 1, 16, 16)
    recon, posterior = ae(x, generator=torch.Generator().manual_seed(0))
    kwargs = dict(discriminator=disc, last_layer=ae.decoder.last_layer)
    before = loss(x, recon, posterior, step=99, **kwargs)
    assert before.gan is None and before.gan_weight == 0.0
    after = loss(x, recon, posterior, step=100, **kwargs)
    gan = -disc(recon).flatten(1).mean(dim=1)
    expected_weight = 0.5 * adaptive_weight(after.reconstruction.mean(), gan.mean(), ae.decoder.last_layer)
    torch.testing.assert_close(after.gan, gan)
    assert after.gan_weight == pytest.approx(expected_weight.item(), rel=1e-5) and after.gan_weight > 0
    torch.testing.assert_close(after.total, before.total + after.gan_weight * gan)
    after.total.mean().backward()  # the GAN term reaches the decoder
    assert ae.decoder.last_layer.grad.abs().sum() > 0


def test_without_autograd_the_gan_term_is_measured_but_left_out():
    ae, disc = tiny_models()
    loss = AutoencoderLoss(AutoencoderLossConfig(disc_weight=0.5, disc_start_steps=0))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        recon, posterior = ae(x, sample_posterior=False)
        terms = loss(x, recon, posterior, discriminator=disc, last_layer=ae.decoder.last_layer)
    assert terms.gan is not None and terms.gan_weight == 0.0
    torch.testing.assert_close(terms.total, terms.reconstruction + 1e-6 * terms.kl)


def test_the_discriminator_loss_sends_no_gradient_to_the_autoencoder():
    ae, disc = tiny_models()
    x = torch.randn(2, 1, 16, 16)
    recon, _ = ae(x)
    d_loss = discriminator_loss(disc, x, recon)
    assert d_loss.shape == (2,)
    d_loss.mean().backward()
    assert all(p.grad is None for p in ae.parameters())
    assert all(p.grad is not None for p in disc.parameters())


def test_a_gan_without_its_discriminator_is_refused_in_one_line():
    ae, _ = tiny_models()
    loss = AutoencoderLoss(AutoencoderLossConfig(disc_weight=0.5, disc_start_steps=10))
    x = torch.randn(1, 1, 16, 16)
    recon, posterior = ae(x)
    loss(x, recon, posterior, step=9)  # still off: nothing needed
    message = r"^the GAN term is on at step 10 \(disc_start_steps 10\); pass discriminator and last_layer, or"
    with pytest.raises(ValueError, match=message):
        loss(x, recon, posterior, step=10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(kl_weight=-1e-6), r"^kl_weight -1e-06 must be a number ≥ 0$"),
        (
            dict(l1_weight=0.0),
            r"^l1_weight and l2_weight are both 0; give a reconstruction loss a weight > 0$",
        ),
        (dict(disc_start_steps=-1), r"^disc_start_steps -1 must be an integer ≥ 0$"),
        (dict(disc_num_layers=0), r"^disc_num_layers 0 must be an integer ≥ 1$"),
        (dict(disc_weight=float("nan")), r"^disc_weight nan must be a number ≥ 0$"),
    ],
)
def test_bad_loss_configs_are_refused_in_one_line(overrides, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderLossConfig(**overrides)
