"""Which torch device a process computes on: ``--device auto|cpu|cuda|cuda:N`` resolved once, the same
way for training, sampling, evaluation and editing."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int | None = None, world_size: int = 1) -> torch.device:
    """The device of this process: ``auto`` is CUDA when there is one; a process started by torchrun
    (``local_rank`` given) takes cuda:LOCAL_RANK."""
    cuda = torch.cuda.is_available()
    if name.startswith("cuda") and not cuda:
        raise ValueError(f"--device {name} was asked for but this torch build sees no CUDA device; use cpu")
    if world_size > 1 and name.startswith("cuda:"):
        raise ValueError(
            f"--device {name} names one GPU, but each of the {world_size} processes uses cuda:LOCAL_RANK; "
            "use auto or cuda"
        )
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    if name == "cuda" and local_rank is not None:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per machine, or use --device cpu"
            )
        return torch.device("cuda", local_rank)
    return torch.device(name)
