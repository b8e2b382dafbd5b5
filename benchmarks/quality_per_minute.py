"""Quality per CPU-minute against the peers (issue 11): same wall budget, same samples, same scorer.

Trains ours (the data set's preset), diffusers (UNet2DModel + DDPMScheduler as its training example
runs them) and lucidrains' GaussianDiffusion + Unet (its Trainer's defaults), one after the other on
this machine, each for the same wall-clock budget with the same thread count; at every budget mark
each draws the same number of samples with the same number of network evaluations (see
qpm_worker.py for each contender's recipe). All samples are scored with the package's classifier:
FD_classifier, fraction labelled with confidence ≥ 0.9, class coverage. Prints a table, writes
``OUT/results.json``, side-by-side grids of the last mark and the FD-against-minutes plot.

    python benchmarks/quality_per_minute.py --data digits --budgets 60,120,300 --n 297 --nfe 50
    python benchmarks/quality_per_minute.py --data mnist:../shared/data/mnist \
        --budgets 120,300,600,900 --n 500 --nfe 20
    python benchmarks/quality_per_minute.py --contenders ours --ours-set "model.attention_resolutions=[]"
    python benchmarks/quality_per_minute.py --data digits --budgets 300 --n 297 --sets 10 --nfe 20 \
        --contenders ours,diffusers-best,lucid-defaults,lucid-best --calibrate 60 --calibrate-threads 2 \
        --threads 1 --parallel 2        # issue 23: budgets as steps at each one's 2-thread rate alone

Contenders: ``ours``; ``diffusers`` and ``lucid`` as their examples train (the earlier rows);
``diffusers-best`` (our preset's batch, lr, warm-up, EMA and sampler grid in diffusers' own API),
``lucid-defaults`` (its true defaults) and ``lucid-best`` (its defaults with our batch and lr).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from common import LUCID_PYTHON, machine_facts, mean_over_sets
from PIL import Image, ImageDraw

from ddpm.data import load_dataset
from ddpm.eval.evaluate import Evaluation, prepare, score
from ddpm.eval.reference import subset_index
from ddpm.eval.samples import load_samples_npz
from ddpm.train.presets import get_preset, preset_for_data
from ddpm.viz.grid import make_grid, to_pil

WORKER = Path(__file__).with_name("qpm_worker.py")
METRICS = ["fd", "confidence", "coverage"]
PYTHONS = {
    "ours": Path(sys.executable), "diffusers": Path(sys.executable), "diffusers-best": Path(sys.executable),
    "lucid": LUCID_PYTHON, "lucid-defaults": LUCID_PYTHON, "lucid-best": LUCID_PYTHON,
}  # fmt: skip


def recipe_options(name: str, data: str) -> list[str]:
    """Peers' batch and lr: their defaults (16, 1e-4), or our preset's for the ``-best`` rows (issue 23)."""
    if not name.endswith("-best"):
        return []
    preset = get_preset(preset_for_data(data))
    return [
        "--batch", str(preset.run.batch_size), "--lr", str(preset.optim.lr),
        "--ema-decay", str(preset.optim.ema_decay), "--spacing", preset.run.preview_spacing or "karras",
    ]  # fmt: skip


def contender_command(
    name: str, args: argparse.Namespace, train_npy: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    return [
        str(PYTHONS[name]), str(WORKER), "--contender", name, "--preset", preset_for_data(args.data),
        "--data", args.data, "--train-npy", str(train_npy), "--budgets", args.budgets,
        "--nfe", str(args.nfe), "--threads", str(args.threads), "--out", str(args.out),
        "--n", str(args.n * args.sets), "--diffusers-sampler", args.diffusers_sampler,
        "--seed", str(args.seed),
        *(option for assignment in args.ours_set for option in ("--set", assignment)),
        *recipe_options(name, args.data), *extra,
    ]  # fmt: skip


def calibrate(names: list[str], args: argparse.Namespace, train_npy: Path) -> dict[str, list[str]]:
    """--calibrate S: each contender alone for S seconds; budgets → step marks at that rate, so the
    long runs can share the machine (or run beside other work) without changing what they train."""
    options = {}
    for name in names:
        saved = args.reuse_calibration / f"calibration_{name}.json" if args.reuse_calibration else None
        if saved is not None and saved.is_file():  # another seed's run on this machine measured it
            rate = json.loads(saved.read_text())
            marks = [max(1, round(float(b) * rate["steps_per_s"])) for b in args.budgets.split(",")]
            options[name] = ["--step-marks", ",".join(map(str, marks))]
            continue
        threads = str(args.calibrate_threads or args.threads)  # the later --threads wins in the worker
        extra = ("--calibrate", str(args.calibrate), "--threads", threads)
        command = contender_command(name, args, train_npy, extra)
        print(f"[{name} calibration] {' '.join(command)}", flush=True)
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
        rate = next(json.loads(line) for line in out.splitlines() if line.startswith("{"))
        marks = [max(1, round(float(b) * rate["steps_per_s"])) for b in args.budgets.split(",")]
        print(f"[{name}] {rate['steps_per_s']:.2f} steps/s × batch {rate['batch']} → {marks}", flush=True)
        (args.out / f"calibration_{name}.json").write_text(json.dumps({**rate, "step_marks": marks}))
        options[name] = ["--step-marks", ",".join(map(str, marks))]
    return options


def run_contenders(names: list[str], args: argparse.Namespace, train_npy: Path) -> list[dict]:
    """Run the workers ``--parallel`` at a time (default one after the other); their JSON lines."""
    marks = calibrate(names, args, train_npy) if args.calibrate or args.reuse_calibration else {}
    if args.calibrate_only:
        raise SystemExit(0)
    rows = []
    for start in range(0, len(names), args.parallel):
        group = names[start : start + args.parallel]
        processes = []
        for name in group:
            command = contender_command(name, args, train_npy, tuple(marks.get(name, ())))
            print(f"[{name}] {' '.join(command)}", flush=True)
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        for name, process in zip(group, processes, strict=True):
            out, _ = process.communicate()
            if process.returncode:
                raise SystemExit(f"{name} failed with exit status {process.returncode}")
            rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows


def score_rows(rows: list[dict], evaluation: Evaluation, n: int) -> None:
    """Score each contender's samples in sets of n (mean and std over the sets, common.mean_over_sets)."""
    for row in rows:
        samples, _ = load_samples_npz(row["samples"])
        sets = [score(evaluation, samples[start : start + n]) for start in range(0, len(samples) - n + 1, n)]
        summary = mean_over_sets(sets)
        summary["coverage"] = summary.pop("class_coverage")
        row.update(summary)


