"""diffusers folders as the one model object, in both layouts diffusers writes, and our models as folders
diffusers runs: the same images as its own schedulers' loops given the same noise."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

import ddpm
from ddpm.diffusion import make_schedule
from ddpm.diffusion.samplers import SAMPLERS, sample_seeds
from ddpm.interop.diffusers import is_diffusers_folder, load_diffusers_pipeline
from ddpm.interop.diffusers_model import (
    check_exportable,
    default_sampling,
    export_model,
    from_diffusers,
    schedule_name,
)
from ddpm.model import DiffusionModel, ModelSpec, SamplingConfig, build_model
from ddpm.nets import MLPConfig, UNetConfig
from tests.interop.test_diffusers import SMALL_CONFIG, _diffusers_unet, _randomized

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _write_both_layouts(folder, scheduler: DDPMScheduler, unet: UNet2DModel | None = None) -> dict:
    """The same model as diffusers' save_pretrained writes it: flat (bare UNet2DModel + scheduler in one
    folder, as google/ddpm-cifar10-32) and pipeline (DDPMPipeline: unet/, scheduler/, model_index.json)."""
    unet = unet or _diffusers_unet(SMALL_CONFIG, seed=3)
    unet.save_pretrained(folder / "flat")
    scheduler.save_pretrained(folder / "flat")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder / "pipeline")
    return {"unet": unet, "flat": folder / "flat", "pipeline": folder / "pipeline"}


def _v_scheduler(variance_type: str = "fixed_small") -> DDPMScheduler:
    """v-prediction keeps a random net's x̂₀ mostly inside [−1, 1]: comparisons are not of clipped values."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                         variance_type=variance_type, prediction_type="v_prediction")  # fmt: skip


def _as_pipeline_images(samples: torch.Tensor) -> torch.Tensor:
    """Ours (B, C, H, W) in [−1, 1] as DDPMPipeline's output_type="np" (B, H, W, C) in [0, 1]."""
    return (samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)


def _same_images(ours: torch.Tensor, theirs) -> None:
    theirs = torch.as_tensor(theirs)
    assert ((theirs > 0.01) & (theirs < 0.99)).float().mean() > 0.5  # mostly unclipped: a real comparison
    assert (_as_pipeline_images(ours) - theirs).abs().max() <= 1e-4


def test_the_flat_layout_and_the_pipeline_layout_load_the_same_model(tmp_path):
    written = _write_both_layouts(tmp_path, _v_scheduler())
    assert sorted(p.name for p in written["flat"].iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"
    ]  # fmt: skip
    x, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 700])
    with torch.no_grad():
        expected = written["unet"](x, t).sample
    for layout in ("flat", "pipeline"):
        assert is_diffusers_folder(written[layout])
        net, schedule, parameterization, extra = load_diffusers_pipeline(written[layout])
        assert parameterization == "v" and extra["variance"] == "beta_tilde" and schedule.num_steps == 1000
        assert extra["pipeline_class"] == (None if layout == "flat" else "DDPMPipeline")
        with torch.no_grad():
            assert (net(x, t) - expected).abs().max() <= 1e-4


def test_a_diffusers_folder_is_a_model_with_ddim_50_as_its_own_sampler(tmp_path):
    written = _write_both_layouts(tmp_path, _v_scheduler("fixed_large"))
    model = from_diffusers(written["flat"])
    assert isinstance(model, DiffusionModel) and ddpm.load(written["pipeline"]).spec == model.spec
    assert model.spec.sampling == SamplingConfig("ddim", steps=50, spacing="uniform")
    assert (model.kind, model.sample_shape, model.parameterization) == ("images", (3, 8, 8), "v")
    assert model.spec.schedule == "linear" and model.spec.variance == "beta"
    assert not model.net.training
    # trailing spacing carries over; a leading spacing with an offset is not one of ours
    assert default_sampling({"timestep_spacing": "trailing"}, 1000).spacing == "trailing"
    assert default_sampling({"timestep_spacing": "leading", "steps_offset": 1}, 1000).spacing is None
    assert default_sampling({"timestep_spacing": "linspace"}, 20) == SamplingConfig("ddim", steps=20)


