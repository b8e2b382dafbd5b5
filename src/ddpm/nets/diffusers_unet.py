"""UNet2DModel (diffusers) ↔ our U-Net: config translation and weight renaming.

The published DDPM UNet2DModels (google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256) are
the paper's net, as ours is: DownBlock2D/AttnDownBlock2D with TF-style asymmetric downsampling padding,
a sin-first time embedding with freq_shift=1. Every config value ours cannot reproduce exactly is
refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ddpm.nets.configs import UNetConfig
from ddpm.nets.unet import UNet

# UNet2DModel.__init__ defaults (diffusers 0.42): diffusers fills keys a config.json omits with these.
UNET2D_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0,
    "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}  # fmt: skip

# Values our U-Net hard-wires (the paper's choices); a config with anything else is refused.
UNET2D_FIXED: dict[str, tuple[Any, ...]] = {
    "center_input_sample": (False,),
    "time_embedding_type": ("positional",),
    "flip_sin_to_cos": (False,),  # sines first, as the paper's get_timestep_embedding
    "freq_shift": (1,),  # frequencies 10000^(−i/(half − 1))
    "mid_block_type": ("UNetMidBlock2D",),
    "mid_block_scale_factor": (1, 1.0),
    "downsample_padding": (0,),  # pad (0, 1, 0, 1) then stride 2: TF 'SAME'
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "act_fn": ("silu", "swish"),
    "resnet_time_scale_shift": ("default",),
    "add_attention": (True,),
    "class_embed_type": (None,),
}


def config_error(key: str, value: Any, allowed: str) -> ValueError:
    """The one-line error for a diffusers config value ours cannot represent."""
    return ValueError(f"diffusers config {key}={value!r} is not supported; ours needs {allowed}")


def check_fixed_values(cfg: dict[str, Any], fixed: dict[str, tuple[Any, ...]]) -> None:
    """Refuse any ``cfg[key]`` outside ``fixed[key]`` (True is not 1 here: bools must match bools)."""
    for key, allowed in fixed.items():
        if cfg[key] not in allowed or isinstance(cfg[key], bool) != isinstance(allowed[0], bool):
            raise config_error(key, cfg[key], " or ".join(repr(a) for a in allowed))


# --- U-Net config ------------------------------------------------------------------------------------


def unet_config_from_diffusers(raw: dict[str, Any]) -> UNetConfig:
    """Our :class:`UNetConfig` for a UNet2DModel ``config.json``; missing keys take diffusers' defaults."""
    if raw.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise config_error("_class_name", raw["_class_name"], "'UNet2DModel'")
    cfg = {**UNET2D_DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    check_fixed_values(cfg, UNET2D_FIXED)
    channels = [int(c) for c in cfg["block_out_channels"]]
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    if len(down) != len(channels) or len(up) != len(channels):
        raise config_error(
            "down_block_types", down, "one down and one up block type per block_out_channels entry"
        )
    for key, types, kinds in (("down_block_types", down, ("DownBlock2D", "AttnDownBlock2D")),
                              ("up_block_types", up, ("UpBlock2D", "AttnUpBlock2D"))):  # fmt: skip
        bad = [kind for kind in types if kind not in kinds]
        if bad:
            raise config_error(key, bad[0], " or ".join(kinds))
    attention_levels = [level for level, kind in enumerate(down) if kind == "AttnDownBlock2D"]
    if [level for level, kind in enumerate(reversed(up)) if kind == "AttnUpBlock2D"] != attention_levels:
        raise config_error("up_block_types", up, f"attention at the same levels as down_block_types {down}")
    base = channels[0]
    if any(c % base for c in channels):
        raise config_error("block_out_channels", channels, "every entry a multiple of the first")
    if cfg["time_embedding_dim"] not in (None, 4 * base):
        raise config_error(
            "time_embedding_dim", cfg["time_embedding_dim"], f"None or {4 * base} (4 × channels)"
        )
    if cfg["attn_norm_num_groups"] not in (None, cfg["norm_num_groups"]):
        raise config_error("attn_norm_num_groups", cfg["attn_norm_num_groups"], "None or norm_num_groups")
    if cfg["norm_num_groups"] is None:
        raise config_error("norm_num_groups", None, "an integer")
    size = cfg["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int):
        raise config_error("sample_size", cfg["sample_size"], "one integer image size (square images)")
    num_classes = cfg["num_class_embeds"]
    if num_classes is not None and num_classes < 2:
        raise config_error("num_class_embeds", num_classes, "None or ≥ 2 (our last class row is 'no label')")
    return UNetConfig(
        in_channels=cfg["in_channels"],
        out_channels=None if cfg["out_channels"] == cfg["in_channels"] else cfg["out_channels"],
        image_size=size,
        base_channels=base,
        channel_mult=tuple(c // base for c in channels),
        num_res_blocks=cfg["layers_per_block"],
        attention_resolutions=tuple(size >> level for level in attention_levels),
        num_heads=_num_heads(cfg["attention_head_dim"], channels, attention_levels),
        dropout=float(cfg["dropout"]),
        num_groups=cfg["norm_num_groups"],
        num_classes=None if num_classes is None else num_classes - 1,
        resamp_with_conv=True,
        norm_eps=float(cfg["norm_eps"]),
    )


def _num_heads(head_dim: int | None, channels: list[int], attention_levels: list[int]) -> int:
    """diffusers sets heads = channels // attention_head_dim per block (None: one head); ours has one
    head count for every attention level and the middle (the lowest level)."""
    if head_dim is None:
        return 1
    attended = sorted({channels[level] for level in attention_levels} | {channels[-1]})
    heads = {c // head_dim for c in attended}
    if any(c % head_dim for c in attended) or len(heads) != 1:
        raise config_error(
            "attention_head_dim", head_dim, f"one head count for attention channels {attended}"
        )
    return heads.pop()


def unet_config_to_diffusers(config: UNetConfig) -> dict[str, Any]:
    """The UNet2DModel ``config.json`` of our config (every key written, none left to defaults)."""
    if not config.resamp_with_conv:
        raise ValueError(
            "resamp_with_conv=False cannot be exported; UNet2DModel always resamples with a conv"
        )
    channels = list(config.level_channels)
    attention = set(config.attention_levels)
    head_dims = {channels[level] // config.num_heads for level in attention | {config.num_levels - 1}}
    if config.num_heads > 1 and len(head_dims) != 1:
        raise ValueError(
            f"num_heads={config.num_heads} gives head sizes {sorted(head_dims)} across attention levels; "
            "diffusers' UNet2DModel needs one attention_head_dim"
        )
    levels = range(config.num_levels)
    return {
        "_class_name": "UNet2DModel",
        **UNET2D_DEFAULTS,
        **{key: allowed[0] for key, allowed in UNET2D_FIXED.items()},
        "sample_size": config.image_size,
        "in_channels": config.in_channels,
        "out_channels": config.resolved_out_channels,
        "down_block_types": ["AttnDownBlock2D" if i in attention else "DownBlock2D" for i in levels],
        "up_block_types": ["AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(levels)],
        "block_out_channels": channels,
        "layers_per_block": config.num_res_blocks,
        "dropout": config.dropout,
        "attention_head_dim": None if config.num_heads == 1 else head_dims.pop(),
        "norm_num_groups": config.num_groups,
        "norm_eps": config.norm_eps,
        "num_class_embeds": None if config.num_classes is None else config.num_classes + 1,
    }


# --- Weights -----------------------------------------------------------------------------------------

# Our module paths → UNet2DModel's. Up levels are numbered from the bottom in diffusers (k = L − 1 − i).
_MODULE_RULES: list[tuple[str, str]] = [
    (r"^temb\.dense\.0\.", "time_embedding.linear_1."),
    (r"^temb\.dense\.1\.", "time_embedding.linear_2."),
    (r"^class_embedding\.embedding\.", "class_embedding."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"^down\.(\d+)\.block\.(\d+)\.", r"down_blocks.\1.resnets.\2."),
    (r"^down\.(\d+)\.attn\.(\d+)\.", r"down_blocks.\1.attentions.\2."),
    (r"^down\.(\d+)\.downsample\.", r"down_blocks.\1.downsamplers.0."),
    (r"^mid\.block_1\.", "mid_block.resnets.0."),
    (r"^mid\.attn_1\.", "mid_block.attentions.0."),
    (r"^mid\.block_2\.", "mid_block.resnets.1."),
    (r"\.temb_proj\.", ".time_emb_proj."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
    (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
    (r"(attentions\.\d+)\.proj_out\.", r"\1.to_out.0."),
]
# Names of attention weights before diffusers 0.14 (google/ddpm-* safetensors may still use them).
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def diffusers_name(key: str, num_levels: int) -> str:
    """The diffusers name of one of our state-dict keys (a U-Net's, or an autoencoder's below its
    ``encoder.`` / ``decoder.`` prefix: both follow the paper code's names)."""

    def up_level(match: re.Match) -> str:
        return f"up_blocks.{num_levels - 1 - int(match[1])}.{match[2]}"

    key = re.sub(r"^up\.(\d+)\.(block|attn|upsample)", up_level, key)
    key = re.sub(r"^(up_blocks\.\d+)\.block\.", r"\1.resnets.", key)
    key = re.sub(r"^(up_blocks\.\d+)\.attn\.", r"\1.attentions.", key)
    key = re.sub(r"^(up_blocks\.\d+)\.upsample\.", r"\1.upsamplers.0.", key)
    for pattern, replacement in _MODULE_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def diffusers_key_map(keys: Iterable[str], rename: Callable[[str], str]) -> dict[str, list[str]]:
    """Each of our state-dict keys → its diffusers keys (three, q/k/v, for our fused qkv)."""
    mapping = {}
    for key in keys:
        name = rename(key)
        if ".qkv." in name:
            mapping[key] = [name.replace(".qkv.", f".{part}.") for part in ("to_q", "to_k", "to_v")]
        else:
            mapping[key] = [name]
    return mapping


def _key_map(net: UNet) -> dict[str, list[str]]:
    return diffusers_key_map(net.state_dict(), lambda key: diffusers_name(key, net.config.num_levels))


def state_dict_from_diffusers(net: UNet, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict from UNet2DModel weights; refuses missing, unexpected or mis-shaped tensors."""
    return tensors_from_diffusers(_key_map(net), net.state_dict(), weights)


def tensors_from_diffusers(
    mapping: dict[str, list[str]], expected: dict[str, Tensor], weights: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Our tensors, by ``mapping`` (:func:`diffusers_key_map`) from diffusers ``weights``; refuses missing,
    unexpected or mis-shaped tensors. Attention weights under pre-0.14 names are read too."""
    renamed = {}
    for name, tensor in weights.items():
        match = re.match(r"^(.*attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$", name)
        if match:
            name = f"{match[1]}.{_LEGACY_ATTENTION[match[2]]}.{match[3]}"
            if tensor.ndim == 4:  # 1×1 conv weights of the oldest checkpoints: (C, C, 1, 1) → (C, C)
                tensor = tensor[:, :, 0, 0]
        renamed[name] = tensor
    ours = {}
    needed = {name for names in mapping.values() for name in names}
    unexpected = sorted(set(renamed) - needed)
    if unexpected:
        raise ValueError(f"unexpected tensor {unexpected[0]!r} in the diffusers weights for this config")
    for key, names in mapping.items():
        missing = [name for name in names if name not in renamed]
        if missing:
            raise ValueError(f"tensor {missing[0]!r} is missing from the diffusers weights")
        tensor = torch.cat([renamed[name] for name in names]) if len(names) > 1 else renamed[names[0]]
        if tensor.shape != expected[key].shape:
            needed_shape = tuple(expected[key].shape)
            raise ValueError(
                f"tensor {names[0]!r} has shape {tuple(tensor.shape)}; this config needs {needed_shape}"
            )
        ours[key] = tensor
    return ours


def state_dict_to_diffusers(net: UNet) -> dict[str, Tensor]:
    """UNet2DModel weights (contiguous CPU tensors) from our net."""
    return tensors_to_diffusers(_key_map(net), net.state_dict())


def tensors_to_diffusers(mapping: dict[str, list[str]], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers weights (contiguous CPU tensors) from our ``state`` by ``mapping``."""
    weights = {}
    for key, names in mapping.items():
        parts = state[key].detach().cpu().chunk(len(names))  # qkv: (3C, …) → q, k, v
        weights.update({name: part.contiguous() for name, part in zip(names, parts, strict=True)})
    return weights
