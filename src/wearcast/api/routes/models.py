"""GET /v1/models: the served model, and the registry's versions (as of the last poll)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from wearcast.api.deps import ReaderDep, StoreDep
from wearcast.api.model_store import ModelStore
from wearcast.api.schemas import ERROR_RESPONSES, ModelInfo, ModelsResponse

__all__ = ["router", "models_answer"]

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    summary="served model and registry versions",
    description="The registry's versions are read at start-up, by the poller every "
    "`reload_interval_s` and after an admin reload or promotion, not on every request.",
    response_model=ModelsResponse,
    responses=ERROR_RESPONSES,
)
async def list_models(store: StoreDep, _role: ReaderDep) -> ModelsResponse:
    return await models_answer(store)


async def models_answer(store: ModelStore) -> ModelsResponse:
    """What GET /v1/models answers; the dashboard's model page shows it too."""
    versions = store.versions
    if versions is None:  # not read yet: say why rather than wait on the registry here
        raise HTTPException(503, detail=f"the registry's versions are not read: {store.problem}")
    current = store.current
    loaded = None
    if current is not None:
        listed = next((v for v in versions if v.version == current.version), None)
        loaded = ModelInfo(
            name=current.name,
            version=current.version,
            metrics=current.metrics,
            loaded_at=current.loaded_at,
            aliases=listed.aliases if listed else [],
            gate_decision=listed.gate_decision if listed else None,
            gate_reason=listed.gate_reason if listed else None,
            features=current.features,
        )
    return ModelsResponse(loaded=loaded, versions=versions)
