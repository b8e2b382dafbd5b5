"""An ASGI wrapper that refuses requests not meant for this server before any route sees them.

- Host must name the bound address (or ``localhost`` for a loopback one): a page on another site whose
  DNS name was rebound to 127.0.0.1 sends its own name as Host and is refused (DNS rebinding).
- Origin, when a browser sends one, must be this server too: another site cannot start jobs here.
- A request body must declare its length, at most ``max_body`` bytes (uploads are bounded before parsing).
Every response carries a Content-Security-Policy that allows this server's own scripts and styles only,
so the page works offline and loads nothing from elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


def allowed_hosts(host: str) -> set[str]:
    """The host names a request may carry for a server bound to ``host``."""
    return set(LOOPBACK) if host in LOOPBACK else {host.lower(), f"[{host.lower()}]"}


def hostname(value: str) -> str:
    """``example.org:8000`` → ``example.org``; ``[::1]:80`` → ``[::1]``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """Wraps an ASGI app with the checks of this module."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str], max_body: int) -> None:
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            status, message = refusal
            await _send_error(send, status, message)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, one-line message) for a request to refuse, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if hostname(host) not in self.hosts:
            return 421, f"Host {host[:80]!r} is not this server; open it as http://{sorted(self.hosts)[0]}"
        origin = headers.get("origin")
        if origin and origin != "null" and hostname(urlsplit(origin).netloc) not in self.hosts:
            return 403, f"requests from {origin[:80]!r} are refused; use the page this server serves"
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                return 411, "a request body must state its length (Content-Length)"
            if int(length) > self.max_body:
                return 413, f"the request is {int(length) / 1e6:.1f} MB; uploads are limited to 1 MB each"
        return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
