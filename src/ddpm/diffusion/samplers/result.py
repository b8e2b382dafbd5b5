"""What a sampler returns, and the bookkeeping of which steps to keep."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from torch import Tensor

FINAL_STEP = -1  # the t under which a trajectory records the returned sample


@dataclass
class TrajectoryStep:
    """x_t at the start of the step at timestep t and the x̂₀ predicted there, both on the CPU.

    The returned sample is recorded as ``t = -1`` with ``x_t = x0_pred = samples``.
    """

    t: int
    x_t: Tensor
    x0_pred: Tensor


@dataclass
class SampleResult:
    """Samples x₀ (B, …), the number of model evaluations, and the recorded trajectory (oldest first)."""

    samples: Tensor
    nfe: int
    trajectory: list[TrajectoryStep] = field(default_factory=list)


class TrajectoryRecorder:
    """Keeps CPU copies of (x_t, x̂₀) at the requested timesteps.

    ``requested``: None (keep nothing), ``"all"`` (every visited timestep and the final sample), or a
    collection of timesteps, each of which must be visited by the sampler or be ``-1`` (final sample).
    """

    def __init__(self, requested: str | Collection[int] | None, visited: list[int]) -> None:
        self.steps: list[TrajectoryStep] = []
        if requested is None:
            self.keep: set[int] = set()
        elif isinstance(requested, str):
            if requested != "all":
                raise ValueError(f"trajectory_steps={requested!r} is invalid; use None, 'all' or timesteps")
            self.keep = {*visited, FINAL_STEP}
        else:
            self.keep = {int(t) for t in requested}
            missing = sorted(self.keep - {*visited, FINAL_STEP})
            if missing:
                raise ValueError(
                    f"trajectory_steps {missing} are not visited; this run visits timesteps "
                    f"{visited[0]}…{visited[-1]} ({len(visited)} steps) and -1 for the final sample"
                )

    def record(self, t: int, x_t: Tensor, x0_pred: Tensor) -> None:
        if t in self.keep:
            self.steps.append(TrajectoryStep(t, _cpu_copy(x_t), _cpu_copy(x0_pred)))

    def finish(self, samples: Tensor) -> None:
        if FINAL_STEP in self.keep:
            final = _cpu_copy(samples)
            self.steps.append(TrajectoryStep(FINAL_STEP, final, final))


def _cpu_copy(x: Tensor) -> Tensor:
    # A copy, so that a model reusing its output buffer cannot change what was recorded.
    return x.detach().to("cpu", copy=True)
