"""The API of ``ddpm serve`` without a browser: what a request may name, uploads, the Host check, the job
queue (cancelling frees a slot; 8 requests at once all complete), and that nothing writes into a run."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ddpm.serve.catalog import RunCatalog
from ddpm.serve.jobs import JobQueue
from ddpm.serve.work import split_grid
from tests.serve.conftest import run_id


def events(client: TestClient, job: str) -> list[dict]:
    """Every event of a job, read through its Server-Sent Events stream to the end."""
    with client.stream("GET", f"/api/jobs/{job}/events") as stream:
        return [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def top_half_mask() -> bytes:
    pixels = np.zeros((64, 64, 4), np.uint8)
    pixels[:32] = 255
    return png_bytes(Image.fromarray(pixels, "RGBA"))


def test_the_run_list_holds_the_runs_inside_the_folder_only(client: TestClient, catalog: RunCatalog) -> None:
    runs = client.get("/api/runs").json()["runs"]
    assert sorted(r["name"] for r in runs) == ["digits", "group/conditional"]  # not escape/ (a symlink out)
    conditional = next(r for r in runs if r["name"] == "group/conditional")
    assert conditional["num_classes"] == 10 and conditional["steps_trained"] == 6
    assert conditional["data"] == "digits" and conditional["has_curves"]
    for run in runs:
        assert "/" not in run["id"] and len(run["id"]) == 12  # opaque, not a path


@pytest.mark.parametrize(
    "url",
    [
        "/api/runs/..%2F..%2Fetc%2Fpasswd/curves.png",
        "/api/runs/%2Fetc%2Fpasswd/poster",
        "/api/runs/..%2Fescape/curves.png",
        "/api/runs/escape/real/0.png",
        "/static/..%2Fcatalog.py",
        "/static/%2E%2E%2Fapp.py",
        "/static/index.html",
    ],
)
def test_paths_in_urls_reach_nothing(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    message = response.json()["error"]
    assert message.startswith(("no run with id", "no static file", "nothing at"))


@pytest.mark.parametrize("run", ["../digits", "/etc/passwd", "digits", "escape", "group/conditional", ""])
def test_a_run_is_named_by_its_id_only(client: TestClient, run: str) -> None:
    response = client.post("/api/sample", json={"run": run, "n": 1})
    assert response.status_code == 404
    assert response.json()["error"].startswith("no run with id")


def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path: Path, runs_folder: Path) -> None:
    (tmp_path / "secret.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    served = tmp_path / "served"
    served.mkdir()
    (served / "run").symlink_to(runs_folder / "digits", target_is_directory=True)  # out of served/
    with pytest.raises(ValueError, match="no run with a checkpoint"):
        RunCatalog(served)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "192.168.1.5:8000", ""]
)
def test_a_wrong_host_header_is_refused(client: TestClient, host: str) -> None:
    response = client.get("/api/runs", headers={"host": host})
    assert response.status_code == 421
    assert "is not this server" in response.json()["error"]


def test_loopback_names_and_same_origin_are_allowed_other_origins_are_not(client: TestClient) -> None:
    assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200
    body = {"run": "x", "n": 1}
    refused = client.post("/api/sample", json=body, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403 and "are refused" in refused.json()["error"]
    same = client.post("/api/sample", json=body, headers={"origin": "http://127.0.0.1:8000"})
    assert same.status_code == 404  # reached the route: unknown run


def inpaint(
    client: TestClient, run: str, image: tuple[str, bytes, str] | None, **fields: str
) -> httpx.Response:
    files = {"mask": ("mask.png", top_half_mask(), "image/png")}
    if image is not None:
        files["image"] = image
    return client.post("/api/inpaint", data={"run": run, "n": "2", "steps": "6", "resamples": "2", **fields},
                       files=files)  # fmt: skip


@pytest.mark.parametrize(
    "upload, message",
    [
        (("notes.txt", b"not an image", "text/plain"), "upload 'notes.txt' is not an image"),
        (("fake.png", b"\x89PNG but not really", "image/png"), "upload 'fake.png' is not an image"),
        (("big.png", b"\x89PNG" + bytes(1_500_000), "image/png"), "upload 'big.png' is over the 1 MB limit"),
        (("empty.png", b"", "image/png"), "upload 'empty.png' is empty"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(
    client: TestClient, catalog: RunCatalog, upload: tuple, message: str
) -> None:
    response = inpaint(client, run_id(catalog, "digits"), upload)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_an_oversized_request_is_refused_before_it_is_read(client: TestClient, catalog: RunCatalog) -> None:
    response = inpaint(client, run_id(catalog, "digits"), ("huge.png", bytes(3_000_000), "image/png"))
    assert response.status_code == 413
    assert "uploads are limited to 1 MB" in response.json()["error"]


def test_inpainting_an_upload_keeps_its_unmasked_pixels(client: TestClient, catalog: RunCatalog) -> None:
    pixels = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))  # 8×8 gradient
    upload = ("digit.png", png_bytes(Image.fromarray(pixels, "L")), "image/png")
    job = inpaint(client, run_id(catalog, "digits"), upload).json()["job"]
    kinds = [e["type"] for e in events(client, job)]
    assert kinds[-1] == "done" and "progress" in kinds
    tiles = split_grid(client.get(f"/api/jobs/{job}/result.png").content)
    assert len(tiles) == 2
    scale = tiles[0].shape[0] // 8
    for tile in tiles:  # the bottom half (not painted) is the upload's, exactly
        assert np.array_equal(tile[4 * scale :: scale, ::scale], pixels[4:])


def test_an_empty_mask_and_bad_values_are_refused(client: TestClient, catalog: RunCatalog) -> None:
    run = run_id(catalog, "group/conditional")
    files = {"mask": ("mask.png", png_bytes(Image.new("RGBA", (8, 8))), "image/png")}
    response = client.post("/api/inpaint", data={"run": run, "real": "0"}, files=files)
    assert response.status_code == 400 and response.json()["error"].startswith("the mask is empty")
    for body, message in (
        ({"n": 65}, "n 65 is out of range"),
        ({"steps": 0}, "steps 0 is out of range"),
        ({"label": 10}, "class 10 is out of range"),
        ({"sampler": "magic"}, "sampler 'magic' is not one of"),
        ({"n": "many"}, "n: Input should be a valid integer"),
    ):
        response = client.post("/api/sample", json={"run": run, **body})
        assert response.status_code in (400, 422) and response.json()["error"].startswith(message)
    digits = run_id(catalog, "digits")
    response = client.post("/api/sample", json={"run": digits, "label": 3})
    assert response.json()["error"] == "this run is unconditional: it takes no class and guidance 1"


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_cancelled_job_frees_its_slot(catalog: RunCatalog) -> None:
    from ddpm.serve.app import create_app

    queue = JobQueue(max_jobs=1)
    client = TestClient(create_app(catalog, queue), base_url="http://127.0.0.1:8000")
    slow = {"run": run_id(catalog, "digits"), "n": 64, "sampler": "ddpm", "steps": 1000}
    try:
        first = client.post("/api/sample", json=slow).json()["job"]
        busy = client.post("/api/sample", json=slow)
        assert busy.status_code == 503 and busy.json()["error"].startswith("the server is busy with 1 jobs")
        assert client.delete(f"/api/jobs/{first}").status_code == 200
        wait_until(lambda: queue.unfinished() == 0)
        assert queue.get(first).state == "cancelled"
        assert events(client, first)[-1]["type"] == "cancelled"
        again = client.post("/api/sample", json=slow)
        assert again.status_code == 200
        client.delete(f"/api/jobs/{again.json()['job']}")
    finally:
        queue.close()


def test_a_closed_event_stream_cancels_its_job(
    live_server: tuple[str, JobQueue], catalog: RunCatalog
) -> None:
    url, queue = live_server
    body = {"run": run_id(catalog, "digits"), "n": 64, "sampler": "ddpm", "steps": 1000}
    job = httpx.post(f"{url}/api/sample", json=body).json()["job"]
    with httpx.stream("GET", f"{url}/api/jobs/{job}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: progress"):
                break  # the job runs; now the tab closes
    wait_until(lambda: queue.get(job).state == "cancelled", timeout_s=30)


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_eight_concurrent_requests_all_complete_and_nothing_is_written(
    client: TestClient, catalog: RunCatalog, runs_folder: Path
) -> None:
    before = tree(runs_folder)
    runs = [run_id(catalog, "digits"), run_id(catalog, "group/conditional")]

    def one(i: int) -> tuple[int, int, list[str]]:
        body = {"run": runs[i % 2], "n": i + 1, "steps": 4, "seed": i, "sampler": ["ddim", "euler"][i % 2]}
        job = client.post("/api/sample", json=body).json()["job"]
        kinds = [e["type"] for e in events(client, job)]
        tiles = split_grid(client.get(f"/api/jobs/{job}/result.png").content)
        return i + 1, len(tiles), kinds

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for wanted, got, kinds in results:
        assert got == wanted and kinds[-1] == "done"
    assert any("queued" in kinds for *_, kinds in results)
    assert tree(runs_folder) == before  # no endpoint writes into a run directory
