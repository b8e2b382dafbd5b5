"""Pure diffusion math on tensors: schedules, the forward process, objectives and samplers.

Imports nothing from the rest of the package (nets, train, data, eval, viz, cli): anything that
runs a network receives it as a callable ``net(x_t, t, **cond) -> Tensor``; samplers receive it wrapped
by its parameterization, ``Parameterized(net, schedule, parameterization)``, a denoiser that returns the
:class:`Prediction` (x̂₀, ε̂), with the learned variance of Nichol & Dhariwal's eq. 15 where the network
has one (``variances``). ``likelihood`` is the variational bound of DDPM's eq. 5 (NLL in bits/dim).

Timesteps are 0-based indices ``t ∈ {0, …, T-1}``; index ``t`` is the paper's step ``t + 1``
(as in the original DDPM code and in diffusers).
"""

from ddpm.diffusion.likelihood import VariationalBound, bits_per_dim, variational_bound
from ddpm.diffusion.losses import DiffusionLoss, HybridLoss, VLBLoss, min_snr_weights
from ddpm.diffusion.prediction import Denoiser, Parameterized, Prediction
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
from ddpm.diffusion.timestep_sampler import LossSecondMomentResampler

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULES",
    "Denoiser",
    "DiffusionLoss",
    "HybridLoss",
    "LossSecondMomentResampler",
    "NoiseSchedule",
    "Parameterized",
    "Prediction",
    "VLBLoss",
    "VariationalBound",
    "bits_per_dim",
    "eps_from_x0",
    "make_schedule",
    "min_snr_weights",
    "predict_x0_eps",
    "q_posterior",
    "q_sample",
    "training_target",
    "v_target",
    "variational_bound",
    "x0_from_eps",
]
