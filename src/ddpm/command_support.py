"""What several commands share: checking flags and output paths, opening the model of a run, writing
samples files, a run's pictures and the real data its samples are scored against.

Sits below ``ddpm.commands`` (whose modules never import each other) and above model, rundir, train,
eval, viz and data; it imports neither the commands nor the CLI.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch import Tensor

from ddpm import editing
from ddpm.data import Dataset, load_dataset
from ddpm.data.controls import control_key, controls_by_name, load_control_images
from ddpm.data.user_images import load_images, load_mask
from ddpm.devices import resolve_device
from ddpm.diffusion.eps_scaling import check_eps_scale
from ddpm.diffusion.guidance import check_guidance_scale
from ddpm.diffusion.samplers import SAMPLERS, TrajectoryStep, spacings_for
from ddpm.eval import Evaluation, load_samples_npz, prepare
from ddpm.eval.memorisation import memorisation
from ddpm.eval.sample_cache import cached_samples
from ddpm.interop.diffusers import is_diffusers_folder
from ddpm.interop.diffusers_model import from_diffusers
from ddpm.model import DiffusionModel, from_checkpoint, to_uint8
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import RunDir, read_checkpoint_meta, read_weights, resolve_checkpoint
from ddpm.train.config import DataConfig, TrainConfig, config_from_dict
from ddpm.train.run_data import load_data


class UsageError(ValueError):
    """Bad command-line usage: printed as one line, exit status 2."""


def check_count(flag: str, value: int, minimum: int = 1) -> None:
    """Refuse an integer flag (``--n``, ``--steps``, ``--seed``…) that is not an integer ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{flag} {value!r} is invalid; it must be an integer ≥ {minimum}")


def check_out(out: str | Path, suffixes: Sequence[str], flag: str = "--out") -> Path:
    """``out`` as a Path once its suffix is one of ``suffixes`` (checked before any work is done)."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {str(out)!r} must end in {' or '.join(suffixes)}")
    return out


def check_guidance_flag(scale: float) -> None:
    """Refuse a bad ``--guidance`` in the flag's own words (see ``ddpm.diffusion.guidance``)."""
    try:
        check_guidance_scale(scale)
    except ValueError:
        raise UsageError(
            f"--guidance {scale!r} is invalid; give a finite number ≥ 0 (0 = unconditional, 1 = conditional)"
        ) from None


def check_eps_scale_flag(eps_scale: float) -> None:
    """Refuse a bad ``--eps-scale`` in the flag's own words (see ``ddpm.diffusion.eps_scaling``)."""
    try:
        check_eps_scale(eps_scale)
    except ValueError:
        raise UsageError(
            f"--eps-scale {eps_scale!r} is invalid; give a finite number > 0 (1 = off)"
        ) from None


def device_for(name: str) -> torch.device:
    """``--device`` resolved; a name torch does not know is a usage error, not a RuntimeError."""
    try:
        return resolve_device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


@dataclass(frozen=True)
class SamplerFlags:
    """``--sampler``, ``--steps``, ``--spacing``, ``--eps-scale``, ``--eta``; None is the run's own."""

    sampler: str | None = None
    steps: int | None = None
    spacing: str | None = None
    eps_scale: float | None = None
    eta: float | None = None

    def check(self, run_sampler: str | None = None) -> None:
        """Refuse bad values; ``--spacing`` and ``--eta`` are checked against the sampler that will run
        (the flag, else ``run_sampler``; unchecked while neither is known, i.e. before loading)."""
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler!r} is not a sampler; choose {', '.join(SAMPLERS)}")
        if self.steps is not None:
            check_count("--steps", self.steps)
        if self.eps_scale is not None:
            check_eps_scale_flag(self.eps_scale)
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise UsageError(f"--eta {self.eta} is outside [0, 1]")
        sampler = self.sampler or run_sampler
        if sampler is None:
            return
        if self.eta and sampler != "ddim":
            raise UsageError(f"--eta applies to the ddim sampler only, not {sampler!r}")
        if self.spacing is not None and self.spacing not in spacings_for(sampler):
            choices = ", ".join(spacings_for(sampler))
            raise UsageError(
                f"--spacing {self.spacing!r} is not allowed for the {sampler} sampler; choose {choices}"
            )

    def options(self) -> dict[str, Any]:
        """The flags as ``DiffusionModel.sample`` takes them, None (the run's own) included."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class OpenedRun:
    """A model loaded for a command, with the config its weights were trained with."""

    model: DiffusionModel
    # the run's full config as its checkpoint stores it (data section included); None for a diffusers
    # model folder, which records no training run
    config: TrainConfig | None
    run_dir: RunDir | None  # None for a checkpoint folder outside a run directory, or a diffusers folder

    def data_section(self, spec: str | None) -> DataConfig:
        """The data real samples come from: the run's own data section, with ``spec`` (``--data``) in place
        of its data set when given; for a diffusers folder, ``spec`` (required) at the model's image size."""
        if self.config is not None:
            return self.config.data if spec is None else dataclasses.replace(self.config.data, spec=spec)
        if spec is None:
            raise UsageError("--data is required for a diffusers model folder, which records no training "
                             "data: give e.g. --data cifar10")  # fmt: skip
        channels, size, _ = self.model.sample_shape
        return DataConfig(spec=spec, image_size=size, channels=channels if channels in (1, 3) else 0)


