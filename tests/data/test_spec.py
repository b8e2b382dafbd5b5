"""Spec parsing, argument checks shared by every data set, the data root, and the Dataset contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddpm.data import DATA_SPECS, Dataset, default_data_root, load_dataset, parse_spec


def test_parse_spec_forms() -> None:
    assert parse_spec("digits") == ("digits", None)
    assert parse_spec("mnist") == ("mnist", None)
    assert parse_spec("mnist:/data/m") == ("mnist", Path("/data/m"))
    assert parse_spec("folder:C:/x/y.zip").path == Path("C:/x/y.zip")  # only the first ':' splits
    assert parse_spec("fashion-mnist:~/f").path == Path.home() / "f"
    assert set(DATA_SPECS) == {
        "swissroll",
        "moons",
        "gaussians8",
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "folder",
    }


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("imagenet", r"unknown data spec 'imagenet' \(from 'imagenet'\); allowed: swissroll, .*folder:PATH"),
        ("MNIST:/x", r"unknown data spec 'MNIST'.*mnist\[:DIR\]"),
        ("digits:/x", r"data spec 'digits' takes no path, got 'digits:/x'; write just 'digits'"),
        ("swissroll:3", r"data spec 'swissroll' takes no path"),
        ("folder", r"data spec 'folder' needs a path: folder:PATH"),
        ("mnist:", r"data spec 'mnist:' has an empty path after ':'"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)
    with pytest.raises(ValueError, match=match):
        load_dataset(spec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, r"split 'val' is not available for 'digits'; allowed: train, test, all"),
        ({"channels": 2}, r"channels=2 is not allowed; use 1 \(grey\) or 3 \(RGB\)"),
        ({"image_size": 0}, r"image_size=0 must be an integer ≥ 1"),
        ({"image_size": 8.5}, r"image_size=8.5 must be an integer ≥ 1"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("digits", **kwargs)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "folder", "fashion-mnist"])
def test_missing_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=rf"data path '.*nowhere' in spec '{name}:.*nowhere' does not exist"):
        load_dataset(f"{name}:{tmp_path / 'nowhere'}")


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"
    monkeypatch.delenv("DDPM_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "ddpm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_root() == Path.home() / ".cache" / "ddpm"


def _images(n: int = 4) -> torch.Tensor:
    return torch.arange(n * 12, dtype=torch.uint8).reshape(n, 3, 2, 2)


def test_dataset_batch_scales_images_to_unit_interval() -> None:
    data = torch.tensor([0, 255, 128, 1], dtype=torch.uint8).reshape(4, 1, 1, 1)
    dataset = Dataset("x", "images", data, None, None, "f")
    batch = dataset.batch(torch.tensor([0, 1, 2, 3]), device="cpu")
    assert batch.dtype == torch.float32
    assert torch.allclose(
        batch.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1, 1 / 127.5 - 1]), atol=1e-6
    )
    assert dataset.data.dtype == torch.uint8  # batch() never changes the stored data
    assert len(dataset) == 4 and dataset.sample_shape == (1, 1, 1) and dataset.num_classes is None
    assert "n=4" in repr(dataset) and "sample_shape=(1, 1, 1)" in repr(dataset)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "audio"}, r"Dataset kind 'audio' is not one of images, points"),
        ({"data": _images().float()}, r"images data must be torch.uint8 with 4 dims, got torch.float32"),
        ({"kind": "points"}, r"points data must be torch.float32 with 2 dims"),
        (
            {"labels": torch.zeros(4, dtype=torch.int64)},
            r"labels and class_names must both be given or both be None",
        ),
        (
            {"labels": torch.zeros(3, dtype=torch.int64), "class_names": ("a",)},
            r"labels must be int64 of shape \(4,\), got torch.int64 \(3,\)",
        ),
    ],
)
def test_dataset_checks_its_fields(fields: dict, match: str) -> None:
    base = {
        "spec": "x",
        "kind": "images",
        "data": _images(),
        "labels": None,
        "class_names": None,
        "fingerprint": "f",
    }
    with pytest.raises(ValueError, match=match):
        Dataset(**(base | fields))
