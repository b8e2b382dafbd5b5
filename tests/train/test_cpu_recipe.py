"""The two-stage CPU recipe of ``ddpm train --data folder:PATH`` for images of 64 px and more (issue 20): an
f=8 autoencoder into OUT/autoencoder, then latent diffusion on it into OUT; --time split between them,
--resume continuing whichever is unfinished, the recipe said in one line, bad input refused before either
stage writes anything."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from ddpm.cli import main, parse
from ddpm.commands.train import config_from_args
from ddpm.rundir import RunDir, checkpoint_step, weights_sha256
from ddpm.train import cpu_recipe
from ddpm.train.cpu_recipe import default_recipe, split_time, stage_sets
from ddpm.train.loop import TrainResult
from ddpm.train.presets import get_preset
from tests.train.test_recipes import image_folder

TINY = (
    "--device",
    "cpu",
    "--batch-size",
    "2",
    "--set",
    "run.preview_images=2",
    "--set",
    "run.preview_steps=2",
)


def train_cli(capsys, folder: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    status = main(["train", "--data", f"folder:{folder}", "--out", str(out), *TINY, *flags])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip()


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def newest_step(run_dir: Path) -> int:
    return checkpoint_step(RunDir(run_dir).latest_checkpoint())


def test_time_goes_20_percent_to_the_autoencoder_and_what_is_left_to_latent_diffusion():
    assert split_time(0) == (0.0, 0.0)  # no --time: each stage trains its steps
    assert split_time(600) == (240.0, 360.0)
    assert split_time(600, autoencoder_s=60) == (240.0, 540.0)  # an autoencoder done early leaves more
    assert split_time(600, autoencoder_s=300) == (240.0, 300.0)  # --time is the command's wall time
    assert split_time(600, autoencoder_s=700) == (240.0, 1.0)  # never 0, which would mean no budget


def test_set_keys_go_to_the_stage_whose_tables_they_name():
    sets = ["run.steps=3", "data.image_size=64", "optim.lr=1e-4", "autoencoder_loss.kl_weight=1e-5",
            "model.base_channels=32", "diffusion.schedule=cosine"]  # fmt: skip
    assert stage_sets(sets, "autoencoder") == sets[:4]
    assert stage_sets(sets, "latent") == [*sets[:3], *sets[4:]]


def test_a_64_px_folder_trains_an_autoencoder_then_latent_diffusion_on_it(tmp_path, capsys):
    folder, out = image_folder(tmp_path / "photos", 64), tmp_path / "run"
    status, said, err = train_cli(capsys, folder, out, "--steps", "2")
    assert status == 0, err
    assert said.splitlines()[0] == (
        "CPU recipe for 64 px images: autoencoder f=8 (2 steps) then latent diffusion (2 steps); "
        "--preset cifar10 for the paper's GPU recipe"
    )
    assert "trained 2 steps in" in said and f"samples: {out / 'samples' / 'final.png'}" in said
    first, second = RunDir(out / "autoencoder"), RunDir(out)
    assert first.config_dict()["model"]["kind"] == "autoencoder"
    assert first.config_dict()["model"]["block_out_channels"] == [32, 64, 64, 64]  # f=8
    assert first.config_dict()["data"]["image_size"] == second.config_dict()["data"]["image_size"] == 64
    latent = second.config_dict()["latent"]
    assert latent["autoencoder"] == str((out / "autoencoder").resolve())
    assert latent["autoencoder_sha256"] == weights_sha256(first.latest_checkpoint())
    assert newest_step(out / "autoencoder") == newest_step(out) == 2
    assert first.final_samples_png.is_file() and second.final_samples_png.is_file()


def test_resume_continues_the_unfinished_autoencoder_then_trains_latent_diffusion(
    tmp_path, capsys, monkeypatch
):
    folder, out = image_folder(tmp_path / "photos", 64), tmp_path / "run"
    real_train = cpu_recipe.train

    def killed_before_the_second_stage(config, run_dir, **kwargs):
        if Path(run_dir) == out:
            raise KeyboardInterrupt
        return real_train(config, run_dir, **kwargs)

    monkeypatch.setattr(cpu_recipe, "train", killed_before_the_second_stage)
    assert train_cli(capsys, folder, out, "--steps", "1")[0] == 130
    assert newest_step(out / "autoencoder") == 1 and not RunDir(out).holds_run()
    monkeypatch.setattr(cpu_recipe, "train", real_train)
    status, _, err = train_cli(capsys, folder, out, "--steps", "2", "--resume")
    assert status == 0, err
    assert steps_logged(out / "autoencoder") == [1, 2]  # continued, not restarted
    assert newest_step(out) == 2
    sha = RunDir(out).config_dict()["latent"]["autoencoder_sha256"]
    assert sha == weights_sha256(RunDir(out / "autoencoder").latest_checkpoint())


class FakeTrain:
    """``train`` that records each stage's config and writes a config.toml only (a started run)."""

    def __init__(self, seconds: float | None = None) -> None:
        self.calls: list[tuple[Path, object]] = []
        self.deadlines: list[float | None] = []
        self.seconds = seconds

    def __call__(self, config, run_dir, **kwargs) -> TrainResult:
        self.calls.append((Path(run_dir), config))
        self.deadlines.append(kwargs.get("deadline"))
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "config.toml").write_text("")
        seconds = config.run.time_budget_s if self.seconds is None else self.seconds
        return TrainResult(Path(run_dir), 1, True, 0.0, seconds)