def open_run(
    path: str | Path, *, weights: str = "ema", device: str = "auto", images_only: bool = False
) -> OpenedRun:
    """Load a run directory (its newest valid checkpoint), a checkpoint folder or a diffusers model folder
    (either layout; it holds one set of weights, so ``weights`` does not apply) for a command."""
    target = device_for(device)
    if is_diffusers_folder(path):
        return OpenedRun(from_diffusers(path, device=target), None, None)
    run_dir, checkpoint = resolve_checkpoint(path)  # once: for a run directory it verifies every file
    meta = read_checkpoint_meta(checkpoint)
    if _model_kind(meta.get("config")) == AUTOENCODER_KIND:
        raise UsageError(
            f"{str(path)!r} is an autoencoder run (latent diffusion's first stage), which draws no samples; "
            f"train diffusion on its latents: ddpm train --latent {path}"
        )
    model = from_checkpoint(checkpoint, meta, weights=weights, device=target)
    if images_only and model.kind != "images":
        raise UsageError(f"{str(path)!r} is a model of 2-D points; editing needs an image model")
    # One source for weights and config: the checkpoint's own record of the run it came from.
    config = config_from_dict(meta["config"])
    return OpenedRun(model, config, run_dir)


AUTOENCODER_KIND = "autoencoder"  # config.toml's model.kind of ddpm train --kind autoencoder


def _model_kind(config: Any) -> Any:
    model = config.get("model") if isinstance(config, dict) else None
    return model.get("kind") if isinstance(model, dict) else None


def is_autoencoder_run(path: str | Path) -> bool:
    """Whether ``path`` is an autoencoder run directory or checkpoint folder, by its stored config alone
    (nothing verified: :func:`open_autoencoder` does that; anything unreadable answers False)."""
    run = RunDir(path)
    try:
        config = run.config_dict() if run.config_path.is_file() else read_checkpoint_meta(path).get("config")
    except (ValueError, OSError):  # CheckpointError and ConfigError are ValueErrors
        return False
    return _model_kind(config) == AUTOENCODER_KIND


def open_autoencoder(path: str | Path, *, weights: str = "ema") -> LatentCodec:
    """The autoencoder (EMA weights) and latent normalisation of an autoencoder run directory (its newest
    valid checkpoint) or checkpoint folder, as a latent run's codec holds them."""
    if weights != "ema":
        raise UsageError(
            f"--weights {weights!r} is not allowed for an autoencoder run: its latent normalisation was "
            "estimated with its EMA weights; export those (--weights ema)"
        )
    _, checkpoint = resolve_checkpoint(path)
    meta = read_checkpoint_meta(checkpoint)
    if _model_kind(meta.get("config")) != AUTOENCODER_KIND:
        raise UsageError(
            f"{str(path)!r} is not an autoencoder run; give a run of ddpm train --kind autoencoder"
        )
    return LatentCodec.from_checkpoint(checkpoint, meta, read_weights(checkpoint))


def read_images(paths: Sequence[str | Path], sample_shape: tuple[int, ...]) -> Tensor:
    """Image files fitted to the model (``ddpm.data.user_images``); an unreadable one is a usage error."""
    try:
        return load_images(paths, sample_shape)
    except (UnidentifiedImageError, zipfile.BadZipFile, EOFError) as err:
        raise UsageError(f"{err}; give image files or a samples .npz") from None


