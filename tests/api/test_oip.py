"""The Open Inference Protocol codec on its own: bytes and headers in, rows or a 4xx out."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.http import InferResult

from wearcast.api.oip import (
    HEADER_LENGTH,
    InferenceError,
    TensorSpec,
    encode_response,
    parse_request,
)

SPEC = TensorSpec("input-0", "FP64", 3)
ROWS = np.array([[0.5, 1.0, -2.0], [3.25, 4.0, 1e-9]])


def parse(body: bytes, header_length: int | str | None = None, encoding=None, limit=10**6):
    return parse_request(
        body,
        header_length=None if header_length is None else str(header_length),
        content_encoding=encoding,
        limit=limit,
        max_rows=100,
        expects=SPEC,
        outputs=["wear"],
    )


def request(data=None, *, shape=(2, 3), datatype="FP64", name="input-0", **extra) -> dict:
    tensor = {"name": name, "shape": list(shape), "datatype": datatype}
    tensor |= {"data": data} if data is not None else {}
    tensor |= extra.pop("tensor", {})
    return {"inputs": [tensor]} | extra


def binary(rows: np.ndarray, dtype="<f8", **extra) -> tuple[bytes, int]:
    raw = rows.astype(dtype).tobytes()
    datatype = "FP64" if dtype == "<f8" else "FP32"
    tensor = {"parameters": {"binary_data_size": len(raw)}}
    header = json.dumps(
        request(shape=rows.shape, datatype=datatype, tensor=tensor) | extra
    ).encode()
    return header + raw, len(header)


@pytest.mark.parametrize(
    "data", [ROWS.tolist(), ROWS.ravel().tolist(), [[list(r)] for r in ROWS.tolist()]]
)
def test_json_data_flat_or_nested(data):
    parsed = parse(json.dumps(request(data)).encode())
    np.testing.assert_array_equal(parsed.rows, ROWS)
    assert parsed.binary_outputs == {"wear": False} and len(parsed.id) == 32


def test_binary_tensors_fp64_and_fp32():
    body, size = binary(ROWS)
    np.testing.assert_array_equal(parse(body, size).rows, ROWS)
    body, size = binary(ROWS, "<f4")
    parsed = parse(body, size)
    assert parsed.rows.dtype == np.float64
    np.testing.assert_array_equal(parsed.rows, ROWS.astype(np.float32))


def test_integers_in_json_are_numbers():
    parsed = parse(json.dumps(request([[1, 2, 3], [4, 5, 6]])).encode())
    np.testing.assert_array_equal(parsed.rows, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    ("parameters", "outputs", "expected"),
    [
        ({}, None, {"wear": False}),
        ({"binary_data_output": True}, None, {"wear": True}),
        ({}, [{"name": "wear"}], {"wear": False}),
        ({"binary_data_output": True}, [{"name": "wear"}], {"wear": True}),
        (
            {"binary_data_output": True},
            [{"name": "wear", "parameters": {"binary_data": False}}],
            {"wear": False},
        ),
        ({}, [{"name": "wear", "parameters": {"binary_data": True}}], {"wear": True}),
        ({"priority": 1, "custom": "x"}, [], {"wear": False}),
    ],
)
def test_outputs_asked_for(parameters, outputs, expected):
    body = request(ROWS.tolist(), parameters=parameters, id="r-1")
    if outputs is not None:
        body["outputs"] = outputs
    parsed = parse(json.dumps(body).encode())
    assert parsed.binary_outputs == expected and parsed.id == "r-1"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(encoding):
    body, size = binary(ROWS)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    np.testing.assert_array_equal(parse(packed, size, encoding).rows, ROWS)


def _json(data=..., **kwargs) -> bytes:
    return json.dumps(request(ROWS.tolist() if data is ... else data, **kwargs)).encode()


BINARY, BINARY_SIZE = binary(ROWS)
BOTH = _json(tensor={"parameters": {"binary_data_size": 48}})


@pytest.mark.parametrize(
    ("body", "header_length", "encoding", "status", "words"),
    [
        (b"{not json", None, None, 400, "Invalid JSON"),
        (b"", None, None, 400, "Invalid JSON"),
        (b'{"inputs": []}', None, None, 400, "inputs: List should have at least 1 item"),
        (b'{"inputs": [{"name": "input-0"}]}', None, None, 400, "inputs.0.shape: Field required"),
        (_json(parameters=[1]), None, None, 400, "parameters: Input should be an object"),
        (BINARY, "twelve", None, 400, "is not a byte count"),
        (BINARY, len(BINARY) + 1, None, 400, "is not a byte count within the body's"),
        (BINARY[:-8], BINARY_SIZE, None, 400, "but 40 bytes of binary data follow"),
        (BINARY + b"\0", BINARY_SIZE, None, 400, "but 49 bytes of binary data follow"),
        (_json() + b"\0" * 8, len(_json()), None, 400, "no input announces them"),
        (
            BOTH + BINARY[BINARY_SIZE:],
            len(BOTH),
            None,
            400,
            "has both data and a binary_data_size",
        ),
        (
            json.dumps(
                request(shape=(2, 3), tensor={"parameters": {"binary_data_size": 40}})
            ).encode(),
            None,
            None,
            400,
            "binary_data_size 40 bytes; shape [2, 3] of FP64 takes 48",
        ),
        (_json(None), None, None, 400, "no data and no binary_data_size"),
        (_json([["a", "b", "c"], ["d", "e", "f"]]), None, None, 400, "not numbers"),
        (_json([True] * 6), None, None, 400, "not numbers"),
        (_json([None] * 6), None, None, 400, "not numbers"),
        (_json([[1, 2, 3], [4, 5]]), None, None, 400, "must be regular"),
        (_json([1, 2, 3, 4, 5]), None, None, 400, "data holds 5 numbers; shape [2, 3] takes 6"),
        (
            json.dumps({"inputs": request(ROWS.tolist())["inputs"] * 2}).encode(),
            None,
            None,
            400,
            "2 inputs; the model takes one, 'input-0'",
        ),
        (_json(name="x"), None, None, 422, "unknown input 'x'"),
        (_json(datatype="INT64"), None, None, 422, "datatype 'INT64'; FP64 or FP32 expected"),
        (_json(ROWS.ravel().tolist(), shape=(3, 2)), None, None, 422, "expected [rows, 3]"),
        (_json([], shape=(0, 3)), None, None, 422, "with rows >= 1"),
        (_json([0] * 3, shape=(101, 3)), None, None, 413, "101 rows, over the limit of 100"),
        (_json(ROWS.ravel().tolist(), shape=(6,)), None, None, 422, "expected [rows, 3]"),
        (
            _json().replace(b"4.0", b"NaN"),
            None,
            None,
            422,
            "row 1, column 1 is not a finite number",
        ),
        (_json().replace(b"4.0", b"1e999"), None, None, 422, "row 1, column 1 is not a finite"),
        (
            json.dumps(request(ROWS.tolist(), outputs=[{"name": "rul"}])).encode(),
            None,
            None,
            400,
            "unknown output 'rul'; the model answers ['wear']",
        ),
        (
            json.dumps(
                request(ROWS.tolist(), outputs=[{"name": "wear", "parameters": {"binary_data": 1}}])
            ).encode(),
            None,
            None,
            400,
            "binary_data 1: true or false",
        ),
        (
            json.dumps(request(ROWS.tolist(), parameters={"binary_data_output": "yes"})).encode(),
            None,
            None,
            400,
            "binary_data_output 'yes'",
        ),
        (
            json.dumps(
                request(
                    ROWS.tolist(), outputs=[{"name": "wear", "parameters": {"classification": 2}}]
                )
            ).encode(),
            None,
            None,
            400,
            "classification outputs are not supported",
        ),
        (
            _json(tensor={"parameters": {"shared_memory_region": "r"}}),
            None,
            None,
            400,
            "shared memory is not supported",
        ),
        (_json(), None, "br", 415, "Content-Encoding 'br'"),
        (_json(), None, "gzip", 400, "not valid gzip data"),
        (gzip.compress(_json())[:-12], None, "gzip", 400, "truncated gzip"),
        (
            gzip.compress(b" " * 2_000_000),
            None,
            "gzip",
            413,
            "over the limit of 1000000 bytes once",
        ),
    ],
)
def test_bad_requests_say_what_and_where(body, header_length, encoding, status, words):
    with pytest.raises(InferenceError) as caught:
        parse(body, header_length, encoding)
    assert caught.value.status == status and words in str(caught.value), str(caught.value)


@pytest.mark.parametrize("binary_out", [False, True])
def test_responses_read_back_by_tritonclient(binary_out):
    parsed = parse(
        json.dumps(request(ROWS.tolist(), parameters={"binary_data_output": binary_out})).encode()
    )
    wear = np.array([0.25, 0.75])
    body, headers = encode_response(parsed, "m", "3", {"wear": wear})
    assert (HEADER_LENGTH in headers) == binary_out
    result = InferResult.from_response_body(body, header_length=headers.get(HEADER_LENGTH))
    np.testing.assert_array_equal(result.as_numpy("wear"), wear)
    assert result.get_response()["model_version"] == "3"
    assert result.get_response()["id"] == parsed.id


@settings(max_examples=300, deadline=None, database=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "inputs",
                            "outputs",
                            "name",
                            "shape",
                            "datatype",
                            "data",
                            "parameters",
                            "binary_data_size",
                            "binary_data",
                            "binary_data_output",
                            "id",
                        ]
                    ),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    header_length=st.none() | st.integers(-2, 300).map(str) | st.text(max_size=4),
)
def test_any_bytes_are_rows_or_a_4xx(body, header_length):
    try:
        parsed = parse(body, header_length)
    except InferenceError as exc:
        assert 400 <= exc.status < 500
    else:
        assert parsed.rows.shape[1] == 3 and np.isfinite(parsed.rows).all()
