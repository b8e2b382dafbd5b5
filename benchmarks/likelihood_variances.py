"""Likelihood and learned variances (issue 24): L_simple against L_hybrid at the same budget.

Trains the data set's preset twice with the same steps and batch — once as it is (L_simple, fixed
variances) and once with ``diffusion.learn_variance=true`` and ``diffusion.loss=hybrid`` (Improved DDPM's
L_simple + 0.001 L_vlb) — then measures both with the CLI: bits/dim on the test split (``ddpm eval
--nll``) and FD_classifier of the ancestral sampler at 10, 25, 50, 100 and 1000 steps (``ddpm eval
--sampler ddpm --steps S``). In process, with the same seeds, features and scoring as ``ddpm eval``: the
learned-variance model with its variance ignored (σ² = β or β̃) and the fixed model with σ² = β̃, and the
CPU cost of one training step of each objective (interleaved, so load from other processes falls on both).

    python benchmarks/likelihood_variances.py --data digits --out /tmp/lv
    python benchmarks/likelihood_variances.py --data mnist:/work/shared/data/mnist --preset mnist \\
        --time 15m --n 1000 --nll-n 1000 --nll-terms 100 --out /tmp/lv-mnist

Stages (``--stages``): train, nll, fd, extra, step-cost; results accumulate in OUT/results.json, so a stage
can be rerun alone. Prints markdown tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import Contender, interleaved, machine_facts, markdown_table
from torch import nn

from ddpm.command_support import open_run, prepare_real
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import ancestral_sample, sample_seeds
from ddpm.eval import score
from ddpm.train.config import TrainConfig
from ddpm.train.distributed import DistContext, batch_plan
from ddpm.train.objective import build_loss
from ddpm.train.presets import get_preset, preset_for_data
from ddpm.train.step import accumulate_gradients, draw_step

MODELS = {
    "simple": [],  # the preset itself: L_simple, fixed variances
    "hybrid": ["--set", "diffusion.learn_variance=true", "--set", "diffusion.loss=hybrid"],
}
STEPS = (10, 25, 50, 100, 1000)
ENV = dict(os.environ)  # of the ddpm eval processes; --threads sets their OMP_NUM_THREADS


def ddpm(*args: str) -> tuple[float, float, str]:
    """Run ``ddpm ARGS`` (this interpreter); returns (wall s, children's CPU s, stdout). Fails loudly."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ddpm", *args], capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"ddpm {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def train(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Both runs; with ``--parallel`` at the same time (each then meets the same load from other
    processes, so their wall times compare), else one after the other."""
    budget = ["--time", args.time] if args.time else (["--steps", str(args.steps)] if args.steps else [])
    threads = ["--set", f"run.num_threads={args.threads}"] if args.threads else []
    commands = {
        name: ["train", "--data", args.data, "--preset", args.preset, "--seed", "0", "--out",
               str(args.out / name), *budget, *extra, *threads, "--overwrite"]
        for name, extra in MODELS.items()
    }  # fmt: skip
    load_before = list(os.getloadavg())
    if args.parallel:
        processes = {name: _start(command) for name, command in commands.items()}
        times = {name: _finish(*process) for name, process in processes.items()}
    else:
        times = {name: _finish(*_start(command)) for name, command in commands.items()}
    for name, command in commands.items():
        log = [json.loads(line) for line in (args.out / name / "log.jsonl").read_text().splitlines()]
        results.setdefault("train", {})[name] = {
            "command": "ddpm " + " ".join(command), "wall_s": times[name][0], "cpu_s": times[name][1],
            "steps": log[-1]["step"], "train_time_s": log[-1]["time_s"], "final_loss": log[-1]["loss"],
            "parallel": args.parallel, "load_before": load_before, "load_after": list(os.getloadavg()),
        }  # fmt: skip
        print(f"trained {name}: {log[-1]['step']} steps, {log[-1]['time_s']:.0f} s of training", flush=True)


def _start(command: list[str]) -> tuple[subprocess.Popen, float, list[str]]:
    """Start ``ddpm COMMAND``, its output going to ``<--out>.log`` beside the run directory."""
    out = Path(command[command.index("--out") + 1])
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "ddpm", *command], stdout=log, stderr=log)
    return process, time.perf_counter(), command


def _finish(process: subprocess.Popen, start: float, command: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of a started ``ddpm`` process, once it has ended (CPU time from /proc is not
    available after it exits, so it is read from wait4's resource usage)."""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        log = Path(command[command.index("--out") + 1]).with_suffix(".log")
        raise SystemExit(f"ddpm {' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def nll(args: argparse.Namespace, results: dict[str, Any]) -> None:
    cases = [("simple", []), ("simple-beta_tilde", ["--nll-variance", "beta_tilde"]), ("hybrid", [])]
    terms = ["--nll-terms", str(args.nll_terms)] if args.nll_terms else []
    for name, extra in cases:
        out = args.out / f"nll-{name}.json"
        command = ["eval", str(args.out / name.split("-")[0]), "--nll", "--n", str(args.nll_n), *terms,
                   *extra, "--json", str(out)]  # fmt: skip
        wall, _, _ = ddpm(*command)
        report = json.loads(out.read_text())["nll"]
        results.setdefault("nll", {})[name] = {
            **report,
            "command": "ddpm " + " ".join(command),
            "wall_s": wall,
        }
        print(f"nll {name}: {report['bits_per_dim']:.4f} bits/dim ({wall:.0f} s)", flush=True)


def fd(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``ddpm eval --sampler ddpm --steps S --seed k``: one sample set per seed k (``--fd-seeds``)."""
    for name in MODELS:
        for steps in args.fd_steps:
            for seed in args.fd_seeds:
                out = args.out / f"fd-{name}-{steps}-seed{seed}.json"
                command = ["eval", str(args.out / name), "--n", str(args.n), "--sampler", "ddpm", "--steps",
                           str(steps), "--seed", str(seed), "--json", str(out)]  # fmt: skip
                wall = ddpm(*command)[0] if not out.exists() else None  # a report made before is kept
                metrics = {**json.loads(out.read_text())["metrics"], "wall_s": wall}
                _record(results, name, steps, seed, metrics)


class FirstChannels(nn.Module):
    """A learned-variance network with its variance channels dropped: the prediction alone."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.net(x_t, t, **cond)[:, : self.channels]


def extra(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The ancestral sampler at fixed σ² = β or β̃ for both models (the hybrid one's variance ignored),
    scored exactly as ``ddpm eval`` scores (same seeds, batches of 256, features, metric seed)."""
    # simple-beta repeats ``ddpm eval``'s own numbers: a check that this path scores as the CLI does
    for name, variance in (("simple", "beta"), ("simple", "beta_tilde"), ("hybrid", "beta"),
                           ("hybrid", "beta_tilde")):  # fmt: skip
        opened = open_run(args.out / name, device="cpu")
        model = opened.model
        net = model.net if name == "simple" else FirstChannels(model.net, model.sample_shape[0])
        denoiser = Parameterized(net, model.schedule, model.parameterization, clip_x0=1.0)
        evaluation = prepare_real(opened.config.data.spec, args.n, run_data=opened.config.data,
                                  device=torch.device("cpu"))  # fmt: skip
        key = f"{name}-ignored-{variance}" if name == "hybrid" else f"{name}-{variance}"
        check = (name, variance) == ("simple", "beta")  # the check needs a few cheap cases only
        steps_list = [s for s in args.fd_steps if s <= 100] if check else args.fd_steps
        for steps, seed in itertools.product(steps_list, [0] if check else args.extra_seeds):
            seeds = sample_seeds(seed, args.n)
            with torch.inference_mode():
                samples = torch.cat([
                    ancestral_sample(denoiser, model.schedule, (len(seeds[i : i + 256]), *model.sample_shape),
                                     steps=steps, variance=variance, seeds=seeds[i : i + 256]).samples
                    for i in range(0, args.n, 256)
                ])  # fmt: skip
            _record(results, key, steps, seed, score(evaluation, samples, batch_size=256, seed=seed))


def _record(results: dict[str, Any], name: str, steps: int, seed: int, metrics: dict[str, float]) -> None:
    results.setdefault("fd", {}).setdefault(name, {}).setdefault(str(steps), {})[str(seed)] = metrics
    print(f"fd {name} {steps} steps seed {seed}: {metrics['fd_classifier']:.4f}", flush=True)


def step_cost(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """CPU and wall seconds of one training step (forward, backward) of each objective, interleaved."""
    from ddpm.nets import build_net
    from ddpm.train.data_order import EpochOrder
    from ddpm.train.run import resolve_for_data
    from ddpm.train.run_data import load_data

    contenders = []
    for name, extra_flags in MODELS.items():
        config = _config(args, extra_flags)
        dataset = load_data(config)
        config = resolve_for_data(config, dataset)
        torch.manual_seed(0)
        net = build_net(config.model).to(memory_format=torch.channels_last)
        loss_fn = build_loss(config.diffusion, _schedule(config), dataset.kind)
        order, ctx = (
            EpochOrder(len(dataset), config.run.batch_size, 0),
            DistContext(device=torch.device("cpu")),
        )
        plan = batch_plan(config.run.batch_size, 1, 0, 0)

        def step(net=net, loss_fn=loss_fn, config=config, dataset=dataset, order=order, plan=plan, ctx=ctx):
            draws = draw_step(config, order, 0, dataset, config.diffusion.num_steps, ctx.device)
            net.zero_grad(set_to_none=True)
            accumulate_gradients(net, loss_fn, dataset, draws, config, 0, plan, ctx, "fp32")

        contenders.append(Contender(name, step))
    timings = interleaved(contenders, repeats=args.repeats, warmup=2)
    results["step_cost"] = {name: {"cpu_s": t.cpu, "wall_s": t.wall, "cpu_spread": t.spread()}
                            for name, t in timings.items()}  # fmt: skip
    for name, t in timings.items():
        print(f"step {name}: {t.cpu * 1e3:.0f} ms CPU, {t.wall * 1e3:.0f} ms wall", flush=True)


def _config(args: argparse.Namespace, extra_flags: list[str]) -> TrainConfig:
    from ddpm.configio import apply_override, parse_override
    from ddpm.train.config import config_from_dict, config_to_dict

    data = config_to_dict(get_preset(args.preset))
    data["data"]["spec"] = args.data
    for flag, assignment in zip(extra_flags[::2], extra_flags[1::2], strict=True):
        assert flag == "--set"
        apply_override(data, *parse_override(assignment))
    return config_from_dict(data)


def _schedule(config: TrainConfig):
    from ddpm.diffusion import make_schedule

    return make_schedule(config.diffusion.schedule, config.diffusion.num_steps)


def tables(results: dict[str, Any]) -> str:
    lines = []
    if "train" in results:
        rows = [[name, r["steps"], f"{r['train_time_s']:.0f}", f"{r['cpu_s']:.0f}", f"{r['final_loss']:.4f}"]
                for name, r in results["train"].items()]  # fmt: skip
        lines += [markdown_table(["model", "steps", "training s (wall)", "CPU s (all of ddpm train)",
                                  "last logged loss"], rows), ""]  # fmt: skip
    if "nll" in results:
        rows = [[name, f"{r['bits_per_dim']:.4f} ± {r['bits_per_dim_sem']:.4f}", r["n"],
                 "exact" if r["exact"] else f"estimate ({r['terms_evaluated']} terms)", r["variance"],
                 f"{r['prior_bpd']:.2g}", f"{r['decoder_bpd']:.4f}", f"{r['kl_bpd']:.4f}"]
                for name, r in results["nll"].items()]  # fmt: skip
        lines += [markdown_table(["model", "bits/dim", "images", "bound", "Σ", "L_T", "L_0", "Σ L_1..L_999"],
                                 rows), ""]  # fmt: skip
    if "fd" in results:
        rows = [[name, *(_fd_cell(per_steps.get(str(s))) for s in STEPS), _ratio(per_steps)]
                for name, per_steps in results["fd"].items()]  # fmt: skip
        headers = ["ancestral sampler", *(f"{s} steps" for s in STEPS), "FD 50 / FD 1000"]
        lines += [markdown_table(headers, rows), ""]
    if "step_cost" in results:
        rows = [[name, f"{r['cpu_s'] * 1e3:.0f}", f"{r['wall_s'] * 1e3:.0f}", f"{r['cpu_spread']:.0%}"]
                for name, r in results["step_cost"].items()]  # fmt: skip
        lines += [markdown_table(["objective", "CPU ms / step", "wall ms / step", "CPU IQR"], rows), ""]
    return "\n".join(lines)


def _fd_cell(sets: dict[str, dict[str, float]] | None) -> str:
    """FD_classifier mean ± std over the sample sets (confident share), or — where not measured."""
    if not sets:
        return "—"
    fds = [m["fd_classifier"] for m in sets.values()]
    spread = f" ± {statistics.stdev(fds):.3f}" if len(fds) > 1 else ""
    confident = statistics.mean(m["confidence"] for m in sets.values())
    return f"{statistics.mean(fds):.3f}{spread} ({confident:.0%})"


def _ratio(per_steps: dict[str, Any]) -> str:
    """Mean FD at 50 steps over mean FD at 1000 (paired by seed where both exist)."""
    a, b = per_steps.get("50", {}), per_steps.get("1000", {})
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "—"
    ratio = statistics.mean(a[k]["fd_classifier"] for k in seeds) / statistics.mean(
        b[k]["fd_classifier"] for k in seeds)  # fmt: skip
    return f"{ratio:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--preset", help="default: the data set's own")
    parser.add_argument("--steps", type=int, help="training steps of both runs (default: the preset's)")
    parser.add_argument("--time", help="training time budget of each run instead, e.g. 15m")
    parser.add_argument("--n", type=int, default=297, help="samples per FD_classifier (default 297)")
    parser.add_argument("--nll-n", type=int, default=297, help="test images for bits/dim (default 297)")
    parser.add_argument("--nll-terms", type=int, help="estimate bits/dim from K terms (default: all T)")
    parser.add_argument("--parallel", action="store_true", help="train both runs at the same time")
    parser.add_argument(
        "--threads",
        type=int,
        help="threads of each training run (run.num_threads), each "
        "evaluation (OMP_NUM_THREADS) and of this process",
    )
    parser.add_argument("--fd-steps", type=int, nargs="+", default=list(STEPS), help="ancestral steps")
    parser.add_argument("--fd-seeds", type=int, nargs="+", default=[0], help="one sample set per seed")
    parser.add_argument("--extra-seeds", type=int, nargs="+", default=[0], help="sample sets of 'extra'")
    parser.add_argument("--results", type=Path, help="results file (default OUT/results.json)")
    parser.add_argument("--repeats", type=int, default=20, help="timed training steps per objective")
    parser.add_argument("--stages", nargs="+", default=["train", "nll", "fd", "extra", "step-cost"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.preset = args.preset or preset_for_data(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        ENV["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    path = args.results or args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("machine", []).append(machine_facts())
    stages = {"train": train, "nll": nll, "fd": fd, "extra": extra, "step-cost": step_cost}
    for stage in args.stages:
        stages[stage](args, results)
        path.write_text(json.dumps(results, indent=1, default=str))
    print(tables(results))


if __name__ == "__main__":
    main()
