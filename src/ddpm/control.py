"""Control runs as the model holds them: the ``[control]`` table of a run's config, and control images
checked for sampling. Two modes (``control.mode``):

- ``controlnet`` (Zhang, Rao & Agrawala 2023; ``ddpm train --controlnet BASE --control KIND``): the frozen
  base run it names and the :class:`~ddpm.nets.controlnet.ControlledUNet` built over that base. The base is
  reused as it is, controls are swappable (one small branch per kind over the same base) and
  ``control_scale`` is a strength knob.
- ``concat`` (``ddpm train --data SPEC --control KIND``, the issue's honest baseline): a
  :class:`~ddpm.nets.concat_control.ConcatControlUNet` trained from scratch with the control concatenated to
  its input. Nothing is reused: each control kind retrains the whole network, and there is no strength knob.

A ControlNet run is a run of its own. Its ``model`` and ``diffusion`` tables are its base's, copied when it
starts, and its checkpoints hold the branch alone; the base's weights are read from the base run each time
the control run is loaded, from the checkpoint whose EMA weights have the sha256 the control run recorded.
A base run that moved, is gone or no longer holds those weights is refused in one line, never replaced by
whatever the folder now holds: the branch was trained against exactly those weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ddpm.configio import coerce
from ddpm.data.controls import CONTROLS
from ddpm.nets import UNetConfig
from ddpm.nets.concat_control import ConcatControlUNet
from ddpm.nets.controlnet import ControlBranch, ControlledUNet, ControlNetConfig
from ddpm.nets.unet import UNet
from ddpm.rundir import (
    CheckpointError,
    RunDir,
    checkpoint_with_weights,
    read_checkpoint_meta,
    read_weights,
    weights_sha256,
)

CONTROL_KINDS = (*CONTROLS, "folder")  # computed from the images, or users' own (--control folder:PATH)
CONTROL_MODES = ("controlnet", "concat")


@dataclass(frozen=True)
class ControlConfig:
    """A control run: a ControlNet's frozen base, the control signal and the branch's own parts; or a
    concat run's control signal (mode concat: no base, no branch)."""

    # controlnet: a branch steering the frozen base; concat: a U-Net trained from scratch on [x_t, control]
    mode: str = "controlnet"
    base: str = ""  # run directory of the frozen base model (ddpm train --controlnet); "" → no ControlNet
    base_sha256: str = ""  # sha256 of the base checkpoint's EMA weights, recorded when the run starts
    kind: str = "canny"  # control signal: canny, mask, lowres, gray (computed from the images) or folder
    folder: str = ""  # kind = folder: users' control images, paired with the data's by relative name
    # P(a training sample's control is blanked to all −1), so the model also learns the uncontrolled case
    drop_rate: float = 0.1
    control_channels: int = 1  # channels of the control image (set from kind and the data at the start)
    hint_channels: tuple[int, ...] = (16, 32)  # hint encoder stages (ControlNetConfig; not for concat)
    hint_downsample: int = 1  # control-image size / input size: 1 on pixels (a latent run: the codec's f)

    def __post_init__(self) -> None:
        if self.mode not in CONTROL_MODES:
            allowed = ", ".join(CONTROL_MODES)
            raise ValueError(f"control.mode={self.mode!r} is not allowed; choose one of {allowed}")
        if self.concat and (self.base or self.base_sha256):
            raise ValueError("control.base names a ControlNet's frozen base; a concat run (control.mode = "
                             "'concat') has none: leave it out, or use --controlnet BASE_RUN")  # fmt: skip
        if self.kind not in CONTROL_KINDS:
            allowed = ", ".join(CONTROL_KINDS)
            raise ValueError(f"control.kind={self.kind!r} is not allowed; choose one of {allowed}")
        if (self.kind == "folder") != bool(self.folder):
            raise ValueError("control.folder names the folder of control images exactly when control.kind = "
                             "'folder' (--control folder:PATH)")  # fmt: skip
        if not (isinstance(self.drop_rate, (int, float)) and 0.0 <= self.drop_rate < 1.0):
            raise ValueError(f"control.drop_rate={self.drop_rate!r} must be in [0, 1)")
        self.net  # noqa: B018 — ControlNetConfig checks channels, stages and hint_downsample

    @property
    def concat(self) -> bool:
        """Whether this is a concat run: the control concatenated to a from-scratch U-Net's input."""
        return self.mode == "concat"

    @property
    def enabled(self) -> bool:
        """Whether the run is a control run at all (a ControlNet with its base, or a concat run)."""
        return bool(self.base) or self.concat

    @property
    def net(self) -> ControlNetConfig:
        """The branch's own parts, as :class:`ControlBranch` takes them."""
        return ControlNetConfig(self.control_channels, self.hint_channels, self.hint_downsample)

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> ControlConfig | None:
        """A stored config's ``control`` table; None for a run that is not a control run."""
        found = section and (section.get("base") or section.get("mode") == "concat")
        return coerce(cls, dict(section), "control") if found else None


