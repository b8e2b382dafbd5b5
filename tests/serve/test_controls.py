"""Control runs through ``ddpm serve``'s API (ControlNet, Zhang, Rao & Agrawala 2023, and its concat
baseline): the run list names their control, a controlled sample equals ``ddpm sample --control``'s and the
model's own for the same seed, control and scale, scale 0 is the base, a real image's control is the run's
own control function's, and every refusal is one line naming the bad value."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from ddpm.cli import main
from ddpm.data import load_dataset
from ddpm.data.controls import make_control
from ddpm.model import load, to_uint8
from ddpm.serve.catalog import RunCatalog
from ddpm.serve.controls import ControlError, computed_kind
from ddpm.serve.work import split_grid
from tests.serve.conftest import run_id
from tests.serve.test_api import events, png_bytes

SAMPLING = {"sampler": "ddim", "steps": 4, "seed": 3}


def edge_map(size: int = 8, mode: str = "L") -> Image.Image:
    """A white-on-black control picture (a square outline), gray or RGB."""
    pixels = np.zeros((size, size), np.uint8)
    pixels[2, 2:6] = pixels[5, 2:6] = pixels[2:6, 2] = pixels[2:6, 5] = 255
    return Image.fromarray(pixels, "L").convert(mode)


def control_sample(
    client: TestClient, run: str, upload: tuple[str, bytes, str] | None = None, **fields: object
) -> httpx.Response:
    """POST /api/sample/control (multipart with an upload, else a plain form)."""
    data = {"run": run, "n": "1", **{k: str(v) for k, v in {**SAMPLING, **fields}.items()}}
    return client.post("/api/sample/control", data=data, files={"control": upload} if upload else None)


def finished(client: TestClient, response: httpx.Response) -> tuple[list[np.ndarray], list[dict]]:
    """The job's images at their own size (uint8 H×W×C) and its events."""
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    seen = events(client, job)
    assert seen[-1]["type"] == "done", seen[-1]
    return own_size(client.get(f"/api/jobs/{job}/result.png").content), seen


def own_size(grid: bytes) -> list[np.ndarray]:
    """The 8×8 images of a page grid (scaled up by nearest), uint8 H×W×C."""
    tiles = split_grid(grid)
    scale = tiles[0].shape[0] // 8
    return [t[::scale, ::scale].reshape(8, 8, -1) for t in tiles]


def test_the_run_list_names_each_runs_control(control_client: TestClient) -> None:
    runs = {r["name"]: r for r in control_client.get("/api/runs").json()["runs"]}
    assert runs["base"]["control"] is None
    assert runs["canny"]["control"] == {"mode": "controlnet", "kind": "canny", "channels": 1, "scale": True,
                                        "base": "base"}  # fmt: skip
    assert runs["mask-concat"]["control"] == {"mode": "concat", "kind": "mask", "channels": 1, "scale": False}


def test_an_uploaded_control_samples_as_ddpm_sample_does(
    control_client: TestClient, control_catalog: RunCatalog, control_runs: Path, tmp_path: Path
) -> None:
    picture = tmp_path / "edges.png"
    edge_map().save(picture)
    npz = tmp_path / "cli.npz"
    assert main(["sample", str(control_runs / "canny"), "--control", str(picture), "--control-scale", "0.7",
                 "--sampler", "ddim", "--steps", "4", "--seed", "3", "--out", str(npz)]) == 0  # fmt: skip
    with np.load(npz) as saved:
        cli = saved["images"]
    run = run_id(control_catalog, "canny")
    upload = ("edges.png", picture.read_bytes(), "image/png")
    (api,), seen = finished(control_client, control_sample(control_client, run, upload, control_scale=0.7))
    assert np.array_equal(api, cli[0])
    shown = base64.b64decode(next(e for e in seen if e["type"] == "control")["image"].split(",")[1])
    assert np.array_equal(own_size(shown)[0][..., 0], np.asarray(edge_map()))  # the control it used
    rgb = ("edges.png", png_bytes(edge_map(mode="RGB")), "image/png")  # colour converted, as the CLI does
    tiles, _ = finished(control_client, control_sample(control_client, run, rgb, n=3, control_scale=0.7))
    control = torch.from_numpy(np.asarray(edge_map(), np.float32) / 127.5 - 1).expand(3, 1, 8, 8)
    own = load(control_runs / "canny").sample(3, control=control, control_scale=0.7, **SAMPLING)
    assert np.array_equal(np.stack(tiles), to_uint8(own))


