"""Admin actions: reload the champion, promote a version. Admin role only."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from mlflow.exceptions import MlflowException
from starlette.concurrency import run_in_threadpool

from wearcast import registry
from wearcast.api.deps import AdminDep, MetricsDep, SettingsDep, StoreDep
from wearcast.api.schemas import ERROR_RESPONSES, ReloadResponse

router = APIRouter(prefix="/v1/admin", tags=["admin"])
log = logging.getLogger("wearcast.api")


async def _reload(store, metrics) -> ReloadResponse:
    try:
        changed, detail = await run_in_threadpool(store.reload)
        await run_in_threadpool(store.refresh_versions)
    except Exception as exc:  # noqa: BLE001 - the old model keeps serving; say why
        metrics.reloads.labels("failed").inc()
        log.exception("reload failed")  # the whole story (paths included) stays in the log
        raise HTTPException(
            409,
            detail="reload failed, still serving the previous model: the new version could "
            f"not be loaded or failed its smoke test ({type(exc).__name__}; details in the "
            "server log)",
        ) from None
    if not changed:  # a swap is counted where it happens (the poll swaps too)
        metrics.reloads.labels("unchanged").inc()
    # An admin request reaches one worker process; the others follow at their next poll.
    every = store.settings.reload_interval_s
    detail += (
        f" in this worker process (the server's others, if any, follow within {every:g} s: "
        "their next registry poll)"
        if every
        else " in this worker process (the registry poll is off: other worker processes, if "
        "any, keep their model until restarted)"
    )
    return ReloadResponse(
        changed=changed, version=store.current.version if store.current else None, detail=detail
    )


@router.post(
    "/reload",
    summary="serve the current champion",
    response_model=ReloadResponse,
    responses=ERROR_RESPONSES,
)
async def reload(store: StoreDep, metrics: MetricsDep, _role: AdminDep) -> ReloadResponse:
    return await _reload(store, metrics)


@router.post(
    "/promote/{version}",
    summary="make a version the champion (bypasses the gate) and serve it",
    response_model=ReloadResponse,
    responses={
        **ERROR_RESPONSES,
        404: {"description": "no such version"},
        503: {"description": "the model registry failed"},
    },
)
async def promote(
    # the registry's integers: a larger number was answered 503, a registry failure
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    store: StoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    _role: AdminDep,
) -> ReloadResponse:
    def work() -> None:
        registry.promote(store.client, settings, version, "promoted through the API by an admin")

    log.info("admin: promoting %s version %s", settings.model_name, version)
    try:
        await run_in_threadpool(work)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            log.warning("admin: no version %s of %s to promote", version, settings.model_name)
            raise HTTPException(
                404, detail=f"model {settings.model_name!r} has no version {version}"
            ) from None
        log.exception("promotion failed")
        raise HTTPException(
            503,
            detail=f"the model registry could not promote version {version} "
            f"({exc.error_code}; details in the server log): GET /v1/models shows the champion",
        ) from None
    except registry.PromotionRefused:
        log.exception("promotion refused")
        raise HTTPException(
            409,
            detail=f"version {version} was not promoted: it could not be loaded or failed its "
            "smoke test (details in the server log); the champion is unchanged",
        ) from None
    return await _reload(store, metrics)
