"""A latent diffusion run as a diffusers ``LDMPipeline`` folder (Rombach et al. 2022; the layout of
CompVis/ldm-celebahq-256).

LDMPipeline (diffusers 0.42, ``pipelines/deprecated/latent_diffusion_uncond``) draws x_T with
``randn_tensor((B, unet.in_channels, unet.sample_size, unet.sample_size), generator)``, multiplies it by
the scheduler's ``init_noise_sigma``, runs ``scheduler.step(unet(x_t, t).sample, t, x_t, eta=eta)`` over
``scheduler.set_timesteps(num_inference_steps)``, then decodes ``vqvae.decode(x_0 /
vqvae.config.scaling_factor).sample`` and maps it to [0, 1] with ``(x / 2 + 0.5).clamp(0, 1)``. It passes
no class labels and no conditioning, and reads nothing else of ``vqvae``, so a diffusers
``AutoencoderKL`` (whose ``decode`` returns a ``DecoderOutput`` with ``.sample`` as ``VQModel``'s does)
works in the ``vqvae`` slot; the folder's ``model_index.json`` names that class.

Latent normalisation. Our diffusion model runs on z_norm = (z − mean_c) / std_c (per channel,
:mod:`ddpm.nets.latent_codec`); LDMPipeline only divides by one ``scaling_factor``, and ``latents_mean`` /
``latents_std`` in an AutoencoderKL config are read by no pipeline of this kind. So the normalisation
is folded into the exported autoencoder's 1×1 convolutions, exactly (both are affine per channel):

    post_quant_conv:  W' = W · diag(std),  b' = b + W · mean              (decodes z_norm as ours does)
    quant_conv:       mean rows W'/std, (b − mean)/std;  log σ² rows b − 2 log std   (encodes to z_norm)

and ``scaling_factor`` is 1: the exported autoencoder's latent space *is* the normalised one, for
decoding and for encoding (img2img-style use of ``pipe.vqvae.encode``) alike. The one inexactness: log σ²
is clamped to [−30, 20] after the shift rather than before, which moves σ only where it is below
e^−15 ≈ 3·10⁻⁷ (the mode is exact).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ddpm.interop.diffusers import (
    MODEL_INDEX_NAME,
    SCHEDULER_CONFIG_NAME,
    schedule_to_diffusers,
    write_json,
    write_unet,
)
from ddpm.interop.diffusers_model import check_exportable
from ddpm.interop.diffusers_vae import export_diffusers_vae
from ddpm.model import DiffusionModel
from ddpm.nets.autoencoder import AutoencoderKL
from ddpm.nets.latent_codec import LatentCodec

PIPELINE_CLASS = "LDMPipeline"
# Our spacings → DDIMScheduler's timestep_spacing. diffusers' DDIM steps from t to t − ⌊T/S⌋: our chain
# (to the next visited timestep) for "leading" at every S, for "trailing" when S divides T.
TIMESTEP_SPACINGS = {"uniform": "leading", "trailing": "trailing"}


def check_ldm_exportable(model: DiffusionModel) -> None:
    """Refuse, in one line, a latent model LDMPipeline cannot run as ours does."""
    if model.codec is None:
        raise ValueError("an LDMPipeline export needs a latent diffusion model (one with an autoencoder)")
    check_exportable(model)
    if model.num_classes is not None:
        raise ValueError(
            f"a class-conditional latent model ({model.num_classes} classes) cannot be exported: LDMPipeline "
            "calls its unet without class labels"
        )
    if model.spec.learned_variance:
        raise ValueError(
            "a learned-variance latent model cannot be exported: LDMPipeline's DDIMScheduler takes a unet "
            "of C output channels, not 2C (prediction and variance)"
        )


def folded_autoencoder(codec: LatentCodec) -> AutoencoderKL:
    """A copy of ``codec``'s autoencoder whose latent space is the normalised one: its decode(z_norm) is
    ``codec.decode(z_norm)`` and its posterior is ``codec.posterior`` (see the module's note)."""
    folded = copy.deepcopy(codec.autoencoder).float()
    mean, std = codec.mean.flatten().double(), codec.std.flatten().double()  # (c,)
    c = mean.numel()
    with torch.no_grad():
        post = folded.post_quant_conv
        weight = post.weight.double()[:, :, 0, 0]  # (c_out, c_in)
        post.bias.copy_(post.bias.double() + weight @ mean)  # b' = b + W·mean
        post.weight.copy_((weight * std)[:, :, None, None])  # W' = W·diag(std)
        quant = folded.quant_conv  # rows 0…c−1: the mean, c…2c−1: log σ² (LDM's order)
        weight, bias = quant.weight.double(), quant.bias.double()
        weight[:c] /= std[:, None, None, None]
        bias[:c] = (bias[:c] - mean) / std
        bias[c:] -= 2 * std.log()
        quant.weight.copy_(weight)
        quant.bias.copy_(bias)
    return folded.eval()


def ldm_scheduler_config(model: DiffusionModel) -> dict[str, Any]:
    """A DDIMScheduler ``scheduler_config.json`` of the model's β, parameterization and no x̂₀ clipping
    (normalised latents are unbounded: our latent runs sample unclipped), ending at ᾱ = 1 as our DDIM
    does (``set_alpha_to_one``), over the run's own spacing where DDIM has it, else ``leading``."""
    ddpm = schedule_to_diffusers(model.schedule, model.parameterization, None, model.spec.variance)
    del ddpm["variance_type"]  # DDIM has no variance of its own: η sets it
    spacing = TIMESTEP_SPACINGS.get(model.sampling.spacing or "uniform", "leading")
    return {**ddpm, "_class_name": "DDIMScheduler", "set_alpha_to_one": True, "timestep_spacing": spacing}


def export_ldm(model: DiffusionModel, folder: str | Path) -> Path:
    """Write ``folder`` in the layout ``LDMPipeline.from_pretrained`` loads: ``vqvae/`` (an AutoencoderKL
    with the latent normalisation folded in, ``scaling_factor`` 1), ``unet/`` (UNet2DModel),
    ``scheduler/`` (DDIMScheduler) and ``model_index.json``. Sampling it with ``eta=0`` and per-sample
    generators seeded as ours draws what ``model.sample(sampler="ddim", eta=0, eps_scale=1, spacing=…)``
    does (tests/interop/test_diffusers_ldm.py)."""
    check_ldm_exportable(model)
    scheduler_config = ldm_scheduler_config(model)
    folder = Path(folder)
    write_unet(model.net, model.spec.net, folder / "unet")
    export_diffusers_vae(folded_autoencoder(model.codec), folder / "vqvae")
    write_json(folder / "scheduler" / SCHEDULER_CONFIG_NAME, scheduler_config)
    model_index = {"_class_name": PIPELINE_CLASS, "scheduler": ["diffusers", "DDIMScheduler"],
                   "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "AutoencoderKL"]}  # fmt: skip
    write_json(folder / MODEL_INDEX_NAME, model_index)
    return folder
