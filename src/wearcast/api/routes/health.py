"""Probes and metrics: open to all, so orchestrators and Prometheus need no key.

The probes are ``async``: they answer on the event loop, never waiting for a worker thread
that slow uploads may hold."""

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from wearcast.api.deps import MetricsDep, StoreDep
from wearcast.storage import write_atomic

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
    a load balancer sends work elsewhere meanwhile. Under several worker processes it is noted
    in ``shared`` too, a file in the folder ``wearcast serve`` made for them
    (``PROMETHEUS_MULTIPROC_DIR``, their metrics' too), so every worker reports it, not only
    the one that met it."""

    shared: Path | None = None
    hold_s: float = 30.0
    at: float = float("-inf")  # time.time(): comparable across processes
    reason: str = ""

    def report(self, exc: Exception) -> None:
        """Note a failure, in words safe to show anyone (the driver's message may name hosts
        and paths: it goes to the server log only)."""
        message = str(getattr(exc, "orig", None) or exc).lower()
        self.at, self.reason = (
            time.time(),
            next(
                (said for words, said in _FAILURES if any(w in message for w in words)),
                "the database failed or cannot be reached",
            ),
        )
        if self.shared is not None:
            with contextlib.suppress(OSError):  # this worker knows it still
                write_atomic(self.shared, json.dumps({"at": self.at, "reason": self.reason}))

    def active(self) -> str | None:
        at, reason = self.at, self.reason
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            noted = json.loads(self.shared.read_text())
            if float(noted["at"]) > at:
                at, reason = float(noted["at"]), str(noted["reason"])
        since = time.time() - at
        if since > self.hold_s:
            return None
        return f"the prediction log failed {since:.0f} s ago: {reason}"


def log_trouble() -> LogTrouble:
    """This server's: shared by its worker processes where it has several."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return LogTrouble(Path(folder) / "prediction-log-trouble.json" if folder else None)


@router.get("/healthz", summary="the process is alive")
@router.head("/healthz", include_in_schema=False)  # some load balancers probe with HEAD
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
