"""The data set a training config names, loaded the same way by training, evaluation and pictures."""

from __future__ import annotations

from ddpm.data import Dataset, load_dataset
from ddpm.train.config import TrainConfig


def load_data(config: TrainConfig, split: str = "train") -> Dataset:
    data = config.data
    return load_dataset(
        data.spec,
        split=split,
        image_size=data.image_size or None,
        channels=data.channels or None,
        root=data.root or None,
        num_points=data.num_points,
        seed=config.run.seed,
        max_archive_bytes=int(data.max_archive_gb * 1024**3),
    )
