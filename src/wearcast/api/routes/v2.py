"""Open Inference Protocol (v2) routes, so standard clients (tritonclient, KServe's) call the model.

``infer`` takes the model's input matrix (features, then their baselines, in the order given
by the model metadata's ``parameters.columns``); it is raw model inference, without the
prediction log or alarms, which need a machine and bearing identity (use /v1 for those).
The request's bytes are decoded by :mod:`wearcast.api.oip`; errors answer ``{"error": ...}``.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from wearcast import __version__
from wearcast.api import oip
from wearcast.api.deps import ModelDep, ReaderDep, SettingsDep, StoreDep
from wearcast.api.model_store import LoadedModel
from wearcast.api.schemas import ERROR_RESPONSES
from wearcast.config import Settings

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_UNKNOWN_MODEL = ERROR_RESPONSES | {404: {"description": "unknown model or version"}}
OUTPUT = "wear"  # one FP64 per row, shape [-1]
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON; or, with the Inference-Header-Content-Length header, a JSON "
        "header followed by the binary tensors (binary tensor data extension)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": {"type": "object"}},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "example": {
                    "inputs": [
                        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}
                    ]
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def input_spec(model: LoadedModel) -> oip.TensorSpec:
    return oip.TensorSpec("input-0", "FP64", len(model.input_columns))


@router.get("", summary="server metadata", responses=ERROR_RESPONSES)
def server_metadata(_role: ReaderDep) -> dict:
    return {"name": "wearcast", "version": __version__, "extensions": oip.EXTENSIONS}


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "no model loaded"}})
async def ready(store: StoreDep, response: Response) -> dict:
    if store.current is None:
        response.status_code = 503
    return {"ready": store.current is not None}


def _check_served(name: str, version: str | None, model: LoadedModel) -> None:
    if name != model.name:
        raise HTTPException(
            404, detail=f"unknown model {name!r}; this server serves {model.name!r}"
        )
    if version is not None and version != str(model.version):
        raise HTTPException(
            404,
            detail=f"version {version!r} of {name!r} is not served; this server serves "
            f"version {model.version}",
        )


def _metadata(name: str, version: str | None, model: LoadedModel) -> dict:
    _check_served(name, version, model)
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "scikit-learn",
        "inputs": [input_spec(model).metadata],
        "outputs": [{"name": OUTPUT, "datatype": "FP64", "shape": [-1]}],
        "parameters": {"columns": model.input_columns},
    }


@router.get("/models/{name}", responses=_UNKNOWN_MODEL, summary="model metadata")
def metadata(name: str, model: ModelDep, _role: ReaderDep) -> dict:
    return _metadata(name, None, model)


@router.get("/models/{name}/versions/{version}", responses=_UNKNOWN_MODEL, summary="model metadata")
def version_metadata(name: str, version: str, model: ModelDep, _role: ReaderDep) -> dict:
    return _metadata(name, version, model)


@router.get("/models/{name}/ready", responses=_UNKNOWN_MODEL, summary="model readiness")
def model_ready(name: str, model: ModelDep, _role: ReaderDep) -> dict:
    _check_served(name, None, model)
    return {"name": model.name, "ready": True}


@router.get(
    "/models/{name}/versions/{version}/ready", responses=_UNKNOWN_MODEL, summary="model readiness"
)
def version_ready(name: str, version: str, model: ModelDep, _role: ReaderDep) -> dict:
    _check_served(name, version, model)
    return {"name": model.name, "ready": True}


async def _infer(
    name: str, version: str | None, request: Request, model: LoadedModel, settings: Settings
) -> Response:
    _check_served(name, version, model)  # before reading a byte of the body
    limit = settings.max_upload_bytes
    body = await request.body()  # bounded by the limits middleware

    def work() -> tuple[bytes, dict[str, str]]:
        parsed = oip.parse_request(
            body,
            header_length=request.headers.get(oip.HEADER_LENGTH),
            content_encoding=request.headers.get("content-encoding"),
            limit=limit,
            max_rows=settings.max_request_rows,
            expects=input_spec(model),
            outputs=[OUTPUT],
        )
        wear = model.predict(parsed.rows)
        return oip.encode_response(parsed, model.name, str(model.version), {OUTPUT: wear})

    content, headers = await run_in_threadpool(work)
    return Response(content, headers=headers)


@router.post(
    "/models/{name}/infer",
    responses=_UNKNOWN_MODEL,
    summary="wear of input rows",
    openapi_extra=_INFER_BODY,
)
async def infer(
    name: str, request: Request, model: ModelDep, settings: SettingsDep, _role: ReaderDep
) -> Response:
    return await _infer(name, None, request, model, settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    responses=_UNKNOWN_MODEL,
    summary="wear of input rows, from the given version",
    openapi_extra=_INFER_BODY,
)
async def version_infer(
    name: str,
    version: str,
    request: Request,
    model: ModelDep,
    settings: SettingsDep,
    _role: ReaderDep,
) -> Response:
    return await _infer(name, version, request, model, settings)
