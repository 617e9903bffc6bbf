"""GET /v1/monitoring/drift (JSON) and /v1/monitoring/drift.html: the served model's input drift
per machine and feature group, computed on request (:mod:`wearcast.monitoring`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from wearcast.api.deps import ModelDep, ReaderDep
from wearcast.api.drift import NoReference
from wearcast.api.schemas import ERROR_RESPONSES
from wearcast.monitoring import DriftReport, render_html

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])


async def _report(request: Request, model) -> DriftReport:
    try:
        return await run_in_threadpool(request.app.state.drift.check, model)
    except NoReference as exc:
        raise HTTPException(404, detail=str(exc)) from None


@router.get(
    "/drift",
    summary="input drift per machine and feature group",
    description="Each machine's latest `drift_window` recordings (after each bearing's "
    "baseline), relative to the bearing's baseline as the model sees them, against the healthy "
    "training rows kept with the served version: two-sample KS per feature and bearing, "
    "Benjamini-Hochberg over the machine's tests.",
    response_model=DriftReport,
    responses=ERROR_RESPONSES,
)
async def drift(request: Request, model: ModelDep, _role: ReaderDep) -> DriftReport:
    return await _report(request, model)


@router.get(
    "/drift.html",
    summary="input drift as an HTML report",
    response_class=HTMLResponse,
    responses=ERROR_RESPONSES,
)
async def drift_html(request: Request, model: ModelDep, _role: ReaderDep) -> HTMLResponse:
    return HTMLResponse(render_html(await _report(request, model)))
