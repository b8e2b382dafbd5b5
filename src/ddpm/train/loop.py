"""The training loop: Algorithm 1 of DDPM with AdamW, warm-up, gradient clipping and EMA.

One process, or one of several under torchrun (DistributedDataParallel, see
:mod:`ddpm.train.distributed`): every rank trains its shards of each global batch; rank 0 alone
keeps the EMA and writes logs, previews, evaluations and checkpoints."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddpm.control import control_net, trained_part
from ddpm.data import Dataset
from ddpm.nets import build_net
from ddpm.rundir import RunDir
from ddpm.train.checkpoint import (
    assert_finite,
    load_checkpoint,
    mark_best,
    optimizer_from_tensors,
    save_checkpoint,
)
from ddpm.train.config import TrainConfig, config_to_dict
from ddpm.train.data_order import EpochOrder
from ddpm.train.distributed import (
    BatchPlan,
    DistContext,
    all_sum,
    any_ranks,
    barrier,
    batch_plan,
    ddp_wrap,
    grad_scaler,
    resolve_precision,
)
from ddpm.train.distributed import resolve_device as resolve_device  # re-exported
from ddpm.train.ema import EMA
from ddpm.train.objective import AutoencoderObjective, DiffusionObjective, build_objective
from ddpm.train.progress import Progress
from ddpm.train.signals import StopRequests
from ddpm.train.threads import ThreadGovernor


class NonFiniteTrainingError(RuntimeError):
    """optim.max_bad_steps steps in a row had a non-finite loss or gradient; training stopped."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps completed
    stopped_early: bool  # by a signal or the time budget
    final_loss: float  # mean loss of the last logging interval
    seconds: float  # wall time of this invocation


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up to the peak rate (DDPM: 5000 steps), then constant or cosine to zero."""
    opt = config.optim
    warm = min(1.0, (step + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0
    if opt.lr_schedule == "cosine":
        progress = min(1.0, max(0.0, (step - opt.warmup_steps) / max(1, config.run.steps - opt.warmup_steps)))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))
    return warm


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    opt = config.optim
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    trained = [p for p in model.parameters() if p.requires_grad]  # not a ControlNet's frozen base
    return torch.optim.AdamW(
        trained, lr=opt.lr, betas=(opt.beta1, opt.beta2), weight_decay=opt.weight_decay, **fast
    )


def train_loop(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    *,
    resume_from: Path | None = None,
    stop: StopRequests | None = None,
    previews: Any = None,
    evaluate: Any = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train ``config`` on ``dataset`` into ``run_dir`` (which must already hold config.toml).

    ``previews(step, ema_model)`` draws preview samples, when given. ``evaluate(step, ema_model)``
    returns ``(metrics, lower_is_better_value)``; its results go to eval.jsonl and the best
    checkpoint by that value is kept in ``checkpoints/best``. Under torchrun ``dist`` is this rank's
    context; ``previews`` and ``evaluate`` are then given to rank 0 only.
    """
    started, run = time.perf_counter(), config.run
    t = _setup(config, dataset, RunDir(run_dir), resume_from, dist, started)
    governor = ThreadGovernor.for_run(run.num_threads, t.ctx.device, t.ctx.world_size, t.progress.write)
    stopped_early = False
    t.model.train()
    while t.step < config.run.steps:
        grad_norm = _train_step(t)
        if governor is not None:
            governor.tick(t.step)
        if t.step % config.run.log_every == 0 or t.step == config.run.steps:
            _log_interval(t, grad_norm)
        _periodic_actions(t, previews, evaluate)
        if _stop_requested(t, stop):
            stopped_early = True
            break
    t.progress.close()
    if governor is not None:
        torch.set_num_threads(governor.max_threads)  # previews and later work in this process get all
    _save(t, t.step)
    if previews is not None:
        previews(t.step, t.ema.model, final=True)
    barrier(t.ctx)  # the others wait for rank 0's final checkpoint and previews
    return TrainResult(run_dir, t.step, stopped_early, t.last_loss, time.perf_counter() - started)


