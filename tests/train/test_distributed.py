"""Several processes on CPU (gloo): the same optimisation as one process, exact resume, no hangs.

Two-process runs go through the real command line (`ddpm train --nproc 2`, which execs torchrun,
and `python -m torch.distributed.run ... -m ddpm train`). Dropout is 0 in the comparisons: its masks
are the one draw that depends on how the batch is split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ddpm.cli import main
from ddpm.configio import dumps_toml
from ddpm.rundir import RunDir
from ddpm.train.checkpoint import load_checkpoint
from ddpm.train.config import RunConfig, TrainConfig, config_to_dict
from ddpm.train.distributed import (
    DistContext,
    batch_plan,
    check_nproc,
    resolve_device,
    resolve_precision,
    share_from_main,
    torchrun_command,
    without_nproc,
)
from ddpm.train.run import train
from tests.train.conftest import tiny_digits_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")


def quiet(*_: object) -> None:
    pass


def tiny(**run) -> TrainConfig:
    """tests/train/conftest.py's tiny digits run without dropout, with ``run`` fields replaced."""
    config = tiny_digits_config()
    model = dataclasses.replace(config.model, dropout=0.0)
    run = dataclasses.replace(config.run, **{"preview_images": 1, "preview_steps": 1, **run})
    return dataclasses.replace(config, model=model, run=run)


def write_config(path: Path, config) -> Path:
    path.write_text(dumps_toml(config_to_dict(config)))
    return path


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = torchrun_command(2, ["--device", "cpu", *map(str, args)])
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=worker_env())


def final(run_dir: Path):
    return load_checkpoint(RunDir(run_dir).latest_checkpoint())


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_tensors(a: dict, b: dict, exact: bool) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


