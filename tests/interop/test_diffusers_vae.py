"""Our autoencoder against diffusers' AutoencoderKL as the oracle: the same weights and posterior noise
give the same posterior, decoding and forward pass (within 1e-4); our export loads in diffusers, and a
folder diffusers saved loads in ours; configs ours cannot represent are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from ddpm.interop.diffusers_vae import (
    export_codec,
    export_diffusers_vae,
    load_diffusers_vae,
    vae_config_from_diffusers,
    vae_config_to_diffusers,
)
from ddpm.nets import AutoencoderConfig, AutoencoderKL
from ddpm.nets.latent_codec import LatentCodec
from tests.nets.test_unet import perturbed

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

TOLERANCE = 1e-4

CONFIGS = {
    # f = 4, two blocks a level (three in the decoder), RGB, attention in the middle
    "f4": AutoencoderConfig(in_channels=3, image_size=16, block_out_channels=(8, 16, 16), layers_per_block=2,
                            latent_channels=4, norm_num_groups=4),
    # f = 8, grey, no middle attention
    "f8": AutoencoderConfig(in_channels=1, image_size=32, block_out_channels=(8, 8, 16, 16),
                            layers_per_block=1, latent_channels=3, norm_num_groups=8, mid_attention=False),
}  # fmt: skip


def diffusers_vae(config: AutoencoderConfig, seed: int = 0):
    """A randomly initialised diffusers AutoencoderKL of ``config`` (PyTorch's default init, so every
    residual branch is non-zero)."""
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(**{
        k: v for k, v in vae_config_to_diffusers(config).items() if not k.startswith("_")
    }).eval()  # fmt: skip


def assert_same_outputs(ours: AutoencoderKL, theirs, config: AutoencoderConfig) -> dict[str, float]:
    """Encode, decode and forward (sampled with the same seed) of both; returns the largest differences."""
    x = torch.randn(2, config.in_channels, config.image_size, config.image_size,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():
        posterior, their_posterior = ours.encode(x), theirs.encode(x).latent_dist
        z = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(2))
        pairs = {
            "mean": (posterior.mean, their_posterior.mean),
            "logvar": (posterior.logvar, their_posterior.logvar),
            "kl": (posterior.kl(), their_posterior.kl()),
            "decode": (ours.decode(z), theirs.decode(z).sample),
            "forward": (ours(x, generator=torch.Generator().manual_seed(3))[0],
                        theirs(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample),
            "forward_mode": (ours(x, sample_posterior=False)[0], theirs(x).sample),
        }  # fmt: skip
    for name, (a, b) in pairs.items():
        torch.testing.assert_close(a, b, rtol=0, atol=TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")
    return {name: (a - b).abs().max().item() for name, (a, b) in pairs.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_folder_diffusers_saved_loads_with_the_same_outputs(name, tmp_path):
    config = CONFIGS[name]
    theirs = diffusers_vae(config)
    theirs.save_pretrained(tmp_path)  # safetensors by default
    ours, latent_scale = load_diffusers_vae(tmp_path)
    assert ours.config == config and not ours.training
    assert latent_scale == {
        "scaling_factor": 1.0,
        "shift_factor": None,
        "latents_mean": None,
        "latents_std": None,
    }
    assert_same_outputs(ours, theirs, config)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_our_export_loads_in_diffusers_with_the_same_outputs(name, tmp_path):
    config = CONFIGS[name]
    ours = perturbed(AutoencoderKL(config)).eval()
    means, stds = [0.5] * config.latent_channels, [2.0] * config.latent_channels
    folder = export_diffusers_vae(
        ours, tmp_path / "vae", scaling_factor=1.25, latents_mean=means, latents_std=stds
    )
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    theirs = diffusers.AutoencoderKL.from_pretrained(folder).eval()
    assert theirs.config.scaling_factor == 1.25 and list(theirs.config.latents_std) == stds
    assert_same_outputs(ours, theirs, config)
    again, latent_scale = load_diffusers_vae(folder)  # and back into ours, bit for bit
    assert latent_scale["scaling_factor"] == 1.25 and latent_scale["latents_mean"] == means
    for key, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_a_codec_exports_unfolded_with_latents_mean_and_std_as_diffusers_pipelines_read_them(tmp_path):
    """An autoencoder run's export: weights as trained, our per-channel normalisation as latents_mean /
    latents_std with scaling_factor 1, so diffusers' convention (SDXL img2img: (z − mean) · scaling_factor
    / std; its decode: z · std / scaling_factor + mean) gives our codec's encode and decode."""
    config = CONFIGS["f4"]
    mean, std = (-0.6, 0.3, 1.2, 0.0), (0.9, 1.7, 0.4, 1.0)  # far from N(0, I), as real latents are
    codec = LatentCodec(perturbed(AutoencoderKL(config)).eval(), mean, std)
    theirs = diffusers.AutoencoderKL.from_pretrained(export_codec(codec, tmp_path / "vae")).eval()
    assert theirs.config.scaling_factor == 1.0 and theirs.config.shift_factor is None
    torch.testing.assert_close(torch.tensor(theirs.config.latents_mean), torch.tensor(mean))
    torch.testing.assert_close(torch.tensor(theirs.config.latents_std), torch.tensor(std))
    their_mean = torch.tensor(theirs.config.latents_mean).view(1, -1, 1, 1)
    their_std = torch.tensor(theirs.config.latents_std).view(1, -1, 1, 1)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        z = theirs.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(2))  # posterior noise
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(2))  # the same ε
        their_norm = (z - their_mean) * theirs.config.scaling_factor / their_std
        torch.testing.assert_close(their_norm, codec.encode(x, noise), rtol=0, atol=1e-5)
        z_norm = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
        decoded = theirs.decode(z_norm * their_std / theirs.config.scaling_factor + their_mean).sample
        torch.testing.assert_close(decoded, codec.decode(z_norm), rtol=0, atol=1e-5)
    assert (their_norm - z).abs().max() > 0.1  # the normalisation matters
    again, _ = load_diffusers_vae(tmp_path / "vae")  # unfolded: the weights are the codec's own
    for key, tensor in codec.autoencoder.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_a_pipeline_folders_vae_subfolder_is_read(tmp_path):
    config = CONFIGS["f8"]
    diffusers_vae(config).save_pretrained(tmp_path / "vae")
    assert load_diffusers_vae(tmp_path)[0].config == config