def base_config_problem(config: Mapping[str, Any]) -> str | None:
    """Why a run with this stored config cannot be a ControlNet's base, or None: the branch copies a pixel
    U-Net's encoder, so points (MLP), autoencoders, latent runs and ControlNet runs are refused."""
    kind = config.get("model", {}).get("kind", "unet")
    if kind != "unet":
        return f"is a run of model.kind = {kind!r}; a ControlNet steers a U-Net diffusion model of images"
    if config.get("latent", {}).get("autoencoder"):
        return "is a latent diffusion run; ControlNet runs on latents are not supported yet (use a pixel run)"
    if config.get("control", {}).get("base"):
        return "is itself a ControlNet run; give the run it steers (its control.base) instead"
    if config.get("control", {}).get("mode") == "concat":
        return "is a concat control run (its input holds its control); give a run trained without control"
    return None


def base_checkpoint(control: ControlConfig) -> Path:
    """The verified checkpoint of ``control.base`` whose EMA weights have ``control.base_sha256`` (the newest
    one while none is recorded). Raises CheckpointError in one line when the base run is missing (moved or
    deleted), is no pixel U-Net run, or no longer holds those weights."""
    where = control.base
    run = RunDir(where)
    if not run.path.is_dir():
        raise CheckpointError(f"base run {where!r} does not exist (moved or deleted?); a ControlNet run "
                              "needs the run it was trained on at control.base")  # fmt: skip
    if not run.config_path.is_file():
        raise CheckpointError(f"base run {where!r} holds no run (no config.toml); give a trained run")
    problem = base_config_problem(run.config_dict())
    if problem is not None:
        raise CheckpointError(f"base run {where!r} {problem}")
    if not control.base_sha256:
        found = run.latest_checkpoint(warn=lambda _: None)
        if found is None:
            raise CheckpointError(f"base run {where!r} has no complete checkpoint yet; train it first")
        return found
    found = checkpoint_with_weights(run, control.base_sha256)
    if found is not None:
        return found
    raise CheckpointError(
        f"base run {where!r} has changed: none of its checkpoints holds the weights (EMA sha256 "
        f"{control.base_sha256[:12]}…) this ControlNet was trained on; train the ControlNet again on it"
    )


def recorded(control: ControlConfig) -> tuple[ControlConfig, Path]:
    """``control`` with its base (and users' control folder) as absolute paths and the base weights' sha256,
    and that checkpoint."""
    checkpoint = base_checkpoint(control)
    absolute = str(Path(control.base).resolve())
    folder = str(Path(control.folder).resolve()) if control.folder else ""
    sha256 = weights_sha256(checkpoint)
    return dataclasses.replace(control, base=absolute, base_sha256=sha256, folder=folder), checkpoint


def base_net_config(checkpoint: Path) -> UNetConfig:
    """The U-Net config a base checkpoint was trained with (its stored ``model`` table)."""
    section = {k: v for k, v in read_checkpoint_meta(checkpoint)["config"]["model"].items() if k != "kind"}
    return coerce(UNetConfig, section, "model")


