"""POST /v1/predict: feature rows computed elsewhere, same answer as for a recording."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, HTTPException, Request

from wearcast.api.deps import MetricsDep, ModelDep, ReaderDep, ScorerDep, SettingsDep
from wearcast.api.fast_json import FastJsonRoute
from wearcast.api.schemas import ERROR_RESPONSES, FeatureRowsRequest, PredictionResponse
from wearcast.api.service import BearingInput, responses

# Batches of feature rows are the large JSON bodies: parsed by pydantic's parser.
router = APIRouter(prefix="/v1", tags=["predictions"], route_class=FastJsonRoute)


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
    settings: SettingsDep,
    _role: ReaderDep,
) -> list[PredictionResponse]:
    if len(body.rows) > settings.max_request_rows:
        raise HTTPException(
            413, detail=f"{len(body.rows)} rows, over the limit of {settings.max_request_rows}"
        )
    inputs = [
        BearingInput(r.machine, r.bearing, r.timestamp, r.features, r.baseline) for r in body.rows
    ]

    def work() -> list[PredictionResponse]:
        request_id, answers = scorer.score(inputs, model)  # all rows in one pass over the log
        metrics.count(answers)
        return responses(request_id, inputs, answers, model)

    return await anyio.to_thread.run_sync(work, limiter=request.app.state.scoring_slots)