def save_side_by_side(rows: list[dict], contenders: list[str], out: Path, show: int = 64) -> Path:
    """One grid per contender (its last budget mark), left to right, each captioned, as one PNG."""
    panels = []
    for name in contenders:
        last = max((r for r in rows if r["contender"] == name), key=lambda r: r["budget_s"])
        samples, _ = load_samples_npz(last["samples"])
        pixels = make_grid(samples[:show], nrow=8, padding=1)
        scale = max(1, 240 // pixels.shape[0])
        panel = to_pil(pixels.repeat(scale, 0).repeat(scale, 1)).convert("RGB")
        captioned = Image.new("RGB", (panel.width, panel.height + 24), "white")
        captioned.paste(panel, (0, 24))
        caption = f"{name}, {last['budget_s'] / 60:g} min, FD {last['fd']:.2f}"
        ImageDraw.Draw(captioned).text((4, 6), caption, fill="black")
        panels.append(captioned)
    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    sheet = Image.new("RGB", (width, panels[0].height), "white")
    left = 0
    for panel in panels:
        sheet.paste(panel, (left, 0))
        left += panel.width + 8
    path = out / "side_by_side.png"
    sheet.save(path)
    return path


def plot_fd(rows: list[dict], contenders: list[str], floor: float, out: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=150)
    for name in contenders:
        mine = sorted((r for r in rows if r["contender"] == name), key=lambda r: r["budget_s"])
        ax.plot([r["budget_s"] / 60 for r in mine], [r["fd"] for r in mine], marker="o", label=name)
    ax.axhline(floor, color="grey", linestyle="--", label="real vs real (floor)")
    ax.set_yscale("log")
    ax.set_xlabel("training wall-clock minutes (2-core CPU)")
    ax.set_ylabel("FD_classifier (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "fd_vs_minutes.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--budgets", default="60,120,300", help="comma-separated training seconds")
    parser.add_argument("--n", type=int, default=297, help="samples per scored set")
    parser.add_argument("--sets", type=int, default=1, help="sample sets scored (mean ± std)")
    parser.add_argument("--nfe", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contenders", default="ours,diffusers,lucid")
    parser.add_argument(
        "--diffusers-sampler", choices=("sde-dpm++", "ddim"), default="sde-dpm++",
        help="the diffusers contender's sampler (default: the algorithm of our presets' sampler)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed of every contender")
    parser.add_argument(
        "--ours-set", action="append", default=[], metavar="KEY=VALUE",
        help="override of ours' preset, as `ddpm train --set` (repeatable): to measure a preset variant",
    )  # fmt: skip
    parser.add_argument(
        "--parallel", type=int, default=1, help="contenders run at once (each with --threads threads)"
    )
    parser.add_argument(
        "--calibrate", type=float, default=0.0, metavar="S",
        help="measure each contender's steps/s alone for S seconds, then train to the step counts the "
        "budgets give at that rate (runs may then share the machine with --parallel or other work)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-calibration",
        type=Path,
        default=None,
        metavar="DIR",
        help="take each contender's steps/s from DIR/calibration_NAME.json when there (another seed's run)",
    )
    parser.add_argument("--calibrate-only", action="store_true", help="stop after the calibration")
    parser.add_argument(
        "--calibrate-threads",
        type=int,
        default=0,
        help="threads for the calibration (default: --threads); the runs themselves use --threads",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/quality_per_minute"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    contenders = args.contenders.split(",")
    unknown = sorted(set(contenders) - set(PYTHONS))
    if unknown:
        raise SystemExit(f"unknown contender(s) {unknown}; allowed: {', '.join(PYTHONS)}")

    train = load_dataset(args.data, split="train")
    train_npy = args.out / "train_images.npy"
    np.save(train_npy, train.data.permute(0, 2, 3, 1).contiguous().numpy())
    rows = run_contenders(contenders, args, train_npy)
    torch.set_num_threads(args.threads)
    # the classifier and the reference features are prepared once for every row, set and floor subset
    evaluation = prepare(args.data, args.n, metrics=METRICS, progress=False)
    score_rows(rows, evaluation, args.n)
    # the floor (ddpm.eval.evaluate.real_floor: n train images scored against the test split) is as noisy
    # as a model's FD, so it is averaged over as many train subsets as the models' sample sets
    floor = mean_over_sets([
        score(evaluation, train.batch(subset_index(len(train), args.n, seed))) for seed in range(args.sets)
    ])  # fmt: skip
    result = {"machine": machine_facts(), "args": {k: str(v) for k, v in vars(args).items()},
              "floor": floor, "rows": rows}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(result, indent=1))

    print(
        f"\n{args.data}: n={args.n}, NFE {args.nfe}, {args.threads} thread(s) per contender, "
        f"{args.parallel} contender(s) at a time, {machine_facts()['date']}"
    )
    print("| contender | budget | steps | img/s | FD_classifier | × floor | confident ≥0.9 | classes "
          "| sampling s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['contender']} | {row['budget_s'] / 60:g} min | {row['steps']} | {row['img_per_s']} | "
            f"{row['fd']:.3f} ± {row['fd_std']:.3f} | {row['fd'] / floor['fd']:.2f} | "
            f"{row['confident']:.2f} | {row['coverage'] * 10:.0f} | "
            f"{row['sample_s']} |"
        )
    print(f"| real train vs test (floor, {args.sets} subsets) | — | — | — | "
          f"{floor['fd']:.3f} ± {floor['fd_std']:.3f} | 1 | {floor['confident']:.2f} | "
          f"{floor['class_coverage'] * 10:.0f} | — |")  # fmt: skip
    print(save_side_by_side(rows, contenders, args.out))
    print(plot_fd(rows, contenders, floor["fd"], args.out, f"{args.data}: n={args.n}, NFE {args.nfe}"))


if __name__ == "__main__":
    main()
