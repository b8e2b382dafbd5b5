"""A control run's config: a ControlNet run (Zhang, Rao & Agrawala 2023), ``ddpm train --controlnet BASE
--control KIND``, or a concat run, ``ddpm train --data SPEC --control KIND`` (no ``--controlnet``).

A concat run is any run of its data's preset (``--preset``, ``--config``, ``--set`` apply as usual) whose
``control`` table says ``mode = "concat"``: its U-Net is trained from scratch on [x_t, control], so it pays a
whole training per control kind, where a ControlNet reuses its frozen base and trains a branch.

The run starts from its base run's own config: the ``model`` and ``diffusion`` tables must stay the base's
(the branch is a copy of the base's encoder and joins its decoder), the ``data`` table is the base's (the
spec may be another data set of the same shape: ``--data``), and ``optim`` and ``run`` start as the base's
with a ControlNet run's length and intervals. ``--config``, ``--set`` and flags then apply as for any run;
:func:`ddpm.train.control_data.check_base_fit` refuses what would no longer fit the base.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ddpm.configio import ConfigError
from ddpm.control import ControlConfig, base_checkpoint
from ddpm.rundir import RunDir

# a ControlNet run's own length and intervals (the paper's "sudden convergence" came within ~10k steps
# on Stable Diffusion; small models get there sooner); evaluation during training samples without the
# controls, so it is off (ddpm report measures adherence)
CONTROL_RUN = {"steps": 5000, "sample_every": 500, "checkpoint_every": 500, "eval_every": 0}
CONTROL_RUN["time_budget_s"] = 0  # a base trained with --time does not pass its budget on
MAX_WARMUP_STEPS = 200  # the zero convolutions already start the run at the base; a long warm-up only waits


def parse_control(control: str, **fields: str) -> tuple[str, str]:
    """``--control KIND|folder:PATH`` → (kind, folder), checked as a ControlConfig with ``fields``."""
    kind, _, folder = control.partition(":")
    if kind == "folder" and not folder:
        raise ConfigError("--control folder:PATH needs the folder of control images after 'folder:'")
    try:
        ControlConfig(kind=kind, folder=folder, **fields)
    except ValueError as err:
        raise ConfigError(f"--control {control!r}: {err}") from None
    return kind, folder


def control_section(base: str, control: str | None) -> dict[str, str]:
    """The ``control`` table of ``--controlnet BASE --control KIND|folder:PATH`` (checked: one line)."""
    if control is None:
        raise ConfigError("--controlnet needs --control canny|mask|lowres|gray|folder:PATH (its signal)")
    kind, folder = parse_control(control, base=base)
    return {"base": base, "kind": kind, "folder": folder}


def concat_flags(controlnet: str | None, control: str | None) -> dict[str, str]:
    """The config flags of ``--control KIND|folder:PATH`` without ``--controlnet``: a concat run (checked:
    one line); nothing for other runs."""
    if controlnet is not None or control is None:
        return {}
    kind, folder = parse_control(control, mode="concat")
    return {"control.mode": "concat", "control.kind": kind, "control.folder": folder}


def control_layers(base: str, control: str | None, data: str | None) -> dict[str, Any]:
    """The first config layer of a ControlNet run on base run ``base`` (see the module's docstring);
    refuses in one line a base that is missing, untrained or no pixel U-Net run."""
    section = control_section(base, control)
    base_checkpoint(ControlConfig(base=base))  # exists, is a pixel U-Net run, has a checkpoint
    stored = RunDir(base).config_dict()
    tables = ("data", "model", "diffusion", "optim", "run")
    layers = {key: copy.deepcopy(stored.get(key, {})) for key in tables}
    if data is not None:
        layers["data"]["spec"] = data
    layers["run"].update(CONTROL_RUN)
    layers["optim"]["warmup_steps"] = min(layers["optim"].get("warmup_steps", 0), MAX_WARMUP_STEPS)
    layers["control"] = section
    return layers


def check_control_flags(
    controlnet: str | None, control: str | None, *, preset: str | None, others: dict[str, Any]
) -> None:
    """A ControlNet run takes no ``--preset``; neither it nor a concat run (``--control`` alone) takes any of
    ``others`` (flag → value: ``--latent``, ``--kind autoencoder``)."""
    if controlnet is None:
        for flag, value in others.items():
            if value and control is not None:
                raise ConfigError(f"--control without --controlnet trains a concat control run of pixels; it "
                                  f"cannot be combined with {flag}")  # fmt: skip
        return
    if preset is not None:
        raise ConfigError("--preset does not apply to --controlnet: a ControlNet run's config is its base's")
    for flag, value in others.items():
        if value:
            raise ConfigError(f"--controlnet cannot be combined with {flag}: it steers a pixel diffusion run")


def control_run_dir(base: str | None, control: str, data: str = "digits") -> str:
    """Where a control run goes without ``--out``: a ControlNet run beside its base, ``<base>-<kind>``; a
    concat run (``base`` None) in ``runs/<data set>-concat-<kind>``."""
    kind = control.partition(":")[0]
    if base is None:
        return str(Path("runs") / f"{data.split(':', 1)[0]}-concat-{kind}")
    return str(Path(base).with_name(f"{Path(base).name}-{kind}"))
