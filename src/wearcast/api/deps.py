"""Shared dependencies of the routes, as ``Annotated`` aliases.

They are ``async`` though they await nothing: they only read the app's state, and FastAPI runs
a plain ``def`` dependency in the thread pool, a round trip per dependency per request (a
scored recording had six)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from wearcast.api.metrics import Metrics
from wearcast.api.model_store import LoadedModel, ModelStore
from wearcast.api.security import HEADER, KeyRing, Role
from wearcast.api.service import Scorer
from wearcast.config import Settings
from wearcast.prediction_log import PredictionLog

__all__ = [
    "SettingsDep",
    "StoreDep",
    "ModelDep",
    "ScorerDep",
    "LogDep",
    "MetricsDep",
    "ReaderDep",
    "AdminDep",
]

_api_key = APIKeyHeader(name=HEADER, auto_error=False, description="an API key (reader or admin)")


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> ModelStore:
    return request.app.state.store


async def _model(request: Request) -> LoadedModel:
    model = request.app.state.store.current
    if model is None:
        raise HTTPException(503, detail=f"no model loaded: {request.app.state.store.problem}")
    return model


def _require(role: Role):
    async def check(request: Request, key: Annotated[str | None, Security(_api_key)]) -> Role:
        keys: KeyRing = request.app.state.keys
        if keys.empty:  # development without keys: open, as the startup log says
            return Role.admin
        found = keys.role_of(key)
        if found is None:
            raise HTTPException(
                401,
                detail=f"missing or unknown API key (send it in the {HEADER} header)",
                headers={"WWW-Authenticate": "APIKey"},
            )
        if found < role:
            raise HTTPException(
                403, detail=f"this needs the {role.name} role; the key has {found.name}"
            )
        return found

    return check


async def _scorer(request: Request) -> Scorer:
    return request.app.state.scorer


async def _log(request: Request) -> PredictionLog:
    return request.app.state.log


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ModelStore, Depends(_store)]
ModelDep = Annotated[LoadedModel, Depends(_model)]
ScorerDep = Annotated[Scorer, Depends(_scorer)]
LogDep = Annotated[PredictionLog, Depends(_log)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ReaderDep = Annotated[Role, Depends(_require(Role.reader))]
AdminDep = Annotated[Role, Depends(_require(Role.admin))]
