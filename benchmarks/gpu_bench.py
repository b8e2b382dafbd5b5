"""GPU benchmark of issue 6 (run by benchmarks/gpu.sh): the `ddpm-cifar10` net in bf16 on one GPU.

Measures, in one process: training img/s and MFU at batch 128 (eager and torch.compile'd; with the
per-step finiteness check that forces a device sync, as ddpm.train.loop does, and without it), DDIM
sampling throughput (network evaluations per second, eager and compiled) with the time 50,000 DDIM-100
samples would take, and peak memory (torch.cuda.max_memory_allocated). Prints one markdown table.

``--cpu`` is the smoke mode: every part on the CPU with a small net and tiny batches, so the script
is known to run before a GPU is spent on it. It imports only torch and ddpm's nets/diffusion/EMA
(no diffusers, no TOML writer), so it runs on a bare PyTorch image with the repo on PYTHONPATH.

    python benchmarks/gpu_bench.py [--cpu] [--no-compile] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import ddim_sample, sample_seeds
from ddpm.nets import UNET_PRESETS, UNet, count_parameters
from ddpm.train.ema import EMA

# Dense bf16 tensor-core peak of the SXM parts (NVIDIA's data sheets), for MFU.
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


@dataclasses.dataclass(frozen=True)
class Plan:
    device: torch.device
    config: Any  # UNetConfig
    train_batch: int
    train_steps: int  # timed steps per variant
    sample_batch: int
    sample_steps: int  # DDIM steps of the timed sampling run
    compile: bool


def make_plan(args: argparse.Namespace) -> Plan:
    if args.cpu:  # smoke: same code paths, a net small enough to compile in seconds
        config = dataclasses.replace(
            UNET_PRESETS["ddpm-cifar10"], base_channels=32, num_groups=8, channel_mult=(1, 2),
            num_res_blocks=1, attention_resolutions=(16,), image_size=32,
        )  # fmt: skip
        return Plan(torch.device("cpu"), config, 4, 2, 4, 2, not args.no_compile)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the smoke mode")
    return Plan(torch.device("cuda"), UNET_PRESETS["ddpm-cifar10"], 128, 30, 1000, 20, not args.no_compile)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak allocated memory on the GPU; on the CPU the process's peak RSS (a high-water mark)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def bf16(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call, the device synchronised before and after the timed calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_peak(device: torch.device) -> float:
    """Achieved bf16 FLOP/s of a large matmul: the practical ceiling next to the data-sheet peak."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    timed(lambda: a @ b, device, 3)
    return 2 * n**3 / timed(lambda: a @ b, device, 10)


class Trainer:
    """The training step of ddpm.train.loop on this device: Algorithm 1 loss under bf16 autocast,
    fused AdamW on CUDA (foreach on CPU), global-norm clipping, EMA; channels_last net and batch."""

    def __init__(self, plan: Plan) -> None:
        torch.manual_seed(0)
        self.device = plan.device
        self.model = UNet(plan.config).to(plan.device, memory_format=torch.channels_last).train()
        self.net: Any = self.model
        self.ema = EMA(self.model, 0.9999)
        fast = {"fused": True} if plan.device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-4, **fast)
        self.loss_fn = DiffusionLoss(make_schedule("linear", 1000))
        size = plan.config.image_size
        x0 = torch.rand(plan.train_batch, plan.config.in_channels, size, size, device=plan.device) * 2 - 1
        self.x0 = x0.contiguous(memory_format=torch.channels_last)
        self.generator = torch.Generator(device=plan.device).manual_seed(0)
        self.skipped = torch.zeros((), device=plan.device, dtype=torch.int64)

    def step(self, check_finite: bool) -> None:
        with bf16(self.device):
            loss = self.loss_fn(self.net, self.x0, generator=self.generator).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        if check_finite:  # as ddpm.train.loop: a Python `if` on a device tensor waits for the GPU
            if torch.isfinite(loss) & torch.isfinite(grad_norm):
                self.optimizer.step()
                self.ema.update(self.model)
        else:
            self.optimizer.step()
            self.ema.update(self.model)

    def flops_per_step(self) -> float:
        with FlopCounterMode(display=False) as counter, bf16(self.device):
            self.loss_fn(self.model, self.x0, generator=self.generator).mean().backward()
        self.optimizer.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())


def sampler_run(plan: Plan, net: Any) -> Callable[[], None]:
    schedule = make_schedule("linear", 1000)
    denoiser = Parameterized(net, schedule, "eps", clip_x0=1.0)
    seeds = sample_seeds(0, plan.sample_batch)
    size = plan.config.image_size
    shape = (plan.sample_batch, plan.config.in_channels, size, size)
    noise = torch.randn(shape, device=plan.device).contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), bf16(plan.device):
            ddim_sample(denoiser, schedule, noise, steps=plan.sample_steps, seeds=seeds)

    return run


def forward_flops(plan: Plan, model: torch.nn.Module) -> float:
    size = plan.config.image_size
    x = torch.randn(plan.sample_batch, plan.config.in_channels, size, size, device=plan.device)
    t = torch.zeros(plan.sample_batch, dtype=torch.long, device=plan.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), bf16(plan.device):
        model(x.contiguous(memory_format=torch.channels_last), t)
    return float(counter.get_total_flops())


