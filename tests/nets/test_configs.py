"""Configs, presets and parameter counts of the paper's networks."""

from __future__ import annotations

import pytest
import torch

from ddpm.nets import UNET_PRESETS, MLPConfig, MLPDenoiser, UNet, UNetConfig, build_net, count_parameters


def _count_on_meta(config: UNetConfig) -> int:
    # Meta tensors have shapes but no storage: the 114M-parameter net costs no memory or init time.
    with torch.device("meta"):
        return count_parameters(UNet(config))


def test_ddpm_cifar10_parameter_count_matches_paper_net():
    # diffusers' google/ddpm-cifar10-32 (the paper's CIFAR-10 net) has 35,746,307 parameters.
    assert _count_on_meta(UNET_PRESETS["ddpm-cifar10"]) == pytest.approx(35.7e6, abs=0.1e6)


def test_ddpm_256_parameter_count_matches_paper_net():
    # diffusers' google/ddpm-celebahq-256 (the paper's CelebA-HQ/LSUN net) has ≈113.7M parameters.
    assert _count_on_meta(UNET_PRESETS["ddpm-256"]) == pytest.approx(114e6, abs=1e6)


@pytest.mark.parametrize(("name", "expected"), [("digits", 1_001_729), ("mnist", 1_112_801)])
def test_small_preset_parameter_counts(name, expected):
    assert _count_on_meta(UNET_PRESETS[name]) == expected


def test_every_preset_builds_and_names_its_image_size():
    for name, config in UNET_PRESETS.items():
        assert config.image_size % config.downsample_factor == 0, name
        assert config.attention_levels, name


def test_lists_from_toml_become_tuples():
    config = UNetConfig(channel_mult=[1, 2], attention_resolutions=[16], base_channels=32)
    assert config.channel_mult == (1, 2)
    assert config.attention_resolutions == (16,)
    assert hash(config)  # still a usable frozen value


def test_attention_levels_follow_image_size():
    config = UNetConfig(
        image_size=28, channel_mult=(1, 2, 2), attention_resolutions=(14, 7), base_channels=32
    )
    assert config.attention_levels == (1, 2)


def test_count_parameters_counts_shared_tensors_once():
    layer = torch.nn.Linear(3, 4)
    assert count_parameters(torch.nn.Sequential(layer, layer)) == 16


def test_build_net_dispatches_on_config_type():
    assert isinstance(
        build_net(
            UNetConfig(
                base_channels=8, num_groups=4, channel_mult=(1,), image_size=8, attention_resolutions=()
            )
        ),
        UNet,
    )
    assert isinstance(build_net(MLPConfig(hidden_dim=16, num_layers=1)), MLPDenoiser)


def test_build_net_rejects_other_objects():
    with pytest.raises(ValueError, match="cannot build a network from dict"):
        build_net({"base_channels": 8})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_groups": 24}, "num_groups 24 does not divide 128 channels"),
        ({"channel_mult": ()}, "channel_mult is empty"),
        ({"channel_mult": (1, 0)}, "channel_mult entry 0 must be a positive integer"),
        ({"dropout": 1.0}, r"dropout 1.0 is outside \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout -0.1 is outside \[0, 1\)"),
        ({"image_size": 30}, "image_size 30 cannot be halved 3 times; it must be divisible by 8"),
        ({"attention_resolutions": (12,)}, r"attention resolution 12 is not a level .* \[32, 16, 8, 4\]"),
        ({"num_heads": 3}, "num_heads 3 does not divide 256 channels at attention level 1"),
        ({"in_channels": 0}, "in_channels 0 must be a positive integer"),
        ({"out_channels": -1}, "out_channels -1 must be a positive integer"),
        ({"base_channels": 2.5}, "base_channels 2.5 must be a positive integer"),
        ({"num_res_blocks": 0}, "num_res_blocks 0 must be a positive integer"),
        ({"num_classes": 0}, "num_classes 0 must be a positive integer"),
        ({"norm_eps": 0.0}, "norm_eps 0.0 must be > 0"),
    ],
)
def test_unet_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"time_embed_dim": 7}, "time_embed_dim 7 must be even"),
        ({"dim": 0}, "dim 0 must be a positive integer"),
        ({"hidden_dim": 0}, "hidden_dim 0 must be a positive integer"),
        ({"num_layers": 0}, "num_layers 0 must be a positive integer"),
        ({"num_classes": 0}, "num_classes 0 must be a positive integer"),
        ({"dropout": 1.5}, r"dropout 1.5 is outside \[0, 1\)"),
    ],
)
def test_mlp_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        MLPConfig(**overrides)
