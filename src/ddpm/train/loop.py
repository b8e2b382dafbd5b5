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
from torch.nn.parallel import DistributedDataParallel

from ddpm.data import Dataset
from ddpm.diffusion import make_schedule
from ddpm.diffusion.losses import DiffusionLoss
from ddpm.nets import build_net
from ddpm.train.checkpoint import (
    assert_finite,
    checkpoint_dir,
    load_checkpoint,
    mark_best,
    optimizer_from_tensors,
    save_checkpoint,
)
from ddpm.train.config import TrainConfig, config_to_dict
from ddpm.train.data_order import EpochOrder
from ddpm.train.distributed import (
    DistContext,
    all_sum,
    any_ranks,
    barrier,
    batch_plan,
    grad_scaler,
    resolve_precision,
)
from ddpm.train.distributed import resolve_device as resolve_device  # re-exported
from ddpm.train.ema import EMA
from ddpm.train.progress import Progress
from ddpm.train.signals import StopRequests
from ddpm.train.step import accumulate_gradients, draw_step


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
    return torch.optim.AdamW(
        model.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2), weight_decay=opt.weight_decay, **fast
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
    started = time.perf_counter()
    run = config.run
    ctx = dist or DistContext(device=resolve_device(run.device))
    device = ctx.device
    plan = batch_plan(run.batch_size, ctx.world_size, run.grad_accum_steps, run.micro_batch_size)
    precision = resolve_precision(run.precision, device)
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    torch.manual_seed(run.seed)  # initial weights, the same on every rank
    model = build_net(config.model).to(device)
    if dataset.kind == "images":
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, config.optim.ema_decay, config.optim.ema_warmup) if ctx.is_main else None
    optimizer = build_optimizer(model, config, device)
    scaler = grad_scaler(precision, device)  # fp16 only
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
    loss_fn = DiffusionLoss(
        schedule, config.diffusion.parameterization, config.diffusion.min_snr_gamma or None
    )
    order = EpochOrder(len(dataset), run.batch_size, run.seed)
    step, counters = 0, {}
    if resume_from is not None:
        checkpoint = load_checkpoint(resume_from)
        counters = checkpoint.meta.get("counters", {})  # skipped steps and the open log interval
        model.load_state_dict(checkpoint.model)
        if ema is not None:
            ema.model.load_state_dict(checkpoint.ema)
            ema.num_updates = int(checkpoint.meta["ema_updates"])
        optimizer.load_state_dict(optimizer_from_tensors(checkpoint.optimizer, checkpoint.meta["optimizer"]))
        if scaler is not None and checkpoint.meta.get("grad_scaler"):
            scaler.load_state_dict(checkpoint.meta["grad_scaler"])
        step = checkpoint.step
    # DDP averages gradients over ranks during backward (and checks that the ranks' weights agree).
    device_ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=device_ids) if ctx.distributed else model

    def save(at_step: int) -> None:
        if not ctx.is_main:
            return
        model_state, ema_state = model.state_dict(), ema.model.state_dict()
        assert_finite(model_state, "model weights")
        assert_finite(ema_state, "EMA weights")
        assert_finite(_optimizer_tensors(optimizer), "optimizer state")
        save_checkpoint(
            run_dir,
            at_step,
            model=model_state,
            ema=ema_state,
            optimizer=optimizer.state_dict(),
            meta={
                "config": config_to_dict(config),
                "data_fingerprint": dataset.fingerprint,
                "sample_shape": list(dataset.sample_shape),
                "kind": dataset.kind,
                "ema_updates": ema.num_updates,
                "counters": {
                    "skipped_steps": skipped,
                    "bad_steps_in_a_row": bad_in_a_row,
                    "interval_loss_sum": interval_loss.item(),
                    "interval_steps": interval_steps,
                },
                "torch": torch.__version__,
                "precision": precision,
                "grad_scaler": None if scaler is None else scaler.state_dict(),
                "world_size": ctx.world_size,
                "grad_accum_steps": plan.accum_steps,
            },
            keep_last=run.keep_last,
        )

    log_path = run_dir / "log.jsonl"
    progress = Progress(total=run.steps, initial=step, batch_size=run.batch_size, enabled=ctx.is_main)
    interval_loss = torch.tensor(counters.get("interval_loss_sum", 0.0), device=device)
    interval_steps, interval_start = counters.get("interval_steps", 0), time.perf_counter()
    skipped, bad_in_a_row = counters.get("skipped_steps", 0), counters.get("bad_steps_in_a_row", 0)
    last_loss, stopped_early = float("nan"), False
    best_score = _best_score(run_dir)
    model.train()
    while step < run.steps:
        for group in optimizer.param_groups:
            group["lr"] = config.optim.lr * lr_factor(step, config)
        draws = draw_step(config, order, step, dataset, schedule.num_steps, device)  # the global batch
        optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(net, loss_fn, dataset, draws, config, step, plan, ctx, precision, scaler)
        loss = all_sum(loss, ctx) / ctx.world_size  # mean over the global batch, the same on every rank
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip and check the true gradients
        clip = config.optim.grad_clip_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        if torch.isfinite(loss) & torch.isfinite(grad_norm):
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)  # gradients are unscaled and finite: it steps
            if ema is not None:
                ema.update(model)
            interval_loss += loss.detach()
            interval_steps += 1
            bad_in_a_row = 0
        else:  # a NaN/Inf step is skipped, never applied: weights, moments and EMA stay finite
            skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
            what = "loss" if not torch.isfinite(loss) else "gradient norm"
            progress.write(
                f"step {step + 1}: non-finite {what}; skipped ({bad_in_a_row} in a row, {skipped} in all)"
            )
            if config.optim.max_bad_steps and bad_in_a_row >= config.optim.max_bad_steps:
                progress.close()
                raise NonFiniteTrainingError(
                    f"training stopped at step {step + 1}: {bad_in_a_row} steps in a row had a non-finite "
                    f"{what} (optim.max_bad_steps={config.optim.max_bad_steps}); the last checkpoint in "
                    f"{run_dir / 'checkpoints'} is kept; lower optim.lr or check the data"
                )
        if scaler is not None:
            scaler.update()  # halves the scale after an overflow, doubles it after growth_interval good steps
        step += 1

        if step % run.log_every == 0 or step == run.steps:
            now = time.perf_counter()
            last_loss = (interval_loss / interval_steps).item() if interval_steps else float("nan")
            record = {
                "step": step,
                "loss": last_loss,  # mean over the interval's applied (finite) steps; NaN if none
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": float(grad_norm),
                "img_per_s": interval_steps * run.batch_size / max(now - interval_start, 1e-9),
                "time_s": now - started,
                "epoch": order.epoch_of(step),
                "skipped_steps": skipped,
            }
            if ctx.is_main:
                with log_path.open("a") as f:
                    f.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
            progress.update(step, record)
            interval_loss.zero_()
            interval_steps, interval_start = 0, now
        if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
            save(step)
        if evaluate is not None and run.eval_every and step % run.eval_every == 0:
            best_score = _evaluate(evaluate, step, ema.model, run_dir, best_score, save)
            model.train()
        if previews is not None and run.sample_every and step % run.sample_every == 0 and step < run.steps:
            previews(step, ema.model)
            model.train()
        out_of_time, requested = any_ranks(  # every rank stops after the same step
            bool(run.time_budget_s) and time.perf_counter() - started >= run.time_budget_s,
            stop is not None and stop.requested,
            ctx=ctx,
        )
        if out_of_time or requested:
            stopped_early = True
            reason = (stop.reason if stop is not None else "") or "a stop request on another rank"
            progress.write(f"stopping at step {step}: " + ("time budget reached" if out_of_time else reason))
            break
    progress.close()
    save(step)
    if previews is not None:
        previews(step, ema.model, final=True)
    barrier(ctx)  # the others wait for rank 0's final checkpoint and previews
    return TrainResult(run_dir, step, stopped_early, last_loss, time.perf_counter() - started)


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


def _best_score(run_dir: Path) -> float:
    """The best evaluation score so far (from eval.jsonl), so a resumed run keeps its best."""
    path = run_dir / "eval.jsonl"
    if not path.exists():
        return math.inf
    scores = [
        json.loads(line).get("score", math.inf) for line in path.read_text().splitlines() if line.strip()
    ]
    return min(scores, default=math.inf)


def _evaluate(evaluate: Any, step: int, ema_model: nn.Module, run_dir: Path, best: float, save: Any) -> float:
    metrics, score = evaluate(step, ema_model)
    with (run_dir / "eval.jsonl").open("a") as f:
        f.write(json.dumps({"step": step, **metrics, "score": score}) + "\n")
    if score < best:
        save(step)
        mark_best(checkpoint_dir(run_dir, step))
        return score
    return best
