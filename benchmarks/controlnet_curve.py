"""ControlNet against training steps, control scale and the concat baseline (issue 21's RESULTS).

One ControlNet run per control kind on a frozen base run (``ddpm train --controlnet BASE --control KIND``),
with checkpoints kept at ``--curve-steps``; each kept checkpoint scored by ``ddpm eval`` (adherence at the
controlled, chance and ceiling levels, FD_classifier of controlled and base samples), so the paper's
"sudden convergence" (Zhang, Rao & Agrawala 2023, §4) shows as a jump of adherence between two steps; the
final checkpoint at ``--scales``; the concat baseline (a U-Net from scratch on [x_t, control], the base's
network config) trained for ``--concat-steps`` and scored at the same fractions of its budget; pictures.

    python benchmarks/controlnet_curve.py --base /tmp/h5/base --data digits --kinds canny mask --steps 4 \\
        --curve-steps 2 --n 16 --seeds 0 1 --scales 0 1 2 --eval-flags "--steps 5" --threads 1 \\
        --out /tmp/h5/cn3 --stages train curve scales probe concat pictures table --probe-steps 4 \\
        --concat-steps auto
    python benchmarks/controlnet_curve.py --base /tmp/mnist15 --data mnist:../shared/data/mnist \\
        --kinds canny mask lowres --steps 3000 --curve-steps 250 500 1000 2000 --n 1000 --threads 1 \\
        --out /tmp/cn-mnist --stages train curve scales probe table

Controls always come from the held-out (test) split. The FD reference is ``--split`` (default train): with
test, the same n test images (at seed 0) give the controls and the reference, which favours controlled
samples. Run it from the folder the base's data spec is relative to (the repository for mnist15).
Stages (``--stages``, default all but probe): train, curve, scales, probe, concat, pictures, table. Results
accumulate in OUT/results.json (merged under a lock, so invocations with other kinds may run beside each
other); every ``ddpm eval`` report is kept in OUT/evals and reused when asked for again.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import itertools
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_facts, markdown_table

from ddpm.data import load_dataset
from ddpm.eval.evaluate import PRIMARY_METRICS
from ddpm.model import to_uint8
from ddpm.rundir import RunDir

CONFIG = "config.toml"
MAX_CHECKPOINTS = 100  # the runs checkpoint at the curve steps' greatest common divisor
ENV = dict(os.environ)  # of the ddpm processes; --threads sets their OMP_NUM_THREADS
SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)


# --- running ddpm -------------------------------------------------------------------------------------


def ddpm(args: list[str], log: Path | None = None) -> float:
    """Run ``ddpm ARGS`` (this interpreter), its output to ``log`` or kept; wall seconds. Fails loudly."""
    return finish(start(args, log))


def start(args: list[str], log: Path | None = None) -> tuple[subprocess.Popen, float, list[str], Path | None]:
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 (closed by the process's end)
    process = subprocess.Popen([sys.executable, "-m", "ddpm", *args], stdout=out, stderr=subprocess.STDOUT,
                               text=True, env=ENV)  # fmt: skip
    return process, time.perf_counter(), args, log


def finish(started: tuple[subprocess.Popen, float, list[str], Path | None]) -> float:
    process, begun, args, log = started
    output = process.communicate()[0] if log is None else (process.wait(), "")[1]
    if process.returncode:
        text = log.read_text() if log else output
        raise SystemExit(f"ddpm {shlex.join(args)} failed:\n{text[-3000:]}")
    return time.perf_counter() - begun


# --- training -----------------------------------------------------------------------------------------


def curve_plan(curve: list[int], steps: int) -> tuple[list[int], int]:
    """The steps kept (``curve`` ≤ steps, and the last) and the checkpoint interval that lands on all (the
    last checkpoint is written at the end whatever the interval)."""
    kept = sorted({s for s in curve if 0 < s <= steps} | {steps})
    return kept, math.gcd(*kept[:-1]) if len(kept) > 1 else steps


def scaled_curve(args: argparse.Namespace, steps: int) -> list[int]:
    """The ControlNet curve's steps as about the same fractions of another budget (the concat runs'),
    rounded to multiples of its scaled checkpoint interval (plain rounding leaves them nearly coprime)."""
    kept, every = curve_plan(args.curve_steps, args.steps)
    interval = max(1, round(every * steps / args.steps))
    return sorted({round(s * steps / args.steps / interval) * interval for s in kept[:-1]} - {0} | {steps})


def train_command(args: argparse.Namespace, mode: str, kind: str, steps: int, curve: list[int]) -> list[str]:
    every = curve_plan(curve, steps)[1]
    if steps // every > MAX_CHECKPOINTS:
        raise SystemExit(
            f"curve steps {curve} below {steps} have the common divisor {every}: {steps // every} "
            f"checkpoints (at most {MAX_CHECKPOINTS}); choose steps with a larger one"
        )
    # the concat baseline: the base's network, optimiser and run settings, trained from scratch
    what = ["--controlnet", str(args.base)] if mode == "controlnet" else ["--config", str(args.base / CONFIG)]
    sets = [f"run.checkpoint_every={every}", f"run.keep_last={steps // every + 1}", "run.sample_every=0",
            *([f"run.num_threads={args.threads}"] if args.threads else []), *args.set]  # fmt: skip
    command = ["train", *what, "--control", kind, "--data", args.data, "--steps", str(steps), "--seed",
               str(args.seed), "--out", str(args.out / f"{mode}-{kind}")]  # fmt: skip
    return command + [x for s in sets for x in ("--set", s)]


def train(args: argparse.Namespace, results: dict[str, Any], mode: str, steps: int, curve: list[int]) -> None:
    """One run per kind (``--parallel``: all at once), reused when its last checkpoint exists, resumed
    when it was cut short; then the checkpoints off the curve deleted (``--keep-all`` keeps them)."""
    running = []
    for kind in args.kinds:
        command = train_command(args, mode, kind, steps, curve)
        run = Path(command[command.index("--out") + 1])
        if RunDir(run).checkpoint_dir(steps).exists():
            print(f"{run.name}: reusing its {steps}-step run", flush=True)
            continue
        command += ["--resume"] if (run / CONFIG).exists() else []
        print(f"training {run.name}: ddpm {shlex.join(command)}", flush=True)
        running.append(start(command, args.out / f"{run.name}.log"))
        if not args.parallel:
            finish(running.pop())
    for process in running:
        finish(process)
    for kind in args.kinds:
        run = RunDir(args.out / f"{mode}-{kind}")
        wanted = curve_plan(curve, steps)[0]
        for folder in run.checkpoints_dir.glob("step_*"):
            if int(folder.name.removeprefix("step_")) not in wanted and not args.keep_all:
                shutil.rmtree(folder)
        kept = [s for s in wanted if run.checkpoint_dir(s).exists()]  # after a rerun with another curve
        record = {**train_record(run.path), "kept": kept, "parallel": args.parallel, "load": os.getloadavg()}
        results.setdefault("train", {})[run.path.name] = record
        print(f"{run.path.name}: {record['steps']} steps, {record['time_s']:.0f} s, "
              f"{record['img_per_s']:.0f} img/s", flush=True)  # fmt: skip


def train_record(run: Path) -> dict[str, Any]:
    """Steps, training seconds, threads, batch and throughput of a run, from its log.jsonl and config.
    Logs written before time_s was cumulative (7147b30) restart it at 0 on --resume: pieces are added."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    batch = RunDir(run).config_dict()["run"]["batch_size"]
    ends = [a["time_s"] for a, b in itertools.pairwise(log) if b["time_s"] < a["time_s"]]
    last, seconds = log[-1], sum(ends) + log[-1]["time_s"]
    rates = [line["img_per_s"] for line in log[1:] if line.get("img_per_s")] or [last["img_per_s"]]
    return {"steps": last["step"], "time_s": seconds, "threads": last.get("threads"), "batch": batch,
            "img_per_s": statistics.median(rates), "img_per_s_overall": last["step"] * batch / seconds,
            "s_per_step": seconds / last["step"], "pieces": len(ends) + 1, "run": str(run)}  # fmt: skip


