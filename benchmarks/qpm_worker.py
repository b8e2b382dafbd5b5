"""One contender of benchmarks/quality_per_minute.py: train for a wall-clock budget, sample at checkpoints.

Runs in its contender's venv (lucidrains' package needs torchvision, so it has its own); imports only
torch, numpy and that contender's package. The training clock stops while samples are drawn. At each
budget mark it writes ``OUT/{contender}_{seconds}s.npz`` (uint8 ``images`` N×H×W×C, the samples-file
format of DESIGN.md) and one JSON line to stdout with steps, images seen and the sampling time.

Each peer is trained as its own example or Trainer trains it, on our preset's network shape:
- diffusers: ``UNet2DModel`` (our U-Net's exact architecture, channels_last) + ``DDPMScheduler``
  (linear β, ε), AdamW(1e-4, β=(0.95, 0.999), wd 1e-6), 500 warm-up steps, grad clip 1, EMAModel
  (power 3/4), batch 16: the defaults of examples/unconditional_image_generation/train_unconditional.py.
  Sampled at the given NFE with ``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` on
  the Karras grid, the algorithm of our presets' sampler (``--diffusers-sampler ddim``: its DDIM, η = 0).
- lucid: ``Unet`` (nearest config: same widths and levels, full attention where ours attends) +
  ``GaussianDiffusion`` defaults (v-objective, sigmoid β), Adam(1e-4, β=(0.9, 0.99)), grad clip 1,
  EMA 0.995 every 10 steps, batch 16: the defaults of its Trainer. Sampled with its DDIM at the NFE.
Contender rows at the best recipe each peer's own API allows at the same budget (issue 23, section 4):
- diffusers-best: the same UNet2DModel and DDPMScheduler with our preset's recipe — its batch and lr,
  AdamW(β=(0.9, 0.999), no weight decay), constant lr after 200 warm-up steps, grad clip 1, EMAModel
  with our decay and warm-up ((1+n)/(10+n) capped at the preset's 0.999) — and our preset's sampler
  where diffusers has it: SDE-DPM-Solver++(2M) on the preset's grid (trailing timesteps for digits,
  Karras σ for mnist). Epsilon scaling (our digits preset's λ = 1.06) has no diffusers option.
- lucid-defaults: its Unet and Trainer at their true defaults (dropout 0; the "lucid" example rows
  were given dropout 0.1), batch 16, lr 1e-4.
- lucid-best: its defaults with our preset's batch and lr.
- ours: ``ddpm.train.run.train`` with the preset, in time-budget segments resumed from checkpoints
  (exactly what ``ddpm train --time`` then ``--resume`` does); sampled with the preset's sampler.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch

# Nearest lucidrains Unet to each of our presets' networks (see lucid_worker.py for why not exact):
# same base width, levels and full-attention levels (digits: base 32, (1, 2); mnist: base 16, (1, 2, 2)).
LUCID_NETS = {
    "digits": dict(dim=32, dim_mults=(1, 2), full_attn=(False, True)),
    "mnist": dict(dim=16, dim_mults=(1, 2, 2), full_attn=(False, False, True)),
}


CONTENDERS = ("ours", "diffusers", "diffusers-best", "lucid", "lucid-defaults", "lucid-best")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → uint8 (N, H, W, C)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class Clock:
    """Training wall time, paused while samples are drawn."""

    def __init__(self) -> None:
        self.spent, self.since = 0.0, time.perf_counter()

    def elapsed(self) -> float:
        return self.spent + time.perf_counter() - self.since

    def pause(self) -> None:
        self.spent = self.elapsed()

    def resume(self) -> None:
        self.since = time.perf_counter()


def batches(data: np.ndarray, batch: int, seed: int):
    """Endless shuffled epochs of float images in [-1, 1], (B, C, H, W)."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(data).float().div(127.5).sub(1).permute(0, 3, 1, 2).contiguous()
    while True:
        order = torch.from_numpy(rng.permutation(len(images)))
        for start in range(0, len(order) - batch + 1, batch):
            yield images[order[start : start + batch]]


def train_with_marks(step, sample, args, report) -> None:
    """Call ``step()`` until each mark (seconds, or steps with ``--step-marks``), then ``sample()``
    with the clock paused. ``--calibrate S``: report the steps done in S seconds after 5 warm-up steps."""
    if args.calibrate:
        for _ in range(5):
            step()
        clock, steps = Clock(), 0
        while clock.elapsed() < args.calibrate:
            step()
            steps += 1
        seconds = clock.elapsed()
        rate = {"contender": args.contender, "steps": steps, "seconds": seconds, "batch": args.batch}
        print(json.dumps({**rate, "steps_per_s": steps / seconds}), flush=True)
        return
    clock, steps = Clock(), 0
    for mark, step_mark in zip(args.budgets, args.step_marks or args.budgets, strict=True):
        while (steps < step_mark) if args.step_marks else (clock.elapsed() < mark):
            step()
            steps += 1
        clock.pause()
        started = time.perf_counter()
        images = sample()
        report(mark, steps, clock.elapsed(), images, time.perf_counter() - started)
        clock.resume()


