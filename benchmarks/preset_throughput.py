"""Training and sampling throughput (images/s) of every training preset with its own network, on this machine.

Training: whole optimizer steps as ddpm.train.loop runs them (Algorithm-1 loss forward + backward,
AdamW, global-norm clipping, EMA update) at the preset's batch size; cifar10 and celebahq256 are
capped at --max-batch. Sampling: the preset's preview sampler and step count through
ddpm.model.build_model(...).sample_with_result with an untrained net (speed does not depend on
the weights), batch min(256, cap). For cifar10 and celebahq256 the timed sampling run is cut to
--max-sample-steps steps: every step costs the same network evaluations, so images/s of the full run
is the measured NFE/s divided by the full run's NFE per image (counted with a zero denoiser).

    python benchmarks/preset_throughput.py [--quick] [--presets swissroll digits …] [--max-batch 16]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from common import (
    Contender,
    Timing,
    base_parser,
    interleaved,
    markdown_table,
    optimizer_step,
    ours_train_step,
    peak_rss_mib,
    print_header,
    setup_threads,
    write_json,
)
from torch import Tensor, nn

from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss
from ddpm.model import DiffusionModel, build_model
from ddpm.nets import MLPConfig, UNetConfig, build_net, count_parameters
from ddpm.train.config import TrainConfig, model_spec
from ddpm.train.ema import EMA
from ddpm.train.loop import build_optimizer
from ddpm.train.presets import PRESETS, get_preset

# The presets meant for a GPU: on a CPU their own batch sizes (128, 64) take many minutes per step.
BIG = ("cifar10", "celebahq256")
SAMPLE_BATCH = 256  # sampling batch of the small presets


# --- what one preset runs ------------------------------------------------------------------------------


def sample_shape(config: TrainConfig) -> tuple[tuple[int, ...], str]:
    """(shape of one sample, kind) of the preset's data: (C, H, W) images or (dim,) points."""
    model = config.model
    if isinstance(model, MLPConfig):
        return (model.dim,), "points"
    return (model.in_channels, model.image_size, model.image_size), "images"


def mlp_train_step(config: TrainConfig, batch: int) -> Callable[[], None]:
    """One optimizer step of the point presets as ddpm.train.loop runs it: float32 (B, dim) points,
    the preset's loss, AdamW (foreach), clipping and EMA; no channels_last (not images)."""
    assert isinstance(config.model, MLPConfig)
    torch.manual_seed(0)
    model = build_net(config.model)
    ema = EMA(model, config.optim.ema_decay, config.optim.ema_warmup)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    diffusion = config.diffusion
    loss_fn = DiffusionLoss(
        make_schedule(diffusion.schedule, diffusion.num_steps),
        diffusion.parameterization,
        diffusion.min_snr_gamma or None,
    )
    points = torch.randn(batch, config.model.dim, generator=torch.Generator().manual_seed(0))
    clip = config.optim.grad_clip_norm or float("inf")
    model.train()
    state = {"step": 0}

    def step() -> None:
        generator = torch.Generator().manual_seed(state["step"])
        optimizer_step(model, optimizer, ema, loss_fn(model, points, generator=generator).mean(), clip)
        state["step"] += 1

    step.model = model  # type: ignore[attr-defined]
    return step


def train_step(config: TrainConfig, batch: int) -> Callable[[], None]:
    if isinstance(config.model, UNetConfig):
        return ours_train_step(config.model, batch)
    return mlp_train_step(config, batch)


