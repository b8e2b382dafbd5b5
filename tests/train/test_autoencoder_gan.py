"""The patch discriminator in autoencoder runs (LDM's two optimizers): off before disc_start_steps, then
trained by Adam(β = 0.5, 0.9) at the autoencoder's learning rate beside the autoencoder, checkpointed and
resumed bit for bit, logged, and averaged over ranks under torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm.configio import dumps_toml
from ddpm.rundir import RunDir
from ddpm.train.autoencoder_gan import LOG_FIELDS, GANTraining
from ddpm.train.autoencoder_step import AutoencoderStepResult
from ddpm.train.checkpoint import Checkpoint, load_checkpoint
from ddpm.train.config import config_to_dict
from ddpm.train.distributed import DistContext, batch_plan, torchrun_command
from ddpm.train.run import train
from tests.train.test_autoencoder_run import tiny_autoencoder_config

GAN = ("autoencoder_loss.disc_weight=0.5", "autoencoder_loss.disc_num_layers=1",
       "autoencoder_loss.disc_channels=8", "run.sample_every=0")  # fmt: skip
TIMING = ("time_s", "img_per_s", "threads")  # the only log fields allowed to differ between equal runs


def gan_config(steps: int, start: int, *overrides: str):
    return tiny_autoencoder_config(steps, *GAN, f"autoencoder_loss.disc_start_steps={start}", *overrides)


def quiet(*_: object) -> None:
    pass


def final(run_dir: Path) -> Checkpoint:
    return load_checkpoint(RunDir(run_dir).latest_checkpoint())


def log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_equal_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Six steps with the GAN on from step 2: straight through, and stopped after 3 then resumed."""
    root = tmp_path_factory.mktemp("gan")
    train(gan_config(6, 2), root / "whole", log=quiet)
    train(gan_config(3, 2), root / "split", log=quiet)
    train(gan_config(6, 2), root / "split", resume=True, log=quiet)
    return {"whole": root / "whole", "split": root / "split"}


def test_a_gan_run_resumed_halfway_continues_bit_for_bit(runs):
    whole, split = final(runs["whole"]), final(runs["split"])
    assert whole.step == split.step == 6
    for name in ("model", "ema", "optimizer", "extra"):
        assert_equal_tensors(getattr(whole, name), getattr(split, name))
    assert any(key.startswith("discriminator.main.") for key in whole.extra)  # weights and BatchNorm buffers
    assert any(key.startswith("disc_optimizer.state.") for key in whole.extra)  # Adam's moments
    assert whole.meta["discriminator"] == split.meta["discriminator"]
    assert whole.meta["latent_stats"] == split.meta["latent_stats"]
    strip = [[{k: v for k, v in record.items() if k not in TIMING} for record in log(runs[name])]
             for name in ("whole", "split")]  # fmt: skip
    assert strip[0] == strip[1] and [record["step"] for record in strip[0]] == [1, 2, 3, 4, 5, 6]


def test_the_discriminator_trains_with_ldms_adam_at_the_autoencoders_rate_and_logs_its_terms(runs):
    checkpoint, records = final(runs["whole"]), log(runs["whole"])
    fresh = GANTraining.build(gan_config(6, 2), DistContext()).discriminator.state_dict()
    trained = {k.removeprefix("discriminator."): v for k, v in checkpoint.extra.items()
               if k.startswith("discriminator.")}  # fmt: skip
    assert trained.keys() == fresh.keys()
    assert not torch.equal(trained["main.0.weight"], fresh["main.0.weight"])
    (group,) = checkpoint.meta["discriminator"]["optimizer"]["param_groups"]
    assert group["betas"] == [0.5, 0.9] and group["weight_decay"] == 0 and not group["decoupled_weight_decay"]
    assert group["lr"] == records[-1]["lr"]  # the autoencoder's warm-up rate of the last step
    steps_taken = {int(v) for k, v in checkpoint.extra.items() if k.endswith(".step")}
    assert steps_taken == {4}  # steps 2 … 5 (0-based) of six: none before disc_start_steps
    for record in records[:2]:  # GAN off: nothing to report
        assert all(record[field] is None for field in LOG_FIELDS)
    for record in records[2:]:
        assert all(math.isfinite(record[field]) for field in LOG_FIELDS)
        assert record["gan_weight"] > 0
        # L_G = −mean D(x̂) on the generator's side, with the same weights and batch as the discriminator's
        assert record["gan_loss"] == pytest.approx(-record["logits_fake"], rel=1e-5)
        assert record["disc_skipped_steps"] == 0


