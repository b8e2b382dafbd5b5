"""Preset tuning for quality per CPU-minute (issue 11): one short run per variant, same wall budget.

Each variant is the data set's preset plus ``--set`` overrides; it trains for ``--budget`` seconds
(set-up excluded, the trainer's own time budget), then its EMA weights draw ``--n`` samples that are
scored with the package's classifier (FD_classifier, confidence ≥ 0.9, class coverage). One JSON line
per variant goes to ``OUT/results.jsonl``, so two processes (one thread each) can share the work.

    python benchmarks/preset_ablation.py --data digits --budget 150 --threads 1 --out /tmp/abl \
        --variant base= --variant v=diffusion.parameterization=v --variant lr2e-3=optim.lr=2e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import mean_over_sets, with_overrides

from ddpm.eval.evaluate import prepare, score
from ddpm.model import load
from ddpm.rundir import RunDir
from ddpm.train.presets import get_preset, preset_for_data, with_data
from ddpm.train.run import stored_config, train

METRICS = ["fd", "confidence", "coverage"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=key=value;key=value`` (nothing after the first = for the preset itself)."""
    name, _, overrides = text.partition("=")
    return name, [item for item in overrides.split(";") if item]


def run_variant(args: argparse.Namespace, name: str, overrides: list[str]) -> dict:
    preset = with_data(get_preset(preset_for_data(args.data)), args.data)
    config = with_overrides(preset, [
        f"run.time_budget_s={args.budget}",
        "run.steps=1000000",
        "run.sample_every=0",
        "run.checkpoint_every=0",
        f"run.num_threads={args.threads}",
        f"run.seed={args.seed}",
        *overrides,
    ])  # fmt: skip
    run_dir = Path(args.out) / name
    started = time.process_time()
    result = train(config, run_dir, overwrite=True, log=lambda *_: None)
    cpu_s = time.process_time() - started
    return {
        "variant": name,
        "overrides": overrides,
        "steps": result.step,
        "train_wall_s": round(result.seconds, 1),
        "train_cpu_s": round(cpu_s, 1),
        "img_per_s": round(result.step * config.run.batch_size / result.seconds, 1),
        **score_run(run_dir, args),
    }


def score_run(run_dir: Path, args: argparse.Namespace) -> dict:
    """Mean over ``--seeds`` sample sets of the run's EMA weights (model and reference loaded once)."""
    model = load(run_dir)
    evaluation = prepare(stored_config(run_dir).data.spec, args.n, metrics=METRICS, progress=False)
    sets = [
        score(evaluation, model.sample(args.n, sampler=args.sampler, steps=args.sample_steps, seed=seed))
        for seed in range(args.seeds)
    ]
    summary = mean_over_sets(sets)
    return {
        "fd": summary["fd"],
        "fd_std": summary["fd_std"],
        "confident": summary["confident"],
        "classes": round(summary["class_coverage"] * 10),
        "sampler": f"{args.sampler} {args.sample_steps}",
        "n": args.n,
        "seeds": args.seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=297, help="samples scored (digits test split: 297)")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--seeds", type=int, default=5, help="sample sets scored per variant (mean, std)")
    parser.add_argument("--rescore", action="store_true", help="score existing OUT/NAME runs again")
    parser.add_argument("--out", default="/tmp/preset_ablation")
    parser.add_argument("--variant", action="append", required=True, help="NAME=key=value;key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for text in args.variant:
        name, overrides = parse_variant(text)
        if args.rescore:
            row = {"variant": name, "overrides": overrides, **score_run(out / name, args)}
            row["steps"] = RunDir(out / name).log_records()[-1]["step"]
        else:
            row = run_variant(args, name, overrides)
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
