"""POST /v1/recordings: one raw IMS recording in, each bearing's wear, life and alarm out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from wearcast.api.deps import MetricsDep, ModelDep, ReaderDep, ScorerDep, SettingsDep
from wearcast.api.schemas import ERROR_RESPONSES, PredictionResponse
from wearcast.api.service import responses
from wearcast.ingest import RecordingError, parse_recording, validate_signal
from wearcast.rig import parse_timestamp

router = APIRouter(prefix="/v1", tags=["predictions"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {
                "schema": {"type": "string"},
                "example": "0.012\t-0.031\t0.004\t0.020\n...",
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=f"body of {declared} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, detail=f"body is over the limit of {limit} bytes")
    return bytes(body)


def _timestamp(value: str | None, filename: str | None) -> datetime:
    for candidate in (value, filename):
        if not candidate:
            continue
        name = candidate.rsplit("/", 1)[-1]
        try:
            return parse_timestamp(name)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(candidate).replace(tzinfo=None)
        except ValueError:
            raise HTTPException(
                422, detail=f"timestamp {candidate!r} is neither ISO 8601 nor YYYY.MM.DD.hh.mm.ss"
            ) from None
    raise HTTPException(
        422, detail="no timestamp: give ?timestamp=, or ?filename= / an uploaded file named by it"
    )


@router.post(
    "/recordings",
    summary="score one raw recording",
    description="The IMS text file as the body (text/plain) or as a multipart upload (field "
    "`file`). It is validated as ingestion validates files, its features are computed by the "
    "training code, and every bearing's prediction is logged.",
    response_model=PredictionResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_BODY,
)
async def post_recording(
    request: Request,
    settings: SettingsDep,
    model: ModelDep,
    scorer: ScorerDep,
    metrics: MetricsDep,
    _role: ReaderDep,
    machine: Annotated[str, Query(min_length=1, max_length=200, description="machine or run id")],
    timestamp: Annotated[str | None, Query(description="ISO 8601 or YYYY.MM.DD.hh.mm.ss")] = None,
    filename: Annotated[
        str | None, Query(description="IMS file name, read as the timestamp")
    ] = None,
) -> PredictionResponse:
    limit = settings.max_upload_bytes
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(
                413, detail=f"body of {declared} bytes is over the limit of {limit}"
            )
        form = await request.form(max_files=1, max_fields=5, max_part_size=limit)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, detail="multipart body without a `file` part")
        content = await upload.read(limit + 1)
        if len(content) > limit:
            raise HTTPException(413, detail=f"file is over the limit of {limit} bytes")
        filename = filename or upload.filename
    else:
        content = await _read_limited(request, limit)
    when = _timestamp(timestamp, filename)

    def work() -> PredictionResponse:
        data = parse_recording(content)
        validate_signal(data, settings, expected_channels=None)
        if data.shape[1] % settings.bearings_per_machine:
            raise RecordingError(
                f"{data.shape[1]} channels cannot be split over {settings.bearings_per_machine} "
                "bearings (expected one or two channels per bearing)"
            )
        inputs = scorer.recording_inputs(data, machine, when)
        request_id, answers = scorer.score(inputs, model)
        metrics.count(answers)
        return responses(request_id, inputs, answers, model)[0]

    return await run_in_threadpool(work)
