"""``ddpm train`` without --preset: say which recipe the device and the images chose (``train.recipes``), and
train the CPU recipe for images of 64 px and more, which has two stages (issue 20; Rombach et al. 2022):

1. an f=8 autoencoder (``--kind autoencoder``, preset ``autoencoder_cpu``) into ``OUT/autoencoder``;
2. latent diffusion on its latents (``--latent OUT/autoencoder``, preset ``latent_cpu``) into ``OUT``.

``--time T`` is the command's wall time: the autoencoder trains for 40% of T and the latent
diffusion run stops T after the command started, so encoding the images into latents comes out
of its share (measured on 64 px images: the recipe's 30 minutes used to take 34). 40%, not 20%:
at 64 px the decoder bounds the samples, and 12 minutes for the autoencoder gave an FD 39% lower
than 6 minutes did (RESULTS.md). ``--steps``, ``--batch-size``,
``--seed``, ``--device`` and ``--set`` keys of ``data.``, ``run.`` and ``optim.`` apply to both stages,
``autoencoder_loss.`` keys to the first, every other ``--set`` and ``--config`` to the second. Both stages'
configs are built, so checked, before either trains. ``--resume`` continues whichever stage is unfinished:
the autoencoder until it reaches its steps or the latent run has started (which froze it by its weights'
sha256), then the latent run.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddpm.configio import ConfigError
from ddpm.rundir import RunDir, checkpoint_step
from ddpm.train.config import TrainConfig
from ddpm.train.config_layers import parse_duration, recipe_inputs
from ddpm.train.loop import TrainResult
from ddpm.train.recipes import Recipe, recipe_for, recipe_line
from ddpm.train.run import train

AUTOENCODER_DIR = "autoencoder"  # the first stage's run, inside the latent run's directory
AUTOENCODER_SHARE = 0.4  # of --time
BOTH_STAGES = ("data.", "run.", "optim.")  # --set keys that apply to both stages
FIRST_STAGE = ("autoencoder_loss.",)  # --set keys that apply to the autoencoder alone

BuildConfig = Callable[[argparse.Namespace, str], TrainConfig]  # the command's flags → a run's config


def split_time(total_s: float, autoencoder_s: float | None = None) -> tuple[float, float]:
    """(autoencoder, latent diffusion) seconds of a ``total_s`` budget (0: no budget): 40% and 60% as
    planned; given the ``autoencoder_s`` the first stage took, the second gets what is left (at least a
    second: a zero budget would mean none)."""
    if not total_s:
        return 0.0, 0.0
    share = AUTOENCODER_SHARE * total_s
    spent = share if autoencoder_s is None else autoencoder_s
    return share, max(total_s - spent, 1.0)


def stage_sets(sets: list[str] | None, stage: str) -> list[str]:
    """The ``--set`` assignments of one stage ("autoencoder" or "latent"), by their key's table."""
    chosen = []
    for assignment in sets or ():
        key = assignment.partition("=")[0].strip()
        both, first = key.startswith(BOTH_STAGES), key.startswith(FIRST_STAGE)
        if both or first == (stage == "autoencoder"):
            chosen.append(assignment)
    return chosen


def default_recipe(
    args: argparse.Namespace, out: str, build: BuildConfig, log: Callable[[str], Any] = print
) -> TrainResult | None:
    """Say which recipe ``ddpm train`` chose without --preset (cifar10 and folder data); train it here when
    it has two stages, else return None for the caller to train its one run."""
    if _named(args):
        return None
    if args.resume and RunDir(Path(out) / AUTOENCODER_DIR).holds_run():
        return train_two_stage(args, out, build, log=log)
    chosen = None if args.resume and RunDir(out).config_path.is_file() else _recipe(args)
    if chosen is None:
        return None
    if chosen.two_stage:
        return train_two_stage(args, out, build, chosen, log=log)
    if os.environ.get("RANK", "0") == "0":
        steps = build(args, out).run.steps
        log(recipe_line(chosen, (_minutes(parse_duration(args.time)) if args.time else f"{steps} steps",)))
    return None


