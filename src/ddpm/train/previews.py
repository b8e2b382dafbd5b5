"""Preview samples drawn from the EMA weights during and after training (into samples/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm.data import Dataset
from ddpm.model import build_model, to_uint8
from ddpm.rundir import RunDir
from ddpm.train.config import TrainConfig, model_spec


class Previews:
    """Callable ``(step, ema_net, final=False)`` that writes ``samples/step_NNNNNNN.png``.

    The final call also writes ``samples/final.png`` and ``samples/final.npz`` (the samples file
    format of DESIGN.md), from the same seeds every time so grids are comparable across steps.
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path) -> None:
        self.config = config
        self.kind = dataset.kind
        self.sample_shape = tuple(dataset.sample_shape)
        self.run = RunDir(run_dir)

    def __call__(self, step: int, net: nn.Module, final: bool = False) -> Path:
        from ddpm.viz.grid import save_grid
        from ddpm.viz.scatter import save_scatter

        run = self.config.run
        model = build_model(model_spec(self.config, self.sample_shape, self.kind), net)
        num_classes = self.config.model.num_classes
        labels = None if num_classes is None else torch.arange(run.preview_images) % num_classes
        samples = model.sample(
            run.preview_images,
            **run.preview_options(),
            seed=run.seed,
            labels=labels,
        )
        self.run.samples_dir.mkdir(parents=True, exist_ok=True)
        path = self.run.final_samples_png if final else self.run.preview_png(step)
        npz = self.run.final_samples_npz
        if self.kind == "images":
            save_grid(samples, path)
            if final:
                np.savez_compressed(npz, images=to_uint8(samples))
        else:
            save_scatter(samples, path, title=f"step {step}")
            if final:
                np.savez_compressed(npz, points=samples.numpy().astype(np.float32))
        return path
