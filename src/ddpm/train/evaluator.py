"""Sample-quality evaluation during training: the run's own sampler, scored against the test split."""

from __future__ import annotations

import torch
from torch import nn

from ddpm.data import Dataset
from ddpm.eval import prepare, primary_score, score
from ddpm.model import build_model
from ddpm.train.config import TrainConfig, model_spec
from ddpm.train.run_data import load_data


class TrainingEvaluator:
    """``(step, ema_net) -> (metrics, score)`` for the trainer: samples with the preview sampler and
    scores them against the test split (reference features prepared once)."""

    def __init__(self, config: TrainConfig, dataset: Dataset) -> None:
        self.config = config
        self.kind = dataset.kind
        # a latent run's samples are images of its data's shape, not the latents it trains on
        self.sample_shape = tuple(getattr(dataset, "image_shape", dataset.sample_shape))
        self.codec = getattr(dataset, "codec", None)
        self.n = min(config.run.eval_samples, len(load_data(config, split="test")))
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
        model = build_model(model_spec(config, self.sample_shape, self.kind), net, codec=self.codec)
        labels = None if model.num_classes is None else torch.arange(self.n) % model.num_classes
        samples = model.sample(
            self.n,
            **config.run.preview_options(),
            seed=10_000,
            labels=labels,
        )
        metrics = score(self.evaluation, samples)
        return metrics, primary_score(metrics)[1]
