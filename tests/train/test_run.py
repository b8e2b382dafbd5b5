"""``train.run.train``'s deadline: the two-stage CPU recipe's --time counts the latent run's data
preparation (its encoding), so training stops at the deadline rather than a budget after it."""

from __future__ import annotations

import time

from ddpm.rundir import RunDir, checkpoint_step
from ddpm.train.run import _until, train
from tests.train.conftest import tiny_digits_config


def test_a_passed_deadline_stops_after_one_step_with_a_checkpoint(tmp_path):
    config = tiny_digits_config()  # 6 steps
    result = train(config, tmp_path / "run", deadline=time.perf_counter(), log=lambda _: None)
    assert result.stopped_early and result.step == 1
    assert checkpoint_step(RunDir(tmp_path / "run").latest_checkpoint()) == 1


def test_the_deadline_cuts_the_time_budget_and_never_extends_it():
    config = tiny_digits_config(time_budget_s=5.0)
    assert _until(config, time.perf_counter() + 3600).run.time_budget_s == 5.0
    assert 1.0 < _until(config, time.perf_counter() + 2.0).run.time_budget_s <= 2.0
    assert _until(tiny_digits_config(), time.perf_counter() - 10).run.time_budget_s == 1e-3
