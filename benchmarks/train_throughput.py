"""Training throughput (images/s of whole optimizer steps) of our U-Net against diffusers' UNet2DModel
with the identical architecture, and lucidrains' nearest Unet, interleaved in one run (issue 6).

A step is forward + backward + optimizer + EMA, each contender as its own training code runs it:
ours as ddpm.train.loop (channels_last, foreach AdamW and clipping, foreach EMA), diffusers as its
train_unconditional example (NCHW, for-loop AdamW, EMAModel) and diffusers given our tricks
(channels_last, foreach everywhere), lucidrains as its Trainer (Adam, EMA every 10 steps).
Two extra rows (not part of the fp32 comparison) run ours and diffusers under CPU bf16 autocast.

    python benchmarks/train_throughput.py [--quick] [--threads N] [--nets ddpm-cifar10 mnist]
"""

from __future__ import annotations

import torch
from common import (
    LUCID_PYTHON,
    WORKLOADS,
    Contender,
    SubprocessContender,
    base_parser,
    check_same_size,
    diffusers_train_step,
    interleaved,
    lucid_available,
    markdown_table,
    net_gflop,
    ours_train_step,
    preset,
    print_header,
    setup_threads,
    write_json,
)

from ddpm.nets import count_parameters


def measure(name: str, batch: int, repeats: int, threads: int, lucid: bool, bf16: bool) -> dict:
    config = preset(name)
    steps = {
        "ours": ours_train_step(config, batch),
        "ours NCHW": ours_train_step(config, batch, channels_last=False),
        "diffusers (its example)": diffusers_train_step(config, batch),
        "diffusers + our tricks": diffusers_train_step(config, batch, tricks=True),
    }
    if bf16:  # not part of the fp32 comparison: both under CPU bfloat16 autocast
        steps["ours, bf16 autocast"] = ours_train_step(config, batch, amp=torch.bfloat16)
        steps["diffusers + tricks, bf16 autocast"] = diffusers_train_step(
            config, batch, tricks=True, amp=torch.bfloat16
        )
    check_same_size(steps["ours"].model, steps["diffusers (its example)"].model)
    contenders = [Contender(label, step) for label, step in steps.items()]
    params = {label: count_parameters(step.model) for label, step in steps.items()}
    gflop = {label: net_gflop(step.model, config, batch, backward=True) for label, step in steps.items()}
    if lucid:
        args = ["--net", name, "--mode", "train", "--batch", str(batch)]
        worker = SubprocessContender("lucidrains (nearest config)", LUCID_PYTHON, args, threads)
        contenders.append(worker)
        params[worker.name] = worker.info["params"]
        gflop[worker.name] = worker.info["gflop_per_run"]
    try:
        timings = interleaved(contenders, repeats=repeats, warmup=1)
    finally:
        for contender in contenders:
            contender.close()
    return {"net": name, "batch": batch, "params": params, "gflop": gflop, "timings": timings}


def table(result: dict) -> str:
    timings, batch = result["timings"], result["batch"]
    ref_example, ref_tricks = timings["diffusers (its example)"], timings["diffusers + our tricks"]
    rows = []
    for label, timing in timings.items():
        rows.append([
            label, f"{result['params'][label]:,}", batch / timing.wall, batch / timing.cpu,
            result["gflop"][label] / timing.cpu,
            ref_example.wall / timing.wall, ref_example.cpu / timing.cpu,
            ref_tricks.wall / timing.wall, ref_tricks.cpu / timing.cpu,
            timing.summary(),
        ])  # fmt: skip
    headers = [
        "contender", "params", "img/s (wall)", "img/s (CPU)", "GFLOP/s (CPU)", "× diffusers example (wall)",
        "× diffusers example (CPU)", "× diffusers+tricks (wall)", "× diffusers+tricks (CPU)",
        "CPU ms/step (median ± IQR)",
    ]  # fmt: skip
    return f"**{result['net']}**, batch {batch}, fp32\n\n" + markdown_table(headers, rows)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, --quick 2)")
    parser.add_argument("--no-bf16", action="store_true", help="leave out the bf16-autocast rows")
    args = parser.parse_args()
    setup_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    print_header("Training throughput")
    lucid_missing = lucid_available()
    if lucid_missing:
        print(f"lucidrains skipped: {lucid_missing}\n")
    results = []
    for name in args.nets:
        batch = WORKLOADS[name] // (4 if args.quick else 1)
        result = measure(
            name, batch, repeats, args.threads, lucid=lucid_missing is None, bf16=not args.no_bf16
        )
        print(table(result) + "\n", flush=True)
        results.append(result)
    print(f"{repeats} timed rounds after 1 warm-up round, interleaved; medians. CPU = process CPU time.")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
