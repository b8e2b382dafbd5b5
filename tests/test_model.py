"""The one model object: its spec read from a stored config, its own sampler as every default, the one
sampling path (epsilon scaling, labels, noise), and ``import ddpm; ddpm.load(...)``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import ddpm
from ddpm.diffusion.samplers import SAMPLERS, per_sample_noise, sample_seeds
from ddpm.model import ModelSpec, SamplingConfig, build_model, load
from ddpm.train.config import config_to_dict, model_spec
from ddpm.train.presets import get_preset
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_spec(get_preset("digits"), (1, 8, 8), "images"))  # untrained: wiring under test


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = tiny_digits_config()  # the digits preset's own sampler, at 5 steps
    out = tmp_path_factory.mktemp("run") / "digits"
    train(config, out)
    return out


def test_the_spec_reads_only_the_model_diffusion_and_sampler_sections():
    config = config_to_dict(get_preset("digits"))
    spec = ModelSpec.from_config(config, (1, 8, 8), "images")
    assert spec.net == get_preset("digits").model
    assert (spec.schedule, spec.num_steps, spec.parameterization) == ("linear", 1000, "eps")
    assert spec.sampling == SamplingConfig("dpm++2m_sde", 20, "trailing", 1.06)
    del config["data"], config["optim"]  # training's business: the model never needs them
    assert ModelSpec.from_config(config, (1, 8, 8), "images") == spec


def test_a_config_without_sampler_keys_gets_the_run_config_defaults():
    assert SamplingConfig.from_run_section({}) == SamplingConfig("ddim", 100, None, 1.0)


def test_overrides_keep_the_own_sampler_settings_unless_another_sampler_is_named():
    own = SamplingConfig("dpm++2m_sde", 20, "trailing", 1.06)
    assert own.with_overrides() == own
    assert own.with_overrides(steps=10) == dataclasses.replace(own, steps=10)
    assert own.with_overrides(sampler="dpm++2m_sde", eps_scale=1.0) == dataclasses.replace(own, eps_scale=1.0)
    # Another sampler: the steps, spacing and λ chosen for this one do not carry over.
    assert own.with_overrides(sampler="ddim") == SamplingConfig("ddim")
    assert own.with_overrides(sampler="ddim", steps=7, eta=0.5) == SamplingConfig("ddim", 7, eta=0.5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sampler": "plms"}, r"^unknown sampler 'plms'; allowed: ddpm, ddim"),
        ({"sampler": "ddim", "spacing": "karras"}, r"^spacing 'karras' is not allowed for the ddim sampler"),
        ({"sampler": "euler", "eta": 0.5}, r"^eta=0.5 applies to the ddim sampler only, not 'euler'"),
        ({"sampler": "ddim", "eta": 1.5}, r"^eta=1.5 is outside \[0, 1\]"),
        ({"sampler": "ddim", "steps": 0}, r"^steps=0 is invalid; give an integer ≥ 1"),
        ({"sampler": "ddim", "eps_scale": -1.0}, r"^eps_scale=-1.0 is invalid; give a finite number > 0"),
        ({"temperature": 0.9}, r"^unknown sampling option\(s\) temperature; allowed: sampler"),
    ],
)
def test_bad_sampler_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig().with_overrides(**settings)


def test_sampling_without_options_uses_the_models_own_sampler(model):
    own = model.sampling
    assert own.sampler == "dpm++2m_sde" and own.eps_scale == 1.06
    explicit = {"sampler": own.sampler, "steps": 3, "spacing": own.spacing, "eps_scale": own.eps_scale}
    short = dataclasses.replace(model, spec=dataclasses.replace(model.spec, sampling=dataclasses.replace(
        own, steps=3)))  # fmt: skip
    assert torch.equal(short.sample(3, seed=2), model.sample(3, seed=2, **explicit))


def test_eps_scale_draws_what_the_wrapped_network_draws(model):
    options = {"sampler": "dpm++2m_sde", "steps": 4, "spacing": "trailing", "seed": 3}
    scaled = model.sample(4, eps_scale=1.06, **options)
    denoiser = model.denoiser(eps_scale=1.06, clip_x0=1.0)
    with torch.inference_mode():
        direct = SAMPLERS["dpm++2m_sde"](
            denoiser, model.schedule, (4, 1, 8, 8), seeds=sample_seeds(3, 4), steps=4, spacing="trailing"
        ).samples
    assert torch.equal(scaled, direct)
    assert not torch.equal(scaled, model.sample(4, **options, eps_scale=1.0))


def test_sampling_given_noise_equals_sampling_its_seeds(model):
    seeds = sample_seeds(5, 3)
    noise = per_sample_noise(seeds, (1, 8, 8))
    drawn = model.sample(3, seed=5, steps=3)
    assert torch.equal(model.sample(noise=noise, seeds=seeds, steps=3), drawn)
    assert torch.equal(model.sample(3, seed=5, steps=3, batch_size=1), drawn)  # any batch size


def test_the_digits_preset_evaluates_with_eps_scaling():
    assert get_preset("digits").run.preview_options()["eps_scale"] == 1.06


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_bad_eps_scale_is_refused_before_sampling(model, bad):
    with pytest.raises(ValueError, match=r"^eps_scale=.* is invalid; give a finite number > 0"):
        model.sample(2, steps=2, eps_scale=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, r"^n=0 is invalid; it must be an integer ≥ 1"),
        ({"n": 2, "batch_size": 0}, r"^batch_size=0 is invalid; it must be an integer ≥ 1"),
        ({}, r"^give n \(how many samples\) or noise"),
        ({"n": 2, "labels": [1, 2]}, r"^labels given to an unconditional model"),
        ({"n": 2, "guidance": 2.0}, r"^guidance=2.0 needs a class-conditional model"),
        ({"noise": torch.zeros(2, 1, 4, 4)}, r"^noise has shape \(2, 1, 4, 4\); this model needs \(N, 1, 8"),
        ({"n": 3, "noise": torch.zeros(2, 1, 8, 8)}, r"^n=3 does not match the 2 rows of noise"),
    ],
)
def test_bad_sampling_arguments_are_refused_in_one_line(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.sample(**kwargs)


def test_ddpm_load_is_the_package_api(run_dir):
    loaded = ddpm.load(run_dir)
    assert isinstance(loaded, ddpm.DiffusionModel) and loaded.step == 6
    assert loaded.sampling == SamplingConfig("dpm++2m_sde", 5, "trailing", 1.06)
    images = loaded.sample(2)
    assert images.shape == (2, 1, 8, 8) and len(ddpm.to_pil(images)) == 2
    raw = load(run_dir, weights="raw")
    pairs = zip(raw.net.state_dict().values(), loaded.net.state_dict().values(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)  # EMA weights differ from the raw ones


def test_load_refuses_bad_weights_and_paths(run_dir, tmp_path):
    with pytest.raises(ValueError, match=r"^weights='best' is not allowed; choose ema or raw"):
        load(run_dir, weights="best")
    with pytest.raises(ValueError, match="is neither a run directory nor a checkpoint folder"):
        load(tmp_path)


def _learned_variance_model(num_classes: int | None = None):
    config = get_preset("digits")
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, out_channels=2, num_classes=num_classes),
        diffusion=dataclasses.replace(config.diffusion, learn_variance=True, loss="hybrid"),
    )
    torch.manual_seed(0)
    return build_model(model_spec(config, (1, 8, 8), "images"))


def test_the_spec_reads_a_learned_variance_and_the_denoiser_returns_it():
    model = _learned_variance_model()
    assert model.spec.learned_variance
    x_t, t = torch.randn(2, 1, 8, 8), torch.full((2,), 999)
    with torch.no_grad():
        raw = model.net(x_t, t)  # (2, 2, 8, 8): ε then the variance channels r
        prediction = model.denoiser()(x_t, t)
    assert torch.allclose(prediction.variance_frac, (raw[:, 1:] + 1) / 2)
    assert ModelSpec.from_config({}, (1, 8, 8), "images").learned_variance is False  # old configs: fixed


def test_guidance_on_a_learned_variance_guides_the_prediction_and_keeps_the_conditional_variance():
    model = _learned_variance_model(num_classes=10)
    x_t, t = torch.randn(2, 1, 8, 8), torch.full((2,), 500)
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        guided = model.denoiser(guidance=3.0)(x_t, t, class_labels=labels)
        conditional = model.net(x_t, t, class_labels=labels)
    assert torch.allclose(guided.variance_frac, (conditional[:, 1:] + 1) / 2)
    images = model.sample(2, labels=labels, guidance=3.0, sampler="ddpm", steps=3)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
