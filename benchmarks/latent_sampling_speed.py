"""Latent against pixel diffusion: seconds to draw N samples at the same NFE, decoding included (issue 20).

Issue 20's targets: a latent run samples ≥ 4× faster than a pixel run on mnist, ≥ 6× on CIFAR-10 (2-core CPU).

Both runs draw as ``ddpm sample`` and ``ddpm eval`` do (``draw_for_scoring``: EMA weights, batches of
--batch-size, the classes in turn for a class-conditional run), with one sampler (default the presets'
SDE-DPM-Solver++(2M)) at --nfe network evaluations per sample, counted by the sampler itself on both;
the rest of the sampler settings (spacing, η, ε scaling) are each run's own and go into the JSON.
They are timed interleaved in one process, the order rotated every round, after a one-batch warm-up
each. The speed-up is the median over rounds of the pixel run's seconds over the latent run's: paired
within a round, so a busy moment of a shared machine slows both sides of one ratio.

    python benchmarks/latent_sampling_speed.py LATENT_RUN PIXEL_RUN [--n 1000] [--nfe 20] \
        [--sampler dpm++2m_sde] [--batch-size 250] [--threads 2] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    Contender,
    Timing,
    base_parser,
    interleaved,
    markdown_table,
    print_header,
    setup_threads,
    write_json,
)
from sampler_nfe import steps_for

from ddpm.command_support import OpenedRun, SamplerFlags, draw_for_scoring, open_run
from ddpm.model import DiffusionModel
from ddpm.nets import count_parameters

SAMPLER = "dpm++2m_sde"  # what the mnist, cifar10 and latent presets preview and evaluate with
NFE = 20  # the presets' preview_steps: one network evaluation per step for this sampler


def parse_args() -> tuple[argparse.ArgumentParser, Any]:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("latent_run", type=Path, help="a run of ddpm train --latent AE_RUN")
    parser.add_argument("pixel_run", type=Path, help="a run of ddpm train on the same data's pixels")
    parser.add_argument("--n", type=int, help="samples per timed draw (default 1000, --quick 100)")
    parser.add_argument(
        "--nfe", type=int, default=NFE, help=f"network evaluations per sample (default {NFE})"
    )
    parser.add_argument("--sampler", default=SAMPLER, help=f"one sampler for both runs (default {SAMPLER})")
    parser.add_argument("--batch-size", type=int, default=250, help="samples per batch (default 250)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, --quick 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = parser.parse_args()
    if args.n is None:
        args.n = 100 if args.quick else 1000
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    for flag in ("n", "nfe", "batch_size", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be ≥ 1")
    return parser, args


def open_both(parser: argparse.ArgumentParser, args: Any) -> dict[str, OpenedRun]:
    """The two runs, refused in one line unless the first is a latent run and the second a pixel run of
    images of the same shape."""
    runs = {}
    for side, path in (("latent", args.latent_run), ("pixel", args.pixel_run)):
        try:
            runs[side] = open_run(path, device=args.device, images_only=True)
        except (ValueError, FileNotFoundError) as err:  # UsageError and CheckpointError are ValueErrors
            parser.error(f"{side} run: {err}")
        if (runs[side].model.codec is not None) != (side == "latent"):
            other = "a pixel" if side == "latent" else "a latent"
            parser.error(f"{str(path)!r} is {other} run; give the {side} run as the {side}_run argument")
    shapes = {side: tuple(run.model.sample_shape) for side, run in runs.items()}
    if shapes["latent"] != shapes["pixel"]:
        parser.error(f"the runs draw images of shapes {shapes['latent']} (latent) and {shapes['pixel']} "
                   "(pixel); compare runs of the same data")  # fmt: skip
    return runs


def measured_nfe(model: DiffusionModel, flags: SamplerFlags) -> int:
    """Network evaluations per sample, as the sampler counts them (one sample drawn)."""
    [result] = model.sample_with_result(1, **flags.options(), labels=model.default_labels(1), batch_size=1)
    return result.nfe


def drawer(model: DiffusionModel, n: int, flags: SamplerFlags, batch_size: int) -> Callable[[], None]:
    return lambda: draw_for_scoring(model, n, flags, seed=0, batch_size=batch_size)


def paired_speedup(latent: list[float], pixel: list[float]) -> float:
    """Median over rounds of pixel seconds / latent seconds (each round timed both)."""
    return statistics.median(p / q for p, q in zip(pixel, latent, strict=True))


def measure(args: Any, runs: dict[str, OpenedRun], flags: SamplerFlags) -> dict[str, Timing]:
    """Seconds of each run's draw of ``args.n`` samples, ``args.repeats`` rounds, interleaved."""
    contenders = [
        Contender(side, drawer(run.model, args.n, flags, args.batch_size)) for side, run in runs.items()
    ]
    for run in runs.values():  # warm-up: one batch each (allocator, kernels, first-call costs)
        draw_for_scoring(run.model, min(args.n, args.batch_size), flags, seed=0, batch_size=args.batch_size)
    return interleaved(contenders, repeats=args.repeats, warmup=0)


