"""Control signals for ControlNet (Zhang, Rao & Agrawala 2023): images → the control images a branch reads.

Every function takes images in [-1, 1], float (N, C, H, W) with C = 1 (gray) or 3 (RGB), and returns a
control image in [-1, 1] as well, so that a control can be saved as a picture and a user's own picture
read back as a control (:func:`load_control_images`): binary controls are +1 (white) where the feature is
and −1 (black) elsewhere, as the paper's white-on-black edge maps.

    canny_edges     Canny edges of the luma (scikit-image), 1 channel
    foreground_mask luma above a threshold, 1 channel
    lowres_draft    area ↓4 then nearest ↑4, the image's channels
    grayscale       ITU-R BT.601 luma of an RGB image, 1 channel (colourisation)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.feature import canny
from torch import Tensor

from ddpm.data.user_images import IMAGE_SUFFIXES, image_pixels, load_images, to_unit_range

BT601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R′, G′, B′ (they sum to 1)


def luma(images: Tensor) -> Tensor:
    """(N, 1, H, W): the BT.601 luma Y′ = 0.299 R′ + 0.587 G′ + 0.114 B′ of RGB images, gray ones as given.

    The weights sum to 1, so [-1, 1] maps to [-1, 1] exactly as [0, 1] maps to [0, 1].
    """
    _check_images(images)
    if images.shape[1] == 1:
        return images.clone()
    weights = images.new_tensor(BT601).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def grayscale(images: Tensor) -> Tensor:
    """The colourisation control: BT.601 luma (:func:`luma`) of RGB images, (N, 1, H, W) in [-1, 1]."""
    _check_images(images)
    if images.shape[1] != 3:
        raise ValueError(
            f"a grayscale control needs RGB images (3 channels); got {images.shape[1]} channel(s)"
        )
    return luma(images)


def canny_edges(
    images: Tensor, *, sigma: float = 1.0, low_threshold: float = 0.1, high_threshold: float = 0.2
) -> Tensor:
    """Canny edges (scikit-image's ``skimage.feature.canny``) of each image's luma: (N, 1, H, W), +1 on an
    edge, −1 elsewhere.

    The luma is scaled to [0, 1] and Gaussian-smoothed with ``sigma`` (pixels); the thresholds of the
    hysteresis apply to its Sobel gradient magnitude (a sharp black-to-white step gives about 4 before
    smoothing; the defaults are scikit-image's for float images). Each image is padded by replicating its
    border pixels before detection and cropped after: zero padding would draw a frame around every image
    (a step from the image to black), and scikit-image also drops detections on the outermost pixels.
    """
    gray = ((luma(images) + 1) / 2).clamp(0, 1).double().cpu().numpy()[:, 0]  # (N, H, W) in [0, 1]
    pad = int(4 * sigma + 0.5) + 2  # the Gaussian's radius (truncate=4) + Sobel + the dropped border
    edges = np.empty(gray.shape, dtype=bool)
    for i, image in enumerate(gray):
        padded = np.pad(image, pad, mode="edge")
        found = canny(padded, sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold,
                      mode="nearest")  # fmt: skip
        edges[i] = found[pad:-pad, pad:-pad]
    return _binary_image(torch.from_numpy(edges), images)


def foreground_mask(images: Tensor, *, threshold: float = 0.0) -> Tensor:
    """(N, 1, H, W): +1 where the luma exceeds ``threshold`` (in [-1, 1]; 0 is mid-gray), −1 elsewhere.

    Made for light objects on a dark ground (MNIST's digits: strokes above mid-gray are the digit).
    """
    return _binary_image(luma(images)[:, 0] > threshold, images)


def lowres_draft(images: Tensor, *, factor: int = 4) -> Tensor:
    """(N, C, H, W): each ``factor``×``factor`` block replaced by its mean (area ↓factor, then nearest
    ↑factor). Nearest keeps every low-resolution value exact in its block, so area-downsampling the draft
    gives back the low-resolution image, which is what the adherence PSNR compares against."""
    _check_images(images)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"draft factor {factor!r} must be a positive integer")
    height, width = images.shape[2:]
    if height % factor or width % factor:
        raise ValueError(f"image size {height}×{width} is not divisible by the draft factor {factor}")
    small = F.avg_pool2d(images, factor)  # (N, C, H/f, W/f)
    return F.interpolate(small, scale_factor=factor, mode="nearest")


CONTROLS: dict[str, Callable[[Tensor], Tensor]] = {
    "canny": canny_edges,
    "mask": foreground_mask,
    "lowres": lowres_draft,
    "gray": grayscale,
}


def make_control(kind: str, images: Tensor) -> Tensor:
    """The control of ``kind`` (a key of CONTROLS) for ``images``, with each function's defaults."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; allowed: {', '.join(CONTROLS)}")
    return CONTROLS[kind](images)


def control_channels(kind: str, image_channels: int) -> int:
    """Channels of the control of ``kind`` for images of ``image_channels``: the draft keeps them, the
    others are single-channel."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; allowed: {', '.join(CONTROLS)}")
    return image_channels if kind == "lowres" else 1


def control_key(name: str | Path) -> str:
    """What pairs a data image with its control image: the relative path without its suffix (a user's
    ``cat/1.png`` pairs with the data's ``cat/1.jpg``)."""
    return PurePosixPath(Path(name).as_posix()).with_suffix("").as_posix()


def _image_files(directory: str | Path) -> list[Path]:
    """Every image file below ``directory``, hidden files and folders aside, sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"control folder {str(root)!r} does not exist (or is not a folder)")
    return sorted(
        path for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )  # fmt: skip


def controls_by_name(directory: str | Path) -> dict[str, Path]:
    """Every control image below ``directory`` by :func:`control_key` of its relative path. Two files of one
    name (``a.png`` and ``a.jpg``) are refused in one line: which of them pairs would be a guess."""
    found: dict[str, Path] = {}
    for path in _image_files(directory):
        key = control_key(path.relative_to(directory))
        if key in found:
            raise ValueError(f"control folder {str(directory)!r} has two images named {key!r} "
                             f"({found[key].name} and {path.name}); keep one")  # fmt: skip
        found[key] = path
    return found


def control_image_files(directory: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The control images in ``directory``: every image file below it sorted by relative path, or, for
    ``names`` (data images' relative paths), the file of each name's :func:`control_key`, in their order."""
    if names is None:
        files = _image_files(directory)
        if not files:
            raise ValueError(
                f"control folder {str(directory)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        return files
    found = controls_by_name(directory)
    missing = [name for name in names if control_key(name) not in found]
    if missing:
        raise ValueError(
            f"control folder {str(directory)!r} has no image for {missing[0]!r} ({len(missing)} missing); "
            "give one control image per data image, same relative path and name"
        )
    return [found[control_key(name)] for name in names]


def check_control_sizes(files: Sequence[Path], height: int, width: int) -> None:
    """Refuse, in one line, a control image file that is not ``width``×``height``
    (:func:`check_control_size`)."""
    for file in files:
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            with Image.open(file) as image:
                check_control_size(str(file), image.size, height, width)


def check_control_size(name: str, size: tuple[int, int], height: int, width: int) -> None:
    """Refuse, in one line naming it, control image ``name`` whose ``size`` (W, H) is not
    ``width``×``height``: resizing would blur an edge map or a mask."""
    if tuple(size) != (width, height):
        raise ValueError(
            f"control image {name!r} is {size[0]}×{size[1]}; this model needs {width}×{height} (W×H) control "
            "images"
        )


def control_from_image(image: Image.Image, name: str, control_shape: tuple[int, int, int]) -> Tensor:
    """An opened control image (``ddpm serve``'s upload) read as ``ddpm sample --control`` reads a file:
    (1, C, H, W) in [-1, 1] for ``control_shape`` (C, H, W), its size refused when it differs
    (:func:`check_control_size`), its colour mode converted (:func:`~ddpm.data.user_images.image_pixels`)."""
    check_control_size(name, image.size, *control_shape[1:])
    return to_unit_range(image_pixels(image, control_shape))


def load_control_images(
    path: str | Path, control_shape: tuple[int, int, int], names: Sequence[str] | None = None
) -> Tensor:
    """A user's control images → (N, C, H, W) in [-1, 1] for ``control_shape`` (C, H, W): one image file, a
    samples-style .npz (``images``, uint8 N×H×W×C), or a folder (:func:`control_image_files`). Colour
    modes are converted (an edge map saved as RGB reads as gray); sizes are not: resizing would blur an
    edge map or a mask, so a control image of another size is refused."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"control {str(path)!r} does not exist; give an image, a .npz or a folder of images")
    files = control_image_files(path, names) if path.is_dir() or names is not None else [path]
    check_control_sizes(files, *control_shape[1:])
    return load_images(files, control_shape)


def load_paired_controls(
    directory: str | Path, control_shape: tuple[int, int, int], names: Sequence[str], *, chunk: int = 1024
) -> Tensor:
    """Users' own control images for the data images ``names`` (``--control folder:PATH``), (N, C, H, W) in
    [-1, 1], one per name (:func:`control_image_files`). Stricter than :func:`load_control_images`, as
    training should be: C must be 1 or 3, and a colour image among 1-channel controls is refused in one line
    instead of read as its gray (sizes are refused as there). Read ``chunk`` files at a time."""
    channels, height, width = control_shape
    if channels not in (1, 3):
        raise ValueError(f"control.control_channels={channels} does not fit image files; use 1 (gray) or 3")
    files = control_image_files(directory, names)
    check_control_sizes(files, height, width)
    parts = []
    for start in range(0, len(files), chunk):
        rgb = load_images(files[start : start + chunk], (3, height, width))  # (n, 3, H, W)
        colour = (rgb != rgb[:, :1]).flatten(1).any(dim=1)
        if channels == 1 and bool(colour.any()):
            first = files[start + int(colour.nonzero()[0])]
            raise ValueError(f"control image {str(first)!r} is in colour; this run's controls are gray (1 "
                             "channel): save them gray, or --set control.control_channels=3")  # fmt: skip
        parts.append(rgb[:, :channels])
    return torch.cat(parts)


def _binary_image(mask: Tensor, like: Tensor) -> Tensor:
    """(N, H, W) bool → (N, 1, H, W) with +1 where True and −1 elsewhere, in ``like``'s dtype and device."""
    return mask.to(like.device)[:, None].to(like.dtype) * 2 - 1


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images of shape {shape} are not (N, C, H, W) with C = 1 or 3")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1], got {images.dtype}")
