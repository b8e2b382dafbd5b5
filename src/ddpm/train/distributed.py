"""Several processes, one optimisation: torchrun + DistributedDataParallel, the batch plan, precision.

Launch with ``torchrun --nproc-per-node N -m ddpm train ...`` (or ``ddpm train --nproc N`` on one
machine). torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
:func:`distributed_session` joins the process group (NCCL on GPUs, gloo on CPUs) and always leaves it.

The global batch of step s and every random draw for it (timesteps, noise, flips, label dropout) are
the same on every rank (:mod:`ddpm.train.step`); the batch is cut into world_size × grad_accum_steps
equal shards, and rank r computes shards r·A … r·A + A − 1. So one process with batch B, N processes
with B/N each, and one process with A micro-batches of B/A make the same optimizer steps, up to float
rounding. Only dropout masks depend on the shard (seeded by run seed, step and shard index).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddpm.devices import resolve_device

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What gloo and NCCL say (as plain RuntimeErrors from inside backward) when a peer died or hung.
COMMUNICATION_FAILURE = re.compile(r"gloo|nccl|connection (reset|closed|refused)|timed out", re.IGNORECASE)


class PeerFailed(RuntimeError):
    """Another rank failed (or died); this rank stops too."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among world_size processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # rank on this machine: picks the GPU
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""  # "nccl" or "gloo"; "" for a single process without a process group

    @property
    def is_main(self) -> bool:
        """Rank 0 checks the run directory and writes config.toml, logs, previews and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class BatchPlan:
    """The global batch of one optimizer step, cut into world_size × accum_steps shards of micro_batch."""

    global_batch: int  # run.batch_size: images per optimizer step, summed over processes and micro-steps
    world_size: int  # processes
    accum_steps: int  # micro-batches each process runs before the optimizer step
    micro_batch: int  # images per forward/backward on one device

    def shards_of(self, rank: int) -> range:
        return range(rank * self.accum_steps, (rank + 1) * self.accum_steps)

    def shard(self, index: int) -> slice:
        return slice(index * self.micro_batch, (index + 1) * self.micro_batch)


def batch_plan(
    batch_size: int, world_size: int, grad_accum_steps: int = 0, micro_batch_size: int = 0
) -> BatchPlan:
    """Derive accumulation steps and per-device batch from the global batch (run.batch_size).

    ``grad_accum_steps`` 0 means: from ``micro_batch_size`` if that is set, else 1. Raises ValueError
    when the global batch does not split evenly.
    """
    world = world_size
    if grad_accum_steps and micro_batch_size:
        if world * grad_accum_steps * micro_batch_size != batch_size:
            raise ValueError(
                f"run.batch_size={batch_size} is not {world} processes × run.grad_accum_steps="
                f"{grad_accum_steps} × run.micro_batch_size={micro_batch_size}; set one of the two to 0"
            )
        accum = grad_accum_steps
    elif micro_batch_size:
        if batch_size % (world * micro_batch_size):
            raise ValueError(
                f"run.batch_size={batch_size} is not divisible by {world} processes × "
                f"run.micro_batch_size={micro_batch_size}; use a multiple of {world * micro_batch_size}"
            )
        accum = batch_size // (world * micro_batch_size)
    else:
        accum = grad_accum_steps or 1
        if batch_size % (world * accum):
            raise ValueError(
                f"run.batch_size={batch_size} is not divisible by {world} processes × "
                f"run.grad_accum_steps={accum}; use a multiple of {world * accum}"
            )
    return BatchPlan(batch_size, world, accum, batch_size // (world * accum))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def distributed_session(device_name: str, timeout_s: float) -> Iterator[DistContext]:
    """Join the process group torchrun describes (if any), yield this rank's context, always leave.

    A collective that waits longer than ``timeout_s`` for the other ranks fails, so a rank whose
    peer died exits with an error instead of hanging. A process group set up by the caller is used
    and left alone.
    """
    if not launched_by_torchrun() and not dist.is_initialized():
        yield DistContext(device=resolve_device(device_name))
        return
    owned = not dist.is_initialized()
    if owned:
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        world = dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = resolve_device(device_name, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if owned:
        bind = device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": device} if bind else {}),  # torch ≥ 2.3: NCCL set up for this GPU at once
        )
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend())
    try:
        yield context
        if owned:
            dist.barrier()  # leave together: no rank tears gloo down while a peer still talks to it
    except RuntimeError as err:
        if not (isinstance(err, dist.DistError) or COMMUNICATION_FAILURE.search(str(err))):
            raise
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PeerFailed(
            f"rank {context.rank}: the process group failed ({first_line}); another rank has probably "
            "died: see its output"
        ) from err
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def ddp_wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun, which averages its gradients over ranks during
    backward (and checks that the ranks' weights agree); ``module`` itself for one process."""
    if not ctx.distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def all_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``values`` (on ctx.device) over all ranks, in place; a no-op for one process."""
    if ctx.distributed:
        dist.all_reduce(values)
    return values


def any_ranks(*flags: bool, ctx: DistContext) -> tuple[bool, ...]:
    """Each flag true on every rank when it is true on at least one (one all-reduce for all flags), so
    a signal or a time budget seen by one rank stops every rank after the same step."""
    if not ctx.distributed:
        return tuple(bool(flag) for flag in flags)
    counts = all_sum(torch.tensor([float(flag) for flag in flags], device=ctx.device), ctx)
    return tuple(bool(count > 0) for count in counts.tolist())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (an all-reduce, so the process-group timeout applies)."""
    all_sum(torch.zeros(1, device=ctx.device), ctx)


