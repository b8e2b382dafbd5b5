"""Conditional generation and editing with a loaded :class:`~ddpm.model.DiffusionModel`.

Class samples with classifier-free guidance, DDIM inversion and reconstruction, spherical
interpolation of noises, RePaint inpainting, and a ControlNet's samples drawn with the controls of real
images beside the same noises without them (:func:`compare_control`). The math lives in
``ddpm.diffusion`` (guidance, inversion, inpaint); sampling goes through the model's one path
(``DiffusionModel.sample``); this module fits both to a model and its inputs. Pictures of the
results: ``ddpm.viz.editing``.

A latent model (Rombach et al. 2022) edits in its latent space, as LDM does: inversion encodes the
images first (x_T is a latent noise), and inpainting encodes the image, takes the mask down to latent
resolution (a latent cell is regenerated when any pixel it covers is masked: max-pooling by f), runs
RePaint on the latents, decodes, and pastes the unmasked pixels back so they are kept exactly.

import ddpm, ddpm.editing as editing
model = ddpm.load("runs/digits-cond")
images, labels = editing.sample_classes(model, "all", guidance=3.0, n_per_class=8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ddpm.data.controls import make_control
from ddpm.diffusion.inpaint import repaint
from ddpm.diffusion.inversion import ddim_invert, slerp
from ddpm.diffusion.samplers import per_sample_noise, sample_seeds
from ddpm.eval.adherence import Adherence, adherence_levels
from ddpm.model import DiffusionModel

# Deterministic DDIM on uniformly spaced steps: what DDIM inversion runs backwards, so a model's own
# sampler settings (another spacing, η, λ) must not leak into reconstructions and interpolations.
EXACT_DDIM = {"sampler": "ddim", "spacing": "uniform", "eta": 0.0, "eps_scale": 1.0}

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


def check_images(
    model: DiffusionModel, images: Tensor, name: str = "images", shape: tuple[int, ...] | None = None
) -> Tensor:
    """``images`` as a float (N, C, H, W) batch of the model's sample shape (or ``shape``, e.g. its
    ``space_shape`` for noises), on the model's device."""
    shape = model.sample_shape if shape is None else shape
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor in [-1, 1], got {getattr(images, 'dtype', type(images))}"
        )
    if tuple(images.shape) == shape:
        images = images.unsqueeze(0)
    if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != shape:
        wanted = ", ".join(map(str, shape))
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
    model, the default; see ``ddpm.diffusion.guidance``). ``sample_options`` (sampler, steps, spacing,
    eta, eps_scale, batch_size) go to :meth:`DiffusionModel.sample`; left out, the model's own apply.
    """
    classes = parse_classes(model, classes)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class!r} is invalid; it must be an integer ≥ 1")
    seeds = sample_seeds(seed, n_per_class) * len(classes)  # column j: image j of ``seed``, every class
    noise = per_sample_noise(seeds, model.space_shape)  # (K·n, C, H, W) (a latent model's: its latents')
    labels = torch.tensor(classes).repeat_interleave(n_per_class)  # (K·n,)
    images = model.sample(noise=noise, seeds=seeds, labels=labels, guidance=guidance, **sample_options)
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
    return per_sample_noise(sample_seeds(seed, 1), model.space_shape)[0]


def invert(
    model: DiffusionModel, images: Tensor, *, steps: int = 50, labels: Labels = None, batch_size: int = 256
) -> Tensor:
    """DDIM inversion (η = 0) of images in [-1, 1] (N, C, H, W) → their x_T (N, C, H, W) on the CPU
    (a latent model's: (N, c, h, w), of the images' encodings).

    ``labels`` (one class, or one per image) condition a class-conditional model; None uses its
    unconditional branch. ``reconstruct`` samples them back.
    """
    images = model.encode(check_images(model, images))
    labels = model.labels(labels, len(images))
    denoiser = model.denoiser()  # no x̂₀ clipping: inversion runs the ODE as the network gives it
    model.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            cond = None if labels is None else {"class_labels": labels[rows]}
            out.append(ddim_invert(denoiser, model.schedule, images[rows], steps=steps, cond=cond).cpu())
    return torch.cat(out)


def reconstruct(
    model: DiffusionModel, images: Tensor, *, steps: int = 50, labels: Labels = None
) -> tuple[Tensor, Tensor]:
    """(x_T, reconstruction): invert the images, then sample them back with deterministic DDIM (η = 0)."""
    latents = invert(model, images, steps=steps, labels=labels)
    return latents, model.sample(noise=latents, steps=steps, labels=labels, **EXACT_DDIM)


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
    a = check_images(model, a, "a", model.space_shape)[0].cpu()
    b = check_images(model, b, "b", model.space_shape)[0].cpu()
    noises = torch.stack([slerp(a, b, w) for w in weights])  # (num, C, H, W)
    return model.sample(
        noise=noises, steps=steps, labels=labels, guidance=guidance, batch_size=batch_size, **EXACT_DDIM
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
    callback: Callable[[int, int, Tensor], None] | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022): fill the pixels where ``mask`` is 1/True; the others are kept exactly.

    ``images`` (N, C, H, W) in [-1, 1]; ``mask`` broadcastable to them ((H, W), (1, H, W), …). The
    defaults are the paper's (250 steps, jumps of 10, 10 resamplings: ≈ 4,500 network calls); image i
    uses seed ``sample_seeds(seed, N)[i]``; ``callback(i, t, x)`` runs after each model call of a batch.
    Returns (N, C, H, W) on the CPU. A latent model works on latents (see the module's docstring).
    """
    images = check_images(model, images)
    labels = model.labels(labels, len(images))
    if guidance != 1 and labels is None:
        raise ValueError(f"guidance={guidance} needs labels: guidance steers samples towards a class")
    pixels = model.kind == "images" and model.codec is None  # x̂₀ clipping: pixels live in [-1, 1]
    denoiser = model.denoiser(guidance=guidance, clip_x0=1.0 if pixels else None)
    mask = _mask_like(mask, images)
    known, known_mask = model.encode(images), _latent_mask(model, mask)
    if callback is not None and model.codec is not None:
        callback = _decoding(model, callback)
    seeds = sample_seeds(seed, len(images))
    model.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            result = repaint(
                denoiser, model.schedule, known[rows], known_mask[rows], steps=steps, jump_length=jump_length,
                resamples=resamples, seeds=seeds[rows],
                cond=None if labels is None else {"class_labels": labels[rows]}, callback=callback,
            )  # fmt: skip
            out.append(result.samples.cpu() if model.codec is None else model.decode(result.samples))
    filled = torch.cat(out)
    if model.codec is None:
        return filled
    return torch.where(mask.bool(), filled.to(images.device), images).cpu()  # decoding is lossy: paste back


