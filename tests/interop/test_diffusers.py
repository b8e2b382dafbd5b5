"""diffusers-format import/export: same outputs as UNet2DModel, same sampling runs as diffusers' pipelines.

diffusers is the oracle: its randomly initialised UNet2DModel, saved by save_pretrained as safetensors,
must load into our U-Net with the same outputs, and our export must load back into diffusers.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from diffusers import DDIMPipeline, DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import ancestral_sample, ddim_sample, sample_seeds
from ddpm.diffusion.schedules import make_schedule
from ddpm.interop.diffusers import (
    export_diffusers,
    load_diffusers_pipeline,
    load_diffusers_unet,
    schedule_from_diffusers,
    unet_config_to_diffusers,
)
from ddpm.nets import UNET_PRESETS, MLPConfig, MLPDenoiser, UNet, UNetConfig

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

# unet/config.json of google/ddpm-cifar10-32 as diffusers ≥ 0.24 writes it.
CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "add_attention": True, "attention_head_dim": None,
    "attn_norm_num_groups": None, "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "class_embed_type": None,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "downsample_type": "conv", "dropout": 0.0, "flip_sin_to_cos": False,
    "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06,
    "norm_num_groups": 32, "num_class_embeds": None, "num_train_timesteps": None, "out_channels": 3,
    "resnet_time_scale_shift": "default", "sample_size": 32, "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "upsample_type": "conv",
}  # fmt: skip
# The same family shrunk: two levels, attention at 4×4, 8-dimensional heads (8 heads at 64 channels).
SMALL_CONFIG = {
    **CIFAR10_CONFIG, "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": 8, "attention_head_dim": 8,
}  # fmt: skip


def _diffusers_unet(config: dict, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    with torch.no_grad():  # non-trivial norms and biases too, not only diffusers' default init
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return unet


def _outputs_agree(theirs: UNet2DModel, ours: UNet, size: int, class_labels=None) -> None:
    x = torch.randn(2, theirs.config.in_channels, size, size, generator=torch.Generator().manual_seed(1))
    for t in (torch.tensor([0, 999]), torch.tensor([10.5, 500.25])):
        with torch.no_grad():
            expected = theirs(x, t, class_labels=class_labels).sample
            got = ours(x, t, class_labels=class_labels)
        assert expected.abs().max() > 0.1  # a real signal, not two zero maps
        assert (got - expected).abs().max() <= 1e-4


def test_the_ddpm_cifar10_32_unet_loads_with_the_same_outputs(tmp_path):
    theirs = _diffusers_unet(CIFAR10_CONFIG)
    theirs.save_pretrained(tmp_path / "unet", safe_serialization=True)
    assert not (tmp_path / "unet" / "diffusion_pytorch_model.bin").exists()
    ours, config = load_diffusers_unet(tmp_path)
    assert config == dataclasses.replace(UNET_PRESETS["ddpm-cifar10"], dropout=0.0)
    assert not ours.training
    _outputs_agree(theirs, ours, 32)


def test_our_ddpm_cifar10_preset_exports_the_published_config():
    preset = dataclasses.replace(UNET_PRESETS["ddpm-cifar10"], dropout=0.0)
    exported = unet_config_to_diffusers(preset)
    assert {key: exported[key] for key in CIFAR10_CONFIG} == CIFAR10_CONFIG


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attention_head_dim": None},  # one head
        {"num_class_embeds": 4},  # our num_classes = 3, the fourth row being 'no label'
        {"block_out_channels": [32, 64, 64],  # three levels, two heads of 32
         "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
         "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
         "attention_head_dim": 32, "sample_size": 16, "layers_per_block": 2, "dropout": 0.1},
    ],
)  # fmt: skip
def test_small_unets_load_with_the_same_outputs(tmp_path, changes):
    config = {**SMALL_CONFIG, **changes}
    theirs = _diffusers_unet(config)
    theirs.save_pretrained(tmp_path / "model" / "unet", safe_serialization=True)
    ours, our_config = load_diffusers_unet(tmp_path / "model" / "unet")  # the unet folder itself works too
    labels = torch.tensor([0, 3]) if "num_class_embeds" in changes else None
    _outputs_agree(theirs, ours, config["sample_size"], class_labels=labels)
    if "num_class_embeds" in changes:
        assert our_config.num_classes == 3


def test_a_config_without_attention_head_dim_gets_diffusers_default(tmp_path):
    config = {k: v for k, v in SMALL_CONFIG.items() if k != "attention_head_dim"}
    theirs = _diffusers_unet(config)
    theirs.save_pretrained(tmp_path / "unet", safe_serialization=True)
    written = json.loads((tmp_path / "unet" / "config.json").read_text())
    del written["attention_head_dim"]  # as in configs older than the key
    (tmp_path / "unet" / "config.json").write_text(json.dumps(written))
    ours, config = load_diffusers_unet(tmp_path)
    assert config.num_heads == 64 // 8
    _outputs_agree(theirs, ours, 8)


def test_legacy_attention_names_load(tmp_path):
    """Checkpoints converted before diffusers 0.14 name attention weights query/key/value/proj_attn."""
    theirs = _diffusers_unet(SMALL_CONFIG)
    theirs.save_pretrained(tmp_path / "unet", safe_serialization=True)
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for name, tensor in load_file(path).items():
        for new, old in old_names.items():
            name = name.replace(f".{new}.", f".{old}.")
        legacy[name] = tensor
    assert "mid_block.attentions.0.proj_attn.weight" in legacy
    save_file(legacy, path)
    ours, _ = load_diffusers_unet(tmp_path)
    _outputs_agree(theirs, ours, 8)


def _randomized(config: UNetConfig, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(config)
    with torch.no_grad():  # our init zeroes every residual branch's last layer: undo that
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)):
                module.reset_parameters()
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return net.eval()


@pytest.mark.parametrize("num_classes", [None, 3])
def test_export_loads_back_into_diffusers_with_the_same_outputs(tmp_path, num_classes):
    config = UNetConfig(
        in_channels=1, image_size=16, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(8, 4), num_heads=2, dropout=0.0, num_groups=4, num_classes=num_classes,
    )  # fmt: skip
    ours = _randomized(config)
    schedule = make_schedule("cosine", 500)
    export_diffusers(ours, config, schedule, "v", tmp_path, clip_x0=1.0, variance="beta")
    theirs = UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    _outputs_agree(theirs, ours, 16, class_labels=None if num_classes is None else torch.tensor([2, 0]))
    pipeline = DDPMPipeline.from_pretrained(tmp_path)
    scheduler_config = pipeline.scheduler.config
    assert scheduler_config.beta_schedule == "squaredcos_cap_v2" and scheduler_config.trained_betas is None
    assert (
        scheduler_config.prediction_type == "v_prediction" and scheduler_config.variance_type == "fixed_large"
    )
    assert scheduler_config.clip_sample and scheduler_config.clip_sample_range == 1.0
    torch.testing.assert_close(
        pipeline.scheduler.alphas_cumprod.double(), schedule.alpha_bar, rtol=1e-5, atol=1e-7
    )
    # and back into ours: the same net, schedule and settings
    net, schedule_back, parameterization, extra = load_diffusers_pipeline(tmp_path)
    assert extra["unet_config"] == config and parameterization == "v"
    assert extra["clip_x0"] == 1.0 and extra["variance"] == "beta"
    torch.testing.assert_close(schedule_back.alpha_bar, schedule.alpha_bar, rtol=1e-12, atol=0)
    for key, tensor in ours.state_dict().items():
        assert torch.equal(net.state_dict()[key], tensor), key


@pytest.mark.parametrize(("schedule_name", "recipe"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                                                        ("sigmoid", None)])  # fmt: skip
def test_exported_schedules_load_into_ddpm_scheduler(tmp_path, schedule_name, recipe):
    config = dataclasses.replace(UNET_PRESETS["digits"], dropout=0.0)
    schedule = make_schedule(schedule_name, 1000)
    export_diffusers(UNet(config), config, schedule, "eps", tmp_path)
    written = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert (written["trained_betas"] is None) == (recipe is not None)
    if recipe is not None:
        assert written["beta_schedule"] == recipe
    scheduler = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), schedule.alpha_bar, rtol=1e-5, atol=1e-7)
    assert not scheduler.config.clip_sample and scheduler.config.variance_type == "fixed_small"


def _same_images(ours: torch.Tensor, theirs) -> None:
    """Our samples (B, C, H, W) in [−1, 1] against a pipeline's (B, H, W, C) numpy images in [0, 1]."""
    theirs = torch.from_numpy(theirs)
    assert ((theirs > 0.01) & (theirs < 0.99)).float().mean() > 0.5  # mostly unclipped: a real comparison
    assert ((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) - theirs).abs().max() <= 1e-4