class _ZeroDenoiser(nn.Module):
    """Predicts zeros at no cost: runs a sampler's loop to count its network evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # DiffusionModel.device reads a parameter

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return torch.zeros_like(x)


def nfe_per_image(config: TrainConfig, shape: tuple[int, ...], kind: str, sampler: str, steps: int) -> int:
    model = build_model(model_spec(config, shape, kind), net=_ZeroDenoiser())
    return model.sample_with_result(1, sampler=sampler, steps=steps)[0].nfe


def warm_up_net(model: DiffusionModel, n: int) -> None:
    """One network evaluation at the sampling batch (first-call allocations), outside the timing;
    a whole sampling run as warm-up would cost as much as a timed one."""
    model.net.eval()
    with torch.inference_mode():
        model.net(torch.randn(n, *model.sample_shape), torch.full((n,), 500, dtype=torch.long))


# --- measurement -------------------------------------------------------------------------------------


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    config = get_preset(name)
    shape, kind = sample_shape(config)
    big = name in BIG
    repeats = args.repeats or (1 if args.quick else 2 if big else 5)

    train_batch = min(config.run.batch_size, args.max_batch) if big else config.run.batch_size
    step = train_step(config, train_batch)
    params = count_parameters(step.model)
    train = interleaved([Contender("train", step)], repeats=repeats, warmup=1)["train"]
    del step  # its optimizer state and EMA copy are not needed while sampling

    sampler, full_steps = config.run.preview_sampler, config.run.preview_steps
    cap = min(SAMPLE_BATCH, args.max_batch) if big else SAMPLE_BATCH
    n = min(cap, args.quick_samples) if args.quick else cap
    steps = min(full_steps, args.max_sample_steps) if big and args.max_sample_steps else full_steps
    torch.manual_seed(0)
    model = build_model(model_spec(config, shape, kind))
    nfe: dict[str, int] = {}

    def sample() -> None:
        nfe["timed"] = model.sample_with_result(n, sampler=sampler, steps=steps, seed=0, batch_size=n)[0].nfe

    warm_up_net(model, n)
    sampling = interleaved([Contender("sample", sample)], repeats=repeats, warmup=0)["sample"]
    full_nfe = nfe["timed"]
    if steps != full_steps:
        full_nfe = nfe_per_image(config, shape, kind, sampler, full_steps)

    def rates(seconds: Callable[[Timing], float]) -> dict[str, float]:
        nfe_per_s = nfe["timed"] * n / seconds(sampling)
        return {"train_img_s": train_batch / seconds(train), "sample_img_s": nfe_per_s / full_nfe,
                "nfe_s": nfe_per_s}  # fmt: skip

    return {
        "preset": name,
        "params": params,
        "shape": list(shape),
        "train_batch": train_batch,
        "preset_batch": config.run.batch_size,
        "sampler": sampler,
        "steps": full_steps,
        "timed_steps": steps,
        "nfe_per_image": full_nfe,
        "timed_nfe_per_image": nfe["timed"],
        "sample_batch": n,
        "repeats": repeats,
        "wall": rates(lambda t: t.wall),
        "cpu": rates(lambda t: t.cpu),
        "train_s": dataclasses.asdict(train),
        "sample_s": dataclasses.asdict(sampling),
        "peak_rss_mib": peak_rss_mib(),
    }


def table_row(r: dict[str, Any]) -> list[Any]:
    sampler = f"{r['sampler']} {r['steps']}"
    if r["timed_steps"] != r["steps"]:
        sampler += f" (timed {r['timed_steps']})"
    batch = str(r["train_batch"])
    if r["train_batch"] != r["preset_batch"]:
        batch += f" (preset {r['preset_batch']})"
    shape = "×".join(map(str, r["shape"])) + (" points" if len(r["shape"]) == 1 else "")
    wall = r["wall"]
    return [
        r["preset"], f"{r['params']:,}", shape, batch, wall["train_img_s"], sampler,
        r["sample_batch"], wall["sample_img_s"], wall["nfe_s"], f"{r['peak_rss_mib']:,.0f}",
    ]  # fmt: skip


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    add = parser.add_argument
    add("--presets", nargs="+", choices=list(PRESETS), help="default: all (--quick: all but celebahq256)")
    add("--max-batch", type=int, default=16,
        help="cap on the training and sampling batch of cifar10 and celebahq256 (default 16)")  # fmt: skip
    add("--max-sample-steps", type=int, default=10,
        help="sampler steps timed for cifar10 and celebahq256, images/s scaled to the preset's full "
        "step count (default 10; 0: the full count)")  # fmt: skip
    add("--repeats", type=int, help="timed runs (default 5; cifar10, celebahq256: 2; --quick: 1)")
    add("--quick-samples", type=int, default=4, help="sampling batch under --quick (default 4)")
    args = parser.parse_args()
    if args.max_batch < 1 or args.max_sample_steps < 0:
        parser.error("--max-batch must be ≥ 1 and --max-sample-steps ≥ 0")
    setup_threads(args.threads)
    names = args.presets or [p for p in PRESETS if not (args.quick and p == "celebahq256")]
    facts = print_header("Preset throughput")
    results = []
    for name in names:
        results.append(measure(name, args))
        print(f"{name} done (peak RSS {results[-1]['peak_rss_mib']:,.0f} MiB)", flush=True)
    headers = [
        "preset", "net params", "image shape", "train batch", "train img/s (median)", "sampler + steps",
        "sample batch", "sampling img/s", "NFE/s", "peak RSS MiB",
    ]  # fmt: skip
    print("\n" + markdown_table(headers, [table_row(r) for r in results]) + "\n")
    repeats = sorted({r["repeats"] for r in results})
    print(
        f"Wall-clock medians of {'/'.join(map(str, repeats))} timed run(s); training after 1 warm-up step, "
        "sampling after one warm-up network evaluation. Sampling img/s is for the preset's full step count "
        "(NFE/s ÷ NFE per image). Peak RSS is the process's so far. Rates by process CPU time: --json."
    )
    write_json(args.json, {"machine": facts, "results": results})


if __name__ == "__main__":
    main()
