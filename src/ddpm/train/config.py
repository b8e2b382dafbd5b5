"""Training configuration: frozen dataclasses, one comment per field, TOML in and out.

A run is described by :class:`TrainConfig`; a preset is a named TrainConfig, nothing more. A diffusion
run's ``model`` is a denoiser (``kind = "unet"`` or ``"mlp"``); latent diffusion's first stage is a run of
its own whose model is an autoencoder (``kind = "autoencoder"``, trained with ``[autoencoder_loss]``), and
a diffusion run on its latents names it in ``[latent]`` (Rombach et al. 2022). Tables that do not apply
to a run are left out of its config.toml, so pixel runs' configs read as they always did.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ddpm.configio import ConfigError, coerce, from_dict, to_dict
from ddpm.control import ControlConfig
from ddpm.diffusion.eps_scaling import check_eps_scale
from ddpm.diffusion.samplers import spacings_for
from ddpm.model import NET_KINDS, ModelSpec, NetConfig
from ddpm.nets import AutoencoderConfig, MLPConfig, UNetConfig
from ddpm.nets.discriminator import patch_grid_size
from ddpm.nets.latent_codec import LatentConfig
from ddpm.train.autoencoder_loss import AutoencoderLossConfig
from ddpm.train.distributed import batch_plan

# config.toml's model.kind → its config: the denoisers a DiffusionModel holds, and latent diffusion's
# first stage, which a run of its own trains (ddpm train --kind autoencoder)
MODEL_KINDS: dict[str, type] = {**NET_KINDS, "autoencoder": AutoencoderConfig}


@dataclass(frozen=True)
class DataConfig:
    spec: str = "digits"  # data spec: digits, mnist[:DIR], cifar10[:DIR], folder:PATH, swissroll, …
    root: str = ""  # data root for downloads and caches; "" → $DDPM_DATA or ~/.cache/ddpm
    image_size: int = 0  # resize + center-crop folders to this size; 0 → the data set's own size
    channels: int = 0  # 1 (grayscale) or 3 (RGB) for folders; 0 → the data set's own channels
    random_flip: bool = False  # random horizontal flips of training batches (DDPM used them on CIFAR-10)
    num_points: int = 20000  # size of generated 2-D point sets
    class_conditional: bool = False  # condition the network on the data set's class labels
    strict: bool = False  # refuse to train when a folder holds unusable image files (--strict-data)
    max_archive_gb: float = 16.0  # the most a folder: .tar/.zip may expand to (against archive bombs)

    def __post_init__(self) -> None:
        if self.image_size < 0:
            raise ValueError(f"data.image_size={self.image_size} must be ≥ 0 (0 = native size)")
        if self.channels not in (0, 1, 3):
            raise ValueError(f"data.channels={self.channels} must be 0 (native), 1 or 3")
        if not self.max_archive_gb > 0:
            raise ValueError(f"data.max_archive_gb={self.max_archive_gb} must be a positive number of GiB")
        if self.num_points < 1:
            raise ValueError(f"data.num_points={self.num_points} must be ≥ 1")


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: Literal["linear", "cosine", "sigmoid"] = "linear"  # β schedule (DDPM: linear 1e-4 → 0.02)
    num_steps: int = 1000  # T, the number of forward steps
    parameterization: Literal["eps", "x0", "v"] = "eps"  # what the network predicts (DDPM: ε)
    min_snr_gamma: float = 0.0  # min-SNR-γ loss weighting (Hang et al. 2023); 0 → off (eq. 14, unweighted)
    label_dropout: float = 0.1  # P(label → "no label") when class-conditional, for classifier-free guidance
    # the network also outputs Σ_θ in [β̃_t, β_t] (Nichol & Dhariwal 2021, eq. 15): 2× the image channels out
    learn_variance: bool = False
    # objective: simple = eq. 14; hybrid = L_simple + λ L_vlb (needs learn_variance); vlb = eq. 5 alone
    loss: Literal["simple", "hybrid", "vlb"] = "simple"
    vlb_weight: float = 0.001  # λ of L_hybrid (Improved DDPM: 0.001)
    importance_sampling: bool = False  # loss = vlb: draw t ∝ √E[L_t²] (Improved DDPM eq. 18), not uniformly

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"diffusion.num_steps={self.num_steps} must be ≥ 1")
        if self.min_snr_gamma < 0:
            raise ValueError(f"diffusion.min_snr_gamma={self.min_snr_gamma} must be ≥ 0 (0 = off)")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"diffusion.label_dropout={self.label_dropout} must be in [0, 1)")
        self._check_objective()

    def _check_objective(self) -> None:
        """The loss, learned variances and importance sampling must make sense together."""
        if not (math.isfinite(self.vlb_weight) and self.vlb_weight >= 0):
            raise ValueError(f"diffusion.vlb_weight={self.vlb_weight} must be finite and ≥ 0 (λ = 0.001)")
        if self.loss == "hybrid" and not self.learn_variance:
            raise ValueError(
                "diffusion.loss='hybrid' trains a learned variance; set diffusion.learn_variance = true "
                "(or use loss='simple')"
            )
        if self.learn_variance and self.loss == "simple":
            raise ValueError(
                "diffusion.learn_variance = true needs a loss that trains the variance: diffusion.loss = "
                "'hybrid' or 'vlb' (L_simple leaves it untrained)"
            )
        if self.importance_sampling and self.loss != "vlb":
            raise ValueError(
                f"diffusion.importance_sampling applies to diffusion.loss='vlb' only, not {self.loss!r}"
            )
        if self.loss == "vlb" and self.min_snr_gamma:
            raise ValueError(
                "diffusion.min_snr_gamma weights L_simple; diffusion.loss='vlb' has none (set it to 0)"
            )


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4  # peak learning rate of AdamW (DDPM: 2e-4 on CIFAR-10)
    warmup_steps: int = 5000  # linear learning-rate warm-up from 0 (DDPM: 5000)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warm-up (DDPM: constant)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (DDPM: none)
    beta1: float = 0.9  # Adam β₁
    beta2: float = 0.999  # Adam β₂
    grad_clip_norm: float = 1.0  # clip the global gradient norm to this (DDPM: 1.0); 0 → off
    ema_decay: float = 0.9999  # EMA decay of the weights (DDPM: 0.9999) ...
    ema_warmup: bool = True  # ... capped at (1 + step)/(10 + step) so short runs still average sensibly
    max_bad_steps: int = 20  # stop after this many non-finite steps in a row (each is skipped); 0 → never

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be ≥ 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay={self.ema_decay} must be in [0, 1)")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"optim.{name}={getattr(self, name)} must be in [0, 1)")
        if self.max_bad_steps < 0:
            raise ValueError(f"optim.max_bad_steps={self.max_bad_steps} must be ≥ 0 (0 = never stop)")
        if self.weight_decay < 0 or self.grad_clip_norm < 0:
            raise ValueError("optim.weight_decay and optim.grad_clip_norm must be ≥ 0")


@dataclass(frozen=True)
class RunConfig:
    steps: int = 800_000  # optimizer steps to train for (DDPM CIFAR-10: 800k)
    batch_size: int = 128  # images per optimizer step, over all processes and micro-steps (DDPM: 128)
    grad_accum_steps: int = 0  # micro-batches per process and step; 0 → 1, or derived from micro_batch_size
    micro_batch_size: int = 0  # images per forward/backward on one device; 0 → derived from the above
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # autocast; auto: bf16 on CUDA if supported
    time_budget_s: float = 0.0  # stop cleanly (with a checkpoint) after this many seconds; 0 → no limit
    seed: int = 0  # seeds data order, noise, dropout and preview samples
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    log_every: int = 50  # steps between log.jsonl lines
    sample_every: int = 5000  # steps between preview grids in samples/; 0 → only at the end
    checkpoint_every: int = 5000  # steps between checkpoints; 0 → only at the end
    keep_last: int = 2  # checkpoints kept on disk (the newest)
    preview_images: int = 64  # images in each preview grid
    # sampler for previews, the final grid and evaluation
    preview_sampler: Literal["ddpm", "ddim", "dpm++2m", "dpm++2m_sde", "euler", "heun", "euler_a"] = "ddim"
    preview_steps: int = 100  # sampler steps for previews
    # timesteps the preview sampler visits; None → that sampler's default (σ samplers karras, else uniform)
    preview_spacing: Literal["karras", "uniform", "trailing", "quadratic"] | None = None
    preview_eps_scale: float = 1.0  # previews divide the predicted noise by this (epsilon scaling); 1 → off
    num_threads: int = 0  # torch CPU threads; 0 → auto: all, one while the machine is crowded (threads.py)
    eval_every: int = 0  # steps between sample-quality evaluations (eval.jsonl, best checkpoint); 0 → off
    eval_samples: int = 1000  # samples drawn for each evaluation
    dist_timeout_s: float = 1800.0  # several processes: a rank waiting this long for the others fails

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "log_every",
            "keep_last",
            "preview_images",
            "preview_steps",
            "eval_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name}={getattr(self, name)} must be ≥ 1")
        for name in (
            "sample_every", "checkpoint_every", "num_threads", "time_budget_s", "eval_every",
            "grad_accum_steps", "micro_batch_size",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name}={getattr(self, name)} must be ≥ 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"run.device={self.device!r} is not allowed; choose auto, cpu, cuda or cuda:N")
        if not self.dist_timeout_s > 0:
            raise ValueError(f"run.dist_timeout_s={self.dist_timeout_s} must be > 0")
        allowed = spacings_for(self.preview_sampler)
        if self.preview_spacing is not None and self.preview_spacing not in allowed:
            raise ValueError(
                f"run.preview_spacing={self.preview_spacing!r} does not apply to the {self.preview_sampler} "
                f"sampler; choose {', '.join(allowed)}"
            )
        check_eps_scale(self.preview_eps_scale, "run.preview_eps_scale")
        batch_plan(self.batch_size, 1, self.grad_accum_steps, self.micro_batch_size)  # splits for 1 process

    def preview_options(self) -> dict[str, Any]:
        """Sampler, steps, spacing and ε scale of previews and evaluation, as ``DiffusionModel.sample`` takes
        them (spacing and ε scale only when set)."""
        options: dict[str, Any] = {"sampler": self.preview_sampler, "steps": self.preview_steps}
        if self.preview_spacing is not None:
            options["spacing"] = self.preview_spacing
        if self.preview_eps_scale != 1:
            options["eps_scale"] = self.preview_eps_scale
        return options


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)  # what to learn
    model: NetConfig | AutoencoderConfig = field(default_factory=UNetConfig)  # the network trained
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # forward process and objective
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer, schedule, EMA
    run: RunConfig = field(default_factory=RunConfig)  # length, logging, checkpoints, device
    control: ControlConfig = field(default_factory=ControlConfig)  # ControlNet's base and control, or concat
    latent: LatentConfig = field(default_factory=LatentConfig)  # diffusion on an autoencoder's latents
    # the autoencoder's objective (model.kind = "autoencoder" only)
    autoencoder_loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)

    def __post_init__(self) -> None:
        if self.diffusion.learn_variance and isinstance(self.model, MLPConfig):
            raise ConfigError(
                'diffusion.learn_variance is not supported for model.kind = "mlp" (2-D points) yet; '
                "learned variances need the U-Net (images)"
            )
        if self.control.enabled and not isinstance(self.model, UNetConfig):
            raise ConfigError("a control run (control.base or control.mode = 'concat') needs a U-Net of "
                              "images; set model.kind = 'unet'")  # fmt: skip
        if self.is_autoencoder:
            _check_autoencoder_run(self)
        elif self.latent.autoencoder and isinstance(self.model, MLPConfig):
            raise ConfigError('latent.autoencoder needs model.kind = "unet": latents are images, not points')

    @property
    def is_autoencoder(self) -> bool:
        """Whether this run trains latent diffusion's first stage rather than a diffusion model."""
        return isinstance(self.model, AutoencoderConfig)


