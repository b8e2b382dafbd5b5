"""Latent diffusion's two stages on several processes (gloo): an autoencoder run and a latent run trained
by 2 processes × 8 images equal one process with 2 accumulated micro-batches of 8 (same steps, weights,
EMA, Adam state, losses, latent normalisation), the ranks share the encoding of the images and get what
one process encodes, and every rank encodes with the autoencoder weights rank 0 found."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ddpm.configio import ConfigError, dumps_toml
from ddpm.nets.autoencoder import AutoencoderKL
from ddpm.nets.latent_codec import LatentCodec
from ddpm.rundir import RunDir, weights_sha256
from ddpm.train import latent_data
from ddpm.train.checkpoint import Checkpoint, load_checkpoint
from ddpm.train.config import TrainConfig, config_to_dict
from ddpm.train.distributed import DistContext, torchrun_command
from ddpm.train.latent_data import LatentData, encode_dataset, join_autoencoder, latent_training_data
from ddpm.train.run import train
from ddpm.train.run_data import load_data
from tests.test_latent import latent_config
from tests.train.test_autoencoder_run import tiny_autoencoder_config

ACCUMULATE = "run.grad_accum_steps=2"  # one process: 2 micro-batches of 8, as 2 processes of 8 each
SMALL = ("run.checkpoint_every=0", "run.sample_every=0", "run.preview_images=1")
# flips: the mirrored images' encodings are shared too; no dropout (its masks depend on the split)
LATENT = (*SMALL, "data.random_flip=true", "model.dropout=0")


def quiet(*_: object) -> None:
    pass


def final(run_dir: Path) -> Checkpoint:
    return load_checkpoint(RunDir(run_dir).latest_checkpoint())


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread like each rank (OMP_NUM_THREADS=1): a 2-thread conv sums in another order, and
    Adam turns that rounding of a near-zero gradient into a step of ±lr."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def two_processes(config: TrainConfig, out: Path, *flags: str) -> Iterator[dict[str, str]]:
    """`torchrun --nproc-per-node 2 -m ddpm train` of ``config`` into ``out`` while the body runs; it must
    succeed. Yields a dict that holds the ranks' ``stdout`` afterwards."""
    config_file = out.with_suffix(".toml")
    config_file.write_text(dumps_toml(config_to_dict(config)))
    arguments = ["--device", "cpu", *flags, "--config", str(config_file), "--out", str(out)]
    command = torchrun_command(2, arguments)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    said: dict[str, str] = {}
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as two:
        yield said
        said["stdout"], errors = two.communicate(timeout=240)
    assert two.returncode == 0, errors[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path | str]:
    """An autoencoder run and a latent run on it, each by 2 processes (CLI) and by one process that
    accumulates 2 micro-batches (in this process, meanwhile); both latent runs use the one-process
    autoencoder."""
    root = tmp_path_factory.mktemp("latent-ddp")
    with one_thread():
        with two_processes(tiny_autoencoder_config(4, *SMALL), root / "ae-two", "--kind", "autoencoder"):
            train(tiny_autoencoder_config(4, *SMALL, ACCUMULATE), root / "ae", log=quiet)
        ae = root / "ae"
        with two_processes(latent_config(ae, 4, *LATENT), root / "latent-two", "--latent", str(ae)) as said:
            train(latent_config(ae, 4, *LATENT, ACCUMULATE), root / "latent", log=quiet)
    return {"root": root, "said": said["stdout"]}


