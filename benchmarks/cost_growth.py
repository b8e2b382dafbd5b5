"""How cost grows (issue 6): training-step time against image size (8, 16, 32, 64) and batch size, and
sampling time against the number of DDIM steps, for our U-Net; plots in docs/benchmarks/.

The net is the `mnist` preset's architecture (3 levels, attention at the lowest), which takes any size
divisible by 4; its FLOPs grow with the pixel count, its attention with the square of it.

    python benchmarks/cost_growth.py [--quick] [--threads N] [--plots docs/benchmarks]
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import (
    REPO,
    Contender,
    Timing,
    base_parser,
    interleaved,
    markdown_table,
    ours_sampler,
    ours_train_step,
    preset,
    print_header,
    setup_threads,
    write_json,
)


def config_for(size: int):
    """The mnist architecture built for ``size``×``size`` images (attention stays at the lowest level)."""
    return preset("mnist", image_size=size, attention_resolutions=(size // 4,))


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: cost ∝ x^slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def sweep(labels: list, make, repeats: int) -> dict:
    contenders = [Contender(str(label), make(label)) for label in labels]
    timings = interleaved(contenders, repeats=repeats, warmup=1)
    return {label: timings[str(label)] for label in labels}


def plot(
    path: Path, xs: list, timings: dict[object, Timing], xlabel: str, title: str, per: list | None
) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    cpu = [timings[x].cpu * 1e3 for x in xs]
    wall = [timings[x].wall * 1e3 for x in xs]
    ax.plot(xs, cpu, "o-", label="CPU time")
    ax.plot(xs, wall, "s--", alpha=0.6, label="wall time")
    if per is not None:
        ax.plot(xs, [c / p for c, p in zip(cpu, per, strict=True)], "^:", label="CPU time per image")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("milliseconds")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--plots", type=Path, default=REPO / "docs" / "benchmarks", help="folder for the PNGs"
    )
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, --quick 1)")
    args = parser.parse_args()
    setup_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    print_header("Cost growth")
    sizes = [8, 16, 32] if args.quick else [8, 16, 32, 64]
    batches = [1, 4, 16] if args.quick else [1, 4, 16, 64]
    sample_steps = [1, 2, 4] if args.quick else [1, 5, 10, 20, 50]
    size_batch, sample_batch = (4, 4) if args.quick else (16, 16)

    by_size = sweep(sizes, lambda s: ours_train_step(config_for(s), size_batch), repeats)
    by_batch = sweep(batches, lambda b: ours_train_step(preset("mnist"), b), repeats)
    by_steps = sweep(sample_steps, lambda n: ours_sampler(preset("mnist"), sample_batch, n), repeats)

    def rows(timings: dict[int, Timing], per: int | None) -> list[list]:
        """x, CPU ms, wall ms, CPU ms divided by ``per`` (or by x itself when per is None)."""
        return [[x, t.cpu * 1e3, t.wall * 1e3, t.cpu * 1e3 / (per or x)] for x, t in timings.items()]

    print(f"**Training step against image size** (mnist architecture, batch {size_batch})\n")
    print(markdown_table(["size", "ms CPU", "ms wall", "ms CPU / image"], rows(by_size, size_batch)))
    slope = loglog_slope([s * s for s in sizes], [t.cpu for t in by_size.values()])
    print(f"\nCPU time ∝ pixels^{slope:.2f} over {sizes[0]}..{sizes[-1]} px\n")
    print("**Training step against batch size** (mnist, 28×28)\n")
    print(markdown_table(["batch", "ms CPU", "ms wall", "ms CPU / image"], rows(by_batch, None)))
    slope = loglog_slope(batches, [t.cpu for t in by_batch.values()])
    print(f"\nCPU time ∝ batch^{slope:.2f}\n")
    print(f"**DDIM sampling against steps** (mnist, 28×28, batch {sample_batch})\n")
    print(markdown_table(["steps", "ms CPU", "ms wall", "ms CPU / step"], rows(by_steps, None)))
    slope = loglog_slope(sample_steps, [t.cpu for t in by_steps.values()])
    print(f"\nCPU time ∝ steps^{slope:.2f}\n")

    plot(args.plots / "cost_vs_image_size.png", sizes, by_size, "image size (pixels per side)",
         f"Training step, mnist U-Net, batch {size_batch}", None)  # fmt: skip
    plot(args.plots / "cost_vs_batch.png", batches, by_batch, "batch size",
         "Training step, mnist U-Net, 28×28", batches)  # fmt: skip
    plot(args.plots / "sampling_vs_steps.png", sample_steps, by_steps, "DDIM steps",
         f"Sampling, mnist U-Net, batch {sample_batch}", None)  # fmt: skip
    print(f"Plots: {args.plots}/cost_vs_image_size.png, cost_vs_batch.png, sampling_vs_steps.png")
    print(f"{repeats} timed round(s) after 1 warm-up round, interleaved; medians.")
    write_json(args.json, {"by_size": by_size, "by_batch": by_batch, "by_steps": by_steps})


if __name__ == "__main__":
    main()
