"""diffusers-format DDPM models in and out: a UNet2DModel and a DDPMScheduler (or another scheduler
with the same β recipe), in either of the two layouts diffusers writes and reads.

- Pipeline layout, ``DDPMPipeline.save_pretrained``: ``model_index.json``, ``unet/config.json``,
  ``unet/diffusion_pytorch_model.safetensors`` and ``scheduler/scheduler_config.json``.
- Flat layout, a bare ``UNet2DModel`` and ``DDPMScheduler`` saved to one folder: ``config.json``,
  ``diffusion_pytorch_model.safetensors`` and ``scheduler_config.json`` side by side (sometimes with a
  ``model_index.json``). The published google/ddpm-cifar10-32, ddpm-celebahq-256, ddpm-church-256 and
  ddpm-bedroom-256 repositories use this one.

As diffusers' pipeline loader does, a component is read from its subfolder when the folder has one, else
from the top folder. See :mod:`ddpm.nets.diffusers_unet` for the U-Net mapping. Only safetensors weights
are read: a ``.bin`` file is a pickle and is never opened. We always write the pipeline layout.

Learned variances (Nichol & Dhariwal 2021, eq. 15) are diffusers' ``variance_type="learned_range"``: a
UNet2DModel with ``out_channels = 2 · in_channels`` whose second half is the variance. Such a folder
imports as a learned-variance model (``extra["learned_variance"]``, for
``Parameterized(…, learned_variance=True)``) and exports back the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ddpm.diffusion.process import check_parameterization
from ddpm.diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas
from ddpm.nets.configs import UNetConfig
from ddpm.nets.diffusers_unet import (
    config_error,
    state_dict_from_diffusers,
    state_dict_to_diffusers,
    unet_config_from_diffusers,
    unet_config_to_diffusers,
)
from ddpm.nets.unet import UNet
from ddpm.safe_files import load_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
MODEL_INDEX_NAME = "model_index.json"
PIPELINE_COMPONENTS = ("unet", "scheduler")  # what an unconditional pixel pipeline (DDPM, DDIM) holds
VQVAE, LATENT_AUTOENCODER_CLASS = "vqvae", "AutoencoderKL"  # LDMPipeline's autoencoder slot; what it may hold
LATENT_PIPELINE_COMPONENTS = (*PIPELINE_COMPONENTS, VQVAE)  # LDMPipeline's
LAYOUT_HINT = (
    "a diffusers model folder holds unet/ and scheduler/ subfolders (DDPMPipeline.save_pretrained) or "
    f"{CONFIG_NAME}, {WEIGHTS_NAME} and {SCHEDULER_CONFIG_NAME} side by side (google/ddpm-cifar10-32)"
)

# diffusers' names → ours (parameterization; the ancestral sampler's variance). learned_range is a
# learned variance: "variance" then only names the fixed fallback, β̃ (DDPMScheduler's default).
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCE_TYPES = {"fixed_small": "beta_tilde", "fixed_small_log": "beta_tilde", "fixed_large": "beta",
                  "fixed_large_log": "beta", "learned_range": "beta_tilde"}  # fmt: skip
LEARNED_VARIANCE_TYPE = "learned_range"


# --- Schedule ----------------------------------------------------------------------------------------


def schedule_from_diffusers(raw: dict[str, Any]) -> tuple[NoiseSchedule, str, dict[str, Any]]:
    """(schedule, parameterization, extra) from a DDPMScheduler-style ``scheduler_config.json``.

    β in float64 from the config's recipe (diffusers computes the same in float32). ``extra``:
    ``clip_x0`` (clip_sample_range, or None), ``variance`` (``beta_tilde`` for fixed_small, ``beta``
    for fixed_large: the ancestral sampler's argument), ``learned_variance`` (True for learned_range),
    ``scheduler_class``, ``beta_schedule`` (``trained_betas`` when β are listed), ``timestep_spacing`` and
    ``steps_offset`` as written (defaults of DDPMScheduler where absent).
    """
    for key in ("thresholding", "rescale_betas_zero_snr"):
        if raw.get(key, False):
            raise config_error(
                key, raw[key], "False (no dynamic thresholding, no zero terminal SNR: ᾱ_T > 0)"
            )
    T = raw.get("num_train_timesteps", 1000)
    beta_start, beta_end = raw.get("beta_start", 0.0001), raw.get("beta_end", 0.02)
    beta_schedule = raw.get("beta_schedule", "linear")
    if raw.get("trained_betas") is not None:
        betas = torch.tensor(raw["trained_betas"], dtype=torch.float64)
    elif beta_schedule == "linear":
        betas = linear_betas(T, beta_start, beta_end)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = cosine_betas(T)
    elif beta_schedule == "sigmoid":  # diffusers' (GeoDiff) sigmoid, not ours
        betas = (
            torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start)
            + beta_start
        )
    else:
        raise config_error(
            "beta_schedule", beta_schedule, "linear, scaled_linear, squaredcos_cap_v2 or sigmoid"
        )
    prediction = raw.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise config_error("prediction_type", prediction, ", ".join(PREDICTION_TYPES))
    variance = raw.get("variance_type", "fixed_small")
    if variance not in VARIANCE_TYPES:
        raise config_error(
            "variance_type", variance, f"one of {', '.join(VARIANCE_TYPES)} (not an unbounded learned one)"
        )
    extra = {
        "clip_x0": float(raw.get("clip_sample_range", 1.0)) if raw.get("clip_sample", True) else None,
        "variance": VARIANCE_TYPES[variance],
        "learned_variance": variance == LEARNED_VARIANCE_TYPE,
        "scheduler_class": raw.get("_class_name", "DDPMScheduler"),
        "beta_schedule": "trained_betas" if raw.get("trained_betas") is not None else beta_schedule,
        "timestep_spacing": raw.get("timestep_spacing", "leading"),
        "steps_offset": raw.get("steps_offset", 0),
    }
    return NoiseSchedule(betas), PREDICTION_TYPES[prediction], extra


def schedule_to_diffusers(
    schedule: NoiseSchedule,
    parameterization: str,
    clip_x0: float | None,
    variance: str,
    learned_variance: bool = False,
) -> dict[str, Any]:
    """A DDPMScheduler ``scheduler_config.json``: a named β recipe when ours is one, else trained_betas;
    ``variance_type`` learned_range for a learned variance, else the fixed ``variance``'s name."""
    check_parameterization(parameterization)
    variance_types = {"beta_tilde": "fixed_small", "beta": "fixed_large"}
    if variance not in variance_types:
        raise ValueError(f"unknown variance {variance!r}; allowed: {', '.join(variance_types)}")
    betas, T = schedule.betas, schedule.num_steps
    recipe: dict[str, Any] = {
        "beta_schedule": "linear",
        "beta_start": float(betas[0]),
        "beta_end": float(betas[-1]),
    }
    if T > 1 and torch.allclose(
        betas, linear_betas(T, float(betas[0]), float(betas[-1])), rtol=1e-12, atol=0
    ):
        recipe["trained_betas"] = None
    elif torch.allclose(betas, cosine_betas(T), rtol=1e-12, atol=0):
        recipe.update(beta_schedule="squaredcos_cap_v2", trained_betas=None)
    else:
        recipe["trained_betas"] = betas.tolist()
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": T,
        **recipe,
        "prediction_type": {v: k for k, v in PREDICTION_TYPES.items()}[parameterization],
        "variance_type": LEARNED_VARIANCE_TYPE if learned_variance else variance_types[variance],
        "clip_sample": clip_x0 is not None,
        "clip_sample_range": 1.0 if clip_x0 is None else float(clip_x0),
        "thresholding": False,
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }


