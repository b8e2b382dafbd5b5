"""Conditional generation and editing with a loaded :class:`~ddpm.pipeline.DiffusionModel`.

Class samples with classifier-free guidance, DDIM inversion and reconstruction, spherical
interpolation of noises, RePaint inpainting; the math lives in ``ddpm.diffusion`` (guidance,
inversion, inpaint), this module fits it to a model and its inputs, draws the pictures (class-by-seed
grid, guidance sweep, interpolation strip, inpainting before/after) and holds the bodies of the
``ddpm sample --class``, ``ddpm invert``, ``ddpm interpolate`` and ``ddpm inpaint`` commands.

import ddpm, ddpm.editing as editing
model = ddpm.load("runs/digits-cond")
images, labels = editing.sample_classes(model, "all", guidance=3.0, n_per_class=8)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from ddpm.diffusion.guidance import ClassifierFreeGuidance, check_guidance_scale
from ddpm.diffusion.inpaint import repaint
from ddpm.diffusion.inversion import ddim_invert, slerp
from ddpm.diffusion.samplers import SAMPLERS, per_sample_noise, sample_seeds
from ddpm.pipeline import DiffusionModel, load, to_uint8
from ddpm.sampling_cli import sampler_options
from ddpm.viz.figures import save_figure
from ddpm.viz.process import image_table, table_figure

ClassSpec = str | int | Sequence[int]  # "all", "3", "1,4,7", 3 or [1, 4, 7]
Labels = int | Sequence[int] | Tensor | None  # one class for every sample, one per sample, or none


def parse_classes(model: DiffusionModel, classes: ClassSpec) -> list[int]:
    """Class indices from "all", "K", "K1,K2,…", an int or a sequence; each must be in 0…num_classes−1."""
    num_classes = model.num_classes
    if num_classes is None:
        raise ValueError(
            f"classes={classes!r} given to an unconditional model; train with data.class_conditional"
        )
    if isinstance(classes, str):
        if classes.strip() == "all":
            return list(range(num_classes))
        try:
            classes = [int(part) for part in classes.split(",")]
        except ValueError:
            raise ValueError(f"classes={classes!r} is invalid; give 'all', K or K1,K2,… (integers)") from None
    elif isinstance(classes, int):
        classes = [classes]
    classes = classes.reshape(-1).tolist() if isinstance(classes, Tensor) else list(classes)
    if not classes:
        raise ValueError("classes is empty; give 'all' or at least one class index")
    for k in classes:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < num_classes:
            raise ValueError(f"class {k!r} is out of range; this model has classes 0…{num_classes - 1}")
    return classes


def denoiser(model: DiffusionModel, guidance: float, conditional: bool) -> Any:
    """The network, wrapped in classifier-free guidance when the scale s ≠ 1 (which needs labels)."""
    check_guidance_scale(guidance)
    if guidance == 1:
        return model.net  # s = 1: the plain (conditional, given labels) model
    if model.num_classes is None:
        raise ValueError(
            f"guidance={guidance} needs a class-conditional model; "
            "this one is unconditional (leave it at 1.0)"
        )
    if not conditional:
        raise ValueError(
            f"guidance={guidance} needs a class label: classifier-free guidance steers towards one"
        )
    return ClassifierFreeGuidance(model.net, guidance, model.num_classes)


def _labels(model: DiffusionModel, labels: Labels, n: int) -> Tensor | None:
    """(n,) class indices on the model's device from one label or one per sample; None stays None."""
    if labels is None:
        return None
    if isinstance(labels, int):
        labels = [labels] * n
    values = torch.as_tensor(labels)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {values.dtype}")
    labels = parse_classes(model, values.reshape(-1).tolist())
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} samples; give one label or one per sample")
    return torch.tensor(labels, dtype=torch.long, device=model.device)


def _cond(labels: Tensor | None) -> dict | None:
    return None if labels is None else {"class_labels": labels}


