"""Checks that run before any route, and before any byte of the body is read.

In this order: the request's headers are bounded (431); a protected route needs a valid API
key (401: who may call is decided before what they send is read); a declared body over the
limit is refused (413); an undeclared (chunked) body is counted as it streams and the request
is refused as soon as it passes the limit, so nothing over it is ever buffered or parsed.
Roles (403) are checked by the routes' dependencies, which also document them in OpenAPI.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wearcast.api.security import HEADER, KeyRing

__all__ = ["DOCS_ASSETS", "OPEN_PATHS", "RequestLimits", "error_body"]

# Probes, metrics and the API's own description: open to all, as orchestrators need them.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
DOCS_ASSETS = "/docs-assets"  # the scripts and styles of /docs and /redoc: open as they are


def error_body(kind: str, detail, path: str = "") -> bytes:
    """The documented error shape, ``{"error": ..., "detail": ...}``; under /v2 the Open
    Inference Protocol's, ``{"error": detail}``."""
    oip = path == "/v2" or path.startswith("/v2/")
    body = {"error": detail} if oip else {"error": kind, "detail": detail}
    # Written as the app's own error responses are (Starlette's JSONResponse): compact.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class RequestLimits:
    def __init__(self, app: ASGIApp, *, keys: KeyRing, max_body_bytes: int, max_header_bytes: int):
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            await _refuse(
                scope["path"],
                send,
                431,
                "request headers too large",
                f"headers of {size} bytes are over the limit of {self.max_header_bytes}",
            )
            return
        if not self.keys.empty and not _open(scope["path"]) and not _dashboard(scope):
            key = _header(headers, HEADER.lower().encode())
            if self.keys.role_of(key) is None:
                await _refuse(
                    scope["path"],
                    send,
                    401,
                    "unauthorized",
                    f"missing or unknown API key (send it in the {HEADER} header)",
                    [(b"www-authenticate", b"APIKey")],
                )
                return
        declared = _header(headers, b"content-length")
        limit = self.max_body_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(
                scope["path"],
                send,
                413,
                "payload too large",
                f"body of {declared[:20]} bytes is over the limit of {limit}"
                if declared.isdigit()
                else "Content-Length is not a number",
            )
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised into the route that reads the body; the app's handler answers 413.
                    raise HTTPException(413, detail=f"body is over the limit of {limit} bytes")
            return message

        await self.app(scope, bounded_receive, send)


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(f"{DOCS_ASSETS}/")


def _dashboard(scope: Scope) -> bool:
    """The dashboard (/ui) checks keys itself: it also takes its sign-in cookie, and sends a
    browser without a key to its login form rather than answering JSON."""
    path = scope["path"]
    return path == "/ui" or path.startswith("/ui/")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(
    path: str, send: Send, status: int, kind: str, detail: str, extra: list | None = None
) -> None:
    body = error_body(kind, detail, path)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
