"""Learned variances and the L_hybrid / L_vlb objectives wired into the config, the network, the training
step (importance-sampled t) and checkpoints (Nichol & Dhariwal 2021)."""

from __future__ import annotations

import dataclasses

import pytest
import tomllib
import torch

from ddpm.configio import ConfigError, dumps_toml
from ddpm.data import load_dataset
from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss, HybridLoss, VLBLoss
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler
from ddpm.model import ModelSpec, load
from ddpm.rundir import RunDir
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.config import DiffusionConfig, TrainConfig, config_from_dict, config_to_dict
from ddpm.train.data_order import EpochOrder
from ddpm.train.distributed import DistContext
from ddpm.train.objective import build_loss, build_timestep_sampler
from ddpm.train.presets import get_preset
from ddpm.train.run import resolve_for_data, train
from ddpm.train.step import draw_step, record_losses
from tests.train.conftest import tiny_digits_config


def _with_diffusion(config: TrainConfig, **fields: object) -> TrainConfig:
    return dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, **fields))


# --- config -------------------------------------------------------------------------------------------


def test_the_new_keys_default_to_the_simple_loss_and_round_trip_through_toml():
    default = DiffusionConfig()
    assert (default.learn_variance, default.loss, default.vlb_weight, default.importance_sampling) == (
        False, "simple", 0.001, False,
    )  # fmt: skip
    hybrid = _with_diffusion(get_preset("digits"), learn_variance=True, loss="hybrid", vlb_weight=0.002)
    assert config_from_dict(tomllib.loads(dumps_toml(config_to_dict(hybrid)))) == hybrid


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"loss": "hybrid"}, r"diffusion.loss='hybrid' trains a learned variance; set diffusion.learn_var"),
        ({"learn_variance": True}, r"diffusion.learn_variance = true needs a loss that trains the variance"),
        ({"importance_sampling": True}, r"diffusion.importance_sampling applies to diffusion.loss=.vlb."),
        ({"loss": "hybrid", "learn_variance": True, "importance_sampling": True},
         r"importance_sampling applies to diffusion.loss='vlb' only, not 'hybrid'"),
        ({"loss": "vlb", "min_snr_gamma": 5.0}, r"diffusion.min_snr_gamma weights L_simple; diffusion.loss="),
        ({"loss": "hybrid", "learn_variance": True, "vlb_weight": -1.0}, r"diffusion.vlb_weight=-1.0 must"),
        ({"loss": "hybrid", "learn_variance": True, "vlb_weight": float("inf")}, r"vlb_weight=inf must be"),
        ({"loss": "l1"}, r"diffusion.loss='l1' is not allowed; choose one of 'simple', 'hybrid', 'vlb'"),
    ],
)  # fmt: skip
def test_objectives_that_make_no_sense_are_refused_in_one_line(fields, message):
    data = config_to_dict(TrainConfig())
    data["diffusion"].update(fields)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_points_models_cannot_learn_variances_yet():
    data = config_to_dict(get_preset("swissroll"))
    data["diffusion"].update(learn_variance=True, loss="hybrid")
    message = r'diffusion.learn_variance is not supported for model.kind = "mlp" \(2-D points\) yet'
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)
    with pytest.raises(ConfigError, match=message):
        _with_diffusion(get_preset("swissroll"), learn_variance=True, loss="vlb")


def test_a_learned_variance_doubles_the_networks_output_channels():
    digits = load_dataset("digits", split="test")
    hybrid = _with_diffusion(get_preset("digits"), learn_variance=True, loss="hybrid")
    assert resolve_for_data(hybrid, digits).model.resolved_out_channels == 2
    assert resolve_for_data(get_preset("digits"), digits).model.out_channels is None  # as before


# --- the loss and the timestep draw ---------------------------------------------------------------------


def test_the_loss_follows_the_config_with_the_decoder_of_the_data():
    schedule = make_schedule("linear", 1000)
    assert type(build_loss(DiffusionConfig(), schedule, "images")) is DiffusionLoss
    hybrid_config = DiffusionConfig(learn_variance=True, loss="hybrid", vlb_weight=0.01)
    hybrid = build_loss(hybrid_config, schedule, "images")
    assert isinstance(hybrid, HybridLoss) and (hybrid.vlb_weight, hybrid.decoder) == (0.01, "discretized")
    vlb = build_loss(DiffusionConfig(loss="vlb"), schedule, "points")
    assert isinstance(vlb, VLBLoss) and (vlb.learned_variance, vlb.decoder) == (False, "continuous")
    assert vlb.timestep_sampler is None  # the training step draws t, not the loss
    assert build_timestep_sampler(DiffusionConfig(loss="vlb")) is None
    sampler = build_timestep_sampler(DiffusionConfig(loss="vlb", importance_sampling=True))
    assert isinstance(sampler, LossSecondMomentResampler) and sampler.num_steps == 1000


def _draws(config, sampler, step=3):
    dataset = load_dataset("digits", split="test")
    order = EpochOrder(len(dataset), config.run.batch_size, config.run.seed)
    return draw_step(config, order, step, dataset, config.diffusion.num_steps, torch.device("cpu"), sampler)


def test_before_warm_up_importance_sampling_draws_exactly_the_uniform_timesteps():
    config = tiny_digits_config()
    uniform = _draws(config, None)
    sampled = _draws(config, LossSecondMomentResampler(1000))
    assert torch.equal(uniform.t, sampled.t) and torch.equal(uniform.noise, sampled.noise)
    assert uniform.t_weight is None and torch.equal(sampled.t_weight, torch.ones(16))


