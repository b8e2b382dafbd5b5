"""Which timesteps a sampler visits, and the respaced chain over them.

A sampler with S < T steps runs the Markov chain restricted to timesteps t_0 > t_1 > … > t_{S−1}:
step i goes from ᾱ_{t_i} to ᾱ_{t_{i+1}}, and the last step to ᾱ = 1 (clean data). This is the
respacing of Nichol & Dhariwal 2021 (§4, improved-diffusion ``respace.py``): β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i+1}}.
"""

from __future__ import annotations

import itertools
import reprlib
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ddpm.diffusion.schedules import NoiseSchedule

SPACINGS: tuple[str, ...] = ("uniform", "trailing", "quadratic")


def timesteps(num_train_steps: int, num_steps: int, spacing: str = "uniform") -> Tensor:
    """The S = ``num_steps`` timestep indices a sampler visits, int64, descending.

    - ``uniform``: t = k·⌊T/S⌋ for k = 0 … S−1 (DDIM paper §D.2 "uniform"; diffusers ``leading`` with
      ``steps_offset=0``). Always ends at t = 0.
    - ``trailing``: round(T − k·T/S) − 1 (Lin et al. 2024, Table 2; diffusers ``trailing``). Always
      starts at t = T − 1.
    - ``quadratic``: ⌊(k·√(0.8T)/(S−1))²⌋ (DDIM repo ``skip_type="quad"``); dense at low noise.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if not isinstance(num_train_steps, int) or num_train_steps < 1:
        raise ValueError(f"num_train_steps={num_train_steps!r} is invalid; T must be an integer ≥ 1")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"steps={num_steps!r} is invalid; it must be an integer in 1…{num_train_steps} (T)")
    T, S = num_train_steps, num_steps
    if spacing == "uniform":
        ascending = np.arange(S) * (T // S)
    elif spacing == "trailing":
        # diffusers' expression; the float arange can yield one extra element near 0, hence [:S].
        ascending = (np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1)[:S][::-1]
    else:
        ascending = (np.linspace(0, np.sqrt(T * 0.8), S) ** 2).astype(np.int64)
    if len(np.unique(ascending)) != S:
        raise ValueError(
            f"spacing {spacing!r} with steps={S} repeats timesteps for T={T}; use fewer steps or another "
            "spacing"
        )
    return torch.tensor(ascending[::-1].tolist(), dtype=torch.int64)


class ChainStep(NamedTuple):
    """One step of the respaced chain: from timestep ``t`` (ᾱ_t) to the next one (ᾱ_prev)."""

    t: int
    alpha_bar: float  # ᾱ_{t_i}, float64 as a Python float
    alpha_bar_prev: float  # ᾱ_{t_{i+1}}, or 1.0 after the last step


def respaced_chain(schedule: NoiseSchedule, steps: Tensor) -> list[ChainStep]:
    """(t_i, ᾱ_{t_i}, ᾱ_{t_{i+1}}) for descending ``steps``; the last step goes to ᾱ = 1."""
    ts = [int(t) for t in steps]
    descending = all(a > b for a, b in itertools.pairwise(ts))
    if not ts or not descending or ts[0] >= schedule.num_steps or ts[-1] < 0:
        raise ValueError(
            f"timesteps {reprlib.repr(ts)} are invalid; need a non-empty, strictly descending sequence in "
            f"0…{schedule.num_steps - 1}"
        )
    alpha_bar = schedule.alpha_bar.tolist()  # float64 → Python floats
    prevs = [alpha_bar[t] for t in ts[1:]] + [1.0]  # ᾱ = 1 after the last step: clean data
    return [ChainStep(t, alpha_bar[t], prev) for t, prev in zip(ts, prevs, strict=True)]
