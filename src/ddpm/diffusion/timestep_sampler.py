"""Importance sampling of the timestep for training on L_vlb (Nichol & Dhariwal 2021, §3.3, eq. 18).

L_vlb = E_{t ~ p_t}[L_t / p_t]; uniform t gives a noisy estimate, since the first few terms are far
larger than the rest. The paper samples p_t ∝ √E[L_t²] (Σ p_t = 1), keeping the last 10 values of
each term, and samples uniformly until every t has 10 (improved-diffusion's
``LossSecondMomentResampler``, which also mixes in a uniform 0.1% so that no t is starved).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LossSecondMomentResampler:
    """``sample(B)`` → (t (B,), weights 1/(T p_t) (B,)); ``update(t, losses)`` records the losses seen.

    State: the last ``history_per_term`` losses of every t (float64, CPU). Before every t has that many,
    t is uniform and the weights are 1; after, p_t = (1 − u) √mean(L_t²) / Σ_s √mean(L_s²) + u / T with
    u = ``uniform_prob``. The losses to record are the unweighted ones, L_t itself.
    """

    def __init__(self, num_steps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        for name, value in (("num_steps", num_steps), ("history_per_term", history_per_term)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; it must be an integer ≥ 1")
        if isinstance(uniform_prob, bool) or not isinstance(uniform_prob, (int, float)):
            raise ValueError(f"uniform_prob={uniform_prob!r} is invalid; it must lie in [0, 1]")
        if not 0 <= uniform_prob <= 1:
            raise ValueError(f"uniform_prob={uniform_prob!r} is invalid; it must lie in [0, 1]")
        self.num_steps = num_steps
        self.history_per_term = history_per_term
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(num_steps, history_per_term, dtype=torch.float64)  # (T, H)
        self.loss_counts = torch.zeros(num_steps, dtype=torch.int64)  # (T,) values held, ≤ H

    @property
    def warmed_up(self) -> bool:
        """True once every timestep holds ``history_per_term`` losses."""
        return bool((self.loss_counts == self.history_per_term).all())

    def probabilities(self) -> Tensor:
        """p_t (T,), float64: uniform before warm-up, ∝ √E[L_t²] (mixed with u/T) after (eq. 18)."""
        if not self.warmed_up:
            return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        root_mean_square = self.loss_history.square().mean(dim=1).sqrt()  # (T,)
        if not root_mean_square.sum() > 0:
            return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        p = root_mean_square / root_mean_square.sum()
        return (1 - self.uniform_prob) * p + self.uniform_prob / self.num_steps

    def sample(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(t (B,) int64, weights (B,) float32 = 1/(T p_t)) on ``device``; ``generator`` lives there too.

        Before warm-up t ~ U{0..T−1} (the draw of ``DiffusionLoss``) with weights 1; E[weight · L_t] is
        the mean of the terms either way.
        """
        if not self.warmed_up:
            t = torch.randint(0, self.num_steps, (batch,), generator=generator, device=device)
            return t, torch.ones(batch, device=device)
        p = self.probabilities()  # (T,) float64, CPU
        t = torch.multinomial(p.to(device), batch, replacement=True, generator=generator)  # (B,)
        weights = 1.0 / (self.num_steps * p[t.cpu()])
        return t, weights.to(device=device, dtype=torch.float32)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record L_t of each sample (``t`` (B,), ``losses`` (B,)); a full history drops its oldest value."""
        if t.shape != losses.shape or t.ndim != 1:
            raise ValueError(f"t {tuple(t.shape)} and losses {tuple(losses.shape)} must both be (B,)")
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            count = int(self.loss_counts[step])
            if count == self.history_per_term:
                self.loss_history[step] = torch.roll(self.loss_history[step], -1)
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] = count + 1

    def state_dict(self) -> dict[str, Tensor]:
        """The state as tensors (for a checkpoint): ``loss_history`` (T, H), ``loss_counts`` (T,)."""
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`'s tensors; their shapes must match this sampler's T and history."""
        history, counts = state["loss_history"], state["loss_counts"]
        if tuple(history.shape) != tuple(self.loss_history.shape) or tuple(counts.shape) != (self.num_steps,):
            raise ValueError(
                f"resampler state has shapes {tuple(history.shape)}, {tuple(counts.shape)}; this sampler "
                f"needs {tuple(self.loss_history.shape)}, ({self.num_steps},)"
            )
        self.loss_history = history.to(dtype=torch.float64, device="cpu").clone()
        self.loss_counts = counts.to(dtype=torch.int64, device="cpu").clone()
