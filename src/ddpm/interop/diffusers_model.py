"""A diffusers folder as the one model object, and the model object as a diffusers folder.

from ddpm.interop.diffusers_model import from_diffusers
model = from_diffusers("ddpm-cifar10-32")     # either layout (see ddpm.interop.diffusers)
images = model.sample(16)                      # its own sampler: DDIM, η = 0, 50 steps
images = model.sample(16, sampler="ddpm")      # DDPMPipeline's loop: all T steps, the folder's variance

The imported model is a :class:`~ddpm.model.DiffusionModel` like any trained run's, so every sampler,
editing operation and command works on it through the same sampling path. An LDMPipeline folder (our
latent export, ``ddpm export LATENT_RUN``) imports as a latent model: its ``vqvae`` is the codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddpm.diffusion import NoiseSchedule, make_schedule
from ddpm.interop.diffusers import export_diffusers, load_diffusers_pipeline
from ddpm.interop.diffusers_vae import ldm_codec
from ddpm.model import DiffusionModel, ModelSpec, SamplingConfig
from ddpm.nets.configs import UNetConfig
from ddpm.nets.latent_codec import LatentCodec
from ddpm.nets.unet import UNet

# The sampler a diffusers folder draws with unless told otherwise. DDPMPipeline's own default is all T
# ancestral steps (1000 network calls per image); DDIM with 50 steps is 20 times cheaper at a small cost
# in quality (Song et al. 2021, Table 1, on this very CIFAR-10 model: FID 4.67 against 3.17), and what
# DDIMPipeline runs by default. ``sampler="ddpm"`` reproduces DDPMPipeline.
DEFAULT_SAMPLER, DEFAULT_STEPS = "ddim", 50
# diffusers' timestep_spacing → ours (``leading`` with steps_offset=0 is our ``uniform``).
SPACINGS = {"leading": "uniform", "trailing": "trailing"}
SCHEDULE_NAMES = ("linear", "cosine", "sigmoid")  # ours, recognised by their β
# Issue 21: no lossy ControlNet export (our branch and base stay in our own format).
CONTROL_REFUSAL = (
    "a ControlNet run cannot be exported to diffusers: its ControlNetModel pairs only with "
    "UNet2DConditionModel, whose middle block cannot hold our U-Net's attention middle (diffusers issue "
    "5861), so the run directory (safetensors + TOML) is the format; share that instead"
)
CONCAT_REFUSAL = (
    "a concat control run cannot be exported to diffusers: its U-Net reads the control image beside x_t, "
    "which no diffusers pipeline feeds it (DDPMPipeline gives it noise alone), so the run directory "
    "(safetensors + TOML) is the format; share that instead"
)
IMAGE_CLIP = 1.0  # our image models sample with x̂₀ clipped to [−1, 1]: exported as clip_sample


def default_sampling(extra: dict[str, Any], num_steps: int) -> SamplingConfig:
    """DDIM, η = 0, 50 steps (fewer when T is smaller), over the scheduler's timestep spacing where ours
    has it (``leading`` → ``uniform``, ``trailing``), else DDIM's default."""
    spacing = SPACINGS.get(extra.get("timestep_spacing", "leading"))
    if spacing == "uniform" and extra.get("steps_offset", 0) != 0:
        spacing = None  # diffusers' leading + offset visits t + offset: not one of ours
    return SamplingConfig(DEFAULT_SAMPLER, steps=min(DEFAULT_STEPS, num_steps), spacing=spacing)


def schedule_name(schedule: NoiseSchedule, recipe: str) -> str:
    """Our schedule's name when the β are exactly one of ours at this T, else ``diffusers:<recipe>``
    (the schedule object travels with the model; the name is what reports print)."""
    for name in SCHEDULE_NAMES:
        ours = make_schedule(name, schedule.num_steps).betas
        if torch.allclose(schedule.betas, ours, rtol=1e-12, atol=0):
            return name
    return f"diffusers:{recipe}"


def from_diffusers(folder: str | Path, *, device: str | torch.device = "cpu") -> DiffusionModel:
    """The model of a diffusers DDPM folder (either layout), or of an LDMPipeline folder (a latent model
    whose codec is its ``vqvae``: :func:`ddpm.interop.diffusers_vae.ldm_codec`), in eval mode on ``device``.

    Its sampling defaults are :func:`default_sampling`'s; the ancestral (ddpm) sampler uses the folder's
    variance_type (fixed_large → σ² = β, fixed_small → β̃, learned_range → the net's own). A folder
    holds one set of weights (the published ones are the EMA weights), so there is no raw/EMA choice.
    """
    net, schedule, parameterization, extra = load_diffusers_pipeline(folder)
    config = extra["unet_config"]
    codec = None if extra["vqvae_dir"] is None else ldm_codec(extra["vqvae_dir"])
    spec = ModelSpec(
        net=config,
        schedule=schedule_name(schedule, extra["beta_schedule"]),
        num_steps=schedule.num_steps,
        parameterization=parameterization,
        sample_shape=image_shape(config, codec),
        kind="images",
        sampling=default_sampling(extra, schedule.num_steps),
        learned_variance=extra["learned_variance"],
        variance=extra["variance"],
    )
    if codec is not None:
        codec.to(device)
    return DiffusionModel(net=net.to(device).eval(), spec=spec, schedule=schedule, codec=codec)


def image_shape(config: UNetConfig, codec: LatentCodec | None) -> tuple[int, int, int]:
    """(C, H, W) of the images a folder draws: the U-Net's, or for a latent model its autoencoder's, whose
    latents must be what the U-Net denoises (LDMPipeline draws x_T at the U-Net's size)."""
    unet_shape = (config.in_channels, config.image_size, config.image_size)
    if codec is None:
        return unet_shape
    ae = codec.autoencoder.config
    images = (ae.in_channels, ae.image_size, ae.image_size)
    if codec.latent_shape(images) != unet_shape:
        raise ValueError(
            f"the vqvae encodes {ae.image_size}×{ae.image_size} images to latents of shape "
            f"{codec.latent_shape(images)}, but the unet denoises {unet_shape} (in_channels, sample_size): "
            "they must agree"
        )
    return images


def check_exportable(model: DiffusionModel) -> None:
    """Refuse, in one line, a model diffusers' UNet2DModel cannot hold, and any ControlNet run."""
    if model.spec.control is not None:
        raise ValueError(CONCAT_REFUSAL if model.spec.control.concat else CONTROL_REFUSAL)
    if model.kind != "images" or not isinstance(model.net, UNet):
        raise ValueError(
            f"a model of {model.kind} ({type(model.net).__name__}) cannot be exported to diffusers: "
            "UNet2DModel holds image U-Nets only"
        )


def export_model(model: DiffusionModel, folder: str | Path) -> Path:
    """Write ``model`` to ``folder`` in the pipeline layout that ``DDPMPipeline.from_pretrained`` loads.

    The scheduler is a DDPMScheduler whose loop is our ancestral sampler: the same β, parameterization,
    x̂₀ clipping to [−1, 1] and variance (fixed_large for σ² = β, the default of our runs; learned_range
    for a learned variance). A class-conditional U-Net becomes ``num_class_embeds = K + 1`` (row K: no
    label); DDPMPipeline passes no labels, so call its ``unet`` with ``class_labels`` in a loop of your own.
    """
    check_exportable(model)
    return export_diffusers(
        model.net, model.spec.net, model.schedule, model.parameterization, folder, clip_x0=IMAGE_CLIP,
        variance=model.spec.variance, learned_variance=model.spec.learned_variance,
    )  # fmt: skip
