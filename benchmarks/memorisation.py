"""Memorisation of trained runs (issue 23, section 3): each sample's distance to its nearest training
image, and the share closer than the held-out images' 5th percentile (≈ 5% for new images).

Samples are drawn with each run's own sampler (as ``ddpm sample`` and ``ddpm eval`` do); the data
are the run's own (its config's data section), train split as the memory, test split as held out.
Prints a markdown table and writes the closest sample/training pairs of each run as a PNG.

    python benchmarks/memorisation.py RUN_DIR [RUN_DIR ...] --n 297 --out-dir docs/img
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ddpm.eval.memorisation import Memorisation, memorisation
from ddpm.model import load
from ddpm.rundir import RunDir
from ddpm.train.config import config_from_dict
from ddpm.train.run_data import load_data
from ddpm.viz.figures import save_figure
from ddpm.viz.memorisation import closest_pairs_figure


def measure(
    run: Path, n: int, seed: int, steps: int | None = None
) -> tuple[dict, torch.Tensor, torch.Tensor, Memorisation]:
    """The memorisation metrics of ``run``'s samples, with what the picture needs."""
    model = load(run)
    config = config_from_dict(RunDir(run).config_dict())
    train, test = load_data(config, "train"), load_data(config, "test")
    train_images = train.batch(torch.arange(len(train)))
    held_out = test.batch(torch.arange(len(test)))
    options = {} if steps is None else {"steps": steps}  # the run's own sampler, maybe more steps
    samples = model.sample(n, seed=seed, labels=model.default_labels(n), **options)
    result = memorisation(samples, train_images, held_out)
    row = {"run": str(run), "step": model.step, "n": n, "train": len(train), "held_out": len(test),
           **result.metrics()}  # fmt: skip
    return row, samples, train_images, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=297)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, help="sampler steps (default: the run's own; quality_per_minute's runs store 1)"
    )
    parser.add_argument("--out-dir", type=Path, help="write <run name>_closest.png here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        row, samples, train_images, result = measure(run, args.n, args.seed, args.steps)
        if args.out_dir is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            path = args.out_dir / f"{run.name}_closest.png"
            save_figure(closest_pairs_figure(samples, train_images, result, k=10), path)
            row["picture"] = str(path)
        rows.append(row)
    print("| run | step | n | memorised share (expected 0.05) | median NN distance: samples / held-out "
          "| threshold |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['step']} | {r['n']} | {r['memorised_share']:.3f} | "
              f"{r['nn_train_distance_median']:.2f} / {r['nn_train_distance_median_held_out']:.2f} | "
              f"{r['nn_train_distance_threshold']:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