def test_before_disc_start_steps_the_discriminator_neither_trains_nor_moves_the_autoencoder(tmp_path):
    train(gan_config(2, 2), tmp_path / "gan", log=quiet)
    train(tiny_autoencoder_config(2, "run.sample_every=0"), tmp_path / "plain", log=quiet)
    gan, plain = final(tmp_path / "gan"), final(tmp_path / "plain")
    for name in ("model", "ema", "optimizer"):
        assert_equal_tensors(getattr(gan, name), getattr(plain, name))
    fresh = GANTraining.build(gan_config(2, 2), DistContext()).discriminator.state_dict()
    assert_equal_tensors({k.removeprefix("discriminator."): v for k, v in gan.extra.items()}, fresh)
    assert not any(key.startswith("disc_optimizer.") for key in gan.extra)  # Adam never stepped
    # after the switch the GAN term moves the autoencoder
    train(gan_config(3, 2), tmp_path / "gan", resume=True, log=quiet)
    train(tiny_autoencoder_config(3, "run.sample_every=0"), tmp_path / "plain", resume=True, log=quiet)
    moved, unmoved = final(tmp_path / "gan").model, final(tmp_path / "plain").model
    assert not torch.equal(moved["decoder.conv_out.weight"], unmoved["decoder.conv_out.weight"])


def tiny_gan() -> tuple[GANTraining, torch.Tensor]:
    config = gan_config(2, 0)
    return GANTraining.build(config, DistContext()), torch.rand(4, 1, 8, 8) * 2 - 1


def test_the_generator_side_leaves_the_discriminator_without_gradients():
    gan, x = tiny_gan()
    recon = x.clone().requires_grad_(True)
    with gan.frozen():
        (-gan.discriminator(recon).mean()).backward()
    assert recon.grad is not None and all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())


def test_a_non_finite_discriminator_step_is_skipped_and_counted():
    gan, x = tiny_gan()
    before = {
        k: v.clone()
        for k, v in gan.discriminator.state_dict().items()
        if "running" not in k and "batches" not in k
    }
    plan = batch_plan(4, 1)
    bad = AutoencoderStepResult(torch.zeros(()), [(x, torch.full_like(x, math.nan))], torch.zeros(2))
    gan.step(bad, 1e-3, plan, DistContext(), "fp32")
    after = {
        k: v for k, v in gan.discriminator.state_dict().items() if "running" not in k and "batches" not in k
    }
    assert_equal_tensors(before, after)
    assert gan.skipped == 1 and not gan.optimizer.state
    record = gan.interval_record()
    assert all(math.isnan(record[field]) for field in LOG_FIELDS) and record["disc_skipped_steps"] == 1
    good = AutoencoderStepResult(torch.zeros(()), [(x, x.flip(-1))], torch.tensor([0.5, 2.0]))
    gan.step(good, 1e-3, plan, DistContext(), "fp32")
    record = gan.interval_record()
    assert (record["gan_loss"], record["gan_weight"]) == (0.5, 2.0) and gan.skipped == 1


@pytest.mark.slow  # 34-46 s on the busy 2-core machine, as long as test_distributed.py's 2-process fixture
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")
def test_two_processes_train_the_gan_as_one_process_with_the_same_shards(tmp_path):
    """The discriminator's gradients are averaged over ranks: 2 processes × 8 equal 1 process with 2
    accumulated micro-batches of 8 (BatchNorm sees the same shards), up to float rounding."""
    config = gan_config(4, 1, "run.checkpoint_every=0", "run.preview_images=1")
    (tmp_path / "config.toml").write_text(dumps_toml(config_to_dict(config)))
    arguments = ["--device", "cpu", "--kind", "autoencoder", "--config", str(tmp_path / "config.toml")]
    command = torchrun_command(2, [*arguments, "--out", str(tmp_path / "two")])
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    threads = torch.get_num_threads()
    # One thread like each rank: a 2-thread conv sums in another order, and Adam turns that rounding of a
    # near-zero gradient into a step of ±lr (2e-5 on a decoder bias in CI's 2-thread pytest).
    torch.set_num_threads(1)
    try:
        with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as two:
            accumulated = gan_config(4, 1, "run.checkpoint_every=0", "run.preview_images=1",
                                     "run.grad_accum_steps=2")  # fmt: skip
            train(accumulated, tmp_path / "one", log=quiet)
            errors = two.communicate(timeout=240)[1].decode()
    finally:
        torch.set_num_threads(threads)
    assert two.returncode == 0, errors[-3000:]
    one, two_ranks = final(tmp_path / "one"), final(tmp_path / "two")
    assert two_ranks.meta["world_size"] == 2
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # each rank's own shards: not compared
    for name in ("model", "optimizer", "extra"):
        a, b = getattr(one, name), getattr(two_ranks, name)
        assert a.keys() == b.keys()
        for key in (k for k in a if not k.endswith(buffers)):
            named = lambda message, key=key: f"{key}: {message}"  # noqa: E731
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=named)
    for a, b in zip(log(tmp_path / "one"), log(tmp_path / "two"), strict=True):
        for field in ("loss", *LOG_FIELDS):
            assert (a[field] is b[field] is None) or a[field] == pytest.approx(b[field], rel=1e-4, abs=1e-6)