def controlled_net(net: UNetConfig, control: ControlConfig) -> ControlledUNet:
    """The base U-Net with its run's EMA weights (checked by sha256) and a branch copied from it (§3.2);
    a control checkpoint's branch weights are loaded over that copy."""
    checkpoint = base_checkpoint(control)
    if not same_network(base_net_config(checkpoint), net):
        raise CheckpointError(f"base run {control.base!r} holds another U-Net than this ControlNet run's "
                              "model table; train the ControlNet again on it")  # fmt: skip
    base = UNet(net)
    base.load_state_dict(read_weights(checkpoint, "ema"))
    return ControlledUNet(base, ControlBranch.from_base(base, control.net))


def control_net(net: UNetConfig, control: ControlConfig) -> ControlledUNet | ConcatControlUNet:
    """The network of a control run: for a concat run a new U-Net over [x_t, control] (``net`` is the
    images' config), else the ControlNet over its frozen base (:func:`controlled_net`)."""
    if control.concat:
        return ConcatControlUNet(net, control.control_channels)
    return controlled_net(net, control)


def same_network(a: Any, b: Any) -> bool:
    """Whether two U-Net configs describe the same weights (dropout and gradient checkpointing aside)."""
    plain = {"dropout": 0.0, "gradient_checkpointing": False}
    return (
        isinstance(a, UNetConfig)
        and isinstance(b, UNetConfig)
        and (dataclasses.replace(a, **plain) == dataclasses.replace(b, **plain))
    )


def trained_part(net: nn.Module) -> nn.Module:
    """What a run trains, averages and checkpoints: a ControlNet's branch (its base stays frozen in the
    base run), else the whole network."""
    return net.branch if isinstance(net, ControlledUNet) else net


def check_control(net: nn.Module, control: Tensor, scale: float | Sequence[float], n: int) -> None:
    """``control`` must be float (n, control channels, f·H, f·W) for ``n`` samples of ``net`` (a
    ControlledUNet, f = hint_downsample; a ConcatControlUNet, f = 1) and finite; ``scale`` one finite number
    or one per residual (a concat run has no scale: 1 only). One line otherwise."""
    if isinstance(net, ConcatControlUNet):
        channels, size = net.control_channels, net.config.image_size
        if isinstance(scale, Sequence) or scale != 1:
            raise ValueError(f"control_scale {scale!r} applies to ControlNet runs; a concat run has its "
                             "control in its input and no strength knob (leave the scale out)")  # fmt: skip
    elif isinstance(net, ControlledUNet):
        config = net.branch.control_config
        channels, size = config.control_channels, net.config.image_size * config.hint_downsample
    else:
        raise ValueError("control given to a model without a ControlNet branch or control input; train "
                         "one with ddpm train --controlnet BASE_RUN --control KIND (or --control KIND "
                         "alone)")  # fmt: skip
    wanted = (n, channels, size, size)
    if not isinstance(control, Tensor) or not control.is_floating_point() or tuple(control.shape) != wanted:
        got = f"of shape {tuple(control.shape)}" if isinstance(control, Tensor) else type(control).__name__
        raise ValueError(f"control {got} does not fit; this model needs float controls of shape {wanted} "
                         "(one per sample: N, channels, H, W) in [-1, 1]")  # fmt: skip
    if not bool(control.isfinite().all()):
        raise ValueError("control holds NaN or infinite values; give images in [-1, 1]")
    if isinstance(net, ControlledUNet):
        net.scales(scale)  # one line naming a bad scale


def sampling_cond(
    net: nn.Module, labels: Tensor | None, control: Tensor | None, scale: float | Sequence[float],
    rows: slice, n: int,
) -> dict[str, Any] | None:  # fmt: skip
    """What the network is given for rows ``rows`` of ``n`` samples (None: nothing): their labels, and a
    control run's controls (a ControlNet's with their scale), checked (:func:`check_control`) before the
    first batch is sampled."""
    cond: dict[str, Any] = {}
    if labels is not None:
        cond["class_labels"] = labels[rows]
    if control is not None:  # classifier-free guidance doubles it with the batch: both halves see it
        check_control(net, control, scale, n)
        cond["control"] = control[rows].to(next(net.parameters()).device)
        if isinstance(net, ControlledUNet):
            cond["control_scale"] = scale
    return cond or None
