"""The one model object: a denoiser network with its schedule, parameterization and own sampler.

import ddpm
model = ddpm.load("runs/digits")
images = model.sample(16)            # the run's own sampler (its previews and evaluation use it too)
ddpm.to_pil(images)[0]

Every path that draws from a model (the CLI, previews, evaluation, editing, reports) goes through
:meth:`DiffusionModel.sample_with_result`: the network is wrapped once (:meth:`DiffusionModel.denoiser`:
guidance on its raw output, then its parameterization, epsilon scaling and x̂₀ clipping) and handed
to a sampler of ``ddpm.diffusion.samplers``, which never knows what network is inside. A latent model (a codec
around the same sampler) or a controlled one (an extra conditioning input) is this object with more
parts, not a second copy of this path: a latent model (Rombach et al. 2022) samples in its
autoencoder's normalised latent space (``space_shape``) and decodes at the end (``decode``),
so its samples, trajectories and ``sample_shape`` are images like any other model's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ddpm.configio import coerce
from ddpm.control import ControlConfig, control_net, sampling_cond, trained_part
from ddpm.diffusion import NoiseSchedule, make_schedule
from ddpm.diffusion.guidance import ClassifierFreeGuidance, check_guidance_scale
from ddpm.diffusion.prediction import Parameterized
from ddpm.diffusion.samplers import SAMPLERS, SampleResult, TrajectoryStep, sample_seeds
from ddpm.diffusion.samplers.settings import SamplingConfig
from ddpm.nets import MLPConfig, UNetConfig, build_net
from ddpm.nets.latent_codec import LatentCodec, LatentConfig
from ddpm.rundir import autoencoder_checkpoint, read_checkpoint_meta, read_weights, resolve_checkpoint

NetConfig = UNetConfig | MLPConfig
NET_KINDS: dict[str, type] = {"unet": UNetConfig, "mlp": MLPConfig}  # config.toml's model.kind


@dataclass(frozen=True)
class ModelSpec:
    """What a model is apart from its weights: the network's config, the forward process, the shape
    and kind of its samples, and its own sampler."""

    net: NetConfig
    schedule: str  # β schedule name (linear, cosine, sigmoid)
    num_steps: int  # T
    parameterization: str  # what the network predicts: eps, x0 or v
    sample_shape: tuple[int, ...]  # (C, H, W) for images, (2,) for points
    kind: str  # "images" or "points"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # the network also outputs Σ_θ (Nichol & Dhariwal eq. 15) in C more channels (the ancestral sampler's)
    learned_variance: bool = False
    # σ² of the ancestral (ddpm) sampler without a learned variance: beta (σ² = β_t, DDPM's CIFAR-10 choice,
    # diffusers' fixed_large) or beta_tilde (the posterior's β̃_t, fixed_small); diffusers folders set it
    variance: str = "beta"
    control: ControlConfig | None = None  # a ControlNet's control and base (Zhang et al. 2023), or concat
    latent: LatentConfig | None = None  # a latent model's autoencoder; sample_shape is then its images'

    @classmethod
    def from_config(cls, config: Mapping[str, Any], sample_shape: Sequence[int], kind: str) -> ModelSpec:
        """From a run's config as stored (config.toml, a checkpoint's meta.json): the ``model``,
        ``diffusion`` and ``run.preview_*`` sections; the rest (data, optimizer) is training's."""
        net = dict(config.get("model", {}))
        net_kind = net.pop("kind", "unet")
        if net_kind not in NET_KINDS:
            raise ValueError(f"model.kind={net_kind!r} is not allowed; choose one of {', '.join(NET_KINDS)}")
        diffusion = config.get("diffusion", {})
        latent = config.get("latent", {})
        return cls(
            net=coerce(NET_KINDS[net_kind], net, "model"),
            schedule=diffusion.get("schedule", "linear"),
            num_steps=diffusion.get("num_steps", 1000),
            parameterization=diffusion.get("parameterization", "eps"),
            sample_shape=tuple(sample_shape),
            kind=kind,
            sampling=SamplingConfig.from_run_section(config.get("run", {})),
            learned_variance=diffusion.get("learn_variance", False),
            control=ControlConfig.from_section(config.get("control")),
            latent=coerce(LatentConfig, latent, "latent") if latent.get("autoencoder") else None,
        )