def assert_same_training(one: Path, two: Path) -> None:
    a, b = final(one), final(two)
    assert a.step == b.step == 4 and (a.meta["world_size"], b.meta["world_size"]) == (1, 2)
    for name in ("model", "ema", "optimizer"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.keys() == y.keys()
        for key in x:
            named = lambda message, key=f"{name} {key}": f"{key}: {message}"  # noqa: E731
            torch.testing.assert_close(x[key], y[key], rtol=1e-4, atol=1e-6, msg=named)
    reference = losses(one)
    assert len(reference) == 4 and len(set(reference)) == 4
    assert losses(two) == pytest.approx(reference, rel=1e-5)


@pytest.mark.slow  # two torchrun launches: 40-80 s on the busy 2-core machine
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")
def test_two_processes_train_the_autoencoder_as_one_process(runs):
    root = runs["root"]
    assert_same_training(root / "ae", root / "ae-two")
    # rank 0 estimates the normalisation from its EMA weights: the one a latent run divides by
    one, two = (final(root / name).meta["latent_stats"] for name in ("ae", "ae-two"))
    assert one["images"] == two["images"] == 1500
    for key in ("mean", "std"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")
def test_two_processes_train_a_latent_run_as_one_process(runs):
    root = runs["root"]
    assert_same_training(root / "latent", root / "latent-two")
    assert "encoded 3000 images to latents (2, 4, 4) on 2 processes" in runs["said"]  # 1500, mirrored
    one, two = (RunDir(root / name).config_dict()["latent"] for name in ("latent", "latent-two"))
    assert one == two and one["autoencoder"] == str((root / "ae").resolve())


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    """A tiny digits autoencoder run with checkpoints after steps 1 and 2."""
    out = tmp_path_factory.mktemp("ae") / "ae"
    train(tiny_autoencoder_config(2, *SMALL, "run.checkpoint_every=1"), out, log=quiet)
    return out


def test_the_ranks_share_the_encoding_and_get_what_one_process_encodes(autoencoder, monkeypatch):
    """Each rank encodes every other chunk of ENCODE_BATCH images, the chunks one process encodes, so the
    all-reduce (here: a sum of the two ranks' tables) equals one process's encoding bit for bit."""
    latent, _ = latent_training_data(latent_config(autoencoder, 1), load_data(latent_config(autoencoder, 1)))
    monkeypatch.setattr(latent_data, "ENCODE_BATCH", 100)  # 15 chunks of the 1500 training digits
    whole = encode_dataset(latent, DistContext(), mirrored=True, log=quiet)
    monkeypatch.setattr(latent_data, "all_sum", lambda values, ctx: values)  # each rank's own table
    ranks = [encode_dataset(latent, DistContext(rank, 2), mirrored=True, log=quiet) for rank in (0, 1)]
    for part in ("mean", "std"):
        own = [getattr(rank, part) for rank in ranks]
        assert torch.equal(own[0] + own[1], getattr(whole, part))
        # rank 0 holds chunks 0, 2, …, rank 1 chunks 1, 3, …: zeros elsewhere
        assert own[0][100:200].abs().sum() == 0 and own[1][:100].abs().sum() == 0
        assert own[0][:100].abs().sum() > 0 and own[1][100:200].abs().sum() > 0
        assert torch.equal(ranks[0].mirrored[0] + ranks[1].mirrored[0], whole.mirrored[0])
    assert whole.sample_shape == latent.sample_shape == (2, 4, 4)


def test_the_other_ranks_open_the_autoencoder_checkpoint_rank_zero_found(autoencoder):
    """Rank 0 found step 1's weights (say, before step 2 was written); a rank joining later still encodes
    with them, not with the newest checkpoint."""
    run = RunDir(autoencoder)
    first = weights_sha256(run.checkpoint_dir(1))
    assert weights_sha256(run.latest_checkpoint()) != first
    config = latent_config(autoencoder, 1)
    joined = join_autoencoder(config, str(autoencoder.resolve()), first, DistContext(1, 2))
    latent, recorded = latent_training_data(joined, load_data(config))
    assert recorded.latent.autoencoder_sha256 == first
    weights = load_checkpoint(run.checkpoint_dir(1)).ema
    for key, value in latent.codec.autoencoder.state_dict().items():
        assert torch.equal(value, weights[key]), key
    _, newest = latent_training_data(config, load_data(config))  # rank 0 alone would take the newest
    assert newest.latent.autoencoder_sha256 != first


def test_a_rank_that_cannot_see_the_autoencoder_run_is_refused_in_one_line(tmp_path):
    config = latent_config(tmp_path / "ae", 1)
    missing = str(tmp_path / "elsewhere" / "ae")
    refusal = (r"^rank 1 cannot see autoencoder run '.*elsewhere/ae', which rank 0 encodes with; the "
               r"autoencoder run must be on a file system every node shares$")  # fmt: skip
    with pytest.raises(ConfigError, match=refusal):
        join_autoencoder(config, missing, "0" * 64, DistContext(1, 2))


def test_latents_are_drawn_only_after_encoding():
    codec = LatentCodec(AutoencoderKL(tiny_autoencoder_config(1).model), [0.0, 0.0], [1.0, 1.0])
    latent = LatentData(load_data(tiny_autoencoder_config(1)), codec)
    assert latent.sample_shape == (2, 4, 4) and len(latent) == 1500
    with pytest.raises(AssertionError, match="encode_dataset first"):
        latent.batch(torch.arange(2))
