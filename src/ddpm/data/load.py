"""``load_dataset``: one entry point from a data spec to an in-memory :class:`Dataset`."""

from __future__ import annotations

from pathlib import Path

from ddpm.data.cifar import load_cifar10
from ddpm.data.dataset import Dataset
from ddpm.data.digits import load_digits_dataset
from ddpm.data.folder import load_folder
from ddpm.data.idx import load_idx_dataset
from ddpm.data.points import load_points
from ddpm.data.sources import DEFAULT_MAX_ARCHIVE_BYTES
from ddpm.data.spec import DATA_SPECS, default_data_root, parse_spec


def load_dataset(
    spec: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    root: str | Path | None = None,
    num_points: int = 20000,
    seed: int = 0,
    download: bool = True,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
) -> Dataset:
    """Load the data a spec names (see DATA_SPECS) into memory.

    split: "train" or "test"; image sets also take "all". A folder without train/ and test/
        sub-folders is one set, returned for every split.
    image_size: resize (shorter side, bicubic) and centre-crop images to this size; None keeps a
        data set's own size (folders: 32).
    channels: 1 (grey, ITU-R 601-2 luma) or 3 (RGB, grey repeated); None keeps a data set's own
        (folders: 3). Neither applies to 2-D points.
    root: where downloads go and are looked for (mnist → <root>/mnist/, …); None → default_data_root().
    num_points, seed: size and seed of a generated 2-D point set; image sets ignore them.
    download: fetch a missing MNIST, Fashion-MNIST or CIFAR-10 into ``root`` (never into a given DIR).
    max_archive_bytes: ``folder:`` specs naming a .tar or .zip: the most bytes its files may expand
        to (default 16 GiB; also never more than 100× the archive's size + 256 MiB), checked against
        what the archive declares before anything is read. Other specs ignore it.
    """
    name, path = parse_spec(spec)
    info = DATA_SPECS[name]
    if split not in info.splits:
        raise ValueError(f"split {split!r} is not available for {name!r}; allowed: {', '.join(info.splits)}")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not allowed; use 1 (grey) or 3 (RGB)")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size={image_size!r} must be an integer ≥ 1 (or None for the native size)")
    if info.kind == "points":
        if image_size is not None or channels is not None:
            raise ValueError(f"{name!r} is 2-D points: image_size and channels must be None")
        return load_points(spec, name, split, num_points, seed)
    if path is not None and not path.exists():
        raise ValueError(f"data path {str(path)!r} in spec {spec!r} does not exist")
    data_root = Path(root).expanduser() if root is not None else default_data_root()
    if name == "digits":
        return load_digits_dataset(spec, split, image_size, channels)
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(spec, name, path, data_root, split, image_size, channels, download)
    if name == "cifar10":
        return load_cifar10(spec, path, data_root, split, image_size, channels, download)
    assert name == "folder" and path is not None  # parse_spec guarantees both
    return load_folder(spec, path, split, image_size, channels, max_archive_bytes=max_archive_bytes)