# --- Folders -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{path} not found; {LAYOUT_HINT}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}; a diffusers config is a JSON object")
    return raw


def component_dir(folder: str | Path, name: str) -> Path:
    """Where a pipeline component's files are: ``folder/name`` when that subfolder exists (pipeline
    layout), else ``folder`` itself (flat layout): the choice diffusers' pipeline loader makes."""
    folder = Path(folder)
    return folder / name if (folder / name).is_dir() else folder


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a diffusers model folder in either layout (a model index, a scheduler
    config, or unet/ and scheduler/ subfolders); :func:`load_diffusers_pipeline` says what is missing."""
    path = Path(path)
    marks = (MODEL_INDEX_NAME, SCHEDULER_CONFIG_NAME, *PIPELINE_COMPONENTS)
    return path.is_dir() and any((path / mark).exists() for mark in marks)


def read_model_index(folder: str | Path) -> dict[str, Any] | None:
    """``model_index.json`` (None when absent), refused when it names components beyond a U-Net and a
    scheduler (DDPMPipeline, DDIMPipeline) or those and an AutoencoderKL ``vqvae`` (LDMPipeline, our
    latent export): other pipelines (a text encoder, a VQModel…) are not models ours can run."""
    path = Path(folder) / MODEL_INDEX_NAME
    if not path.is_file():
        return None
    index = _read_json(path)
    components = sorted(key for key in index if not key.startswith("_"))
    if any(key not in LATENT_PIPELINE_COMPONENTS for key in components):
        raise ValueError(
            f"{path} names a {index.get('_class_name', 'pipeline')} with components {', '.join(components)}; "
            "only a U-Net and a scheduler (DDPMPipeline, DDIMPipeline), with an AutoencoderKL vqvae for "
            "LDMPipeline, can be read"
        )
    vqvae = index.get(VQVAE)
    if vqvae is not None and (not isinstance(vqvae, list) or vqvae[-1:] != [LATENT_AUTOENCODER_CLASS]):
        raise ValueError(
            f"{path} names vqvae {vqvae}; only a diffusers {LATENT_AUTOENCODER_CLASS} (KL-regularised, as "
            "ddpm train --kind autoencoder) can be read, not a VQModel's codebook"
        )
    return index


def load_diffusers_unet(folder: str | Path) -> tuple[UNet, UNetConfig]:
    """Our U-Net, in eval mode, from a diffusers folder (either layout) or the unet folder itself."""
    unet_dir = component_dir(folder, "unet")
    config = unet_config_from_diffusers(_read_json(unet_dir / CONFIG_NAME))
    weights_path = unet_dir / WEIGHTS_NAME
    if not weights_path.is_file():
        found = (
            " (found a pickled .bin, which is never read)"
            if (unet_dir / PICKLED_WEIGHTS_NAME).exists()
            else ""
        )
        raise ValueError(f"{weights_path} not found{found}; only safetensors weights are accepted")
    net = UNet(config)
    net.load_state_dict(state_dict_from_diffusers(net, load_safetensors(weights_path)))
    return net.eval(), config


def load_diffusers_pipeline(folder: str | Path) -> tuple[UNet, NoiseSchedule, str, dict[str, Any]]:
    """(U-Net, schedule, parameterization, extra) of a diffusers DDPM folder in either layout; see
    :func:`schedule_from_diffusers` for ``extra``, which also holds the ``unet_config``, the
    ``pipeline_class`` of ``model_index.json`` (None without one) and ``vqvae_dir``, the folder of an
    LDMPipeline's autoencoder (None for a pixel pipeline; ``diffusers_vae.ldm_codec`` reads it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder; {LAYOUT_HINT}")
    index = read_model_index(folder)
    schedule, parameterization, extra = schedule_from_diffusers(
        _read_json(component_dir(folder, "scheduler") / SCHEDULER_CONFIG_NAME)
    )
    net, config = load_diffusers_unet(folder)
    check_variance_channels(config, extra["learned_variance"])
    pipeline_class = None if index is None else index.get("_class_name")
    vqvae_dir = folder / VQVAE if index is not None and VQVAE in index else None
    return net, schedule, parameterization, {**extra, "unet_config": config, "pipeline_class": pipeline_class,
                                             "vqvae_dir": vqvae_dir}  # fmt: skip


