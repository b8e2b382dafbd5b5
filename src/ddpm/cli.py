"""Command line: argument parsing only. Each command's body is ``ddpm.commands.<name>.run(args)``.

Sampler flags default to None: "the run's own sampler settings" (those its previews and evaluation
use), so every command that draws from a run draws what the run itself draws unless told otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

COMMANDS = (
    "train", "sample", "invert", "interpolate", "inpaint", "eval", "viz", "report", "export", "serve"
)  # fmt: skip

GUIDANCE_HELP = (
    "classifier-free guidance scale s ≥ 0 (diffusers' guidance_scale): 0 = unconditional, "
    "1 = plain conditional (default), > 1 stronger; Ho & Salimans' w (eq. 6) is s − 1"
)
EPS_SCALE_HELP = (
    "epsilon scaling λ (Ning et al. 2024): divide the predicted noise by λ at every step against exposure "
    "bias; 1 = off; default: the run's own (the digits preset evaluates its SDE sampler with 1.06)"
)
RUN_DEFAULT = "default: the run's own (its previews' and evaluation's)"


class CommandLineError(Exception):
    """A flag argparse refuses: reported by :func:`main` as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line ``ddpm <command>: error: …`` (no usage dump, no exit here)."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: error: {message}")


def add_train(commands: argparse._SubParsersAction) -> None:
    """``ddpm train``."""
    train = commands.add_parser("train", help="train a model on a data set", description=(
        "Train a diffusion model (DDPM Algorithm 1). Without --preset the data set's own preset is used: "
        "--data digits trains the 'digits' preset; cifar10 and folder data on a CPU train a recipe sized to "
        "the images (cifar10-cpu under 64 px, else an f=8 autoencoder into OUT/autoencoder then latent "
        "diffusion into OUT), on a GPU the paper's cifar10. Precedence: preset < --config < --set < flags."
    ))  # fmt: skip
    train.add_argument("--data", metavar="SPEC",
                       help="digits (default, offline; --controlnet: its base's), mnist[:DIR], "
                       "fashion-mnist[:DIR], cifar10[:DIR], folder:PATH, swissroll, moons, "
                       "gaussians8")  # fmt: skip
    train.add_argument("--preset", help="swissroll, digits, mnist, cifar10, cifar10-cpu, celebahq256; "
                       "autoencoder-digits, "
                       "-mnist, -cifar10; latent-digits, -mnist, -cifar10")  # fmt: skip
    train.add_argument("--kind", choices=("diffusion", "autoencoder"), help="what to train: a diffusion "
                       "model (default) or latent diffusion's first stage, a KL autoencoder (preset "
                       "autoencoder-<data>; --set model.downsample_factor=4|8)")  # fmt: skip
    train.add_argument("--latent", metavar="AE_RUN", help="train diffusion on the latents of this "
                       "autoencoder run (preset latent-<data>); its samples are decoded, and inpainting "
                       "masks are taken to latent resolution, as LDM does")  # fmt: skip
    train.add_argument("--controlnet", metavar="BASE_RUN", help="train a ControlNet (Zhang et al. 2023) "
                       "steering this frozen run with --control; its config starts as its")  # fmt: skip
    train.add_argument("--control", metavar="KIND", help="control signal: canny, mask, lowres, gray (made "
                       "from the data) or folder:PATH (yours, by name). With --controlnet: a branch over the "
                       "frozen base (reused, swappable controls, --control-scale knob); alone: the baseline, "
                       "a U-Net trained from scratch on [x_t, control] (everything retrained per kind, no "
                       "scale; sampled without --control it drops the control)")  # fmt: skip
    train.add_argument("--config", metavar="FILE.toml", help="TOML file of config values")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one config value, e.g. --set optim.lr=1e-3 (repeatable)")  # fmt: skip
    train.add_argument("--steps", type=int, help="optimizer steps")
    train.add_argument("--batch-size", type=int, help="images per step")
    train.add_argument("--time", metavar="DURATION", help="stop cleanly after this long, e.g. 10m (the "
                       "two-stage CPU recipe: 20%% autoencoder, the rest latent diffusion)")  # fmt: skip
    train.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<data>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.add_argument("--force", action="store_true", help="resume even if config or data changed")
    train.add_argument("--seed", type=int, help="run seed")
    train.add_argument("--strict-data", action="store_true", help="refuse to train if any image file is "
                       "unusable (default: skip it, report it)")  # fmt: skip
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train with N processes on this machine (one per GPU; gloo on CPUs): relaunches "
                       "itself under torchrun; for several machines run torchrun yourself "
                       "(docs/DISTRIBUTED.md)")  # fmt: skip
    train.add_argument(
        "--data-root", help="folder for downloads and caches (default $DDPM_DATA or ~/.cache/ddpm)"
    )


