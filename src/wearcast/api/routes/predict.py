"""POST /v1/predict: feature rows computed elsewhere, same answer as for a recording."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request

from wearcast.api.deps import MetricsDep, ModelDep, ReaderDep, ScorerDep, SettingsDep
from wearcast.api.fast_json import FastJsonRoute
from wearcast.api.schemas import ERROR_RESPONSES, FeatureRowsRequest, PredictionResponse
from wearcast.api.service import BearingInput, responses

# Batches of feature rows are the large JSON bodies: parsed by pydantic's parser.
router = APIRouter(prefix="/v1", tags=["predictions"], route_class=FastJsonRoute)


async def _rows_within_limit(request: Request, settings: SettingsDep) -> None:
    """413 for a batch over the row limit before its rows are validated: validating, and
    listing the faults of, 400,000 empty rows held the server for 28 s (a hostile client)."""
    try:
        body = await request.json()  # parsed once: the route's body is this same parse
    except ValueError:  # not JSON: the body's validation says where
        return
    rows = body.get("rows") if isinstance(body, dict) else None
    if isinstance(rows, list) and len(rows) > settings.max_request_rows:
        raise HTTPException(
            413, detail=f"{len(rows)} rows, over the limit of {settings.max_request_rows}"
        )


@router.post(
    "/predict",
    summary="score feature rows",
    description="For systems that compute features themselves: each row names its machine, "
    "bearing and time and carries every feature the model uses (see GET /v1/models). Rows of "
    "one request that share a machine and time form one answer.",
    response_model=list[PredictionResponse],
    responses=ERROR_RESPONSES,
)
async def predict_rows(
    request: Request,
    body: FeatureRowsRequest,
    model: ModelDep,
    scorer: ScorerDep,
    metrics: MetricsDep,
    _role: ReaderDep,
    _rows: Annotated[None, Depends(_rows_within_limit)],
) -> list[PredictionResponse]:
    inputs = [
        BearingInput(r.machine, r.bearing, r.timestamp, r.features, r.baseline) for r in body.rows
    ]

    def work() -> list[PredictionResponse]:
        request_id, answers = scorer.score(inputs, model)  # all rows in one pass over the log
        metrics.count(answers)
        return responses(request_id, inputs, answers, model)

    return await anyio.to_thread.run_sync(work, limiter=request.app.state.scoring_slots)
