"""uvicorn's httptools protocol with a bound on a request's head (request line and headers).

httptools hands uvicorn a request's head only once it is whole, and builds a long header
value by concatenating what each read adds: a 160 MB header, sent without a key, cost 28 s
of CPU before the app's own 431 (a hostile-client trial), in time quadratic in its size. Here
a head still incomplete past ``max_header_bytes`` plus room for the request line is refused
431 as it arrives. The bound is the app's setting, which its lifespan shares with the server
(ASGI lifespan state) so that one setting bounds both.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HEAD_STATE_KEY", "BoundedHeadProtocol"]

HEAD_STATE_KEY = "max_header_bytes"
_REQUEST_LINE_BYTES = 16_384  # method, path and query; the headers are bounded apart


class BoundedHeadProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # of the request whose head is being read
        self._reading_head = True
        self._ended_message = False

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes, self._ended_message = True, 0, True

    def data_received(self, data: bytes) -> None:
        self._ended_message = False
        super().data_received(data)
        # A read that completed the head is not counted, nor one that ended a message (the
        # rest of it may begin the next head): bounded all the same, by the following reads.
        if not self._reading_head or self._ended_message or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        limit = self.app_state.get(HEAD_STATE_KEY)
        if limit is not None and self._head_bytes > limit + _REQUEST_LINE_BYTES:
            self._refuse(limit)

    def _refuse(self, limit: int) -> None:
        body = json.dumps(
            {
                "error": "request headers too large",
                "detail": f"a request head over {limit + _REQUEST_LINE_BYTES} bytes (headers "
                f"are limited to {limit}); refused before it was read whole",
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