def broadcast_text(text: str, ctx: DistContext) -> str:
    """Rank 0's ``text`` on every rank, sent as UTF-8 bytes (no pickling)."""
    if not ctx.distributed:
        return text
    data = text.encode("utf-8") if ctx.is_main else b""
    length = torch.tensor([len(data)], dtype=torch.int64, device=ctx.device)
    dist.broadcast(length, src=0)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=ctx.device)
    if ctx.is_main and data:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode("utf-8")


def share_from_main(ctx: DistContext, work: Callable[[], str]) -> str:
    """Run ``work`` on rank 0 only and give its text result to every rank.

    An exception on rank 0 is raised there as it is; the other ranks raise PeerFailed naming it.
    """
    if not ctx.distributed:
        return work()
    result, failure = "", None
    if ctx.is_main:
        try:
            result = work()
        except Exception as err:  # every rank must learn of it, or they wait for rank 0 forever
            failure = err
    shared = broadcast_text(f"error:{failure}" if failure is not None else f"ok:{result}", ctx)
    if failure is not None:
        raise failure
    status, _, text = shared.partition(":")
    if status == "error":
        raise PeerFailed(f"rank {ctx.rank}: rank 0 stopped: {text}")
    return text


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on a CUDA device that supports it, else fp32 (always fp32 on CPU).

    bf16 and fp16 may be asked for on a CPU too (autocast runs there; bf16 is fast only on CPUs with
    AVX512-BF16/AMX, fp16 is slow and there for testing the GradScaler path).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"run.precision={precision!r} is not allowed; choose one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"run.precision='bf16' is not supported by {torch.cuda.get_device_name(device)}; use fp16 or fp32"
        )
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for the forward pass and loss of a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling so small gradients do not flush to zero; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def check_nproc(nproc: int) -> None:
    """``ddpm train --nproc N``: N ≥ 1, and under torchrun it must match torchrun's process count."""
    if nproc < 1:
        raise ValueError(f"--nproc {nproc} must be ≥ 1")
    local_world = os.environ.get("LOCAL_WORLD_SIZE")
    if launched_by_torchrun() and local_world is not None and int(local_world) != nproc:
        raise ValueError(
            f"--nproc {nproc} disagrees with torchrun's --nproc-per-node {local_world}; "
            "leave --nproc out under torchrun"
        )


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The arguments after ``train`` without ``--nproc N`` (or an abbreviation argparse accepts): the
    relaunched processes must not relaunch, and torchrun's parser finds ``--nproc`` ambiguous."""
    rest = list(argv)[list(argv).index("train") + 1 :]
    kept, skip_value = [], False
    for token in rest:
        name = token.split("=", 1)[0]
        if skip_value:
            skip_value = False
        elif len(name) >= 3 and "--nproc".startswith(name):
            skip_value = "=" not in token
        else:
            kept.append(token)
    return kept


def torchrun_command(nproc: int, train_argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m ddpm train ARGS``.

    ``--standalone`` rendezvous on this machine through a free local port; each process runs
    ``python -m ddpm train ARGS`` with the torchrun environment set.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "ddpm",
        "train",
        *train_argv,
    ]


def relaunch_under_torchrun(nproc: int, train_argv: Sequence[str]) -> None:
    """Replace this process by torchrun running ``nproc`` copies of ``ddpm train`` (POSIX exec), so
    signals sent to this process id reach torchrun, which passes them on to every rank."""
    command = torchrun_command(nproc, train_argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
