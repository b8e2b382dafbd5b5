"""Sample quality against network evaluations (NFE) for every sampler on one trained model (issue 9).

For each sampler and NFE budget the run's EMA weights draw ``--n`` samples (the same seeds for all), the
package's classifier scores them (FD_classifier, confidence ≥ 0.9) against the test split, and the
sampler's own NFE count is recorded (Heun spends two evaluations per step but one on the last, so
its step count is chosen to land on the budget; budgets it cannot hit exactly use the nearest below).
Prints a markdown table, writes JSON and a plot of FD against NFE.

    python benchmarks/sampler_nfe.py RUN_DIR --n 500 --nfe 10,20,50,100,250,1000 \
        --samplers ddpm,ddim,dpm++2m,dpm++2m_sde,euler,heun,euler_a --out /tmp/sampler_nfe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddpm.eval.evaluate import prepare, score
from ddpm.model import load
from ddpm.train.run import stored_config
from ddpm.viz.curves import plot_quality_vs_steps
from ddpm.viz.figures import save_figure


def steps_for(sampler: str, nfe: int) -> int:
    """Sampler steps that spend ``nfe`` network evaluations (Heun: 2 per step, 1 on the last)."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--nfe", default="10,20,50,100,250,1000")
    parser.add_argument("--samplers", default="ddpm,ddim,dpm++2m,dpm++2m_sde,euler,heun,euler_a")
    parser.add_argument("--max-nfe", default="", help="per-sampler caps, e.g. euler=250,heun=250")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sampler_nfe"))
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="earlier results.json files for the table and plot",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    caps = dict(item.split("=") for item in args.max_nfe.split(",") if item)
    model = load(args.run)
    data = stored_config(args.run).data.spec
    evaluation = prepare(data, args.n, metrics=["fd", "confidence", "coverage"], progress=False)
    rows = []
    for sampler in args.samplers.split(","):
        for nfe in (int(v) for v in args.nfe.split(",")):
            if nfe > int(caps.get(sampler, 10**9)):
                continue
            started = time.perf_counter()
            results = model.sample_with_result(args.n, sampler=sampler, steps=steps_for(sampler, nfe), seed=0)
            seconds = time.perf_counter() - started
            metrics = score(evaluation, torch.cat([r.samples for r in results]))
            row = {
                "sampler": sampler, "nfe_budget": nfe, "nfe": results[0].nfe, "seconds": round(seconds, 1),
                "fd": metrics["fd_classifier"], "confident": metrics["confidence"],
                "classes": round(metrics["class_coverage"] * 10),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            summary = {"run": str(args.run), "n": args.n, "rows": rows}
            (args.out / "results.json").write_text(json.dumps(summary))

    for earlier in args.merge:  # rows of earlier runs on the same model and seeds join the table and plot
        rows += [row for row in json.loads(earlier.read_text())["rows"] if row not in rows]
    print(f"\n{args.run} (step {model.step}), n = {args.n}, seed 0\n")
    print_table(rows)
    fig = plot_fd_vs_nfe(rows)
    print(save_figure(fig, args.out / "fd_vs_nfe.png"))


def print_table(rows: list[dict]) -> None:
    """Markdown: one row per sampler, FD (confident share) per NFE budget."""
    budgets = sorted({r["nfe_budget"] for r in rows})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    print("| sampler | " + " | ".join(f"NFE {v}" for v in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for sampler in samplers:
        cells = {r["nfe_budget"]: r for r in rows if r["sampler"] == sampler}
        text = [f"{cells[v]['fd']:.2f} ({cells[v]['confident']:.2f})" if v in cells else "—" for v in budgets]
        print(f"| {sampler} | " + " | ".join(text) + " |")


def plot_fd_vs_nfe(rows: list[dict]):
    """FD against NFE per sampler (log-log), with the line 1.1 × the 1,000-step ancestral FD."""
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    curves = {s: {r["nfe"]: r["fd"] for r in rows if r["sampler"] == s} for s in samplers}
    fig = plot_quality_vs_steps(curves, metric="FD_classifier (lower is better)")
    ax = fig.axes[0]
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_yscale("log")
    reference = curves.get("ddpm", {}).get(1000)
    if reference is not None:
        ax.axhline(1.1 * reference, color="grey", linestyle="--", linewidth=1)
        ax.text(10, 1.13 * reference, "1.1 × ancestral, 1,000 steps", fontsize=8, color="grey")
    return fig


if __name__ == "__main__":
    main()