def test_after_warm_up_t_follows_the_loss_history_and_is_weighted_by_one_over_t_p_t():
    config = _with_diffusion(tiny_digits_config(), num_steps=4, loss="vlb", importance_sampling=True)
    sampler = LossSecondMomentResampler(4, history_per_term=2)
    for _ in range(2):  # L_t = 100 at t = 0, 1 elsewhere: p ∝ √E[L²]
        sampler.update(torch.arange(4), torch.tensor([100.0, 1.0, 1.0, 1.0]))
    draws = _draws(config, sampler)
    p = sampler.probabilities()
    assert torch.allclose(draws.t_weight.double(), 1 / (4 * p[draws.t]), rtol=1e-6)
    assert (draws.t == 0).float().mean() > 0.6  # p_0 ≈ 100/103


def test_recorded_losses_are_the_whole_batchs_and_a_non_finite_step_records_nothing():
    sampler = LossSecondMomentResampler(4, history_per_term=2)
    draws = dataclasses.replace(_draws(tiny_digits_config(), None), t=torch.tensor([0, 1, 1, 3]))
    record_losses(sampler, draws, torch.tensor([1.0, 2.0, 3.0, 4.0]), DistContext(device=torch.device("cpu")))
    assert sampler.loss_counts.tolist() == [1, 2, 0, 1]
    assert sampler.loss_history[1].tolist() == [2.0, 3.0]
    record_losses(sampler, draws, torch.tensor([1.0, float("nan"), 3.0, 4.0]),
                  DistContext(device=torch.device("cpu")))  # fmt: skip
    assert sampler.loss_counts.tolist() == [1, 2, 0, 1]


# --- training runs ---------------------------------------------------------------------------------------


def test_a_hybrid_run_trains_a_learned_variance_that_the_ancestral_sampler_uses(tmp_path):
    config = _with_diffusion(tiny_digits_config(), learn_variance=True, loss="hybrid")
    train(config, tmp_path / "run", log=lambda *_: None)
    model = load(tmp_path / "run")
    assert model.spec.learned_variance and model.net.conv_out.out_channels == 2
    x_t = torch.randn(3, 1, 8, 8)
    prediction = model.denoiser()(x_t, torch.full((3,), 500))
    assert prediction.x0.shape == (3, 1, 8, 8) and prediction.variance_frac.shape == (3, 1, 8, 8)
    learned = model.sample(3, sampler="ddpm", steps=5)
    fixed_model = dataclasses.replace(model, spec=dataclasses.replace(model.spec, learned_variance=False))
    with pytest.raises(ValueError, match=r"model output has shape \(3, 2, 8, 8\) but x_t has \(3, 1, 8, 8\)"):
        fixed_model.sample(3, sampler="ddpm", steps=5)
    assert learned.shape == (3, 1, 8, 8) and torch.isfinite(learned).all()


def _vlb_config(steps: int) -> TrainConfig:
    """T = 4, so importance sampling warms up (10 losses of every t) within the first few steps."""
    config = _with_diffusion(tiny_digits_config(), num_steps=4, loss="vlb", importance_sampling=True,
                             learn_variance=True)  # fmt: skip
    return dataclasses.replace(
        config, run=dataclasses.replace(config.run, steps=steps, checkpoint_every=5, preview_steps=3)
    )


def test_importance_sampled_training_resumes_bit_for_bit_with_the_samplers_state(tmp_path):
    train(_vlb_config(10), tmp_path / "whole", log=lambda *_: None)
    train(_vlb_config(5), tmp_path / "split", log=lambda *_: None)
    halfway = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint())
    assert halfway.timestep_sampler["loss_counts"].tolist() == [10, 10, 10, 10]  # warmed up by step 5
    assert not any(key.startswith("timestep_sampler.") for key in halfway.optimizer)
    train(_vlb_config(10), tmp_path / "split", resume=True, log=lambda *_: None)
    whole = load_checkpoint(RunDir(tmp_path / "whole").latest_checkpoint())
    split = load_checkpoint(RunDir(tmp_path / "split").latest_checkpoint())
    assert whole.step == split.step == 10
    for name in ("model", "ema", "optimizer", "timestep_sampler"):
        a, b = getattr(whole, name), getattr(split, name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name


def test_an_old_run_without_the_new_keys_resumes_as_unchanged(tmp_path, tiny_config):
    half = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, steps=3))
    train(half, tmp_path / "run", log=lambda *_: None)
    config_path = RunDir(tmp_path / "run").config_path
    stored = tomllib.loads(config_path.read_text())
    for key in ("learn_variance", "loss", "vlb_weight", "importance_sampling"):
        del stored["diffusion"][key]  # as a run written before learned variances
    config_path.write_text(dumps_toml(stored))
    result = train(tiny_config, tmp_path / "run", resume=True, log=lambda *_: None)
    assert result.step == 6
    meta_config = config_to_dict(tiny_config)
    for key in ("learn_variance", "loss", "vlb_weight", "importance_sampling"):
        del meta_config["diffusion"][key]  # an old checkpoint's meta.json: a fixed-variance model
    assert not ModelSpec.from_config(meta_config, (1, 8, 8), "images").learned_variance


def test_resuming_with_another_objective_is_a_config_change(tmp_path, tiny_config):
    train(tiny_config, tmp_path / "run", log=lambda *_: None)
    hybrid = _with_diffusion(tiny_config, learn_variance=True, loss="hybrid")
    with pytest.raises(ConfigError, match=r"config differs from the run being resumed in diffusion.learn_"):
        train(hybrid, tmp_path / "run", resume=True, log=lambda *_: None)
