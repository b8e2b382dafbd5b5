"""Training img/s of the presets alone and beside a busy neighbour (issue 23, section 5).

For each preset, ``ddpm train`` runs for ``--seconds`` of training, once with the machine to itself
and once beside a neighbour this script starts and stops: another PyTorch process with 2 intra-op
threads (``matmul``: a loop of 384×384 matrix products; ``ddpm``: a digits run pinned to 2 threads,
the situation of the issue; ``ddpm-auto``: a digits run in auto mode, a neighbour with this fix).
Modes: ``auto`` (``run.num_threads = 0``, the default: the thread governor of ddpm.train.threads)
against ``pinned2`` (``run.num_threads = 2``, what auto did before) and ``pinned1``. img/s is the
median over the log's intervals after the first (the steady state, after the governor's switch).
Slowdown = alone (best mode) / beside the neighbour. The machine must be otherwise idle. The neighbour
shares this script's session unless ``--own-session`` (a job from another terminal): with Linux's
autogroup on, the scheduler shares the CPU per thread within a session and per session across them.

    python benchmarks/busy_neighbour.py --presets swissroll,digits,mnist --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine_facts

DATA = {"swissroll": "swissroll", "digits": "digits", "mnist": "mnist:../shared/data/mnist"}
LOG_EVERY = {"swissroll": 100, "digits": 5, "mnist": 2}
THREADS = {"auto": 0, "pinned2": 2, "pinned1": 1}
NEIGHBOURS = {
    "matmul": [sys.executable, "-c", "import torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\n"
               "while True:\n    a = (a @ a).tanh_()"],
    "ddpm": [sys.executable, "-m", "ddpm", "train", "--data", "digits", "--steps", "1000000", "--out",
             "{out}/neighbour", "--set", "run.num_threads=2", "--set", "run.sample_every=0",
             "--set", "run.checkpoint_every=0"],
    "ddpm-auto": [sys.executable, "-m", "ddpm", "train", "--data", "digits", "--steps", "1000000", "--out",
                  "{out}/neighbour", "--set", "run.sample_every=0", "--set", "run.checkpoint_every=0"],
}  # fmt: skip


def train(preset: str, mode: str, seconds: float, out: Path) -> dict:
    """One ``ddpm train`` for ``seconds`` of training; img/s from its log.jsonl."""
    run_dir = out / f"{preset}_{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable, "-m", "ddpm", "train", "--data", DATA[preset], "--steps", "1000000",
        "--out", str(run_dir), "--set", f"run.num_threads={THREADS[mode]}",
        "--set", f"run.time_budget_s={seconds}", "--set", f"run.log_every={LOG_EVERY[preset]}",
        "--set", "run.sample_every=0", "--set", "run.checkpoint_every=0",
        "--set", "run.preview_images=1", "--set", "run.preview_steps=1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        raise SystemExit(f"{preset} {mode} failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steady = [r["img_per_s"] for r in records[1:]] or [records[0]["img_per_s"]]
    return {
        "steady_img_per_s": statistics.median(steady),
        "threads_at_end": records[-1].get("threads"),
        "switches": [line for line in done.stdout.splitlines() if "thread(s)" in line],
    }


def measure(
    presets: list[str], modes: list[str], seconds: float, neighbour: str | None, out: Path, own_session: bool
) -> list:
    process = None
    if neighbour:
        command = [part.replace("{out}", str(out)) for part in NEIGHBOURS[neighbour]]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=own_session)  # fmt: skip
        time.sleep(8)  # its start-up (imports, data) over: it is busy when ours starts
    try:
        rows = []
        for preset in presets:
            for mode in modes:
                row = {"preset": preset, "mode": mode, "neighbour": neighbour or "none"}
                row.update(train(preset, mode, seconds, out))
                print(json.dumps(row), flush=True)
                rows.append(row)
        return rows
    finally:
        if process is not None:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="swissroll,digits,mnist")
    parser.add_argument("--modes", default="auto,pinned2,pinned1")
    parser.add_argument("--seconds", type=float, default=30.0, help="training seconds per run")
    parser.add_argument("--neighbour", choices=sorted(NEIGHBOURS), default="matmul")
    parser.add_argument("--out", type=Path, default=Path("/tmp/busy_neighbour"))
    parser.add_argument("--own-session", action="store_true",
                        help="start the neighbour in its own session, as a job from another terminal is "
                             "(with autogroup on, CPU is shared per session, not per thread)")  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    presets, modes = args.presets.split(","), args.modes.split(",")
    rows = measure(presets, modes, args.seconds, None, args.out, False)
    rows += measure(presets, modes, args.seconds, args.neighbour, args.out, args.own_session)
    (args.out / "results.json").write_text(json.dumps({"machine": machine_facts(), "rows": rows}, indent=1))
    session = "its own session" if args.own_session else "this session"
    print(f"\n{machine_facts()['cpu']}, {args.seconds:g} s per run, neighbour: {args.neighbour} in {session}")
    print(
        "| preset | mode | alone img/s | beside neighbour img/s | slowdown vs best alone | threads at end |"
    )
    print("|---|---|---|---|---|---|")
    for preset in presets:
        mine = {(r["mode"], r["neighbour"]): r for r in rows if r["preset"] == preset}
        best = max(mine[(mode, "none")]["steady_img_per_s"] for mode in modes)
        for mode in modes:
            alone, busy = mine[(mode, "none")], mine[(mode, args.neighbour)]
            speeds = alone["steady_img_per_s"], busy["steady_img_per_s"]
            print(
                f"| {preset} | {mode} | {speeds[0]:,.0f} | {speeds[1]:,.0f} | {best / speeds[1]:.1f}× | "
                f"{alone['threads_at_end']} / {busy['threads_at_end']} |"
            )


if __name__ == "__main__":
    main()
