"""Quality of the `digits` preset against training steps and CPU time (RESULTS.md, issue 3/11).

Trains once with checkpoints every --every steps, then scores each checkpoint's EMA samples with a
logistic-regression classifier trained on the real digits: fraction of samples labelled with
probability ≥ 0.9, classes covered, and the same for the untrained model and for real test digits.

    python benchmarks/digits_curve.py --steps 3000 --every 500 --out /tmp/digits_curve [--set K=V ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from common import with_overrides
from sklearn.linear_model import LogisticRegression

from ddpm.data import load_dataset
from ddpm.model import build_model, load
from ddpm.rundir import RunDir
from ddpm.train.config import model_spec
from ddpm.train.presets import get_preset
from ddpm.train.run import train


def classifier() -> LogisticRegression:
    digits = load_dataset("digits", split="train")
    features = digits.data.reshape(len(digits), -1).float().numpy() / 255.0
    return LogisticRegression(max_iter=3000).fit(features, digits.labels.numpy())


def score(clf: LogisticRegression, images) -> dict[str, float]:
    probs = clf.predict_proba(((images.clamp(-1, 1) + 1) / 2).reshape(len(images), -1).numpy())
    return {
        "confident": float((probs.max(1) >= 0.9).mean()),
        "mean_confidence": float(probs.max(1).mean()),
        "classes": len(np.unique(probs.argmax(1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--out", default="/tmp/digits_curve")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    config = with_overrides(get_preset("digits"), args.set)
    config = dataclasses.replace(
        config,
        run=dataclasses.replace(
            config.run, steps=args.steps, checkpoint_every=args.every, keep_last=1000, sample_every=0
        ),
    )
    out = Path(args.out)
    started = time.process_time(), time.perf_counter()
    train(config, out, overwrite=True, log=lambda *_: None)
    cpu_s, wall_s = time.process_time() - started[0], time.perf_counter() - started[1]
    clf = classifier()
    ddim = {"sampler": "ddim", "steps": args.sample_steps}  # as the recorded figures were drawn
    rows = {
        "untrained": score(
            clf, build_model(model_spec(config, (1, 8, 8), "images")).sample(args.n, **ddim)
        )
    }
    real = load_dataset("digits", split="test")
    rows["real test"] = score(clf, real.batch(np.arange(len(real))))
    log = RunDir(out).log_records()
    for path in RunDir(out).checkpoints():
        step = int(path.name.split("_")[1])
        elapsed = next((r["time_s"] for r in log if r["step"] >= step), float("nan"))
        rows[f"step {step} ({elapsed:.0f}s)"] = score(clf, load(path).sample(args.n, **ddim))
    print(f"training: {args.steps} steps, {wall_s:.0f}s wall, {cpu_s:.0f}s CPU; overrides {args.set}")
    for name, row in rows.items():
        print(f"{name:>24}: {row}")


if __name__ == "__main__":
    main()
