"""Worker for lucidrains' denoising-diffusion-pytorch, run by its own venv (it needs torchvision).

Its Unet has its own block design (RMSNorm, linear attention at every level, 7×7 first conv,
pixel-unshuffle downsampling), so the nearest config is used: same widths, levels and full-attention
levels as our preset. The parameter count and FLOPs are reported so throughput can be compared per FLOP.

Protocol (see common.SubprocessContender): one command per stdin line, one JSON answer per line.
"info" → {"params", "gflop_per_run", "torch"}; "run" → {"wall_s", "cpu_s"} of one unit of work:
a training step as its Trainer.train runs it (GaussianDiffusion loss, backward, clip_grad_norm_(1),
Adam, EMA(0.995, update every 10)), or a DDIM sampling run (GaussianDiffusion.sample).

    /work/venv-lucid/bin/python benchmarks/lucid_worker.py --net ddpm-cifar10 --mode train --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # its sampling loop draws a progress bar

import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA
from torch.utils.flop_counter import FlopCounterMode

# Nearest lucidrains configs to our presets (channels, widths, levels; full attention where ours attends).
NETS = {
    "ddpm-cifar10": (dict(dim=128, dim_mults=(1, 2, 2, 2), channels=3, dropout=0.1,
                          full_attn=(False, True, False, False)), 32),
    "mnist": (dict(dim=32, dim_mults=(1, 2, 2), channels=1, dropout=0.1,
                   full_attn=(False, False, True)), 28),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--net", choices=sorted(NETS), required=True)
    parser.add_argument("--mode", choices=("train", "sample"), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of a sampling run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet_kwargs, size = NETS[args.net]
    unet = Unet(**unet_kwargs)
    diffusion = GaussianDiffusion(
        unet,
        image_size=size,
        timesteps=1000,
        sampling_timesteps=args.steps if args.mode == "sample" else None,
    )
    images = torch.rand(args.batch, unet_kwargs["channels"], size, size)  # its data are in [0, 1]

    if args.mode == "train":
        optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
        ema = EMA(diffusion, beta=0.995, update_every=10)
        diffusion.train()

        def run() -> None:
            loss = diffusion(images)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            ema.update()

        def flops() -> int:
            with FlopCounterMode(display=False) as counter:
                diffusion(images).backward()
            diffusion.zero_grad(set_to_none=True)
            return counter.get_total_flops()
    else:
        diffusion.eval()

        def run() -> None:
            diffusion.sample(batch_size=args.batch)

        def flops() -> int:
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                unet(torch.randn_like(images), torch.zeros(args.batch, dtype=torch.long))
            return counter.get_total_flops() * args.steps

    for line in sys.stdin:
        command = line.strip()
        if command == "info":
            params = sum(p.numel() for p in unet.parameters())
            answer = {"params": params, "gflop_per_run": flops() / 1e9, "torch": torch.__version__}
        elif command == "run":
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            answer = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
