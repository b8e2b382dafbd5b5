"""Training throughput (img/s) with 1, 2, … processes of `ddpm train --nproc N` (DDP over gloo on CPU,
NCCL on GPUs), same global batch, measured from the run's own log.jsonl (issue 8).

Each setting is a real run of the command line; the first logging interval (start-up, first
all-reduces) is dropped and the median img/s of the others is reported. On CPU, one process uses
all cores as threads; N processes get cores / N threads each. A setting PxT is P processes of T
threads; the default compares 1 process × all cores, 1 × 1 and N × cores/N for N in --nprocs, since on
a loaded machine a multi-threaded process can lose far more to contention than the processes gain.

    python benchmarks/ddp_scaling.py [--data digits] [--nprocs 2] [--settings 1x2 1x1 2x1] [--steps 60]
        [--batch-size 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ddpm.rundir import RunDir


def measure(nproc: int, args: argparse.Namespace, threads: int, out: Path) -> float:
    command = [sys.executable, "-m", "ddpm", "train", "--nproc", str(nproc), "--data", args.data]
    command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--device", args.device]
    command += ["--out", str(out)]
    for setting in (
        f"run.log_every={args.log_every}", "run.sample_every=0", "run.checkpoint_every=0",
        "run.preview_images=4", "run.preview_steps=2",
    ):  # fmt: skip
        command += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    records = RunDir(out).log_records()
    return statistics.median(record["img_per_s"] for record in records[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[2], help="process counts besides 1")
    parser.add_argument("--settings", nargs="+", metavar="PxT", help="explicit processes×threads settings")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch, the same for every N")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    print(f"# DDP scaling, {datetime.date.today()}, {platform.node()}, {platform.processor() or 'cpu'}")
    print(
        f"torch {torch.__version__}, {args.device}, {cores} cores, data {args.data}, global batch "
        f"{args.batch_size}, {args.steps} steps, load average before {os.getloadavg()[0]:.1f}; "
        f"command: python {' '.join(sys.argv)}\n"
    )
    settings = args.settings or [f"1x{cores}", "1x1", *(f"{n}x{max(1, cores // n)}" for n in args.nprocs)]
    print("| processes | threads each | img/s | vs first row |")
    print("|---:|---:|---:|---:|")
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for index, setting in enumerate(dict.fromkeys(settings)):
            nproc, threads = map(int, setting.split("x"))
            rate = measure(nproc, args, threads, Path(tmp) / f"run{index}")
            baseline = baseline or rate
            print(f"| {nproc} | {threads} | {rate:.0f} | {rate / baseline:.2f}× |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