def _small_pipeline_folder(tmp_path, variance_type: str):
    """A v-prediction pipeline: a random ε-net's x̂₀ would be clipped almost everywhere, a v-net's is not."""
    unet = _diffusers_unet(SMALL_CONFIG, seed=3)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                              variance_type=variance_type, prediction_type="v_prediction")  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path, safe_serialization=True)
    return unet, scheduler


@pytest.mark.parametrize(
    ("variance_type", "variance"), [("fixed_small", "beta_tilde"), ("fixed_large", "beta")]
)
def test_ddpm_sampling_with_the_imported_model_matches_diffusers_pipeline(tmp_path, variance_type, variance):
    unet, scheduler = _small_pipeline_folder(tmp_path, variance_type)
    net, schedule, parameterization, extra = load_diffusers_pipeline(tmp_path)
    assert parameterization == "v" and extra["clip_x0"] == 1.0 and extra["variance"] == variance
    seeds = sample_seeds(11, 2)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    theirs = DDPMPipeline(unet=unet, scheduler=scheduler)(
        batch_size=2, generator=generators, num_inference_steps=10, output_type="np"
    ).images  # (B, H, W, C) in [0, 1]
    with torch.no_grad():
        denoiser = Parameterized(net, schedule, parameterization, clip_x0=extra["clip_x0"])
        ours = ancestral_sample(
            denoiser, schedule, (2, 3, 8, 8), steps=10, variance=extra["variance"], seeds=seeds
        )
    _same_images(ours.samples, theirs)


