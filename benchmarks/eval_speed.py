"""Time to evaluate 1k and 10k samples per data set: the one-off cost and the per-evaluation cost.

For each data set and n, with a fresh cache folder:
- setup: training the classifier (first row of a data set; later rows load it from the cache) and
  extracting the n real reference features, paid once per machine and cached (`prepare`);
- evaluation: scoring n samples against the cached reference (`score`), what every `ddpm eval` and
  every evaluation during training pays; split into feature extraction and each metric.
Samples are real train images (the time does not depend on what the images show).

Inception (CIFAR-10, photo folders) cannot run with real weights here (no download); its arithmetic
does not depend on the weight values, so the forward pass is timed with random weights on a few
batches and scaled to n, and the metrics are timed on random 2048-d features at the full n.

    python benchmarks/eval_speed.py [--sizes 1000 10000] [--data digits mnist:DIR swissroll inception]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import base_parser, markdown_table, print_header, setup_threads, write_json

from ddpm.data import load_dataset
from ddpm.eval.classifier import load_or_train_classifier
from ddpm.eval.evaluate import prepare, score
from ddpm.eval.features import default_feature_kind, extract_features
from ddpm.eval.inception import FIDInceptionV3
from ddpm.eval.metrics import (
    feature_statistics,
    frechet_distance_from_stats,
    kernel_inception_distance,
    precision_recall,
)
from ddpm.eval.reference import subset_index

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_dataset(spec: str, n: int, split: str, cache: Path) -> dict[str, Any]:
    classifier_wall: float | str = "-"
    if default_feature_kind(spec, load_dataset(spec, split="test").kind) == "classifier":
        # trained on the first call of a run, loaded from the cache afterwards
        _, classifier_wall, _ = timed(lambda: load_or_train_classifier(spec, cache_dir=cache))
    evaluation, setup_wall, setup_cpu = timed(lambda: prepare(spec, n, split=split, cache_dir=cache))
    train = load_dataset(spec, split="train")
    samples = train.batch(subset_index(len(train), n, seed=1))
    result, eval_wall, eval_cpu = timed(lambda: score(evaluation, samples))
    _, feats_wall, _ = timed(lambda: extract_features(evaluation.net, lambda rows: samples[rows], n))
    return {
        "data": spec.split(":")[0],
        "n": n,
        "reference split": split,
        "features": evaluation.net.kind,
        "classifier s": classifier_wall,
        "reference s (wall)": setup_wall,
        "reference s (cpu)": setup_cpu,
        "eval s (wall)": eval_wall,
        "eval s (cpu)": eval_cpu,
        "of which features s": feats_wall,
        "fd": result.get("fd_classifier", result.get("fd_coords")),
    }


def bench_inception(n: int, probe_images: int = 32) -> dict[str, Any]:
    net = FIDInceptionV3().eval()
    images = torch.rand(probe_images, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        net(images[:2])  # warm-up
        _, probe_wall, probe_cpu = timed(lambda: net(images))
    scale = n / probe_images
    real = torch.rand(n, 2048, dtype=torch.float64)  # pool3 features are non-negative
    fake = torch.rand(n, 2048, dtype=torch.float64) * 1.1
    _, fd_wall, _ = timed(
        lambda: frechet_distance_from_stats(*feature_statistics(fake), *feature_statistics(real))
    )
    _, kid_wall, _ = timed(lambda: kernel_inception_distance(fake, real))
    _, pr_wall, _ = timed(lambda: precision_recall(real, fake))
    return {
        "data": "cifar10 (Inception)",
        "n": n,
        "features s, scaled from a batch of 32": probe_wall * scale,
        "features cpu s, scaled": probe_cpu * scale,
        "fd s": fd_wall,
        "kid s": kid_wall,
        "precision/recall s": pr_wall,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--data", nargs="+", default=["digits", f"mnist:{MNIST}", "swissroll", "inception"])
    args = parser.parse_args()
    if args.quick:
        args.sizes = [200]
    setup_threads(args.threads)
    facts = print_header("Evaluation speed (benchmarks/eval_speed.py)")
    rows, inception_rows = [], []
    with tempfile.TemporaryDirectory() as cache_dir:  # cold caches: the first run on a machine
        for spec in args.data:
            for n in args.sizes:
                if spec == "inception":
                    inception_rows.append(bench_inception(n))
                    continue
                # digits: the test split has 297 images, so 1k is measured against the train split
                split = "test" if n <= len(load_dataset(spec, split="test")) else "train"
                if n > len(load_dataset(spec, split=split)):
                    print(f"skipping {spec} n={n}: the data set has fewer images")
                    continue
                rows.append(bench_dataset(spec, n, split, Path(cache_dir)))
                print(rows[-1], flush=True)
    if rows:
        print(markdown_table(list(rows[0]), [list(r.values()) for r in rows]) + "\n")
    if inception_rows:
        print(markdown_table(list(inception_rows[0]), [list(r.values()) for r in inception_rows]))
        print("\nInception: the reference costs the features of n real images once; each evaluation costs")
        print("the features of n samples plus the metrics.\n")
    write_json(args.json, {"machine": facts, "rows": rows, "inception": inception_rows})


if __name__ == "__main__":
    main()
