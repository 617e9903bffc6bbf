"""The dashboard at /ui: fleet, bearing and model pages, server-rendered (Jinja2 templates and
SVG charts), behind the API's keys.

Every figure shown is what the JSON API answers, from the same functions: a bearing's state,
remaining life and history from :func:`wearcast.api.routes.bearings.history_of` (GET
/v1/bearings/{id}; the fleet from each bearing's latest prediction, which says its state and
remaining life as answered, read for every bearing in one query), the models from
:func:`wearcast.api.routes.models.models_answer` (GET /v1/models), the defect frequencies
from the scorer's feature spec.

Sign-in: a browser cannot add an ``X-API-Key`` header to a link it follows, so the key is typed
once into a login form and kept in a cookie that holds the key itself. That needs no session
store and no signing secret (nothing more to configure, rotate or share between workers and
replicas), and removing a key from the settings signs its browsers out at once. The cookie is
HttpOnly (no script can read it), SameSite=Strict (no other site can make the browser send
it), Secure over https, limited to /ui and to ``_COOKIE_MAX_AGE_S``; the JSON API under /v1
never reads it, so it cannot be used to post recordings. The request-limits middleware leaves
/ui to :func:`_reader`, which takes the header too (for scripts) and sends a browser without
a valid key to the login form instead of answering JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from mlflow.exceptions import MlflowException
from starlette.concurrency import run_in_threadpool

from wearcast import registry
from wearcast.alarms import ALARM, OK, WATCH
from wearcast.api.routes.bearings import MAX_PAGE, history_of
from wearcast.api.routes.models import models_answer
from wearcast.api.schemas import BearingHistory, parse_bearing_id
from wearcast.api.security import HEADER, KeyRing, Role
from wearcast.api.ui import charts
from wearcast.evaluate import LABELS
from wearcast.prediction_log import PredictionRecord

__all__ = ["router", "COOKIE", "PREFIX", "drift_by_group"]

PREFIX = "/ui"
COOKIE = "wearcast_key"
_COOKIE_MAX_AGE_S = 12 * 3600  # a working shift; then the key is asked again
_CSS = "wearcast.css"

_templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.PackageLoader("wearcast.api.ui", "templates"),
        autoescape=True,  # every machine id and message is escaped, wherever it came from
        undefined=jinja2.StrictUndefined,
    )
)


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _hours(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} h" if abs(value) < 10 else f"{value:,.0f} h"


def _time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M")


_templates.env.filters.update(number=_number, hours=_hours, time=_time)


class _LoginRequired(HTTPException):
    def __init__(self, path: str):
        # 303: the browser follows with a GET to the form; the app's handler keeps Location.
        super().__init__(303, detail="sign in first", headers={"Location": _login_url(path)})


def _login_url(next_path: str) -> str:
    return f"{PREFIX}/login?next={quote(next_path, safe='/:')}"


async def _reader(request: Request) -> Role:
    """The caller's role from the X-API-Key header or the sign-in cookie (async: see
    :mod:`wearcast.api.deps`)."""
    keys: KeyRing = request.app.state.keys
    if keys.empty:  # development without keys: open, like the API
        return Role.admin
    key = request.headers.get(HEADER) or request.cookies.get(COOKIE)
    role = keys.role_of(key)
    if role is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _LoginRequired(path)
    return role  # every role may read


UiReaderDep = Annotated[Role, Depends(_reader)]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    signed_in = COOKIE in request.cookies  # then a sign-out button
    return _templates.TemplateResponse(
        request, name, {"signed_in": signed_in, **context}, status_code=status
    )


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "not_found.html", 404, title="not found", message=message)


# Sign-in ----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a dashboard path: never an address elsewhere (an open redirect)."""
    if value and value.isprintable() and (value == PREFIX or value.startswith(PREFIX + "/")):
        return value
    return PREFIX


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if request.app.state.keys.empty:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _page(request, "login.html", title="sign in", next=_safe_next(next), error=None)


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = PREFIX,
) -> Response:
    target = _safe_next(next)
    if request.app.state.keys.role_of(key.strip()) is None:
        return _page(
            request, "login.html", 401, title="sign in", next=target, error="unknown API key"
        )
    # Through a check that the browser sends the cookie back: a Secure cookie set over plain
    # HTTP is dropped, and sign-in looped back to the form without a word (an operations trial).
    check = f"{PREFIX}/login/check?next={quote(target, safe='/:')}"
    response = RedirectResponse(check, status_code=303)
    response.set_cookie(
        COOKIE,
        key.strip(),
        max_age=_COOKIE_MAX_AGE_S,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        # The cookie is an API key: in production never sent in clear, whatever scheme a
        # TLS-terminating proxy in front of the server makes the request look like.
        secure=request.app.state.settings.env == "production" or request.url.scheme == "https",
    )
    return response


