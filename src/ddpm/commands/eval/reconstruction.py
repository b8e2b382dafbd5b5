"""``ddpm eval AE_RUN``: an autoencoder run (latent diffusion's first stage, ``ddpm train --kind
autoencoder``) draws no samples, so it is measured by its EMA weights' reconstructions of ``--n`` real
images of ``--split`` (``ddpm.eval.reconstruction``): PSNR, MSE and L1; the FD of the reconstructions
against those same images beside the real-data floor; the normalised latents' per-channel mean and std;
its downsampling factor f, the latent shape and the seconds encoding and decoding took."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddpm.command_support import (
    UsageError,
    device_for,
    open_autoencoder,
    prepare_real,
    real_data_options,
)
from ddpm.commands.eval.common import check_counts, print_report, sampler_flags_given, shown, table
from ddpm.data import Dataset, load_dataset
from ddpm.eval.reconstruction import POSTERIOR, pixel_reconstructions, score_reconstructions
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import read_checkpoint_meta, resolve_checkpoint
from ddpm.train.config import config_from_dict

NO_FEATURES = "none"  # --feature-net none: PSNR, MSE and L1 alone, for images no feature network fits


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, naming them, the flags of a diffusion model's evaluation: the sampler's and ``--nll``'s."""
    where = f"an autoencoder run ({str(args.path)!r})"
    sampler = sampler_flags_given(args)
    if sampler:
        raise UsageError(f"{', '.join(sampler)}: sampler flags do not apply to {where}, which draws no "
                         "samples; ddpm eval measures its reconstructions")  # fmt: skip
    nll = [flag for flag, given in (("--nll", args.nll), ("--nll-terms", args.nll_terms is not None),
                                    ("--nll-variance", args.nll_variance is not None)) if given]  # fmt: skip
    if nll:
        raise UsageError(f"{', '.join(nll)}: the likelihood bound is a diffusion model's; {where} is "
                         "measured by its reconstructions (leave --nll out)")  # fmt: skip


def evaluate_autoencoder(
    path: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
    inception_weights: str | None = None,
    feature_net: str = "auto",
    sample_posterior: bool = False,
) -> dict[str, Any]:
    """Reconstructions of ``n`` images of ``split`` (capped by its size; the seeded subset every ``ddpm
    eval`` scores against) of the run's data, or ``data`` at the run's image size, by the EMA weights'
    posterior mean (a posterior sample with ``sample_posterior``). The floor draws its real images from
    the train split (the test split when ``split`` is train). Returns the report written as JSON."""
    check_counts(n, batch_size, seed)
    target = device_for(device)
    _, checkpoint = resolve_checkpoint(path)
    meta = read_checkpoint_meta(checkpoint)
    run_data = config_from_dict(meta["config"]).data
    run_data = run_data if data is None else dataclasses.replace(run_data, spec=data)
    codec = open_autoencoder(checkpoint).to(target)
    dataset = load_dataset(run_data.spec, split=split, **real_data_options(run_data, data_root))
    _check_fits(codec, dataset, path)
    floor_split = "test" if split == "train" else "train"
    features = feature_net != NO_FEATURES
    if not features:
        if metrics:
            raise UsageError(f"--metrics {' '.join(metrics)} needs a feature network; --feature-net none "
                             "scores PSNR, MSE and L1 only (leave --metrics out)")  # fmt: skip
        found = pixel_reconstructions(codec, dataset, min(n, len(dataset)), batch_size=batch_size,
                                      sample_posterior=sample_posterior, seed=seed)  # fmt: skip
    else:
        # The real data first: a bad --data, --split or --n fails before features are computed.
        floor_data = load_dataset(run_data.spec, split=floor_split, **real_data_options(run_data, data_root))
        evaluation = prepare_real(run_data.spec, min(n, len(dataset)), run_data=run_data, root=data_root,
                                  metrics=metrics, split=split, feature_net=feature_net, dataset=dataset,
                                  inception_weights=inception_weights, device=target, batch_size=batch_size,
                                  progress=True)  # fmt: skip
        found = score_reconstructions(codec, evaluation, floor_data, batch_size=batch_size, seed=seed,
                                      sample_posterior=sample_posterior, progress=True)  # fmt: skip
    return {"autoencoder": str(path), "step": meta["step"], "data": run_data.spec, "split": split,
            "weights": "ema", "latents": POSTERIOR[sample_posterior], "pixel_range": "[0, 1]",
            "downsample_factor": codec.downsample_factor,
            "latent_shape": list(codec.latent_shape(dataset.sample_shape)),
            "metrics": found["metrics"], "floor": found["floor"], "floor_split": floor_split,
            "latent_stats": found["latent_stats"], "fd": features}  # fmt: skip