def diffusers_training(args, model):
    """Optimizer, lr schedule and EMA: its example's (``diffusers``) or our preset's (``diffusers-best``)."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    if args.contender == "diffusers":
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
        )
        lr_scheduler = get_scheduler(
            "cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=10**6
        )
        ema = EMAModel(model.parameters(), use_ema_warmup=True, inv_gamma=1.0, power=0.75, decay=0.9999)
        return optimizer, lr_scheduler, ema
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer, num_warmup_steps=200)
    # without use_ema_warmup its decay is min(decay, (1 + n) / (10 + n)): our EMA's warm-up exactly
    ema = EMAModel(model.parameters(), use_ema_warmup=False, decay=args.ema_decay)
    return optimizer, lr_scheduler, ema


def diffusers_sampler(args, noise_scheduler):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if args.diffusers_sampler == "ddim":
        return DDIMScheduler.from_config(noise_scheduler.config)
    # the best recipe takes the preset's grid: trailing timesteps (digits) or Karras σ (mnist)
    grid = (
        dict(use_karras_sigmas=False, timestep_spacing="trailing")
        if args.contender == "diffusers-best" and args.spacing == "trailing"
        else dict(use_karras_sigmas=True)
    )
    return DPMSolverMultistepScheduler.from_config(
        noise_scheduler.config, algorithm_type="sde-dpmsolver++", solver_order=2, **grid,
        final_sigmas_type="zero", lower_order_final=True,
        thresholding=True, sample_max_value=1.0,  # x̂₀ clipped to [−1, 1], as ours and its DDIM
    )  # fmt: skip


def run_diffusers(args, data: np.ndarray, report) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from ddpm.nets.diffusers_unet import unet_config_to_diffusers
    from ddpm.train.presets import get_preset

    config = unet_config_to_diffusers(get_preset(args.preset).model)
    model = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    model = model.to(memory_format=torch.channels_last)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer, lr_scheduler, ema = diffusers_training(args, model)
    stream = batches(data, args.batch, args.seed)

    def step() -> None:
        model.train()
        clean = next(stream).to(memory_format=torch.channels_last)
        noise = torch.randn_like(clean)
        t = torch.randint(0, 1000, (len(clean),))
        noisy = noise_scheduler.add_noise(clean, noise, t)
        loss = torch.nn.functional.mse_loss(model(noisy, t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())

    def sample() -> np.ndarray:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
        model.eval()
        scheduler = diffusers_sampler(args, noise_scheduler)
        out = []
        generator = torch.Generator().manual_seed(args.seed)
        with torch.inference_mode():
            for start in range(0, args.n, args.sample_batch):
                count = min(args.sample_batch, args.n - start)
                scheduler.set_timesteps(args.nfe)  # also resets the multistep solver's history
                x = torch.randn(count, data.shape[3], data.shape[1], data.shape[2], generator=generator)
                x = x * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    output = model(scheduler.scale_model_input(x, t), t).sample
                    x = scheduler.step(output, t, x, generator=generator).prev_sample
                out.append(to_uint8(x))
        ema.restore(model.parameters())
        return np.concatenate(out)

    train_with_marks(step, sample, args, report)


def run_lucid(args, data: np.ndarray, report) -> None:
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    # "lucid" (the earlier example rows) was given dropout 0.1; its Unet's default is 0
    dropout = 0.1 if args.contender == "lucid" else 0.0
    unet = Unet(channels=data.shape[3], dropout=dropout, **LUCID_NETS[args.preset])
    diffusion = GaussianDiffusion(unet, image_size=data.shape[1], timesteps=1000, sampling_timesteps=args.nfe)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=args.lr, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    stream = batches(data, args.batch, args.seed)

    def step() -> None:
        diffusion.train()
        loss = diffusion((next(stream) + 1) / 2)  # its data live in [0, 1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.update()

    def sample() -> np.ndarray:
        ema.ema_model.eval()
        torch.manual_seed(args.seed)
        out = []
        with torch.inference_mode():
            for start in range(0, args.n, args.sample_batch):
                count = min(args.sample_batch, args.n - start)
                out.append(to_uint8(ema.ema_model.sample(batch_size=count) * 2 - 1))
        return np.concatenate(out)

    train_with_marks(step, sample, args, report)


def run_ours(args, data: np.ndarray, report) -> None:
    import dataclasses

    from common import with_overrides  # ours' venv only: common imports the package

    from ddpm.model import load
    from ddpm.train.presets import get_preset, with_data
    from ddpm.train.run import train

    # --ours-set of quality_per_minute.py: a preset variant
    config = with_overrides(with_data(get_preset(args.preset), args.data), args.set)
    run_dir = Path(args.out) / f"ours_{args.preset}_run_s{args.seed}"
    if args.calibrate:
        calibrate_ours(args, config, run_dir)
        return
    spent, steps = 0.0, 0
    marks = zip(args.budgets, args.step_marks or args.budgets, strict=True)
    for index, (mark, step_mark) in enumerate(marks):
        # The trainer's clock covers the loop only (its final checkpoint and preview are outside the
        # budget, as they are for the peers, whose sampling pauses the clock); it stops after the
        # first step past the budget, like the peers' loops. --step-marks: exactly that many steps.
        segment = dataclasses.replace(
            config.run, steps=int(step_mark) if args.step_marks else 10**6,
            time_budget_s=0.0 if args.step_marks else mark - spent, sample_every=0, checkpoint_every=0,
            num_threads=args.threads, seed=args.seed, preview_images=1, preview_steps=1,
        )  # fmt: skip
        result = train(
            dataclasses.replace(config, run=segment), run_dir,
            resume=index > 0, overwrite=index == 0, log=lambda *_: None,
        )  # fmt: skip
        spent, steps = mark, result.step
        started = time.perf_counter()
        model = load(run_dir)
        images = model.sample(
            args.n,
            **{**config.run.preview_options(), "steps": args.nfe},
            seed=args.seed,
            batch_size=args.sample_batch,
        )
        report(mark, steps, spent, to_uint8(images), time.perf_counter() - started, config.run.batch_size)


def calibrate_ours(args, config, run_dir: Path) -> None:
    """Steps per second of the preset's training loop over ``--calibrate`` seconds (its own clock)."""
    import dataclasses

    from ddpm.train.run import train

    segment = dataclasses.replace(
        config.run, steps=10**6, time_budget_s=args.calibrate, sample_every=0, checkpoint_every=0,
        num_threads=args.threads, seed=args.seed, preview_images=1, preview_steps=1,
    )  # fmt: skip
    result = train(dataclasses.replace(config, run=segment), run_dir, overwrite=True, log=lambda *_: None)
    rate = result.step / args.calibrate
    print(json.dumps({"contender": "ours", "steps": result.step, "seconds": args.calibrate,
                      "steps_per_s": rate, "batch": config.run.batch_size}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=CONTENDERS, required=True)
    parser.add_argument("--preset", choices=sorted(LUCID_NETS), required=True)
    parser.add_argument("--data", required=True, help="our data spec (ours reads it itself)")
    parser.add_argument("--train-npy", required=True, help="uint8 N×H×W×C training images (peers)")
    parser.add_argument("--budgets", required=True, help="comma-separated seconds, e.g. 120,300")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--nfe", type=int, required=True)
    parser.add_argument("--batch", type=int, default=16, help="peers' training batch (their defaults: 16)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peers' learning rate (their defaults: 1e-4)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="diffusers-best: our EMA decay")
    parser.add_argument("--spacing", default="karras", help="diffusers-best: our preset's sampler grid")
    parser.add_argument("--step-marks", default="", help="train to these step counts instead of --budgets")
    parser.add_argument("--calibrate", type=float, default=0.0, help="only measure steps/s over this many s")
    parser.add_argument("--sample-batch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diffusers-sampler", choices=("sde-dpm++", "ddim"), default="sde-dpm++")
    parser.add_argument("--set", action="append", default=[], help="override of ours' preset (KEY=VALUE)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    args.budgets = [float(value) for value in args.budgets.split(",")]
    args.step_marks = [int(value) for value in args.step_marks.split(",")] if args.step_marks else []
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = np.load(args.train_npy, allow_pickle=False)

    def report(mark, steps, train_s, images, sample_s, batch=args.batch) -> None:
        path = Path(args.out) / f"{args.contender}_{args.preset}_{int(mark)}s.npz"
        np.savez(path, images=images)
        line = {
            "contender": args.contender, "budget_s": mark, "train_s": round(train_s, 1), "steps": steps,
            "images_seen": steps * batch, "img_per_s": round(steps * batch / train_s, 1),
            "sample_s": round(sample_s, 1), "n": len(images), "nfe": args.nfe, "samples": str(path),
        }  # fmt: skip
        print(json.dumps(line), flush=True)

    if args.contender == "ours":
        run_ours(args, data, report)
    else:
        (run_diffusers if args.contender.startswith("diffusers") else run_lucid)(args, data, report)


if __name__ == "__main__":
    main()
