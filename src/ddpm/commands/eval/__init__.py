"""`ddpm eval`: score a run or checkpoint (it draws its own samples) or a samples .npz against real data;
with ``--nll``, the model's negative log-likelihood bound on real data in bits/dim instead
(``likelihood``); an autoencoder run, which draws no samples, by its reconstructions of real images
(``reconstruction``).

A control run is scored on samples drawn with the controls of held-out images (``evaluate_control``), beside
samples from the same noises and labels without control (a ControlNet's, Zhang, Rao & Agrawala 2023: its
frozen base's; a concat run's: its own network with the control dropped), with the control kind's adherence
at chance, controlled and ceiling levels."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddpm.command_support import (
    HELD_OUT_SPLIT,
    OpenedRun,
    SamplerFlags,
    UsageError,
    control_comparison,
    device_for,
    draw_for_scoring,
    is_autoencoder_run,
    memorisation_metrics,
    open_run,
    prepare_real,
    read_samples,
)
from ddpm.commands.eval.common import check_counts, print_report, shown, table, write_json
from ddpm.commands.eval.likelihood import format_nll_table, likelihood_of_path, run_likelihood
from ddpm.commands.eval.reconstruction import evaluate_autoencoder, run_reconstruction
from ddpm.control import ControlConfig
from ddpm.data import default_data_root
from ddpm.editing import ControlComparison
from ddpm.eval import score
from ddpm.eval.adherence import ADHERENCE_NAMES
from ddpm.model import SamplingConfig
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
    control_scale: float | None = None,
) -> dict[str, Any]:
    """Score a run, checkpoint or samples .npz; a run or checkpoint draws ``n`` samples with its own
    sampler unless the sampler settings say otherwise; a ControlNet run's controlled samples with
    ``control_scale`` (None: 1, as trained). Returns the report written as JSON."""
    check_counts(n, batch_size, seed)
    flags = SamplerFlags(sampler, steps, spacing, eps_scale, eta)
    flags.check()
    path = Path(path)
    options = dict(root=data_root, metrics=metrics, split=split, feature_net=feature_net,
                   inception_weights=inception_weights, device=device_for(device), batch_size=batch_size,
                   progress=True)  # fmt: skip
    if path.suffix == ".npz":
        if data is None:
            raise UsageError(f"--data is required to evaluate a samples file ({path})")
        _check_scale(control_scale, None, path)
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
        _check_scale(control_scale, model.spec.control, path)
        if model.spec.control is not None:
            controls_from = _with_data(opened, run_data, used, data_root)
            scale = {} if control_scale is None else {"control_scale": control_scale}
            found = evaluate_control(controls_from, n, seed=seed, **scale, **options)
            return {**source, **scale, "data": data, "split": split, **found}
        # The real data first: a bad --data, --split or --n fails before minutes of sampling.
        evaluation = prepare_real(data, n, run_data=run_data, **options)
        samples = draw_for_scoring(model, n, flags, seed=seed, batch_size=batch_size)
    result = score(evaluation, samples, batch_size=batch_size, seed=seed, progress=True)
    # Samples that replay training images score at the real-data floor: the nearest-training check beside it.
    result.update(memorisation_metrics(samples[: int(result["n"])], evaluation, data, split,
                                       run_data=run_data, root=data_root))  # fmt: skip
    return {**source, "data": data, "split": split, "metrics": result}


def _check_scale(scale: float | None, control: ControlConfig | None, path: Path) -> None:
    """``--control-scale`` is a ControlNet run's strength knob: refused (one line) for anything else; the
    network refuses a scale that is not finite."""
    if scale is None or (control is not None and not control.concat):
        return
    what = "a concat run, whose control is in its input" if control is not None else "not a ControlNet run"
    raise UsageError(f"--control-scale {scale} applies to ControlNet runs; {str(path)!r} is {what}: leave "
                     "--control-scale out")  # fmt: skip


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
    opened: OpenedRun, n: int, *, seed: int = 0, split: str = "test", batch_size: int = 256,
    control_scale: float = 1.0, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """A ControlNet run scored as it is meant to be used: ``n`` samples drawn with the controls of held-out
    images (the test split of its data; ``n`` capped by its size), and its base's from the same noises and
    labels without control (``command_support.control_comparison``), both against the same ``n`` real
    images of ``split`` (``options``: ``prepare_real``'s); and the control kind's adherence at its three
    levels on those controls. As in conditional synthesis evaluations (SPADE, ControlNet's ADE20K FID), the
    controls of the default ``--split test`` come from the images the samples are scored against (at seed 0
    exactly those: both are the first ``n`` of the same seeded permutation), which favours the controlled FD
    over the base's. ``control_scale``: a ControlNet's strength (its base's samples are the same at any, and
    for the same base weights, sampler, seeds and labels are read back from the cache under the data root).
    Returns the report's samples, metrics, base_metrics and adherence entries."""
    run_data = opened.config.data
    held_out = load_data(opened.config, split=HELD_OUT_SPLIT)
    count = min(n, len(held_out))
    options.update(split=split, batch_size=batch_size)
    # The real data first: a bad --data, --split or --n fails before minutes of sampling.
    evaluation = prepare_real(run_data.spec, count, run_data=run_data, **options)
    scale = {} if control_scale == 1 else {"control_scale": control_scale}  # a concat run takes none
    cache_root = run_data.root or default_data_root()  # a ControlNet's base samples: drawn once, then read
    found = control_comparison(opened, n=count, seed=seed, uncontrolled=True, batch_size=batch_size,
                               held_out=held_out, cache_root=cache_root, **scale)  # fmt: skip
    if len(found.real) < count:  # users' own controls: only the held-out images that have one
        evaluation = prepare_real(run_data.spec, len(found.real), run_data=run_data, **options)
    metrics = score(evaluation, found.samples, batch_size=batch_size, seed=seed, progress=True)
    metrics.update(memorisation_metrics(found.samples[: int(metrics["n"])], evaluation, run_data.spec,
                                        split, run_data=run_data, root=options.get("root")))  # fmt: skip
    base = score(evaluation, found.uncontrolled, batch_size=batch_size, seed=seed, progress=True)
    return {"samples": "controlled", "metrics": metrics, "base_metrics": base,
            "adherence": _adherence_record(found, run_data.spec, opened.model.spec.control.mode)}  # fmt: skip


def _adherence_record(found: ControlComparison, data: str, mode: str = "controlnet") -> dict[str, Any]:
    """The adherence block of a control run's report (measure None for users' own controls, which have
    none): the control mode (controlnet or concat), the measure at the controlled, chance and ceiling levels,
    and the held-out controls it used."""
    levels = found.adherence()
    record: dict[str, Any] = {"control": found.kind, "mode": mode, "measure": None, "name": None}
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


def format_table(report: dict[str, Any]) -> str:
    """The metrics of a report as a text table; for a control run, the controlled samples' beside the
    base's (without control) and then the adherence table."""
    controlled = "base_metrics" in report
    columns = ["controlled", _uncontrolled(report["adherence"])] if controlled else ["value"]
    found = [report["metrics"]] + ([report["base_metrics"]] if len(columns) > 1 else [])
    rows = [(key, [shown(key, scores.get(key)) for scores in found]) for key in report["metrics"]]
    text = table(["metric", *columns], rows)
    return text if "adherence" not in report else f"{text}\n\n{_adherence_table(report['adherence'])}"


def _adherence_table(block: dict[str, Any]) -> str:
    """The adherence block as a table: the measure at its three levels and on what."""
    title = f"adherence of {block['control']} controls on {block['n']} held-out images ({block['controls']})"
    if block["measure"] is None:
        return f"{title}: users' own controls have no adherence measure"
    levels = [("controlled", "controlled"), ("chance", f"chance ({_uncontrolled(block)})"),
              ("ceiling", "ceiling (real images)")]  # fmt: skip
    return f"{title}\n" + table(["level", block["name"]],
                                [(name, [shown(key, block[key])]) for key, name in levels])  # fmt: skip


def _uncontrolled(block: dict[str, Any]) -> str:
    """What the samples without control are: a ControlNet's frozen base, or a concat run with it dropped."""
    return "control dropped" if block.get("mode") == "concat" else "base, no control"


def run(args: argparse.Namespace) -> int:
    """``ddpm eval``: print the table (and the JSON file's path)."""
    if is_autoencoder_run(args.path):
        return run_reconstruction(args)
    if args.sample_posterior:
        raise UsageError(
            f"--sample-posterior applies to autoencoder runs only; {str(args.path)!r} is not one"
        )
    if args.nll or args.nll_terms is not None or args.nll_variance is not None:
        return run_likelihood(args)
    report = evaluate_path(
        args.path, data=args.data, n=args.n, metrics=args.metrics, split=args.split, sampler=args.sampler,
        steps=args.steps, spacing=args.spacing, eps_scale=args.eps_scale, eta=args.eta, seed=args.seed,
        batch_size=args.batch_size, device=args.device, data_root=args.data_root,
        inception_weights=args.inception_weights, feature_net=args.feature_net,
        control_scale=args.control_scale,
    )  # fmt: skip
    return print_report(format_table(report), report, args.json)


__all__ = [
    "evaluate_autoencoder",
    "evaluate_control",
    "evaluate_path",
    "format_nll_table",
    "format_table",
    "likelihood_of_path",
    "run",
    "write_json",
]
