"""Data specs → in-memory data sets: uint8 images (N, C, H, W) or float32 2-D points (N, 2).

``load_dataset("digits")``, ``load_dataset("mnist:/data/mnist", split="test")``,
``load_dataset("folder:photos.zip", image_size=64)``; ``Dataset.batch(index)`` gives float32 in [-1, 1].
Nothing here flips or augments: the trainer does that per batch.
"""

from ddpm.data.dataset import Dataset, SkippedFile
from ddpm.data.load import load_dataset
from ddpm.data.spec import DATA_SPECS, DataSpec, ParsedSpec, default_data_root, parse_spec

__all__ = [
    "DATA_SPECS",
    "DataSpec",
    "Dataset",
    "ParsedSpec",
    "SkippedFile",
    "default_data_root",
    "load_dataset",
    "parse_spec",
]
