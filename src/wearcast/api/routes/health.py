"""Probes and metrics: open to all, so orchestrators and Prometheus need no key.

The probes are ``async``: they answer on the event loop, never waiting for a worker thread
that slow uploads may hold."""

import time
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from wearcast.api.deps import MetricsDep, StoreDep

router = APIRouter(tags=["health"])


_FAILURES = (
    (("locked", "busy"), "it is locked by another writer"),
    (("readonly", "read-only"), "it is read-only"),
    (("disk is full", "no space"), "its disk is full"),
)


@dataclass
class LogTrouble:
    """The prediction log's last failure (locked, read-only, unreachable): requests that
    needed it got a 503 saying to retry after ``hold_s``, and /readyz reports it that long, so
    a load balancer sends work elsewhere meanwhile."""

    hold_s: float = 30.0
    at: float = float("-inf")
    reason: str = ""

    def report(self, exc: Exception) -> None:
        """Note a failure, in words safe to show anyone (the driver's message may name hosts
        and paths: it goes to the server log only)."""
        self.at = time.monotonic()
        message = str(getattr(exc, "orig", None) or exc).lower()
        self.reason = next(
            (said for words, said in _FAILURES if any(w in message for w in words)),
            "the database failed or cannot be reached",
        )

    def active(self) -> str | None:
        if time.monotonic() - self.at > self.hold_s:
            return None
        return f"the prediction log failed {time.monotonic() - self.at:.0f} s ago: {self.reason}"


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="a model is loaded and the prediction log works",
    responses={503: {"description": "no model loaded yet, or the prediction log is failing"}},
)
async def readyz(store: StoreDep, request: Request, response: Response) -> dict:
    if store.current is None:
        response.status_code = 503
        return {"status": "not ready", "detail": store.problem}
    if trouble := request.app.state.log_trouble.active():
        response.status_code = 503
        return {"status": "not ready", "detail": trouble}
    return {"status": "ready", "model": store.current.name, "version": store.current.version}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")
