"""Request and response bodies of the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from wearcast.features import can_be_negative

__all__ = [
    "ERROR_RESPONSES",
    "BearingPrediction",
    "PredictionResponse",
    "FeatureRow",
    "FeatureRowsRequest",
    "HistoryPoint",
    "AlarmEpisode",
    "BearingHistory",
    "ModelInfo",
    "ModelsResponse",
    "ReloadResponse",
    "ErrorResponse",
    "MACHINE_PATTERN",
    "MACHINE_RULE",
    "parse_bearing_id",
    "recording_time",
]

# Machine ids: what can be written can be read back in a URL path (no '/', ':' or controls).
MACHINE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MACHINE_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_BEARING = 64
_BEARING_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}):([0-9]{1,2})")
# Recording times outside these bounds are typing errors, not recordings.
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(2200, 1, 1)


def recording_time(value: datetime) -> datetime:
    """A recording time as stored: naive UTC (an offset is converted, not dropped)."""
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time in datetime's range
            raise ValueError(f"timestamp {value.isoformat()} has no UTC time") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(
            f"timestamp {value.isoformat()} is outside {EARLIEST.year}-{LATEST.year - 1}"
        )
    return value


def parse_bearing_id(bearing_id: str) -> tuple[str, int]:
    """MACHINE:BEARING -> (machine, bearing); ValueError says what is wrong."""
    match = _BEARING_ID.fullmatch(bearing_id)
    if match is None or not 1 <= int(match[2]) <= MAX_BEARING:
        raise ValueError(
            f"bearing id {bearing_id[:80]!r}: expected MACHINE:BEARING, e.g. press-7:3, with "
            f"MACHINE {MACHINE_RULE} and BEARING 1-{MAX_BEARING}"
        )
    return match[1], int(match[2])


MachineId = Annotated[
    str, Field(pattern=MACHINE_PATTERN, description=f"machine id: {MACHINE_RULE}")
]
RecordingTime = Annotated[
    datetime,
    AfterValidator(recording_time),
    Field(description="ISO 8601; an offset is converted to UTC, a naive time is taken as UTC"),
]


class ErrorResponse(BaseModel):
    error: str = Field(description="what kind of problem")
    detail: str | list = Field(description="what was wrong, and where")


class BearingPrediction(BaseModel):
    bearing: int
    bearing_id: str = Field(description="MACHINE:BEARING, for /v1/bearings/{id}")
    wear: float = Field(ge=0, le=1, description="0 = new, 1 = failed")
    alarm: bool = Field(description="the bearing is in the alarm state at this recording")
    alarm_state: str = Field(
        description="ok, watch (above the threshold, not yet sustained) or alarm"
    )
    health: float | None = Field(
        None, description="health indicator: distance from the bearing's own healthy state"
    )
    health_threshold: float | None = Field(
        None, description="the health indicator's alarm threshold (calibrated false-alarm rate)"
    )
    rul_h: float | None = Field(description="remaining useful life, hours")
    rul_low_h: float | None = Field(None, description="lower end of the remaining-life interval")
    rul_high_h: float | None = Field(None, description="upper end of the remaining-life interval")
    rul_method: str
    baseline_recordings: int = Field(description="recordings the bearing's baseline is made of")
    model_version: int = Field(
        description="the model version that made this answer (a retry is answered as first logged)"
    )


class PredictionResponse(BaseModel):
    request_id: str
    machine: str
    timestamp: datetime
    model_name: str
    model_version: int = Field(
        description="the version that made these answers; the served one where they differ"
    )
    bearings: list[BearingPrediction]
    warnings: list[str] = Field(
        default_factory=list,
        description="what the answers stand beside, e.g. a clipped channel (its levels are at "
        "least those reported)",
    )


# Strict: a JSON number (integers too), not `true` or "1.5" read as one (a hostile-client trial).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


def _unicode(name: str) -> str:
    """A name that can be stored: JSON's \\ud800 escapes decode to lone surrogates, which no
    encoder writes back."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate escape)") from None
    return name


