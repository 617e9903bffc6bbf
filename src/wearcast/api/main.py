"""The app factory: ``uvicorn --factory wearcast.api.main:create_app`` or ``wearcast serve``.

Nothing happens at import. The lifespan opens the prediction log, loads the model and starts
the background tasks (registry poller, drift checks, alarm notifications); errors become JSON
with a 4xx status that says what was wrong, and an unexpected error a 500 without a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from wearcast import __version__
from wearcast.allocator import reuse_large_blocks
from wearcast.api.drift import DriftWatch
from wearcast.api.limits import DOCS_ASSETS, RequestLimits
from wearcast.api.metrics import Metrics, MetricsMiddleware
from wearcast.api.model_store import ModelStore, UnusableInput
from wearcast.api.notify import Notifier
from wearcast.api.oip import InferenceError
from wearcast.api.protocol import lifespan_state
from wearcast.api.routes import (
    admin,
    bearings,
    health,
    models,
    monitoring,
    predict,
    recordings,
    ui,
    v2,
)
from wearcast.api.routes.health import LogTrouble, log_trouble
from wearcast.api.security import KeyRing
from wearcast.api.service import ConflictingRecording, Scorer, UnknownFeatures
from wearcast.config import Settings, load_settings
from wearcast.ingest import RecordingError
from wearcast.prediction_log import PredictionLog

__all__ = ["check_security", "create_app"]

log = logging.getLogger("wearcast.api")


def check_security(settings: Settings) -> KeyRing:
    """The API's keys: ValueError for a malformed entry, RuntimeError for none outside
    development."""
    keys = KeyRing(settings.api_keys)
    if keys.empty and settings.env != "development":
        raise RuntimeError(
            "refusing to start: no API keys configured outside development "
            "(set WEARCAST_API_KEYS; make keys with `wearcast api-key ROLE`)"
        )
    return keys


async def _first_load(store: ModelStore) -> None:
    try:
        await asyncio.to_thread(store.sync)
    except Exception:  # noqa: BLE001 - serve probes, keep polling, say why
        log.exception("could not load a model at start-up")
    if store.current is None:
        log.warning("no model served yet (%s); /readyz answers 503 until one is", store.problem)


_COMPACT_EVERY_S = 3600.0


async def _compact_log(
    prediction_log: PredictionLog, keep_days: float, trouble: LogTrouble
) -> None:
    """Hourly, the stored answers and features of predictions older than ``keep_days`` go
    (one worker an hour: the others find the lease taken). A log that cannot be written is
    reported as requests report it (/readyz), without a traceback."""
    while True:
        try:
            if await asyncio.to_thread(prediction_log.claim_lease, "compact", _COMPACT_EVERY_S):
                gone = await asyncio.to_thread(prediction_log.compact, timedelta(days=keep_days))
                if gone:
                    log.info("prediction log: details of %d predictions dropped", gone)
        except OperationalError as exc:
            trouble.report(exc)
            log.error("prediction log: compacting failed: %s", trouble.reason)
        except Exception:  # noqa: BLE001 - the next hour tries again
            log.exception("prediction log: compacting failed")
        await asyncio.sleep(_COMPACT_EVERY_S)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    keys = check_security(settings)  # fail before serving anything
    if keys.empty:
        log.warning("no API keys configured: the API is open to anyone (development only)")
    reuse_large_blocks()  # every request's recording arrays

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        settings.home.mkdir(parents=True, exist_ok=True)
        # mlflow's client retries a registry that does not answer for minutes by default (7
        # retries, 120 s timeouts): the API polls it and must say "unreachable" sooner. Read by
        # mlflow on every request; an operator's own values stand.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        app.state.log = PredictionLog(settings.resolved_prediction_db_url)
        app.state.scorer = Scorer(settings, app.state.log)
        store = app.state.store
        # A registry that does not answer (MLflow down, its HTTP client retrying for minutes)
        # must not keep the probes from answering: past the wait, the load goes on behind.
        first_load = asyncio.create_task(_first_load(store))
        await asyncio.wait({first_load}, timeout=settings.startup_load_wait_s)
        if not first_load.done():
            log.warning(
                "the registry has not answered in %s s: serving probes, loading behind "
                "(/readyz answers 503 until a model is loaded)",
                settings.startup_load_wait_s,
            )
        poller = asyncio.create_task(store.poll()) if settings.reload_interval_s > 0 else None
        app.state.drift = DriftWatch(settings, app.state.log, store, app.state.metrics)
        background = [first_load, poller] if poller else [first_load]
        if settings.drift_interval_s > 0:
            background.append(asyncio.create_task(app.state.drift.run()))
        if settings.prediction_detail_keep_days:
            keep = settings.prediction_detail_keep_days
            compacting = _compact_log(app.state.log, keep, app.state.log_trouble)
            background.append(asyncio.create_task(compacting))
        if settings.webhook_url:
            notifier = Notifier(settings, app.state.log, app.state.metrics)
            background.append(asyncio.create_task(notifier.run()))
        try:
            yield lifespan_state(settings)  # the server's protocol bounds a request's head
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.log.close()

    # /docs and /redoc with their scripts served from here, not from a CDN: they work offline.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="wearcast",
        version=__version__,
        summary="Bearing wear, remaining life and alarms from vibration recordings.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.metrics = Metrics()
    app.state.log_trouble = log_trouble()
    app.state.store = ModelStore(settings, app.state.metrics)
    # Parsing and scoring wait here for a token, without holding a thread, so that a burst of
    # heavy requests leaves the thread pool and the event loop to everyone else (probes first).
    app.state.scoring_slots = anyio.CapacityLimiter(settings.max_concurrent_scoring)
    app.add_middleware(
        RequestLimits,
        keys=keys,
        max_body_bytes=settings.max_upload_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for module in (health, recordings, predict, bearings, models, admin, v2, monitoring, ui):
        app.include_router(module.router)

    def error(request: Request, status: int, kind: str, detail) -> JSONResponse:
        detail = jsonable_encoder(detail)
        if request.url.path == "/v2" or request.url.path.startswith("/v2/"):
            # The Open Inference Protocol's error shape: clients show this one string.
            message = detail if isinstance(detail, str) else f"{kind}: {json.dumps(detail)}"
            return JSONResponse({"error": message}, status_code=status)
        return JSONResponse({"error": kind, "detail": detail}, status_code=status)

    @app.exception_handler(RecordingError)
    async def bad_recording(request: Request, exc: RecordingError) -> JSONResponse:
        return error(request, 422, "invalid recording", str(exc))

    @app.exception_handler(UnknownFeatures)
    async def bad_features(request: Request, exc: UnknownFeatures) -> JSONResponse:
        return error(request, 422, "invalid feature rows", str(exc))

    @app.exception_handler(InferenceError)
    async def bad_inference(request: Request, exc: InferenceError) -> JSONResponse:
        return error(request, exc.status, "invalid inference request", str(exc))

    @app.exception_handler(ConflictingRecording)
    async def conflict(request: Request, exc: ConflictingRecording) -> JSONResponse:
        return error(request, 409, "conflict", str(exc))

    @app.exception_handler(UnusableInput)
    async def unusable(request: Request, exc: UnusableInput) -> JSONResponse:
        return error(request, 422, "invalid input", str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Say where and what, without echoing the input (it may be huge, or not valid JSON),
        # and not every fault of a huge body: the first ones show what is wrong.
        faults = exc.errors()
        problems = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in faults[:20]]
        if len(faults) > len(problems):
            problems.append({"msg": f"and {len(faults) - len(problems)} more faults"})
        return error(request, 422, "invalid request", problems)

    @app.exception_handler(HTTPException)  # Starlette's: also unknown routes and wrong methods
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = error(request, exc.status_code, _KINDS.get(exc.status_code, "error"), exc.detail)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(OperationalError)
    async def log_failing(request: Request, exc: OperationalError) -> JSONResponse:
        # Locked past its busy timeout, read-only, full or unreachable: the server's state,
        # not the client's request, and one that passes.
        trouble = app.state.log_trouble
        trouble.report(exc)
        log.error("prediction log failed on %s %s: %s", request.method, request.url.path, exc)
        response = error(
            request,
            503,
            "unavailable",
            f"the prediction log could not be used ({trouble.reason}); the request was not "
            f"answered: retry after {trouble.hold_s:g} s",
        )
        response.headers["Retry-After"] = f"{trouble.hold_s:g}"
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(request, 500, "internal error", "the error was logged on the server")

    return app


_KINDS = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "payload too large",
    415: "unsupported media type",
    431: "request headers too large",
    422: "invalid request",
    503: "unavailable",
}
