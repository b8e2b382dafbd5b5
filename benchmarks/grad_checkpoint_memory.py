"""Memory of one training forward + backward with and without U-Net gradient checkpointing (issue 8).

Each (net, setting) runs in a fresh process, so its peak is its own: on CPU the peak resident set
(ru_maxrss) minus the resident set just before the step (net, gradients and inputs already built, after
a warm-up on a tiny input); on CUDA torch.cuda.max_memory_allocated minus the memory allocated before
the step. Also reports the wall time of the step (checkpointing recomputes each block's forward once
in backward).

    python benchmarks/grad_checkpoint_memory.py [--nets digits ddpm-cifar10 ddpm-256] [--batch 2]
        [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from ddpm.nets import UNET_PRESETS, UNet, count_parameters

MIB = 2**20


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(net_name: str, checkpointing: bool, batch: int, device: str) -> dict:
    """One forward + backward of ``net_name`` in training mode; memory of the step in MiB."""
    config = dataclasses.replace(UNET_PRESETS[net_name], gradient_checkpointing=checkpointing)
    torch.manual_seed(0)
    net = UNet(config).to(device).train()
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    x = torch.randn(shape, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    # Warm-up on the smallest input the net takes: loads lazily imported code (checkpointing's too),
    # whose pages would otherwise count as memory of the measured step. Gradients then exist before
    # the step, as in training after step 1.
    side = config.downsample_factor
    tiny = torch.zeros(1, config.in_channels, side, side, device=device)
    net(tiny, t[:1]).square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resident_bytes()
    started = time.perf_counter()
    net(x, t).square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    seconds = time.perf_counter() - started
    return {
        "net": net_name,
        "checkpointing": checkpointing,
        "params": count_parameters(net),
        "step_mib": (peak - before) / MIB,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["digits", "ddpm-cifar10", "ddpm-256"])
    parser.add_argument("--batch", type=int, default=2, help="images per forward/backward (fixed for all)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker; 0 = default")
    parser.add_argument("--worker", nargs=2, metavar=("NET", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1] == "1", args.batch, args.device)))
        return

    print(f"# Gradient checkpointing memory, {datetime.date.today()}, {platform.node()}")
    print(
        f"torch {torch.__version__}, {args.device}, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}; command: python {' '.join(sys.argv)}\n"
    )
    print("| net | params | step memory, MiB | with checkpointing, MiB | saved | step s | with ckpt s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.nets:
        results = {}
        for checkpointing in (False, True):
            command = [sys.executable, __file__, "--worker", name, str(int(checkpointing))]
            command += ["--batch", str(args.batch), "--device", args.device, "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[checkpointing] = json.loads(output.strip().splitlines()[-1])
        plain, ckpt = results[False], results[True]
        saved = 1 - ckpt["step_mib"] / plain["step_mib"]
        print(
            f"| {name} | {plain['params'] / 1e6:.1f}M | {plain['step_mib']:.0f} | {ckpt['step_mib']:.0f} | "
            f"{saved:.0%} | {plain['seconds']:.1f} | {ckpt['seconds']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
