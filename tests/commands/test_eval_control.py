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
