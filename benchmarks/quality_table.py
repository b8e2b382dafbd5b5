"""The RESULTS.md quality rows of issue 4: real-vs-real floor, an untrained model, and trained runs.

Every metric ``ddpm eval`` computes for the data set (classifier features: FD, KID, precision,
recall, IS, confidence, class coverage), at the same n for all rows. The untrained model is the
first run's configuration with fresh weights; runs are scored from their EMA weights.

    python benchmarks/quality_table.py --data digits --n 297 RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ddpm.eval.evaluate import prepare, real_floor, score
from ddpm.model import build_model, load

COLUMNS = ["fd_classifier", "kid_classifier", "precision", "recall", "is_classifier", "confidence",
           "class_coverage"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sampler", default="dpm++2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"sampler": args.sampler, "steps": args.steps, "seed": 0}
    models = [load(run) for run in args.runs]
    untrained = build_model(models[0].spec)  # the same model, untrained: the baseline
    evaluation = prepare(args.data, args.n, progress=False)  # classifier and reference, loaded once
    rows = {
        "real train vs test (floor)": real_floor(args.data, args.n, progress=False),
        "untrained network": score(evaluation, untrained.sample(args.n, **options)),
    }
    for run, model in zip(args.runs, models, strict=True):
        rows[f"{run.name} (step {model.step})"] = score(evaluation, model.sample(args.n, **options))
    print(f"{args.data}, n = {args.n}, {args.sampler} {args.steps} steps, seed 0\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, metrics in rows.items():
        print(f"| {name} | " + " | ".join(f"{metrics[key]:.4g}" for key in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}))


if __name__ == "__main__":
    main()
