"""Latent models as diffusers LDMPipeline folders: the exported autoencoder with our per-channel latent
normalisation folded into its 1×1 convolutions decodes (and encodes) as our codec does, and LDMPipeline
run on the folder draws our deterministic DDIM samples given the same initial noise; what LDMPipeline
cannot express is refused in one line with nothing written."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import LDMPipeline

from ddpm.diffusion.samplers import sample_seeds
from ddpm.interop.diffusers_ldm import check_ldm_exportable, export_ldm, folded_autoencoder
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
