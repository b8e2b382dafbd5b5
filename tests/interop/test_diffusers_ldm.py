"""Latent models as diffusers LDMPipeline folders: the exported autoencoder with our per-channel latent
normalisation folded into its 1×1 convolutions decodes (and encodes) as our codec does, and LDMPipeline
run on the folder draws our deterministic DDIM samples given the same initial noise; what LDMPipeline
cannot express is refused in one line with nothing written. Such a folder reads back as a latent model
drawing the original's samples, and any LDMPipeline folder with an AutoencoderKL as LDMPipeline runs it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import LDMPipeline

from ddpm.diffusion.samplers import sample_seeds
from ddpm.interop.diffusers_ldm import check_ldm_exportable, export_ldm, folded_autoencoder
from ddpm.interop.diffusers_model import from_diffusers
from ddpm.interop.diffusers_vae import export_diffusers_vae
from ddpm.model import DiffusionModel, ModelSpec, SamplingConfig, build_model
from ddpm.nets import AutoencoderConfig, AutoencoderKL, UNetConfig
from ddpm.nets.latent_codec import LatentCodec
from tests.interop.test_diffusers import _randomized
from tests.interop.test_diffusers_model import _same_images
from tests.nets.test_unet import perturbed

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

# An f=2 RGB autoencoder (3×8×8 → 3×4×4) and a U-Net with attention on its 4×4 latents.
AE_CONFIG = AutoencoderConfig(in_channels=3, image_size=8, block_out_channels=(8, 16), layers_per_block=1,
                              latent_channels=3, norm_num_groups=4)  # fmt: skip
UNET_CONFIG = UNetConfig(in_channels=3, image_size=4, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                         attention_resolutions=(2,), num_heads=1, num_groups=4)  # fmt: skip
# Latent statistics far from N(0, I), as a real autoencoder's are (latent_codec's note)
MEAN, STD = (-0.6, 0.3, 1.2), (0.9, 1.7, 0.4)


def latent_model(parameterization: str = "eps", spacing: str = "uniform", **spec_changes) -> DiffusionModel:
    """A randomly initialised latent model: perturbed autoencoder weights (every layer matters), a U-Net
    whose zero-initialised output layers are re-drawn, and the normalisation above."""
    torch.manual_seed(0)
    autoencoder = perturbed(AutoencoderKL(AE_CONFIG), seed=1).eval()
    fields = {
        "net": UNET_CONFIG,
        "schedule": "linear",
        "num_steps": 1000,
        "parameterization": parameterization,
        "sample_shape": (3, 8, 8),
        "kind": "images",
        "sampling": SamplingConfig("ddim", 4, spacing),
    }
    spec = ModelSpec(**{**fields, **spec_changes})  # fmt: skip
    net = _randomized(spec.net)
    return build_model(spec, net, codec=LatentCodec(autoencoder, MEAN, STD))


def test_the_folded_autoencoder_decodes_and_encodes_in_normalised_units(tmp_path):
    model = latent_model()
    export_ldm(model, tmp_path)
    theirs = DiffusersAutoencoderKL.from_pretrained(tmp_path / "vqvae").eval()
    assert (theirs.config.scaling_factor, theirs.config.latents_mean) == (1.0, None)  # nothing left to scale
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))  # normalised latents
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        decoded, expected = theirs.decode(z).sample, model.codec.decode(z)
        posterior, (mean, std) = theirs.encode(x).latent_dist, model.codec.posterior(x)
        raw = model.codec.autoencoder.decode(z)
    assert (decoded - raw).abs().max() > 0.1  # folding changed what decoding means...
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-5)  # ...to exactly our codec's
    torch.testing.assert_close(posterior.mean, mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(posterior.std, std, rtol=1e-5, atol=0)
    assert (
        folded_autoencoder(model.codec).post_quant_conv.weight
        is not model.codec.autoencoder.post_quant_conv.weight
    )
    assert torch.equal(model.codec.autoencoder.decode(z), raw)  # the codec itself is untouched


@pytest.mark.parametrize(
    ("parameterization", "spacing"), [("eps", "uniform"), ("v", "trailing"), ("x0", "uniform")]
)
def test_ldm_pipeline_draws_our_ddim_samples_from_the_same_noise(parameterization, spacing, tmp_path):
    """Identical x_T without patching diffusers: LDMPipeline's ``randn_tensor`` given a list of generators
    draws row i as ``torch.randn((1, c, h, w), generator=generators[i])``, exactly how our sampler draws
    x_T for the sample with seed i (``PerSampleGenerators``). So each side draws its own noise from
    generators seeded alike, then runs its own loop (our ddim_sample; DDIMScheduler.step) and decoder."""
    model = latent_model(parameterization, spacing)
    export_ldm(model, tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["vqvae"] == ["diffusers", "AutoencoderKL"] and index["_class_name"] == "LDMPipeline"
    pipeline = LDMPipeline.from_pretrained(tmp_path)
    assert type(pipeline.vqvae).__name__ == "AutoencoderKL"
    assert pipeline.scheduler.config.timestep_spacing == {"uniform": "leading"}.get(spacing, spacing)
    seeds = sample_seeds(4, 3)
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in seeds], eta=0.0,
                      num_inference_steps=4, output_type="np").images  # fmt: skip
    ours = model.sample(seeds=seeds, n=3, sampler="ddim", steps=4, eta=0.0, spacing=spacing)
    _same_images(ours, theirs)  # within 1e-4, most pixels unclamped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"net": dataclasses.replace(UNET_CONFIG, num_classes=10)},
         r"a class-conditional latent model \(10 classes\) cannot be exported: LDMPipeline calls its unet "
         r"without class labels"),
        ({"net": dataclasses.replace(UNET_CONFIG, out_channels=6), "learned_variance": True},
         r"a learned-variance latent model cannot be exported: LDMPipeline's DDIMScheduler takes a unet of C "
         r"output channels, not 2C"),
    ],
)  # fmt: skip
def test_what_ldm_pipeline_cannot_express_is_refused(change, message, tmp_path):
    model = latent_model(**change)
    with pytest.raises(ValueError, match=message):
        export_ldm(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pixel_model_is_no_latent_export(tmp_path):
    spec = ModelSpec(net=UNET_CONFIG, schedule="linear", num_steps=10, parameterization="eps",
                     sample_shape=(3, 4, 4), kind="images")  # fmt: skip
    with pytest.raises(ValueError, match=r"an LDMPipeline export needs a latent diffusion model"):
        check_ldm_exportable(build_model(spec))


@pytest.mark.parametrize(("parameterization", "spacing"), [("eps", "uniform"), ("v", "trailing")])
def test_an_ldm_folder_reads_back_as_the_latent_model_it_came_from(parameterization, spacing, tmp_path):
    """The folded autoencoder is an autoencoder whose latents are already normalised: it reads back as
    our codec with mean 0 and std 1, and the model draws the original's DDIM samples."""
    model = latent_model(parameterization, spacing)
    back = from_diffusers(export_ldm(model, tmp_path))
    assert back.codec is not None and back.space_shape == model.space_shape == (3, 4, 4)
    assert back.sample_shape == (3, 8, 8) and back.parameterization == parameterization
    assert torch.equal(back.codec.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(
        back.codec.std, torch.ones(1, 3, 1, 1)
    )
    assert (back.sampling.sampler, back.sampling.spacing) == ("ddim", spacing)
    options = {"sampler": "ddim", "steps": 4, "eta": 0.0, "eps_scale": 1.0, "spacing": spacing}
    theirs, ours = back.sample(3, seed=5, **options), model.sample(3, seed=5, **options)
    assert ours.std() > 0.1 and (theirs - ours).abs().max() <= 1e-4
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.testing.assert_close(back.encode(x), model.encode(x), rtol=0, atol=1e-5)


def test_an_ldm_folders_scaling_factor_is_read_as_ldm_pipeline_uses_it(tmp_path):
    """LDMPipeline decodes vqvae.decode(z / scaling_factor): with scaling_factor 0.5 written into the
    folder, ours (codec std 1 / 0.5) still draws what LDMPipeline draws from it."""
    export_ldm(latent_model(), tmp_path)
    config_path = tmp_path / "vqvae" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "scaling_factor": 0.5}))
    ours = from_diffusers(tmp_path)
    assert torch.equal(ours.codec.std, torch.full((1, 3, 1, 1), 2.0))
    pipeline = LDMPipeline.from_pretrained(tmp_path)
    pipeline.set_progress_bar_config(disable=True)
    seeds = sample_seeds(6, 2)
    theirs = pipeline(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds], eta=0.0,
                      num_inference_steps=4, output_type="np").images  # fmt: skip
    _same_images(ours.sample(seeds=seeds, n=2, sampler="ddim", steps=4, eta=0.0), theirs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scaling_factor": 0},
         r"^diffusers config scaling_factor=0 is not supported; ours needs a number > 0 "
         r"\(LDMPipeline decodes z / scaling_factor\)$"),
        ({"sample_size": 16},
         r"^the vqvae encodes 16×16 images to latents of shape \(3, 8, 8\), but the unet denoises "
         r"\(3, 4, 4\) \(in_channels, sample_size\): they must agree$"),
    ],
)  # fmt: skip
def test_an_ldm_folder_whose_parts_do_not_fit_is_refused_in_one_line(change, message, tmp_path):
    export_ldm(latent_model(), tmp_path)
    config_path = tmp_path / "vqvae" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **change}))
    with pytest.raises(ValueError, match=message) as caught:
        from_diffusers(tmp_path)
    assert "\n" not in str(caught.value)


def test_an_ldm_folder_whose_vqvae_has_other_latent_channels_is_refused(tmp_path):
    export_ldm(latent_model(), tmp_path)
    other = AutoencoderKL(dataclasses.replace(AE_CONFIG, latent_channels=4))
    export_diffusers_vae(other, tmp_path / "vqvae")  # replaces the weights and config
    message = (
        r"^the vqvae encodes 8×8 images to latents of shape \(4, 4, 4\), but the unet denoises \(3, 4, 4\)"
    )
    with pytest.raises(ValueError, match=message):
        from_diffusers(tmp_path)
