"""POST /v1/recordings: one raw recording (IMS or PRONOSTIA format) in, each bearing's wear,
life and alarm out."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request

from wearcast.api.deps import MetricsDep, ModelDep, ReaderDep, ScorerDep, SettingsDep
from wearcast.api.schemas import (
    ERROR_RESPONSES,
    MACHINE_PATTERN,
    MACHINE_RULE,
    PredictionResponse,
    recording_time,
)
from wearcast.api.service import responses
from wearcast.config import Settings
from wearcast.formats import FORMATS, detect_format, refuse_binary
from wearcast.ingest import ClippedSignal, RecordingError, validate_signal
from wearcast.model import ForeignRig, check_rig
from wearcast.prediction_log import LayoutConflict
from wearcast.rig import Rig, bearing_channels, parse_timestamp

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


def _timestamp(value: str | None, filename: str | None) -> datetime:
    """The recording's time: ``value`` (ISO 8601 or an IMS name), else the file's IMS name.
    Both given and naming different times is an error: which one is right is not ours to guess."""
    if value:
        when = _parse_time(value)
        named = _named_time(filename)
        if named is not None and named != when:
            raise HTTPException(
                422,
                detail=f"timestamp {value!r} and the file name {filename!r} name different "
                "times: give one, or make them agree",
            )
        return when
    if filename:
        named = detect_format([filename.rsplit("/", 1)[-1]])
        if named is not None and not named.named_by_time:
            raise HTTPException(
                422,
                detail=f"{filename!r} is named as {_a(named.name)} recording, whose name has no "
                f"date: add format={named.name} and ?timestamp=",
            )
        return _parse_time(filename)
    raise HTTPException(
        422, detail="no timestamp: give ?timestamp=, or ?filename= / an uploaded file named by it"
    )


def _named_time(filename: str | None) -> datetime | None:
    """The time an IMS file name states, if it is one."""
    try:
        return recording_time(parse_timestamp(filename.rsplit("/", 1)[-1])) if filename else None
    except ValueError:
        return None


def _parse_time(candidate: str) -> datetime:
    if len(candidate) > 64:
        raise HTTPException(422, detail=f"timestamp of {len(candidate)} characters: too long")
    try:
        when = parse_timestamp(candidate.rsplit("/", 1)[-1])
    except ValueError:
        try:
            when = datetime.fromisoformat(candidate)
        except ValueError:
            raise HTTPException(
                422,
                detail=f"timestamp {candidate!r} is neither ISO 8601 nor YYYY.MM.DD.hh.mm.ss",
            ) from None
    try:
        return recording_time(when)
    except ValueError as exc:
        raise HTTPException(422, detail=f"timestamp {candidate!r}: {exc}") from None


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _format_hint(name: str | None, given: str, content: bytes) -> str | None:
    """What to do when a recording that fails as ``given`` is named as, or reads as, another
    format's (this runs only for a refused recording)."""
    named = detect_format([name.rsplit("/", 1)[-1]]) if name else None
    if named is not None and named.name != given:
        return f"{name!r} is named as {_a(named.name)} recording: add format={named.name}"
    for other in FORMATS.values():
        if other.name != given:
            try:
                other.parse(content)
            except RecordingError:
                continue
            return f"it reads as {_a(other.name)} recording: add format={other.name}"
    return None


def check_layout(content: bytes, settings: Settings, rig: Rig) -> None:
    """Refuse, before parsing, a body whose lines could not be a recording of ``rig``: too many
    lines, a line too long, or too many values on a line. Parsing such a body costs seconds of
    CPU."""
    refuse_binary(content)  # first: a binary file's "lines" say nothing useful
    ends = np.flatnonzero(np.frombuffer(content, dtype=np.uint8) == ord("\n"))
    lengths = np.diff(np.concatenate(([-1], ends, [len(content)]))) - 1
    if len(lengths) and lengths[-1] == 0:  # the final newline ends the last line
        lengths = lengths[:-1]
    if len(lengths) > 2 * rig.samples:  # slack: a stray line is diagnosed by parsing
        raise RecordingError(f"{len(lengths)} rows, expected {rig.samples}")
    if len(lengths) and lengths.max() > settings.max_line_bytes:
        line = int(np.argmax(lengths))
        raise RecordingError(
            f"{int(lengths[line])} bytes long, over the limit of {settings.max_line_bytes}",
            line=line + 1,
        )
    first = content[: int(lengths[0]) if len(lengths) else 0]
    values = max(first.count(sep) for sep in (b"\t", b",", b";")) + 1
    if values > settings.max_values_per_line:
        raise RecordingError(
            f"{values} values, over the limit of {settings.max_values_per_line} channels",
            line=1,
        )


