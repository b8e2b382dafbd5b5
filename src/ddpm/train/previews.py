"""Preview samples drawn from the EMA weights during and after training (into samples/); an autoencoder
run's previews are reconstructions instead: originals above what the EMA autoencoder makes of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm.data import Dataset
from ddpm.model import build_model, to_uint8
from ddpm.rundir import RunDir
from ddpm.train.config import TrainConfig, model_spec
from ddpm.train.control_data import preview_controls


class Previews:
    """Callable ``(step, ema_net, final=False)`` that writes ``samples/step_NNNNNNN.png``.

    The final call also writes ``samples/final.png`` and ``samples/final.npz`` (the samples file
    format of DESIGN.md), from the same seeds every time so grids are comparable across steps.
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path) -> None:
        self.config = config
        self.kind = dataset.kind
        # a latent run's samples are images of its data's shape, not the latents it trains on
        self.sample_shape = tuple(getattr(dataset, "image_shape", dataset.sample_shape))
        self.codec = getattr(dataset, "codec", None)  # a latent run decodes its samples with it
        self.run = RunDir(run_dir)
        conditional = config.model.num_classes is not None
        self.control = preview_controls(dataset, config.run.preview_images, conditional)  # a ControlNet run's

    def __call__(self, step: int, net: nn.Module, final: bool = False) -> Path:
        from ddpm.viz.grid import save_grid
        from ddpm.viz.scatter import save_scatter

        run = self.config.run
        model = build_model(model_spec(self.config, self.sample_shape, self.kind), net, codec=self.codec)
        num_classes = self.config.model.num_classes
        labels = None if num_classes is None else torch.arange(run.preview_images) % num_classes
        samples = model.sample(
            run.preview_images,
            **run.preview_options(),
            seed=run.seed,
            **{"labels": labels, **self.control},  # a ControlNet run: its images' controls, labels
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


class ReconstructionPreviews:
    """Callable ``(step, ema_autoencoder, final=False)`` that writes ``samples/step_NNNNNNN.png``: rows of
    training images, each above its reconstruction (the posterior mean decoded), the same images every time.

    The final call also writes ``samples/final.png`` and ``samples/final.npz`` (``images``: the
    reconstructions, ``originals``: the images, uint8 N×H×W×C).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path) -> None:
        count = min(config.run.preview_images, len(dataset))
        rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.run.seed))[:count]
        self.originals = dataset.batch(rows)  # (n, C, H, W) in [-1, 1]
        self.per_row = min(8, count)
        self.run = RunDir(run_dir)

    @torch.no_grad()
    def __call__(self, step: int, net: nn.Module, final: bool = False) -> Path:
        from ddpm.viz.grid import save_grid

        net.eval()
        device = next(net.parameters()).device
        recon = net.decode(net.encode(self.originals.to(device)).mode()).clamp(-1, 1).cpu()
        k = self.per_row
        pairs = [torch.cat([self.originals[i : i + k], recon[i : i + k]]) for i in range(0, len(recon), k)]
        self.run.samples_dir.mkdir(parents=True, exist_ok=True)
        path = self.run.final_samples_png if final else self.run.preview_png(step)
        save_grid(_padded_rows(pairs, k), path, nrow=k)
        if final:
            np.savez_compressed(
                self.run.final_samples_npz, images=to_uint8(recon), originals=to_uint8(self.originals)
            )
        return path


def _padded_rows(pairs: list[torch.Tensor], k: int) -> torch.Tensor:
    """Each (original row, reconstruction row) pair with blank (−1) cells filling a short last row."""
    out = []
    for pair in pairs:
        half = len(pair) // 2
        blank = torch.full((k - half, *pair.shape[1:]), -1.0)
        out += [pair[:half], blank, pair[half:], blank]
    return torch.cat(out)
