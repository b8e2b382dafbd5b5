"""Sampling throughput (network evaluations per second, no autograd) of our U-Net against diffusers'
UNet2DModel with the identical architecture, and lucidrains' nearest Unet, interleaved (issue 6).

A run is a whole DDIM sampling loop of --steps steps for a batch, as each package samples:
ours as ddpm.model does (ddim_sample under torch.inference_mode, the net as build_net makes it),
diffusers as DDIMPipeline.__call__ (torch.no_grad, scheduler.step), diffusers given our tricks
(channels_last, inference_mode), lucidrains as GaussianDiffusion.sample with DDIM steps.
NFE/s counts one network evaluation per image per step.

    python benchmarks/sampling_throughput.py [--quick] [--threads N] [--steps S]
"""

from __future__ import annotations

from common import (
    LUCID_PYTHON,
    WORKLOADS,
    Contender,
    SubprocessContender,
    base_parser,
    check_same_size,
    diffusers_sampler,
    interleaved,
    lucid_available,
    markdown_table,
    net_gflop,
    ours_sampler,
    preset,
    print_header,
    setup_threads,
    write_json,
)

from ddpm.nets import count_parameters


def measure(name: str, batch: int, steps: int, repeats: int, threads: int, lucid: bool) -> dict:
    config = preset(name)
    runs = {
        "ours": ours_sampler(config, batch, steps),
        "ours, channels_last": ours_sampler(config, batch, steps, channels_last=True),
        "diffusers (DDIMPipeline)": diffusers_sampler(config, batch, steps),
        "diffusers + our tricks": diffusers_sampler(config, batch, steps, tricks=True),
    }
    check_same_size(runs["ours"].model, runs["diffusers (DDIMPipeline)"].model)
    contenders = [Contender(label, run) for label, run in runs.items()]
    params = {label: count_parameters(run.model) for label, run in runs.items()}
    gflop = {
        label: steps * net_gflop(run.model, config, batch, backward=False) for label, run in runs.items()
    }
    if lucid:
        args = ["--net", name, "--mode", "sample", "--batch", str(batch), "--steps", str(steps)]
        worker = SubprocessContender("lucidrains (nearest config)", LUCID_PYTHON, args, threads)
        contenders.append(worker)
        params[worker.name] = worker.info["params"]
        gflop[worker.name] = worker.info["gflop_per_run"]
    try:
        timings = interleaved(contenders, repeats=repeats, warmup=1)
    finally:
        for contender in contenders:
            contender.close()
    return {"net": name, "batch": batch, "steps": steps, "params": params, "gflop": gflop, "timings": timings}


def table(result: dict) -> str:
    timings, nfe = result["timings"], result["batch"] * result["steps"]
    ref = timings["diffusers (DDIMPipeline)"]
    rows = [
        [
            label, f"{result['params'][label]:,}", nfe / t.wall, nfe / t.cpu, result["gflop"][label] / t.cpu,
            ref.wall / t.wall, ref.cpu / t.cpu, t.summary(),
        ]
        for label, t in timings.items()
    ]  # fmt: skip
    headers = [
        "contender", "params", "NFE/s (wall)", "NFE/s (CPU)", "GFLOP/s (CPU)", "× diffusers (wall)",
        "× diffusers (CPU)", "CPU ms/run (median ± IQR)",
    ]  # fmt: skip
    title = f"**{result['net']}**, batch {result['batch']}, DDIM {result['steps']} steps, fp32"
    return title + "\n\n" + markdown_table(headers, rows)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--steps", type=int, help="DDIM steps per run (default 10, --quick 2)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 5, --quick 2)")
    args = parser.parse_args()
    setup_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    steps = args.steps or (2 if args.quick else 10)
    print_header("Sampling throughput")
    lucid_missing = lucid_available()
    if lucid_missing:
        print(f"lucidrains skipped: {lucid_missing}\n")
    results = []
    for name in args.nets:
        batch = WORKLOADS[name] // (4 if args.quick else 1)
        result = measure(name, batch, steps, repeats, args.threads, lucid=lucid_missing is None)
        print(table(result) + "\n", flush=True)
        results.append(result)
    print(f"{repeats} timed rounds after 1 warm-up round, interleaved; medians. CPU = process CPU time.")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