def test_attention_weights_under_pre_0_14_names_are_read(tmp_path):
    from safetensors.torch import load_file, save_file

    config = CONFIGS["f4"]
    theirs = diffusers_vae(config)
    theirs.save_pretrained(tmp_path)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    weights = {}
    for key, tensor in load_file(path).items():
        for new, old in legacy.items():
            if f".attentions.0.{new}." in key:
                key, tensor = (
                    key.replace(f".{new}.", f".{old}."),
                    tensor[:, :, None, None] if tensor.ndim == 2 else tensor,
                )
        weights[key] = tensor
    save_file(weights, path)
    assert_same_outputs(load_diffusers_vae(tmp_path)[0], theirs, config)


def test_missing_scaling_factor_reports_diffusers_default():
    _, latent_scale = vae_config_from_diffusers({"_class_name": "AutoencoderKL", "block_out_channels": [32],
                                                 "down_block_types": ["DownEncoderBlock2D"],
                                                 "up_block_types": ["UpDecoderBlock2D"]})  # fmt: skip
    assert latent_scale["scaling_factor"] == 0.18215


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_class_name": "VQModel"},
         r"^diffusers config _class_name='VQModel' is not supported; ours needs 'AutoencoderKL'$"),
        ({"act_fn": "relu"},
         r"^diffusers config act_fn='relu' is not supported; ours needs 'silu' or 'swish'$"),
        ({"use_quant_conv": False},
         r"^diffusers config use_quant_conv=False is not supported; ours needs True$"),
        ({"out_channels": 1},
         r"^diffusers config out_channels=1 is not supported; ours needs in_channels \(3\)$"),
        ({"down_block_types": ["DownEncoderBlock2D"] * 2 + ["AttnDownEncoderBlock2D"]},
         r"^diffusers config down_block_types=.*'AttnDownEncoderBlock2D'.* needs DownEncoderBlock2D for"),
        ({"up_block_types": ["UpDecoderBlock2D"] * 2},
         r"^diffusers config up_block_types=.* ours needs UpDecoderBlock2D"),
        ({"sample_size": [16, 24]},
         r"^diffusers config sample_size=\[16, 24\] is not supported; ours needs one integer"),
        ({"sample_size": 18}, r"^image_size 18 cannot be halved 2 times"),
        ({"norm_num_groups": 3}, r"^norm_num_groups 3 does not divide 8 channels"),
    ],
)  # fmt: skip
def test_unsupported_diffusers_configs_are_refused_in_one_line(change, message, tmp_path):
    raw = {**vae_config_to_diffusers(CONFIGS["f4"]), **change}
    with pytest.raises(ValueError, match=message) as error:
        vae_config_from_diffusers(raw)
    assert "\n" not in str(error.value)
    (tmp_path / "config.json").write_text(json.dumps(raw))  # through the folder reader too
    with pytest.raises(ValueError, match=message):
        load_diffusers_vae(tmp_path)


def test_folders_without_safe_weights_are_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"config.json not found; an AutoencoderKL folder holds config.json and"
    ):
        load_diffusers_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(vae_config_to_diffusers(CONFIGS["f4"])))
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02 a pickle, never opened")
    with pytest.raises(
        ValueError, match=r"safetensors not found \(found a pickled .bin, which is never read\); only"
    ):
        load_diffusers_vae(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json holds a JSON list; a diffusers config is an object$"):
        load_diffusers_vae(tmp_path)


def test_weights_of_another_shape_are_refused(tmp_path):
    diffusers_vae(CONFIGS["f4"]).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "latent_channels": 2}))
    with pytest.raises(
        ValueError,
        match=r"^tensor 'encoder.conv_out.weight' has shape \(8, 16, 3, 3\); this config needs \(4, 16,",
    ):
        load_diffusers_vae(tmp_path)


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (AutoencoderConfig(norm_eps=1e-5), {},
         r"^norm_eps 1e-05 cannot be exported; diffusers' AutoencoderKL fixes it at 1e-06$"),
        (AutoencoderConfig(), {"latents_std": [1.0, 2.0]},
         r"^latents_std has 2 entries; give one per latent channel \(4\)$"),
    ],
)  # fmt: skip
def test_unexportable_autoencoders_are_refused_and_nothing_is_written(config, kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_diffusers_vae(AutoencoderKL(config), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
