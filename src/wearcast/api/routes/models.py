"""GET /v1/models: the served model, and the registry's versions."""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from wearcast import registry
from wearcast.api.deps import ReaderDep, SettingsDep, StoreDep
from wearcast.api.schemas import ERROR_RESPONSES, ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    summary="served model and registry versions",
    response_model=ModelsResponse,
    responses=ERROR_RESPONSES,
)
async def list_models(store: StoreDep, settings: SettingsDep, _role: ReaderDep) -> ModelsResponse:
    def versions() -> list[ModelInfo]:
        client = registry.connect(settings)
        found = client.search_model_versions(f"name='{settings.model_name}'")
        if not found:
            return []
        aliases: dict[int, list[str]] = {}
        for alias, version in client.get_registered_model(settings.model_name).aliases.items():
            aliases.setdefault(int(version), []).append(alias)
        return sorted(
            (
                ModelInfo(
                    name=v.name,
                    version=int(v.version),
                    aliases=aliases.get(int(v.version), []),
                    metrics=json.loads(v.tags.get("metrics", "{}")),
                )
                for v in found
            ),
            key=lambda m: m.version,
        )

    current = store.current
    loaded = None
    if current is not None:
        loaded = ModelInfo(
            name=current.name,
            version=current.version,
            metrics=current.metrics,
            loaded_at=current.loaded_at,
        )
    all_versions = await run_in_threadpool(versions)
    if loaded is not None:
        loaded.aliases = next((v.aliases for v in all_versions if v.version == loaded.version), [])
    return ModelsResponse(loaded=loaded, versions=all_versions)
