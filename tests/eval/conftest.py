"""Shared, session-scoped fixtures: the classifiers are trained once per test run, in a temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddpm.eval.classifier import TrainedClassifier, load_or_train_classifier
from tests.shared_data import SHARED_DATA

MNIST_DIR = SHARED_DATA / "mnist"


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache folder for classifiers and reference features, shared by all eval tests of a run."""
    return tmp_path_factory.mktemp("eval_cache")


@pytest.fixture(scope="session")
def digits_classifier(eval_cache: Path) -> TrainedClassifier:
    return load_or_train_classifier("digits", cache_dir=eval_cache)  # ≈ 5 s


@pytest.fixture(scope="session")
def mnist_spec() -> str:
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR}")
    return f"mnist:{MNIST_DIR}"