def _check_fits(codec: LatentCodec, dataset: Dataset, path: str | Path) -> None:
    """Refuse data the autoencoder cannot take: points, or images of other channels or size."""
    config = codec.autoencoder.config
    expected = (config.in_channels, config.image_size, config.image_size)
    if dataset.kind != "images":
        raise UsageError(f"data {dataset.spec!r} is 2-D points; an autoencoder run reconstructs images")
    if tuple(dataset.sample_shape) != expected:
        raise UsageError(f"data {dataset.spec!r} has images of shape {tuple(dataset.sample_shape)}; the "
                         f"autoencoder {str(path)!r} takes {expected}")  # fmt: skip


def format_reconstruction_table(report: dict[str, Any]) -> str:
    """The report as text: what was reconstructed, the metrics beside the real-data floor, the latents'
    per-channel statistics and the time."""
    metrics, floor = report["metrics"], report["floor"] or {}
    count, seconds = int(metrics["n"]), metrics["seconds"]
    shape = "×".join(map(str, report["latent_shape"]))
    floor_column = f"real floor ({report['floor_split']} vs {report['split']})"
    rows = [(key, [shown(key, value), shown(key, floor.get(key))]) for key, value in metrics.items()]
    stats = report["latent_stats"]
    channels = [(str(c), [shown("mean", mean), shown("std", std)])
                for c, (mean, std) in enumerate(zip(stats["mean"], stats["std"], strict=True))]  # fmt: skip
    lines = [
        f"reconstructions of {count} images of the {report['split']} split of {report['data']} by the EMA "
        f"weights ({report['latents']}), f={report['downsample_factor']}, latents {shape}",
        table(["metric", "reconstructions", floor_column], [row for row in rows if row[0] != "seconds"]),
        f"psnr (dB), mse and l1 (per pixel) of images in {report['pixel_range']}; fd against the same "
        "images (0 for a perfect autoencoder)",
        table(["latent channel", "mean", "std"], channels),
        f"encode + decode: {seconds:.3g} s ({count / max(seconds, 1e-9):.4g} images/s)",
    ]
    if not report["fd"]:  # --feature-net none: no floor column either
        lines[1] = table(["metric", "reconstructions"], [(k, v[:1]) for k, v in rows if k != "seconds"])
        lines[2] = f"psnr (dB), mse and l1 (per pixel) of images in {report['pixel_range']}; no fd, no floor"
    elif report["floor"] is None:
        lines.insert(3, f"no floor: the {report['floor_split']} split has fewer than {count} images or is "
                     f"the {report['split']} split itself")  # fmt: skip
    return "\n\n".join(lines)


def run_reconstruction(args: argparse.Namespace) -> int:
    """``ddpm eval AE_RUN``: the flags that do not apply refused, then the reconstruction table."""
    check_flags(args)
    report = evaluate_autoencoder(
        args.path, data=args.data, n=args.n, metrics=args.metrics, split=args.split, seed=args.seed,
        batch_size=args.batch_size, device=args.device, data_root=args.data_root,
        inception_weights=args.inception_weights, feature_net=args.feature_net,
        sample_posterior=args.sample_posterior,
    )  # fmt: skip
    return print_report(format_reconstruction_table(report), report, args.json)
