"""`ddpm eval`: score a run or checkpoint (it draws its own samples) or a samples .npz against real data."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddpm.command_support import (
    SamplerFlags,
    UsageError,
    check_count,
    device_for,
    draw_for_scoring,
    open_run,
    prepare_real,
    read_samples,
)
from ddpm.eval import score
from ddpm.model import SamplingConfig


def evaluate_path(
    path: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    eps_scale: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
    inception_weights: str | None = None,
    feature_net: str = "auto",
) -> dict[str, Any]:
    """Score a run, checkpoint or samples .npz; a run or checkpoint draws ``n`` samples with its own
    sampler unless the sampler settings say otherwise. Returns the report written as JSON."""
    check_count("--n", n, minimum=2)
    check_count("--batch-size", batch_size)
    check_count("--seed", seed, minimum=0)
    flags = SamplerFlags(sampler, steps, spacing, eps_scale, eta)
    flags.check()
    path = Path(path)
    options = dict(root=data_root, metrics=metrics, split=split, feature_net=feature_net,
                   inception_weights=inception_weights, device=device_for(device), batch_size=batch_size,
                   progress=True)  # fmt: skip
    if path.suffix == ".npz":
        if data is None:
            raise UsageError(f"--data is required to evaluate a samples file ({path})")
        samples, _ = read_samples(path)
        evaluation = prepare_real(data, min(n, len(samples)), **options)
        source: dict[str, Any] = {"samples_file": str(path)}
    else:
        opened = open_run(path, device=device)
        run_data = opened.data_section(data)  # a diffusers folder has none of its own: --data required
        model, data = opened.model, run_data.spec
        flags.check(model.sampling.sampler)
        # The real data first: a bad --data, --split or --n fails before minutes of sampling.
        evaluation = prepare_real(data, n, run_data=run_data, **options)
        samples = draw_for_scoring(model, n, flags, seed=seed, batch_size=batch_size)
        used = model.sampling.with_overrides(**flags.options())  # what ran, for the record
        source = {"model": str(path), "step": model.step, **_sampler_record(used)}
    result = score(evaluation, samples, batch_size=batch_size, seed=seed, progress=True)
    return {**source, "data": data, "split": split, "metrics": result}


def _sampler_record(settings: SamplingConfig) -> dict[str, Any]:
    """The sampler settings a model was drawn with (spacing, η and ε scale only when they matter)."""
    record = {"sampler": settings.sampler, "steps": settings.steps}
    if settings.spacing is not None:
        record["spacing"] = settings.spacing
    if settings.sampler == "ddim":
        record["eta"] = settings.eta
    if settings.eps_scale != 1:
        record["eps_scale"] = settings.eps_scale
    return record


def format_table(report: dict[str, Any]) -> str:
    """The metrics of a report as a two-column text table."""
    rows = list(report["metrics"].items())
    width = max(len(key) for key, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in rows:
        shown = f"{value:.0f}" if key == "n" else (f"{value:.5g}" if math.isfinite(value) else str(value))
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path


def run(args: argparse.Namespace) -> int:
    """``ddpm eval``: print the table (and the JSON file's path)."""
    report = evaluate_path(
        args.path, data=args.data, n=args.n, metrics=args.metrics, split=args.split, sampler=args.sampler,
        steps=args.steps, spacing=args.spacing, eps_scale=args.eps_scale, eta=args.eta, seed=args.seed,
        batch_size=args.batch_size, device=args.device, data_root=args.data_root,
        inception_weights=args.inception_weights, feature_net=args.feature_net,
    )  # fmt: skip
    print(format_table(report))
    if args.json:
        print(write_json(report, args.json))
    return 0