@dataclass
class _Training:
    """What one invocation of :func:`train_loop` works with; the counters are saved in checkpoints."""

    config: TrainConfig
    dataset: Dataset
    run_dir: RunDir
    ctx: DistContext
    plan: BatchPlan
    precision: str  # fp32, bf16 or fp16 (resolved)
    model: nn.Module  # this rank's network
    net: nn.Module  # model, or its DistributedDataParallel wrapper
    ema: EMA | None  # rank 0 only
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler | None  # fp16 only
    objective: DiffusionObjective | AutoencoderObjective  # one step's gradients; extra checkpoint meta
    order: EpochOrder
    progress: Progress
    started: float  # perf_counter at the start of this invocation (--time budgets this invocation)
    earlier_s: float  # training wall time of the invocations before it (0 for a checkpoint without it)
    step: int  # optimizer steps completed
    interval_loss: torch.Tensor  # sum of the applied steps' losses since the last log line
    interval_steps: int
    interval_start: float
    skipped: int  # non-finite steps skipped in all
    bad_in_a_row: int  # ... and in a row, up to now
    best_score: float  # the best evaluation score so far (lower is better)
    last_loss: float = math.nan  # mean loss of the last logging interval


def _setup(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: RunDir,
    resume_from: Path | None,
    dist: DistContext | None,
    started: float,
) -> _Training:
    """Seed, build the network, EMA, optimizer and loss, and restore them from ``resume_from``."""
    run = config.run
    ctx = dist or DistContext(device=resolve_device(run.device))
    device = ctx.device
    plan = batch_plan(run.batch_size, ctx.world_size, run.grad_accum_steps, run.micro_batch_size)
    precision = resolve_precision(run.precision, device)
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    torch.manual_seed(run.seed)  # initial weights, the same on every rank
    # a ControlNet run: a trainable branch over its frozen base, whose weights come from the base run; a
    # concat run: a new U-Net of [x_t, control]
    built = control_net(config.model, config.control) if config.control.enabled else build_net(config.model)
    model = built.to(device)
    if dataset.kind == "images":
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, config.optim.ema_decay, config.optim.ema_warmup) if ctx.is_main else None
    optimizer = build_optimizer(model, config, device)
    scaler = grad_scaler(precision, device)  # fp16 only
    objective = build_objective(config, dataset, ctx)
    order = EpochOrder(len(dataset), run.batch_size, run.seed)
    step, meta = _restore(resume_from, model, ema, optimizer, scaler, objective) if resume_from else (0, {})
    counters = meta.get("counters", {})  # skipped steps, the open log interval
    net = ddp_wrap(model, ctx)  # DDP averages gradients over ranks during backward
    progress = Progress(total=run.steps, initial=step, batch_size=run.batch_size, enabled=ctx.is_main)
    return _Training(
        config, dataset, run_dir, ctx, plan, precision, model, net, ema, optimizer, scaler, objective,
        order, progress, started, float(meta.get("train_time_s", 0.0)), step,
        interval_loss=torch.tensor(counters.get("interval_loss_sum", 0.0), device=device),
        interval_steps=counters.get("interval_steps", 0),
        interval_start=time.perf_counter(),
        skipped=counters.get("skipped_steps", 0),
        bad_in_a_row=counters.get("bad_steps_in_a_row", 0),
        best_score=_best_score(run_dir),
    )  # fmt: skip


def _restore(
    path: Path,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    objective: DiffusionObjective | AutoencoderObjective,
) -> tuple[int, dict[str, Any]]:
    """Load a checkpoint into the training state; return its step and meta (counters, training time)."""
    checkpoint = load_checkpoint(path)
    objective.load_state(checkpoint)  # a timestep sampler's history, a discriminator and its optimizer
    trained_part(model).load_state_dict(checkpoint.model)  # a ControlNet run's: its branch alone
    if ema is not None:
        trained_part(ema.model).load_state_dict(checkpoint.ema)
        ema.num_updates = int(checkpoint.meta["ema_updates"])
    optimizer.load_state_dict(optimizer_from_tensors(checkpoint.optimizer, checkpoint.meta["optimizer"]))
    if scaler is not None and checkpoint.meta.get("grad_scaler"):
        scaler.load_state_dict(checkpoint.meta["grad_scaler"])
    return checkpoint.step, checkpoint.meta