# --- evaluation ---------------------------------------------------------------------------------------


def evaluate(args: argparse.Namespace, results: dict[str, Any], run: str, step: int, scale: float | None,
             seed: int) -> dict[str, Any]:  # fmt: skip
    """``ddpm eval`` of checkpoint ``step`` of OUT/``run`` at ``scale`` (None: as trained), reused when its
    report exists; the summary recorded under results["evals"]."""
    scale = None if scale == 1 else scale  # as trained: the curve's own report
    scaled = "" if scale is None else f"-scale{scale:g}"
    out = args.out / "evals" / f"{run}-step{step}{scaled}-seed{seed}-{args.split}-n{args.n}.json"
    checkpoint = RunDir(args.out / run).checkpoint_dir(step)
    command = ["eval", str(checkpoint), "--n", str(args.n), "--seed", str(seed), "--split", args.split,
               "--metrics", *args.metrics, "--json", str(out), *shlex.split(args.eval_flags),
               *([] if scale is None else ["--control-scale", str(scale)])]  # fmt: skip
    wall = None if out.exists() else ddpm(command)
    report = json.loads(out.read_text())
    block, metrics = report["adherence"], report["metrics"]
    key = next(k for k in PRIMARY_METRICS if k in metrics)
    summary = {"run": run, "step": step, "scale": 1.0 if scale is None else scale, "seed": seed,
               "split": args.split, "n_asked": args.n, "n": int(metrics["n"]), "fd_key": key,
               "fd": metrics[key], "base_fd": report["base_metrics"][key], "name": block["name"],
               "controlled": block["controlled"], "chance": block["chance"], "ceiling": block["ceiling"],
               "wall_s": wall,
               "command": "ddpm " + shlex.join(command)}  # fmt: skip
    results.setdefault("evals", {})[out.stem] = summary
    print(
        f"{out.stem}: {block['name']} {block['controlled']:.4f} (chance {block['chance']:.4f}, ceiling "
        f"{block['ceiling']:.4f}), {key} {metrics[key]:.4f} (base {summary['base_fd']:.4f})",
        flush=True,
    )
    return summary


