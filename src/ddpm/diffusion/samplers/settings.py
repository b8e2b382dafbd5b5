"""A model's own sampler settings (:class:`SamplingConfig`): which sampler of :data:`SAMPLERS` and with which
options a model draws by default. Plain validated settings, no tensors: ``ddpm.model`` holds one per model
(and re-exports it), and every command that draws from a model starts from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ddpm.diffusion.eps_scaling import check_eps_scale
from ddpm.diffusion.samplers import SAMPLERS, spacings_for


@dataclass(frozen=True)
class SamplingConfig:
    """A model's own sampler: the default of previews, evaluation and every command that draws from it.

    Stored in a run's config as ``run.preview_sampler``, ``run.preview_steps``, ``run.preview_spacing``
    and ``run.preview_eps_scale``; None means the sampler's own default.
    """

    sampler: str = "ddim"  # a key of ddpm.diffusion.samplers.SAMPLERS
    steps: int | None = None  # sampler steps; None → the sampler's default
    spacing: str | None = None  # visited timesteps; None → the sampler's default
    eps_scale: float = 1.0  # epsilon scaling λ (Ning et al. 2024); 1 → off
    eta: float = 0.0  # DDIM η (ddim only): 0 deterministic, 1 ancestral

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):  # fmt: skip
            raise ValueError(f"steps={self.steps!r} is invalid; give an integer ≥ 1")
        if self.spacing is not None and self.spacing not in spacings_for(self.sampler):
            choices = ", ".join(spacings_for(self.sampler))
            raise ValueError(
                f"spacing {self.spacing!r} is not allowed for the {self.sampler} sampler; choose {choices}"
            )
        check_eps_scale(self.eps_scale)
        if not (isinstance(self.eta, (int, float)) and 0.0 <= self.eta <= 1.0):
            raise ValueError(f"eta={self.eta!r} is outside [0, 1]")
        if self.eta and self.sampler != "ddim":
            raise ValueError(f"eta={self.eta} applies to the ddim sampler only, not {self.sampler!r}")

    @classmethod
    def from_run_section(cls, run: Mapping[str, Any]) -> SamplingConfig:
        """The ``[run]`` table of a run's config (preview_* keys; absent keys take RunConfig's defaults)."""
        return cls(
            sampler=run.get("preview_sampler", "ddim"),
            steps=run.get("preview_steps", 100),
            spacing=run.get("preview_spacing"),
            eps_scale=run.get("preview_eps_scale", 1.0),
        )

    def with_overrides(self, **overrides: Any) -> SamplingConfig:
        """These settings with the non-None ``overrides`` applied. Naming another sampler drops this
        one's steps, spacing, η and λ (they were chosen for it) in favour of that sampler's defaults."""
        unknown = set(overrides) - {"sampler", "steps", "spacing", "eps_scale", "eta"}
        if unknown:
            raise ValueError(
                f"unknown sampling option(s) {', '.join(sorted(unknown))}; allowed: sampler, steps, spacing, "
                "eps_scale, eta"
            )
        given = {key: value for key, value in overrides.items() if value is not None}
        same_sampler = given.get("sampler", self.sampler) == self.sampler
        base = self if same_sampler else SamplingConfig(given["sampler"])
        return replace(base, **given)

    def sampler_options(self) -> dict[str, Any]:
        """The keyword arguments ``SAMPLERS[self.sampler]`` takes for these settings."""
        options: dict[str, Any] = {}
        if self.steps is not None:
            options["steps"] = self.steps
        if self.spacing is not None:
            options["spacing"] = self.spacing
        if self.sampler == "ddim":
            options["eta"] = self.eta
        return options
