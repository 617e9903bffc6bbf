"""GET /v1/bearings/{id}: a bearing's prediction history, trend, remaining life, alarm."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException

from wearcast.alarms import bearing_status
from wearcast.api.deps import LogDep, ReaderDep, SettingsDep
from wearcast.api.schemas import ERROR_RESPONSES, BearingHistory, HistoryPoint

router = APIRouter(prefix="/v1", tags=["bearings"])


@router.get(
    "/bearings/{bearing_id}",
    summary="a bearing's history",
    response_model=BearingHistory,
    responses={**ERROR_RESPONSES, 404: {"description": "no prediction for this bearing"}},
)
def bearing_history(
    bearing_id: str, log: LogDep, settings: SettingsDep, _role: ReaderDep
) -> BearingHistory:
    machine, sep, number = bearing_id.rpartition(":")
    if not sep or not machine or not number.isdigit():
        raise HTTPException(
            422, detail=f"bearing id {bearing_id!r}: expected MACHINE:BEARING, e.g. press-7:3"
        )
    history = log.history(machine, int(number))
    if not history:
        raise HTTPException(404, detail=f"no prediction logged for bearing {bearing_id!r}")
    hours = np.array(
        [(p.recorded_at - history[0].recorded_at).total_seconds() / 3600 for p in history]
    )
    status = bearing_status(
        hours,
        np.array([p.wear for p in history]),
        threshold=settings.alarm_threshold,
        k=settings.alarm_k,
        n=settings.alarm_n,
        recent=settings.rul_trend_recordings,
    )
    return BearingHistory(
        bearing_id=bearing_id,
        predictions=[
            HistoryPoint(
                timestamp=p.recorded_at,
                wear=p.wear,
                alarm=p.alarm,
                rul_h=p.rul_h,
                model_version=p.model_version,
            )
            for p in history
        ],
        wear_slope_per_h=status.wear_slope_per_h,
        rul_h=status.rul_h,
        rul_method=status.rul_method,
        alarm=status.alarm,
    )