def compiled(plan: Plan, module: torch.nn.Module) -> Any:
    """torch.compile'd module; the CPU smoke mode traces with aot_eager (Dynamo and AOTAutograd on our
    code, no C++ code generation, which takes minutes on a small CPU)."""
    return torch.compile(module, backend="inductor" if plan.device.type == "cuda" else "aot_eager")


def train_rows(plan: Plan, peaks: tuple[float, float], add: Callable[..., None]) -> None:
    """Training img/s, MFU and peak memory: eager and compiled, with and without the loop's sync."""
    device, (spec_peak, achieved_peak) = plan.device, peaks
    trainer = Trainer(plan)
    print(f"net: {count_parameters(trainer.model):,} parameters, train batch {plan.train_batch}", flush=True)
    step_flops = trainer.flops_per_step()
    variants = [("eager", False), ("eager, loop's finiteness sync", True)]
    if plan.compile:
        variants += [("compiled", False), ("compiled, loop's finiteness sync", True)]
    for label, check in variants:
        if label.startswith("compiled") and trainer.net is trainer.model:
            compile_start = time.perf_counter()
            trainer.net = compiled(plan, trainer.model)
            trainer.step(check)
            sync(device)
            add("train compile", seconds=time.perf_counter() - compile_start)
        for _ in range(3):  # warm-up (cudnn.benchmark picks its algorithms here)
            trainer.step(check)
        reset_peak(device)
        seconds = timed(lambda check=check: trainer.step(check), device, plan.train_steps)
        add(
            f"train {label}, batch {plan.train_batch}", img_per_s=plan.train_batch / seconds,
            ms_per_step=seconds * 1e3, mfu=step_flops / seconds / spec_peak,
            of_matmul=step_flops / seconds / achieved_peak, peak_mib=peak_mib(device),
        )  # fmt: skip


def sample_rows(plan: Plan, peaks: tuple[float, float], add: Callable[..., None]) -> None:
    """DDIM sampling NFE/s (eager and compiled) and what 50,000 DDIM-100 samples would take."""
    device, (spec_peak, achieved_peak) = plan.device, peaks
    torch.manual_seed(0)
    model = UNet(plan.config).to(device, memory_format=torch.channels_last).eval()
    nets = [("eager", model)]
    if plan.compile:
        nets.append(("compiled", compiled(plan, model)))
    nfe = plan.sample_batch * plan.sample_steps
    flops = forward_flops(plan, model) * plan.sample_steps
    for label, net in nets:
        run = sampler_run(plan, net)
        warm_start = time.perf_counter()
        run()  # warm-up; compiles the compiled net
        sync(device)
        if label == "compiled":
            add("sample compile", seconds=time.perf_counter() - warm_start)
        reset_peak(device)
        seconds = timed(run, device, 2)
        add(
            f"sample DDIM-{plan.sample_steps} {label}, batch {plan.sample_batch}", nfe_per_s=nfe / seconds,
            mfu=flops / seconds / spec_peak, of_matmul=flops / seconds / achieved_peak,
            minutes_for_50k_ddim100=50_000 * 100 / (nfe / seconds) / 60, peak_mib=peak_mib(device),
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="smoke mode: every part on the CPU, small sizes")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    plan = make_plan(args)
    device = plan.device
    started = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers outside autocast
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU (smoke mode)"
    spec_peak = next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), math.nan)
    achieved_peak = matmul_peak(device)
    print(
        f"device: {name}; torch {torch.__version__}; bf16 matmul {achieved_peak / 1e12:.1f} TFLOP/s",
        flush=True,
    )

    rows: list[dict[str, Any]] = []

    def add(what: str, **values: Any) -> None:
        rows.append({"what": what, **values})
        print(json.dumps(rows[-1]), flush=True)

    peaks = (spec_peak, achieved_peak)
    train_rows(plan, peaks, add)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    sample_rows(plan, peaks, add)

    print(f"\n### GPU benchmark ({name}, torch {torch.__version__}, bf16 autocast, channels_last)\n")
    print(
        "| what | img/s or NFE/s | ms/step | MFU (data sheet) | of bf16 matmul | 50k DDIM-100 (min) "
        "| peak MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "seconds" in row:
            print(f"| {row['what']} | | {row['seconds'] * 1e3:,.0f} (one-off) | | | | |")
            continue
        rate = row.get("img_per_s", row.get("nfe_per_s"))
        print(
            f"| {row['what']} | {rate:,.0f} | {row.get('ms_per_step', math.nan):.1f} | {row['mfu']:.1%} | "
            f"{row['of_matmul']:.1%} | {row.get('minutes_for_50k_ddim100', math.nan):.1f} | "
            f"{row['peak_mib']:,.0f} |"
        )
    print(
        f"\nbf16 matmul achieved {achieved_peak / 1e12:.1f} TFLOP/s; data-sheet peak "
        f"{spec_peak / 1e12:.0f}; total {time.perf_counter() - started:.0f} s"
    )
    out = args.json or (Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
