"""kill -9, SIGTERM, SIGINT and a double SIGINT against real `python -m ddpm train` processes.

A small dose of scripts/reliability.py (whose full run, 20 kills and 10 + 10 signals, is recorded
in docs/RELIABILITY.md): one run directory is interrupted by each event in turn and resumed each
time; after every event every checkpoint must verify and the next process must resume from the
newest one; the finished run must equal an uninterrupted one tensor for tensor.
"""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability.py"


def _script():
    spec = importlib.util.spec_from_file_location("reliability_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_and_signalled_run_resumes_to_the_uninterrupted_result(tmp_path):
    reliability = _script()
    events = ["kill9", "kill9-save", "sigterm", "double-sigint"]
    report = reliability.run_suite(
        tmp_path, steps=10, kill_events=events, signal_events=[], flips=0, disk_full=False,
        rng=random.Random(7),
    )  # fmt: skip
    assert report.problems == []
    landed = [line for line in report.lines if line.startswith("kill chain:")]
    assert landed == [f"kill chain: {len(events)} of {len(events)} events landed"], report.lines
    assert any("equal to the reference: True; log records equal: True" in line for line in report.lines)
