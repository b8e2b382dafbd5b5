"""``ddpm eval --nll``: a pixel model's negative log-likelihood bound (Ho et al. 2020, eq. 5) on real
images, in bits/dim, with its parts; instead of sample metrics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ddpm.command_support import UsageError, check_count, open_run, real_data_options
from ddpm.commands.eval.common import check_counts, print_report, sampler_flags_given
from ddpm.data import load_dataset
from ddpm.diffusion.likelihood import bits_per_dim, variational_bound
from ddpm.diffusion.samplers import sample_seeds
from ddpm.diffusion.variances import FIXED_VARIANCES
from ddpm.model import DiffusionModel


def likelihood_of_path(
    path: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    split: str = "test",
    num_terms: int | None = None,
    variance: str | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
) -> dict[str, Any]:
    """The variational bound (Ho et al. eq. 5) of a pixel model on the first ``n`` images of ``split``, in
    bits/dim, with its terms: every one of the T terms unless ``num_terms`` K asks for a K-term estimate.
    ``variance``: the fixed Σ of a model that learned none, beta (None) or beta_tilde. Returns the report."""
    check_counts(n, batch_size, seed, n_minimum=1)
    if num_terms is not None:
        check_count("--nll-terms", num_terms, minimum=2)
    if variance is not None and variance not in FIXED_VARIANCES:
        raise UsageError(f"--nll-variance {variance!r} is not allowed; choose {', '.join(FIXED_VARIANCES)}")
    if Path(path).suffix == ".npz":
        raise UsageError(f"--nll needs a model (a run directory or checkpoint), not samples ({path})")
    opened = open_run(path, device=device)
    model = opened.model
    if model.kind != "images":
        raise UsageError(f"--nll measures bits/dim of 8-bit images; {str(path)!r} is a model of 2-D points")
    if model.codec is not None:
        raise UsageError(f"--nll measures bits/dim of 8-bit images; {str(path)!r} is a latent diffusion run, "
                         "whose bound would be of its latents (not available)")  # fmt: skip
    if variance is not None and model.spec.learned_variance:
        raise UsageError(f"--nll-variance applies to fixed variances; {str(path)!r} learned its own")
    run_data = opened.data_section(data)  # a diffusers folder has none of its own: --data required
    data = run_data.spec
    dataset = load_dataset(data, split=split, **real_data_options(run_data, data_root))
    if tuple(dataset.sample_shape) != tuple(model.sample_shape):
        raise UsageError(
            f"data {data!r} has images of shape {tuple(dataset.sample_shape)}; the model's are "
            f"{tuple(model.sample_shape)}"
        )
    count = min(n, len(dataset))
    nll = _bound_over(model, dataset, count, num_terms=num_terms, variance=variance or "beta",
                      seed=seed, batch_size=batch_size)  # fmt: skip
    return {"model": str(path), "step": model.step, "data": data, "split": split, "nll": nll}


def _bound_over(
    model: DiffusionModel,
    dataset: Any,
    count: int,
    *,
    num_terms: int | None,
    variance: str,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Bits/dim of the first ``count`` images in batches (image i's noise from seed i of ``seed``), with
    the mean of each part of the bound: the prior L_T, the decoder L_0 and the sum of the KL terms."""
    denoiser = model.denoiser(clip_x0=1.0)
    seeds = sample_seeds(seed, count)
    parts: dict[str, list[torch.Tensor]] = {"total": [], "prior": [], "decoder": [], "kl": []}
    bound = None
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(start + batch_size, count))
        x0 = dataset.batch(index, device=model.device)  # (b, C, H, W) in [-1, 1]
        cond = None
        if model.num_classes is not None and dataset.labels is not None:
            cond = {"class_labels": dataset.labels[index].to(model.device)}  # the bound of p(x | y)
        bound = variational_bound(denoiser, model.schedule, x0, variance=variance, decoder="discretized",
                                  num_terms=num_terms, seeds=seeds[start : start + len(index)],
                                  cond=cond)  # fmt: skip
        weights = bound.weights.to(bound.terms)
        parts["total"].append(bound.bits_per_dim().cpu())
        parts["prior"].append(bits_per_dim(bound.prior, bound.num_dims).cpu())
        parts["decoder"].append(bits_per_dim(bound.terms[:, 0] * weights[0], bound.num_dims).cpu())
        parts["kl"].append(bits_per_dim(bound.terms[:, 1:] @ weights[1:], bound.num_dims).cpu())
    total = torch.cat(parts["total"])
    return {
        "bits_per_dim": float(total.mean()),
        "bits_per_dim_sem": float(total.std() / count**0.5) if count > 1 else float("nan"),
        "n": count,
        "exact": bound.exact,
        "terms_evaluated": len(bound.timesteps),
        "num_steps": model.schedule.num_steps,
        "variance": "learned" if model.spec.learned_variance else variance,
        "prior_bpd": float(torch.cat(parts["prior"]).mean()),  # L_T
        "decoder_bpd": float(torch.cat(parts["decoder"]).mean()),  # L_0
        "kl_bpd": float(torch.cat(parts["kl"]).mean()),  # Σ_{t=1}^{T-1} L_t
        "conditional": model.num_classes is not None and dataset.labels is not None,
    }


def format_nll_table(report: dict[str, Any]) -> str:
    """The bound of a ``--nll`` report as a text table: bits/dim, its parts, and whether it is exact."""
    nll = report["nll"]
    how = f"exact, all {nll['num_steps']} terms"
    if not nll["exact"]:
        how = f"ESTIMATE from {nll['terms_evaluated']} of {nll['num_steps']} terms (--nll-terms)"
    rows = [
        ("bits/dim", f"{nll['bits_per_dim']:.4f} ± {nll['bits_per_dim_sem']:.4f} ({how})"),
        ("images", f"{nll['n']} ({report['split']} split of {report['data']})"),
        ("prior L_T", f"{nll['prior_bpd']:.5g}"),
        ("decoder L_0", f"{nll['decoder_bpd']:.5g}"),
        (f"KL L_1..L_{nll['num_steps'] - 1}", f"{nll['kl_bpd']:.5g}"),
        ("variance", nll["variance"]),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join([f"{'nll':<{width}}  value", f"{'-' * width}  -----"]
                     + [f"{key:<{width}}  {value}" for key, value in rows])  # fmt: skip


def run_likelihood(args: argparse.Namespace) -> int:
    """``ddpm eval --nll``: the bound instead of sample metrics (sampler flags and --metrics do not apply)."""
    if not args.nll:
        raise UsageError("--nll-terms and --nll-variance apply to --nll only; add --nll")
    if args.metrics:
        raise UsageError("--nll measures the likelihood, not samples; run eval without --nll for --metrics")
    sampler_flags = sampler_flags_given(args)
    if sampler_flags:
        raise UsageError(
            f"{', '.join(sampler_flags)}: sampler flags do not apply to --nll, which draws no samples"
        )
    report = likelihood_of_path(
        args.path, data=args.data, n=args.n, split=args.split, num_terms=args.nll_terms,
        variance=args.nll_variance, seed=args.seed, batch_size=args.batch_size, device=args.device,
        data_root=args.data_root,
    )  # fmt: skip
    return print_report(format_nll_table(report), report, args.json)