def add_sampler_flags(command: argparse.ArgumentParser) -> None:
    """``--sampler``, ``--steps``, ``--eta``, ``--spacing``, ``--eps-scale``: None is the run's own."""
    command.add_argument("--sampler", help="ddpm (Algorithm 2), ddim, dpm++2m, dpm++2m_sde, euler, heun, "
                         f"euler_a; {RUN_DEFAULT}")  # fmt: skip
    command.add_argument("--steps", type=int, help="sampler steps (heun uses 2·steps−1 evaluations); "
                         f"{RUN_DEFAULT}")  # fmt: skip
    command.add_argument("--eta", type=float, help=f"DDIM η: 0 deterministic, 1 ancestral; {RUN_DEFAULT}")
    command.add_argument("--spacing", help="timesteps visited: uniform, trailing, quadratic, or karras (not "
                         f"ddpm/ddim); {RUN_DEFAULT}")  # fmt: skip
    command.add_argument("--eps-scale", type=float, metavar="λ", help=EPS_SCALE_HELP)


def add_sample(commands: argparse._SubParsersAction) -> None:
    """``ddpm sample``."""
    sample = commands.add_parser("sample", help="draw samples from a trained model", description=(
        "Draw samples from a run directory, checkpoint folder or diffusers model folder (either layout) "
        "into a PNG grid or an .npz file, with the run's own sampler unless the sampler flags say otherwise "
        "(a diffusers folder's own: ddim, 50 steps)."
    ))  # fmt: skip
    sample.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    sample.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    add_sampler_flags(sample)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=int, default=256)
    sample.add_argument("--out", default="samples.png", metavar="FILE.png|FILE.npz")
    sample.add_argument("--gif", metavar="FILE.gif", help="also write an animation of the reverse process")
    sample.add_argument("--class", dest="classes", metavar="K|all|K1,K2", help="sample these classes of a "
                        "class-conditional model, --n each (.npz gets labels)")  # fmt: skip
    sample.add_argument("--guidance", type=float, default=1.0, metavar="S", help=GUIDANCE_HELP)
    sample.add_argument("--control", metavar="IMAGE_OR_DIR", help="a control run's control images "
                        "(a file, a folder or a samples .npz): one sample each, --n is ignored")  # fmt: skip
    sample.add_argument("--control-scale", type=float, metavar="S", help="a ControlNet run's strength of "
                        "the control (0 = the base model, 1 = as trained, the default); a concat run has "
                        "none")  # fmt: skip
    add_model_flags(sample)


def add_model_flags(command: argparse.ArgumentParser) -> None:
    """``--weights`` and ``--device`` of the commands that load a model."""
    command.add_argument("--weights", default="ema", choices=("ema", "raw"))
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_editing(commands: argparse._SubParsersAction) -> None:
    """``ddpm invert``, ``ddpm interpolate``, ``ddpm inpaint``: DDIM/RePaint by algorithm."""
    invert = commands.add_parser("invert", help="DDIM-invert images to x_T and reconstruct them")
    invert.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    invert.add_argument("images", nargs="+", metavar="IMAGE")
    invert.add_argument("--steps", type=int, default=50)
    invert.add_argument("--class", dest="label", type=int, metavar="K")
    invert.add_argument("--out", default="latents.npz", metavar="FILE.npz")
    invert.add_argument("--figure", metavar="FILE.png", help="originals above their reconstructions")

    interp = commands.add_parser("interpolate", help="slerp between two noises, sampled to a strip")
    interp.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    ends = interp.add_mutually_exclusive_group()
    ends.add_argument("--images", nargs=2, metavar=("A", "B"), help="invert these two images for the ends")
    ends.add_argument("--seeds", nargs=2, type=int, default=(0, 1), metavar=("S1", "S2"))
    interp.add_argument("--num", type=int, default=8)
    interp.add_argument("--steps", type=int, default=50)
    interp.add_argument("--out", default="interpolation.png", metavar="FILE.png|FILE.npz")

    inpaint = commands.add_parser("inpaint", help="fill a masked region of an image (RePaint)")
    inpaint.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    inpaint.add_argument("image", metavar="IMAGE")
    inpaint.add_argument("--mask", required=True, metavar="MASK",
                         help="mask image (white = fill) or top|bottom|left|right|center")  # fmt: skip
    inpaint.add_argument("--n", type=int, default=4)
    inpaint.add_argument("--steps", type=int, default=250)
    inpaint.add_argument("--jump-length", type=int, default=10)
    inpaint.add_argument("--resamples", type=int, default=10)
    inpaint.add_argument("--seed", type=int, default=0)
    inpaint.add_argument("--out", default="inpainted.png", metavar="FILE.png|FILE.npz")

    for command in (interp, inpaint):
        command.add_argument("--class", dest="label", type=int, metavar="K")
        command.add_argument("--guidance", type=float, default=1.0, metavar="S", help=GUIDANCE_HELP)
    for command in (invert, interp, inpaint):
        add_model_flags(command)


