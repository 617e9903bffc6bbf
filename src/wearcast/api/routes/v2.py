"""Open Inference Protocol (v2) routes, so standard clients can call the model.

``infer`` takes the model's input matrix (features, then their baselines, in the order given
by the model metadata's ``parameters.columns``); it is raw model inference, without the
prediction log or alarms, which need a machine and bearing identity (use /v1 for those).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from wearcast.api.deps import ModelDep, ReaderDep, SettingsDep, StoreDep
from wearcast.api.schemas import ERROR_RESPONSES

_UNKNOWN_MODEL = ERROR_RESPONSES | {404: {"description": "unknown model"}}

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


class InferTensor(BaseModel):
    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    data: list


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "no model loaded"}})
async def ready(store: StoreDep, response: Response) -> dict:
    if store.current is None:
        response.status_code = 503
    return {"ready": store.current is not None}


def _check_name(name: str, model) -> None:
    if name != model.name:
        raise HTTPException(
            404, detail=f"unknown model {name!r}; this server serves {model.name!r}"
        )


@router.get("/models/{name}", responses=_UNKNOWN_MODEL)
def metadata(name: str, model: ModelDep, _role: ReaderDep) -> dict:
    _check_name(name, model)
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "scikit-learn",
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [-1, len(model.input_columns)]}
        ],
        "outputs": [{"name": "wear", "datatype": "FP64", "shape": [-1]}],
        "parameters": {"columns": model.input_columns},
    }


@router.get("/models/{name}/ready", responses=_UNKNOWN_MODEL)
def model_ready(name: str, model: ModelDep, _role: ReaderDep) -> dict:
    _check_name(name, model)
    return {"name": model.name, "ready": True}


@router.post("/models/{name}/infer", responses=_UNKNOWN_MODEL)
def infer(
    name: str, body: InferRequest, model: ModelDep, settings: SettingsDep, _role: ReaderDep
) -> dict:
    _check_name(name, model)
    tensor = body.inputs[0]
    if tensor.shape[0] > settings.max_request_rows:
        raise HTTPException(
            413, detail=f"{tensor.shape[0]} rows, over the limit of {settings.max_request_rows}"
        )
    if tensor.datatype not in ("FP64", "FP32"):
        raise HTTPException(422, detail=f"datatype {tensor.datatype!r}: FP64 or FP32 expected")
    columns = model.input_columns
    rows = tensor.shape[0]
    if len(tensor.shape) != 2 or tensor.shape[1] != len(columns) or rows < 1:
        raise HTTPException(422, detail=f"shape {tensor.shape}: expected [rows, {len(columns)}]")
    try:
        values = np.asarray(tensor.data, dtype=np.float64).reshape(rows, len(columns))
    except (ValueError, TypeError):
        raise HTTPException(
            422, detail=f"data does not hold {rows} x {len(columns)} numbers"
        ) from None
    if not np.isfinite(values).all():
        raise HTTPException(422, detail="data holds NaN or infinite values")
    wear = model.predict(pd.DataFrame(values, columns=columns))
    return {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": body.id,
        "outputs": [{"name": "wear", "datatype": "FP64", "shape": [rows], "data": wear.tolist()}],
    }