def test_schedules_that_are_not_ours_keep_their_diffusers_name(tmp_path):
    scaled = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                           beta_end=0.012)  # fmt: skip
    model = from_diffusers(_write_both_layouts(tmp_path, scaled)["flat"])
    assert model.spec.schedule == "diffusers:scaled_linear"
    torch.testing.assert_close(model.schedule.alpha_bar, scaled.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    cosine = make_schedule("cosine", 100)
    assert schedule_name(cosine, "squaredcos_cap_v2") == "cosine"


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_draws_from_a_diffusers_folder(tmp_path, sampler):
    model = from_diffusers(_write_both_layouts(tmp_path, _v_scheduler())["flat"])
    samples = model.sample(2, sampler=sampler, steps=3, seed=4)
    assert samples.shape == (2, 3, 8, 8) and torch.isfinite(samples).all()
    assert samples.abs().max() <= 1 + 1e-6 and samples.std() > 0.05


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_the_ddpm_sampler_of_an_imported_folder_is_ddpm_pipelines_loop(tmp_path, variance_type):
    """The folder's variance_type travels with the model: β̃ for fixed_small, β for fixed_large."""
    written = _write_both_layouts(tmp_path, _v_scheduler(variance_type))
    seeds = sample_seeds(21, 2)
    pipeline = DDPMPipeline.from_pretrained(written["pipeline"])
    theirs = pipeline(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds],
                      num_inference_steps=10, output_type="np").images  # fmt: skip
    model = from_diffusers(written["flat"])
    _same_images(model.sample(seeds=seeds, n=2, sampler="ddpm", steps=10), theirs)


def test_a_learned_range_folder_samples_with_its_learned_variance(tmp_path):
    unet = _diffusers_unet({**SMALL_CONFIG, "out_channels": 6}, seed=5)  # ε̂ (or v̂), then the variance
    written = _write_both_layouts(tmp_path, _v_scheduler("learned_range"), unet)
    model = from_diffusers(written["flat"])
    assert model.spec.learned_variance and model.sample_shape == (3, 8, 8)
    seeds = sample_seeds(22, 2)
    theirs = DDPMPipeline.from_pretrained(written["pipeline"])(
        batch_size=2, generator=[torch.Generator().manual_seed(s) for s in seeds], num_inference_steps=10,
        output_type="np",
    ).images  # fmt: skip
    _same_images(model.sample(seeds=seeds, n=2, sampler="ddpm", steps=10), theirs)


def _exportable_model(parameterization: str = "v", num_classes: int | None = None) -> DiffusionModel:
    config = UNetConfig(in_channels=1, image_size=16, base_channels=16, channel_mult=(1, 2, 2),
                        num_res_blocks=1, attention_resolutions=(8, 4), num_heads=2, dropout=0.0,
                        num_groups=4, num_classes=num_classes)  # fmt: skip
    spec = ModelSpec(net=config, schedule="linear", num_steps=1000, parameterization=parameterization,
                     sample_shape=(1, 16, 16), kind="images")  # fmt: skip
    return build_model(spec, _randomized(config, seed=7))


def test_an_exported_model_runs_in_ddpm_pipeline_with_our_ddpm_images(tmp_path):
    model = _exportable_model()
    export_model(model, tmp_path / "out")
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "out")
    assert pipeline.scheduler.config.variance_type == "fixed_large"  # our ancestral sampler's σ² = β
    seeds = sample_seeds(5, 3)
    theirs = pipeline(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in seeds],
                      num_inference_steps=12, output_type="np").images  # fmt: skip
    _same_images(model.sample(seeds=seeds, n=3, sampler="ddpm", steps=12), theirs)