def _check_autoencoder_run(config: TrainConfig) -> None:
    """What an autoencoder run cannot take: a latent space of its own, labels, evaluation, a patch
    discriminator deeper than its images allow."""
    if config.latent.autoencoder:
        raise ConfigError("latent.autoencoder names the autoencoder a diffusion run models; an autoencoder "
                          "run cannot have one (leave --latent out with --kind autoencoder)")  # fmt: skip
    if config.data.class_conditional:
        raise ConfigError("data.class_conditional applies to diffusion runs; an autoencoder is unconditional")
    if config.run.eval_every:
        raise ConfigError("run.eval_every applies to diffusion runs; an autoencoder run's previews show its "
                          "reconstructions (set run.eval_every = 0)")  # fmt: skip
    loss, size = config.autoencoder_loss, config.model.image_size
    if loss.disc_weight and patch_grid_size(size, loss.disc_num_layers) < 1:
        fits = [n for n in range(1, loss.disc_num_layers) if patch_grid_size(size, n) >= 1]
        fix = f"use at most {fits[-1]}" if fits else "set autoencoder_loss.disc_weight = 0"
        raise ConfigError(
            f"autoencoder_loss.disc_num_layers={loss.disc_num_layers} leaves no patch of {size}×{size} "
            f"images to judge; {fix}"
        )