@contextlib.contextmanager
def two_processes(config_file: Path, out: Path) -> Iterator[None]:
    """`ddpm train --nproc 2` runs ``config_file`` into ``out`` while the body runs; it must succeed."""
    command = [sys.executable, "-m", "ddpm", "train", "--device", "cpu", "--nproc", "2"]
    command += ["--config", str(config_file), "--out", str(out)]
    with subprocess.Popen(
        command, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as two:
        yield
        errors = two.communicate(timeout=240)[1].decode()
    assert two.returncode == 0, errors[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One process with batch 16, one with 2 × 8 accumulated, two processes with 8 each (CLI)."""
    root = tmp_path_factory.mktemp("distributed")
    config = tiny()
    config_file = write_config(root / "config.toml", config)
    with two_processes(config_file, root / "two"):
        train(config, root / "one", log=quiet)  # meanwhile: the processes start up slowly
        train(tiny(grad_accum_steps=2), root / "accum", log=quiet)
    return {"one": root / "one", "accum": root / "accum", "two": root / "two", "config": config_file}


def test_two_processes_and_accumulation_train_as_one_process(runs):
    one, accum, two = (final(runs[name]) for name in ("one", "accum", "two"))
    assert one.step == accum.step == two.step == 6
    assert (one.meta["world_size"], accum.meta["world_size"], two.meta["world_size"]) == (1, 1, 2)
    for other in (accum, two):
        assert_same_tensors(one.model, other.model, exact=False)
        assert_same_tensors(one.ema, other.ema, exact=False)
        assert_same_tensors(one.optimizer, other.optimizer, exact=False)
    reference = losses(runs["one"])
    assert len(reference) == 6 and len(set(reference)) == 6
    for name in ("accum", "two"):
        assert losses(runs[name]) == pytest.approx(reference, rel=1e-5)


def importance_sampled(**run) -> TrainConfig:
    """Pure L_vlb with importance-sampled t; T = 4 so that the sampler's 10 losses of every t (its fixed
    history) fill within the first 4 steps of a batch of 16; the steps after draw t ∝ √E[L_t²]."""
    config = tiny(**run)
    diffusion = dataclasses.replace(
        config.diffusion, num_steps=4, loss="vlb", learn_variance=True, importance_sampling=True
    )
    return dataclasses.replace(config, diffusion=diffusion)


def test_two_processes_train_as_one_process_with_importance_sampling_warmed_up(tmp_path):
    """The ranks see only their shards' losses: record_losses must all_sum the global batch's before the
    sampler records them, or rank 0's history (and so its draws of t) would differ from one process's."""
    config = importance_sampled(checkpoint_every=4)
    with two_processes(write_config(tmp_path / "config.toml", config), tmp_path / "two"):
        train(config, tmp_path / "one", log=quiet)
    one, two = final(tmp_path / "one"), final(tmp_path / "two")
    assert one.step == two.step == 6 and two.meta["world_size"] == 2
    halfway = load_checkpoint(RunDir(tmp_path / "one").checkpoint_dir(4))
    # warmed up by step 4: steps 5 and 6 draw t by importance
    assert halfway.timestep_sampler["loss_counts"].tolist() == [10] * 4
    assert one.timestep_sampler.keys() == two.timestep_sampler.keys() == {"loss_history", "loss_counts"}
    assert torch.equal(one.timestep_sampler["loss_counts"], two.timestep_sampler["loss_counts"])
    torch.testing.assert_close(one.timestep_sampler["loss_history"], two.timestep_sampler["loss_history"],
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    for a, b in ((one.model, two.model), (one.ema, two.ema), (one.optimizer, two.optimizer)):
        assert_same_tensors(a, b, exact=False)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_resume_under_two_processes_continues_exactly(runs, tmp_path):
    out = tmp_path / "split"
    shutil.copytree(runs["two"], out)
    shutil.rmtree(out / "checkpoints" / "step_0000006")  # as if stopped after the step-3 checkpoint
    resumed = torchrun("--config", runs["config"], "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "step_0000003" in resumed.stdout
    again, whole = final(out), final(runs["two"])
    assert again.step == 6
    for a, b in ((again.model, whole.model), (again.ema, whole.ema), (again.optimizer, whole.optimizer)):
        assert_same_tensors(a, b, exact=True)
    assert losses(out) == losses(runs["two"])


def test_rank_zero_refusal_stops_every_rank(runs):
    done = torchrun("--config", runs["config"], "--out", runs["two"], timeout=120)
    assert done.returncode != 0
    assert "already holds a run; pass --resume" in done.stderr
    assert "rank 1: rank 0 stopped" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(tmp_path: Path, *extra: str, stdout=subprocess.DEVNULL) -> tuple[list, Path]:
    """Two `python -m ddpm train` processes joined by env:// rendezvous (no torchrun agent to help)."""
    config_file = write_config(tmp_path / "config.toml", tiny(steps=100_000, checkpoint_every=0))
    out = tmp_path / "run"
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    command = [sys.executable, "-m", "ddpm", "train", "--device", "cpu", "--config", str(config_file)]
    command += ["--out", str(out), *extra]
    ranks = [
        subprocess.Popen(
            command,
            env=worker_env(**rendezvous, RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + 180
    log = out / "log.jsonl"
    try:
        while not (log.exists() and log.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline, "training did not start"
            assert ranks[0].poll() is None and ranks[1].poll() is None, ranks[0].stderr.read()
            time.sleep(0.2)
    except BaseException:
        stop_all(ranks)
        raise
    return ranks, out


def stop_all(ranks: list) -> None:
    for process in ranks:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_killing_one_rank_makes_the_other_exit_with_an_error(tmp_path):
    ranks, _ = start_ranks(tmp_path, "--set", "run.dist_timeout_s=45")
    try:
        ranks[1].kill()
        killed_at = time.monotonic()
        status = ranks[0].wait(timeout=120)
        waited = time.monotonic() - killed_at
    finally:
        stop_all(ranks)
    assert status != 0
    assert waited < 60, waited
    assert "another rank has probably died" in ranks[0].stderr.read()


def test_sigterm_to_one_rank_stops_both_after_the_same_step_with_a_checkpoint(tmp_path):
    ranks, out = start_ranks(tmp_path, stdout=subprocess.PIPE)
    try:
        ranks[1].send_signal(signal.SIGTERM)  # rank 0 is not signalled: the ranks must agree
        status = [process.wait(timeout=120) for process in ranks]
    finally:
        stop_all(ranks)
    assert status == [0, 0], ranks[0].stderr.read() + ranks[1].stderr.read()
    said = ranks[0].stdout.read()
    assert "stopping at step" in said and "a stop request on another rank" in said
    checkpoint = final(out)
    assert checkpoint.step == json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"]


def test_fp16_grad_scaler_state_is_checkpointed_and_resumed(tmp_path):
    config = tiny(precision="fp16", steps=4, checkpoint_every=2, batch_size=8)  # CPU fp16 is slow
    train(config, tmp_path / "whole", log=quiet)
    half = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=2))
    train(half, tmp_path / "split", log=quiet)
    train(config, tmp_path / "split", resume=True, log=quiet)
    whole, split = final(tmp_path / "whole"), final(tmp_path / "split")
    assert whole.meta["precision"] == "fp16"
    assert split.meta["grad_scaler"] == whole.meta["grad_scaler"]
    assert whole.meta["grad_scaler"]["_growth_tracker"] == 4  # four finite steps since the last change
    for a, b in ((whole.model, split.model), (whole.ema, split.ema), (whole.optimizer, split.optimizer)):
        assert_same_tensors(a, b, exact=True)


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    train(tiny(steps=2, checkpoint_every=0), tmp_path / "fp32", log=quiet)
    train(tiny(steps=2, checkpoint_every=0, precision="bf16"), tmp_path / "bf16", log=quiet)
    reference, low = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert low != reference  # autocast changed the arithmetic ...
    assert low == pytest.approx(reference, rel=0.05)  # ... but not the objective
    assert final(tmp_path / "bf16").meta["precision"] == "bf16"


def test_batch_plan_derives_accumulation_and_micro_batch():
    assert batch_plan(128, 8) == batch_plan(128, 8, grad_accum_steps=1)
    plan = batch_plan(128, 2, micro_batch_size=16)
    assert (plan.accum_steps, plan.micro_batch) == (4, 16)
    assert list(plan.shards_of(1)) == [4, 5, 6, 7] and plan.shard(5) == slice(80, 96)
    assert batch_plan(128, 4, grad_accum_steps=2).micro_batch == 16
    assert batch_plan(64, 2, grad_accum_steps=2, micro_batch_size=16).accum_steps == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100, 8), r"run.batch_size=100 is not divisible by 8 processes × run.grad_accum_steps=1; "
                   r"use a multiple of 8"),
        ((128, 2, 0, 48), r"run.batch_size=128 is not divisible by 2 processes × run.micro_batch_size=48"),
        ((128, 2, 2, 16), r"run.batch_size=128 is not 2 processes × run.grad_accum_steps=2 × "
                          r"run.micro_batch_size=16; set one of the two to 0"),
    ],
)  # fmt: skip
def test_batch_plan_refuses_uneven_splits(args, message):
    with pytest.raises(ValueError, match=message):
        batch_plan(*args)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grad_accum_steps": -1}, r"run.grad_accum_steps=-1 must be ≥ 0"),
        ({"micro_batch_size": -2}, r"run.micro_batch_size=-2 must be ≥ 0"),
        ({"dist_timeout_s": 0.0}, r"run.dist_timeout_s=0.0 must be > 0"),
        ({"batch_size": 10, "grad_accum_steps": 3}, r"run.batch_size=10 is not divisible by 1 processes"),
    ],
)
def test_run_config_refuses_bad_distributed_values(fields, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**fields)


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match=r"run.precision='fp8' is not allowed; choose one of auto, fp32"):
        resolve_precision("fp8", cpu)


