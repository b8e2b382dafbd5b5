"""`ddpm eval`: score a run or checkpoint (it draws its own samples) or a samples .npz against real data;
with ``--nll``, the model's negative log-likelihood bound on real data in bits/dim instead.

A ControlNet run (Zhang, Rao & Agrawala 2023) is scored on samples drawn with the controls of held-out
images (``evaluate_control``), beside its base's samples from the same noises and labels without control,
with the control kind's adherence at chance, controlled and ceiling levels."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ddpm.command_support import (
    HELD_OUT_SPLIT,
    OpenedRun,
    SamplerFlags,
    UsageError,
    check_count,
    control_comparison,
    device_for,
    draw_for_scoring,
    memorisation_metrics,
    open_run,
    prepare_real,
    read_samples,
    real_data_options,
)
from ddpm.data import load_dataset
from ddpm.diffusion.likelihood import bits_per_dim, variational_bound
from ddpm.diffusion.samplers import sample_seeds
from ddpm.diffusion.variances import FIXED_VARIANCES
from ddpm.editing import ControlComparison
from ddpm.eval import score
from ddpm.eval.adherence import ADHERENCE_NAMES
from ddpm.model import DiffusionModel, SamplingConfig
from ddpm.train.config import DataConfig
from ddpm.train.run_data import load_data


def evaluate_path(
    path: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    eps_scale: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    data_root: str | None = None,
    inception_weights: str | None = None,
    feature_net: str = "auto",
) -> dict[str, Any]:
    """Score a run, checkpoint or samples .npz; a run or checkpoint draws ``n`` samples with its own
    sampler unless the sampler settings say otherwise. Returns the report written as JSON."""
    check_count("--n", n, minimum=2)
    check_count("--batch-size", batch_size)
    check_count("--seed", seed, minimum=0)
    flags = SamplerFlags(sampler, steps, spacing, eps_scale, eta)
    flags.check()
    path = Path(path)
    options = dict(root=data_root, metrics=metrics, split=split, feature_net=feature_net,
                   inception_weights=inception_weights, device=device_for(device), batch_size=batch_size,
                   progress=True)  # fmt: skip
    if path.suffix == ".npz":
        if data is None:
            raise UsageError(f"--data is required to evaluate a samples file ({path})")
        samples, _ = read_samples(path)
        evaluation = prepare_real(data, min(n, len(samples)), **options)
        source: dict[str, Any] = {"samples_file": str(path)}
        run_data = None
    else:
        opened = open_run(path, device=device)
        run_data = opened.data_section(data)  # a diffusers folder has none of its own: --data required
        model, data = opened.model, run_data.spec
        flags.check(model.sampling.sampler)
        used = model.sampling.with_overrides(**flags.options())  # what runs, for the record
        source = {"model": str(path), "step": model.step, **_sampler_record(used)}
        if model.spec.control is not None:
            controls_from = _with_data(opened, run_data, used, data_root)
            found = evaluate_control(controls_from, n, seed=seed, **options)
            return {**source, "data": data, "split": split, **found}
        # The real data first: a bad --data, --split or --n fails before minutes of sampling.
        evaluation = prepare_real(data, n, run_data=run_data, **options)
        samples = draw_for_scoring(model, n, flags, seed=seed, batch_size=batch_size)
    result = score(evaluation, samples, batch_size=batch_size, seed=seed, progress=True)
    # Samples that replay training images score at the real-data floor: the nearest-training check beside it.
    result.update(memorisation_metrics(samples[: int(result["n"])], evaluation, data, split,
                                       run_data=run_data, root=data_root))  # fmt: skip
    return {**source, "data": data, "split": split, "metrics": result}


def _with_data(
    opened: OpenedRun, run_data: DataConfig, settings: SamplingConfig, root: str | None
) -> OpenedRun:
    """``opened`` with ``run_data`` (``--data``, ``--data-root``) as its data and ``settings`` as its own
    sampler: ``control_comparison`` draws its held-out controls and samples from what it is given."""
    run_data = dataclasses.replace(run_data, root=root) if root else run_data
    spec = dataclasses.replace(opened.model.spec, sampling=settings)
    return dataclasses.replace(
        opened, model=dataclasses.replace(opened.model, spec=spec),
        config=dataclasses.replace(opened.config, data=run_data),
    )  # fmt: skip


def evaluate_control(
    opened: OpenedRun, n: int, *, seed: int = 0, split: str = "test", batch_size: int = 256, **options: Any
) -> dict[str, Any]:
    """A ControlNet run scored as it is meant to be used: ``n`` samples drawn with the controls of held-out
    images (the test split of its data; ``n`` capped by its size), and its base's from the same noises and
    labels without control (``command_support.control_comparison``), both against the same ``n`` real
    images of ``split`` (``options``: ``prepare_real``'s); and the control kind's adherence at its three
    levels on those controls. As in conditional synthesis evaluations (SPADE, ControlNet's ADE20K FID), the
    controls of the default ``--split test`` come from the images the samples are scored against (at seed 0
    exactly those: both are the first ``n`` of the same seeded permutation), which favours the controlled FD
    over the base's. Returns the report's samples, metrics, base_metrics and
    adherence entries."""
    run_data = opened.config.data
    held_out = load_data(opened.config, split=HELD_OUT_SPLIT)
    count = min(n, len(held_out))
    options.update(split=split, batch_size=batch_size)
    # The real data first: a bad --data, --split or --n fails before minutes of sampling.
    evaluation = prepare_real(run_data.spec, count, run_data=run_data, **options)
    found = control_comparison(opened, n=count, seed=seed, uncontrolled=True, batch_size=batch_size)
    if len(found.real) < count:  # users' own controls: only the held-out images that have one
        evaluation = prepare_real(run_data.spec, len(found.real), run_data=run_data, **options)
    metrics = score(evaluation, found.samples, batch_size=batch_size, seed=seed, progress=True)
    metrics.update(memorisation_metrics(found.samples[: int(metrics["n"])], evaluation, run_data.spec,
                                        split, run_data=run_data, root=options.get("root")))  # fmt: skip
    base = score(evaluation, found.uncontrolled, batch_size=batch_size, seed=seed, progress=True)
    return {"samples": "controlled", "metrics": metrics, "base_metrics": base,
            "adherence": _adherence_record(found, run_data.spec)}  # fmt: skip


def _adherence_record(found: ControlComparison, data: str) -> dict[str, Any]:
    """The adherence block of a control run's report (measure None for users' own controls, which have
    none): the measure at the controlled, chance and ceiling levels, and the held-out controls it used."""
    levels = found.adherence()
    record: dict[str, Any] = {"control": found.kind, "measure": None, "name": None}
    if levels is not None:
        record.update(measure=levels["controlled"].name, name=ADHERENCE_NAMES[found.kind],
                      **{level: value.mean for level, value in levels.items()})  # fmt: skip
    return {**record, "n": len(found.real), "controls": f"{HELD_OUT_SPLIT} split of {data}"}


def _sampler_record(settings: SamplingConfig) -> dict[str, Any]:
    """The sampler settings a model was drawn with (spacing, η and ε scale only when they matter)."""
    record = {"sampler": settings.sampler, "steps": settings.steps}
    if settings.spacing is not None:
        record["spacing"] = settings.spacing
    if settings.sampler == "ddim":
        record["eta"] = settings.eta
    if settings.eps_scale != 1:
        record["eps_scale"] = settings.eps_scale
    return record


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
    check_count("--n", n)
    check_count("--batch-size", batch_size)
    check_count("--seed", seed, minimum=0)
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


def format_table(report: dict[str, Any]) -> str:
    """The metrics of a report as a text table; for a control run, the controlled samples' beside the
    base's (without control) and then the adherence table."""
    columns = ["value"] if "base_metrics" not in report else ["controlled", "base, no control"]
    found = [report["metrics"]] + ([report["base_metrics"]] if len(columns) > 1 else [])
    rows = [(key, [_shown(key, scores.get(key)) for scores in found]) for key in report["metrics"]]
    table = _table(["metric", *columns], rows)
    return table if "adherence" not in report else f"{table}\n\n{_adherence_table(report['adherence'])}"


def _adherence_table(block: dict[str, Any]) -> str:
    """The adherence block as a table: the measure at its three levels and on what."""
    title = f"adherence of {block['control']} controls on {block['n']} held-out images ({block['controls']})"
    if block["measure"] is None:
        return f"{title}: users' own controls have no adherence measure"
    levels = [("controlled", "controlled"), ("chance", "chance (base, no control)"),
              ("ceiling", "ceiling (real images)")]  # fmt: skip
    return f"{title}\n" + _table(["level", block["name"]],
                                 [(name, [_shown(key, block[key])]) for key, name in levels])  # fmt: skip


def _shown(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "n" else (f"{value:.5g}" if math.isfinite(value) else str(value))


def _table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Left-aligned columns, each as wide as its widest cell, under a header and a rule."""
    lines = [list(header), *([key, *values] for key, values in rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    lines.insert(1, ["-" * width for width in widths])
    return "\n".join(
        "  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (its folder created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path


def run(args: argparse.Namespace) -> int:
    """``ddpm eval``: print the table (and the JSON file's path)."""
    if args.nll or args.nll_terms is not None or args.nll_variance is not None:
        return _run_nll(args)
    report = evaluate_path(
        args.path, data=args.data, n=args.n, metrics=args.metrics, split=args.split, sampler=args.sampler,
        steps=args.steps, spacing=args.spacing, eps_scale=args.eps_scale, eta=args.eta, seed=args.seed,
        batch_size=args.batch_size, device=args.device, data_root=args.data_root,
        inception_weights=args.inception_weights, feature_net=args.feature_net,
    )  # fmt: skip
    print(format_table(report))
    if args.json:
        print(write_json(report, args.json))
    return 0


def _run_nll(args: argparse.Namespace) -> int:
    """``ddpm eval --nll``: the bound instead of sample metrics (sampler flags and --metrics do not apply)."""
    if not args.nll:
        raise UsageError("--nll-terms and --nll-variance apply to --nll only; add --nll")
    if args.metrics:
        raise UsageError("--nll measures the likelihood, not samples; run eval without --nll for --metrics")
    sampler_flags = [flag for flag, value in (("--sampler", args.sampler), ("--steps", args.steps),
                     ("--spacing", args.spacing), ("--eps-scale", args.eps_scale), ("--eta", args.eta))
                     if value is not None]  # fmt: skip
    if sampler_flags:
        raise UsageError(
            f"{', '.join(sampler_flags)}: sampler flags do not apply to --nll, which draws no samples"
        )
    report = likelihood_of_path(
        args.path, data=args.data, n=args.n, split=args.split, num_terms=args.nll_terms,
        variance=args.nll_variance, seed=args.seed, batch_size=args.batch_size, device=args.device,
        data_root=args.data_root,
    )  # fmt: skip
    print(format_nll_table(report))
    if args.json:
        print(write_json(report, args.json))
    return 0