def train_two_stage(
    args: argparse.Namespace,
    out: str,
    build: BuildConfig,
    chosen: Recipe | None = None,
    log: Callable[[str], Any] = print,
) -> TrainResult:
    """The autoencoder into ``out/autoencoder``, then latent diffusion into ``out``; what trained last."""
    if args.nproc is not None and args.nproc > 1:
        raise ConfigError(
            f"--nproc {args.nproc} does not apply to the two-stage CPU recipe; train its stages yourself "
            "(--kind autoencoder, then --latent) or name a --preset"
        )
    run_dir, first_dir = Path(out), Path(out) / AUTOENCODER_DIR
    _check_out(run_dir, first_dir, args)
    total = parse_duration(args.time) if args.time else 0.0
    first_time, _ = split_time(total)
    first = build(_stage(args, "autoencoder", first_dir, first_time, first_dir), str(first_dir))
    first_done = args.resume and (RunDir(run_dir).holds_run() or _reached(first_dir, first.run.steps))
    second = build(_stage(args, "latent", run_dir, split_time(total)[1], first_dir), str(run_dir))
    if chosen is not None:
        log(recipe_line(chosen, _budgets(first, second, total)))
    started = time.perf_counter()
    if not first_done:
        result = train(
            first, first_dir, resume=args.resume, overwrite=args.overwrite, force=args.force, log=log
        )
        if result.stopped_early and not (first_time and result.seconds >= first_time):
            log(f"stopped in the autoencoder stage; ddpm train --out {out} --resume continues it")
            return result
    second_time = split_time(total, time.perf_counter() - started)[1]
    second = build(_stage(args, "latent", run_dir, second_time, first_dir), str(run_dir))
    return train(
        second, run_dir, resume=args.resume, overwrite=args.overwrite, force=args.force, log=log,
        deadline=started + total if total else None,
    )  # fmt: skip


def _stage(
    args: argparse.Namespace, stage: str, out: Path, time_s: float, first_dir: Path
) -> argparse.Namespace:
    """The command's arguments as one stage's run takes them."""
    first = stage == "autoencoder"
    return argparse.Namespace(**{
        **vars(args), "out": str(out), "preset": None, "set": stage_sets(args.set, stage),
        "config": None if first else args.config, "time": f"{time_s}s" if time_s else None,
        "resume": args.resume and RunDir(out).holds_run(), "kind": "autoencoder" if first else None,
        "latent": None if first else str(first_dir),
    })  # fmt: skip


def _check_out(run_dir: Path, first_dir: Path, args: argparse.Namespace) -> None:
    """Refuse, before anything trains, what the second stage would refuse after the first."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {str(run_dir)!r} is a file, not a directory")
    held = [d for d in (run_dir, first_dir) if RunDir(d).holds_run()]
    if held and not (args.resume or args.overwrite):
        raise ConfigError(
            f"run directory {str(held[0])!r} already holds a run; pass --resume to continue it "
            "or --overwrite to replace it"
        )


def _reached(run_dir: Path, steps: int) -> bool:
    """Whether a run's newest checkpoint is at ``steps``."""
    checkpoint = RunDir(run_dir).latest_checkpoint(warn=lambda _: None)
    return checkpoint is not None and checkpoint_step(checkpoint) >= steps


def _named(args: argparse.Namespace) -> bool:
    """Whether the flags name the run's config, or another kind of run than a diffusion model of images."""
    kind = getattr(args, "kind", None) == "autoencoder"
    return any(
        (args.preset, kind, *(getattr(args, name, None) for name in ("latent", "controlnet", "control")))
    )


def _recipe(args: argparse.Namespace) -> Recipe | None:
    """The recipe of ``--data`` on the device and at the image size the flags and --set give."""
    inputs = recipe_inputs(args.config, args.set or (), {"run.device": args.device})
    return recipe_for(args.data or "digits", *inputs)


def _budgets(first: TrainConfig, second: TrainConfig, total: float) -> tuple[str, str]:
    """How long each stage trains, as the recipe line says it."""
    if not total:
        return f"{first.run.steps} steps", f"{second.run.steps} steps"
    first_s, second_s = split_time(total)
    return _minutes(first_s), _minutes(second_s)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
