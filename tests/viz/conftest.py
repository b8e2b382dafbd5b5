"""Fixtures of the viz tests (the fakes themselves live in fakes.py)."""

from pathlib import Path

import pytest

from tests.viz.fakes import write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")
