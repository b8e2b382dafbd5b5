"""ddpm.rundir: the run directory's names, its config read once, its logs and its checkpoints read back."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddpm.rundir
from ddpm.rundir import (
    CheckpointError,
    RunDir,
    checkpoint_step,
    read_checkpoint_meta,
    read_weights,
    resolve_checkpoint,
    verify_checkpoint,
)
from ddpm.train.checkpoint import save_checkpoint


def _save(run_dir: Path, step: int) -> Path:
    net = torch.nn.Linear(3, 2)
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW(net.parameters()).state_dict()
    return save_checkpoint(
        run_dir, step, model=net.state_dict(), ema=ema, optimizer=optimizer, meta={}, keep_last=5
    )


def _corrupt(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def test_names_are_the_documented_layout(tmp_path):
    run = RunDir(tmp_path)
    assert run.config_path == tmp_path / "config.toml"
    assert run.log_path == tmp_path / "log.jsonl"
    assert run.eval_path == tmp_path / "eval.jsonl"
    assert run.checkpoints_dir == tmp_path / "checkpoints"
    assert run.best_checkpoint_dir == tmp_path / "checkpoints" / "best"
    assert run.samples_dir == tmp_path / "samples"
    assert run.figures_dir == tmp_path / "figures"
    assert run.checkpoint_dir(1234) == tmp_path / "checkpoints" / "step_0001234"
    assert run.preview_png(20) == tmp_path / "samples" / "step_0000020.png"
    assert run.final_samples_png == tmp_path / "samples" / "final.png"
    assert run.final_samples_npz == tmp_path / "samples" / "final.npz"
    assert RunDir(str(tmp_path)) == run and not list(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize("name", RunDir.RUN_FILES)
def test_any_run_file_means_a_run_lives_here(tmp_path, name):
    run = RunDir(tmp_path)
    assert not run.holds_run()
    (tmp_path / name).mkdir()
    assert run.holds_run()


def test_figures_alone_are_not_a_run(tmp_path):
    RunDir(tmp_path).figures_dir.mkdir()
    assert not RunDir(tmp_path).holds_run()


def test_config_is_read_once(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.config_path.write_text("[run]\nsteps = 10\n")
    reads = []
    real_read = ddpm.rundir.read_toml
    monkeypatch.setattr(ddpm.rundir, "read_toml", lambda path: reads.append(path) or real_read(path))
    assert run.config_dict() == {"run": {"steps": 10}}
    run.config_path.write_text("[run]\nsteps = 99\n")  # a later change is not seen by this RunDir
    assert run.config_dict() == {"run": {"steps": 10}} and len(reads) == 1
    assert RunDir(tmp_path).config_dict() == {"run": {"steps": 99}}


def test_config_errors_name_the_file(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match=r"config file '.*config\.toml' does not exist"):
        run.config_dict()
    run.config_path.write_text("[run\n")
    with pytest.raises(ValueError, match=r"config file '.*config\.toml' is not valid TOML"):
        run.config_dict()
    run.config_path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"config file '.*config\.toml' is not valid TOML"):
        run.config_dict()
    run.config_path.unlink()
    run.config_path.mkdir()
    with pytest.raises(ValueError, match=r"config file '.*config\.toml' could not be read"):
        run.config_dict()


def test_log_records_skip_blank_lines_and_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path)
    assert run.log_records() == [] and run.eval_records() == []
    run.log_path.write_text('{"step": 1, "loss": 0.5}\n\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    assert run.log_records() == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
    run.eval_path.write_text('{"step": 2, "fid": 9.5}\n{"ste')
    assert run.eval_records() == [{"step": 2, "fid": 9.5}]


def test_a_broken_line_in_the_middle_is_refused(tmp_path):
    run = RunDir(tmp_path)
    run.log_path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2 is not a JSON object"):
        run.log_records()
    run.log_path.write_text('{"step": 1}\n[1, 2]\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2 is not a JSON object"):
        run.log_records()


def test_checkpoints_lists_complete_ones_oldest_first(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoints() == [] and run.latest_checkpoint() is None
    paths = [_save(tmp_path, step) for step in (10, 2, 30)]
    (run.checkpoints_dir / "step_0000040").mkdir()  # no manifest: not complete
    (run.checkpoints_dir / ".tmp-step_0000050-1").mkdir()
    assert run.checkpoints() == [paths[1], paths[0], paths[2]]
    assert [checkpoint_step(p) for p in run.checkpoints()] == [2, 10, 30]


def test_an_aside_copy_of_a_dead_writer_is_served(tmp_path):
    run = RunDir(tmp_path)
    path = _save(tmp_path, 4)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    aside = path.parent / f".old-step_0000004-{child.pid}"
    os.replace(path, aside)  # a crash between the two renames of a re-save
    assert run.checkpoints() == [aside] and checkpoint_step(aside) == 4


def test_latest_checkpoint_skips_a_corrupted_newest_one(tmp_path):
    run = RunDir(tmp_path)
    older, newest = _save(tmp_path, 1), _save(tmp_path, 2)
    assert run.latest_checkpoint() == newest
    _corrupt(newest / "ema.safetensors")
    messages = []
    assert run.latest_checkpoint(warn=messages.append) == older
    assert messages == [
        f"skipping step_0000002: checkpoint file {newest / 'ema.safetensors'} does not match its manifest "
        "(corrupt or modified)"
    ]


def test_resolve_a_run_directory_to_its_newest_valid_checkpoint(tmp_path):
    _save(tmp_path / "run", 1)
    newest = _save(tmp_path / "run", 2)
    assert resolve_checkpoint(tmp_path / "run") == (RunDir(tmp_path / "run"), newest)
    _corrupt(newest / "model.safetensors")
    run, path = resolve_checkpoint(tmp_path / "run", warn=lambda _: None)
    assert run == RunDir(tmp_path / "run") and path.name == "step_0000001"


def test_resolve_a_checkpoint_folder_inside_and_outside_a_run(tmp_path):
    inside = _save(tmp_path / "run", 3)
    assert resolve_checkpoint(inside) == (RunDir(tmp_path / "run"), inside)
    outside = tmp_path / "shared" / "copy" / "step_0000003"
    shutil.copytree(inside, outside)
    assert resolve_checkpoint(outside) == (None, outside)
    _corrupt(outside / "ema.safetensors")  # a folder given by name is verified too
    with pytest.raises(CheckpointError, match=r"ema\.safetensors does not match its manifest"):
        resolve_checkpoint(outside)


def test_resolve_refuses_what_is_neither(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"run directory .*run has no complete checkpoint yet"):
        resolve_checkpoint(tmp_path / "run")
    with pytest.raises(
        CheckpointError, match=r"'.*elsewhere' is neither a run directory nor a checkpoint folder"
    ):
        resolve_checkpoint(tmp_path / "elsewhere")


def test_weights_and_meta_are_read_back(tmp_path):
    path = _save(tmp_path, 7)
    meta = verify_checkpoint(path)
    assert meta == read_checkpoint_meta(path) and meta["step"] == 7
    model, ema = read_weights(path, "model"), read_weights(path)  # ema by default
    assert set(model) == {"weight", "bias"} and torch.equal(ema["bias"], model["bias"] + 1)
    with pytest.raises(ValueError, match=r"weights 'optimizer' are not allowed; choose model or ema"):
        read_weights(path, "optimizer")


def test_a_bad_meta_or_tensor_file_is_a_checkpoint_error(tmp_path):
    path = _save(tmp_path, 7)
    (path / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(CheckpointError, match=r"step_0000007: .*model\.safetensors is a pickle"):
        read_weights(path, "model")
    (path / "meta.json").write_text(json.dumps({"step": "seven"}))
    with pytest.raises(CheckpointError, match=r"meta\.json has no integer step"):
        read_checkpoint_meta(path)
    (path / "meta.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"meta\.json is not JSON"):
        read_checkpoint_meta(path)
    with pytest.raises(ValueError, match=r"'best' is not a checkpoint folder name"):
        checkpoint_step(path.parent / "best")