def check_variance_channels(config: UNetConfig, learned_variance: bool) -> None:
    """A learned-variance U-Net outputs 2C channels (prediction, then variance); a fixed one C."""
    expected = 2 * config.in_channels if learned_variance else config.in_channels
    if config.resolved_out_channels != expected:
        kind = "learned_range (learned variance)" if learned_variance else "a fixed variance"
        raise ValueError(
            f"the U-Net has out_channels={config.resolved_out_channels} for in_channels="
            f"{config.in_channels}, but a scheduler with {kind} needs out_channels={expected}"
        )


def export_diffusers(
    net: UNet,
    config: UNetConfig,
    schedule: NoiseSchedule,
    parameterization: str,
    folder: str | Path,
    *,
    clip_x0: float | None = None,
    variance: str = "beta_tilde",
    learned_variance: bool = False,
) -> Path:
    """Write ``folder`` in the layout ``DDPMPipeline.from_pretrained`` (and ``UNet2DModel`` /
    ``DDPMScheduler.from_pretrained`` with ``subfolder``) load; files there are overwritten.
    ``learned_variance``: the net outputs 2C channels, written as ``variance_type="learned_range"``."""
    if not isinstance(net, UNet):
        raise ValueError(f"export_diffusers needs a UNet, got {type(net).__name__}")
    check_net_config(net, config)
    check_variance_channels(config, learned_variance)
    scheduler_config = schedule_to_diffusers(schedule, parameterization, clip_x0, variance, learned_variance)
    folder = Path(folder)
    write_unet(net, config, folder / "unet")
    write_json(folder / "scheduler" / SCHEDULER_CONFIG_NAME, scheduler_config)
    model_index = {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
                   "unet": ["diffusers", "UNet2DModel"]}  # fmt: skip
    write_json(folder / MODEL_INDEX_NAME, model_index)
    return folder


def write_unet(net: UNet, config: UNetConfig, folder: Path) -> Path:
    """``folder`` as ``UNet2DModel.save_pretrained`` writes it: config.json and the safetensors weights."""
    check_net_config(net, config)
    diffusers_config = unet_config_to_diffusers(config)  # refuses what UNet2DModel cannot hold, first
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_to_diffusers(net), folder / WEIGHTS_NAME, metadata={"format": "pt"})
    write_json(folder / CONFIG_NAME, diffusers_config)
    return folder


def check_net_config(net: UNet, config: UNetConfig) -> None:
    if net.config != config:
        raise ValueError(f"config {config} is not the net's config {net.config}")


def write_json(path: Path, content: dict[str, Any]) -> None:
    """A diffusers config file (indented JSON and a final newline, as diffusers writes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
