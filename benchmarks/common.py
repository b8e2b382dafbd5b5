"""Shared pieces of the side-by-side benchmarks: contenders, interleaved timing, machine facts, tables.

Every benchmark script times its contenders in one process, interleaved (A, B, C, A, B, C, … with the
order rotated each round), after warm-up, and reports medians of wall time and of process CPU time.
On a shared machine the wall time of a single-threaded step is inflated by other processes; the CPU
time of the process is not, so ratios are given for both.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.configio import apply_override, parse_override
from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss
from ddpm.nets import UNET_PRESETS, UNet, UNetConfig, count_parameters
from ddpm.nets.diffusers_unet import unet_config_to_diffusers
from ddpm.train.config import OptimConfig, TrainConfig, config_from_dict, config_to_dict
from ddpm.train.ema import EMA
from ddpm.train.loop import build_optimizer

REPO = Path(__file__).resolve().parents[1]
LUCID_PYTHON = Path(os.environ.get("LUCID_PYTHON", "/work/venv-lucid/bin/python"))
LUCID_WORKER = Path(__file__).with_name("lucid_worker.py")

# The two nets of issue 6 with their batch sizes: the paper's CIFAR-10 net and the small MNIST net.
WORKLOADS = {"ddpm-cifar10": 16, "mnist": 64}


# --- command line and machine -------------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few repetitions, small sizes: a smoke run")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: stable on a shared machine)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    return parser


def with_overrides(config: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``config`` with ``ddpm train --set`` KEY=VALUE assignments applied and checked, as the CLI does."""
    data = config_to_dict(config)
    for assignment in assignments:
        apply_override(data, *parse_override(assignment))
    return config_from_dict(data)


def setup_threads(threads: int) -> None:
    if threads < 1:
        raise ValueError(f"--threads {threads} must be ≥ 1")
    torch.set_num_threads(threads)


def machine_facts() -> dict[str, Any]:
    """Date, CPU, cores, torch build and load: the header of every BENCHMARKS.md section."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "isa": torch.backends.cpu.get_cpu_capability(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def print_header(title: str) -> dict[str, Any]:
    facts = machine_facts()
    load = facts["load_average"]
    load_text = "" if load is None else f", load average {load[0]:.1f}"
    print(f"### {title}\n")
    print(
        f"{facts['date']} · {facts['cpu']} ({facts['cores']} cores, {facts['isa']}), "
        f"torch {facts['torch']}, {facts['threads']} thread(s){load_text}  "
    )
    print(f"`python benchmarks/{facts['command']}`\n")
    return facts


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path | None, payload: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))


def mean_over_sets(sets: list[dict[str, float]]) -> dict[str, float]:
    """Classifier metrics of several sample sets of one model: FD mean ± std, mean confident share, and
    the worst class coverage (an FD of a few hundred samples varies by ±20% from one set to the next)."""
    fds = [m["fd_classifier"] for m in sets]
    return {
        "fd": statistics.mean(fds),
        "fd_std": statistics.stdev(fds) if len(fds) > 1 else 0.0,
        "confident": statistics.mean(m["confidence"] for m in sets),
        "class_coverage": min(m["class_coverage"] for m in sets),
        "sets": len(sets),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# --- timing -------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call of one contender: wall clock and CPU time of the process (all its threads)."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_s)

    def spread(self, cpu: bool = True) -> float:
        """Relative spread (interquartile range / median) of the CPU times, or of the wall times."""
        values = self.cpu_s if cpu else self.wall_s
        if len(values) < 4:
            return float("nan")
        q = statistics.quantiles(values, n=4)
        return (q[2] - q[0]) / statistics.median(values)

    def summary(self) -> str:
        """'CPU ms ± IQR' for the tables."""
        return f"{self.cpu * 1e3:,.0f} ± {self.spread():.0%}"


class Contender:
    """Something to time: ``run()`` does one unit of work (a training step, a sampling run).

    ``timed()`` returns (wall_s, cpu_s) of one run; a subprocess contender measures inside its worker.
    """

    def __init__(self, name: str, run: Callable[[], Any]) -> None:
        self.name = name
        self.run = run

    def timed(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        self.run()
        return time.perf_counter() - wall, time.process_time() - cpu

    def close(self) -> None:
        pass


def interleaved(contenders: list[Contender], *, repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each contender ``repeats`` times, interleaved, the order rotated every round."""
    timings = {c.name: Timing() for c in contenders}
    for _ in range(warmup):
        for contender in contenders:
            contender.timed()
    for round_index in range(repeats):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            wall, cpu = contender.timed()
            timings[contender.name].wall_s.append(wall)
            timings[contender.name].cpu_s.append(cpu)
    return timings