def _latent_mask(model: DiffusionModel, mask: Tensor) -> Tensor:
    """A latent model's mask (N, c, h, w) of a pixel mask (N, C, H, W): a latent cell is regenerated when
    any pixel it covers is (max-pooling by the factor f); a pixel model's mask as it is."""
    if model.codec is None:
        return mask
    f = model.codec.downsample_factor
    cells = torch.nn.functional.max_pool2d(mask.float().amax(1, keepdim=True), f)  # (N, 1, h, w)
    return cells.expand(-1, model.space_shape[0], -1, -1) > 0


def _decoding(model: DiffusionModel, callback: Callable[[int, int, Tensor], None]) -> Callable:
    return lambda i, t, x: callback(i, t, model.decode(x))  # the image the latents stand for


def _mask_like(mask: Tensor, images: Tensor) -> Tensor:
    """``mask`` broadcast to the images' shape, on their device."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    try:
        return mask.to(images.device).expand(images.shape)
    except RuntimeError:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match images of shape {tuple(images.shape)}; "
            "give (H, W), (C, H, W) or the images' shape"
        ) from None


@dataclass(frozen=True)
class ControlComparison:
    """A ControlNet's samples drawn with the controls of real images (Zhang, Rao & Agrawala 2023), the same
    noises and labels without control (the frozen base: chance), and the real images (the ceiling)."""

    kind: str  # the run's control kind (canny, mask, lowres, gray or folder)
    real: Tensor  # (N, C, H, W) in [-1, 1]: the images the controls came from
    controls: Tensor  # (N, c, H, W) in [-1, 1]
    samples: Tensor  # (N, C, H, W): sample i drawn with control i
    uncontrolled: Tensor | None  # (N, C, H, W): sample i's noise and label without its control, or None

    def adherence(self) -> dict[str, Adherence] | None:
        """The kind's measure (``ddpm.eval.adherence``) for the samples, the uncontrolled samples and the
        real images; None for users' own controls (kind folder), which have no measure."""
        if self.kind == "folder" or self.uncontrolled is None:
            return None
        return adherence_levels(self.kind, self.controls, controlled=self.samples,
                                uncontrolled=self.uncontrolled, real=self.real)  # fmt: skip


def compare_control(
    model: DiffusionModel, real: Tensor, *, controls: Tensor | None = None, labels: Labels = None,
    uncontrolled: bool = True, seed: int = 0,
    cache: Callable[[Callable[[], Tensor]], Tensor] | None = None, **sample_options: Any,
) -> ControlComparison:  # fmt: skip
    """Sample a control run once per real image with that image's control (computed with the run's kind
    unless ``controls`` are given, as users' own must be), and, with ``uncontrolled``, again from the same
    noises and ``labels`` without control: a ControlNet's branch then adds nothing, so those are the base
    model's samples; a concat run's network reads the blank control it learned at its drop rate.
    ``sample_options`` go to :meth:`DiffusionModel.sample` (left out: the run's own sampler). ``cache(draw)``,
    when given, returns the uncontrolled samples ``draw()`` would (a ControlNet's are its frozen base's, the
    same for every checkpoint and control scale: ``command_support`` keeps them on disk)."""
    control = model.spec.control
    if control is None:
        raise ValueError(
            "compare_control needs a ControlNet run (ddpm train --controlnet BASE --control KIND) or a "
            "concat run (--control KIND alone)"
        )
    real = check_images(model, real, "real").cpu()
    if controls is None:
        if control.kind == "folder":
            raise ValueError("a run trained on users' own control images (control.kind = folder) needs "
                             "controls given with the real images they belong to")  # fmt: skip
        controls = make_control(control.kind, real)
    options = dict(sample_options, labels=labels, seed=seed)
    samples = model.sample(len(real), control=controls, **options)
    draw_base = lambda: model.sample(len(real), **options)  # noqa: E731 — the same draw, cached or not
    base = None if not uncontrolled else draw_base() if cache is None else cache(draw_base)
    return ControlComparison(control.kind, real, controls.cpu(), samples, base)