def test_time_is_split_and_the_second_stage_is_the_latent_run_of_the_first(tmp_path, capsys, monkeypatch):
    folder, out = image_folder(tmp_path / "photos", 96, count=1), tmp_path / "run"
    fake = FakeTrain()
    monkeypatch.setattr(cpu_recipe, "train", fake)
    status, said, err = train_cli(capsys, folder, out, "--time", "10m")
    assert status == 0, err
    assert said.startswith(
        "CPU recipe for 96 px images: autoencoder f=8 (4 min) then latent diffusion (6 min);"
    )
    (first_dir, first), (second_dir, second) = fake.calls
    assert first_dir == out / "autoencoder" and first.run.time_budget_s == 240
    assert second_dir == out and 360 < second.run.time_budget_s <= 600  # the autoencoder took ~0 s here
    assert second.latent.autoencoder == str(out / "autoencoder") and second.data.image_size == 96
    assert first.model.image_size == 96 and second.model.image_size == 12
    # the latent run must end 10 min after the command began, its encoding included
    assert fake.deadlines[0] is None and 0 < fake.deadlines[1] - time.perf_counter() <= 600


def test_resume_leaves_an_autoencoder_alone_once_latent_diffusion_has_started(tmp_path, monkeypatch):
    out = tmp_path / "run"
    for run_dir in (out / "autoencoder", out):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text("")
    fake, built = FakeTrain(), []
    monkeypatch.setattr(cpu_recipe, "train", fake)

    def build(args, run_dir):
        built.append((args.kind, args.latent, args.resume, run_dir))
        return get_preset("digits")

    result = default_recipe(parse(["train", "--out", str(out), "--resume"]), str(out), build)
    assert [run_dir for run_dir, _ in fake.calls] == [out] and result.run_dir == out
    first, second = (
        ("autoencoder", None, True, str(out / "autoencoder")),
        (None, str(out / "autoencoder"), True, str(out)),
    )
    assert built == [first, second, second]  # both checked, the second trained


def test_a_signal_in_the_first_stage_stops_before_the_second(tmp_path, capsys, monkeypatch):
    folder, out = image_folder(tmp_path / "photos", 64, count=1), tmp_path / "run"
    fake = FakeTrain(seconds=5.0)  # stopped early, long before its 240 s
    monkeypatch.setattr(cpu_recipe, "train", fake)
    status, said, _ = train_cli(capsys, folder, out, "--time", "10m")
    assert status == 0 and len(fake.calls) == 1
    assert f"stopped in the autoencoder stage; ddpm train --out {out} --resume continues it" in said


def test_the_default_recipe_is_said_for_one_stage_runs_and_left_to_the_caller(tmp_path):
    folder = image_folder(tmp_path / "photos", 32, count=1)
    said = []
    for device, line in [
        ("cpu", "CPU recipe for 32 px images: pixel diffusion, preset cifar10-cpu (1860 steps); --preset"),
        ("cuda", "GPU recipe: preset cifar10 (the paper's: 35.7M parameters, 800k steps); --device cpu for"),
    ]:  # fmt: skip
        args = parse(["train", "--data", f"folder:{folder}", "--device", device])
        assert default_recipe(args, str(tmp_path / "run"), config_from_args, log=said.append) is None
        assert said.pop().startswith(line)
    named = parse(["train", "--data", f"folder:{folder}", "--preset", "cifar10-cpu"])
    assert default_recipe(named, str(tmp_path / "run"), config_from_args, log=said.append) is None
    assert said == []  # an explicit preset is not announced


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc", "2"], r"--nproc 2 does not apply to the two-stage CPU recipe; train its stages"),
        (["--set", "model.nope=1"], r"unknown config key 'model.nope'"),
        (["--set", "data.image_size=100"], r"image_size 100 cannot be halved 3 times"),
        (["--set", "autoencoder_loss.kl_weight=-1"], r"autoencoder_loss: kl_weight -1.0 must be"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line_before_either_stage_writes(tmp_path, capsys, flags, message):
    folder, out = image_folder(tmp_path / "photos", 64, count=1), tmp_path / "run"
    status, _, err = train_cli(capsys, folder, out, *flags)
    assert status == 2 and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_an_existing_run_or_a_file_as_out_is_refused(tmp_path, capsys):
    folder = image_folder(tmp_path / "photos", 64, count=1)
    (tmp_path / "run" / "autoencoder").mkdir(parents=True)
    (tmp_path / "run" / "autoencoder" / "config.toml").write_text("# earlier\n")
    status, _, err = train_cli(capsys, folder, tmp_path / "run")
    assert status == 2 and "run/autoencoder' already holds a run; pass --resume to continue it" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["autoencoder"]
    (tmp_path / "file").write_text("")
    status, _, err = train_cli(capsys, folder, tmp_path / "file")
    assert status == 2 and err.endswith(f"--out {str(tmp_path / 'file')!r} is a file, not a directory")