def check_images(model: DiffusionModel, images: Tensor, name: str = "images") -> Tensor:
    """``images`` as a float (N, C, H, W) batch of the model's sample shape, on the model's device."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor in [-1, 1], got {getattr(images, 'dtype', type(images))}"
        )
    if tuple(images.shape) == model.sample_shape:
        images = images.unsqueeze(0)
    if images.ndim != len(model.sample_shape) + 1 or tuple(images.shape[1:]) != model.sample_shape:
        wanted = ", ".join(map(str, model.sample_shape))
        raise ValueError(f"{name} have shape {tuple(images.shape)}; this model needs (N, {wanted})")
    return images.to(model.device)


def sample_classes(
    model: DiffusionModel,
    classes: ClassSpec,
    *,
    guidance: float = 1.0,
    n_per_class: int = 1,
    seed: int = 0,
    **sample_options: Any,
) -> tuple[Tensor, Tensor]:
    """(images (K·n, C, H, W), labels (K·n,)), class-major: row k holds ``n_per_class`` of class k.

    Column j uses the same noise (image j of ``seed``) for every class, so a row differs from the next
    only by its label; image (k, j) is ``model.sample(n_per_class, labels=[k] * n, seed=seed)[j]`` up
    to float rounding (one batch for all classes). ``guidance`` is the scale s (1 = the conditional
    model, the default; see ``ddpm.diffusion.guidance``). ``sample_options`` go to
    :func:`sample_from_noise`.
    """
    classes = parse_classes(model, classes)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class!r} is invalid; it must be an integer ≥ 1")
    seeds = sample_seeds(seed, n_per_class) * len(classes)  # column j: image j of ``seed``, every class
    noise = per_sample_noise(seeds, model.sample_shape)  # (K·n, C, H, W)
    labels = torch.tensor(classes).repeat_interleave(n_per_class)  # (K·n,)
    images = sample_from_noise(model, noise, labels=labels, guidance=guidance, seeds=seeds, **sample_options)
    return images, labels


def guidance_sweep(
    model: DiffusionModel,
    label: int,
    scales: Sequence[float],
    *,
    n: int = 8,
    seed: int = 0,
    **sample_options: Any,
) -> Tensor:
    """(len(scales), n, C, H, W): the same ``n`` noises of class ``label`` at each guidance scale s.

    s = 0 is the unconditional model, s = 1 the conditional one (see ``ddpm.diffusion.guidance``).
    """
    label = parse_classes(model, [label])[0]
    if not scales:
        raise ValueError("scales is empty; give at least one guidance scale s ≥ 0")
    return torch.stack(
        [model.sample(n, labels=[label] * n, guidance=s, seed=seed, **sample_options) for s in scales]
    )


def noise_for_seed(model: DiffusionModel, seed: int) -> Tensor:
    """x_T (C, H, W) of ``model.sample(1, seed=seed)``: the noise of image 0 of that seed."""
    return per_sample_noise(sample_seeds(seed, 1), model.sample_shape)[0]


def sample_from_noise(
    model: DiffusionModel,
    noise: Tensor,
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    labels: Labels = None,
    guidance: float = 1.0,
    clip_x0: float | None = None,
    seeds: Sequence[int] | None = None,
    batch_size: int = 256,
    **sampler_options: Any,
) -> Tensor:
    """Samples (N, C, H, W) on the CPU from given x_T (N, C, H, W), as :meth:`DiffusionModel.sample` would.

    ``labels``: one class for all samples or one per sample. With ``seeds`` (one per row, for the later
    noise of stochastic samplers) and x_T drawn from them, the result equals ``model.sample`` with those
    seeds and the same batch layout. ``steps=None`` is the sampler's default.
    """
    noise = check_images(model, noise, "noise")
    labels = _labels(model, labels, len(noise))
    net = denoiser(model, guidance, labels is not None)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; it must be an integer ≥ 1")
    if clip_x0 is None and model.kind == "images":
        clip_x0 = 1.0  # as DiffusionModel.sample: images live in [-1, 1]
    if steps is not None:
        sampler_options["steps"] = steps
    seeds = sample_seeds(0, len(noise)) if seeds is None else list(seeds)
    model.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(noise), batch_size):
            rows = slice(start, start + batch_size)
            result = SAMPLERS[sampler](
                net, model.schedule, noise[rows],
                parameterization=model.parameterization, clip_x0=clip_x0, seeds=seeds[rows],
                cond=_cond(None if labels is None else labels[rows]), **sampler_options,
            )  # fmt: skip
            out.append(result.samples.cpu())
    return torch.cat(out)


def invert(
    model: DiffusionModel, images: Tensor, *, steps: int = 50, labels: Labels = None, batch_size: int = 256
) -> Tensor:
    """DDIM inversion (η = 0) of images in [-1, 1] (N, C, H, W) → their x_T (N, C, H, W) on the CPU.

    ``labels`` (one class, or one per image) condition a class-conditional model; None uses its
    unconditional branch. ``sample_from_noise(model, x_T, steps=steps, labels=labels)`` reconstructs
    the images.
    """
    images = check_images(model, images)
    labels = _labels(model, labels, len(images))
    model.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            latents = ddim_invert(
                model.net, model.schedule, images[rows], parameterization=model.parameterization,
                steps=steps, cond=_cond(None if labels is None else labels[rows]),
            )  # fmt: skip
            out.append(latents.cpu())
    return torch.cat(out)


def reconstruct(
    model: DiffusionModel, images: Tensor, *, steps: int = 50, labels: Labels = None
) -> tuple[Tensor, Tensor]:
    """(x_T, reconstruction): invert the images, then sample them back with deterministic DDIM (η = 0)."""
    latents = invert(model, images, steps=steps, labels=labels)
    return latents, sample_from_noise(model, latents, sampler="ddim", steps=steps, labels=labels)


def interpolation_weights(num: int) -> list[float]:
    """``num`` weights from 0 to 1 inclusive, with exactly 0.0 and 1.0 at the ends."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"num={num!r} interpolation steps is invalid; it must be an integer ≥ 2 (both ends)")
    return [i / (num - 1) for i in range(num)]