def read_mask(spec: str | Path, sample_shape: tuple[int, ...]) -> Tensor:
    """``--mask``: a mask image or a named region (see ``ddpm.data.user_images``)."""
    try:
        return load_mask(spec, sample_shape)
    except UnidentifiedImageError as err:
        raise UsageError(f"--mask {str(spec)!r} is not a readable image ({err})") from None


def read_samples(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """A samples .npz (see ``ddpm.eval.samples``); a damaged archive is a usage error."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # np.load would try (and refuse) a pickle
        raise UsageError(f"{str(path)!r} is not a samples .npz (a zip archive of arrays)")
    try:
        return load_samples_npz(path)
    except (zipfile.BadZipFile, EOFError) as err:
        raise UsageError(f"{str(path)!r} is not a readable samples .npz ({err})") from None


def save_npz(out: Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` compressed to ``out`` (its folder created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def write_samples(samples: Tensor, out: Path, kind: str, labels: Tensor | None = None) -> Path:
    """``.npz``: the samples file of DESIGN.md (``images`` uint8 N×H×W×C or ``points`` float32 N×2, plus
    ``labels``); ``.png``: a grid of images or a scatter of points."""
    if out.suffix.lower() == ".npz":
        arrays = (
            {"images": to_uint8(samples)}
            if kind == "images"
            else {"points": samples.numpy().astype(np.float32)}
        )
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        return save_npz(out, **arrays)
    from ddpm.viz.grid import save_grid
    from ddpm.viz.scatter import save_scatter

    return (save_grid if kind == "images" else save_scatter)(samples, out)


@dataclass
class RunPictures:
    """What the pictures of a run are drawn from."""

    model: DiffusionModel
    real: Tensor  # real x₀ from the training data (images in [-1, 1] or points)
    samples: Tensor  # model samples
    trajectory: list[TrajectoryStep]  # x_t and x̂₀ at every step of sampling


def gather(
    opened: OpenedRun, *, n: int = 64, seed: int = 0, flags: SamplerFlags = SamplerFlags()
) -> RunPictures:
    """``n`` real training samples and ``n`` model samples drawn in one batch with their trajectory."""
    model = opened.model
    if opened.config is None:
        raise UsageError("pictures of a run need its training data; a diffusers model folder records none "
                         "(draw from it with ddpm sample, --gif for the reverse process)")  # fmt: skip
    dataset = load_data(opened.config)
    count = min(n, len(dataset))
    real = dataset.batch(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count])
    [result] = model.sample_with_result(
        n, **flags.options(), seed=seed, batch_size=n, labels=model.default_labels(n), trajectory_steps="all"
    )
    return RunPictures(model, real, result.samples.cpu(), result.trajectory)


# where a control run's pictures and adherence take their controls: images it never trained on
HELD_OUT_SPLIT = "test"


def control_comparison(
    opened: OpenedRun,
    *,
    n: int = 8,
    seed: int = 0,
    uncontrolled: bool = False,
    batch_size: int = 256,
    held_out: Dataset | None = None,
    cache_root: str | Path | None = None,
    **sample_options: Any,
) -> editing.ControlComparison:
    """A control run's samples drawn, with its own sampler, from the controls of ``n`` held-out images
    (the test split of its data, chosen by ``seed``; for users' own controls, among the images that have
    one in the run's control folder), with their labels for a class-conditional model; with
    ``uncontrolled``, the same noises and labels without control too (``editing.compare_control``).
    ``held_out``: that split, when the caller has already loaded it; ``sample_options`` (a ControlNet's
    ``control_scale``) go to the controlled samples' ``DiffusionModel.sample``. ``cache_root``: where a
    ControlNet's uncontrolled samples (its frozen base's) are cached (``ddpm.eval.sample_cache``), so evals
    of other checkpoints or control scales of runs over the same base draw them once."""
    model, control = opened.model, opened.model.spec.control
    if control is None or opened.config is None:
        raise UsageError("control pictures need a control run (ddpm train --controlnet BASE --control K, or "
                         "--data SPEC --control K)")  # fmt: skip
    dataset = held_out if held_out is not None else load_data(opened.config, split=HELD_OUT_SPLIT)
    pool = _paired_rows(dataset, control.folder) if control.kind == "folder" else torch.arange(len(dataset))
    rows = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    controls = None
    if control.kind == "folder":
        names = [dataset.names[i] for i in rows]
        shape = (control.control_channels, *model.sample_shape[1:])
        controls = load_control_images(control.folder, shape, names)
    labels = dataset.labels[rows] if model.num_classes is not None else None
    cache = None
    if cache_root is not None and not control.concat:  # a concat run's uncontrolled samples are its own
        parts = _base_sample_parts(model, len(rows), seed, labels, sample_options)
        shape = (len(rows), *model.sample_shape)
        cache = lambda draw: cached_samples(cache_root, "base", parts, shape, draw, print)  # noqa: E731
    return editing.compare_control(model, dataset.batch(rows), controls=controls, labels=labels,
                                   uncontrolled=uncontrolled, seed=seed, batch_size=batch_size, cache=cache,
                                   **sample_options)  # fmt: skip


def _base_sample_parts(
    model: DiffusionModel, n: int, seed: int, labels: Tensor | None, options: dict[str, Any]
) -> dict[str, Any]:
    """All that a ControlNet's uncontrolled samples depend on: its frozen base's weights (their sha256) and
    spec, the sampler settings, seeds, labels and other sampling options, and the device. Not the batch
    size (image i depends on its seed alone) nor the control scale (no control, no branch)."""
    sampling = {k: v for k, v in options.items() if k in ("sampler", "steps", "spacing", "eps_scale", "eta")}
    rest = {k: v for k, v in options.items() if k not in {*sampling, "batch_size", "control_scale"}}
    spec = dataclasses.replace(model.spec, control=None, sampling=model.sampling.with_overrides(**sampling))
    return {"base_sha256": model.spec.control.base_sha256, "spec": dataclasses.asdict(spec), "n": n,
            "seed": seed, "labels": None if labels is None else labels.tolist(), "options": rest,
            "device": model.device.type}  # fmt: skip


def _paired_rows(dataset: Dataset, folder: str) -> Tensor:
    """Rows of ``dataset`` whose image has a control image in users' ``folder`` (paired by relative name)."""
    found = controls_by_name(folder)
    rows = [i for i, name in enumerate(dataset.names or ()) if control_key(name) in found]
    if not rows:
        raise UsageError(f"control folder {folder!r} has no control image for any {HELD_OUT_SPLIT} image of "
                         f"data {dataset.spec!r}; control pictures pair them by relative name")  # fmt: skip
    return torch.tensor(rows)


def real_data_options(run_data: DataConfig | None, root: str | None = None) -> dict[str, Any]:
    """``load_dataset``/``prepare`` keywords for the real data a run's samples are compared with: its image
    size, channels and root (``root``, the --data-root flag, first); none without a run's data section."""
    if run_data is None:
        return {"root": root}
    return {"root": root or run_data.root or None, "image_size": run_data.image_size or None,
            "channels": run_data.channels or None}  # fmt: skip


def prepare_real(
    spec: str, n: int, *, run_data: DataConfig | None = None, root: str | None = None, **options: Any
) -> Evaluation:
    """Real data and features to score ``n`` samples against (``ddpm.eval.prepare``). With the run's data
    section, its image size, channels and root apply: the run's samples have that shape."""
    return prepare(spec, n, **real_data_options(run_data, root), **options)


def draw_for_scoring(
    model: DiffusionModel, n: int, flags: SamplerFlags, *, seed: int = 0, batch_size: int = 256
) -> Tensor:
    """``n`` samples to score, cycling through the classes of a class-conditional model."""
    return model.sample(
        n, **flags.options(), seed=seed, batch_size=batch_size, labels=model.default_labels(n)
    )


def memorisation_metrics(
    samples: Tensor,
    evaluation: Evaluation,
    spec: str,
    split: str,
    *,
    run_data: DataConfig | None = None,
    root: str | None = None,
) -> dict[str, float]:
    """``ddpm.eval.memorisation`` of image samples: their distances to the nearest image of the train
    split, judged by the held-out split they are scored against (none for points, or when that split
    is the train split itself, where every real image is its own nearest neighbour)."""
    held_out = evaluation.dataset  # the ``split`` the samples are scored against
    if samples.ndim != 4 or split in ("train", "all"):
        return {}
    train = load_dataset(spec, split="train", **real_data_options(run_data, root))
    train_images = train.batch(torch.arange(len(train)))
    result = memorisation(samples, train_images, held_out.batch(torch.arange(len(held_out))))
    return result.metrics()
