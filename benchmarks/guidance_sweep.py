"""Per-class accuracy and FD_classifier against the classifier-free guidance scale s.

For a class-conditional run (e.g. `ddpm train --data mnist --set data.class_conditional=true`):
samples N images per class at each s, labels them with the evaluation classifier (ddpm.eval.classifier,
trained and cached on first use), and compares their penultimate features with the test split's
(Fréchet distance). Writes sweep.json, a Markdown table for RESULTS.md, a guidance-sweep strip and a
class-by-seed grid at each s.

The scale is diffusers' guidance_scale (``ddpm.diffusion.guidance``): s = 0 is the unconditional model,
s = 1 the plain conditional one, s > 1 guided; Ho & Salimans' w (eq. 6) is s − 1.

    python benchmarks/guidance_sweep.py runs/mnist-cond --data mnist --scales 0 1 1.5 2 3 4 6 \
        --n-per-class 100 --steps 50 --out-dir results/guidance
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddpm import editing
from ddpm.data import load_dataset
from ddpm.eval.classifier import load_or_train_classifier
from ddpm.eval.metrics import frechet_distance
from ddpm.model import load
from ddpm.viz.editing import class_grid_figure, guidance_sweep_figure
from ddpm.viz.figures import save_figure


def features_and_logits(
    classifier, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [classifier(batch) for batch in images.split(batch_size)]
    return torch.cat([f for f, _ in parts]), torch.cat([logit for _, logit in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument(
        "--data", default="mnist", help="the run's labelled data set (classifier and FD reference)"
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0],
        help="guidance scales s (0 = unconditional, 1 = conditional)",
    )
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="guidance_sweep")
    parser.add_argument(
        "--cache-dir", default=None, help="where the classifier is cached (default: data root)"
    )
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load(args.run_dir)
    classifier = load_or_train_classifier(args.data, cache_dir=args.cache_dir, progress=True).model
    test = load_dataset(args.data, split="test")
    with torch.inference_mode():
        reference, _ = features_and_logits(classifier, test.batch(torch.arange(len(test))))
    rows = []
    for s in args.scales:
        start = time.perf_counter()
        images, labels = editing.sample_classes(
            model, "all", guidance=s, n_per_class=args.n_per_class, sampler="ddim", steps=args.steps,
            seed=args.seed,
        )  # DDIM, as the recorded figures were drawn (the run's own sampler is the library default now)
        with torch.inference_mode():
            feats, logits = features_and_logits(classifier, images)
        correct = logits.argmax(1) == labels
        per_class = [float(correct[labels == k].float().mean()) for k in range(model.num_classes)]
        row = {
            "s": s,
            "accuracy": float(correct.float().mean()),
            "per_class_accuracy": per_class,
            "fd_classifier": frechet_distance(feats, reference),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"s={s:g}: accuracy {row['accuracy']:.3f}, FD_classifier {row['fd_classifier']:.2f}, "
              f"{row['seconds']:.0f}s", flush=True)  # fmt: skip
        grid_n = min(args.n_per_class, 8)
        grid = images.reshape(model.num_classes, args.n_per_class, *images.shape[1:])[:, :grid_n]
        grid_labels = labels[:: args.n_per_class].repeat_interleave(grid_n)
        figure = class_grid_figure(grid.reshape(-1, *images.shape[1:]), grid_labels, grid_n)
        save_figure(figure, out_dir / f"classes_s{s:g}.png")
    for label in (0, model.num_classes // 2):
        sweep = editing.guidance_sweep(
            model, label, args.scales, n=8, seed=args.seed, sampler="ddim", steps=args.steps
        )
        save_figure(guidance_sweep_figure(sweep, args.scales), out_dir / f"sweep_class{label}.png")

    summary = {"run": str(args.run_dir), "data": args.data, "steps": args.steps, "rows": rows}
    (out_dir / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    header = "| s | accuracy | FD_classifier | " + " | ".join(str(k) for k in range(model.num_classes)) + " |"
    lines = [header, "|" + "---|" * (3 + model.num_classes)]
    for row in rows:
        per_class = " | ".join(f"{a:.2f}" for a in row["per_class_accuracy"])
        lines.append(f"| {row['s']:g} | {row['accuracy']:.3f} | {row['fd_classifier']:.2f} | {per_class} |")
    (out_dir / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
