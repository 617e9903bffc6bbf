"""GET /v1/bearings/{id}: a bearing's prediction history (paged), trend, remaining life, alarm."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from wearcast.alarms import OK, bearing_status, episodes_of
from wearcast.api.deps import LogDep, ReaderDep, SettingsDep, StoreDep
from wearcast.api.model_store import ModelStore
from wearcast.api.schemas import (
    ERROR_RESPONSES,
    AlarmEpisode,
    BearingHistory,
    HistoryPoint,
    parse_bearing_id,
    recording_time,
)
from wearcast.config import Settings
from wearcast.prediction_log import PredictionLog

__all__ = ["router", "history_of"]

router = APIRouter(prefix="/v1", tags=["bearings"])

MAX_PAGE = 5000


def _time(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return recording_time(value)
    except ValueError as exc:
        raise HTTPException(422, detail=f"{name}: {exc}") from None


@router.get(
    "/bearings/{bearing_id}",
    summary="a bearing's history, latest first in pages",
    description="The bearing's state now (alarm, trend, remaining life, from its latest "
    "predictions) and one page of its history in time order: the latest `limit` predictions "
    "recorded after `since` and before `before`. To page back, pass the answer's "
    "`next_before` as `before`.",
    response_model=BearingHistory,
    responses={**ERROR_RESPONSES, 404: {"description": "no prediction for this bearing"}},
)
def bearing_history(
    bearing_id: str,
    log: LogDep,
    settings: SettingsDep,
    store: StoreDep,
    _role: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="predictions per page")] = 500,
    since: Annotated[datetime | None, Query(description="only predictions after this")] = None,
    before: Annotated[datetime | None, Query(description="only predictions before this")] = None,
) -> BearingHistory:
    try:
        machine, bearing = parse_bearing_id(bearing_id)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    since, before = _time(since, "since"), _time(before, "before")
    answer = history_of(log, settings, store, machine, bearing, limit, since, before)
    if answer is None:
        raise HTTPException(404, detail=f"no prediction logged for bearing {bearing_id!r}")
    return answer


def _answered_method(log: PredictionLog, point) -> str:
    """The remaining-life method the latest prediction was answered with, as logged."""
    logged = log.logged([(point.machine, point.bearing, point.recorded_at)])
    answer = next(iter(logged.values())).answer if logged else None
    return (answer or {}).get("rul_method") or "as answered for the latest recording"


def history_of(
    log: PredictionLog,
    settings: Settings,
    store: ModelStore,
    machine: str,
    bearing: int,
    limit: int,
    since: datetime | None = None,
    before: datetime | None = None,
) -> BearingHistory | None:
    """What GET /v1/bearings/{id} answers (None: nothing logged); the dashboard shows it too."""
    bearing_id = f"{machine}:{bearing}"
    window = max(settings.alarm_n, settings.rul_trend_recordings)
    latest = log.history(machine, bearing, limit=window)
    if not latest:
        return None
    hours = np.array(
        [(p.recorded_at - latest[0].recorded_at).total_seconds() / 3600 for p in latest]
    )
    status = bearing_status(
        hours,
        np.array([p.wear for p in latest]),
        threshold=settings.alarm_threshold,
        k=settings.alarm_k,
        n=settings.alarm_n,
        recent=settings.rul_trend_recordings,
    )
    page = log.history(machine, bearing, since=since, before=before, limit=limit + 1)
    more, page = len(page) > limit, page[-limit:]
    now = latest[-1]
    # Episodes the page touches are read whole (one that ends at its first prediction too):
    # their start, raise, end and peak never depend on where a page begins or ends.
    lead = (
        log.beside_episode(machine, bearing, page[0].recorded_at, OK, earlier=True) if page else []
    )
    tail = (
        log.beside_episode(machine, bearing, page[-1].recorded_at, OK, earlier=False)
        if page and page[-1].state not in (None, OK)
        else []
    )
    series = [*lead, *page, *tail]
    episodes = episodes_of(
        [p.state for p in series],
        np.array([np.nan if p.health is None else p.health for p in series]),
    )
    served = store.current
    return BearingHistory(
        bearing_id=bearing_id,
        predictions=[
            HistoryPoint(
                timestamp=p.recorded_at,
                wear=p.wear,
                alarm=p.alarm,
                alarm_state=p.state,
                health=p.health,
                rul_h=p.rul_h,
                rul_low_h=p.rul_low_h,
                rul_high_h=p.rul_high_h,
                model_version=p.model_version,
            )
            for p in page
        ],
        next_before=page[0].recorded_at if more else None,
        wear_slope_per_h=status.wear_slope_per_h,
        # A prediction with a health indicator says its state and remaining life itself.
        rul_h=status.rul_h if now.state is None else now.rul_h,
        rul_low_h=now.rul_low_h,
        rul_high_h=now.rul_high_h,
        rul_method=status.rul_method if now.state is None else _answered_method(log, now),
        alarm=status.alarm if now.state is None else now.alarm,
        alarm_state=now.state,
        health_threshold=served.prognostics.threshold
        if served is not None and served.prognostics is not None
        else None,
        episodes=[
            AlarmEpisode(
                level=e.level,
                start=series[e.start].recorded_at,
                raised=None if e.raised is None else series[e.raised].recorded_at,
                end=None if e.end is None else series[e.end].recorded_at,
                peak=series[e.peak].recorded_at,
                peak_health=e.peak_value,
            )
            for e in episodes
        ],
    )
