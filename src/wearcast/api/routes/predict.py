"""POST /v1/predict: feature rows computed elsewhere, same answer as for a recording."""

from __future__ import annotations

from fastapi import APIRouter

from wearcast.api.deps import MetricsDep, ModelDep, ReaderDep, ScorerDep
from wearcast.api.routes.recordings import _ERRORS
from wearcast.api.schemas import FeatureRowsRequest, PredictionResponse
from wearcast.api.service import BearingInput

router = APIRouter(prefix="/v1", tags=["predictions"])


@router.post(
    "/predict",
    summary="score feature rows",
    description="For systems that compute features themselves: each row names its machine, "
    "bearing and time and carries every feature the model uses (see GET /v1/models). Rows of "
    "one request that share a machine and time form one answer each.",
    response_model=list[PredictionResponse],
    responses=_ERRORS,
)
def predict_rows(
    body: FeatureRowsRequest,
    model: ModelDep,
    scorer: ScorerDep,
    metrics: MetricsDep,
    _role: ReaderDep,
) -> list[PredictionResponse]:
    groups: dict[tuple, list[BearingInput]] = {}
    for row in body.rows:
        stamp = row.timestamp.replace(tzinfo=None)
        groups.setdefault((row.machine, stamp), []).append(
            BearingInput(row.machine, row.bearing, stamp, row.features, row.baseline)
        )
    answers = []
    for (machine, stamp), inputs in groups.items():
        request_id, bearings = scorer.score(inputs, model)
        for b in bearings:
            metrics.predictions.labels(b.alarm_state).inc()
        answers.append(
            PredictionResponse(
                request_id=request_id,
                machine=machine,
                timestamp=stamp,
                model_name=model.name,
                model_version=model.version,
                bearings=bearings,
            )
        )
    return answers