FeatureName = Annotated[str, AfterValidator(_unicode)]


def _no_negative_magnitude(features: dict[str, float]) -> dict[str, float]:
    """A negative RMS, band or envelope level comes from a broken feature system, and was
    answered as a healthy bearing."""
    for name, value in features.items():
        if value < 0 and not can_be_negative(name):
            raise ValueError(f"{name} is {value:g}: an amplitude cannot be negative")
    return features


Features = Annotated[dict[FeatureName, FiniteFloat], AfterValidator(_no_negative_magnitude)]


class FeatureRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine: MachineId
    bearing: int = Field(ge=1, le=MAX_BEARING, strict=True)
    timestamp: RecordingTime
    features: Features = Field(description="every feature the model uses, by name")
    baseline: Features | None = Field(
        None, description="the bearing's healthy baseline; default: from its history here"
    )


class FeatureRowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(
        min_length=1, description="at most the server's max_request_rows (default 1000)"
    )


class HistoryPoint(BaseModel):
    timestamp: datetime
    wear: float
    alarm: bool
    alarm_state: str | None = None
    health: float | None = None
    rul_h: float | None
    rul_low_h: float | None = None
    rul_high_h: float | None = None
    model_version: int


class AlarmEpisode(BaseModel):
    level: str = Field(description="the highest state reached: watch or alarm")
    start: datetime = Field(description="first recording above the threshold")
    raised: datetime | None = Field(description="when the alarm was raised (None: watch only)")
    end: datetime | None = Field(description="first recording back in ok (None: still open)")
    peak: datetime
    peak_health: float


class BearingHistory(BaseModel):
    bearing_id: str
    predictions: list[HistoryPoint] = Field(description="one page, in time order")
    next_before: datetime | None = Field(
        description="pass as `before` for the previous page; null on the first prediction"
    )
    wear_slope_per_h: float
    rul_h: float | None
    rul_low_h: float | None = None
    rul_high_h: float | None = None
    rul_method: str
    alarm: bool
    alarm_state: str | None = None
    health_threshold: float | None = Field(
        None, description="the served model's health alarm threshold"
    )
    episodes: list[AlarmEpisode] = Field(
        default_factory=list,
        description="excursions from ok that overlap this page (logged states), each whole: "
        "its start, raise, end and peak also where it reaches beyond the page",
    )


class ModelInfo(BaseModel):
    name: str
    version: int
    aliases: list[str] = []
    metrics: dict[str, float] = Field(
        {},
        description="held-out figures: `health_*` of the alarms this API raises, `rms_rule_*` "
        "of the RMS rule beside them, `rul_phm2012_score`, `rul_abs_error_h` and "
        "`rul_interval_coverage` of the remaining life it answers; `false_alarms_per_1000h`, "
        "`missed_failures` and `median_lead_time_h` are the wear model's own rule's (its wear "
        "above the alarm threshold, k of n), which the promotion gate compares, and "
        "`rul_mae_h` its wear trend's",
    )
    loaded_at: datetime | None = None
    gate_decision: str | None = Field(
        None, description="promoted or challenger (None: not through the promotion gate yet)"
    )
    gate_reason: str | None = Field(None, description="why the gate decided so")
    features: list[str] | None = Field(
        None,
        description="the features each /v1/predict row must carry, as `wearcast featurize` "
        "names them (the loaded model only)",
    )


class ModelsResponse(BaseModel):
    loaded: ModelInfo | None
    versions: list[ModelInfo]


class ReloadResponse(BaseModel):
    changed: bool
    version: int | None
    detail: str


ERROR_RESPONSES = {  # the 4xx answers every route may give
    400: {"model": ErrorResponse, "description": "malformed request"},
    401: {"model": ErrorResponse, "description": "missing or unknown API key"},
    403: {"model": ErrorResponse, "description": "the key's role may not do this"},
    413: {"model": ErrorResponse, "description": "body over the size limit"},
    422: {"model": ErrorResponse, "description": "not a valid recording"},
    503: {"model": ErrorResponse, "description": "no model loaded"},
}
