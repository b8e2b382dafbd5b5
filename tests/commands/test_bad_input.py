"""Bad input to any command ends in one line ``ddpm <command>: error: …`` naming the bad value, exit
status 2, never a traceback: argparse's own refusals, the commands' checks and the library's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddpm.cli import main

# {run}: a tiny unconditional digits run (its own sampler: dpm++2m_sde); {cond}: a class-conditional
# one; {tmp}: an empty folder; {digit0}, {digit1}, {notes.txt}, {fake.png}, {samples}, {broken.npz},
# {mask}: the files of the user_files fixture.
CASES = [
    ("train", "--out {tmp}/new --bogus", r"unrecognized arguments: --bogus"),
    ("train", "--out {tmp}/new --time soon", r"--time 'soon' is not a duration"),
    ("train", "--out {tmp}/new --set nonsense", r"--set 'nonsense' is not KEY=VALUE"),
    ("train", "--out {tmp}/new --set run.steps=many", r"run.steps='many' has the wrong type"),
    ("train", "--out {tmp}/new --steps many", r"argument --steps: invalid int value: 'many'"),
    ("train", "--out {tmp}/new --data imagenet", r"unknown data set 'imagenet'"),
    ("train", "--out {tmp}/new --preset huge", r"unknown preset 'huge'"),
    ("train", "--out {tmp}/new --nproc 0", r"--nproc 0 must be ≥ 1"),
    ("train", "--out {tmp}/new --config {tmp}/none.toml", r"config file '.*none\.toml' does not exist"),
    ("sample", "{tmp}/missing", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("sample", "{run} --n 0", r"--n 0 is invalid; it must be an integer ≥ 1"),
    ("sample", "{run} --n many", r"argument --n: invalid int value: 'many'"),
    ("sample", "{run} --batch-size 0", r"--batch-size 0 is invalid"),
    ("sample", "{run} --seed -1", r"--seed -1 is invalid; it must be an integer ≥ 0"),
    ("sample", "{run} --out {tmp}/x.jpg", r"--out '.*x\.jpg' must end in \.png or \.npz"),
    ("sample", "{run} --gif {tmp}/x.mp4", r"--gif '.*x\.mp4' must end in \.gif"),
    ("sample", "{run} --sampler plms", r"--sampler 'plms' is not a sampler; choose ddpm, ddim"),
    ("sample", "{run} --sampler ddim --spacing karras", r"--spacing 'karras' is not allowed for the ddim"),
    ("sample", "{run} --spacing log", r"--spacing 'log' is not allowed for the dpm\+\+2m_sde sampler"),
    ("sample", "{run} --steps 0", r"--steps 0 is invalid"),
    ("sample", "{run} --eta 2", r"--eta 2\.0 is outside \[0, 1\]"),
    ("sample", "{run} --eta 0.5", r"--eta applies to the ddim sampler only, not 'dpm\+\+2m_sde'"),
    ("sample", "{run} --eps-scale 0", r"--eps-scale 0\.0 is invalid"),
    ("sample", "{run} --eps-scale nan", r"--eps-scale nan is invalid"),
    ("sample", "{run} --eps-scale big", r"argument --eps-scale: invalid float value: 'big'"),
    ("sample", "{run} --class 3", r"classes='3' given to an unconditional model"),
    ("sample", "{cond} --class seven", r"classes='seven' is invalid"),
    ("sample", "{cond} --class 12", r"class 12 is out of range; this model has classes 0…9"),
    ("sample", "{cond} --class all --guidance -1", r"--guidance -1\.0 is invalid"),
    ("sample", "{cond} --guidance 2", r"--guidance needs --class K\|all"),
    ("sample", "{cond} --class all --gif {tmp}/x.gif", r"--gif cannot be combined with --class"),
    ("sample", "{cond} --class all --sampler heun --eta 0.5", r"--eta applies to the ddim sampler only"),
    ("sample", "{run} --device tpu", r"--device 'tpu' is not a device"),
    ("sample", "{run} --weights fancy", r"argument --weights: invalid choice: 'fancy'"),
    ("sample", "{run} --bogus 1", r"unrecognized arguments: --bogus 1"),
    ("sample", "", r"the following arguments are required: RUN_DIR\|CHECKPOINT"),
    ("invert", "{tmp}/missing {digit0}", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("invert", "{run}", r"the following arguments are required: IMAGE"),
    ("invert", "{run} {notes.txt}", r"image '.*notes\.txt' must be \.npz or one of \.png"),
    ("invert", "{run} {fake.png}", r"cannot identify image file '.*fake\.png'"),
    ("invert", "{run} {tmp}/none.png", r"image '.*none\.png' does not exist"),
    ("invert", "{run} {digit0} --out {tmp}/l.png", r"--out '.*l\.png' must end in \.npz"),
    ("invert", "{run} {digit0} --figure {tmp}/f.gif", r"--figure '.*f\.gif' must end in \.png"),
    ("invert", "{run} {digit0} --steps 0", r"--steps 0 is invalid"),
    ("invert", "{run} {digit0} --class x", r"argument --class: invalid int value: 'x'"),
    ("invert", "{cond} {digit0} --class 12", r"class 12 is out of range"),
    ("interpolate", "{run} --num 1", r"--num 1 is invalid; it must be an integer ≥ 2"),
    ("interpolate", "{run} --seeds 0 x", r"argument --seeds: invalid int value: 'x'"),
    ("interpolate", "{run} --seeds 0 -5", r"--seeds -5 is invalid; it must be an integer ≥ 0"),
    ("interpolate", "{run} --images {digit0} {digit1} --seeds 0 1", r"argument --seeds: not allowed with"),
    ("interpolate", "{run} --images {notes.txt} {digit1}", r"image '.*notes\.txt' must be \.npz"),
    ("interpolate", "{run} --out {tmp}/i.gif", r"--out '.*i\.gif' must end in \.png or \.npz"),
    ("interpolate", "{run} --guidance 2", r"guidance=2\.0 needs a class-conditional model"),
    ("interpolate", "{run} --guidance nan", r"--guidance nan is invalid"),
    ("inpaint", "{run} {digit0}", r"the following arguments are required: --mask"),
    ("inpaint", "{run} {digit0} --mask middle", r"--mask 'middle' is neither a file nor one of top"),
    ("inpaint", "{run} {digit0} --mask {notes.txt}", r"--mask '.*notes\.txt' is not a readable image"),
    ("inpaint", "{run} {notes.txt} --mask top", r"image '.*notes\.txt' must be \.npz"),
    ("inpaint", "{run} {digit0} --mask top --n 0", r"--n 0 is invalid"),
    ("inpaint", "{run} {digit0} --mask top --jump-length 0", r"--jump-length 0 is invalid"),
    ("inpaint", "{run} {digit0} --mask top --resamples x", r"argument --resamples: invalid int value: 'x'"),
    ("inpaint", "{run} {digit0} --mask top --out {tmp}/p.jpg", r"--out '.*p\.jpg' must end in \.png"),
    ("eval", "{tmp}/missing", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("eval", "{samples}", r"--data is required to evaluate a samples file"),
    ("eval", "{samples} --data imagenet", r"unknown data spec 'imagenet'"),
    ("eval", "{samples} --data digits --metrics bogus", r"unknown metric\(s\) 'bogus'"),
    ("eval", "{broken.npz} --data digits", r"'.*broken\.npz' is not a samples \.npz"),
    ("eval", "{run} --n 1", r"--n 1 is invalid; it must be an integer ≥ 2"),
    ("eval", "{run} --sampler plms", r"--sampler 'plms' is not a sampler"),
    ("eval", "{run} --spacing log", r"--spacing 'log' is not allowed for the dpm\+\+2m_sde sampler"),
    ("eval", "{run} --eps-scale -1", r"--eps-scale -1\.0 is invalid"),
    ("eval", "{run} --device tpu", r"--device 'tpu' is not a device"),
    ("eval", "{run} --split bogus", r"split 'bogus' is not available for 'digits'"),
    ("eval", "{run} --n 100000", r"n=100000 but the test split of 'digits' has"),
    ("viz", "bogus {run}", r"argument kind: invalid choice: 'bogus'"),
    ("viz", "curves {tmp}/missing", r"run directory '.*missing' does not exist"),
    ("viz", "forward {tmp}/missing", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("report", "{tmp}/missing", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("report", "{run} --out {tmp}/poster.jpg", r"--out '.*poster\.jpg' must end in \.pdf or \.png or \.svg"),
    ("report", "{run} --page huge", r"argument --page: invalid choice: 'huge'"),
    # {diffusers}: a diffusers model folder (flat layout); {broken-diffusers}: one with no U-Net in it
    ("sample", "{broken-diffusers}", r"'?.*broken-diffusers/config\.json not found; a diffusers model folder "
                                     r"holds unet/ and scheduler/ subfolders"),
    ("sample", "{diffusers} --sampler plms", r"--sampler 'plms' is not a sampler"),
    ("sample", "{diffusers} --class 3", r"classes='3' given to an unconditional model"),
    ("invert", "{diffusers} {digit0} --class 1", r"labels given to an unconditional model"),
    ("eval", "{diffusers}", r"--data is required for a diffusers model folder, which records no training"),
    ("eval", "{diffusers} --data swissroll", r"'swissroll' is 2-D points: image_size and channels must be"),
    ("report", "{diffusers}", r"is a diffusers model folder, not a run directory: a poster tells a training"),
    ("viz", "reverse {diffusers}", r"pictures of a run need its training data; a diffusers model folder"),
    ("export", "{run}", r"the following arguments are required: OUT_DIR"),
    ("export", "{run} {tmp}/out --format onnx", r"--format 'onnx' is not supported; allowed: diffusers"),
    ("export", "{run} {digit0}", r"OUT_DIR '.*digit0\.png' is a file; give a folder"),
    ("export", "{run} {run}", r"OUT_DIR '.*run' exists and is not empty; give --overwrite to replace it"),
    ("export", "{run} {run}/.. --overwrite", r"OUT_DIR '.*run/\.\.' holds the model being exported"),
    ("export", "{tmp}/missing {tmp}/out", r"'.*missing' is neither a run directory nor a checkpoint folder"),
    ("export", "{run} {tmp}/out --weights fancy", r"argument --weights: invalid choice: 'fancy'"),
]  # fmt: skip


def fill(template: str, places: dict[str, Path]) -> list[str]:
    """``template`` split into arguments, each ``{name}`` replaced by its path."""
    return [re.sub(r"\{([^}]+)\}", lambda m: str(places[m.group(1)]), word) for word in template.split()]


@pytest.fixture(scope="module")
def places(digits_run, conditional_run, user_files, diffusers_folders, tmp_path_factory) -> dict[str, Path]:
    broken = tmp_path_factory.mktemp("bad-diffusers") / "broken-diffusers"
    broken.mkdir()
    (broken / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}')
    return {"run": digits_run, "cond": conditional_run, "tmp": tmp_path_factory.mktemp("bad-input"),
            "samples": user_files["samples"], **user_files, "diffusers": diffusers_folders["flat"],
            "broken-diffusers": broken}  # fmt: skip


@pytest.mark.parametrize(("command", "template", "message"), CASES, ids=[f"{c} {t}" for c, t, _ in CASES])
def test_bad_input_is_one_line_and_exit_status_two(command, template, message, places, capsys):
    status = main([command, *fill(template, places)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert status == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ddpm {command}: error: "), lines[0]
    assert re.search(message, lines[0]), lines[0]


def test_an_unknown_command_is_one_line_too(capsys):
    assert main(["smaple", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("ddpm: error: argument COMMAND: invalid choice: 'smaple'")
        and len(err.splitlines()) == 1
    )


def test_nothing_is_written_when_input_is_refused(places, capsys):
    out = places["tmp"] / "refused.png"
    for argv in (
        ["sample", str(places["run"]), "--eta", "2"],
        ["inpaint", str(places["run"]), str(places["digit0"]), "--mask", "middle"],
        ["sample", str(places["run"]), "--sampler", "plms"],
    ):
        assert main([*argv, "--out", str(out)]) == 2
    capsys.readouterr()
    assert not out.exists()
