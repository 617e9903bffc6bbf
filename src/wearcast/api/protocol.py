"""uvicorn's httptools protocol with bounds on a request's head (request line and headers).

httptools hands uvicorn a request's head only once it is whole, and builds a long header
value by concatenating what each read adds: a 160 MB header, sent without a key, cost 28 s
of CPU before the app's own 431 (a hostile-client trial), in time quadratic in its size; and
a head sent a line every few seconds, or a connection that sends nothing, was held open for
ever. Here a head still incomplete past ``max_header_bytes`` plus room for the request line is
refused 431 as it arrives, and one not whole ``request_head_timeout_s`` after it was due (the
connection opened, or its first byte came) 408. The bounds are the app's settings, which its
lifespan shares with the server (ASGI lifespan state: :func:`lifespan_state`).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wearcast.config import Settings

__all__ = ["BoundedHeadProtocol", "lifespan_state"]

_REQUEST_LINE_BYTES = 16_384  # method, path and query; the headers are bounded apart


def lifespan_state(settings: Settings) -> dict:
    """What the app's lifespan yields for the server's protocol to read."""
    return {
        "max_header_bytes": settings.max_header_bytes,
        "request_head_timeout_s": settings.request_head_timeout_s,
    }


class BoundedHeadProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # of the request whose head is being read
        self._reading_head = True
        self._ended_message = False
        self._head_timer = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes, self._ended_message = True, 0, True

    def data_received(self, data: bytes) -> None:
        self._ended_message = False
        super().data_received(data)
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_timer is None:  # a head begun on a kept-alive connection
            self._arm_head_timer()
        # A read that completed the head is not counted, nor one that ended a message (the
        # rest of it may begin the next head): bounded all the same, by the following reads.
        if self._ended_message:
            return
        self._head_bytes += len(data)
        limit = self.app_state.get("max_header_bytes")
        if limit is not None and self._head_bytes > limit + _REQUEST_LINE_BYTES:
            self._refuse(
                b"431 Request Header Fields Too Large",
                "request headers too large",
                f"a request head over {limit + _REQUEST_LINE_BYTES} bytes (headers are limited "
                f"to {limit}); refused before it was read whole",
            )

    def _arm_head_timer(self) -> None:
        timeout = self.app_state.get("request_head_timeout_s")
        if timeout:
            self._head_timer = self.loop.call_later(timeout, self._head_too_slow, timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self, timeout: float) -> None:
        self._head_timer = None
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._reading_head and not answering and not self.transport.is_closing():
            self._refuse(
                b"408 Request Timeout",
                "request timeout",
                f"the request's head was not whole within {timeout:g} s",
            )

    def _refuse(self, status: bytes, kind: str, detail: str) -> None:
        body = json.dumps({"error": kind, "detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
