"""`ddpm train`: build the run's config from its layers and train it, relaunching under torchrun for
``--nproc N > 1``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ddpm.rundir import RunDir
from ddpm.train.config import TrainConfig
from ddpm.train.config_layers import build_train_config, parse_duration
from ddpm.train.distributed import (
    batch_plan,
    check_nproc,
    launched_by_torchrun,
    relaunch_under_torchrun,
    without_nproc,
)
from ddpm.train.run import train


def default_run_dir(data: str) -> str:
    """``runs/<data set>``: where a run goes without ``--out``."""
    return str(Path("runs") / data.split(":", 1)[0])


def config_from_args(args: argparse.Namespace, out: str) -> TrainConfig:
    """The run's config: preset (or the run being resumed) ← --config ← --set ← flags."""
    flags = {
        "run.steps": args.steps,
        "run.batch_size": args.batch_size,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.time_budget_s": parse_duration(args.time) if args.time else None,
        "data.strict": True if args.strict_data else None,
    }
    return build_train_config(
        args.data, preset=args.preset, config_file=args.config, overrides=args.set or (), flags=flags,
        data_root=args.data_root, resume_dir=out if args.resume else None,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``ddpm train``: train (possibly as one of several processes) and say where the samples are."""
    out = args.out or default_run_dir(args.data)
    config = config_from_args(args, out)
    if args.nproc is not None:
        check_nproc(args.nproc)
        plan = config.run
        batch_plan(
            plan.batch_size, args.nproc, plan.grad_accum_steps, plan.micro_batch_size
        )  # before launching
        if args.nproc > 1 and not launched_by_torchrun():
            relaunch_under_torchrun(args.nproc, without_nproc(args.argv))  # does not return
    result = train(config, out, resume=args.resume, overwrite=args.overwrite, force=args.force)
    if os.environ.get("RANK", "0") != "0":  # only rank 0 speaks
        return 0
    print(
        f"trained {result.step} steps in {result.seconds:.0f}s"
        f"{' (stopped early)' if result.stopped_early else ''}; "
        f"samples: {RunDir(out).final_samples_png}"
    )
    return 0
