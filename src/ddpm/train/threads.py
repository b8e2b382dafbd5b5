"""Torch's intra-op thread count, following the machine's load while a CPU run trains (issue 23, §5).

Why: PyTorch's CPU ops run on GNU OpenMP, whose worker threads spin at every barrier before they
sleep. With as many threads as cores and one other busy process on the machine, a barrier waits for
a thread that is not scheduled, and the spinning partner burns the slice it would need: small-op
workloads then run 5-20× slower (measured on a 2-core Xeon beside a 2-thread PyTorch neighbour:
swissroll 20,900 → 3,500 img/s, mnist 264 → 14; BENCHMARKS.md, "A busy neighbour"). One thread has
no barriers and loses only its share of the machine (mnist 109 img/s beside the same neighbour).
``OMP_WAIT_POLICY=PASSIVE`` also avoids the collapse but costs 15-30% when the machine is free, so
the thread count is what adapts.

How: every ``window_s`` seconds the governor compares the CPU time this process got with the wall
time (in cores' worth) and reads the machine's idle time from ``/proc/stat``. Too little CPU for its
threads on a machine with no idle core, two windows running, means a neighbour: drop to one thread.
An idle core for two windows at one thread means the neighbour left: go back up. Only in ``auto``
mode (``run.num_threads = 0``) on a CPU device with one process (DDP ranks already get one thread
each from torchrun); ``run.num_threads = N`` pins the count. Different thread counts round the same
sums in a different order, so a run that switched differs from a pinned one in the last bits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")
STARVED = 0.7  # below this share of its threads' CPU time, with no idle core, the run is crowded out
FREE_CORE = 0.6  # at least this many idle cores' worth: there is room for more threads
STRIKES = 2  # windows in a row before switching, so one noisy window does not flip the count


def idle_seconds(stat: Path = PROC_STAT) -> float | None:
    """Machine-wide idle CPU seconds so far (idle + iowait of /proc/stat's first line), or None."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ThreadGovernor:
    """Switches torch between ``max_threads`` and one thread as the machine's load comes and goes."""

    max_threads: int
    notify: Callable[[str], None] = lambda message: None
    window_s: float = 3.0
    clock: Callable[[], float] = time.perf_counter
    cpu_clock: Callable[[], float] = time.process_time
    idle: Callable[[], float | None] = idle_seconds
    threads: int = field(init=False)
    _strikes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.threads = torch.get_num_threads()
        self._start_window()

    @classmethod
    def for_run(
        cls, num_threads: int, device: torch.device, world_size: int, notify: Callable[[str], None]
    ) -> ThreadGovernor | None:
        """A governor in auto mode (``num_threads == 0``) on one CPU process with 2+ threads, else None."""
        auto = num_threads == 0 and device.type == "cpu" and world_size == 1
        if not auto or torch.get_num_threads() < 2 or idle_seconds() is None:
            return None
        return cls(torch.get_num_threads(), notify)

    def tick(self, step: int) -> None:
        """Call after every step; measures and decides once per window."""
        wall = self.clock() - self._wall0
        if wall < self.window_s:
            return
        idle_now = self.idle()
        if idle_now is None:
            return
        own_cores = (self.cpu_clock() - self._cpu0) / wall
        idle_cores = (idle_now - self._idle0) / wall
        wanted = self._decide(own_cores, idle_cores)
        if wanted != self.threads:
            torch.set_num_threads(wanted)
            self.notify(
                f"step {step}: {wanted} thread(s) — this run got {own_cores:.1f} of its {self.threads} "
                f"threads' CPU, {idle_cores:.1f} core(s) idle (run.num_threads=N pins the count)"
            )
            self.threads = wanted
        self._start_window()

    def _decide(self, own_cores: float, idle_cores: float) -> int:
        crowded = self.threads > 1 and own_cores < STARVED * self.threads and idle_cores < 1 - FREE_CORE
        room = self.threads == 1 and idle_cores >= FREE_CORE
        self._strikes = self._strikes + 1 if crowded or room else 0
        if self._strikes < STRIKES:
            return self.threads
        self._strikes = 0
        return 1 if crowded else self.max_threads

    def _start_window(self) -> None:
        self._wall0, self._cpu0 = self.clock(), self.cpu_clock()
        self._idle0 = self.idle() or 0.0
