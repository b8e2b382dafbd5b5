"""The thread governor: one thread while a neighbour crowds the machine, all of them when it leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddpm.train.threads import ThreadGovernor, idle_seconds


class FakeMachine:
    """Clocks that advance by a window at each call of ``window(own_cores, idle_cores)``."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.idle_s = 0.0

    def window(self, own_cores: float, idle_cores: float, seconds: float = 3.0) -> None:
        self.wall += seconds
        self.cpu += own_cores * seconds
        self.idle_s += idle_cores * seconds


@pytest.fixture
def machine():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield FakeMachine()
    torch.set_num_threads(threads)


def governor_on(machine: FakeMachine, messages: list[str]) -> ThreadGovernor:
    return ThreadGovernor(
        2, messages.append, window_s=3.0,
        clock=lambda: machine.wall, cpu_clock=lambda: machine.cpu, idle=lambda: machine.idle_s,
    )  # fmt: skip


def test_two_crowded_windows_drop_to_one_thread_and_say_so(machine):
    messages: list[str] = []
    governor = governor_on(machine, messages)
    machine.window(own_cores=0.9, idle_cores=0.0)
    governor.tick(10)
    assert governor.threads == 2 and torch.get_num_threads() == 2  # one window is not enough
    machine.window(own_cores=0.9, idle_cores=0.0)
    governor.tick(20)
    assert governor.threads == 1 and torch.get_num_threads() == 1
    assert len(messages) == 1 and messages[0].startswith("step 20: 1 thread(s)")


def test_a_free_core_brings_the_threads_back(machine):
    messages: list[str] = []
    governor = governor_on(machine, messages)
    for step in (1, 2):
        machine.window(own_cores=0.8, idle_cores=0.1)
        governor.tick(step)
    assert governor.threads == 1
    machine.window(own_cores=1.0, idle_cores=0.0)  # the neighbour still there: stay at one
    governor.tick(3)
    assert governor.threads == 1
    for step in (4, 5):
        machine.window(own_cores=1.0, idle_cores=1.0)
        governor.tick(step)
    assert governor.threads == 2 and torch.get_num_threads() == 2
    assert messages[-1].startswith("step 5: 2 thread(s)")


@pytest.mark.parametrize(
    "own, idle",
    [(1.9, 0.0), (1.0, 0.9), (0.9, 0.5)],  # alone and busy; slow for its own reasons with idle CPU
)
def test_no_switch_without_a_neighbour(machine, own, idle):
    governor = governor_on(machine, [])
    for step in range(5):
        machine.window(own_cores=own, idle_cores=idle)
        governor.tick(step)
    assert governor.threads == 2


def test_one_noisy_window_between_normal_ones_does_not_switch(machine):
    governor = governor_on(machine, [])
    for step, own in enumerate((0.9, 1.9, 0.9, 1.9)):
        machine.window(own_cores=own, idle_cores=0.0)
        governor.tick(step)
    assert governor.threads == 2


def test_ticks_within_a_window_do_nothing(machine):
    governor = governor_on(machine, [])
    machine.window(own_cores=0.5, idle_cores=0.0, seconds=1.0)
    for step in range(10):
        governor.tick(step)
    assert governor.threads == 2 and governor._strikes == 0


def test_only_auto_mode_on_one_cpu_process_gets_a_governor(machine):
    cpu = torch.device("cpu")
    assert ThreadGovernor.for_run(2, cpu, 1, print) is None  # run.num_threads pinned
    assert ThreadGovernor.for_run(0, torch.device("cuda"), 1, print) is None
    assert ThreadGovernor.for_run(0, cpu, 2, print) is None  # DDP ranks
    torch.set_num_threads(1)
    assert ThreadGovernor.for_run(0, cpu, 1, print) is None
    torch.set_num_threads(2)
    expected = idle_seconds() is not None  # Linux
    assert (ThreadGovernor.for_run(0, cpu, 1, print) is not None) == expected


def test_idle_seconds_reads_idle_and_iowait(tmp_path: Path):
    import os

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 700 30 0 0 0 0 0\ncpu0 50 0 25 350 15 0 0 0 0 0\n")
    assert idle_seconds(stat) == pytest.approx(730 / os.sysconf("SC_CLK_TCK"))
    assert idle_seconds(tmp_path / "absent") is None
    stat.write_text("garbage\n")
    assert idle_seconds(stat) is None
