"""Command line: argument parsing only; every command calls a library function."""

from __future__ import annotations

import argparse
import os
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
        ("data", "strict"): True if args.strict_data else None,
    }
    for path, value in flags.items():
        if value is not None:
            apply_override(data, list(path), value)
    return config_from_dict(data)


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The arguments after ``train`` without ``--nproc N`` (or an abbreviation argparse accepts): the
    relaunched processes must not relaunch, and torchrun's parser finds ``--nproc`` ambiguous."""
    rest = list(argv)[list(argv).index("train") + 1 :]
    kept, skip_value = [], False
    for token in rest:
        name = token.split("=", 1)[0]
        if skip_value:
            skip_value = False
        elif len(name) >= 3 and "--nproc".startswith(name):
            skip_value = "=" not in token
        else:
            kept.append(token)
    return kept


def cmd_train(args: argparse.Namespace) -> int:
    from ddpm.train.distributed import batch_plan, check_nproc, launched_by_torchrun, relaunch_under_torchrun
    from ddpm.train.run import train

    config = build_train_config(args)
    if args.nproc is not None:
        check_nproc(args.nproc)
        run = config.run
        batch_plan(run.batch_size, args.nproc, run.grad_accum_steps, run.micro_batch_size)  # before launching
        if args.nproc > 1 and not launched_by_torchrun():
            relaunch_under_torchrun(args.nproc, without_nproc(args.argv))  # does not return
    result = train(config, args.out, resume=args.resume, overwrite=args.overwrite, force=args.force)
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(
        f"trained {result.step} steps in {result.seconds:.0f}s"
        f"{' (stopped early)' if result.stopped_early else ''}; "
        f"samples: {Path(args.out) / 'samples' / 'final.png'}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ddpm.sampling_cli import sample_to_files

    if args.classes is not None or args.guidance != 1.0:  # 1.0: the plain model, no class needed
        from ddpm.editing import sample_classes_to_files

        if args.classes is None:
            raise UsageError("--guidance needs --class K|all (guidance steers towards a class)")
        if args.gif:
            raise UsageError("--gif cannot be combined with --class; draw the animation without it")
        written = sample_classes_to_files(
            args.path, classes=args.classes, guidance=args.guidance, n=args.n, sampler=args.sampler,
            steps=args.steps, eta=args.eta, spacing=args.spacing, eps_scale=args.eps_scale, seed=args.seed,
            batch_size=args.batch_size, out=args.out, weights=args.weights, device=args.device,
        )  # fmt: skip
        for path in written:
            print(path)
        return 0
    written = sample_to_files(
        args.path,
        n=args.n,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        spacing=args.spacing,
        eps_scale=args.eps_scale,
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


def cmd_invert(args: argparse.Namespace) -> int:
    from ddpm.editing import invert_to_files

    for path in invert_to_files(args.path, args.images, steps=args.steps, label=args.label, out=args.out,
                                figure=args.figure, weights=args.weights, device=args.device):  # fmt: skip
        print(path)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ddpm.editing import interpolate_to_files

    for path in interpolate_to_files(args.path, images=args.images, seeds=tuple(args.seeds), num=args.num,
                                     steps=args.steps, label=args.label, guidance=args.guidance, out=args.out,
                                     weights=args.weights, device=args.device):  # fmt: skip
        print(path)
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from ddpm.editing import inpaint_to_files

    for path in inpaint_to_files(args.path, args.image, args.mask, n=args.n, steps=args.steps,
                                 jump_length=args.jump_length, resamples=args.resamples, seed=args.seed,
                                 label=args.label, guidance=args.guidance, out=args.out, weights=args.weights,
                                 device=args.device):  # fmt: skip
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
        eps_scale=args.eps_scale,
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


GUIDANCE_HELP = (
    "classifier-free guidance scale s ≥ 0 (diffusers' guidance_scale): 0 = unconditional, "
    "1 = plain conditional (default), > 1 stronger; Ho & Salimans' w (eq. 6) is s − 1"
)

EPS_SCALE_HELP = (
    "epsilon scaling λ (Ning et al. 2024): divide the predicted noise by λ at every step against exposure "
    "bias; 1 = off (default); the digits preset evaluates its SDE sampler with 1.06"
)


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
    train.add_argument(
        "--strict-data",
        action="store_true",
        help="refuse to train if any image file is unusable (default: skip it, report it)",
    )
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    train.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with N processes on this machine (one per GPU; gloo on CPUs): relaunches itself "
        "under torchrun; for several machines run torchrun yourself (docs/DISTRIBUTED.md)",
    )
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
        "--sampler",
        default="ddim",
        help="ddpm (Algorithm 2), ddim (default), dpm++2m, dpm++2m_sde, euler, heun, euler_a",
    )
    sample.add_argument(
        "--steps",
        type=int,
        help="sampler steps (default: ddpm 1000, ddim 50, dpm++2m(_sde) 20; heun uses 2·steps−1 evaluations)",
    )
    sample.add_argument(
        "--eta", type=float, default=0.0, help="DDIM η: 0 deterministic, 1 ancestral variance"
    )
    sample.add_argument(
        "--spacing",
        help="timesteps visited: uniform, trailing, quadratic, or karras (not ddpm/ddim); default: the "
        "sampler's own (karras for the σ samplers, else uniform); the digits preset evaluates with trailing",
    )
    sample.add_argument("--eps-scale", type=float, default=1.0, metavar="λ", help=EPS_SCALE_HELP)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=int, default=256)
    sample.add_argument("--out", default="samples.png", metavar="FILE.png|FILE.npz")
    sample.add_argument("--gif", metavar="FILE.gif", help="also write an animation of the reverse process")
    sample.add_argument("--weights", default="ema", choices=("ema", "raw"))
    sample.add_argument("--device", default="auto")
    sample.add_argument(
        "--class",
        dest="classes",
        metavar="K|all|K1,K2",
        help="sample these classes of a class-conditional model, --n each (.npz gets labels)",
    )
    sample.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        metavar="S",
        help=GUIDANCE_HELP,
    )
    sample.set_defaults(func=cmd_sample)

    invert = commands.add_parser("invert", help="DDIM-invert images to x_T and reconstruct them")
    invert.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    invert.add_argument("images", nargs="+", metavar="IMAGE")
    invert.add_argument("--steps", type=int, default=50)
    invert.add_argument("--class", dest="label", type=int, metavar="K")
    invert.add_argument("--out", default="latents.npz", metavar="FILE.npz")
    invert.add_argument("--figure", metavar="FILE.png", help="originals above their reconstructions")
    invert.set_defaults(func=cmd_invert)

    interp = commands.add_parser("interpolate", help="slerp between two noises, sampled to a strip")
    interp.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    ends = interp.add_mutually_exclusive_group()
    ends.add_argument("--images", nargs=2, metavar=("A", "B"), help="invert these two images for the ends")
    ends.add_argument("--seeds", nargs=2, type=int, default=(0, 1), metavar=("S1", "S2"))
    interp.add_argument("--num", type=int, default=8)
    interp.add_argument("--steps", type=int, default=50)
    interp.add_argument("--class", dest="label", type=int, metavar="K")
    interp.add_argument("--guidance", type=float, default=1.0, metavar="S", help=GUIDANCE_HELP)
    interp.add_argument("--out", default="interpolation.png", metavar="FILE.png|FILE.npz")
    interp.set_defaults(func=cmd_interpolate)

    inpaint = commands.add_parser("inpaint", help="fill a masked region of an image (RePaint)")
    inpaint.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    inpaint.add_argument("image", metavar="IMAGE")
    inpaint.add_argument(
        "--mask",
        required=True,
        metavar="MASK",
        help="mask image (white = fill) or top|bottom|left|right|center",
    )
    inpaint.add_argument("--n", type=int, default=4)
    inpaint.add_argument("--steps", type=int, default=250)
    inpaint.add_argument("--jump-length", type=int, default=10)
    inpaint.add_argument("--resamples", type=int, default=10)
    inpaint.add_argument("--seed", type=int, default=0)
    inpaint.add_argument("--class", dest="label", type=int, metavar="K")
    inpaint.add_argument("--guidance", type=float, default=1.0, metavar="S", help=GUIDANCE_HELP)
    inpaint.add_argument("--out", default="inpainted.png", metavar="FILE.png|FILE.npz")
    inpaint.set_defaults(func=cmd_inpaint)

    for command in (invert, interp, inpaint):
        command.add_argument("--weights", default="ema", choices=("ema", "raw"))
        command.add_argument("--device", default="auto")

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
    evaluate.add_argument("--eps-scale", type=float, default=1.0, metavar="λ", help=EPS_SCALE_HELP)
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
    from ddpm.train.distributed import PeerFailed
    from ddpm.train.loop import NonFiniteTrainingError

    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for relaunching under torchrun
    if args.command == "train" and args.out is None:
        args.out = str(Path("runs") / args.data.split(":", 1)[0])
    try:
        return args.func(args)
    except (UsageError, ConfigError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except PeerFailed as err:  # another rank failed first; its own message says why
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (OSError, NonFiniteTrainingError) as err:  # disk full, read-only folder, K bad steps in a row
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