def test_scale_0_and_no_control_draw_the_frozen_base(
    control_client: TestClient, control_catalog: RunCatalog
) -> None:
    canny, base = run_id(control_catalog, "canny"), run_id(control_catalog, "base")
    upload = ("edges.png", png_bytes(edge_map()), "image/png")
    at_zero, _ = finished(control_client, control_sample(control_client, canny, upload, n=2, control_scale=0))
    plain = {"n": 2, **SAMPLING}
    of_base, _ = finished(control_client, control_client.post("/api/sample", json={"run": base, **plain}))
    dropped = control_client.post("/api/sample", json={"run": canny, **plain})
    assert dropped.json()["note"].startswith("no control image: drawn with the control dropped, which is the "
                                             "frozen base run 'base' alone")  # fmt: skip
    without, _ = finished(control_client, dropped)
    assert np.array_equal(np.stack(at_zero), np.stack(of_base))
    assert np.array_equal(np.stack(without), np.stack(of_base))
    at_one, _ = finished(control_client, control_sample(control_client, canny, upload, n=2))
    assert not np.array_equal(np.stack(at_one), np.stack(of_base))  # the branch does steer


@pytest.mark.parametrize("name, kind, label", [("canny", "canny", None), ("mask-concat", "mask", 3)])
def test_a_real_images_control_is_the_runs_own(
    control_client: TestClient, control_catalog: RunCatalog, control_runs: Path, name: str, kind: str,
    label: int | None,
) -> None:  # fmt: skip
    run = run_id(control_catalog, name)
    real = load_dataset("digits", split="test").batch(torch.arange(8))[2:3]
    control = make_control(kind, real)
    png = control_client.get(f"/api/runs/{run}/control/2.png")
    assert png.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), to_uint8(control)[0, ..., 0])
    fields = {"control_real": 2} if label is None else {"control_real": 2, "label": label}
    (api,), _ = finished(control_client, control_sample(control_client, run, **fields))
    own = load(control_runs / name).sample(1, control=control, labels=label, **SAMPLING)
    assert np.array_equal(api, to_uint8(own)[0])


BIG = png_bytes(edge_map(16))


@pytest.mark.parametrize(
    "name, fields, upload, message",
    [
        ("canny", {}, ("big.png", BIG, "image/png"),
         "control image 'big.png' is 16×16; this model needs 8×8 (W×H) control images"),
        ("canny", {}, ("notes.txt", b"not an image", "text/plain"), "upload 'notes.txt' is not an image"),
        ("canny", {}, ("huge.png", b"\x89PNG" + bytes(1_500_000), "image/png"),
         "upload 'huge.png' is over the 1 MB limit"),
        ("canny", {"control_real": 0, "control_scale": 2.5},
         None, "control_scale 2.5 is out of range; give a value from 0 to 2"),
        ("canny", {"control_real": 0, "control_scale": "nan"}, None, "control_scale nan is out of range"),
        ("canny", {"control_real": 8}, None, "control_real 8 is out of range; give a value from 0 to 7"),
        ("canny", {}, None, "give one control image: upload or draw one, or pick a real image's control"),
        ("canny", {"control_real": 0}, ("big.png", BIG, "image/png"), "give one control image"),
        ("canny", {"control_real": "two"}, None, "control_real: Input should be a valid integer"),
        ("base", {"control_real": 0}, None, "a control image needs a ControlNet run (ddpm train --controlnet "
         "BASE --control KIND) or a concat run (--control KIND alone); run 'base' has no control"),
        ("mask-concat", {"control_real": 0, "control_scale": 0.5}, None,
         "control_scale 0.5 applies to ControlNet runs; run 'mask-concat' is a concat run"),
    ],
)  # fmt: skip
def test_bad_control_requests_are_refused_in_one_line(
    control_client: TestClient, control_catalog: RunCatalog, name: str, fields: dict, upload: tuple | None,
    message: str,
) -> None:  # fmt: skip
    response = control_sample(control_client, run_id(control_catalog, name), upload, **fields)
    assert response.status_code in (400, 422)
    assert response.json()["error"].startswith(message)


def test_other_control_refusals(control_client: TestClient, control_catalog: RunCatalog) -> None:
    canny, base = run_id(control_catalog, "canny"), run_id(control_catalog, "base")
    scaled = control_client.post("/api/sample", json={"run": canny, "control_scale": 0.5})
    assert scaled.status_code == 400
    assert (
        scaled.json()["error"] == "control_scale 0.5 needs a control image; send both to /api/sample/control"
    )
    of_base = control_client.get(f"/api/runs/{base}/control/0.png")
    assert of_base.status_code == 400 and of_base.json()["error"].endswith("run 'base' has no control")
    beyond = control_client.get(f"/api/runs/{canny}/control/9.png")
    assert beyond.json()["error"] == "index 9 is out of range; give a value from 0 to 7"
    folder = {
        "name": "own",
        "control": {"mode": "controlnet", "kind": "folder", "channels": 1, "scale": True},
    }
    with pytest.raises(ControlError, match=r"run 'own' was trained on users' own control images \(control"):
        computed_kind(folder)