def add_eval(commands: argparse._SubParsersAction) -> None:
    """``ddpm eval``."""
    evaluate = commands.add_parser("eval", help="measure sample quality (FID / FD_classifier, KID, P&R, IS)",
                                   description=(
        "Score a run or checkpoint (it draws --n samples itself, with the run's own sampler unless the "
        "sampler flags say otherwise) or a samples .npz against real data; an autoencoder run by its "
        "reconstructions of --n real images (PSNR, FD against them, the real-data floor, latent statistics). "
        "Image sets with labels (digits, mnist, fashion-mnist) use a classifier trained by the package; RGB "
        "sets use Inception-v3 (FID), from a local weights file."
    ))  # fmt: skip
    evaluate.add_argument("path", metavar="RUN_DIR|CHECKPOINT|AE_RUN|SAMPLES.npz")
    evaluate.add_argument("--data", metavar="SPEC", help="real data (default: the run's data)")
    evaluate.add_argument("--n", type=int, default=1000, help="samples to score (default 1000)")
    evaluate.add_argument("--metrics", nargs="+", help="fd kid precision recall is coverage confidence swd")
    evaluate.add_argument("--split", default="test", help="real split to compare with (default test)")
    add_sampler_flags(evaluate)
    evaluate.add_argument("--control-scale", type=float, metavar="S", help="a ControlNet run's strength of "
                          "its control in the controlled samples (0 = the base model, 1 = as trained, the "
                          "default)")  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--feature-net", default="auto",
                          help="auto, classifier, inception or coords; none scores an autoencoder run by "
                               "PSNR, MSE and L1 alone (no FD, no floor)")  # fmt: skip
    evaluate.add_argument("--inception-weights", metavar="FILE.safetensors",
                          help="the FID Inception-v3 weights, converted once from the released .pth with "
                          "`python -m ddpm.eval.inception convert IN.pth OUT.safetensors`")  # fmt: skip
    evaluate.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    evaluate.add_argument("--nll", action="store_true", help="instead of sampling: the negative log-"
                          "likelihood bound (Ho et al. eq. 5) in bits/dim on --n images of --split, and "
                          "its terms")
    evaluate.add_argument("--nll-terms", type=int, metavar="K", help="with --nll: estimate the bound from K "
                          "of its T terms, geometrically spaced (flagged as an estimate; default: all T)")
    evaluate.add_argument("--nll-variance", choices=("beta", "beta_tilde"), help="with --nll, for a model "
                          "that learned no variance: its fixed Σ, β (default) or β̃")
    evaluate.add_argument("--sample-posterior", action="store_true", help="autoencoder runs: decode a "
                          "seeded sample of q(z|x) instead of its mean")