def test_ddim_sampling_with_the_imported_model_matches_diffusers_pipeline(tmp_path):
    unet, scheduler = _small_pipeline_folder(tmp_path, "fixed_small")
    net, schedule, parameterization, extra = load_diffusers_pipeline(tmp_path)
    seeds = sample_seeds(12, 2)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    # Ours recomputes ε̂ from the clipped x̂₀: diffusers' use_clipped_model_output=True.
    theirs = DDIMPipeline(unet=unet, scheduler=scheduler)(
        batch_size=2, generator=generators, eta=0.0, num_inference_steps=10, use_clipped_model_output=True,
        output_type="np",
    ).images  # fmt: skip
    with torch.no_grad():
        denoiser = Parameterized(net, schedule, parameterization, clip_x0=extra["clip_x0"])
        ours = ddim_sample(denoiser, schedule, (2, 3, 8, 8), steps=10, seeds=seeds)
    _same_images(ours.samples, theirs)


# --- Learned variances (variance_type="learned_range") ---------------------------------------------------


def test_ancestral_sampling_of_an_imported_learned_variance_model_matches_diffusers_pipeline(tmp_path):
    """A UNet2DModel with out_channels = 2·in_channels and learned_range: our ancestral sampler with its
    learned variance draws the pipeline's images from the same noise."""
    unet = _diffusers_unet({**SMALL_CONFIG, "out_channels": 6}, seed=5)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                              variance_type="learned_range", prediction_type="v_prediction")  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path, safe_serialization=True)
    net, schedule, parameterization, extra = load_diffusers_pipeline(tmp_path)
    assert extra["learned_variance"] and extra["unet_config"].resolved_out_channels == 6
    seeds = sample_seeds(13, 2)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    theirs = DDPMPipeline(unet=unet, scheduler=scheduler)(
        batch_size=2, generator=generators, num_inference_steps=10, output_type="np"
    ).images
    with torch.no_grad():
        denoiser = Parameterized(
            net, schedule, parameterization, clip_x0=extra["clip_x0"], learned_variance=True
        )
        ours = ancestral_sample(denoiser, schedule, (2, 3, 8, 8), steps=10, seeds=seeds)
        fixed = Parameterized(lambda x, t: net(x, t)[:, :3], schedule, parameterization, clip_x0=1.0)
        without = ancestral_sample(
            fixed, schedule, (2, 3, 8, 8), steps=10, variance=extra["variance"], seeds=seeds
        )
    _same_images(ours.samples, theirs)
    assert (ours.samples - without.samples).abs().max() > 1e-2  # the learned variance made a difference


def test_a_learned_variance_model_exports_as_learned_range_and_loads_back(tmp_path):
    config = UNetConfig(in_channels=1, out_channels=2, image_size=8, base_channels=16, channel_mult=(1, 2),
                        num_res_blocks=1, attention_resolutions=(4,), num_heads=1, dropout=0.0,
                        num_groups=4)  # fmt: skip
    ours = _randomized(config)
    schedule = make_schedule("linear", 1000)
    export_diffusers(ours, config, schedule, "eps", tmp_path, learned_variance=True)
    scheduler = DDPMScheduler.from_pretrained(tmp_path / "scheduler")
    assert scheduler.config.variance_type == "learned_range"
    theirs = UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    assert theirs.config.out_channels == 2
    _outputs_agree(theirs, ours, 8)
    _, _, _, extra = load_diffusers_pipeline(tmp_path)
    assert extra["learned_variance"] and extra["unet_config"] == config
    with pytest.raises(ValueError, match=r"the U-Net has out_channels=2 for in_channels=1, but a scheduler "
                                         r"with a fixed variance needs out_channels=1"):  # fmt: skip
        export_diffusers(ours, config, schedule, "eps", tmp_path / "fixed")