@router.post(
    "/recordings",
    summary="score one raw recording",
    description="The recording file as the body (text/plain) or as a multipart upload (field "
    "`file`): an IMS text file (default), or a PRONOSTIA `acc_*.csv` snapshot with "
    "`format=pronostia` (one bearing, horizontal and vertical channels; give `timestamp`, the "
    "file's clock has no date). `shaft_rpm` sets the machine's speed where it differs from the "
    "format's default (defect frequencies follow it). The file is validated as ingestion "
    "validates files, its features are computed by the training code for that rig, and every "
    "bearing's prediction is logged.",
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
    machine: Annotated[
        str, Query(pattern=MACHINE_PATTERN, description=f"machine or run id: {MACHINE_RULE}")
    ],
    timestamp: Annotated[
        str | None,
        Query(description="ISO 8601 or YYYY.MM.DD.hh.mm.ss; must agree with an IMS file name"),
    ] = None,
    filename: Annotated[
        str | None, Query(description="IMS file name, read as the timestamp")
    ] = None,
    format: Annotated[
        str, Query(pattern="^[a-z]+$", description=f"recording format: {', '.join(FORMATS)}")
    ] = "ims",
    shaft_rpm: Annotated[
        float | None,
        Query(gt=0, le=100_000, allow_inf_nan=False, description="shaft speed, rev/min"),
    ] = None,
) -> PredictionResponse:
    if format not in FORMATS:
        raise HTTPException(
            422, detail=f"unknown recording format {format!r} (known: {', '.join(FORMATS)})"
        )
    reader = FORMATS[format]
    rig = reader.defaults(settings)
    if shaft_rpm is not None:
        rig = replace(rig, shaft_rpm=shaft_rpm)
    try:
        scorer.spec_of(rig)  # before reading: a speed no feature can be computed at
    except RecordingError as exc:
        raise HTTPException(422, detail=f"shaft_rpm: {exc.reason}") from None
    # IMS machines take the configured bearing count; other formats say theirs.
    bearings = settings.bearings_per_machine if format == "ims" else reader.bearings
    # The body is already bounded by the limits middleware; the file part is bounded here.
    limit = settings.max_upload_bytes
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    name = filename
    if timestamp is None and not reader.named_by_time:
        raise HTTPException(
            422, detail=f"no timestamp: give ?timestamp= (a {format} file's name has no date)"
        )
    if not multipart:
        when = _timestamp(timestamp, filename)  # before reading: a bad query costs nothing
        content = await request.body()
    else:
        form = await request.form(max_files=1, max_fields=5, max_part_size=limit)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, detail="multipart body without a `file` part")
        content = await upload.read(limit + 1)
        if len(content) > limit:
            raise HTTPException(413, detail=f"file is over the limit of {limit} bytes")
        name = filename or upload.filename
        when = _timestamp(timestamp, name)

    def work() -> PredictionResponse:
        warnings = []
        try:
            check_layout(content, settings, rig)
            data = reader.parse(content)
            try:
                validate_signal(data, settings, expected_rows=rig.samples)
            except ClippedSignal as exc:  # scored: a saturated sensor is news, not noise
                warnings.append(exc.warning)
        except RecordingError as exc:  # named by its file: a client sending many knows which
            hint = _format_hint(name, format, content)
            reason = exc.reason if hint is None else f"{exc.reason} ({hint})"
            raise RecordingError(reason, line=exc.line, column=exc.column, file=name) from exc
        try:
            bearing_channels(data.shape[1], bearings)
        except ValueError as exc:  # the rule of run folders, said the same way
            raise RecordingError(f"{exc} (the machine's bearings)", file=name) from None
        recording = scorer.raw(data, machine, when, rig=rig, bearings=bearings)
        inputs = scorer.recording_inputs(recording)
        try:
            check_rig(inputs[0].features, model.features)
        except ForeignRig as exc:
            raise HTTPException(422, detail=f"{exc} (served: version {model.version})") from None
        try:
            request_id, answers = scorer.score(inputs, model, recording)
        except LayoutConflict as exc:
            raise HTTPException(
                409,
                detail=f"{exc}; this one is a {data.shape[1]}-channel {format} recording, whose "
                "features are not comparable with its bearings' baselines (another layout is "
                "another machine id)",
            ) from None
        metrics.count(answers)
        answer = responses(request_id, inputs, answers, model)[0]
        return answer.model_copy(update={"warnings": warnings})

    return await anyio.to_thread.run_sync(work, limiter=request.app.state.scoring_slots)