def add_export(commands: argparse._SubParsersAction) -> None:
    """``ddpm export``."""
    export = commands.add_parser("export", help="write a model in another format (diffusers)", description=(
        "Write the model of a run directory or checkpoint folder as a diffusers folder (unet/, scheduler/, "
        "model_index.json) that DDPMPipeline.from_pretrained(OUT_DIR) loads, a latent run's as one that "
        "LDMPipeline.from_pretrained(OUT_DIR) loads (vqvae/ too), an autoencoder run's as one that "
        "AutoencoderKL.from_pretrained(OUT_DIR) loads (latents_mean/latents_std in its config); written "
        "whole or not at all. ControlNet runs are not exported: their run directory is the format."
    ))  # fmt: skip
    export.add_argument("path", metavar="RUN_DIR|CHECKPOINT")
    export.add_argument("out_dir", metavar="OUT_DIR")
    export.add_argument("--format", default="diffusers", help="diffusers (the only one, default)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    export.add_argument("--weights", default="ema", choices=("ema", "raw"))


def add_pictures(commands: argparse._SubParsersAction) -> None:
    """``ddpm viz`` and ``ddpm report``."""
    viz = commands.add_parser("viz", help="draw pictures of a run", description=(
        "Forward and reverse process strips, a GIF of the reverse process, a grid of samples, training "
        "curves and schedule plots, for a ControlNet run control | samples | real image (control), and for "
        "an autoencoder run or a latent run the autoencoder's reconstructions beside held-out originals "
        "and its latent channels as heat maps, written to RUN_DIR/figures (or --out-dir)."
    ))  # fmt: skip
    viz.add_argument("kind", choices=("forward", "reverse", "gif", "samples", "curves", "schedule", "control",
                                      "reconstructions", "latents", "all"))  # fmt: skip
    viz.add_argument("run_dir", metavar="RUN_DIR")
    viz.add_argument("--out-dir", help="folder for the pictures (default RUN_DIR/figures)")
    viz.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    report = commands.add_parser("report", help="make a poster of a run", description=(
        "A poster of a run, laid out by the lecture's poster guidelines: 47 x 23.5 in landscape, "
        "three columns, printed at 200%%."
    ))  # fmt: skip
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", default="poster.pdf", metavar="FILE.pdf|FILE.png|FILE.svg")
    report.add_argument("--title", help="poster title (default: from the run)")
    report.add_argument("--authors", default="", help="author line")
    report.add_argument("--url", help="URL for the QR code")
    report.add_argument("--page", default="poster", choices=("poster", "a4", "letter"))
    report.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_serve(commands: argparse._SubParsersAction) -> None:
    """``ddpm serve``."""
    serve = commands.add_parser("serve", help="a local web page to sample, watch and inpaint", description=(
        "Serve a web page (on this machine only, unless --host and --allow-remote say otherwise) to sample "
        "the runs in RUN_DIR or RUNS_DIR, watch the reverse process, inpaint, and see training curves. "
        'Needs the serve extra: pip install -e ".[serve]".'
    ))  # fmt: skip
    serve.add_argument("path", metavar="RUN_DIR|RUNS_DIR")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach")
    serve.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")


def make_parser() -> argparse.ArgumentParser:
    """The ``ddpm`` parser with one subcommand per module of ``ddpm.commands``."""
    parser = Parser(
        prog="ddpm", description="Denoising diffusion probabilistic models: train, sample, evaluate."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_sample, add_editing, add_eval, add_pictures, add_export, add_serve):
        add(commands)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parsed arguments; an unknown flag is reported by the command it was given to."""
    args, unknown = make_parser().parse_known_args(argv)
    if unknown:
        raise CommandLineError(f"ddpm {args.command}: error: unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(argv)  # for relaunching under torchrun
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad usage is one line on stderr and exit status 2, never a traceback."""
    from ddpm.configio import ConfigError
    from ddpm.rundir import CheckpointError
    from ddpm.train.distributed import PeerFailed
    from ddpm.train.loop import NonFiniteTrainingError

    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except CommandLineError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        return importlib.import_module(f"ddpm.commands.{args.command}").run(args)
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as err:  # UsageError is a ValueError
        return _fail(args.command, err, 2)
    except PeerFailed as err:  # another rank failed first; its own message says why
        return _fail(args.command, err, 1)
    except (OSError, NonFiniteTrainingError) as err:  # disk full, read-only folder, K bad steps in a row
        return _fail(args.command, err, 1)
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


def _fail(command: str, err: BaseException, status: int) -> int:
    """Print ``ddpm <command>: error: <message>`` on one line and return ``status``."""
    message = " ".join(str(err).split())
    print(f"ddpm {command}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