def test_variance_channels_that_do_not_fit_the_scheduler_are_refused(tmp_path):
    _small_pipeline_folder(tmp_path, "fixed_small")  # out_channels = in_channels = 3
    scheduler_path = tmp_path / "scheduler" / "scheduler_config.json"
    written = json.loads(scheduler_path.read_text())
    scheduler_path.write_text(json.dumps({**written, "variance_type": "learned_range"}))
    message = r"out_channels=3 for in_channels=3, but a scheduler with learned_range \(learned variance\)"
    with pytest.raises(ValueError, match=message + " needs out_channels=6"):
        load_diffusers_pipeline(tmp_path)
    assert schedule_from_diffusers(written)[2]["learned_variance"] is False


# --- Refusals ------------------------------------------------------------------------------------------


def _write_unet_folder(folder, config: dict, weights: bool = True) -> None:
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    if weights:
        save_file({"x": torch.zeros(1)}, folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_a_folder_without_safetensors_weights_is_refused(tmp_path):
    _write_unet_folder(tmp_path, SMALL_CONFIG, weights=False)
    with pytest.raises(
        ValueError, match=r"unet/diffusion_pytorch_model\.safetensors not found; only safetensors"
    ):
        load_diffusers_unet(tmp_path)


def test_pickled_bin_weights_are_never_read(tmp_path):
    _write_unet_folder(tmp_path, SMALL_CONFIG, weights=False)
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(
        ValueError, match=r"safetensors not found \(found a pickled \.bin, which is never read\)"
    ):
        load_diffusers_unet(tmp_path)


def test_missing_or_broken_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json not found; a diffusers model folder holds unet/ and "
                                         r"scheduler/ subfolders"):  # fmt: skip
        load_diffusers_unet(tmp_path)
    _write_unet_folder(tmp_path, SMALL_CONFIG)  # unet/ without scheduler/: then at the top, as diffusers
    with pytest.raises(ValueError, match=r"scheduler_config\.json not found"):
        load_diffusers_pipeline(tmp_path)
    with pytest.raises(ValueError, match=r"'.*missing' is not a folder; a diffusers model folder holds"):
        load_diffusers_pipeline(tmp_path / "missing")
    (tmp_path / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_diffusers_unet(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resnet_time_scale_shift": "scale_shift"},
         "resnet_time_scale_shift='scale_shift' is not supported; ours needs 'default'"),
        ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]},
         "down_block_types='CrossAttnDownBlock2D' is not supported; ours needs DownBlock2D or AttnDown"),
        ({"up_block_types": ["UpBlock2D", "ResnetUpsampleBlock2D"]},
         "up_block_types='ResnetUpsampleBlock2D'"),
        ({"up_block_types": ["UpBlock2D", "AttnUpBlock2D"]},
         "up_block_types=.* ours needs attention at the same levels as down_block_types"),
        ({"down_block_types": ["DownBlock2D"]},
         "down_block_types=.* ours needs one down and one up block type per block_out_channels entry"),
        ({"downsample_padding": 1}, "downsample_padding=1 is not supported; ours needs 0"),
        ({"flip_sin_to_cos": True}, "flip_sin_to_cos=True"),
        ({"freq_shift": 0}, "freq_shift=0"),
        ({"freq_shift": True}, "freq_shift=True"),
        ({"time_embedding_type": "fourier"}, "time_embedding_type='fourier'"),
        ({"center_input_sample": True}, "center_input_sample=True"),
        ({"class_embed_type": "timestep"}, "class_embed_type='timestep'"),
        ({"mid_block_scale_factor": 2}, "mid_block_scale_factor=2"),
        ({"add_attention": False}, "add_attention=False"),
        ({"act_fn": "gelu"}, "act_fn='gelu' is not supported; ours needs 'silu' or 'swish'"),
        ({"upsample_type": "resnet"}, "upsample_type='resnet'"),
        ({"block_out_channels": [32, 48]}, "block_out_channels=\\[32, 48\\]"),
        ({"attention_head_dim": 24}, "attention_head_dim=24 is not supported; ours needs one head count"),
        ({"time_embedding_dim": 64}, "time_embedding_dim=64"),
        ({"attn_norm_num_groups": 4}, "attn_norm_num_groups=4"),
        ({"norm_num_groups": None}, "norm_num_groups=None"),
        ({"sample_size": None}, "sample_size=None is not supported; ours needs one integer image size"),
        ({"sample_size": [8, 16]}, "sample_size=\\[8, 16\\]"),
        ({"num_class_embeds": 1}, "num_class_embeds=1"),
        ({"_class_name": "UNet2DConditionModel"}, "_class_name='UNet2DConditionModel'"),
    ],
)  # fmt: skip
def test_configs_ours_cannot_represent_are_refused(tmp_path, changes, message):
    _write_unet_folder(tmp_path, {**SMALL_CONFIG, **changes})
    with pytest.raises(ValueError, match=f"^diffusers config {message}"):
        load_diffusers_unet(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    theirs = _diffusers_unet(SMALL_CONFIG)
    theirs.save_pretrained(tmp_path / "unet", safe_serialization=True)
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    save_file({**weights, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"unexpected tensor 'extra\.weight' in the diffusers weights"):
        load_diffusers_unet(tmp_path)
    save_file({k: v for k, v in weights.items() if k != "conv_out.bias"}, path)
    with pytest.raises(ValueError, match=r"tensor 'conv_out\.bias' is missing from the diffusers weights"):
        load_diffusers_unet(tmp_path)
    save_file({**weights, "conv_out.bias": torch.zeros(5)}, path)
    with pytest.raises(
        ValueError, match=r"tensor 'conv_out\.bias' has shape \(5,\); this config needs \(3,\)"
    ):
        load_diffusers_unet(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"thresholding": True}, "thresholding=True is not supported"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True is not supported"),
        ({"beta_schedule": "laplace"}, "beta_schedule='laplace' is not supported"),
        ({"prediction_type": "flow_prediction"}, "prediction_type='flow_prediction' is not supported"),
        ({"variance_type": "learned"}, "variance_type='learned' is not supported"),  # learned_range is
    ],
)
def test_scheduler_configs_ours_cannot_represent_are_refused(changes, message):
    with pytest.raises(ValueError, match=f"^diffusers config {message}"):
        schedule_from_diffusers({"_class_name": "DDPMScheduler", **changes})


