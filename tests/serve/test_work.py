"""The pieces under the server: the step callbacks it needs from the model and RePaint, the grid format
of its results, the job queue, and the command's flags."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ddpm import editing
from ddpm.cli import main
from ddpm.model import load
from ddpm.serve.jobs import Job, JobCancelled, JobQueue
from ddpm.serve.work import grid_png, split_grid


def test_sample_with_result_passes_the_step_callback_through(runs_folder: Path) -> None:
    model = load(runs_folder / "digits")
    seen: list[tuple[int, int, tuple, tuple]] = []
    model.sample_with_result(3, sampler="ddim", steps=5, callback=lambda i, t, x, x0: seen.append(
        (i, t, tuple(x.shape), tuple(x0.shape))))  # fmt: skip
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert all(s[2] == s[3] == (3, 1, 8, 8) for s in seen)
    assert seen[0][1] > seen[-1][1]  # from noise towards data


def test_inpaint_passes_the_step_callback_through(runs_folder: Path) -> None:
    model = load(runs_folder / "digits")
    calls: list[int] = []
    images = torch.zeros(2, 1, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    out = editing.inpaint(model, images, mask, steps=4, jump_length=2, resamples=2,
                          callback=lambda i, t, x: calls.append(i))  # fmt: skip
    assert calls == list(range(len(calls))) and len(calls) > 4  # resampling adds model calls
    assert torch.equal(out[:, :, 4:], images[:, :, 4:])


def test_a_grid_splits_back_into_its_images() -> None:
    images = torch.linspace(-1, 1, 7).reshape(7, 1, 1, 1).expand(7, 3, 5, 4)
    tiles = split_grid(grid_png(images))
    assert len(tiles) == 7
    expected = [(v + 1) * 127.5 for v in torch.linspace(-1, 1, 7).tolist()]
    assert all(abs(int(t[0, 0, 0]) - e) <= 1 for t, e in zip(tiles, expected, strict=True))


def test_jobs_run_in_order_and_a_failure_is_reported() -> None:
    queue = JobQueue(max_jobs=4)
    order: list[int] = []
    gate = threading.Event()

    def work(k: int) -> Callable[[Job], bytes]:
        def run(job: Job) -> bytes:
            gate.wait(10)
            order.append(k)
            if k == 2:
                raise ValueError("bad\nthing")
            return b"png"

        return run

    jobs = [queue.submit(work(k), 1) for k in range(3)]
    assert [queue.position(j) for j in jobs[1:]] == [2, 3]  # the first is running (or about to)
    gate.set()
    for job in jobs:
        for _ in range(200):
            if job.finished:
                break
            threading.Event().wait(0.05)
    assert order == [0, 1, 2]
    assert [j.state for j in jobs] == ["done", "done", "failed"]
    assert jobs[2].events[-1] == {"type": "failed", "message": "bad thing"}
    queue.close()


def test_a_cancelled_job_raises_at_its_next_step() -> None:
    queue = JobQueue()
    job = queue.submit(lambda job: b"", 1)
    job.cancelled.set()
    with pytest.raises(JobCancelled):
        job.check()
    queue.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--host", "0.0.0.0"], "--host '0.0.0.0' is not a loopback address; add --allow-remote"),
        (["--port", "0"], "--port 0 is invalid"),
        (["--port", "70000"], "--port 70000 is invalid"),
    ],
)
def test_serve_refuses_bad_flags(
    runs_folder: Path, capsys: pytest.CaptureFixture, argv: list, message: str
) -> None:
    assert main(["serve", str(runs_folder), *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_a_folder_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", str(tmp_path)]) == 2
    assert "no run with a checkpoint in" in capsys.readouterr().err
