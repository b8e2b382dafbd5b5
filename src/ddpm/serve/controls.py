"""Control runs on the page (a ControlNet, Zhang, Rao & Agrawala 2023, or its concat baseline): what the run
list shows of one, and the control image a request gives. An upload (or a drawing, sent as a PNG) is read as
``ddpm sample --control`` reads a file (``data.controls.control_from_image``: the same size rule, colour
modes converted, the same one-line message) behind the same guard as every upload; the control of a real
test image is computed with the run's own control function, as ``ddpm eval`` computes held-out controls.
The checks and their messages follow ``ddpm sample``'s."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ddpm.control import ControlConfig
from ddpm.data.controls import CONTROLS, control_from_image
from ddpm.model import to_pil
from ddpm.serve.uploads import open_image

MAX_CONTROL_SCALE = 2.0  # the page's slider: 0 (the base alone) … 2


class ControlError(ValueError):
    """A control request this run cannot take: 400 with its message."""


def control_summary(config: Mapping[str, Any], root: Path) -> dict[str, Any] | None:
    """What the run list shows of a control run (None for any other): mode, control kind, its channels,
    whether it takes a scale (ControlNet only) and a ControlNet's base."""
    control = ControlConfig.from_section(config.get("control"))
    if control is None:
        return None
    summary: dict[str, Any] = {"mode": control.mode, "kind": control.kind,
                               "channels": control.control_channels, "scale": not control.concat}  # fmt: skip
    if not control.concat:
        summary["base"] = base_name(control.base, root)
    return summary


def base_name(base: str, root: Path) -> str:
    """A ControlNet's base as the page names it: its folder relative to the served one, else its own name."""
    try:
        path = Path(base).resolve()
        return path.name if path == root else str(path.relative_to(root))
    except (ValueError, OSError, RuntimeError):  # outside the served folder (or a symlink loop)
        return f"{Path(base).name} (outside the served folder)"


def no_control_note(summary: Mapping[str, Any]) -> str | None:
    """What sampling a control run without a control image draws (as ``ddpm sample`` without --control);
    None for other runs."""
    control = summary.get("control")
    if control is None:
        return None
    if control["scale"]:
        return (f"no control image: drawn with the control dropped, which is the frozen base run "
                f"{control['base']!r} alone (as ddpm sample without --control)")  # fmt: skip
    return ("no control image: drawn with the blank control this concat run learned at its drop rate (as "
            "ddpm sample without --control)")  # fmt: skip


def check_control_request(summary: Mapping[str, Any], *, given: bool, scale: float | None) -> None:
    """A control image (``given``) only for a control run, a scale only for a ControlNet's; one line else."""
    control, name = summary.get("control"), summary["name"]
    if control is None and (given or scale is not None):
        raise ControlError(
            "a control image needs a ControlNet run (ddpm train --controlnet BASE --control KIND) or a "
            f"concat run (--control KIND alone); run {name!r} has no control"
        )
    if control is not None and not control["scale"] and scale is not None:
        raise ControlError(
            f"control_scale {scale} applies to ControlNet runs; run {name!r} is a concat run, whose control "
            "is in its input, with no strength knob: leave control_scale out"
        )
    if scale is not None and not 0 <= scale <= MAX_CONTROL_SCALE:
        raise ControlError(f"control_scale {scale!r} is out of range; give a value from 0 to "
                           f"{MAX_CONTROL_SCALE:g}")  # fmt: skip


def control_shape(summary: Mapping[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the run's control images: its control channels at its images' size (as ddpm sample)."""
    return (summary["control"]["channels"], *summary["sample_shape"][1:])


def uploaded_control(data: bytes, name: str, summary: Mapping[str, Any]) -> Tensor:
    """An uploaded or drawn control image → (1, C, H, W) in [-1, 1], read as ``ddpm sample --control``."""
    image = open_image(data, name)
    try:
        return control_from_image(image, name, control_shape(summary))
    except ValueError as err:
        raise ControlError(" ".join(str(err).split())) from None


def computed_kind(summary: Mapping[str, Any]) -> str:
    """The run's control kind, when its control can be computed from a real image; one line else."""
    check_control_request(summary, given=True, scale=None)
    kind = summary["control"]["kind"]
    if kind not in CONTROLS:
        raise ControlError(
            f"run {summary['name']!r} was trained on users' own control images (control.kind = {kind}), "
            "which no function computes from a real image; upload or draw a control image"
        )
    return kind


def control_png(control: Tensor) -> bytes:
    """One control image (1, C, H, W) in [-1, 1] as a PNG of its own size (no grid, no border)."""
    buffer = io.BytesIO()
    to_pil(control)[0].save(buffer, format="PNG")
    return buffer.getvalue()
