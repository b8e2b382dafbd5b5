"""Command line: argument parsing only; every command calls a library function."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddpm.train.configio import ConfigError, apply_override, merge, parse_override, read_toml

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


class UsageError(ValueError):
    """Bad command-line usage: printed as one line, exit status 2."""


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` → 90.0, ``10m`` → 600.0, ``1.5h`` → 5400.0 seconds."""
    match = DURATION.match(text)
    if not match:
        raise UsageError(f"--time {text!r} is not a duration; use e.g. 300, 90s, 10m or 1.5h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def build_train_config(args: argparse.Namespace) -> Any:
    """Preset (or the stored config of a run being resumed) ← --config ← --set ← flags."""
    from ddpm.train.config import config_from_dict, config_to_dict
    from ddpm.train.presets import get_preset, preset_for_data, with_data

    stored = Path(args.out) / "config.toml"
    if args.resume and stored.is_file() and not args.preset:
        data = read_toml(stored)
    else:
        preset = get_preset(args.preset or preset_for_data(args.data))
        data = config_to_dict(with_data(preset, args.data))
        if args.data_root:
            data["data"]["root"] = args.data_root
    if args.config:
        data = merge(data, read_toml(args.config))
    for assignment in args.set or []:
        path, value = parse_override(assignment)
        apply_override(data, path, value)
    flags = {
        ("run", "steps"): args.steps,
        ("run", "batch_size"): args.batch_size,
        ("run", "seed"): args.seed,
        ("run", "device"): args.device,
        ("run", "time_budget_s"): parse_duration(args.time) if args.time else None,
    }
    for path, value in flags.items():
        if value is not None:
            apply_override(data, list(path), value)
    return config_from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    from ddpm.train.run import train

    config = build_train_config(args)
    result = train(config, args.out, resume=args.resume, overwrite=args.overwrite, force=args.force)
    print(
        f"trained {result.step} steps in {result.seconds:.0f}s"
        f"{' (stopped early)' if result.stopped_early else ''}; "
        f"samples: {Path(args.out) / 'samples' / 'final.png'}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ddpm.sampling_cli import sample_to_files

    written = sample_to_files(
        args.path,
        n=args.n,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        seed=args.seed,
        batch_size=args.batch_size,
        out=args.out,
        gif=args.gif,
        weights=args.weights,
        device=args.device,
    )
    for path in written:
        print(path)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ddpm.evaluation_cli import evaluate_path, format_table, write_json

    report = evaluate_path(
        args.path,
        data=args.data,
        n=args.n,
        metrics=args.metrics,
        split=args.split,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        data_root=args.data_root,
        inception_weights=args.inception_weights,
        feature_net=args.feature_net,
    )
    print(format_table(report))
    if args.json:
        print(write_json(report, args.json))
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from ddpm.report import draw_pictures

    for path in draw_pictures(args.run_dir, args.kind, args.out_dir):
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ddpm.report import make_report

    print(
        make_report(
            args.run_dir, args.out, title=args.title, authors=args.authors, url=args.url, page=args.page
        )
    )
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm", description="Denoising diffusion probabilistic models: train, sample, evaluate."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model on a data set",
        description=(
            "Train a diffusion model (DDPM Algorithm 1). Without --preset the data set's own preset is used: "
            "--data digits trains the 'digits' preset. Precedence: preset < --config < --set < flags."
        ),
    )
    train.add_argument(
        "--data",
        default="digits",
        metavar="SPEC",
        help="digits (default, offline), mnist[:DIR], fashion-mnist[:DIR], cifar10[:DIR], "
        "folder:PATH, swissroll, moons, gaussians8",
    )
    train.add_argument("--preset", help="swissroll, digits, mnist, cifar10, celebahq256")
    train.add_argument("--config", metavar="FILE.toml", help="TOML file of config values")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set optim.lr=1e-3 (repeatable)",
    )
    train.add_argument("--steps", type=int, help="optimizer steps")
    train.add_argument("--batch-size", type=int, help="images per step")
    train.add_argument("--time", metavar="DURATION", help="stop cleanly after this long, e.g. 10m")
    train.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<data>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.add_argument("--force", action="store_true", help="resume even if config or data changed")
    train.add_argument("--seed", type=int, help="run seed")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    train.add_argument(
        "--data-root", help="folder for downloads and caches (default $DDPM_DATA or ~/.cache/ddpm)"
    )
    train.set_defaults(func=cmd_train)

    sample = commands.add_parser(
        "sample",
        help="draw samples from a trained model",
        description=(
            "Draw samples from a run directory or checkpoint folder into a PNG grid or an .npz file."
        ),
    )
    sample.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument(
        "--sampler", default="ddim", help="ddpm (Algorithm 2), ddim (default), dpm++2m, euler, heun, euler_a"
    )
    sample.add_argument(
        "--steps",
        type=int,
        help="sampler steps (default: ddpm 1000, ddim 50, dpm++2m 20; heun uses 2·steps−1 evaluations)",
    )
    sample.add_argument(
        "--eta", type=float, default=0.0, help="DDIM η: 0 deterministic, 1 ancestral variance"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=int, default=256)
    sample.add_argument("--out", default="samples.png", metavar="FILE.png|FILE.npz")
    sample.add_argument("--gif", metavar="FILE.gif", help="also write an animation of the reverse process")
    sample.add_argument("--weights", default="ema", choices=("ema", "raw"))
    sample.add_argument("--device", default="auto")
    sample.set_defaults(func=cmd_sample)

    evaluate = commands.add_parser(
        "eval",
        help="measure sample quality (FID / FD_classifier, KID, P&R, IS)",
        description=(
            "Score a run or checkpoint (it draws --n samples itself) or a samples .npz against real data. "
            "Image sets with labels (digits, mnist, fashion-mnist) use a classifier trained by the package; "
            "RGB sets use Inception-v3 (FID), from a local weights file."
        ),
    )
    evaluate.add_argument("path", metavar="RUN_DIR|CHECKPOINT|SAMPLES.npz")
    evaluate.add_argument("--data", metavar="SPEC", help="real data (default: the run's data)")
    evaluate.add_argument("--n", type=int, default=1000, help="samples to score (default 1000)")
    evaluate.add_argument("--metrics", nargs="+", help="fd kid precision recall is coverage confidence swd")
    evaluate.add_argument("--split", default="test", help="real split to compare with (default test)")
    evaluate.add_argument("--sampler", default="ddim")
    evaluate.add_argument("--steps", type=int)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--feature-net", default="auto", help="auto, classifier, inception or coords")
    evaluate.add_argument("--inception-weights", metavar="FILE", help="pt_inception-2015-12-05 weights file")
    evaluate.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    evaluate.set_defaults(func=cmd_eval)  # fmt: skip

    viz = commands.add_parser(
        "viz",
        help="draw pictures of a run",
        description=(
            "Forward and reverse process strips, a GIF of the reverse process, training curves and "
            "schedule plots, written to RUN_DIR/figures (or --out-dir)."
        ),
    )
    viz.add_argument("kind", choices=("forward", "reverse", "gif", "curves", "schedule", "all"))
    viz.add_argument("run_dir", metavar="RUN_DIR")
    viz.add_argument("--out-dir", help="folder for the pictures (default RUN_DIR/figures)")
    viz.set_defaults(func=cmd_viz)

    report = commands.add_parser(
        "report",
        help="make a poster of a run",
        description=(
            "A poster of a run, laid out by the lecture's poster guidelines: 47 x 23.5 in landscape, "
            "three columns, printed at 200%%."
        ),
    )
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", default="poster.pdf", metavar="FILE.pdf|FILE.png|FILE.svg")
    report.add_argument("--title", help="poster title (default: from the run)")
    report.add_argument("--authors", default="", help="author line")
    report.add_argument("--url", help="URL for the QR code")
    report.add_argument("--page", default="poster", choices=("poster", "a4", "letter"))
    report.set_defaults(func=cmd_report)
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    from ddpm.train.checkpoint import CheckpointError

    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.out is None:
        args.out = str(Path("runs") / args.data.split(":", 1)[0])
    try:
        return args.func(args)
    except (UsageError, ConfigError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