def test_an_exported_model_under_diffusers_ddim_loop_gives_our_ddim_images_from_our_noise(tmp_path):
    model = _exportable_model()
    export_model(model, tmp_path / "out")
    unet = UNet2DModel.from_pretrained(tmp_path / "out" / "unet").eval()
    scheduler = DDIMScheduler.from_pretrained(tmp_path / "out" / "scheduler")
    x_T = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    scheduler.set_timesteps(10)
    x = x_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:  # DDIMPipeline's loop, with our x_T
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    ours = model.sample(noise=x_T, sampler="ddim", steps=10)
    _same_images(ours, _as_pipeline_images(x))


def test_a_class_conditional_export_holds_its_labels(tmp_path):
    model = _exportable_model(num_classes=3)
    export_model(model, tmp_path / "out")
    unet = UNet2DModel.from_pretrained(tmp_path / "out" / "unet").eval()
    assert unet.config.num_class_embeds == 4  # row 3: no label (classifier-free guidance)
    x, t, labels = torch.randn(2, 1, 16, 16), torch.tensor([10, 800]), torch.tensor([2, 3])
    with torch.no_grad():
        theirs, ours = unet(x, t, class_labels=labels).sample, model.net(x, t, class_labels=labels)
    assert (theirs - ours).abs().max() < 1e-4 and ours.abs().max() > 0.1
    assert from_diffusers(tmp_path / "out").num_classes == 3


def test_exports_diffusers_cannot_hold_are_refused(tmp_path):
    points = build_model(ModelSpec(net=MLPConfig(), schedule="linear", num_steps=100, parameterization="eps",
                                   sample_shape=(2,), kind="points"))  # fmt: skip
    message = r"^a model of points \(MLPDenoiser\) cannot be exported to diffusers: UNet2DModel holds image"
    with pytest.raises(ValueError, match=message):
        check_exportable(points)
    with pytest.raises(ValueError, match="cannot be exported to diffusers"):
        export_model(points, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("component", "message"),
    [
        ({"text_encoder": ["transformers", "CLIPTextModel"]},
         r"model_index\.json names a LDMPipeline with components scheduler, text_encoder, unet; only a U-Net "
         r"and a scheduler \(DDPMPipeline, DDIMPipeline\), with an AutoencoderKL vqvae for LDMPipeline, can "
         r"be read$"),
        ({"vqvae": ["diffusers", "VQModel"]},  # CompVis/ldm-celebahq-256
         r"model_index\.json names vqvae \['diffusers', 'VQModel'\]; only a diffusers AutoencoderKL "
         r"\(KL-regularised, as ddpm train --kind autoencoder\) can be read, not a VQModel's codebook$"),
    ],
)  # fmt: skip
def test_pipelines_beyond_ddpm_and_a_kl_ldm_are_refused(tmp_path, component, message):
    written = _write_both_layouts(tmp_path, _v_scheduler())
    index_path = written["pipeline"] / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(_class_name="LDMPipeline", **component)
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message):
        from_diffusers(written["pipeline"])


def test_a_folder_missing_a_part_says_which_and_what_a_folder_holds(tmp_path):
    written = _write_both_layouts(tmp_path, _v_scheduler())
    (written["flat"] / "scheduler_config.json").unlink()
    with pytest.raises(ValueError, match=r"flat/scheduler_config\.json not found; a diffusers model folder "
                                         r"holds unet/ and scheduler/ subfolders .* or config\.json, "
                                         r"diffusion_pytorch_model\.safetensors and scheduler_config\.json "
                                         r"side by side"):  # fmt: skip
        from_diffusers(written["flat"])
    (written["pipeline"] / "unet" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"pipeline/unet/config\.json not found"):
        from_diffusers(written["pipeline"])
    assert not is_diffusers_folder(tmp_path / "nothing") and not is_diffusers_folder(tmp_path / "flat" / "x")