def interpolate(
    model: DiffusionModel,
    a: Tensor,
    b: Tensor,
    num: int = 8,
    *,
    steps: int = 50,
    labels: Labels = None,
    guidance: float = 1.0,
    batch_size: int = 256,
) -> Tensor:
    """``num`` images (num, C, H, W) sampled by deterministic DDIM from slerp(a, b, w), w = 0 … 1.

    ``a`` and ``b`` are noises x_T (C, H, W): from :func:`noise_for_seed` or :func:`invert`. The first
    and last images are the samples of a and b themselves (slerp returns them exactly).
    """
    weights = interpolation_weights(num)
    a = check_images(model, a, "a")[0].cpu()
    b = check_images(model, b, "b")[0].cpu()
    noises = torch.stack([slerp(a, b, w) for w in weights])  # (num, C, H, W)
    return sample_from_noise(
        model, noises, sampler="ddim", steps=steps, labels=labels, guidance=guidance, batch_size=batch_size
    )


def interpolate_images(
    model: DiffusionModel,
    image_a: Tensor,
    image_b: Tensor,
    num: int = 8,
    *,
    steps: int = 50,
    label: int | None = None,
) -> Tensor:
    """Interpolate between two real images: DDIM-invert both, then :func:`interpolate` their x_T."""
    endpoints = torch.cat([check_images(model, image_a, "image_a"), check_images(model, image_b, "image_b")])
    latents = invert(model, endpoints, steps=steps, labels=label)
    return interpolate(model, latents[0], latents[1], num, steps=steps, labels=label)


