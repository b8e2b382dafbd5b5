import dataclasses

import pytest

from ddpm.train.config import TrainConfig
from ddpm.train.presets import get_preset


def tiny_digits_config(**run_overrides) -> TrainConfig:
    """A digits config small enough to train a few steps in a second."""
    config = get_preset("digits")
    model = dataclasses.replace(
        config.model, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, num_groups=8,
        attention_resolutions=(4,), dropout=0.1,
    )  # fmt: skip
    run = dataclasses.replace(
        config.run, steps=6, batch_size=16, log_every=1, sample_every=0, checkpoint_every=3,
        preview_images=4, preview_steps=5, **run_overrides,
    )  # fmt: skip
    return dataclasses.replace(config, model=model, run=run)


@pytest.fixture
def tiny_config() -> TrainConfig:
    return tiny_digits_config()