@dataclass
class DiffusionModel:
    """A denoiser network with its schedule, declared parameterization and own sampler."""

    net: nn.Module
    spec: ModelSpec
    schedule: NoiseSchedule
    step: int = 0  # training steps behind these weights
    codec: LatentCodec | None = None  # a latent model's frozen autoencoder and latent normalisation

    parameterization = property(lambda self: self.spec.parameterization)
    sample_shape = property(lambda self: self.spec.sample_shape)
    kind = property(lambda self: self.spec.kind)
    sampling = property(lambda self: self.spec.sampling)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.spec.net, "num_classes", None)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def space_shape(self) -> tuple[int, ...]:
        """The shape diffusion runs in (x_T, inversions): a latent model's latents, else sample_shape."""
        return self.sample_shape if self.codec is None else self.codec.latent_shape(self.sample_shape)

    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] → the space diffusion runs in: a latent model's normalised
        posterior means (deterministic, for inversion and inpainting); the images themselves otherwise."""
        return images if self.codec is None else self.codec.encode(images.to(self.device))

    @torch.inference_mode()
    def decode(self, x: Tensor) -> Tensor:
        """:meth:`encode`'s inverse: a latent model decodes (N, c, h, w) to images clamped to [-1, 1]."""
        return x if self.codec is None else self.codec.decode(x.to(self.device)).clamp(-1, 1)

    def denoiser(
        self, *, guidance: float = 1.0, eps_scale: float = 1.0, clip_x0: float | None = None
    ) -> Parameterized:
        """The network as samplers take it (a ``diffusion.prediction.Denoiser``): classifier-free guidance
        on its raw output (scale s ≠ 1, class-conditional models only), then its parameterization,
        epsilon scaling λ and x̂₀ clipping to [−c, c]; a learned variance travels as the Prediction's
        ``variance_frac`` (guidance leaves it the conditional call's)."""
        check_guidance_scale(guidance)
        if guidance == 1:
            raw = self.net
        elif self.num_classes is None:
            raise ValueError(
                f"guidance={guidance} needs a class-conditional model; this one is unconditional "
                "(leave it at 1.0)"
            )
        else:
            raw = ClassifierFreeGuidance(  # label K means "no label"
                self.net, guidance, self.num_classes, learned_variance=self.spec.learned_variance
            )
        return Parameterized(raw, self.schedule, self.parameterization, eps_scale=eps_scale, clip_x0=clip_x0,
                             learned_variance=self.spec.learned_variance)  # fmt: skip

    def labels(self, labels: int | Sequence[int] | Tensor | None, n: int) -> Tensor | None:
        """(n,) class indices on the model's device from one label or one per sample; None stays None."""
        if labels is None:
            return None
        if self.num_classes is None:
            raise ValueError("labels given to an unconditional model; train with data.class_conditional")
        values = torch.as_tensor([labels] * n if isinstance(labels, int) else labels)
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got {values.dtype}")
        values = values.reshape(-1).long()
        if values.numel() != n:
            raise ValueError(f"got {values.numel()} labels for {n} samples; give one label or one per sample")
        bad = values[(values < 0) | (values >= self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"class {int(bad[0])} is out of range; this model has classes 0…{self.num_classes - 1}"
            )
        return values.to(self.device)

    def default_labels(self, n: int) -> Tensor | None:
        """Classes 0, 1, …, K−1, 0, … for a class-conditional model (previews, evaluation); else None."""
        return None if self.num_classes is None else torch.arange(n) % self.num_classes

    def sample_with_result(
        self,
        n: int | None = None,
        *,
        noise: Tensor | None = None,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        labels: int | Sequence[int] | Tensor | None = None,
        guidance: float = 1.0,
        control: Tensor | None = None, control_scale: float | Sequence[float] = 1.0,  # a ControlNet's
        batch_size: int = 256,
        clip_x0: float | None = None,
        progress: Callable[[int], None] | None = None,
        callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
        trajectory_steps: Any = None,
        **sampling: Any,
    ) -> list[SampleResult]:  # fmt: skip
        """Draw ``n`` samples (or sample from given x_T ``noise`` (N, …)) in batches of ``batch_size``.

        Image i depends only on its seed (``sample_seeds(seed, n)[i]``, or ``seeds[i]``), not on the
        batch size. ``sampling``: ``sampler``, ``steps``, ``spacing``, ``eta``, ``eps_scale``; each one
        left out or None is the model's own (:class:`SamplingConfig`). ``labels``: one class for all
        samples or one per sample. ``guidance`` is the classifier-free guidance scale s ≥ 0 (diffusers'
        ``guidance_scale``; Ho & Salimans 2022 eq. 6 with w = s − 1): 1 is the plain model and needs no
        labels, any other s needs them. ``eps_scale`` λ divides the predicted noise at every step.
        ``control`` (N, C, H, W): a control run's per sample (None: dropped); ``control_scale``: ControlNet.
        ``callback(i, t, x_t, x̂₀)`` runs after the model call of step i of each batch (the samplers' own).
        A latent model's ``noise`` is x_T in its latent space (``space_shape``); its samples, trajectory
        and callback tensors are decoded to images.
        """
        settings = self.sampling.with_overrides(**sampling)
        n = _count(n, noise)
        _check_positive_int("batch_size", batch_size)
        if clip_x0 is None and self.kind == "images" and self.codec is None:
            clip_x0 = 1.0  # images live in [-1, 1]; normalised latents have no such bound
        if callback is not None and self.codec is not None:
            callback = self._decoding(callback)
        denoiser = self.denoiser(guidance=guidance, eps_scale=settings.eps_scale, clip_x0=clip_x0)
        labels = self.labels(labels, n)
        if guidance != 1 and labels is None:
            raise ValueError(f"guidance={guidance} needs labels: guidance steers samples towards a class")
        seeds = sample_seeds(seed, n) if seeds is None else list(seeds)
        noise = None if noise is None else self.check_noise(noise)
        results = []
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = slice(start, start + batch_size)
                batch_seeds = seeds[rows]
                result = SAMPLERS[settings.sampler](
                    denoiser, self.schedule,
                    (len(batch_seeds), *self.space_shape) if noise is None else noise[rows],
                    seeds=batch_seeds, device=self.device, trajectory_steps=trajectory_steps,
                    callback=callback, cond=sampling_cond(self.net, labels, control, control_scale, rows, n),
                    **self._sampler_options(settings),
                )  # fmt: skip
                results.append(result if self.codec is None else self._decoded(result))
                if progress is not None:
                    progress(len(batch_seeds))
        return results

    def sample(self, n: int | None = None, **options: Any) -> Tensor:
        """Samples on the CPU: images in [-1, 1] (N, C, H, W) or points (N, 2); options as
        :meth:`sample_with_result`."""
        return torch.cat([r.samples.cpu() for r in self.sample_with_result(n, **options)])

    def _sampler_options(self, settings: SamplingConfig) -> dict[str, Any]:
        """``settings``' keyword arguments for their sampler, with this model's ancestral variance (ddpm)."""
        options = settings.sampler_options()
        if settings.sampler == "ddpm":
            options["variance"] = self.spec.variance
        return options

    def _decoded(self, result: SampleResult) -> SampleResult:
        """A latent model's result in pixel space: its samples and recorded x_t, x̂₀ decoded."""
        steps = [TrajectoryStep(s.t, self.decode(s.x_t).cpu(), self.decode(s.x0_pred).cpu())
                 for s in result.trajectory]  # fmt: skip
        return SampleResult(self.decode(result.samples), result.nfe, steps)

    def _decoding(self, callback: Callable[[int, int, Tensor, Tensor], None]) -> Callable:
        return lambda i, t, x_t, x0: callback(i, t, self.decode(x_t), self.decode(x0))  # images, as usual

    def check_noise(self, noise: Tensor) -> Tensor:
        """x_T as a float (N, *space_shape) batch on the model's device."""
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            raise ValueError(f"noise must be a float tensor, got {getattr(noise, 'dtype', type(noise))}")
        if noise.ndim != len(self.space_shape) + 1 or tuple(noise.shape[1:]) != self.space_shape:
            wanted = ", ".join(map(str, self.space_shape))
            raise ValueError(f"noise has shape {tuple(noise.shape)}; this model needs (N, {wanted})")
        return noise.to(self.device)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; it must be an integer ≥ 1")


def _count(n: int | None, noise: Tensor | None) -> int:
    """How many samples: ``n``, or the rows of ``noise`` (giving both, they must agree)."""
    if noise is None:
        if n is None:
            raise ValueError("give n (how many samples) or noise (x_T to sample from)")
        _check_positive_int("n", n)
        return n
    if n is not None and n != len(noise):
        raise ValueError(f"n={n} does not match the {len(noise)} rows of noise; give one or the other")
    return len(noise)


def build_model(
    spec: ModelSpec, net: nn.Module | None = None, *, step: int = 0, codec: LatentCodec | None = None
) -> DiffusionModel:
    """The model ``spec`` describes around ``net`` (default: a new, untrained network — a baseline); a
    latent model's ``codec`` is read from its autoencoder run unless given."""
    if codec is None and spec.latent is not None:
        codec = load_codec(spec.latent)
    if net is None and spec.control is not None:  # a ControlNet: the frozen base from its run, a branch
        net = control_net(spec.net, spec.control)  # copied from it; a concat run: a U-Net of [x_t, control]
    return DiffusionModel(
        net=build_net(spec.net) if net is None else net,
        spec=spec,
        schedule=make_schedule(spec.schedule, spec.num_steps),
        step=step,
        codec=codec,
    )


def load_codec(latent: LatentConfig) -> LatentCodec:
    """The frozen autoencoder (EMA weights) and latent normalisation a latent run names: the checkpoint of
    its autoencoder run with the recorded weights (the newest when none is recorded yet)."""
    checkpoint = autoencoder_checkpoint(latent.autoencoder, latent.autoencoder_sha256)
    return LatentCodec.from_checkpoint(checkpoint, read_checkpoint_meta(checkpoint), read_weights(checkpoint))


def load(path: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a run directory (its newest valid checkpoint) or a checkpoint folder; ``weights`` is ``ema``
    (default) or ``raw``."""
    _, checkpoint = resolve_checkpoint(path)  # verifies the checkpoint's files against its manifest
    return from_checkpoint(checkpoint, read_checkpoint_meta(checkpoint), weights=weights, device=device)


def from_checkpoint(
    checkpoint: Path, meta: Mapping[str, Any], *, weights: str = "ema", device: str | torch.device = "cpu"
) -> DiffusionModel:
    """The model of a verified checkpoint folder whose ``meta.json`` is ``meta``."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights={weights!r} is not allowed; choose ema or raw")
    spec = ModelSpec.from_config(meta["config"], meta["sample_shape"], meta["kind"])
    model = build_model(spec, step=meta["step"])
    trained_part(model.net).load_state_dict(read_weights(checkpoint, "ema" if weights == "ema" else "model"))
    model.net.to(device).eval()
    if model.codec is not None:
        model.codec.to(device)
    return model


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W) → uint8 (N, H, W, C), rounding to the nearest level."""
    scaled = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


def to_pil(images: Tensor) -> list[Image.Image]:
    """[-1, 1] (N, C, H, W) → PIL images (mode L or RGB)."""
    array = to_uint8(images)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]