def test_scheduler_recipes_match_diffusers():
    for recipe in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"):
        raw = {"num_train_timesteps": 1000, "beta_schedule": recipe, "beta_start": 0.0001, "beta_end": 0.02}
        schedule, parameterization, extra = schedule_from_diffusers(raw)
        expected = DDPMScheduler(**raw).alphas_cumprod.double()
        torch.testing.assert_close(schedule.alpha_bar, expected, rtol=1e-5, atol=1e-7)
    assert parameterization == "eps" and extra["clip_x0"] == 1.0 and extra["timestep_spacing"] == "leading"
    trained = schedule_from_diffusers({"trained_betas": [0.1, 0.2], "clip_sample": False})
    assert trained[0].betas.tolist() == [0.1, 0.2] and trained[2]["clip_x0"] is None


def test_exports_ours_cannot_write_are_refused(tmp_path):
    schedule = make_schedule("linear", 100)
    config = UNetConfig(in_channels=1, image_size=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                        attention_resolutions=(8,), num_heads=2, num_groups=4)  # fmt: skip
    with pytest.raises(ValueError, match=r"num_heads=2 gives head sizes \[8, 16\] across attention levels"):
        unet_config_to_diffusers(config)
    no_conv = dataclasses.replace(config, num_heads=1, resamp_with_conv=False)
    with pytest.raises(ValueError, match=r"resamp_with_conv=False cannot be exported"):
        export_diffusers(UNet(no_conv), no_conv, schedule, "eps", tmp_path)
    with pytest.raises(ValueError, match=r"export_diffusers needs a UNet, got MLPDenoiser"):
        export_diffusers(MLPDenoiser(MLPConfig()), config, schedule, "eps", tmp_path)
    fine = dataclasses.replace(config, num_heads=1)
    with pytest.raises(ValueError, match=r"is not the net's config"):
        export_diffusers(UNet(fine), config, schedule, "eps", tmp_path)
    with pytest.raises(ValueError, match=r"unknown variance 'learned'; allowed: beta_tilde, beta"):
        export_diffusers(UNet(fine), fine, schedule, "eps", tmp_path, variance="learned")
    with pytest.raises(ValueError, match=r"unknown parameterization 'score'"):
        export_diffusers(UNet(fine), fine, schedule, "score", tmp_path)
    assert not (tmp_path / "unet").exists()  # nothing written by a refused export
