"""The first-stage objective of latent diffusion (Rombach et al. 2022, appendix G; LDM's
``ldm/modules/losses/contperceptual.py``: LPIPSWithDiscriminator), without the perceptual term: no
pretrained LPIPS network can be downloaded here.

Per sample:  L = L_rec + kl_weight · KL(q(z|x) ‖ N(0, I)) + λ · disc_weight · L_G  (after disc_start_steps)

- L_rec: l1_weight · Σ|x − x̂| + l2_weight · Σ(x − x̂)², summed over C, H, W as LDM sums its NLL, so that
  LDM's kl_weight of 1e-6 (also summed over the latent) keeps its meaning;
- L_G = −mean(D(x̂)) over the patch logits (hinge GAN, generator side);
- λ = ‖∇ L_rec‖ / (‖∇ L_G‖ + 1e-4) at the decoder's last layer, clamped to [0, 1e4]: the adaptive weight
  of Esser et al. 2021 (Taming Transformers, eq. 7) that balances the two gradients;
- discriminator, separately: ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂))) (hinge loss).

The caller owns the loop: it reduces the per-sample values (LDM takes the batch mean), steps the
autoencoder's optimizer on :meth:`AutoencoderLoss.__call__`'s total and the discriminator's on the hinge
loss, and keeps the generator's step from reaching the discriminator's weights (``ddpm.train.autoencoder_gan``
freezes them meanwhile, as Lightning's toggle_optimizer does for LDM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddpm.nets.autoencoder import DiagonalGaussian

ADAPTIVE_WEIGHT_EPS = 1e-4  # LDM's and taming's δ in eq. 7 (the paper writes 1e-6)
ADAPTIVE_WEIGHT_MAX = 1e4


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """Weights of the first-stage objective; the defaults are LDM's, with no perceptual term."""

    l1_weight: float = 1.0  # weight of Σ|x − x̂| over pixels (LDM's reconstruction loss)
    l2_weight: float = 0.0  # weight of Σ(x − x̂)² over pixels
    kl_weight: float = 1e-6  # weight of KL(q(z|x) ‖ N(0, I)), summed over the latent (LDM's kl_weight)
    disc_weight: float = 0.0  # weight of the adaptive-weighted hinge GAN term; 0 turns the GAN off (LDM: 0.5)
    disc_start_steps: int = 2000  # training steps before the GAN terms switch on (LDM's disc_start)
    disc_channels: int = 64  # channels of the patch discriminator's first layer
    disc_num_layers: int = 3  # stride-2 layers of the patch discriminator (3: 70×70 patches)

    def __post_init__(self) -> None:
        for name in ("l1_weight", "l2_weight", "kl_weight", "disc_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} {value!r} must be a number ≥ 0")
        if self.l1_weight == 0 and self.l2_weight == 0:
            raise ValueError("l1_weight and l2_weight are both 0; give a reconstruction loss a weight > 0")
        for name in ("disc_start_steps", "disc_channels", "disc_num_layers"):
            value, least = getattr(self, name), 0 if name == "disc_start_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} {value!r} must be an integer ≥ {least}")

    def gan_active(self, step: int) -> bool:
        """Whether the GAN terms count at training step ``step`` (LDM's adopt_weight)."""
        return self.disc_weight > 0 and step >= self.disc_start_steps


@dataclass(frozen=True)
class AutoencoderLossTerms:
    """The generator-side loss and its parts, one value per sample (B,) except the weight."""

    total: Tensor  # what the autoencoder's optimizer minimises (after the caller's mean)
    reconstruction: Tensor  # L_rec
    kl: Tensor  # KL(q(z|x) ‖ N(0, I)), unweighted
    gan: Tensor | None  # L_G, unweighted; None while the GAN is off
    gan_weight: float  # λ · disc_weight (0 while the GAN is off)


def reconstruction_loss(x: Tensor, recon: Tensor, l1_weight: float, l2_weight: float) -> Tensor:
    """l1_weight · Σ|x − x̂| + l2_weight · Σ(x − x̂)² per sample, summed over C, H, W."""
    diff = x - recon
    loss = torch.zeros(x.shape[0], dtype=diff.dtype, device=diff.device)
    if l1_weight:
        loss = loss + l1_weight * diff.abs().flatten(1).sum(dim=1)
    if l2_weight:
        loss = loss + l2_weight * diff.square().flatten(1).sum(dim=1)
    return loss


def adaptive_weight(rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor) -> Tensor:
    """λ = ‖∇_w L_rec‖ / (‖∇_w L_G‖ + δ), w the decoder's last layer (Esser et al. 2021, eq. 7), clamped
    to [0, 1e4] and detached. Scalar losses in; both graphs are kept for the backward that follows."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + ADAPTIVE_WEIGHT_EPS)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


def hinge_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂))) per sample (Lim & Ye 2017; taming's hinge_d_loss)."""
    real = torch.relu(1.0 - logits_real).flatten(1).mean(dim=1)
    fake = torch.relu(1.0 + logits_fake).flatten(1).mean(dim=1)
    return 0.5 * (real + fake)


def discriminator_loss(discriminator: nn.Module, x: Tensor, recon: Tensor) -> Tensor:
    """The discriminator's hinge loss per sample (B,); neither input carries gradient back."""
    return hinge_discriminator_loss(discriminator(x.detach()), discriminator(recon.detach()))


class AutoencoderLoss:
    """``AutoencoderLoss(config)(x, recon, posterior, step=…, discriminator=…, last_layer=…)``.

    ``discriminator`` and ``last_layer`` (``ae.decoder.last_layer``) are needed only once the GAN is on
    (:meth:`AutoencoderLossConfig.gan_active`). Without autograd (evaluation) λ cannot be measured and the
    GAN term is left out of the total, as LDM does.
    """

    def __init__(self, config: AutoencoderLossConfig | None = None) -> None:
        self.config = AutoencoderLossConfig() if config is None else config

    def __call__(
        self,
        x: Tensor,
        recon: Tensor,
        posterior: DiagonalGaussian,
        *,
        step: int = 0,
        discriminator: nn.Module | None = None,
        last_layer: Tensor | None = None,
    ) -> AutoencoderLossTerms:
        config = self.config
        rec = reconstruction_loss(x, recon, config.l1_weight, config.l2_weight)
        kl = posterior.kl()
        total = rec + config.kl_weight * kl
        if not config.gan_active(step):
            return AutoencoderLossTerms(total, rec, kl, None, 0.0)
        if discriminator is None or last_layer is None:
            raise ValueError(
                f"the GAN term is on at step {step} (disc_start_steps {config.disc_start_steps}); "
                "pass discriminator and last_layer, or set disc_weight 0"
            )
        gan = -discriminator(recon).flatten(1).mean(dim=1)  # hinge generator loss per sample
        if not (torch.is_grad_enabled() and rec.requires_grad and gan.requires_grad):
            return AutoencoderLossTerms(total, rec, kl, gan, 0.0)
        weight = adaptive_weight(rec.mean(), gan.mean(), last_layer) * config.disc_weight
        return AutoencoderLossTerms(total + weight * gan, rec, kl, gan, float(weight))
