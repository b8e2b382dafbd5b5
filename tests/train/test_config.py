import dataclasses

import pytest

from ddpm.configio import ConfigError, apply_override, dumps_toml, parse_override
from ddpm.nets import MLPConfig, UNetConfig
from ddpm.train.config import TrainConfig, config_from_dict, config_to_dict
from ddpm.train.presets import PRESETS, get_preset, preset_for_data


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_toml(name):
    import tomllib

    config = get_preset(name)
    again = config_from_dict(tomllib.loads(dumps_toml(config_to_dict(config))))
    assert again == config


def test_model_kind_selects_the_network_config():
    assert isinstance(get_preset("swissroll").model, MLPConfig)
    assert isinstance(get_preset("digits").model, UNetConfig)
    assert config_to_dict(get_preset("swissroll"))["model"]["kind"] == "mlp"


def test_cifar10_preset_is_the_paper_recipe():
    config = get_preset("cifar10")
    assert (config.optim.lr, config.optim.warmup_steps, config.optim.ema_decay) == (2e-4, 5000, 0.9999)
    assert (config.run.batch_size, config.run.steps, config.optim.grad_clip_norm) == (128, 800_000, 1.0)
    assert config.data.random_flip and config.model.dropout == 0.1


def test_data_set_picks_its_preset():
    assert preset_for_data("digits") == "digits"
    assert preset_for_data("mnist:/some/where") == "mnist"
    assert preset_for_data("moons") == "swissroll"


def test_unknown_preset_and_data_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'nope'; allowed: swissroll"):
        get_preset("nope")
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        preset_for_data("imagenet")


def test_unknown_key_is_named():
    data = config_to_dict(TrainConfig())
    data["optim"]["learning_rate"] = 1.0
    with pytest.raises(
        ConfigError, match=r"unknown config key 'optim.learning_rate'; allowed under optim.: .*lr"
    ):
        config_from_dict(data)


def test_wrong_type_is_named():
    data = config_to_dict(TrainConfig())
    data["run"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"run.steps='many' has the wrong type; expected int"):
        config_from_dict(data)


def test_out_of_range_value_is_named():
    data = config_to_dict(TrainConfig())
    data["optim"]["lr"] = -1.0
    with pytest.raises(ConfigError, match=r"optim.lr=-1.0 must be > 0"):
        config_from_dict(data)


def test_literal_value_is_checked():
    data = config_to_dict(TrainConfig())
    data["diffusion"]["schedule"] = "quadratic"
    with pytest.raises(ConfigError, match=r"diffusion.schedule='quadratic' is not allowed; choose one of"):
        config_from_dict(data)


def test_unknown_model_kind():
    data = config_to_dict(TrainConfig())
    data["model"]["kind"] = "transformer"
    with pytest.raises(
        ConfigError, match=r"model.kind='transformer' is not allowed; choose one of unet, mlp"
    ):
        config_from_dict(data)


def test_overrides_parse_toml_values_and_bare_words():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("model.channel_mult=[1, 2]") == (["model", "channel_mult"], [1, 2])
    assert parse_override("data.spec=mnist") == (["data", "spec"], "mnist")
    data = config_to_dict(TrainConfig())
    apply_override(data, ["model", "channel_mult"], [1, 2])
    assert config_from_dict(data).model.channel_mult == (1, 2)
    with pytest.raises(ConfigError, match=r"--set 'lr' is not KEY=VALUE"):
        parse_override("lr")


def test_ints_are_accepted_for_floats():
    data = config_to_dict(TrainConfig())
    data["optim"]["lr"] = 1
    assert config_from_dict(data).optim.lr == 1.0
    assert dataclasses.is_dataclass(config_from_dict(data))


def test_preview_sampler_choices_are_the_registered_samplers() -> None:
    import typing

    from ddpm.diffusion.samplers import SAMPLERS
    from ddpm.train.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    assert set(typing.get_args(hints["preview_sampler"])) == set(SAMPLERS)


def test_preview_spacing_choices_are_the_sigma_spacings() -> None:
    import typing

    from ddpm.diffusion.samplers import SIGMA_SPACINGS
    from ddpm.train.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    literal = next(arg for arg in typing.get_args(hints["preview_spacing"]) if arg is not type(None))
    assert set(typing.get_args(literal)) == set(SIGMA_SPACINGS)


def test_preview_options_carry_the_spacing_only_when_set() -> None:
    from ddpm.train.config import RunConfig

    plain = RunConfig(preview_sampler="ddim", preview_steps=7)
    assert plain.preview_options() == {"sampler": "ddim", "steps": 7}
    trailing = RunConfig(preview_sampler="dpm++2m_sde", preview_steps=20, preview_spacing="trailing")
    assert trailing.preview_options() == {"sampler": "dpm++2m_sde", "steps": 20, "spacing": "trailing"}


def test_karras_spacing_with_a_timestep_sampler_is_refused() -> None:
    data = config_to_dict(TrainConfig())
    data["run"]["preview_spacing"] = "karras"  # the default preview sampler is ddim
    with pytest.raises(ConfigError, match=r"run.preview_spacing='karras' does not apply to the ddim sampler"):
        config_from_dict(data)
    data["run"]["preview_spacing"] = "log"
    with pytest.raises(ConfigError, match=r"run.preview_spacing='log' is not allowed; choose one of"):
        config_from_dict(data)


def test_preview_options_carry_the_eps_scale_only_when_set() -> None:
    from ddpm.train.config import RunConfig

    assert "eps_scale" not in RunConfig().preview_options()
    assert (
        RunConfig(preview_sampler="dpm++2m_sde", preview_eps_scale=1.06).preview_options()["eps_scale"]
        == 1.06
    )


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_a_bad_preview_eps_scale_is_refused(bad) -> None:
    data = config_to_dict(TrainConfig())
    data["run"]["preview_eps_scale"] = bad
    with pytest.raises(ConfigError, match=r"run.preview_eps_scale=.* is invalid; give a finite number > 0"):
        config_from_dict(data)


def test_archive_budget_is_a_config_key_and_refuses_nonsense():
    """data.max_archive_gb (issue 23, section 2): what a folder: archive may expand to."""
    from ddpm.train.config import DataConfig

    assert DataConfig().max_archive_gb == 16.0
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=r"^data\.max_archive_gb=.* must be a positive number of GiB$"):
            DataConfig(max_archive_gb=bad)