def real_fd(args: argparse.Namespace, results: dict[str, Any], seed: int) -> None:
    """FD of the n held-out images the controls come from (test split, ``ddpm eval``'s seeded choice)
    against the ``--split`` reference: the real-image row (the floor; ~0 when the split is test)."""
    data = RunDir(args.base).config_dict()["data"]
    stem = f"real-test-seed{seed}-{args.split}-n{args.n}"
    npz, out = args.out / "evals" / f"{stem}.npz", args.out / "evals" / f"{stem}.json"
    if not out.exists():
        sized = {key: data.get(key) or None for key in ("image_size", "channels", "root")}  # the run's
        held_out = load_dataset(args.data, split="test", **sized)
        rows = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))[: args.n]
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(npz, images=to_uint8(held_out.batch(rows)))
        ddpm(["eval", str(npz), "--data", args.data, "--n", str(args.n), "--seed", str(seed), "--split",
              args.split, "--metrics", *args.metrics, "--json", str(out), *_data_flags(args)])  # fmt: skip
    metrics = json.loads(out.read_text())["metrics"]
    key = next(k for k in PRIMARY_METRICS if k in metrics)
    results.setdefault("real", {})[stem] = {"split": args.split, "n_asked": args.n, "n": int(metrics["n"]),
                                            "seed": seed, "fd_key": key, "fd": metrics[key]}  # fmt: skip


def _data_flags(args: argparse.Namespace) -> list[str]:
    """The flags of ``--eval-flags`` that a samples file's evaluation takes (not the sampler's)."""
    flags, kept = shlex.split(args.eval_flags), []
    for i, flag in enumerate(flags):
        if flag in ("--inception-weights", "--data-root", "--feature-net", "--device", "--batch-size"):
            kept += flags[i : i + 2]
    return kept


