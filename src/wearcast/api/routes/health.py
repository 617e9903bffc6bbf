"""Probes and metrics: open to all, so orchestrators and Prometheus need no key.

The probes are ``async``: they answer on the event loop, never waiting for a worker thread
that slow uploads may hold."""

from fastapi import APIRouter, Response

from wearcast.api.deps import MetricsDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="a model is loaded",
    responses={503: {"description": "no model loaded yet"}},
)
async def readyz(store: StoreDep, response: Response) -> dict:
    if store.current is None:
        response.status_code = 503
        return {"status": "not ready", "detail": store.problem}
    return {"status": "ready", "model": store.current.name, "version": store.current.version}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")