def test_devices_of_several_processes():
    assert resolve_device("cpu", local_rank=3, world_size=4) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cpu")
        with pytest.raises(
            ValueError, match=r"--device cuda was asked for but this torch build sees no CUDA"
        ):
            resolve_device("cuda", local_rank=1, world_size=2)
    else:
        assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cuda", 1)
        with pytest.raises(ValueError, match=r"--device cuda:0 names one GPU, but each of the 2 processes"):
            resolve_device("cuda:0", local_rank=1, world_size=2)


def test_nproc_checks(monkeypatch):
    with pytest.raises(ValueError, match=r"--nproc 0 must be ≥ 1"):
        check_nproc(0)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    check_nproc(4)
    with pytest.raises(ValueError, match=r"--nproc 2 disagrees with torchrun's --nproc-per-node 4"):
        check_nproc(2)


def test_single_process_shares_results_directly():
    assert share_from_main(DistContext(), lambda: "step_3") == "step_3"
    command = torchrun_command(8, ["--data", "mnist"])
    assert command[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8", "-m", "ddpm", "train",
        "--data", "mnist",
    ]  # fmt: skip


def test_cli_refuses_a_batch_that_does_not_split_before_launching(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", "--out", str(out), "--nproc", "3", "--batch-size", "16"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "run.batch_size=16 is not divisible by 3 processes × run.grad_accum_steps=1" in err
    assert not out.exists()
    assert main(["train", "--out", str(out), "--nproc", "0"]) == 2
    assert "--nproc 0 must be ≥ 1" in capsys.readouterr().err


def test_relaunch_arguments_drop_nproc():
    argv = ["train", "--nproc", "2", "--steps", "5", "--npr=4", "--set", "run.seed=1", "--np", "3"]
    assert without_nproc(argv) == ["--steps", "5", "--set", "run.seed=1"]


def test_devices_on_a_machine_with_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=0, world_size=1) == torch.device("cuda", 0)
    assert resolve_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1 has no GPU: this machine has 1; start at most"):
        resolve_device("auto", local_rank=1, world_size=2)
    with pytest.raises(ValueError, match=r"--device cuda:0 names one GPU, but each of the 2 processes"):
        resolve_device("cuda:0", local_rank=0, world_size=2)


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_precision_on_a_gpu(monkeypatch, bf16_supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu) == ("bf16" if bf16_supported else "fp32")
    assert resolve_precision("fp16", gpu) == "fp16"
    if not bf16_supported:
        with pytest.raises(
            ValueError, match=r"run.precision='bf16' is not supported by Tesla V100; use fp16"
        ):
            resolve_precision("bf16", gpu)
