"""`ddpm eval` and evaluation during training: glue between runs, samples files and ddpm.eval."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddpm.data import Dataset
from ddpm.eval import higher_is_better, load_samples_npz, prepare, score
from ddpm.pipeline import DiffusionModel, build_model, load
from ddpm.sampling_cli import check_eps_scale_flag
from ddpm.train.config import TrainConfig
from ddpm.train.loop import resolve_device
from ddpm.train.run import load_data, stored_config

PRIMARY_METRICS = ("fid", "fd_classifier", "fd_coords", "swd")  # the first present ranks checkpoints


def primary_score(metrics: dict[str, float]) -> tuple[str, float]:
    """The metric that ranks checkpoints, as a lower-is-better number."""
    for key in PRIMARY_METRICS:
        if key in metrics:
            return key, metrics[key]
    key = next(k for k in metrics if k != "n")
    return key, -metrics[key] if higher_is_better(key) else metrics[key]


def _split_size(config: TrainConfig, split: str) -> int:
    return len(load_data(config, split=split))


class TrainingEvaluator:
    """``(step, ema_net) -> (metrics, score)`` for the trainer: samples with the preview sampler and
    scores them against the test split (reference features prepared once)."""

    def __init__(self, config: TrainConfig, dataset: Dataset) -> None:
        self.config = config
        self.kind = dataset.kind
        self.sample_shape = tuple(dataset.sample_shape)
        self.n = min(config.run.eval_samples, _split_size(config, "test"))
        data = config.data
        self.evaluation = prepare(
            data.spec,
            self.n,
            split="test",
            root=data.root or None,
            image_size=data.image_size or None,
            channels=data.channels or None,
        )

    def __call__(self, step: int, net: nn.Module) -> tuple[dict[str, float], float]:
        config = self.config
        model = build_model(config, self.sample_shape, self.kind, net)
        labels = None if model.num_classes is None else torch.arange(self.n) % model.num_classes
        samples = model.sample(
            self.n,
            **config.run.preview_options(),
            seed=10_000,
            labels=labels,
        )
        metrics = score(self.evaluation, samples)
        return metrics, primary_score(metrics)[1]


def evaluate_path(
    path: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    sampler: str = "ddim",
    steps: int | None = None,
    eps_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
    inception_weights: str | None = None,
    feature_net: str = "auto",
) -> dict[str, Any]:
    """Score a run, checkpoint or samples .npz; a run or checkpoint draws its own ``n`` samples."""
    check_eps_scale_flag(eps_scale)
    path = Path(path)
    if path.suffix == ".npz":
        if data is None:
            raise ValueError(f"--data is required to evaluate a samples file ({path})")
        samples, _ = load_samples_npz(path)
        source: dict[str, Any] = {"samples_file": str(path)}
    else:
        model: DiffusionModel = load(path, device=resolve_device(device))
        config = stored_config(path if (path / "config.toml").exists() else path.parent.parent)
        data = data or config.data.spec
        labels = None if model.num_classes is None else torch.arange(n) % model.num_classes
        samples = model.sample(
            n,
            sampler=sampler,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            labels=labels,
            eps_scale=eps_scale,
        )
        source = {"model": str(path), "step": model.step, "sampler": sampler, "steps": steps}
        if eps_scale != 1:
            source["eps_scale"] = eps_scale
    result = score(
        prepare(
            data,
            min(n, len(samples)),
            metrics=metrics,
            split=split,
            root=data_root,
            feature_net=feature_net,
            inception_weights=inception_weights,
            device=resolve_device(device),
            batch_size=batch_size,
            progress=True,
        ),
        samples,
        batch_size=batch_size,
        seed=seed,
        progress=True,
    )
    return {**source, "data": data, "split": split, "metrics": result}


def format_table(report: dict[str, Any]) -> str:
    rows = [(key, value) for key, value in report["metrics"].items()]
    width = max(len(key) for key, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in rows:
        shown = f"{value:.0f}" if key == "n" else (f"{value:.5g}" if math.isfinite(value) else str(value))
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path
