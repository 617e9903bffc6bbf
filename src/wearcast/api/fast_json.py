"""Request bodies parsed by pydantic's JSON parser instead of the standard library's.

FastAPI parses a JSON body with ``json.loads`` before validating it, which for a batch of
feature rows was the largest single cost of the request (docs/performance.md). Same values;
a body pydantic's parser refuses goes to the standard library's, so invalid JSON gets
FastAPI's usual located error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["FastJsonRoute"]


class _FastJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError:
                self._json = json.loads(body)  # invalid: its error says where
        return self._json


class FastJsonRoute(APIRoute):
    """A route whose handler sees :class:`_FastJsonRequest` (FastAPI's documented way of
    customising the request: a route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fast_json_handler(request: Request) -> Response:
            return await handler(_FastJsonRequest(request.scope, request.receive))

        return fast_json_handler