def inpaint(
    model: DiffusionModel,
    images: Tensor,
    mask: Tensor,
    *,
    steps: int = 250,
    jump_length: int = 10,
    resamples: int = 10,
    seed: int = 0,
    labels: Labels = None,
    guidance: float = 1.0,
    batch_size: int = 256,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022): fill the pixels where ``mask`` is 1/True; the others are kept exactly.

    ``images`` (N, C, H, W) in [-1, 1]; ``mask`` broadcastable to them ((H, W), (1, H, W), …). The
    defaults are the paper's (250 steps, jumps of 10, 10 resamplings: ≈ 4,500 network calls); image i
    uses seed ``sample_seeds(seed, N)[i]``. Returns (N, C, H, W) on the CPU.
    """
    images = check_images(model, images)
    labels = _labels(model, labels, len(images))
    net = denoiser(model, guidance, labels is not None)
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    try:
        mask = mask.to(model.device).expand(images.shape)
    except RuntimeError:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match images of shape {tuple(images.shape)}; "
            "give (H, W), (C, H, W) or the images' shape"
        ) from None
    seeds = sample_seeds(seed, len(images))
    clip_x0 = 1.0 if model.kind == "images" else None
    model.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            result = repaint(
                net, model.schedule, images[rows], mask[rows],
                parameterization=model.parameterization, steps=steps, jump_length=jump_length,
                resamples=resamples, clip_x0=clip_x0, seeds=seeds[rows],
                cond=_cond(None if labels is None else labels[rows]),
            )  # fmt: skip
            out.append(result.samples.cpu())
    return torch.cat(out)


# Pictures ----------------------------------------------------------------------------------------------


def class_grid_figure(images: Tensor, labels: Tensor, n_per_class: int, *, cell_in: float = 0.6) -> Figure:
    """Class-by-seed grid from :func:`sample_classes`: one row per class, one column per seed."""
    cells = images.reshape(-1, n_per_class, *images.shape[1:])  # (K, n, C, H, W)
    row_labels = [str(int(k)) for k in labels[::n_per_class]]
    return table_figure(image_table(cells, [], row_labels, scale=_scale(images)), cell_in=cell_in)


def guidance_sweep_figure(sweep: Tensor, scales: Sequence[float], *, cell_in: float = 0.6) -> Figure:
    """Rows of :func:`guidance_sweep` (same noises, one row per guidance scale s)."""
    row_labels = [f"s={s:g}" for s in scales]
    return table_figure(image_table(sweep, [], row_labels, scale=_scale(sweep[0])), cell_in=cell_in)


def interpolation_figure(strips: Tensor, *, cell_in: float = 0.6) -> Figure:
    """Interpolation strips (num, C, H, W) or (rows, num, C, H, W), columns labelled by their weight."""
    strips = strips.unsqueeze(0) if strips.ndim == 4 else strips
    col_labels = [f"{w:.2f}" for w in interpolation_weights(strips.shape[1])]
    return table_figure(image_table(strips, col_labels, scale=_scale(strips[0])), cell_in=cell_in)


def inpainting_figure(images: Tensor, mask: Tensor, results: Tensor, *, cell_in: float = 0.8) -> Figure:
    """Before/after: one row per image with the input, the input with the hole shown grey, the result."""
    images = images.cpu()
    mask = mask.cpu().expand(images.shape).bool()
    holed = torch.where(mask, torch.zeros_like(images), images)  # the region to fill in mid-grey
    cells = torch.stack([images, holed, results.cpu()], dim=1)  # (N, 3, C, H, W)
    table = image_table(cells, ["input", "masked", "inpainted"], scale=_scale(images))
    return table_figure(table, cell_in=cell_in)


def _scale(images: Tensor) -> int:
    """Upscale small images (8×8 digits) so that labels and pixels are both legible."""
    return max(1, 32 // images.shape[-1])


# Command bodies: `ddpm sample --class`, `ddpm invert`, `ddpm interpolate`, `ddpm inpaint` -------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
NAMED_MASKS = ("top", "bottom", "left", "right", "center")  # the half (or central square) to fill


def load_images(paths: Sequence[str | Path], sample_shape: tuple[int, ...]) -> Tensor:
    """Image files (resized to the model's size) and/or samples .npz files → (N, C, H, W) in [-1, 1]."""
    channels, height, width = sample_shape
    batches = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"image {str(path)!r} does not exist")
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "images" not in data:
                    raise ValueError(
                        f"{str(path)!r} has no 'images' array; give a samples .npz or image files"
                    )
                pixels = data["images"]  # (N, H, W, C) uint8
            if pixels.ndim != 4 or pixels.shape[1:] != (height, width, channels):
                raise ValueError(
                    f"{str(path)!r} holds images of shape {pixels.shape[1:]}; the model needs "
                    f"{(height, width, channels)} (H, W, C)"
                )
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                pixels = np.asarray(image).reshape(1, height, width, channels)
        else:
            raise ValueError(f"image {str(path)!r} must be .npz or one of {', '.join(IMAGE_SUFFIXES)}")
        batches.append(torch.from_numpy(pixels.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    if not batches:
        raise ValueError("no images given")
    return torch.cat(batches)


def load_mask(spec: str | Path, sample_shape: tuple[int, ...]) -> Tensor:
    """(H, W) bool, True where to generate: a mask image (white = fill, resized) or a named region."""
    _, height, width = sample_shape
    if str(spec) in NAMED_MASKS:
        mask = torch.zeros(height, width, dtype=torch.bool)
        region = {
            "top": (slice(0, height // 2), slice(None)),
            "bottom": (slice(height // 2, None), slice(None)),
            "left": (slice(None), slice(0, width // 2)),
            "right": (slice(None), slice(width // 2, None)),
            "center": (slice(height // 4, height - height // 4), slice(width // 4, width - width // 4)),
        }[str(spec)]
        mask[region] = True
        return mask
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--mask {str(spec)!r} is neither a file nor one of {', '.join(NAMED_MASKS)}")
    with Image.open(path) as image:
        image = image.convert("L").resize((width, height), Image.Resampling.NEAREST)
        return torch.from_numpy(np.asarray(image) >= 128)


def _load(path: str | Path, weights: str, device: str) -> DiffusionModel:
    from ddpm.train.loop import resolve_device

    model = load(path, weights=weights, device=resolve_device(device))
    if model.kind != "images":
        raise ValueError(f"{str(path)!r} is a model of 2-D points; editing needs an image model")
    return model


def _check_out(out: str | Path, suffixes: tuple[str, ...]) -> Path:
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"--out {str(out)!r} must end in {' or '.join(suffixes)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def sample_classes_to_files(
    path: str | Path,
    *,
    classes: str = "all",
    guidance: float = 1.0,
    n: int = 8,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    spacing: str | None = None,
    eps_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    out: str | Path = "samples.png",
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """`ddpm sample --class K|all --guidance S`: ``n`` images per class; .png grid (a row per class) or
    .npz with ``images`` (uint8 N×H×W×C) and ``labels`` (int64 N)."""
    out = _check_out(out, (".png", ".npz"))
    options = sampler_options(sampler, eta, spacing, eps_scale)
    model = _load(path, weights, device)
    images, labels = sample_classes(
        model, classes, guidance=guidance, n_per_class=n, seed=seed, sampler=sampler, steps=steps,
        batch_size=batch_size, **options,
    )  # fmt: skip
    if out.suffix.lower() == ".npz":
        np.savez_compressed(out, images=to_uint8(images), labels=labels.numpy().astype(np.int64))
    else:
        save_figure(class_grid_figure(images, labels, n), out)
    return [out]


def invert_to_files(
    path: str | Path,
    images: Sequence[str | Path],
    *,
    steps: int = 50,
    label: int | None = None,
    out: str | Path = "latents.npz",
    figure: str | Path | None = None,
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """`ddpm invert`: DDIM-invert images; .npz with ``latents`` (float32 N×C×H×W), ``reconstructions``
    (uint8 N×H×W×C) and ``mse`` (per image, in [-1, 1] units); ``figure``: inputs above reconstructions."""
    out = _check_out(out, (".npz",))
    model = _load(path, weights, device)
    originals = load_images(images, model.sample_shape)
    latents, rebuilt = reconstruct(model, originals, steps=steps, labels=label)
    mse = (rebuilt - originals).pow(2).flatten(1).mean(1)
    np.savez_compressed(
        out, latents=latents.numpy().astype(np.float32), reconstructions=to_uint8(rebuilt), mse=mse.numpy()
    )
    written = [out]
    if figure is not None:
        table = image_table(torch.stack([originals, rebuilt]), [], ["input", "DDIM"], scale=_scale(originals))
        written.append(save_figure(table_figure(table, cell_in=0.6), figure))
    return written


def interpolate_to_files(
    path: str | Path,
    *,
    images: Sequence[str | Path] | None = None,
    seeds: tuple[int, int] = (0, 1),
    num: int = 8,
    steps: int = 50,
    label: int | None = None,
    guidance: float = 1.0,
    out: str | Path = "interpolation.png",
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """`ddpm interpolate`: a strip between two inverted images (``images``: two files) or two seeds'
    noises; .png strip or .npz with ``images`` and ``weights``."""
    out = _check_out(out, (".png", ".npz"))
    interpolation_weights(num)  # check before loading anything
    model = _load(path, weights, device)
    if images is not None:
        endpoints = load_images(images, model.sample_shape)
        if len(endpoints) != 2:
            raise ValueError(f"interpolation needs exactly 2 images, got {len(endpoints)}")
        a, b = invert(model, endpoints, steps=steps, labels=label)
    else:
        if len(seeds) != 2:
            raise ValueError(f"interpolation needs exactly 2 seeds, got {len(seeds)}")
        a, b = noise_for_seed(model, seeds[0]), noise_for_seed(model, seeds[1])
    strip = interpolate(model, a, b, num, steps=steps, labels=label, guidance=guidance)
    if out.suffix.lower() == ".npz":
        np.savez_compressed(out, images=to_uint8(strip), weights=np.array(interpolation_weights(num)))
    else:
        save_figure(interpolation_figure(strip), out)
    return [out]


def inpaint_to_files(
    path: str | Path,
    image: str | Path,
    mask: str | Path,
    *,
    n: int = 4,
    steps: int = 250,
    jump_length: int = 10,
    resamples: int = 10,
    seed: int = 0,
    label: int | None = None,
    guidance: float = 1.0,
    out: str | Path = "inpainted.png",
    weights: str = "ema",
    device: str = "auto",
) -> list[Path]:
    """`ddpm inpaint IMAGE --mask MASK`: ``n`` fills of each image's masked region (RePaint); .png
    before/after figure or .npz with ``images`` (uint8) and ``mask`` (bool H×W)."""
    out = _check_out(out, (".png", ".npz"))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--n {n!r} is invalid; it must be an integer ≥ 1")
    model = _load(path, weights, device)
    originals = load_images([image], model.sample_shape).repeat_interleave(n, dim=0)  # (N·n, C, H, W)
    region = load_mask(mask, model.sample_shape)  # (H, W)
    results = inpaint(
        model, originals, region, steps=steps, jump_length=jump_length, resamples=resamples, seed=seed,
        labels=label, guidance=guidance,
    )  # fmt: skip
    if out.suffix.lower() == ".npz":
        np.savez_compressed(out, images=to_uint8(results), mask=region.numpy())
    else:
        save_figure(inpainting_figure(originals, region, results), out)
    return [out]
