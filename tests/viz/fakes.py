"""Synthetic inputs for the viz tests: images, points, a fake sampler trajectory and a fake run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch

RUN_CONFIG = """
[data]
spec = "digits"
[model]
kind = "unet"
[diffusion]
schedule = "cosine"
num_steps = 1000
parameterization = "eps"
[run]
steps = 2000
batch_size = 128
[optim]
lr = 0.0002
"""


def fake_images(n: int = 64, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    """(n, C, size, size) in [-1, 1]: a bright square on a dark ground plus noise, so not blank."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, channels, size, size)
    x[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0.8
    return (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def fake_points(n: int = 500, seed: int = 0) -> torch.Tensor:
    """(n, 2) points on a spiral, like the swiss roll."""
    g = torch.Generator().manual_seed(seed)
    angle = 3 * math.pi * torch.rand(n, generator=g) + 1.5
    return torch.stack([angle * angle.cos(), angle * angle.sin()], 1) / 10


def fake_trajectory(x0: torch.Tensor, steps: int = 10, seed: int = 0) -> list[SimpleNamespace]:
    """Recorded steps from index 999 down to 0 that move from noise towards ``x0``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(steps):
        t = round(999 * (1 - k / max(steps - 1, 1)))
        w = t / 999
        noise = torch.randn(x0.shape, generator=g)
        out.append(SimpleNamespace(t=t, x_t=w * noise + (1 - w) * x0, x0_pred=x0 + 0.5 * w * noise))
    return out


def write_run(run_dir: Path, evals: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(RUN_CONFIG)
    with open(run_dir / "log.jsonl", "w") as f:
        for i in range(100):
            record = {"step": 20 * i, "loss": 0.1 * math.exp(-i / 30) + 0.01 * abs(math.sin(i)),
                      "lr": 2e-4 * min(1.0, i / 10), "grad_norm": 1 + math.sin(i / 5), "img_per_s": 500.0 + i,
                      "time_s": float(i)}  # fmt: skip
            f.write(json.dumps(record) + "\n")
    if evals:
        with open(run_dir / "eval.jsonl", "w") as f:
            for i in range(4):
                f.write(
                    json.dumps({"step": 500 * i, "fid": 40.0 / (i + 1), "accuracy": 0.6 + 0.1 * i}) + "\n"
                )
    return run_dir
