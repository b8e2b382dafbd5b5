"""DiffusionModel.sample's epsilon scaling: the same draw as the wrapped network, and a bad λ refused."""

import pytest
import torch

from ddpm.diffusion.eps_scaling import EpsilonScaling
from ddpm.diffusion.samplers import SAMPLERS, sample_seeds
from ddpm.pipeline import build_model
from ddpm.train.presets import get_preset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_preset("digits"), (1, 8, 8), "images")  # untrained: the wiring is under test


def test_eps_scale_draws_what_the_wrapped_network_draws(model):
    options = {"sampler": "dpm++2m_sde", "steps": 4, "spacing": "trailing", "seed": 3}
    scaled = model.sample(4, eps_scale=1.06, **options)
    denoiser = EpsilonScaling(model.net, 1.06, model.schedule, model.parameterization)
    with torch.inference_mode():
        direct = SAMPLERS["dpm++2m_sde"](
            denoiser, model.schedule, (4, 1, 8, 8), parameterization=model.parameterization,
            seeds=sample_seeds(3, 4), clip_x0=1.0, steps=4, spacing="trailing",
        ).samples  # fmt: skip
    assert torch.equal(scaled, direct)
    assert not torch.equal(scaled, model.sample(4, **options))


def test_the_digits_preset_evaluates_with_eps_scaling():
    assert get_preset("digits").run.preview_options()["eps_scale"] == 1.06


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_bad_eps_scale_is_refused_before_sampling(model, bad):
    with pytest.raises(ValueError, match=r"^eps_scale=.* is invalid; give a finite number > 0"):
        model.sample(2, steps=2, eps_scale=bad)
