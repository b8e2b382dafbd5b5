"""Tiny runs in a runs folder (one unconditional, one class-conditional, one outside it behind a
symlink) and in a folder of control runs (a base, a ControlNet steering it, a concat run), the app over each
with FastAPI's TestClient, and live uvicorn servers for the browser."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="ddpm serve needs the serve extra: pip install -e '.[serve]'")

import uvicorn
from fastapi.testclient import TestClient

from ddpm.serve.app import create_app
from ddpm.serve.catalog import RunCatalog
from ddpm.serve.jobs import JobQueue
from ddpm.train.run import train
from tests.conftest import QUIET, concat_run_config, control_run_config
from tests.train.conftest import tiny_digits_config

BASE_URL = "http://127.0.0.1:8000"


def train_tiny(run_dir: Path, **data_options: object) -> Path:
    """A 6-step digits run (seconds): these tests check the server, not the samples' quality."""
    config = tiny_digits_config()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data_options))
    train(config, run_dir, log=lambda *_: None)
    return run_dir


@pytest.fixture(scope="session")
def runs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/digits, runs/group/conditional, and runs/escape → a run outside runs/ (never served)."""
    base = tmp_path_factory.mktemp("serve")
    runs = base / "runs"
    train_tiny(runs / "digits")
    train_tiny(runs / "group" / "conditional", class_conditional=True)
    train_tiny(base / "outside")
    (runs / "escape").symlink_to(base / "outside", target_is_directory=True)
    return runs


@pytest.fixture(scope="session")
def catalog(runs_folder: Path) -> RunCatalog:
    return RunCatalog(runs_folder)


def run_id(catalog: RunCatalog, name: str) -> str:
    return next(entry.run_id for entry in catalog.entries.values() if entry.name == name)


@pytest.fixture
def queue() -> Iterator[JobQueue]:
    jobs = JobQueue(max_jobs=8)
    yield jobs
    jobs.close()


@pytest.fixture
def client(catalog: RunCatalog, queue: JobQueue) -> TestClient:
    return TestClient(create_app(catalog, queue), base_url=BASE_URL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_in_thread(catalog: RunCatalog) -> Iterator[tuple[str, JobQueue]]:
    """(URL, queue) of a real uvicorn server over ``catalog`` on a free loopback port, in a thread."""
    jobs = JobQueue(max_jobs=8)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(catalog, jobs), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", jobs
    jobs.close()
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(catalog: RunCatalog) -> Iterator[tuple[str, JobQueue]]:
    """(URL, queue) of a real uvicorn server over the runs folder."""
    yield from serve_in_thread(catalog)


@pytest.fixture(scope="session")
def control_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/base (a 6-step unconditional digits run), runs/canny (a 4-step canny ControlNet steering it,
    Zhang, Rao & Agrawala 2023) and runs/mask-concat (a 4-step class-conditional mask concat run): seconds."""
    runs = tmp_path_factory.mktemp("serve-control") / "runs"
    train_tiny(runs / "base")
    train(control_run_config(runs / "base"), runs / "canny", **QUIET)
    train(concat_run_config(), runs / "mask-concat", **QUIET)
    return runs


@pytest.fixture(scope="session")
def control_catalog(control_runs: Path) -> RunCatalog:
    return RunCatalog(control_runs)


@pytest.fixture
def control_client(control_catalog: RunCatalog, queue: JobQueue) -> TestClient:
    return TestClient(create_app(control_catalog, queue), base_url=BASE_URL)


@pytest.fixture(scope="module")
def control_live_server(control_catalog: RunCatalog) -> Iterator[tuple[str, JobQueue]]:
    """(URL, queue) of a real uvicorn server over the control runs."""
    yield from serve_in_thread(control_catalog)