def _train_step(t: _Training) -> torch.Tensor:
    """One optimizer step on one global batch (Algorithm 1); a non-finite step is skipped.

    Returns the gradient norm before clipping.
    """
    config = t.config
    for group in t.optimizer.param_groups:
        group["lr"] = config.optim.lr * lr_factor(t.step, config)
    loss = t.objective.gradients(t)  # this rank's mean loss, gradients in .grad
    loss = all_sum(loss, t.ctx) / t.ctx.world_size  # mean over the global batch, the same on every rank
    if t.scaler is not None:
        t.scaler.unscale_(t.optimizer)  # clip and check the true gradients
    clip = config.optim.grad_clip_norm or float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), clip, foreach=True)
    if torch.isfinite(loss) & torch.isfinite(grad_norm):
        if t.scaler is None:
            t.optimizer.step()
        else:
            t.scaler.step(t.optimizer)  # gradients are unscaled and finite: it steps
        if t.ema is not None:
            t.ema.update(t.model)
        t.interval_loss += loss.detach()
        t.interval_steps += 1
        t.bad_in_a_row = 0
    else:  # a NaN/Inf step is skipped, never applied: weights, moments and EMA stay finite
        _skip_step(t, "loss" if not torch.isfinite(loss) else "gradient norm")
    if t.scaler is not None:
        t.scaler.update()  # halves the scale after an overflow, doubles it after growth_interval good steps
    t.step += 1
    return grad_norm


def _skip_step(t: _Training, what: str) -> None:
    """Count a skipped step; stop training after optim.max_bad_steps of them in a row."""
    t.skipped, t.bad_in_a_row = t.skipped + 1, t.bad_in_a_row + 1
    step = t.step + 1
    t.progress.write(
        f"step {step}: non-finite {what}; skipped ({t.bad_in_a_row} in a row, {t.skipped} in all)"
    )
    max_bad_steps = t.config.optim.max_bad_steps
    if max_bad_steps and t.bad_in_a_row >= max_bad_steps:
        t.progress.close()
        raise NonFiniteTrainingError(
            f"training stopped at step {step}: {t.bad_in_a_row} steps in a row had a non-finite "
            f"{what} (optim.max_bad_steps={max_bad_steps}); the last checkpoint in "
            f"{t.run_dir.checkpoints_dir} is kept; lower optim.lr or check the data"
        )


def _log_interval(t: _Training, grad_norm: torch.Tensor) -> None:
    """One line of log.jsonl (rank 0) and the progress bar: the interval's mean loss and speed."""
    run = t.config.run
    now = time.perf_counter()
    t.last_loss = (t.interval_loss / t.interval_steps).item() if t.interval_steps else float("nan")
    record = {
        "step": t.step,
        "loss": t.last_loss,  # mean over the interval's applied (finite) steps; NaN if none
        "lr": t.optimizer.param_groups[0]["lr"],
        "grad_norm": float(grad_norm),
        "img_per_s": t.interval_steps * run.batch_size / max(now - t.interval_start, 1e-9),
        "time_s": _train_time_s(t, now),  # the run's, over all its invocations
        "epoch": t.order.epoch_of(t.step),
        "skipped_steps": t.skipped,
        "threads": torch.get_num_threads(),
        **t.objective.log_fields(),  # an autoencoder's GAN: its interval means
    }
    if t.ctx.is_main:
        with t.run_dir.log_path.open("a") as f:
            f.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
    t.progress.update(t.step, record)
    t.interval_loss.zero_()
    t.interval_steps, t.interval_start = 0, now


