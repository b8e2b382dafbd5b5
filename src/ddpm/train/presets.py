"""Named training configurations. A preset is a TrainConfig, nothing more.

Costs on a 2-core laptop CPU are measured in BENCHMARKS.md / RESULTS.md.
"""

from __future__ import annotations

from dataclasses import replace

from ddpm.nets import UNET_PRESETS, AutoencoderConfig, MLPConfig, UNetConfig
from ddpm.train.config import DataConfig, DiffusionConfig, OptimConfig, RunConfig, TrainConfig


def _swissroll() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(spec="swissroll"),
        model=MLPConfig(dim=2, hidden_dim=128, num_layers=4),
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=1e-3, warmup_steps=100, ema_decay=0.995),
        run=RunConfig(steps=3000, batch_size=256, log_every=100, sample_every=0, checkpoint_every=0,
                      preview_images=1000, preview_steps=100),
    )  # fmt: skip


def _digits() -> TrainConfig:
    """Recognisable digits in under 5 minutes on 2 CPU cores (measured: RESULTS.md, issue 11).

    1,500 steps × 128 images: under 5 minutes at the 650 img/s measured with 2 threads (RESULTS.md).

    Tuned for quality per CPU-minute: 0.65M parameters, attention only in the middle block (more steps
    per minute), no dropout (it only slows a run of a few thousand steps), constant lr 1e-3 after a
    short warm-up (as good as a 2e-3 cosine at 2,000 steps, and a run stopped by --time keeps its
    quality), EMA 0.999 with warm-up (as good as EDM2 power-function EMAs of other lengths), previews
    and evaluation with SDE-DPM-Solver++(2M) at 20 steps on trailing timesteps (lower FD and more
    confident digits than the ODE solver, DDIM, or the Karras grid), with epsilon scaling λ = 1.06
    against exposure bias (5–16% lower FD at no extra network evaluation).
    """
    return TrainConfig(
        data=DataConfig(spec="digits"),
        # no attention at 4×4 beside the middle block's: 1.2–1.3× the steps per minute (RESULTS.md)
        model=replace(UNET_PRESETS["digits"], num_res_blocks=1, attention_resolutions=(), dropout=0.0),
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, ema_decay=0.999),
        run=RunConfig(steps=1500, batch_size=128, log_every=50, sample_every=500, checkpoint_every=500,
                      preview_images=100, preview_sampler="dpm++2m_sde", preview_steps=20,
                      preview_spacing="trailing", preview_eps_scale=1.06),
    )  # fmt: skip


def _mnist() -> TrainConfig:
    """Recognisable MNIST digits in 15 minutes on 2 CPU cores (measured: RESULTS.md, issue 11).

    The 1.1M-parameter "mnist" U-Net at base 16 channels (0.28M): at a fixed wall budget it reaches
    2.5× the steps of base 32 and a lower FD; no dropout; lr 2e-3 (lower FD than 1e-3 at 5 minutes);
    SDE-DPM-Solver++(2M) 20 steps for previews and evaluation (FD 3.0 against 4.9 for the ODE solver).
    """
    return TrainConfig(
        data=DataConfig(spec="mnist"),
        model=replace(UNET_PRESETS["mnist"], base_channels=16, dropout=0.0),
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=2e-3, warmup_steps=200, ema_decay=0.999),
        run=RunConfig(steps=4000, batch_size=64, log_every=50, sample_every=1000, checkpoint_every=1000,
                      preview_images=100, preview_sampler="dpm++2m_sde", preview_steps=20),
    )  # fmt: skip


def _cifar10() -> TrainConfig:
    """DDPM §4 / appendix B: 35.7M net, batch 128, Adam 2e-4, 5000 warm-up, EMA 0.9999, 800k steps."""
    return TrainConfig(
        data=DataConfig(spec="cifar10", random_flip=True),
        model=UNET_PRESETS["ddpm-cifar10"],
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=2e-4, warmup_steps=5000, ema_decay=0.9999),
        run=RunConfig(steps=800_000, batch_size=128, log_every=100, sample_every=10_000,
                      checkpoint_every=10_000, preview_images=64, preview_steps=100),
    )  # fmt: skip


