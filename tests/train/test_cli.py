"""The command line refuses bad input with one line naming the value, exit status 2, nothing written."""

import re

import pytest

from ddpm.cli import main, make_parser
from ddpm.train.config_layers import build_train_config, parse_duration
from ddpm.train.presets import get_preset


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.err.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "optim.lr=-1"], r"optim.lr=-1.0 must be > 0"),
        (["--set", "optim.learning_rate=1"], r"unknown config key 'optim.learning_rate'"),
        (["--set", "run.steps=many"], r"run.steps='many' has the wrong type; expected int"),
        (["--preset", "huge"], r"unknown preset 'huge'; allowed:"),
        (["--data", "imagenet"], r"unknown data set 'imagenet'"),
        (["--time", "soon"], r"--time 'soon' is not a duration"),
        (["--steps", "0"], r"run.steps=0 must be ≥ 1"),
        (["--device", "tpu"], r"run.device='tpu' is not allowed"),
        (["--config", "/nonexistent/x.toml"], r"config file '/nonexistent/x.toml' does not exist"),
        (["--resume", "--overwrite"], r"--resume and --overwrite contradict each other"),
        (["--set", "model.channel_mult=[1, 2, 2, 2, 2]"], r"cannot be halved 4 times"),
    ],
)  # fmt: skip
def test_train_refuses_bad_input_without_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    status, err = run_cli(capsys, "train", "--out", str(out), *argv)
    assert status == 2
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_train_refuses_to_overwrite_an_existing_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("# an earlier run\n")
    status, err = run_cli(capsys, "train", "--out", str(out), "--steps", "1")
    assert status == 2
    assert "already holds a run; pass --resume to continue it or --overwrite to replace it" in err
    assert (out / "config.toml").read_text() == "# an earlier run\n"


def test_sample_refuses_bad_paths_and_suffixes(tmp_path, capsys):
    status, err = run_cli(capsys, "sample", str(tmp_path / "missing"))
    assert status == 2 and "is neither a run directory nor a checkpoint folder" in err
    status, err = run_cli(capsys, "sample", str(tmp_path), "--out", str(tmp_path / "x.jpg"))
    assert status == 2 and "must end in .png or .npz" in err


def test_durations():
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400


def test_config_layers_apply_in_order(tmp_path):
    (tmp_path / "c.toml").write_text("[optim]\nlr = 0.5\n[run]\nsteps = 7\nseed = 1\n")
    config = build_train_config(
        "digits", config_file=tmp_path / "c.toml", overrides=["run.steps=8", "run.seed=2"],
        flags={"run.seed": 3, "run.batch_size": None},
    )  # fmt: skip
    assert (config.optim.lr, config.run.steps, config.run.seed) == (0.5, 8, 3)  # file < --set < flags
    assert config.run.batch_size == get_preset("digits").run.batch_size  # a flag left out changes nothing


@pytest.mark.parametrize("scale", ["2", "0"])  # 0 = unconditional, 2 = guided: both steer by class
def test_guidance_needs_a_class(tmp_path, capsys, scale):
    status, err = run_cli(capsys, "sample", str(tmp_path), "--guidance", scale)
    assert status == 2 and "--guidance needs --class K|all" in err


def test_guidance_defaults_to_the_plain_conditional_scale_one(tmp_path, capsys):
    parser = make_parser()
    for argv in (["sample", "run"], ["interpolate", "run"], ["inpaint", "run", "x.png", "--mask", "top"]):
        assert parser.parse_args(argv).guidance == 1.0
    status, err = run_cli(capsys, "sample", str(tmp_path / "missing"), "--guidance", "1")  # no --class needed
    assert status == 2 and "is neither a run directory nor a checkpoint folder" in err


def test_every_command_has_help(capsys):
    for command in ("train", "sample", "invert", "interpolate", "inpaint", "eval", "viz", "report"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: ddpm " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sampler", "ddim", "--spacing", "karras"],
         r"--spacing 'karras' is not allowed for the ddim sampler; choose uniform, trailing, quadratic$"),
        (["--sampler", "dpm++2m_sde", "--spacing", "log"],
         r"--spacing 'log' is not allowed for the dpm\+\+2m_sde sampler; "
         r"choose uniform, trailing, quadratic, karras"),
        (["--class", "all", "--sampler", "ddpm", "--spacing", "karras"],
         r"--spacing 'karras' is not allowed for the ddpm sampler"),
        (["--eps-scale", "0"], r"--eps-scale 0\.0 is invalid; give a finite number > 0 \(1 = off\)$"),
        (["--class", "all", "--eps-scale", "-1"], r"--eps-scale -1\.0 is invalid"),
    ],
)  # fmt: skip
def test_sample_refuses_a_bad_spacing_or_eps_scale(tmp_path, capsys, argv, message):
    out = tmp_path / "x.png"
    status, err = run_cli(capsys, "sample", str(tmp_path / "missing"), "--out", str(out), *argv)
    assert status == 2 and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_sample_spacing_reaches_the_sampler(tmp_path, capsys, tiny_config):
    import numpy as np

    from ddpm.train.run import train

    run_dir = tmp_path / "run"
    train(tiny_config, run_dir, log=lambda *_: None)
    drawn = {}
    for spacing in ("karras", "trailing"):
        out = tmp_path / f"{spacing}.npz"
        options = ["--steps", "4", "--n", "4", "--spacing", spacing, "--out", str(out)]
        status, err = run_cli(capsys, "sample", str(run_dir), "--sampler", "dpm++2m_sde", *options)
        assert status == 0, err
        drawn[spacing] = np.load(out)["images"]
    assert drawn["karras"].shape == drawn["trailing"].shape == (4, 8, 8, 1)
    assert not np.array_equal(drawn["karras"], drawn["trailing"])  # other timesteps, other images
