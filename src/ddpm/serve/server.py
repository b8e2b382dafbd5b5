"""Start the server of ``ddpm serve``: a run catalog, one job worker, and uvicorn on a loopback address
unless told otherwise."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import uvicorn

from ddpm.serve.app import create_app
from ddpm.serve.catalog import RunCatalog
from ddpm.serve.guard import LOOPBACK
from ddpm.serve.jobs import JobQueue


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; warn when it is allowed."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ValueError(
            f"--host {host!r} is not a loopback address; add --allow-remote to serve other machines"
        )
    print(
        f"warning: serving on {host}: anyone who can reach this address can sample your runs "
        "(there is no login); use 127.0.0.1 unless you mean it",
        file=sys.stderr,
    )


def serve(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_remote: bool = False,
    device: str = "cpu",
    max_jobs: int = 8,
) -> None:
    """Serve the runs in ``path`` until interrupted; prints the URL first."""
    check_host(host, allow_remote)
    catalog = RunCatalog(path, device=device)
    queue = JobQueue(max_jobs=max_jobs)
    app = create_app(catalog, queue, host)
    shown = f"[{host}]" if ":" in host else host
    runs = len(catalog.entries)
    print(f"ddpm serve: {runs} run(s) from {catalog.root} at http://{shown}:{port}/", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        queue.close()
