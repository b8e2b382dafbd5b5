"""Our autoencoder as a diffusers ``AutoencoderKL`` folder, and such a folder as ours.

A folder is what ``AutoencoderKL.save_pretrained`` writes: ``config.json`` and
``diffusion_pytorch_model.safetensors``; a pipeline folder's ``vae/`` subfolder is read the same way.
Weights map one to one by the rename table of :mod:`ddpm.nets.diffusers_unet` (our attention's fused
q, k, v become diffusers' to_q, to_k, to_v). Only safetensors are read; a ``.bin`` is a pickle and is
never opened. Every config value ours cannot reproduce is refused in one line that names it.

Latent scale: diffusers keeps it in the config (``scaling_factor``, ``shift_factor``, newer VAEs'
per-channel ``latents_mean`` / ``latents_std``); pipelines multiply latents by ``scaling_factor``
before diffusion. Its default, 0.18215, is Stable Diffusion's VAE's own 1 / std and wrong for any other
autoencoder, so :func:`export_diffusers_vae` writes 1.0 unless given the scale measured on your data.
An autoencoder run's export (:func:`export_codec`) keeps its weights as trained and writes the
per-channel normalisation its run estimated as ``latents_mean`` / ``latents_std`` with ``scaling_factor``
1, the convention of diffusers' SDXL/SD3-style pipelines: z_norm = (z − latents_mean) · scaling_factor /
latents_std. (An LDMPipeline export instead folds it into the weights: :mod:`ddpm.interop.diffusers_ldm`.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save as safetensors_bytes

from ddpm.interop.diffusers import CONFIG_NAME, PICKLED_WEIGHTS_NAME, WEIGHTS_NAME, component_dir
from ddpm.nets.autoencoder import AutoencoderConfig, AutoencoderKL
from ddpm.nets.diffusers_unet import (
    check_fixed_values,
    config_error,
    diffusers_key_map,
    diffusers_name,
    tensors_from_diffusers,
    tensors_to_diffusers,
)
from ddpm.nets.latent_codec import LatentCodec
from ddpm.safe_files import atomic_write_bytes, atomic_write_text, load_safetensors

DIFFUSERS_EPS = 1e-6  # diffusers' Encoder and Decoder hard-wire GroupNorm eps 1e-6 (as LDM's code)
DOWN_BLOCK, UP_BLOCK = "DownEncoderBlock2D", "UpDecoderBlock2D"
# AutoencoderKL.__init__ defaults (diffusers 0.42): diffusers fills keys a config.json omits with these.
AUTOENCODER_KL_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": (DOWN_BLOCK,), "up_block_types": (UP_BLOCK,),
    "block_out_channels": (64,), "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4,
    "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None,
    "latents_mean": None, "latents_std": None, "force_upcast": True, "use_quant_conv": True,
    "use_post_quant_conv": True, "mid_block_add_attention": True,
}  # fmt: skip
# Values our autoencoder hard-wires; a config with anything else is refused.
AUTOENCODER_KL_FIXED: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu", "swish"),
    "use_quant_conv": (True,),
    "use_post_quant_conv": (True,),
}
LATENT_SCALE_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")


def vae_config_from_diffusers(raw: dict[str, Any]) -> tuple[AutoencoderConfig, dict[str, Any]]:
    """(our config, the latent scale keys as written) for an AutoencoderKL ``config.json``; missing keys
    take diffusers' defaults, so a config without ``scaling_factor`` reports diffusers' 0.18215."""
    if raw.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise config_error("_class_name", raw["_class_name"], "'AutoencoderKL'")
    cfg = {**AUTOENCODER_KL_DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    check_fixed_values(cfg, AUTOENCODER_KL_FIXED)
    if cfg["out_channels"] != cfg["in_channels"]:
        raise config_error("out_channels", cfg["out_channels"], f"in_channels ({cfg['in_channels']})")
    levels = len(cfg["block_out_channels"])
    for key, kind in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
        if list(cfg[key]) != [kind] * levels:
            raise config_error(key, list(cfg[key]), f"{kind} for each of the {levels} block_out_channels")
    size = cfg["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int):
        raise config_error("sample_size", cfg["sample_size"], "one integer image size (square images)")
    if not isinstance(cfg["mid_block_add_attention"], bool):
        raise config_error("mid_block_add_attention", cfg["mid_block_add_attention"], "true or false")
    config = AutoencoderConfig(
        in_channels=cfg["in_channels"],
        image_size=size,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        mid_attention=cfg["mid_block_add_attention"],
        norm_eps=DIFFUSERS_EPS,
    )
    return config, {key: cfg[key] for key in LATENT_SCALE_KEYS}


def vae_config_to_diffusers(
    config: AutoencoderConfig,
    *,
    scaling_factor: float = 1.0,
    shift_factor: float | None = None,
    latents_mean: Sequence[float] | None = None,
    latents_std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The AutoencoderKL ``config.json`` of our config, every key written (none left to defaults)."""
    if config.norm_eps != DIFFUSERS_EPS:
        raise ValueError(
            f"norm_eps {config.norm_eps} cannot be exported; "
            f"diffusers' AutoencoderKL fixes it at {DIFFUSERS_EPS}"
        )
    for name, values in (("latents_mean", latents_mean), ("latents_std", latents_std)):
        if values is not None and len(values) != config.latent_channels:
            raise ValueError(
                f"{name} has {len(values)} entries; give one per latent channel ({config.latent_channels})"
            )
    levels = len(config.block_out_channels)
    return {
        "_class_name": "AutoencoderKL",
        **AUTOENCODER_KL_DEFAULTS,
        **{key: allowed[0] for key, allowed in AUTOENCODER_KL_FIXED.items()},
        "in_channels": config.in_channels,
        "out_channels": config.in_channels,
        "down_block_types": [DOWN_BLOCK] * levels,
        "up_block_types": [UP_BLOCK] * levels,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "latent_channels": config.latent_channels,
        "norm_num_groups": config.norm_num_groups,
        "sample_size": config.image_size,
        "scaling_factor": float(scaling_factor),
        "shift_factor": None if shift_factor is None else float(shift_factor),
        "latents_mean": None if latents_mean is None else [float(v) for v in latents_mean],
        "latents_std": None if latents_std is None else [float(v) for v in latents_std],
        "force_upcast": False,  # float32 throughout: nothing to upcast
        "mid_block_add_attention": config.mid_attention,
    }


