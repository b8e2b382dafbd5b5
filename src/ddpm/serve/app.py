"""The web application of ``ddpm serve``: the page, the run list, jobs and their Server-Sent Events.

FastAPI routes over a :class:`RunCatalog` (runs by opaque id) and a :class:`JobQueue` (one worker, FIFO).
No route writes a file; run ids, job ids and a fixed list of static names are the only things a request
can name. Errors are JSON ``{"error": "<one line>"}``, shown on the page as they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import Tensor

from ddpm.data.controls import make_control
from ddpm.diffusion.samplers import SAMPLERS
from ddpm.serve.catalog import RunCatalog, UnknownRun
from ddpm.serve.controls import (
    ControlError,
    check_control_request,
    computed_kind,
    control_png,
    no_control_note,
    uploaded_control,
)
from ddpm.serve.guard import Guard, allowed_hosts
from ddpm.serve.jobs import Job, JobQueue, QueueFull
from ddpm.serve.uploads import MAX_REQUEST_BYTES, MAX_UPLOAD_BYTES, UploadError, image_tensor, mask_tensor
from ddpm.serve.work import InpaintRequest, SampleRequest, grid_png, inpaint_work, sample_work

STATIC = {"app.js": "text/javascript", "control.js": "text/javascript", "style.css": "text/css",
          "index.html": "text/html"}  # fmt: skip
MAX_IMAGES = 64  # images per sampling job
MAX_FILLS = 16  # fills per inpainting job
MAX_STEPS = 1000
MAX_REPAINT_CALLS = 20_000  # network calls of one inpainting job
POLL_S = 0.05  # how often an event stream looks for new events
TERMINAL = ("done", "failed", "cancelled")
REAL_IMAGES = 8  # real test images offered for inpainting


class BadRequest(ValueError):
    """A request value out of range: 400 with its message."""


class SampleBody(BaseModel):
    """The sampling form."""

    run: str
    n: int = 16
    sampler: str | None = None  # None: the run's own
    steps: int | None = None  # None: the run's own
    seed: int = 0
    label: int | None = None  # None: every class in turn (conditional runs)
    guidance: float = 1.0
    control_scale: float | None = None  # a ControlNet's; only with a control image (/api/sample/control)


class ControlSampleForm(SampleBody):
    """The sampling form of a control run with its control image: an uploaded (or drawn) file beside these
    fields, or ``control_real``, the number of a real test image whose control the run computes."""

    control_real: int | None = None


def static_text(name: str) -> str:
    """A file of the page, by its fixed name."""
    return resources.files("ddpm.serve").joinpath("static", name).read_text("utf-8")


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadRequest(f"{name} {value!r} is out of range; give a value from {low:g} to {high:g}")


def check_label(label: int | None, num_classes: int | None, guidance: float) -> None:
    """A class only for conditional runs (0…K−1); guidance ≠ 1 only for them too."""
    if num_classes is None and (label is not None or guidance != 1):
        raise BadRequest("this run is unconditional: it takes no class and guidance 1")
    if label is not None and num_classes is not None:
        check_range("class", label, 0, num_classes - 1)
    check_range("guidance", guidance, 0, 20)


def sample_request(body: SampleBody, summary: dict) -> SampleRequest:
    """The checked sampling request (the run's own sampler and steps where the form leaves them out)."""
    if summary.get("kind") != "images":
        kind = summary.get("kind")
        raise BadRequest(f"run {summary['name']!r} is a model of {kind}; the page draws images only")
    sampler = summary["sampler"] if body.sampler is None else body.sampler
    if sampler not in SAMPLERS:
        raise BadRequest(f"sampler {sampler[:40]!r} is not one of {', '.join(SAMPLERS)}")
    steps = summary["steps"] if body.steps is None else body.steps
    check_range("n", body.n, 1, MAX_IMAGES)
    check_range("steps", steps, 1, MAX_STEPS)
    check_range("seed", body.seed, 0, 2**31 - 1)
    check_label(body.label, summary.get("num_classes"), body.guidance)
    return SampleRequest(body.n, sampler, steps, body.seed, body.label, body.guidance)


def create_app(catalog: RunCatalog, queue: JobQueue, host: str = "127.0.0.1") -> Guard:
    """The ASGI application: the FastAPI routes behind the Host/Origin/size guard."""
    app = FastAPI(title="ddpm serve", docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app)
    add_page_routes(app, catalog)
    add_job_routes(app, catalog, queue)
    add_control_routes(app, catalog, queue)
    return Guard(app, allowed_hosts(host), MAX_REQUEST_BYTES)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    """User errors as one-line JSON messages with their status."""
    refusals = (
        (UnknownRun, 404),
        (UploadError, 400),
        (BadRequest, 400),
        (ControlError, 400),
        (QueueFull, 503),
    )
    for kind, status in refusals:
        app.add_exception_handler(kind, lambda _r, err, status=status: error(status, str(err).strip("'\"")))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            return error(404, f"nothing at {request.url.path[:80]!r}; the page is at /")
        return error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error(422, f"{where}: {first.get('msg', 'invalid value')}")


def add_page_routes(app: FastAPI, catalog: RunCatalog) -> None:
    """The page, its two static files, the run list and each run's pictures."""

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(static_text("index.html"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC or name == "index.html":
            return error(404, f"no static file {name[:40]!r}")
        return Response(static_text(name), media_type=STATIC[name])

    @app.get("/api/runs")
    def runs() -> JSONResponse:
        return JSONResponse({"runs": catalog.summaries()})

    @app.get("/api/runs/{run_id}/curves.png")
    def curves(run_id: str) -> Response:
        png = catalog.curves_png(run_id)
        if png is None:
            return error(404, "this run has no training log")
        return Response(png, media_type="image/png")

    @app.get("/api/runs/{run_id}/poster")
    def poster(run_id: str) -> Response:
        path = catalog.poster(run_id)
        if path is None:
            return error(404, "this run has no poster; make one with `ddpm report RUN --out RUN/poster.png`")
        kind = "application/pdf" if path.suffix == ".pdf" else "image/png"
        return Response(path.read_bytes(), media_type=kind)

    @app.get("/api/runs/{run_id}/real/{index}.png")
    def real(run_id: str, index: int) -> Response:
        check_range("index", index, 0, REAL_IMAGES - 1)
        return Response(grid_png(real_images(catalog, run_id)[index : index + 1]), media_type="image/png")


def add_job_routes(app: FastAPI, catalog: RunCatalog, queue: JobQueue) -> None:
    """Sampling and inpainting jobs: submit, follow (SSE), fetch the result, cancel."""

    @app.post("/api/sample")
    def sample(body: SampleBody) -> JSONResponse:
        summary = catalog.summary(catalog.get(body.run))
        request = sample_request(body, summary)
        if body.control_scale is not None:
            raise BadRequest(f"control_scale {body.control_scale} needs a control image; send both to "
                             "/api/sample/control")  # fmt: skip
        model = catalog.model(body.run)
        job = queue.submit(sample_work(model, request), request.n)
        return submitted(queue, job, no_control_note(summary))

    @app.post("/api/inpaint")
    def inpaint(
        run: Annotated[str, Form()], mask: Annotated[UploadFile, File()],
        image: Annotated[UploadFile | None, File()] = None, real: Annotated[int | None, Form()] = None,
        n: Annotated[int, Form()] = 4, steps: Annotated[int, Form()] = 50,
        jump_length: Annotated[int, Form()] = 5, resamples: Annotated[int, Form()] = 3,
        seed: Annotated[int, Form()] = 0, label: Annotated[int | None, Form()] = None,
    ) -> JSONResponse:  # fmt: skip
        summary = catalog.summary(catalog.get(run))
        shape = tuple(summary["sample_shape"])
        limits = (("n", n, MAX_FILLS), ("steps", steps, MAX_STEPS), ("jump_length", jump_length, MAX_STEPS))
        for name, value, high in (*limits, ("resamples", resamples, 50)):
            check_range(name, value, 1, high)
        check_range("seed", seed, 0, 2**31 - 1)
        check_range("network calls (steps × resamples)", steps * resamples, 1, MAX_REPAINT_CALLS)
        check_label(label, summary.get("num_classes"), 1.0)
        original = picked_image(catalog, run, image, real, shape)
        region = mask_tensor(read_upload(mask), shape)
        request = InpaintRequest(original, region, n, steps, jump_length, resamples, seed, label)
        return submitted(queue, queue.submit(inpaint_work(catalog.model(run), request), n))

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str) -> Response:
        job = queue.get(job_id)
        if job is None:
            return error(404, f"no job {job_id[:40]!r} (finished jobs are kept for a while only)")
        return StreamingResponse(event_stream(queue, job), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})  # fmt: skip

    @app.get("/api/jobs/{job_id}/result.png")
    def result(job_id: str) -> Response:
        job = queue.get(job_id)
        if job is None or job.result is None:
            return error(404, f"job {job_id[:40]!r} has no result (not finished, failed, or forgotten)")
        headers = {"content-disposition": f'attachment; filename="ddpm-{job.job_id.split("-")[0]}.png"'}
        return Response(job.result, media_type="image/png", headers=headers)

    @app.delete("/api/jobs/{job_id}")
    def cancel(job_id: str) -> JSONResponse:
        job = queue.get(job_id)
        if job is None:
            return error(404, f"no job {job_id[:40]!r}")
        queue.cancel(job)
        return JSONResponse({"job": job.job_id, "state": job.state})


def read_upload(upload: UploadFile) -> bytes:
    """At most one byte more than the limit of an upload (enough to refuse it)."""
    return upload.file.read(MAX_UPLOAD_BYTES + 1)


def picked_image(
    catalog: RunCatalog, run: str, image: UploadFile | None, real: int | None, shape: tuple[int, ...]
) -> Tensor:
    """The image to inpaint: an upload, else real test image number ``real``."""
    if image is not None and image.filename:
        return image_tensor(read_upload(image), image.filename[:80], shape)
    if real is None:
        raise BadRequest("pick a real image or upload one")
    check_range("real image", real, 0, REAL_IMAGES - 1)
    return real_images(catalog, run)[real : real + 1]


def real_images(catalog: RunCatalog, run_id: str) -> Tensor:
    """The run's first REAL_IMAGES test images, or a 400 saying why there are none."""
    try:
        return catalog.real_images(run_id, REAL_IMAGES)
    except (OSError, RuntimeError, ValueError) as err:
        raise BadRequest(f"no real images for this run ({' '.join(str(err).split())})") from None


def submitted(queue: JobQueue, job: Job, note: str | None = None) -> JSONResponse:
    """A queued job's id and position (and a note the page shows, when there is one)."""
    found = {"job": job.job_id, "position": queue.position(job)}
    return JSONResponse(found if note is None else {**found, "note": note})


async def event_stream(queue: JobQueue, job: Job) -> AsyncIterator[str]:
    """The job's events as Server-Sent Events, with its queue position while it waits; a client that goes
    away (a closed tab) cancels the job."""
    sent, position = 0, None
    try:
        while True:
            while sent < len(job.events):
                event = job.events[sent]
                sent += 1
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                if event["type"] in TERMINAL:
                    return
            now = queue.position(job)
            if now != position:
                position = now
                yield f"event: queued\ndata: {json.dumps({'type': 'queued', 'position': now})}\n\n"
            await asyncio.sleep(POLL_S)
    finally:
        if not job.finished:
            queue.cancel(job)


def add_control_routes(app: FastAPI, catalog: RunCatalog, queue: JobQueue) -> None:
    """A control run's samples with a control image, and the controls of its real test images."""

    @app.post("/api/sample/control")
    def sample_control(
        form: Annotated[ControlSampleForm, Form()], control: Annotated[UploadFile | None, File()] = None
    ) -> JSONResponse:
        summary = catalog.summary(catalog.get(form.run))
        request = sample_request(form, summary)
        image = picked_control(catalog, summary, control, form.control_real, form.control_scale)
        request = dataclasses.replace(request, control=image, control_scale=form.control_scale)
        return submitted(queue, queue.submit(sample_work(catalog.model(form.run), request), request.n))

    @app.get("/api/runs/{run_id}/control/{index}.png")
    def control_of_real(run_id: str, index: int) -> Response:
        control = real_control(catalog, catalog.summary(catalog.get(run_id)), index, "index")
        return Response(control_png(control), media_type="image/png")


def picked_control(
    catalog: RunCatalog, summary: dict, upload: UploadFile | None, real: int | None, scale: float | None
) -> Tensor:
    """The control image of a request, (1, C, H, W) in [-1, 1]: an upload (or drawing), else the control
    of real test image ``real``; exactly one of them, for a control run, with a scale for a ControlNet's."""
    given = upload is not None and bool(upload.filename)
    check_control_request(summary, given=given or real is not None, scale=scale)
    if given == (real is not None):
        raise BadRequest("give one control image: upload or draw one, or pick a real image's control "
                         "(control_real); to sample without control use /api/sample")  # fmt: skip
    if given:
        return uploaded_control(read_upload(upload), upload.filename[:80], summary)
    return real_control(catalog, summary, real, "control_real")


def real_control(catalog: RunCatalog, summary: dict, index: int, name: str) -> Tensor:
    """The control of real test image ``index`` (the request's field ``name``) by the run's own control
    function, as ddpm eval computes the controls of held-out images."""
    kind = computed_kind(summary)
    check_range(name, index, 0, REAL_IMAGES - 1)
    return make_control(kind, real_images(catalog, summary["id"])[index : index + 1])
