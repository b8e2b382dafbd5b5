"""`ddpm train`: build the run's config from its layers and train it, relaunching under torchrun for
``--nproc N > 1``. ``--kind autoencoder`` trains latent diffusion's first stage; ``--latent AE_RUN`` a
diffusion model on that autoencoder's latents (Rombach et al. 2022); ``--controlnet BASE --control KIND`` a
ControlNet over a frozen base, ``--control KIND`` alone a U-Net from scratch with the control concatenated
to its input (ddpm.train.control_config)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ddpm.configio import ConfigError
from ddpm.rundir import RunDir
from ddpm.train.config import TrainConfig
from ddpm.train.config_layers import build_train_config, parse_duration
from ddpm.train.control_config import check_control_flags, concat_flags, control_layers, control_run_dir
from ddpm.train.cpu_recipe import default_recipe
from ddpm.train.distributed import (
    batch_plan,
    check_nproc,
    launched_by_torchrun,
    relaunch_under_torchrun,
    without_nproc,
)
from ddpm.train.loop import TrainResult
from ddpm.train.run import train


def default_run_dir(data: str, kind: str = "diffusion") -> str:
    """``runs/<data set>`` (``runs/<data set>-autoencoder``, ``runs/<data set>-latent``): where a run goes
    without ``--out``."""
    name = data.split(":", 1)[0]
    return str(Path("runs") / (name if kind == "diffusion" else f"{name}-{kind}"))


def config_from_args(args: argparse.Namespace, out: str) -> TrainConfig:
    """The run's config: preset (or the run being resumed) ← --config ← --set ← flags."""
    controlnet, control = getattr(args, "controlnet", None), getattr(args, "control", None)
    autoencoder = getattr(args, "kind", None) == "autoencoder"
    others = {"--latent": getattr(args, "latent", None), "--kind autoencoder": autoencoder}
    check_control_flags(controlnet, control, preset=args.preset, others=others)
    base_layers = None if controlnet is None else control_layers(controlnet, control, args.data)
    latent = getattr(args, "latent", None)
    if latent is not None and getattr(args, "kind", None) == "autoencoder":
        raise ConfigError("--latent trains a diffusion model on an autoencoder's latents; it cannot be "
                          "combined with --kind autoencoder")  # fmt: skip
    flags = {
        "latent.autoencoder": latent,
        "run.steps": args.steps,
        "run.batch_size": args.batch_size,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.time_budget_s": parse_duration(args.time) if args.time else None,
        "data.strict": True if args.strict_data else None,
        **concat_flags(controlnet, control),  # --control without --controlnet: a concat run
    }
    return build_train_config(
        args.data or "digits", preset=args.preset, config_file=args.config, overrides=args.set or (),
        flags=flags,
        data_root=args.data_root, resume_dir=out if args.resume else None, base_layers=base_layers,
        kind=run_kind(args),
    )  # fmt: skip


def run_kind(args: argparse.Namespace) -> str:
    """``diffusion``, ``autoencoder`` (--kind autoencoder) or ``latent`` (--latent AE_RUN)."""
    if getattr(args, "latent", None) is not None:
        return "latent"
    return getattr(args, "kind", None) or "diffusion"


def run(args: argparse.Namespace) -> int:
    """``ddpm train``: train (possibly as one of several processes) and say where the samples are."""
    controlnet = getattr(args, "controlnet", None)
    if (controlnet or getattr(args, "control", None)) and not args.out:  # a ControlNet beside its base
        args.out = control_run_dir(controlnet, args.control or "control", args.data or "digits")
    out = args.out or default_run_dir(args.data or "digits", run_kind(args))
    two_stage = default_recipe(args, out, config_from_args)  # says what no --preset chose; trains 2 stages
    if two_stage is not None:  # the CPU recipe for images of 64 px and more (train.cpu_recipe)
        return report(two_stage)
    config = config_from_args(args, out)
    if args.nproc is not None:
        check_nproc(args.nproc)
        plan = config.run
        batch_plan(
            plan.batch_size, args.nproc, plan.grad_accum_steps, plan.micro_batch_size
        )  # before launching
        if args.nproc > 1 and not launched_by_torchrun():
            relaunch_under_torchrun(args.nproc, without_nproc(args.argv))  # does not return
    return report(train(config, out, resume=args.resume, overwrite=args.overwrite, force=args.force))


def report(result: TrainResult) -> int:
    """Say how long the run trained and where its samples are (rank 0 alone)."""
    if os.environ.get("RANK", "0") != "0":  # only rank 0 speaks
        return 0
    print(
        f"trained {result.step} steps in {result.seconds:.0f}s"
        f"{' (stopped early)' if result.stopped_early else ''}; "
        f"samples: {RunDir(result.run_dir).final_samples_png}"
    )
    return 0
