"""Weight initialisation of the paper's code (diffusion_tf/nn.py: default_init).

Every dense and conv weight is variance-scaled with mode fan_avg and a uniform distribution, which is
Xavier-uniform with gain √scale; biases start at zero. Layers that end a residual branch (the second
conv of a residual block, the attention output, the final conv) use init_scale=0, which the paper's
code turns into scale 1e-10: the network starts as (almost) the identity on every residual path.
"""

from __future__ import annotations

import math

from torch import nn

ZERO_SCALE = 1e-10  # the paper's default_init(scale=0.) uses 1e-10 instead of an exact 0


def paper_init_(layer: nn.Linear | nn.Conv2d, scale: float = 1.0) -> None:
    """Xavier-uniform weight with gain √scale (= variance_scaling(scale, 'fan_avg', 'uniform')), bias 0."""
    nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(scale))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
