"""What the reports of ``ddpm eval`` share (samples, ``--nll``, autoencoder reconstructions): the counts
every one checks, the flags that one takes and another refuses, their text tables and JSON file."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddpm.command_support import check_count

# how samples are drawn (a ControlNet's strength too): refused where nothing is sampled
SAMPLER_FLAGS = {"--sampler": "sampler", "--steps": "steps", "--spacing": "spacing",
                 "--eps-scale": "eps_scale", "--eta": "eta", "--control-scale": "control_scale"}  # fmt: skip


def check_counts(n: int, batch_size: int, seed: int, *, n_minimum: int = 2) -> None:
    """Refuse a bad ``--n``, ``--batch-size`` or ``--seed`` before anything is loaded."""
    check_count("--n", n, minimum=n_minimum)
    check_count("--batch-size", batch_size)
    check_count("--seed", seed, minimum=0)


def sampler_flags_given(args: argparse.Namespace) -> list[str]:
    """The sampler flags given on the command line (None is the run's own: not given)."""
    return [flag for flag, name in SAMPLER_FLAGS.items() if getattr(args, name, None) is not None]


def shown(key: str, value: float | None) -> str:
    """A number as a table cell: counts whole, others to 5 significant digits; None as "-"."""
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "n" else (f"{value:.5g}" if math.isfinite(value) else str(value))


def table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Left-aligned columns, each as wide as its widest cell, under a header and a rule."""
    lines = [list(header), *([key, *values] for key, values in rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    lines.insert(1, ["-" * width for width in widths])
    return "\n".join(
        "  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path


def print_report(text: str, report: dict[str, Any], json_path: str | None) -> int:
    """Print a report's table, and write its JSON file (printing its path) when ``--json`` asks."""
    print(text)
    if json_path:
        print(write_json(report, json_path))
    return 0
