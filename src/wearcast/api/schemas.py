"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ERROR_RESPONSES",
    "BearingPrediction",
    "PredictionResponse",
    "FeatureRow",
    "FeatureRowsRequest",
    "HistoryPoint",
    "BearingHistory",
    "ModelInfo",
    "ModelsResponse",
    "ReloadResponse",
    "ErrorResponse",
]


class ErrorResponse(BaseModel):
    error: str = Field(description="what kind of problem")
    detail: str | list = Field(description="what was wrong, and where")


class BearingPrediction(BaseModel):
    bearing: int
    bearing_id: str = Field(description="MACHINE:BEARING, for /v1/bearings/{id}")
    wear: float = Field(ge=0, le=1, description="0 = new, 1 = failed")
    alarm: bool = Field(description="the persistent-alarm rule holds at this recording")
    alarm_state: str = Field(description="ok or alarm")
    rul_h: float | None = Field(description="remaining useful life, hours, by trend")
    rul_method: str
    baseline_recordings: int = Field(description="recordings the bearing's baseline is made of")


class PredictionResponse(BaseModel):
    request_id: str
    machine: str
    timestamp: datetime
    model_name: str
    model_version: int
    bearings: list[BearingPrediction]


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class FeatureRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine: str = Field(min_length=1, max_length=200)
    bearing: int = Field(ge=1, le=64)
    timestamp: datetime
    features: dict[str, FiniteFloat] = Field(description="every feature the model uses, by name")
    baseline: dict[str, FiniteFloat] | None = Field(
        None, description="the bearing's healthy baseline; default: from its history here"
    )


class FeatureRowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[FeatureRow] = Field(min_length=1, max_length=1000)


class HistoryPoint(BaseModel):
    timestamp: datetime
    wear: float
    alarm: bool
    rul_h: float | None
    model_version: int


class BearingHistory(BaseModel):
    bearing_id: str
    predictions: list[HistoryPoint]
    wear_slope_per_h: float
    rul_h: float | None
    rul_method: str
    alarm: bool


class ModelInfo(BaseModel):
    name: str
    version: int
    aliases: list[str] = []
    metrics: dict[str, float] = {}
    loaded_at: datetime | None = None


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
