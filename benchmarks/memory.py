"""Peak memory per preset and batch (issue 6): peak RSS of a process that builds the net and runs two
training steps (or one sampling step), on CPU; torch.cuda.max_memory_allocated on a GPU. Each
measurement runs in a fresh process, since the peak RSS is a high-water mark of the whole process.

Contenders: ours (as ddpm.train.loop runs it), ours with gradient checkpointing, and diffusers'
UNet2DModel of the same architecture as its training example runs it.

    python benchmarks/memory.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from common import (
    base_parser,
    diffusers_train_step,
    markdown_table,
    ours_sampler,
    ours_train_step,
    peak_rss_mib,
    preset,
    print_header,
    setup_threads,
    write_json,
)

FULL = [("digits", 128), ("mnist", 64), ("ddpm-cifar10", 16), ("ddpm-cifar10", 64), ("ddpm-256", 1)]
QUICK = [("digits", 32), ("mnist", 16), ("ddpm-cifar10", 4)]
CONTENDERS = ["ours", "ours + gradient checkpointing", "diffusers (its example)"]


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mib()


def child(name: str, batch: int, contender: str, mode: str, device: str) -> dict:
    """One measurement, in this (fresh) process."""
    import diffusers  # noqa: F401  (imported by every contender, so the start RSS is the same for all)

    config = preset(name, gradient_checkpointing=contender.endswith("checkpointing"))
    before = current_rss_mib()
    if device == "cuda":
        return _cuda_child(config, batch, contender, mode)
    if mode == "sample":
        run = ours_sampler(config, batch, steps=1) if contender.startswith("ours") else None
        if run is None:
            return {"skipped": "sampling is measured for ours only"}
        run()
    else:
        make = diffusers_train_step if contender.startswith("diffusers") else ours_train_step
        step = make(config, batch)
        step()
        step()
    return {"rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}


def _cuda_child(config, batch: int, contender: str, mode: str) -> dict:
    """The same on CUDA: the net's and optimizer's tensors on the GPU, peak allocated bytes."""
    from common import diffusers_unet, image_batch

    from ddpm.diffusion import make_schedule
    from ddpm.diffusion.losses import DiffusionLoss
    from ddpm.nets import UNet

    device = torch.device("cuda")
    net = (diffusers_unet(config) if contender.startswith("diffusers") else UNet(config)).to(device)
    net = net.to(memory_format=torch.channels_last)
    x0 = image_batch(config, batch).to(device).contiguous(memory_format=torch.channels_last)
    torch.cuda.reset_peak_memory_stats()
    if mode == "sample":
        with torch.inference_mode():
            net.eval()(x0, torch.zeros(batch, dtype=torch.long, device=device))
    else:
        optimizer = torch.optim.AdamW(net.parameters(), fused=True)
        loss_fn = DiffusionLoss(make_schedule("linear", 1000))

        def model(x, t):
            out = net(x, t)
            return out.sample if hasattr(out, "sample") else out

        for _ in range(2):
            loss_fn(model, x0).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return {"cuda_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--child", nargs=4, metavar=("PRESET", "BATCH", "CONTENDER", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    setup_threads(args.threads)
    if args.child:
        name, batch, contender, mode = args.child
        print(json.dumps(child(name, int(batch), contender, mode, args.device)))
        return
    print_header(f"Peak memory ({args.device})")
    rows, results = [], []
    for name, batch in QUICK if args.quick else FULL:
        for mode in ("train", "sample"):
            for contender in CONTENDERS:
                if mode == "sample" and contender != "ours":
                    continue
                command = [sys.executable, __file__, "--child", name, str(batch), contender, mode,
                           "--device", args.device, "--threads", str(args.threads)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    result = {"error": done.stderr.strip().splitlines()[-1]}
                else:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(
                    {"preset": name, "batch": batch, "mode": mode, "contender": contender, **result}
                )
                if "error" in result:
                    rows.append([name, batch, mode, contender, "error: " + result["error"], ""])
                elif args.device == "cuda":
                    rows.append([name, batch, mode, contender, result["cuda_peak_allocated_mib"], ""])
                else:
                    peak, before = result["peak_rss_mib"], result["rss_before_mib"]
                    rows.append([name, batch, mode, contender, peak, peak - before])
                print(" | ".join(str(v) for v in rows[-1]), file=sys.stderr, flush=True)
    value = "peak allocated MiB (CUDA)" if args.device == "cuda" else "peak RSS MiB"
    print(markdown_table(["preset", "batch", "mode", "contender", value, "MiB over start"], rows))
    print(
        "\ntrain: net, AdamW and EMA built, two optimizer steps; sample: one DDIM step under inference_mode."
    )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