class SubprocessContender(Contender):
    """A contender living in another Python (lucidrains' package needs its own venv).

    The worker reads one command per line from stdin ("run") and answers one JSON line
    {"wall_s": …, "cpu_s": …} measured in its own process, so it interleaves with in-process contenders.
    """

    def __init__(self, name: str, python: Path, args: list[str], threads: int) -> None:
        super().__init__(name, lambda: None)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen(
            [str(python), str(LUCID_WORKER), *args, "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.info = self._request("info")

    def _request(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker exited (status {self.process.wait()})")
        return json.loads(line)

    def timed(self) -> tuple[float, float]:
        answer = self._request("run")
        return answer["wall_s"], answer["cpu_s"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=60)


def lucid_available() -> str | None:
    """None when lucidrains' denoising-diffusion-pytorch imports in its venv, else why not."""
    if not LUCID_PYTHON.exists():
        return f"no {LUCID_PYTHON} (create it: see BENCHMARKS.md)"
    probe = subprocess.run(
        [str(LUCID_PYTHON), "-c", "import denoising_diffusion_pytorch"], capture_output=True, text=True
    )
    if probe.returncode:
        return "denoising_diffusion_pytorch does not import: " + probe.stderr.strip().splitlines()[-1]
    return None


# --- nets ---------------------------------------------------------------------------------------------


def preset(name: str, **changes: Any) -> UNetConfig:
    return dataclasses.replace(UNET_PRESETS[name], **changes)


def diffusers_unet(config: UNetConfig) -> nn.Module:
    """diffusers' UNet2DModel with our config's architecture (the import/export translation)."""
    from diffusers import UNet2DModel

    kwargs = {k: v for k, v in unet_config_to_diffusers(config).items() if not k.startswith("_")}
    return UNet2DModel(**kwargs)


def check_same_size(ours: nn.Module, peer: nn.Module, tolerance: float = 0.01) -> None:
    a, b = count_parameters(ours), count_parameters(peer)
    if abs(a - b) > tolerance * a:
        raise RuntimeError(f"parameter counts differ by more than {tolerance:.0%}: ours {a:,}, peer {b:,}")


def image_batch(config: UNetConfig, batch: int, seed: int = 0) -> Tensor:
    """A fixed batch of 'images' in [-1, 1] of the net's training size."""
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    return torch.rand(batch, config.in_channels, size, size, generator=g).mul_(2).sub_(1)


# --- training steps -----------------------------------------------------------------------------------


def autocast(dtype: torch.dtype | None) -> Any:
    """CPU autocast to ``dtype``, or nothing (fp32) for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


def ours_train_step(
    config: UNetConfig, batch: int, *, channels_last: bool = True, amp: torch.dtype | None = None
) -> Callable[[], None]:
    """One optimizer step exactly as ddpm.train.loop.train_loop runs it for images: Algorithm 1 loss,
    AdamW (foreach on CPU), global-norm clipping to 1, EMA update, channels_last net and batch.
    ``amp=torch.bfloat16`` runs the loss (net forward) under CPU autocast, an opt-in not in the loop."""
    train_config = TrainConfig(model=config, optim=OptimConfig())
    torch.manual_seed(0)
    model = UNet(config)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    ema = EMA(model, train_config.optim.ema_decay, train_config.optim.ema_warmup)
    optimizer = build_optimizer(model, train_config, torch.device("cpu"))
    loss_fn = DiffusionLoss(make_schedule("linear", 1000), "eps")
    images = image_batch(config, batch)
    model.train()
    state = {"step": 0}

    def step() -> None:
        generator = torch.Generator().manual_seed(state["step"])
        x0 = images.contiguous(memory_format=memory_format)
        with autocast(amp):
            loss = loss_fn(model, x0, generator=generator).mean()
        optimizer_step(model, optimizer, ema, loss)
        state["step"] += 1

    step.model = model  # type: ignore[attr-defined]
    return step


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA, loss: Tensor, clip: float = 1.0
) -> None:
    """The end of a ddpm.train.loop step: backward, global-norm clipping, a finite step, the EMA update."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
    if torch.isfinite(loss) & torch.isfinite(grad_norm):
        optimizer.step()
        ema.update(model)


def diffusers_train_step(
    config: UNetConfig, batch: int, *, tricks: bool = False, amp: torch.dtype | None = None
) -> Callable[[], None]:
    """One step of diffusers' examples/unconditional_image_generation/train_unconditional.py:
    DDPMScheduler.add_noise, UNet2DModel, F.mse_loss, clip_grad_norm_(1.0), AdamW(lr 1e-4, betas
    (0.95, 0.999), weight decay 1e-6), cosine LR scheduler, EMAModel(0.9999, warm-up, power 3/4).

    ``tricks=True`` gives it what ours uses: channels_last net and batch, foreach AdamW, foreach
    clipping and foreach EMA. ``amp=torch.bfloat16`` is its ``--mixed_precision bf16`` (accelerate runs
    the forward under autocast; the loss is taken in float32).
    """
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = diffusers_unet(config)
    memory_format = torch.channels_last if tricks else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    foreach = {"foreach": True} if tricks else {}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8, **foreach
    )
    lr_scheduler = get_scheduler(
        "cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=10**6
    )
    ema = EMAModel(
        model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4, foreach=tricks
    )
    images = image_batch(config, batch).contiguous(memory_format=memory_format)
    model.train()

    def step() -> None:
        noise = torch.randn(images.shape, dtype=images.dtype).contiguous(memory_format=memory_format)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],)).long()
        noisy = scheduler.add_noise(images, noise, timesteps)
        with autocast(amp):
            output = model(noisy, timesteps, return_dict=False)[0]
        loss = F.mse_loss(output.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=tricks or None)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())

    step.model = model  # type: ignore[attr-defined]
    return step