def _key_map(ae: AutoencoderKL) -> dict[str, list[str]]:
    """Our keys → diffusers': encoder./decoder. keys renamed below the prefix as a U-Net's are."""
    levels = len(ae.config.block_out_channels)

    def rename(key: str) -> str:
        prefix, _, rest = key.partition(".")
        return f"{prefix}.{diffusers_name(rest, levels)}" if prefix in ("encoder", "decoder") else key

    return diffusers_key_map(ae.state_dict(), rename)


def export_diffusers_vae(
    ae: AutoencoderKL,
    folder: str | Path,
    *,
    scaling_factor: float = 1.0,
    shift_factor: float | None = None,
    latents_mean: Sequence[float] | None = None,
    latents_std: Sequence[float] | None = None,
) -> Path:
    """Write ``folder`` for ``AutoencoderKL.from_pretrained``: the weights, then ``config.json``, each
    replaced atomically (a crash leaves each file old or new, never half-written). ``scaling_factor``
    and the rest: the latent scale measured on the data (see the module's note), stored as diffusers does."""
    config = vae_config_to_diffusers(
        ae.config, scaling_factor=scaling_factor, shift_factor=shift_factor,
        latents_mean=latents_mean, latents_std=latents_std,
    )  # fmt: skip
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = tensors_to_diffusers(_key_map(ae), ae.state_dict())
    atomic_write_bytes(folder / WEIGHTS_NAME, safetensors_bytes(weights, metadata={"format": "pt"}))
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return folder


def load_diffusers_vae(folder: str | Path) -> tuple[AutoencoderKL, dict[str, Any]]:
    """(our autoencoder in eval mode, the latent scale keys of its config) from an AutoencoderKL
    folder, or a pipeline folder holding one in ``vae/``."""
    vae_dir = component_dir(folder, "vae")
    config_path, weights_path = vae_dir / CONFIG_NAME, vae_dir / WEIGHTS_NAME
    if not config_path.is_file():
        raise ValueError(
            f"{config_path} not found; an AutoencoderKL folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path} holds a JSON {type(raw).__name__}; a diffusers config is an object")
    config, latent_scale = vae_config_from_diffusers(raw)
    if not weights_path.is_file():
        pickled = (vae_dir / PICKLED_WEIGHTS_NAME).exists()
        found = " (found a pickled .bin, which is never read)" if pickled else ""
        raise ValueError(f"{weights_path} not found{found}; only safetensors weights are accepted")
    ae = AutoencoderKL(config)
    ae.load_state_dict(tensors_from_diffusers(_key_map(ae), ae.state_dict(), load_safetensors(weights_path)))
    return ae.eval(), latent_scale


def export_codec(codec: LatentCodec, folder: str | Path) -> Path:
    """An autoencoder run's autoencoder, unchanged, with its latent normalisation as ``latents_mean`` /
    ``latents_std`` (``scaling_factor`` 1): (z − latents_mean) / latents_std is our ``codec.encode``."""
    mean, std = codec.mean.flatten().tolist(), codec.std.flatten().tolist()
    return export_diffusers_vae(codec.autoencoder, folder, latents_mean=mean, latents_std=std)


def ldm_codec(folder: str | Path) -> LatentCodec:
    """The codec of an LDMPipeline's ``vqvae`` folder, as LDMPipeline uses it: it decodes
    ``vqvae.decode(z / scaling_factor)`` and reads no other latent key, so z_norm = z · scaling_factor
    (mean 0, std 1 / scaling_factor in every channel). Our LDM export folds its normalisation into the
    weights and writes scaling_factor 1, so its codec reads back as mean 0, std 1, exactly."""
    autoencoder, latent_scale = load_diffusers_vae(folder)
    scale = latent_scale["scaling_factor"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise config_error("scaling_factor", scale, "a number > 0 (LDMPipeline decodes z / scaling_factor)")
    channels = autoencoder.config.latent_channels
    return LatentCodec(autoencoder, [0.0] * channels, [1.0 / scale] * channels)