def describe(args: Any, runs: dict[str, OpenedRun], flags: SamplerFlags, nfe: int) -> dict[str, Any]:
    """What was compared: the runs, their shapes and parameters, and the settings of the draw."""
    latent, pixel = runs["latent"].model, runs["pixel"].model
    return {
        "latent_run": str(args.latent_run), "pixel_run": str(args.pixel_run),
        "data": {side: run.config.data.spec if run.config else "?" for side, run in runs.items()},
        "image_shape": list(pixel.sample_shape), "latent_shape": list(latent.space_shape),
        "downsample_factor": latent.codec.downsample_factor,
        "params": {"latent_unet": count_parameters(latent.net), "pixel_unet": count_parameters(pixel.net),
                   "decoder": count_parameters(latent.codec.autoencoder.decoder)},
        "n": args.n, "nfe": nfe, "sampler": args.sampler, "steps": flags.steps, "batch_size": args.batch_size,
        "threads": args.threads, "device": args.device, "repeats": args.repeats,
        # each run's sampler settings: --sampler and its steps, the rest (spacing, eta, ε scaling) its own
        "sampling": {side: dataclasses.asdict(run.model.sampling.with_overrides(**flags.options()))
                     for side, run in runs.items()},
    }  # fmt: skip


def summarise(timings: dict[str, Timing]) -> dict[str, Any]:
    """Raw seconds, their medians, and the paired speed-ups of wall and CPU time."""
    latent, pixel = timings["latent"], timings["pixel"]
    return {
        "seconds": {side: {"wall": t.wall_s, "cpu": t.cpu_s} for side, t in timings.items()},
        "median_s": {side: {"wall": t.wall, "cpu": t.cpu} for side, t in timings.items()},
        "speedup_wall": paired_speedup(latent.wall_s, pixel.wall_s),
        "speedup_cpu": paired_speedup(latent.cpu_s, pixel.cpu_s),
    }


def table(result: dict[str, Any]) -> str:
    seconds = {side: _seconds(Timing(t["wall"], t["cpu"])) for side, t in result["seconds"].items()}
    headers = ["data", "f", "latent", "N", "NFE", "sampler", "batch", "threads", "latent s (wall)",
               "pixel s (wall)", "speed-up (wall)", "speed-up (CPU)"]  # fmt: skip
    row = [
        result["data"]["latent"], result["downsample_factor"], "×".join(map(str, result["latent_shape"])),
        f"{result['n']:,}", result["nfe"], result["sampler"], result["batch_size"], result["threads"],
        seconds["latent"], seconds["pixel"],
        f"{result['speedup_wall']:.2f}×", f"{result['speedup_cpu']:.2f}×",
    ]  # fmt: skip
    return markdown_table(headers, [row])


def _seconds(timing: Timing) -> str:
    """Median wall seconds, with four rounds or more '12.3 ± 4%' (interquartile range / median)."""
    spread = timing.spread(cpu=False)
    return f"{timing.wall:.3g}" if math.isnan(spread) else f"{timing.wall:.3g} ± {spread:.0%}"


def main() -> None:
    parser, args = parse_args()
    setup_threads(args.threads)
    runs = open_both(parser, args)
    flags = SamplerFlags(sampler=args.sampler, steps=steps_for(args.sampler, args.nfe))
    nfe = {side: measured_nfe(run.model, flags) for side, run in runs.items()}
    if nfe["latent"] != nfe["pixel"]:
        parser.error(f"{args.sampler} spends {nfe['latent']} NFE on the latent run and {nfe['pixel']} on the "
                     f"pixel run at {flags.steps} steps; choose a sampler that spends the same")  # fmt: skip
    facts = print_header("Latent against pixel sampling speed, decoding included")
    result = {**describe(args, runs, flags, nfe["latent"]), **summarise(measure(args, runs, flags))}
    print(table(result) + "\n")
    print(f"{args.repeats} timed rounds after a one-batch warm-up, interleaved; medians, speed-up = median "
          "over rounds of pixel s / latent s. CPU = process CPU time.")  # fmt: skip
    write_json(args.json, {**facts, **result})


if __name__ == "__main__":
    main()