def _periodic_actions(t: _Training, previews: Any, evaluate: Any) -> None:
    """Checkpoint, evaluate and draw previews when their intervals come round (not at the last step)."""
    run, step = t.config.run, t.step
    if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
        _save(t, step)
    if evaluate is not None and run.eval_every and step % run.eval_every == 0:
        _evaluate(t, evaluate)
        t.model.train()
    if previews is not None and run.sample_every and step % run.sample_every == 0 and step < run.steps:
        previews(step, t.ema.model)
        t.model.train()


def _stop_requested(t: _Training, stop: StopRequests | None) -> bool:
    """Whether to stop after this step: the time budget is spent or a signal came, on any rank."""
    run = t.config.run
    out_of_time, requested = any_ranks(  # every rank stops after the same step
        bool(run.time_budget_s) and time.perf_counter() - t.started >= run.time_budget_s,
        stop is not None and stop.requested,
        ctx=t.ctx,
    )
    if out_of_time or requested:
        reason = (stop.reason if stop is not None else "") or "a stop request on another rank"
        t.progress.write(f"stopping at step {t.step}: " + ("time budget reached" if out_of_time else reason))
    return out_of_time or requested


def _save(t: _Training, at_step: int) -> None:
    """Rank 0 writes a checkpoint of everything a resumed run needs to continue bit for bit."""
    if not t.ctx.is_main:
        return
    # a ControlNet run saves its branch alone: the base's weights stay in the base run
    model_state, ema_state = trained_part(t.model).state_dict(), trained_part(t.ema.model).state_dict()
    sampler, extra = t.objective.timestep_sampler, t.objective.checkpoint_tensors()
    assert_finite(extra, "training state")
    assert_finite(model_state, "model weights")
    assert_finite(ema_state, "EMA weights")
    assert_finite(_optimizer_tensors(t.optimizer), "optimizer state")
    save_checkpoint(
        t.run_dir.path,
        at_step,
        model=model_state,
        ema=ema_state,
        optimizer=t.optimizer.state_dict(),
        timestep_sampler=None if sampler is None else sampler.state_dict(),
        extra=extra,
        meta={
            "config": config_to_dict(t.config),
            "data_fingerprint": t.dataset.fingerprint,
            # a latent run's samples are its decoded images, not the latents it trains on
            "sample_shape": list(getattr(t.dataset, "image_shape", t.dataset.sample_shape)),
            "kind": t.dataset.kind,
            "ema_updates": t.ema.num_updates,
            "train_time_s": _train_time_s(t, time.perf_counter()),  # a resumed run's time_s goes on from it
            "counters": {
                "skipped_steps": t.skipped,
                "bad_steps_in_a_row": t.bad_in_a_row,
                "interval_loss_sum": t.interval_loss.item(),
                "interval_steps": t.interval_steps,
            },
            "torch": torch.__version__,
            "precision": t.precision,
            "grad_scaler": None if t.scaler is None else t.scaler.state_dict(),
            "world_size": t.ctx.world_size,
            "grad_accum_steps": t.plan.accum_steps,
            **t.objective.checkpoint_meta(t),
        },
        keep_last=t.config.run.keep_last,
    )


def _train_time_s(t: _Training, now: float) -> float:
    """The run's training wall time at ``now``: earlier invocations' (from the checkpoint) plus this one's."""
    return t.earlier_s + now - t.started


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/Inf: a non-finite float is logged as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{index}.{name}": value
        for index, state in enumerate(optimizer.state.values())
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def _best_score(run_dir: RunDir) -> float:
    """The best evaluation score so far (from eval.jsonl), so a resumed run keeps its best."""
    return min((record.get("score", math.inf) for record in run_dir.eval_records()), default=math.inf)


def _evaluate(t: _Training, evaluate: Any) -> None:
    """Score the EMA model into eval.jsonl; a new best score saves a checkpoint as checkpoints/best."""
    metrics, score = evaluate(t.step, t.ema.model)
    with t.run_dir.eval_path.open("a") as f:
        f.write(json.dumps({"step": t.step, **metrics, "score": score}) + "\n")
    if score < t.best_score:
        _save(t, t.step)
        mark_best(t.run_dir.checkpoint_dir(t.step))
        t.best_score = score