def model_kind(model: NetConfig | AutoencoderConfig) -> str:
    return next(kind for kind, cls in MODEL_KINDS.items() if isinstance(model, cls))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested dict for TOML; the model table carries ``kind``. Only the tables that apply to the run:
    ``diffusion`` or ``autoencoder_loss``, and ``latent`` for a latent diffusion run."""
    data = to_dict(config)
    data["model"] = {"kind": model_kind(config.model), **data["model"]}
    if not config.control.enabled:  # a control run's table only
        del data["control"]
    del data["diffusion" if config.is_autoencoder else "autoencoder_loss"]
    if not config.latent.autoencoder:
        del data["latent"]
    return data


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys, wrong types and bad values raise ConfigError.

    An autoencoder's model table may give ``downsample_factor`` (f = 2, 4, 8, …) instead of spelling out
    ``block_out_channels``: the preset's levels are cut or extended (repeating the last width) to fit f.
    """
    data = dict(data)
    model = dict(data.pop("model", {}))
    kind = model.pop("kind", "unet")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r} is not allowed; choose one of {', '.join(MODEL_KINDS)}")
    factor = model.pop("downsample_factor", None) if kind == "autoencoder" else None
    config = from_dict(TrainConfig, {k: v for k, v in data.items()})
    net = coerce(MODEL_KINDS[kind], model, "model")
    if factor is not None:
        net = with_downsample_factor(net, factor)
    return dataclasses.replace(config, model=net)


def with_downsample_factor(config: AutoencoderConfig, factor: Any) -> AutoencoderConfig:
    """``config`` with log2(f) + 1 levels: its block_out_channels cut, or extended by their last width."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
        raise ConfigError(
            f"model.downsample_factor={factor!r} is not allowed; choose a power of two: 1, 2, 4, 8, …"
        )
    levels = factor.bit_length()  # f = 2^(levels − 1)
    channels = config.block_out_channels
    channels = channels[:levels] + (channels[-1],) * (levels - len(channels))
    return dataclasses.replace(config, block_out_channels=channels)


def model_spec(config: TrainConfig, sample_shape: tuple[int, ...], kind: str) -> ModelSpec:
    """The model a training config describes, for samples of ``sample_shape`` (images or points): read
    the way a checkpoint's stored config is, so a run samples the same during and after training."""
    return ModelSpec.from_config(config_to_dict(config), sample_shape, kind)