def cifar10_cpu(size: int = 32) -> TrainConfig:
    """CIFAR-10-like images under 64 px on a laptop CPU (issue 20): what ``ddpm train --data cifar10`` or
    ``--data folder:PATH`` trains on a CPU without --preset.

    1.1M parameters where the paper's GPU net has 35.7M: base 32 channels, three levels, one residual block
    per level, attention at the third level only (8×8 of a 32-px image; ``size`` moves it with the image),
    no dropout; the digits recipe's lr 1e-3, short warm-up, EMA 0.999 and SDE-DPM-Solver++(2M) previews at
    20 steps. 1,860 steps × 64: 30 minutes on a 2-core Intel Xeon (1.09 steps/s on 2 threads, less 5% for
    previews and checkpoints; calibrated 2026-12-06, RESULTS.md, issue 20).
    """
    return TrainConfig(
        data=DataConfig(spec="cifar10", random_flip=True),
        model=UNetConfig(in_channels=3, image_size=size, base_channels=32, channel_mult=(1, 2, 2),
                         num_res_blocks=1, attention_resolutions=(size // 4,), dropout=0.0, num_groups=8),
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, ema_decay=0.999),
        run=RunConfig(steps=1860, batch_size=64, log_every=50, sample_every=500, checkpoint_every=500,
                      preview_images=64, preview_sampler="dpm++2m_sde", preview_steps=20),
    )  # fmt: skip


def _celebahq256() -> TrainConfig:
    """DDPM appendix B: the 256×256 net, batch 64, lr 2e-5, 0.5M steps (CelebA-HQ), flips."""
    return TrainConfig(
        data=DataConfig(spec="folder:celeba_hq_256", image_size=256, channels=3, random_flip=True),
        model=UNET_PRESETS["ddpm-256"],
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=2e-5, warmup_steps=5000, ema_decay=0.9999),
        run=RunConfig(steps=500_000, batch_size=64, log_every=100, sample_every=10_000,
                      checkpoint_every=10_000, preview_images=16, preview_steps=100),
    )  # fmt: skip


def _autoencoder(spec: str, model: AutoencoderConfig, steps: int, batch_size: int, flip: bool) -> TrainConfig:
    """Latent diffusion's first stage (Rombach et al. 2022): L1 + 1e-6·KL, no GAN (a patch GAN helps
    textures at high resolution; these small images need none); AdamW 1e-3 and EMA 0.999 as the small
    diffusion presets; previews are originals above their reconstructions."""
    return TrainConfig(
        data=DataConfig(spec=spec, random_flip=flip),
        model=model,
        optim=OptimConfig(lr=1e-3, warmup_steps=100, ema_decay=0.999),
        run=RunConfig(steps=steps, batch_size=batch_size, log_every=50, sample_every=500,
                      checkpoint_every=500, preview_images=32),
    )  # fmt: skip


def _latent(spec: str, model: UNetConfig, steps: int, batch_size: int, flip: bool) -> TrainConfig:
    """Diffusion on an autoencoder's normalised latents (``--latent AE_RUN``): the digits recipe (lr 1e-3,
    EMA 0.999, SDE-DPM-Solver++(2M) at 20 steps for previews) on a U-Net sized for the latent grid; the
    network's channels and size are set from the latents when the run starts."""
    return TrainConfig(
        data=DataConfig(spec=spec, random_flip=flip),
        model=model,
        diffusion=DiffusionConfig(schedule="linear", num_steps=1000),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, ema_decay=0.999),
        run=RunConfig(steps=steps, batch_size=batch_size, log_every=50, sample_every=1000,
                      checkpoint_every=1000, preview_images=100, preview_sampler="dpm++2m_sde",
                      preview_steps=20),
    )  # fmt: skip


def _ae(levels: tuple[int, ...], size: int, channels: int) -> AutoencoderConfig:
    return AutoencoderConfig(
        in_channels=channels, image_size=size, block_out_channels=levels, latent_channels=4
    )


def _latent_unet(size: int, mult: tuple[int, ...]) -> UNetConfig:
    """Base 32, 2 blocks per level: at base 64 the latent U-Nets cost as much per image as the pixel ones' top
    level and sampled only 2.6× (mnist) / 4.5× (CIFAR-10) faster than them; base 32 trains 2.4-3× more
    steps in the same time, samples 5.2× / 9.4× faster, and scores the same FD on mnist and a better one
    on CIFAR-10 (RESULTS.md, latent against pixel)."""
    return UNetConfig(in_channels=4, image_size=size, base_channels=32, channel_mult=mult, num_res_blocks=2,
                      attention_resolutions=(), dropout=0.0, num_groups=8)  # fmt: skip


