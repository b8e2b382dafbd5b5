"""Data specs (``name`` or ``name:PATH``), what each accepts, and where data lives on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class DataSpec:
    """What a spec name means and what it accepts."""

    kind: str  # "images" or "points"
    path: str  # "none" (takes no path), "optional" (name[:DIR]) or "required" (name:PATH)
    splits: tuple[str, ...]  # allowed values of load_dataset's split
    summary: str  # one line for --help


POINT_SPLITS = ("train", "test")  # generated: "test" is a second draw with another seed
IMAGE_SPLITS = ("train", "test", "all")

DATA_SPECS: dict[str, DataSpec] = {
    "swissroll": DataSpec("points", "none", POINT_SPLITS, "2-D swiss roll (Sohl-Dickstein et al. 2015)"),
    "moons": DataSpec("points", "none", POINT_SPLITS, "2-D two interleaved half circles, 2 classes"),
    "gaussians8": DataSpec("points", "none", POINT_SPLITS, "2-D mixture of 8 Gaussians on a circle"),
    "digits": DataSpec("images", "none", IMAGE_SPLITS, "scikit-learn's bundled 8x8 digits, offline"),
    "mnist": DataSpec("images", "optional", IMAGE_SPLITS, "MNIST IDX files, 1x28x28, 10 classes"),
    "fashion-mnist": DataSpec("images", "optional", IMAGE_SPLITS, "Fashion-MNIST IDX files, 1x28x28"),
    "cifar10": DataSpec("images", "optional", IMAGE_SPLITS, "CIFAR-10 python batches, 3x32x32"),
    "folder": DataSpec("images", "required", IMAGE_SPLITS, "a directory, .tar or .zip of images"),
}


class ParsedSpec(NamedTuple):
    name: str  # a key of DATA_SPECS
    path: Path | None  # the part after the first ':', or None


def spec_usage() -> str:
    forms = {"none": "{}", "optional": "{}[:DIR]", "required": "{}:PATH"}
    return ", ".join(forms[info.path].format(name) for name, info in DATA_SPECS.items())


def parse_spec(spec: str) -> ParsedSpec:
    """Split ``name[:PATH]`` at the first ':' and check the name and whether it takes a path."""
    name, colon, rest = spec.strip().partition(":")
    if name not in DATA_SPECS:
        raise ValueError(f"unknown data spec {name!r} (from {spec!r}); allowed: {spec_usage()}")
    takes = DATA_SPECS[name].path
    if colon and not rest:
        raise ValueError(f"data spec {spec!r} has an empty path after ':'; write {name}:PATH")
    if rest and takes == "none":
        raise ValueError(f"data spec {name!r} takes no path, got {spec!r}; write just {name!r}")
    if not rest and takes == "required":
        raise ValueError(
            f"data spec {name!r} needs a path: {name}:PATH (a directory, .tar or .zip of images)"
        )
    return ParsedSpec(name, Path(rest).expanduser() if rest else None)


def default_data_root() -> Path:
    """Where downloads go: $DDPM_DATA, else $XDG_CACHE_HOME/ddpm, else ~/.cache/ddpm.

    A ``root`` given to load_dataset (the CLI's --data-root) takes precedence over all of these.
    """
    env = os.environ.get("DDPM_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "ddpm"
