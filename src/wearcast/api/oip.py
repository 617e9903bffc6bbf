"""The Open Inference Protocol's (v2) inference request and response, as bytes.

Pure functions over the request's bytes and headers, so they compose with whatever reads the
body (size limits, authentication first) and are tested without a server. What conforming
clients send is accepted: JSON with or without a content type, tensor data flat or nested, the
binary tensor data extension (``Inference-Header-Content-Length``: the JSON header is followed
by the raw little-endian tensors each input's ``binary_data_size`` announces), requested
outputs with ``binary_data``, the request's ``binary_data_output``, gzip or deflate request
bodies. Every problem is an :class:`InferenceError` with a 4xx status and a message that says
what and where.
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "EXTENSIONS",
    "HEADER_LENGTH",
    "InferenceError",
    "InferenceRequest",
    "TensorSpec",
    "encode_response",
    "parse_request",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]

# Little-endian, as the binary tensor data extension lays tensors out.
_NUMPY_TYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
# Triton's parameters for features this server does not offer: refused rather than ignored,
# so a client is not left waiting for data that will not come where it expects it.
_UNSUPPORTED = {
    "shared_memory_region": "shared memory is not supported; send the tensor in the body",
    "classification": "classification outputs are not supported; wear is a regression",
}


class InferenceError(ValueError):
    """A request the protocol or the model cannot take; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the model's metadata: ``[-1, width]`` rows of ``datatype``."""

    name: str
    datatype: str
    width: int

    @property
    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, self.width]}


@dataclass(frozen=True)
class InferenceRequest:
    id: str
    rows: np.ndarray  # float64, one row per instance, the input's columns in order
    binary_outputs: dict[str, bool]  # the outputs to answer, and whether each goes in binary


class _Tensor(BaseModel):
    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str
    parameters: dict[str, Any] = {}
    data: list | None = None


class _Output(BaseModel):
    name: str
    parameters: dict[str, Any] = {}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    parameters: dict[str, Any] = {}
    # Bounded before their items are validated: the model takes one input; 400,000 empty
    # ones held a worker for 6 s and answered 45 MB of faults (a hostile client).
    inputs: list[_Tensor] = Field(min_length=1, max_length=16)
    outputs: list[_Output] | None = Field(None, max_length=16)


def parse_request(
    body: bytes,
    *,
    header_length: str | None,
    content_encoding: str | None,
    limit: int,
    max_rows: int,
    expects: TensorSpec,
    outputs: list[str],
) -> InferenceRequest:
    """The rows of ``expects`` and the outputs asked for, from an inference request's body.

    ``header_length`` and ``content_encoding`` are the request's headers of those names (None
    when absent); ``limit`` bounds the body once decompressed, ``max_rows`` the rows (413
    beyond either); ``outputs`` names the model's
    outputs, all answered when the request names none.
    """
    body = _decompress(body, content_encoding, limit)
    header, binary = _split(body, header_length)
    try:
        request = _Request.model_validate_json(header)
    except ValidationError as exc:
        raise InferenceError(400, f"invalid inference request: {_problems(exc)}") from None
    if len(request.inputs) != 1:
        raise InferenceError(
            400, f"{len(request.inputs)} inputs; the model takes one, {expects.name!r}"
        )
    rows = _rows(request.inputs[0], binary, expects, max_rows)
    return InferenceRequest(
        id=request.id if request.id is not None else uuid.uuid4().hex,
        rows=rows,
        binary_outputs=_binary_outputs(request, outputs),
    )


