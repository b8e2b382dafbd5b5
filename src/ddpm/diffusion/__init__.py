"""Pure diffusion math on tensors: schedules, the forward process, objectives and samplers.

Imports nothing from the rest of the package (nets, train, data, eval, viz, cli): anything that
runs a network receives it as a callable ``model(x_t, t, **cond) -> Tensor``.

Timesteps are 0-based indices ``t ∈ {0, …, T-1}``; index ``t`` is the paper's step ``t + 1``
(as in the original DDPM code and in diffusers).
"""

from ddpm.diffusion.losses import DiffusionLoss, min_snr_weights
from ddpm.diffusion.process import (
    PARAMETERIZATIONS,
    eps_from_x0,
    predict_x0_eps,
    q_posterior,
    q_sample,
    training_target,
    v_target,
    x0_from_eps,
)
from ddpm.diffusion.schedules import SCHEDULES, NoiseSchedule, make_schedule

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULES",
    "DiffusionLoss",
    "NoiseSchedule",
    "eps_from_x0",
    "make_schedule",
    "min_snr_weights",
    "predict_x0_eps",
    "q_posterior",
    "q_sample",
    "training_target",
    "v_target",
    "x0_from_eps",
]