PRESETS = {
    "swissroll": _swissroll,
    "digits": _digits,
    "mnist": _mnist,
    "cifar10": _cifar10,
    "cifar10-cpu": cifar10_cpu,
    "celebahq256": _celebahq256,
    # latent diffusion, first stage: digits f=2 (8×8 → 4×4×4), mnist f=4 (28×28 → 4×7×7), cifar10 f=4
    # (32×32×3 → 4×8×8, 12× fewer numbers); --set model.downsample_factor=8 for f=8 where the size allows
    "autoencoder-digits": lambda: _autoencoder("digits", _ae((32, 64), 8, 1), 1000, 64, False),
    "autoencoder-mnist": lambda: _autoencoder("mnist", _ae((32, 64, 64), 28, 1), 3000, 32, False),
    "autoencoder-cifar10": lambda: _autoencoder("cifar10", _ae((32, 64, 64), 32, 3), 6000, 32, True),
    # latent diffusion on those latents (7×7 allows one level only: no halving)
    "latent-digits": lambda: _latent("digits", _latent_unet(4, (1, 2)), 1500, 128, False),
    "latent-mnist": lambda: _latent("mnist", _latent_unet(7, (1,)), 18_000, 64, False),
    "latent-cifar10": lambda: _latent("cifar10", _latent_unet(8, (1, 2)), 18_000, 64, True),
}


def autoencoder_cpu(spec: str, size: int) -> TrainConfig:
    """The CPU recipe's first stage for images of 64 px and more (issue 20): an f=8 autoencoder of RGB
    ``size``-px images (64 px → 4×8×8 latents), as ``--set model.downsample_factor=8`` makes of
    autoencoder-cifar10. Its step count is an upper bound: ``--time`` stops it at its share (on 64 px
    images, the 12 minutes of a 30-minute run on 2 cores trained 666 steps: RESULTS.md)."""
    config = _autoencoder(spec, _ae((32, 64, 64, 64), size, 3), 3000, 32, True)
    return replace(config, data=replace(config.data, image_size=size))


def latent_cpu(spec: str, size: int) -> TrainConfig:
    """The CPU recipe's second stage: latent-cifar10's U-Net on the f=8 latents of ``size``-px images, one
    more level where the latent grid halves twice to at least 4×4 (16×16 from 128 px). Its step count is
    an upper bound: the two-stage recipe is meant to run with --time, which stops each stage at its share
    (on 64 px images, the 15.5 minutes of a 30-minute run on 2 cores trained 10,298 steps: RESULTS.md)."""
    grid = size // 8
    mult = (1, 2, 2) if grid % 4 == 0 and grid >= 16 else (1, 2) if grid % 2 == 0 else (1,)
    config = _latent(spec, _latent_unet(grid, mult), 18_000, 64, True)
    return replace(config, data=replace(config.data, image_size=size))


# The preset a data set trains with when no --preset is given (on a GPU; train.recipes picks for CPUs).
DATA_PRESETS = {
    "swissroll": "swissroll",
    "moons": "swissroll",
    "gaussians8": "swissroll",
    "digits": "digits",
    "mnist": "mnist",
    "fashion-mnist": "mnist",
    "cifar10": "cifar10",
    "folder": "cifar10",
}


# what a run trains: ddpm train [--kind autoencoder | --latent AE_RUN]
KINDS = ("diffusion", "autoencoder", "latent")


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]()


def preset_for_data(spec: str, kind: str = "diffusion") -> str:
    """The preset named after the data set of ``spec`` (``mnist:/x`` → ``mnist``); for an autoencoder
    run ``autoencoder-<that>``, for a latent diffusion run ``latent-<that>`` (folders: cifar10's)."""
    name = spec.split(":", 1)[0]
    if name not in DATA_PRESETS:
        raise ValueError(f"unknown data set {name!r} in --data {spec!r}; allowed: {', '.join(DATA_PRESETS)}")
    if kind == "diffusion":
        return DATA_PRESETS[name]
    if DATA_PRESETS[name] == "swissroll":
        raise ValueError(f"data {spec!r} is 2-D points; {kind} runs need images (digits, mnist, cifar10, …)")
    return f"{kind}-{DATA_PRESETS[name]}"


def with_data(config: TrainConfig, spec: str) -> TrainConfig:
    return replace(config, data=replace(config.data, spec=spec))