def encode_response(
    request: InferenceRequest,
    model_name: str,
    model_version: str,
    results: dict[str, np.ndarray],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header then the binary outputs."""
    tensors, blobs = [], []
    for name, binary in request.binary_outputs.items():
        values = np.ascontiguousarray(results[name], dtype=_NUMPY_TYPES["FP64"])
        tensor = {"name": name, "datatype": "FP64", "shape": list(values.shape)}
        if binary:
            blobs.append(values.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = values.ravel().tolist()
        tensors.append(tensor)
    header = json.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request.id,
            "outputs": tensors,
        },
        allow_nan=False,
    ).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InferenceError(415, f"Content-Encoding {encoding!r}: gzip, deflate or none")
    # Bounded, so a small compressed body cannot expand into gigabytes.
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InferenceError(400, f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise InferenceError(413, f"body is over the limit of {limit} bytes once decompressed")
    if not inflater.eof:
        raise InferenceError(400, f"body is truncated {encoding} data")
    return data


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    size = header_length.strip()
    if not (size.isascii() and size.isdigit()) or int(size) > len(body):
        raise InferenceError(
            400,
            f"{HEADER_LENGTH} {header_length!r} is not a byte count within the body's "
            f"{len(body)} bytes",
        )
    return body[: int(size)], memoryview(body)[int(size) :]  # the tensors are not copied


def _problems(exc: ValidationError) -> str:
    # Where and what, without echoing the input (it may be huge), the first faults only.
    said = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors()[:20]
    )
    more = exc.error_count() - 20
    return said + (f"; and {more} more" if more > 0 else "")


def _rows(tensor: _Tensor, binary: memoryview, expects: TensorSpec, max_rows: int) -> np.ndarray:
    where = f"input {tensor.name!r}"
    if tensor.name != expects.name:
        raise InferenceError(422, f"unknown {where}; the model takes one input, {expects.name!r}")
    _refuse_unsupported(tensor.parameters, where)
    dtype = _NUMPY_TYPES.get(tensor.datatype)
    if dtype is None:
        raise InferenceError(422, f"{where}: datatype {tensor.datatype!r}; FP64 or FP32 expected")
    shape = tensor.shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] != expects.width:
        raise InferenceError(
            422, f"{where}: shape {shape}; expected [rows, {expects.width}] with rows >= 1"
        )
    if shape[0] > max_rows:
        raise InferenceError(413, f"{where}: {shape[0]} rows, over the limit of {max_rows}")
    count = shape[0] * shape[1]
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        values = _binary_values(tensor, size, binary, dtype, count, where)
    else:
        if len(binary):
            raise InferenceError(
                400,
                f"{len(binary)} bytes of binary data follow the header, but no input "
                "announces them with a binary_data_size parameter",
            )
        values = _json_values(tensor, count, where)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InferenceError(
            422,
            f"{where}: row {bad // shape[1]}, column {bad % shape[1]} is not a finite number "
            "(NaN or infinite)",
        )
    return values.reshape(shape[0], shape[1]).astype(np.float64, copy=False)


def _binary_values(
    tensor: _Tensor, size: Any, binary: memoryview, dtype: np.dtype, count: int, where: str
) -> np.ndarray:
    if tensor.data is not None:
        raise InferenceError(400, f"{where}: has both data and a binary_data_size parameter")
    if not _is_int(size) or size < 0:
        raise InferenceError(400, f"{where}: binary_data_size {size!r} is not a byte count")
    expected = count * dtype.itemsize
    if size != expected:
        raise InferenceError(
            400,
            f"{where}: binary_data_size {size} bytes; shape {tensor.shape} of "
            f"{tensor.datatype} takes {expected}",
        )
    if len(binary) != size:
        raise InferenceError(
            400,
            f"{where}: binary_data_size {size} bytes, but {len(binary)} bytes of binary "
            "data follow the header",
        )
    return np.frombuffer(binary, dtype=dtype)


def _json_values(tensor: _Tensor, count: int, where: str) -> np.ndarray:
    if tensor.data is None:
        raise InferenceError(400, f"{where}: no data and no binary_data_size parameter")
    try:
        values = np.asarray(tensor.data)  # the kind numpy finds, so strings are not coerced
    except ValueError:
        raise InferenceError(
            400, f"{where}: nested data must be regular (every row of the same length)"
        ) from None
    if values.dtype.kind not in "iuf":
        raise InferenceError(400, f"{where}: data holds values that are not numbers")
    if values.size != count:
        raise InferenceError(
            400, f"{where}: data holds {values.size} numbers; shape {tensor.shape} takes {count}"
        )
    return values.astype(np.float64, copy=False).ravel()


def _binary_outputs(request: _Request, outputs: list[str]) -> dict[str, bool]:
    default = request.parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InferenceError(400, f"parameter binary_data_output {default!r}: true or false")
    if not request.outputs:  # none named: all of them
        return dict.fromkeys(outputs, default)
    asked: dict[str, bool] = {}
    for output in request.outputs:
        where = f"output {output.name!r}"
        if output.name not in outputs:
            raise InferenceError(400, f"unknown {where}; the model answers {outputs}")
        _refuse_unsupported(output.parameters, where)
        binary = output.parameters.get("binary_data", default)
        if not isinstance(binary, bool):
            raise InferenceError(400, f"{where}: binary_data {binary!r}: true or false")
        asked[output.name] = binary
    return asked


def _refuse_unsupported(parameters: dict[str, Any], where: str) -> None:
    for key, why in _UNSUPPORTED.items():
        if parameters.get(key) not in (None, 0):
            raise InferenceError(400, f"{where}: {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
