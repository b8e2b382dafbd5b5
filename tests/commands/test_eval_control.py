"""`ddpm eval` of a ControlNet run: controlled samples scored beside the base's, and the control kind's
adherence at its chance, controlled and ceiling levels (issue 21)."""

from __future__ import annotations

import json
import re

import pytest

from ddpm.cli import main
from ddpm.command_support import control_comparison, open_run


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture
def quiet_cache(cache_dir, monkeypatch):
    # the feature classifier is trained once for these tests, and its cache stays out of the user's data root
    monkeypatch.setenv("DDPM_DATA", str(cache_dir))


def _eval(run_dir, out, *flags):
    assert main(["eval", str(run_dir), "--metrics", "fd", "--device", "cpu", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_a_control_run_reports_adherence_and_the_fd_of_controlled_and_base_samples(
    control_run, tmp_path, quiet_cache, capsys
):
    report = _eval(control_run, tmp_path / "r.json", "--n", "12")
    block = report["adherence"]
    assert (block["control"], block["measure"], block["name"]) == ("canny", "edge_f1", "edge F1")
    assert block["n"] == 12 and block["controls"] == "test split of digits" and block["ceiling"] == 1.0
    assert all(0.0 <= block[level] <= 1.0 for level in ("controlled", "chance", "ceiling"))
    # The numbers are command_support.control_comparison's on the same 12 held-out controls and seed.
    levels = control_comparison(open_run(control_run, device="cpu"), n=12, uncontrolled=True).adherence()
    assert {level: block[level] for level in levels} == {level: value.mean for level, value in levels.items()}
    # FD of the samples drawn with controls (the metrics) beside the base's, on the same real images.
    assert report["samples"] == "controlled"
    assert report["metrics"]["n"] == report["base_metrics"]["n"] == 12
    assert report["metrics"]["fd_classifier"] > 0 and report["base_metrics"]["fd_classifier"] > 0
    out = capsys.readouterr().out
    assert "controlled  base, no control" in out and "chance (base, no control)" in out
    assert "adherence of canny controls on 12 held-out images (test split of digits)" in out


def test_a_control_runs_n_is_capped_by_its_held_out_images(control_run, tmp_path, quiet_cache):
    # digits' test split holds 297 images: --split train asks for more real images than there are controls.
    report = _eval(control_run, tmp_path / "r.json", "--n", "400", "--split", "train", "--steps", "2")
    assert report["adherence"]["n"] == report["metrics"]["n"] == 297 and report["steps"] == 2


def test_a_run_without_control_has_no_adherence_block(digits_run, tmp_path, quiet_cache, capsys):
    report = _eval(digits_run, tmp_path / "r.json", "--n", "12")
    assert "adherence" not in report and "base_metrics" not in report and "samples" not in report
    assert "adherence" not in capsys.readouterr().out


def test_sampler_flags_and_data_root_reach_the_controlled_samples(control_run, tmp_path):
    from ddpm.commands.eval import _with_data

    opened = open_run(control_run, device="cpu")
    settings = opened.model.sampling.with_overrides(sampler="ddim", steps=3)
    moved = _with_data(opened, opened.data_section(None), settings, str(tmp_path))
    assert moved.model.sampling == settings and moved.model.net is opened.model.net
    assert moved.config.data.root == str(tmp_path) and opened.config.data.root != str(tmp_path)


def test_users_own_controls_report_no_measure():
    import torch

    from ddpm.commands.eval import _adherence_record, format_table
    from ddpm.editing import ControlComparison

    images = torch.zeros(3, 1, 8, 8)
    block = _adherence_record(ControlComparison("folder", images, images, images, images), "digits")
    assert block == {"control": "folder", "mode": "controlnet", "measure": None, "name": None, "n": 3,
                     "controls": "test split of digits"}  # fmt: skip
    report = {"metrics": {"n": 3.0}, "base_metrics": {"n": 3.0}, "adherence": block}
    expected = "(test split of digits): users' own controls have no adherence measure"
    assert format_table(report).endswith(expected)


def test_control_scale_zero_scores_the_base_samples_as_controlled(control_run, tmp_path, quiet_cache):
    report = _eval(control_run, tmp_path / "r.json", "--n", "6", "--steps", "2", "--control-scale", "0")
    block = report["adherence"]
    assert report["control_scale"] == 0.0 and block["controlled"] == block["chance"]
    assert report["metrics"]["fd_classifier"] == report["base_metrics"]["fd_classifier"]
    assert "control_scale" not in _eval(control_run, tmp_path / "s.json", "--n", "2", "--steps", "2")


@pytest.mark.parametrize(
    ("run", "flags", "message"),
    [
        ("digits_run", [], r"--control-scale 0\.5 applies to ControlNet runs; '.*' is not a ControlNet run"),
        ("concat_run", [], r"--control-scale 0\.5 applies to ControlNet runs; '.*' is a concat run"),
        ("control_run", ["--nll"], r"--control-scale: sampler flags do not apply to --nll"),
    ],
)
def test_control_scale_is_refused_where_no_controlnet_samples(run, flags, message, request, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["eval", str(request.getfixturevalue(run)), "--control-scale", "0.5", "--json", str(out), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err) and not out.exists()


@pytest.fixture
def draws(monkeypatch):
    """Every DiffusionModel.sample call, recorded as whether it was drawn without control."""
    from ddpm.model import DiffusionModel

    calls, original = [], DiffusionModel.sample

    def spy(self, n=None, **options):
        calls.append(options.get("control") is None)
        return original(self, n, **options)

    monkeypatch.setattr(DiffusionModel, "sample", spy)
    return calls


def test_a_controlnets_base_samples_are_drawn_once_for_its_checkpoints_and_scales(
    control_run, tmp_path, quiet_cache, cache_dir, draws, capsys
):
    flags = {"--n": "6", "--seed": "7", "--steps": "3"}  # a key no other test draws
    args = [part for item in flags.items() for part in item]
    before = set(cache_dir.glob("samples/base-*.safetensors"))
    first = _eval(control_run / "checkpoints" / "step_0000002", tmp_path / "a.json", *args)
    assert draws == [False, True] and "from the cache" not in capsys.readouterr().out  # controlled, then base
    [cached] = set(cache_dir.glob("samples/base-*.safetensors")) - before  # written atomically, once
    later = _eval(control_run, tmp_path / "b.json", *args, "--control-scale", "0.5")
    assert draws[2:] == [False]  # the newest checkpoint at another scale: its base samples are read back
    said = [line for line in capsys.readouterr().out.splitlines() if "from the cache" in line]
    assert said == [f"read 6 base samples from the cache {cached}"]
    assert later["base_metrics"] == first["base_metrics"]
    assert later["adherence"]["chance"] == first["adherence"]["chance"]
    for flag, value in (("--seed", "8"), ("--n", "5"), ("--steps", "4")):
        draws.clear()
        _eval(
            control_run, tmp_path / "c.json", *[p for k, v in {**flags, flag: value}.items() for p in (k, v)]
        )
        assert draws == [False, True], flag  # another key: the base is drawn again
        assert "from the cache" not in capsys.readouterr().out


def test_a_concat_runs_uncontrolled_samples_are_never_cached(concat_run, tmp_path, quiet_cache, draws):
    for name in (
        "a",
        "b",
    ):  # its control-dropped samples are its own network's, which each checkpoint changes
        _eval(concat_run, tmp_path / f"{name}.json", "--n", "4", "--seed", "7", "--steps", "2")
    assert draws == [False, True, False, True]