@router.get("/login/check")
def login_check(request: Request, next: str | None = None) -> Response:
    target = _safe_next(next)
    if request.app.state.keys.role_of(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(target, status_code=303)
    error = (
        "signed in, but the browser did not send the sign-in cookie back: in production it is "
        "sent over HTTPS only. Open the dashboard through HTTPS (TLS in front of the server), "
        "or from the server itself (http://127.0.0.1 counts as secure)"
    )
    return _page(request, "login.html", 400, title="sign in", next=target, error=error)


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.get("/static/" + _CSS)
def stylesheet() -> Response:
    # Open like the login form, which needs it: it holds no data.
    from importlib.resources import files

    css = (files("wearcast.api.ui") / "static" / _CSS).read_text()
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# Fleet ------------------------------------------------------------------------------------

_RANK = {ALARM: 0, WATCH: 1, OK: 2}
# Sortable columns: the value sorted on, and whether the most urgent comes first descending.
_SORTS = {
    "bearing": (lambda r: (r.machine, r.bearing), False),
    "wear": (lambda r: r.wear, True),
    "health": (lambda r: r.health, True),
    "rul": (lambda r: r.rul_h, False),
    "last": (lambda r: r.last_recording, True),
}


@dataclass(frozen=True)
class FleetRow:
    bearing_id: str
    machine: str
    bearing: int
    state: str
    wear: float
    health: float | None
    health_threshold: float | None
    rul_h: float | None
    rul_low_h: float | None
    rul_high_h: float | None
    last_recording: datetime
    model_version: int

    @classmethod
    def of(cls, answer: BearingHistory, machine: str, bearing: int) -> FleetRow:
        latest = answer.predictions[-1]
        return cls(
            answer.bearing_id,
            machine,
            bearing,
            state_of(answer),
            latest.wear,
            latest.health,
            answer.health_threshold,
            answer.rul_h,
            answer.rul_low_h,
            answer.rul_high_h,
            latest.timestamp,
            latest.model_version,
        )

    @classmethod
    def of_record(cls, p: PredictionRecord, threshold: float | None) -> FleetRow:
        """From a prediction that says its state and remaining life itself (as the API
        answers it: :func:`history_of`)."""
        return cls(
            f"{p.machine}:{p.bearing}",
            p.machine,
            p.bearing,
            p.state,
            p.wear,
            p.health,
            threshold,
            p.rul_h,
            p.rul_low_h,
            p.rul_high_h,
            p.recorded_at,
            p.model_version,
        )


def state_of(answer: BearingHistory) -> str:
    """The state the API answers; a version without alarm states says only alarm or not."""
    return answer.alarm_state or (ALARM if answer.alarm else OK)


def sort_fleet(rows: list[FleetRow], key: str, descending: bool) -> list[FleetRow]:
    """Alarms first, then watches, then the rest; within each, by ``key`` (missing values
    last whatever the order)."""
    value, _ = _SORTS[key]
    present = sorted((r for r in rows if value(r) is not None), key=value, reverse=descending) + [
        r for r in rows if value(r) is None
    ]
    return sorted(present, key=lambda r: _RANK.get(r.state, len(_RANK)))  # stable


@router.get("", response_class=HTMLResponse)
def fleet(
    request: Request,
    _role: UiReaderDep,
    sort: str = "rul",
    order: str | None = None,
) -> HTMLResponse:
    if sort not in _SORTS:
        sort = "rul"
    descending = _SORTS[sort][1] if order not in ("asc", "desc") else order == "desc"
    state = request.app.state
    served = state.store.current
    prognostics = served.prognostics if served is not None else None
    threshold = prognostics.threshold if prognostics is not None else None
    rows = []
    for p in state.log.latest():  # one query, not one per bearing
        if p.state is None:  # a version without alarm states: its wear rule over its history
            answer = history_of(state.log, state.settings, state.store, p.machine, p.bearing, 1)
            rows.append(FleetRow.of(answer, p.machine, p.bearing))
        else:
            rows.append(FleetRow.of_record(p, threshold))
    rows = sort_fleet(rows, sort, descending)
    counts = {s: sum(r.state == s for r in rows) for s in (ALARM, WATCH, OK)}
    return _page(
        request,
        "fleet.html",
        title="fleet",
        rows=rows,
        counts=counts,
        sort=sort,
        descending=descending,
        sorts=_SORTS,
        colors=charts.STATE_COLORS,
    )


# Bearing ----------------------------------------------------------------------------------


# :path, so that any id, even with a slash, gets the page that says what is wrong with it.
@router.get("/bearings/{bearing_id:path}", response_class=HTMLResponse)
def bearing_page(request: Request, bearing_id: str, _role: UiReaderDep) -> HTMLResponse:
    try:
        machine, bearing = parse_bearing_id(bearing_id)
    except ValueError as exc:
        return _not_found(request, str(exc))
    state = request.app.state
    answer = history_of(state.log, state.settings, state.store, machine, bearing, MAX_PAGE)
    if answer is None:
        return _not_found(request, f"no prediction logged for bearing {bearing_id!r}")
    spectra = state.log.latest_spectra(machine, bearing)
    # The recording's own rig and speed; rows kept before they were stored: the settings' rig.
    defects = (spectra and spectra[1].defects) or state.scorer.spec.defects.as_dict()
    return _page(
        request,
        "bearing.html",
        title=bearing_id,
        answer=answer,
        latest=answer.predictions[-1],
        state=state_of(answer),
        colors=charts.STATE_COLORS,
        trajectory=charts.trajectory_svg(answer, state.settings.alarm_threshold),
        spectra_time=None if spectra is None else spectra[0],
        spectra_chart=None if spectra is None else charts.spectra_svg(spectra[1], defects),
        defects=defects,
        page_limit=MAX_PAGE,
    )


# Model ------------------------------------------------------------------------------------


def _alarm_labels(prefix: str, rule: str) -> dict[str, str]:
    return {
        f"{prefix}{metric}": f"{rule}: {shown}"
        for metric, shown in (
            ("missed_failures", "missed failures"),
            ("median_lead_time_h", "median alarm lead (h)"),
            ("false_alarms_per_1000h", "false alarms per 1000 h"),
        )
    }


# In the order the model page shows them: the alarm the API raises and its remaining life
# first, then what they are compared with (wearcast.prognostics_eval, wearcast.evaluate).
_METRIC_LABELS = (
    _alarm_labels("health_", "health alarm (served)")
    | {
        "rul_phm2012_score": "remaining life: PHM 2012 score",
        "rul_abs_error_h": "remaining life: mean abs error (h)",
        "rul_interval_coverage": "remaining life: interval coverage",
    }
    | _alarm_labels("rms_rule_", "RMS rule")
    | _alarm_labels("", "wear rule")
    | {
        "rul_mae_h": "wear trend: remaining-life MAE (h)",
        "wear_mae": "wear MAE",
        "wear_rmse": "wear RMSE",
        "wear_mae_failed": "wear MAE, failed bearings",
    }
    | {
        # Wear MAE per label set beside the trivial predictors.
        f"wear_mae_{labels}_{predictor}": f"wear MAE vs {labels}, {shown}"
        for labels in LABELS
        for predictor, shown in (("model", "model"), ("always0", "always 0"), ("age", "age only"))
    }
)
_METRIC_ORDER = {name: i for i, name in enumerate(_METRIC_LABELS)}


def drift_by_group(request: Request) -> list[dict] | None:
    """Drift per machine and feature group for the model page, as rows of a table (keys are its
    columns); None when the served model has no drift reference. Computed on request, as
    ``GET /v1/monitoring/drift`` does, so it runs in a worker thread."""
    state = request.app.state
    model = state.store.current
    if model is None or model.reference is None:
        return None
    report = state.drift.check(model)
    rows = []
    for machine in report.machines:
        if not machine.judged:
            rows.append(
                {
                    "machine": machine.machine,
                    "group": "all",
                    "drifted features": "",
                    "min q-value": "",
                    "drift": f"too few recordings ({machine.recordings})",
                }
            )
        for group in machine.groups:
            rows.append(
                {
                    "machine": machine.machine,
                    "group": group.group,
                    "drifted features": f"{group.drifted_features} of {group.features}",
                    "min q-value": f"{group.min_q_value:.2g}",
                    "drift": "drift" if group.drifted else "no drift",
                }
            )
    return rows


@router.get("/model", response_class=HTMLResponse)
async def model_page(request: Request, _role: UiReaderDep) -> HTMLResponse:
    state = request.app.state
    answer = await models_answer(state.store)
    try:
        history = await run_in_threadpool(
            registry.champion_history, state.store.client, state.settings
        )
    except MlflowException:  # no registered model yet: no history to show
        history = []
    names = sorted(
        {name for v in answer.versions for name in v.metrics},
        key=lambda name: (_METRIC_ORDER.get(name, len(_METRIC_ORDER)), name),
    )
    return _page(
        request,
        "model.html",
        title="model",
        answer=answer,
        history=history,
        metric_names={name: _METRIC_LABELS.get(name, name) for name in names},
        drift=await run_in_threadpool(drift_by_group, request),  # drift may be computed
    )