# --- sampling -----------------------------------------------------------------------------------------


def ours_sampler(
    config: UNetConfig, batch: int, steps: int, *, channels_last: bool = False
) -> Callable[[], None]:
    """DDIM with ``steps`` network evaluations as ddpm.model runs it: the net as build_net makes it
    (NCHW), eval mode, inference_mode, x̂₀ clipped to [-1, 1]; ``channels_last`` converts the net."""
    from ddpm.diffusion.prediction import Parameterized
    from ddpm.diffusion.samplers import ddim_sample, sample_seeds

    torch.manual_seed(0)
    net = UNet(config).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    schedule = make_schedule("linear", 1000)
    denoiser = Parameterized(net, schedule, "eps", clip_x0=1.0)
    seeds = sample_seeds(0, batch)
    size = config.image_size

    def run() -> None:
        with torch.inference_mode():
            ddim_sample(denoiser, schedule, (batch, config.in_channels, size, size), steps=steps, seeds=seeds)

    run.model = net  # type: ignore[attr-defined]
    return run


def diffusers_sampler(
    config: UNetConfig, batch: int, steps: int, *, tricks: bool = False
) -> Callable[[], None]:
    """DDIMPipeline's loop (diffusers 0.42): set_timesteps, unet(x, t).sample, scheduler.step(eta=0),
    under torch.no_grad as the pipeline's __call__. ``tricks``: channels_last net and latents,
    inference_mode instead of no_grad."""
    from diffusers import DDIMScheduler

    torch.manual_seed(0)
    unet = diffusers_unet(config).eval()
    memory_format = torch.channels_last if tricks else torch.contiguous_format
    unet = unet.to(memory_format=memory_format)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    size = config.image_size
    grad_context = torch.inference_mode if tricks else torch.no_grad

    def run() -> None:
        with grad_context():
            generator = torch.Generator().manual_seed(0)
            image = torch.randn((batch, config.in_channels, size, size), generator=generator)
            image = image.contiguous(memory_format=memory_format)
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                model_output = unet(image, t).sample
                image = scheduler.step(model_output, t, image, eta=0.0, generator=generator).prev_sample

    run.model = unet  # type: ignore[attr-defined]
    return run


# --- FLOPs --------------------------------------------------------------------------------------------


def _output(out: Any) -> Tensor:
    return out.sample if hasattr(out, "sample") else out


def net_gflop(net: nn.Module, config: UNetConfig, batch: int, *, backward: bool) -> float:
    """GFLOP of one forward (and backward) pass counted by torch's FlopCounterMode (convs, matmuls,
    attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = image_batch(config, batch)
    t = torch.randint(0, 1000, (batch,))
    with FlopCounterMode(display=False) as counter:
        if backward:
            _output(net(x, t)).float().square().mean().backward()
        else:
            with torch.inference_mode():
                net(x, t)
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9
