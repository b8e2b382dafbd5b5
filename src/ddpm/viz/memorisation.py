"""The memorisation picture: the samples closest to the training set above their nearest training images."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ddpm.eval.memorisation import Memorisation
from ddpm.viz.process import image_table, table_figure


def closest_pairs_figure(
    samples: Tensor, train: Tensor, result: Memorisation, *, k: int = 8, cell_in: float = 0.7
) -> Figure:
    """The ``k`` samples nearest to a training image (columns, closest first, labelled with the distance
    and the held-out threshold) above the training image each is nearest to."""
    order = result.distances.argsort()[:k]
    cells = samples[order].unsqueeze(0)  # (1, k, C, H, W)
    pairs = train[result.nearest[order]].unsqueeze(0)
    labels = [f"{float(result.distances[i]):.2f}" for i in order]
    row_labels = ["sample", "nearest train"]
    scale = max(1, 32 // samples.shape[-1])  # small images upscaled so labels and pixels stay legible
    table = image_table(torch.cat([cells, pairs]), labels, row_labels, scale=scale)
    figure = table_figure(table, cell_in=cell_in)
    figure.suptitle(f"distance to the nearest training image (held-out 5% quantile {result.threshold:.2f})",
                    fontsize=8)  # fmt: skip
    return figure
