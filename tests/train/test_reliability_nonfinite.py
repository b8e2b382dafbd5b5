"""Non-finite loss or gradients: the step is skipped and counted; K in a row stop the run.

NaNs are injected through the data (the batches of chosen steps are poisoned), so they arrive
the way a corrupt sample would; a non-finite gradient norm with a finite loss is injected at the
clipping call. Every saved tensor must stay finite, and a resumed run must repeat the skips exactly.
"""

import dataclasses
import json

import pytest
import torch

from ddpm.data import Dataset
from ddpm.rundir import RunDir
from ddpm.train.checkpoint import assert_finite, load_checkpoint
from ddpm.train.config import OptimConfig
from ddpm.train.data_order import EpochOrder
from ddpm.train.loop import NonFiniteTrainingError
from ddpm.train.run import train

DIGITS_TRAIN_SIZE = 1500  # rows of the digits train split (checked below)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # run.num_threads=1 below sets torch's global thread count


def _config(config, steps: int, checkpoint_every: int, max_bad_steps: int = 20):
    # one thread: tiny convolutions run many times faster when other processes share the cores
    run = dataclasses.replace(config.run, steps=steps, checkpoint_every=checkpoint_every, num_threads=1)
    return dataclasses.replace(
        config, run=run, optim=dataclasses.replace(config.optim, max_bad_steps=max_bad_steps)
    )


def _poison(monkeypatch, config, bad_steps):
    """Batches of the 0-based steps ``bad_steps`` become NaN (found by their data indices)."""
    order = EpochOrder(DIGITS_TRAIN_SIZE, config.run.batch_size, config.run.seed)
    poisoned = [order.batch_indices(step) for step in bad_steps]
    clean_batch = Dataset.batch

    def batch(self, index, device=None):
        assert len(self) == DIGITS_TRAIN_SIZE
        x = clean_batch(self, index, device)
        return x * float("nan") if any(torch.equal(index, p) for p in poisoned) else x

    monkeypatch.setattr(Dataset, "batch", batch)


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _all_finite(run_dir):
    for path in RunDir(run_dir).checkpoints():
        checkpoint = load_checkpoint(path)
        for part in (checkpoint.model, checkpoint.ema, checkpoint.optimizer):
            assert_finite(part, str(path))  # raises on any NaN/Inf


def test_nan_steps_are_skipped_counted_and_resumed_exactly(tmp_path, monkeypatch, capsys, tiny_config):
    config = _config(tiny_config, steps=8, checkpoint_every=3)
    _poison(monkeypatch, config, bad_steps=[1, 4])  # logged as steps 2 and 5
    train(config, tmp_path / "whole", log=lambda *_: None)
    assert "step 2: non-finite loss; skipped (1 in a row, 1 in all)" in capsys.readouterr().out
    half = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=4))
    train(half, tmp_path / "split", log=lambda *_: None)
    train(config, tmp_path / "split", resume=True, log=lambda *_: None)

    whole, split = (load_checkpoint(RunDir(tmp_path / r).latest_checkpoint()) for r in ("whole", "split"))
    for part in ("model", "ema", "optimizer"):
        a, b = getattr(whole, part), getattr(split, part)
        assert all(torch.equal(a[name], b[name]) for name in a), part
    assert whole.meta["ema_updates"] == 6 and whole.meta["counters"]["skipped_steps"] == 2
    assert whole.meta["counters"] == split.meta["counters"]
    log = _log(tmp_path / "whole")
    assert [r["skipped_steps"] for r in log] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert log[1]["loss"] is None and log[1]["grad_norm"] is None  # JSON null, not NaN
    assert all(r["loss"] is not None for r in log if r["step"] not in (2, 5))
    fields = ("step", "loss", "grad_norm", "lr", "skipped_steps")
    assert [[r[k] for k in fields] for r in log] == [[r[k] for k in fields] for r in _log(tmp_path / "split")]
    _all_finite(tmp_path / "whole")


def test_k_bad_steps_in_a_row_stop_with_the_step_named_and_keep_the_last_checkpoint(
    tmp_path, monkeypatch, tiny_config
):
    config = _config(tiny_config, steps=12, checkpoint_every=3, max_bad_steps=3)
    _poison(monkeypatch, config, bad_steps=[4, 5, 6, 7])
    with pytest.raises(
        NonFiniteTrainingError,
        match=r"training stopped at step 7: 3 steps in a row had a non-finite loss "
        r"\(optim.max_bad_steps=3\); the last checkpoint in .*checkpoints is kept",
    ):
        train(config, tmp_path / "run", log=lambda *_: None)
    assert [p.name for p in RunDir(tmp_path / "run").checkpoints()] == ["step_0000003", "step_0000006"]
    _all_finite(tmp_path / "run")
    assert (
        load_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000006").meta["counters"][
            "bad_steps_in_a_row"
        ]
        == 2
    )


def test_a_non_finite_gradient_with_a_finite_loss_is_skipped(tmp_path, monkeypatch, capsys, tiny_config):
    config = _config(tiny_config, steps=4, checkpoint_every=0)
    clip, calls = torch.nn.utils.clip_grad_norm_, [0]

    def clip_with_inf_on_the_second_step(parameters, *args, **kwargs):
        calls[0] += 1
        norm = clip(parameters, *args, **kwargs)
        return norm * float("inf") if calls[0] == 2 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_with_inf_on_the_second_step)
    train(config, tmp_path / "run", log=lambda *_: None)
    assert "step 2: non-finite gradient norm; skipped" in capsys.readouterr().out
    checkpoint = load_checkpoint(RunDir(tmp_path / "run").latest_checkpoint())
    assert checkpoint.meta["ema_updates"] == 3 and checkpoint.meta["counters"]["skipped_steps"] == 1


def test_non_finite_weights_are_never_saved():
    with pytest.raises(ValueError, match=r"refusing to save EMA weights: tensor 'w' has non-finite values"):
        assert_finite({"w": torch.tensor([1.0, float("inf")])}, "EMA weights")


def test_max_bad_steps_must_not_be_negative():
    with pytest.raises(ValueError, match=r"optim.max_bad_steps=-1 must be ≥ 0 \(0 = never stop\)"):
        OptimConfig(max_bad_steps=-1)
