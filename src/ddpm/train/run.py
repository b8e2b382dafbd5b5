"""A training run on disk: check the run directory, resolve the config against the data, train.

Nothing is written before every input has been checked: a bad config, a missing data set or an
existing run without --resume/--overwrite leaves the disk untouched; so does a latent run's autoencoder
run that is missing, is no autoencoder run, has changed since, or does not fit the data.

Under torchrun (several processes) rank 0 alone loads the data first (downloads, caches), checks and
writes the run directory; the other ranks then load the same data and resume from the checkpoint
rank 0 names (a latent run: with the autoencoder weights rank 0 found; then all ranks encode the images
together). An error on rank 0 stops every rank.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ddpm.configio import ConfigError, dumps_toml
from ddpm.data import Dataset
from ddpm.data.folder import report_skipped
from ddpm.nets import AutoencoderConfig, MLPConfig
from ddpm.rundir import RunDir, checkpoint_step, verify_checkpoint
from ddpm.safe_files import atomic_write_text
from ddpm.train.config import TrainConfig, config_from_dict, config_to_dict
from ddpm.train.control_data import control_training_data
from ddpm.train.distributed import DistContext, batch_plan, distributed_session, share_from_main
from ddpm.train.latent_data import LatentData, encode_dataset, join_autoencoder, latent_training_data
from ddpm.train.loop import TrainResult, train_loop
from ddpm.train.previews import Previews, ReconstructionPreviews
from ddpm.train.run_data import load_data
from ddpm.train.signals import StopRequests

# Keys that may change when a run is resumed: they change how long and how verbosely it runs,
# not what it learns.
RESUMABLE_CHANGES = {
    "run.steps", "run.time_budget_s", "run.log_every", "run.sample_every", "run.checkpoint_every",
    "run.keep_last", "run.device", "run.num_threads", "run.preview_images", "run.preview_sampler",
    "run.preview_steps", "run.preview_spacing", "run.preview_eps_scale",
    "optim.max_bad_steps", "data.strict",
    # How a step is computed (processes, micro-batches, precision, memory), not what it optimises.
    "run.grad_accum_steps", "run.micro_batch_size", "run.precision", "run.dist_timeout_s",
    "model.gradient_checkpointing",
}  # fmt: skip


def resolve_for_data(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """Fit the network to the data: channels and size for images, dimension for points, classes (a latent
    run's data are its latents)."""
    model = config.model
    if isinstance(model, AutoencoderConfig):
        return dataclasses.replace(config, model=_fit_autoencoder(model, config, dataset))
    num_classes = None
    if config.data.class_conditional:
        if dataset.num_classes is None:
            raise ConfigError(
                f"data.class_conditional is set but data {config.data.spec!r} has no labels; "
                "use a labelled set (digits, mnist, cifar10, a folder with class subfolders)"
            )
        num_classes = dataset.num_classes
    model = dataclasses.replace(model, num_classes=num_classes)
    if dataset.kind == "points":
        if not isinstance(model, MLPConfig):
            raise ConfigError(f'data {config.data.spec!r} is 2-D points; use model.kind = "mlp"')
        model = dataclasses.replace(model, dim=dataset.sample_shape[0])
    else:
        if isinstance(model, MLPConfig):
            raise ConfigError(f'data {config.data.spec!r} is images; use model.kind = "unet"')
        channels, height, _ = dataset.sample_shape
        # a learned variance doubles the output: the prediction's C channels, then C for Σ_θ (eq. 15)
        out_channels = 2 * channels if config.diffusion.learn_variance else model.out_channels
        try:
            model = dataclasses.replace(
                model, in_channels=channels, out_channels=out_channels, image_size=height
            )
        except ValueError as err:
            raise ConfigError(
                f"model does not fit data {config.data.spec!r} of shape {tuple(dataset.sample_shape)}: {err}"
            ) from None
    return dataclasses.replace(config, model=model)


def _fit_autoencoder(model: AutoencoderConfig, config: TrainConfig, dataset: Dataset) -> AutoencoderConfig:
    """The autoencoder's input channels and image size from the data (images only)."""
    if dataset.kind != "images":
        raise ConfigError(f"data {config.data.spec!r} is 2-D points; an autoencoder run needs images")
    channels, height, width = dataset.sample_shape
    if height != width:
        raise ConfigError(f"data {config.data.spec!r} has {height}×{width} images; an autoencoder run needs "
                          "square images (set data.image_size)")  # fmt: skip
    try:
        return dataclasses.replace(model, in_channels=channels, image_size=height)
    except ValueError as err:
        raise ConfigError(
            f"model does not fit data {config.data.spec!r} of shape {tuple(dataset.sample_shape)}: {err}"
        ) from None


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def stored_config(run_dir: str | Path) -> TrainConfig:
    """The resolved training config a run directory holds (its config.toml)."""
    return config_from_dict(RunDir(run_dir).config_dict())


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force: bool = False,
    log: Any = print,
    deadline: float | None = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir``; with ``resume`` continue from its newest valid checkpoint.
    ``deadline`` (a ``time.perf_counter()`` value) also stops training then, the time spent preparing
    the data (a latent run's encoding) included: the two-stage CPU recipe's ``--time`` is wall time.

    Launched by torchrun, this joins the process group, trains with DistributedDataParallel and
    leaves the group on return, error or signal.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one")
    with distributed_session(config.run.device, config.run.dist_timeout_s) as ctx:
        run = config.run
        batch_plan(run.batch_size, ctx.world_size, run.grad_accum_steps, run.micro_batch_size)
        prepared: dict[str, Any] = {}

        def prepare() -> str:
            prepared["dataset"], prepared["config"], checkpoint = _prepare(
                config, run_dir, resume=resume, overwrite=overwrite, force=force, log=log
            )
            prepared["checkpoint"] = checkpoint
            shared = {"checkpoint": "" if checkpoint is None else str(checkpoint)}
            latent = prepared["config"].latent  # the autoencoder checkpoint rank 0 found, by its weights
            shared["latent"] = [latent.autoencoder, latent.autoencoder_sha256]
            return json.dumps({**shared, "fingerprint": prepared["dataset"].fingerprint})

        shared = json.loads(share_from_main(ctx, prepare))
        if ctx.is_main:
            dataset, config, checkpoint = prepared["dataset"], prepared["config"], prepared["checkpoint"]
        else:
            dataset, config, checkpoint = _join(config, run_dir, shared, ctx)
        if isinstance(dataset, LatentData):  # every rank encodes its part of the images, and gets all
            dataset = encode_dataset(dataset, ctx, mirrored=config.data.random_flip,
                                     log=log if ctx.is_main else lambda _: None)  # fmt: skip
        if deadline is not None:
            config = _until(config, deadline)
        make_previews = ReconstructionPreviews if config.is_autoencoder else Previews
        previews = make_previews(config, dataset, run_dir) if ctx.is_main else None
        evaluate = None
        if config.run.eval_every and ctx.is_main:
            from ddpm.train.evaluator import TrainingEvaluator

            evaluate = TrainingEvaluator(config, dataset)
        with StopRequests() as stop:
            return train_loop(
                config, dataset, run_dir, resume_from=checkpoint, stop=stop, previews=previews,
                evaluate=evaluate, dist=ctx,
            )  # fmt: skip


def _until(config: TrainConfig, deadline: float) -> TrainConfig:
    """``config`` with its time budget cut to end at ``deadline`` (at least a millisecond: 0 means none)."""
    left = max(deadline - time.perf_counter(), 1e-3)
    budget = min(config.run.time_budget_s, left) if config.run.time_budget_s else left
    return dataclasses.replace(config, run=dataclasses.replace(config.run, time_budget_s=budget))


def _join(
    config: TrainConfig, run_dir: Path, shared: dict[str, str], ctx: DistContext
) -> tuple[Dataset, TrainConfig, Path | None]:
    """A rank other than 0: the same data as rank 0 and the checkpoint it resumes from."""
    dataset = load_data(config)
    if config.latent.autoencoder:  # rank 0 has checked it; the same weights and normalisation here
        dataset, config = latent_training_data(join_autoencoder(config, *shared["latent"], ctx), dataset)
    if config.control.enabled:  # rank 0 has checked the base; the same controls here
        dataset, config = control_training_data(config, dataset, log=lambda _: None)
    if dataset.fingerprint != shared["fingerprint"]:
        raise ConfigError(
            f"rank {ctx.rank} loaded different data for {config.data.spec!r} than rank 0 (fingerprints "
            "differ); every node needs the same data files"
        )
    checkpoint = Path(shared["checkpoint"]) if shared["checkpoint"] else None
    if checkpoint is not None and not checkpoint.is_dir():
        raise ConfigError(
            f"rank {ctx.rank} cannot see {checkpoint}, which rank 0 resumes from; the run directory "
            "must be on a file system every node shares"
        )
    return dataset, resolve_for_data(config, dataset), checkpoint


def _prepare(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    force: bool,
    log: Any,
) -> tuple[Dataset, TrainConfig, Path | None]:
    """Rank 0 (or the only process): load the data, check and write the run directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {str(run_dir)!r} is a file, not a directory")
    run = RunDir(run_dir)
    existing = run_dir.is_dir() and run.holds_run()
    if existing and not (resume or overwrite):
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds a run; pass --resume to continue it "
            "or --overwrite to replace it"
        )
    dataset = load_data(config)
    report_skipped(dataset, strict=config.data.strict, log=log)  # each passed-over file, once
    if config.latent.autoencoder:  # checks the autoencoder run, records its weights' sha256
        dataset, config = latent_training_data(config, dataset)
    if config.control.enabled:  # checks a ControlNet's base, records its sha256; computes the controls
        dataset, config = control_training_data(config, dataset, log=log)
    config = resolve_for_data(config, dataset)
    checkpoint = _resume_point(run, config, dataset, force=force, log=log) if resume and existing else None
    if overwrite and existing:
        for name in RunDir.RUN_FILES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_path, dumps_toml(config_to_dict(config)))
    for log_path in (run.log_path, run.eval_path):
        _truncate_log(log_path, 0 if checkpoint is None else checkpoint_step(checkpoint))
    return dataset, config, checkpoint


def _resume_point(
    run: RunDir, config: TrainConfig, dataset: Dataset, *, force: bool, log: Any
) -> Path | None:
    """The checkpoint an existing run resumes from, after checking that config and data still match it."""
    if run.config_path.exists():
        changes = changed_keys(config_to_dict(stored_config(run.path)), config_to_dict(config))
        unsafe = [key for key in changes if key not in RESUMABLE_CHANGES]
        if unsafe and not force:
            raise ConfigError(
                f"config differs from the run being resumed in {', '.join(unsafe)}; "
                "pass --force to resume anyway"
            )
    checkpoint = run.latest_checkpoint(warn=log)
    if checkpoint is None:
        log(f"no complete checkpoint in {run.path}; starting from step 0")
        return None
    if verify_checkpoint(checkpoint)["data_fingerprint"] != dataset.fingerprint and not force:
        raise ConfigError(
            f"data {config.data.spec!r} has changed since {checkpoint} was written "
            "(fingerprint differs); pass --force to resume anyway"
        )
    log(f"resuming from {checkpoint}")
    return checkpoint


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after the step we resume from, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    kept = [record for record in map(_json_or_none, path.read_text().splitlines()) if record is not None]
    kept = [record for record in kept if record[1].get("step", 0) <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line, _ in kept))


def _json_or_none(line: str) -> tuple[str, dict] | None:
    """A log line and its record, or None for a blank line or one cut off by a crash mid-write."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return (line, record) if isinstance(record, dict) else None