def curve(args: argparse.Namespace, results: dict[str, Any], mode: str = "controlnet") -> None:
    """Every kept checkpoint of each kind's run, each seed; and the real-image row."""
    for kind in args.kinds:
        run = f"{mode}-{kind}"
        if run not in results.get("train", {}):
            raise SystemExit(f"{run} has not been trained here: run its training stage first")
        for step in results["train"][run]["kept"]:
            for seed in args.seeds:
                evaluate(args, results, run, step, None, seed)
    for seed in args.seeds:
        real_fd(args, results, seed)


def scales(args: argparse.Namespace, results: dict[str, Any]) -> None:
    for kind in args.kinds:
        for scale in args.scales:
            for seed in args.seeds:
                evaluate(args, results, f"controlnet-{kind}", args.steps, scale, seed)


def probe(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """A short concat run of the first kind (``--probe-steps``): its throughput converts the equal budget
    into concat steps (table, ``--concat-steps auto``)."""
    command = train_command(args, "concat", args.kinds[0], args.probe_steps, [args.probe_steps])
    run = args.out / f"probe-concat-{args.kinds[0]}"
    command[command.index("--out") + 1] = str(run)
    if not RunDir(run).checkpoint_dir(args.probe_steps).exists():
        ddpm([*command, "--overwrite"], args.out / f"{run.name}.log")
    results.setdefault("train", {})[run.name] = train_record(run)


def concat(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The concat baseline per kind at ``--concat-steps`` (auto: the equal budget of the first kind's
    ControlNet and its base, by the probe's throughput), scored at the curve's fractions of its budget."""
    steps = args.concat_steps
    if steps == "auto":
        steps = equal_budget_steps(results, args.kinds[0])
        if steps is None:
            raise SystemExit(
                f"--concat-steps auto needs the probe stage and controlnet-{args.kinds[0]} first"
            )
        print(f"--concat-steps auto: {steps} steps (the equal budget of {args.kinds[0]})", flush=True)
    steps = int(steps)
    train(args, results, "concat", steps, scaled_curve(args, steps))
    curve(args, results, "concat")


def pictures(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``ddpm viz control`` of each final run: control | samples | real image, in --pictures-dir."""
    folder = args.pictures_dir or args.out / "pictures"
    runs = [args.out / f"{mode}-{kind}" for mode in ("controlnet", "concat") for kind in args.kinds]
    for run in (r for r in runs if (r / CONFIG).exists()):
        ddpm(["viz", "control", str(run), "--out-dir", str(args.out / "viz" / run.name)])
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{args.out.name}-{run.name}.png"
        shutil.copyfile(args.out / "viz" / run.name / "control.png", target)
        results.setdefault("pictures", {})[run.name] = str(target)
        print(target, flush=True)


# --- tables -------------------------------------------------------------------------------------------


def equal_budget_steps(results: dict[str, Any], kind: str) -> int | None:
    """Concat steps that cost what the base's training and ``kind``'s ControlNet run cost together (their
    logged training wall seconds), at the concat run's steady throughput (the median of its logged img/s:
    a short probe's overall rate is mostly start-up): the probe's, so that ``auto`` stays put once the concat
    runs exist, else the kind's concat run's."""
    train = results.get("train", {})
    probed = [r for name, r in train.items() if name.startswith("probe-")]
    concat = probed[0] if probed else train.get(f"concat-{kind}")
    if concat is None or "base" not in train or f"controlnet-{kind}" not in train:
        return None
    seconds = train["base"]["time_s"] + train[f"controlnet-{kind}"]["time_s"]
    return round(seconds * concat["img_per_s"] / concat["batch"])


def _cell(values: list[float]) -> str:
    """Mean ± sample std over seeds; — when not measured."""
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4g}{spread}"


def _evals(args: argparse.Namespace, results: dict[str, Any], run: str, **match: Any) -> list[dict]:
    """The recorded evaluations of ``run`` at this invocation's split and n (and ``match``)."""
    return [e for e in results.get("evals", {}).values() if e["run"] == run and e["split"] == args.split
            and e["n_asked"] == args.n and all(e[k] == v for k, v in match.items())]  # fmt: skip


def _real_fd(args: argparse.Namespace, results: dict[str, Any]) -> str:
    return _cell([r["fd"] for r in results.get("real", {}).values()
                  if r["split"] == args.split and r["n_asked"] == args.n])  # fmt: skip


def curve_tables(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    """Adherence and FD against training steps, one table per run, the real-image row last."""
    lines = []
    for run in sorted({e["run"] for e in results.get("evals", {}).values()}):
        kept = results["train"].get(run, {}).get("kept", [])  # this run's steps (not an earlier length's)
        found = [e for e in _evals(args, results, run, scale=1.0) if e["step"] in kept]
        if not found or run.split("-", 1)[1] not in args.kinds:
            continue
        total, name = results["train"][run]["steps"], found[0]["name"]
        dropped = "control dropped" if run.startswith("concat") else "base, no control"
        rows = []
        for step in sorted({e["step"] for e in found}):
            at = [e for e in found if e["step"] == step]
            rows.append([step, f"{step / total:.0%}", *(_cell([e[k] for e in at]) for k in
                         ("controlled", "chance", "fd", "base_fd"))])  # fmt: skip
        ceiling = _cell([e["ceiling"] for e in found if e["step"] == step])  # the last step's, per seed
        rows.append(["real images", "", ceiling, "", _real_fd(args, results), ""])
        headers = ["steps", "of budget", f"{name}", f"{name}, {dropped}", f"{found[0]['fd_key']}",
                   f"{found[0]['fd_key']}, {dropped}"]  # fmt: skip
        lines += [f"**{run}** (controls: {found[0]['n']} test images; FD against {args.split})", "",
                  markdown_table(headers, rows), ""]  # fmt: skip
    return lines


def scale_table(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    rows, headers = [], ["control scale"]
    kinds = [k for k in args.kinds if _evals(args, results, f"controlnet-{k}", step=args.steps)]
    for kind in kinds:
        found = _evals(args, results, f"controlnet-{kind}", step=args.steps)
        headers += [f"{kind}: {found[0]['name']}", f"{kind}: {found[0]['fd_key']}"]
    for scale in sorted({float(s) for s in args.scales}):
        row: list[Any] = [f"{scale:g}"]
        for kind in kinds:
            at = _evals(args, results, f"controlnet-{kind}", step=args.steps, scale=scale)
            row += [_cell([e["controlled"] for e in at]), _cell([e["fd"] for e in at])]
        rows.append(row)
    title = f"ControlNet at step {args.steps} against its control scale"
    return [title, "", markdown_table(headers, rows), ""]


def budget_tables(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    """Throughput of every run (the budget conversion) and ControlNet against concat at their last steps."""
    train = results.get("train", {})
    rows = []
    for name, r in sorted(train.items()):
        equal = equal_budget_steps(results, name.split("-", 1)[1]) if name.startswith("controlnet-") else ""
        rows.append(
            [
                name,
                r["steps"],
                r["batch"],
                r["threads"],
                f"{r['time_s']:.0f}",
                f"{r['s_per_step']:.3f}",
                f"{r['img_per_s']:.0f}",
                f"{r['img_per_s_overall']:.0f}",
                "—" if equal is None else equal,
            ]
        )
    headers = [
        "run",
        "steps",
        "batch",
        "threads",
        "training s",
        "s/step",
        "img/s (median of logged)",
        "img/s (overall)",
        "concat steps at base + this run's budget",
    ]
    lines = [markdown_table(headers, rows), ""]  # fmt: skip
    if len({r["threads"] for r in train.values()}) > 1:
        lines += ["(the runs used different thread counts: the equal budget above is in wall seconds; scale "
                  "the base's by its threads for CPU seconds)", ""]  # fmt: skip
    compared = []
    for kind in args.kinds:
        for run in (f"controlnet-{kind}", f"concat-{kind}"):
            last = train.get(run, {}).get("steps")
            found = _evals(args, results, run, step=last, scale=1.0)
            if found:
                base = train["base"]["time_s"] if run.startswith("controlnet") else 0
                spent = train[run]["time_s"] + base
                compared.append([run, last, f"{spent:.0f}", *(_cell([e[k] for e in found]) for k in
                                 ("controlled", "chance", "ceiling", "fd", "base_fd"))])  # fmt: skip
    headers = ["run", "steps", "training s (base included)", "adherence", "uncontrolled", "real images",
               "FD", "FD uncontrolled"]  # fmt: skip
    return lines + (["ControlNet against concat (last steps)", "", markdown_table(headers, compared), ""]
                    if compared else [])  # fmt: skip


def tables(args: argparse.Namespace, results: dict[str, Any]) -> str:
    header = [f"FD reference: the {args.split} split; controls: the test split; {args.n} samples per "
              f"evaluation, seeds {' '.join(map(str, args.seeds))}", ""]  # fmt: skip
    swept = any(e["scale"] != 1 for e in results.get("evals", {}).values())
    sweep = scale_table(args, results) if swept else []
    return "\n".join(header + curve_tables(args, results) + sweep + budget_tables(args, results))


# --- results file and command line --------------------------------------------------------------------


def save(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Merge ``results`` into the file under a lock (other invocations may have written in between)."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.exists() else {}
        for key, value in results.items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
        path.write_text(json.dumps(merged, indent=1, default=str))
    return merged


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--base", type=Path, required=True, help="the frozen base run")
    add("--data", required=True, help="data spec of the runs and of the real images")
    add("--kinds", nargs="+", default=["canny", "mask", "lowres"], help="control kinds")
    add("--steps", type=int, default=3000, help="ControlNet training steps")
    add("--curve-steps", type=int, nargs="+", default=[250, 500, 1000, 2000], help="checkpoints kept")
    add("--concat-steps", help="concat baseline steps, or auto (the equal budget by the probe's s/step)")
    add("--probe-steps", type=int, default=100, help="steps of the probe stage's concat run")
    add("--scales", type=float, nargs="+", default=list(SCALES))
    add("--n", type=int, default=1000, help="samples per evaluation")
    add("--seeds", type=int, nargs="+", default=[0], help="one evaluation per seed")
    add("--split", default="train", help="FD reference split (default train; controls are always test's)")
    add("--metrics", nargs="+", default=["fd"], help="ddpm eval --metrics")
    add("--eval-flags", default="", help="more ddpm eval flags, e.g. '--sampler ddim --steps 50'")
    add("--set", action="append", default=[], help="more --set KEY=VALUE of every training run")
    add("--seed", type=int, default=0, help="training seed")
    add("--threads", type=int, help="run.num_threads of training, OMP_NUM_THREADS of evaluations")
    add("--parallel", action="store_true", help="train the kinds' runs at the same time")
    add("--keep-all", action="store_true", help="keep checkpoints off the curve")
    add("--pictures-dir", type=Path, help="where the pictures are copied (default OUT/pictures)")
    add("--stages", nargs="+", default=["train", "curve", "scales", "concat", "pictures", "table"])
    add("--out", type=Path, required=True)
    return parser.parse_args()


STAGES = {
    "train": lambda args, results: train(args, results, "controlnet", args.steps, args.curve_steps),
    "curve": curve, "scales": scales, "probe": probe, "concat": concat, "pictures": pictures,
    "table": lambda args, results: None,
}  # fmt: skip


def main() -> None:
    args = parse_args()
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    if "concat" in args.stages and args.concat_steps is None:
        raise SystemExit("stage concat needs --concat-steps N (or auto, after the probe stage)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        ENV["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    path = args.out / "results.json"
    results = save(path, {"machine": {f"{time.time():.0f}-{os.getpid()}": machine_facts()},
                          "train": {"base": train_record(args.base)}})  # fmt: skip
    print(f"FD reference split: {args.split} (controls: the test split)", flush=True)
    for stage in args.stages:
        before = copy.deepcopy(results)
        STAGES[stage](args, results)
        # only what the stage changed is merged: another invocation's newer entries stay
        changed = {section: {k: v for k, v in entries.items() if before.get(section, {}).get(k) != v}
                   for section, entries in results.items()}  # fmt: skip
        results = save(path, changed)
    print(tables(args, results))


if __name__ == "__main__":
    main()
