"""A training config from its layers: preset (or the run being resumed) ← config file ← ``--set`` ← flags.

``ddpm train`` hands its flags here; the result is the one :class:`TrainConfig` a run trains with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddpm.configio import ConfigError, apply_override, merge, parse_override, read_toml
from ddpm.rundir import RunDir
from ddpm.train.config import TrainConfig, config_from_dict, config_to_dict
from ddpm.train.presets import get_preset, with_data
from ddpm.train.recipes import default_config

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` → 90.0, ``10m`` → 600.0, ``1.5h`` → 5400.0 seconds."""
    match = DURATION.match(text)
    if not match:
        raise ConfigError(f"--time {text!r} is not a duration; use e.g. 300, 90s, 10m or 1.5h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def build_train_config(
    data: str = "digits",
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    data_root: str | None = None,
    resume_dir: str | Path | None = None,
    base_layers: Mapping[str, Any] | None = None,
    kind: str = "diffusion",
) -> TrainConfig:
    """The config of a run, each layer overriding the one before it.

    The base is ``preset`` (default: the preset of ``data`` for the ``kind`` of run: ``diffusion``,
    ``autoencoder`` or ``latent``), or, when resuming ``resume_dir`` without a preset named, that run's
    stored config. Then the TOML ``config_file``, the ``--set KEY=VALUE``
    ``overrides`` and the ``flags`` (dotted keys such as ``"run.steps"``; None values are not given).
    ``base_layers``, when given, replace the preset (a ControlNet run's: see ``train.control_layers``).
    Without a preset, cifar10 and folder data get the recipe of the device the layers name (``run.device``)
    and of the image size (``data.image_size``, else a folder's own): ``train.recipes``.
    """
    stored = None if resume_dir is None else RunDir(resume_dir).config_path
    if stored is not None and stored.is_file() and not preset:
        layers = read_toml(stored)  # a resumed run keeps its own config unless told otherwise
    elif base_layers is not None:  # a ControlNet run starts from its base run's config
        layers = dict(base_layers)
    else:
        if preset:
            base = get_preset(preset)
        else:  # the device and image size the later layers give pick the recipe (train.recipes)
            base = default_config(data, kind, *recipe_inputs(config_file, overrides, flags))
        layers = config_to_dict(with_data(base, data))
        if data_root:
            layers["data"]["root"] = data_root
    if config_file:
        layers = merge(layers, read_toml(config_file))
    for assignment in overrides:
        path, value = parse_override(assignment)
        apply_override(layers, path, value)
    for key, value in (flags or {}).items():
        if value is not None:
            apply_override(layers, key.split("."), value)
    return config_from_dict(layers)


def recipe_inputs(
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    """The ``run.device`` ("auto" if none) and ``data.image_size`` (0 if none) that the layers above the
    preset give (the last that sets each), which pick a data set's default recipe; values of a wrong type
    count as not given here and are refused when the config is built."""
    keys = ("run.device", "data.image_size")
    values: dict[str, Any] = {}
    if config_file:
        table = read_toml(config_file)
        for key in keys:
            section, _, name = key.partition(".")
            if isinstance(table.get(section), dict) and name in table[section]:
                values[key] = table[section][name]
    for assignment in overrides:
        path, value = parse_override(assignment)
        values[".".join(path)] = value
    values.update({key: value for key, value in (flags or {}).items() if value is not None})
    device, size = values.get("run.device"), values.get("data.image_size")
    valid_size = isinstance(size, int) and not isinstance(size, bool) and size > 0
    return (device if isinstance(device, str) else "auto"), (size if valid_size else 0)
