"""Open Inference Protocol contract: Triton's own client library (``tritonclient[http]``, its
gevent client and its aiohttp client) against a live server, with JSON and binary tensors, single
rows and batches; every answer equals /v1/predict's wear for the same rows.

KServe's Python SDK is not tested: no release of it installs beside our pins (the README's
Open Inference Protocol section says which pin each release conflicts with).
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from wearcast.api.main import create_app
from wearcast.baseline import BASELINE_PREFIX
from wearcast.dataset import read_table
from wearcast.train import prepare

from .conftest import READER, LiveServer, api_settings

pytestmark = pytest.mark.slow

MODEL = "wearcast-wear"


def auth() -> dict[str, str]:
    # A new dict per call: tritonclient adds its own headers to the dict it is given.
    return {"X-API-Key": READER}


@pytest.fixture(scope="module")
def server(model_home, tmp_path_factory):
    settings = api_settings(model_home, tmp_path_factory.mktemp("oip"), serve_model_version=1)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture(scope="module")
def columns(server) -> list[str]:
    meta = httpx.get(f"{server.url}/v2/models/{MODEL}", headers=auth()).json()
    return meta["parameters"]["columns"]


@pytest.fixture(scope="module")
def rows(model_home, columns) -> np.ndarray:
    """40 real feature rows (with their bearing's baseline) spread over whole lives."""
    settings, data = model_home
    X = prepare(read_table(data.parent / "table"), settings).X[columns].to_numpy(dtype=np.float64)
    return X[np.linspace(0, len(X) - 1, 40).astype(int)]


def v1_wear(url: str, columns: list[str], rows: np.ndarray) -> np.ndarray:
    """Wear of each row as /v1/predict answers it (each row its own machine)."""
    features = [c for c in columns if not c.startswith(BASELINE_PREFIX)]
    machine = f"contract-{uuid.uuid4().hex}"  # never seen before: no history to weigh in
    body = {
        "rows": [
            {
                "machine": f"{machine}-{i}",
                "bearing": 1,
                "timestamp": "2004-01-01T00:00:00",
                "features": {f: row[columns.index(f)] for f in features},
                "baseline": {f: row[columns.index(BASELINE_PREFIX + f)] for f in features},
            }
            for i, row in enumerate(rows.tolist())
        ]
    }
    response = httpx.post(f"{url}/v1/predict", json=body, headers=auth(), timeout=60)
    assert response.status_code == 200, response.text
    answers = {a["machine"]: a["bearings"][0]["wear"] for a in response.json()}
    return np.array([answers[f"{machine}-{i}"] for i in range(len(rows))])


def _inputs(rows: np.ndarray, datatype: str, binary: bool) -> list[triton.InferInput]:
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(
        rows.astype(np.float32 if datatype == "FP32" else np.float64), binary
    )
    return [tensor]


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as c:
        yield c


def test_server_and_model_metadata(client, columns):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(headers=auth())
    assert meta["name"] == "wearcast" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready(MODEL, headers=auth())
    assert client.is_model_ready(MODEL, "1", headers=auth())
    assert not client.is_model_ready(MODEL, "2", headers=auth())  # registered, not served
    model = client.get_model_metadata(MODEL, headers=auth())
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(columns)]}]
    assert model["outputs"] == [{"name": "wear", "datatype": "FP64", "shape": [-1]}]
    assert client.get_model_metadata(MODEL, "1", headers=auth())["versions"] == ["1"]


@pytest.mark.parametrize(
    ("count", "datatype", "binary_in", "binary_out"),
    [
        (1, "FP64", False, False),
        (40, "FP64", False, False),
        (1, "FP64", True, True),
        (40, "FP64", True, True),
        (40, "FP64", True, False),
        (40, "FP64", False, True),
        (40, "FP64", True, None),  # no outputs named: the client asks for all, in binary
        (40, "FP32", True, True),
        (40, "FP32", False, False),
    ],
    ids=lambda v: str(v),
)
def test_infer_equals_v1_predict(
    server, client, columns, rows, count, datatype, binary_in, binary_out
):
    sent = rows[:count]
    if datatype == "FP32":
        sent = sent.astype(np.float32).astype(np.float64)  # what the model gets, either way
    outputs = None if binary_out is None else [triton.InferRequestedOutput("wear", binary_out)]
    result = client.infer(
        MODEL,
        _inputs(sent, datatype, binary_in),
        outputs=outputs,
        request_id=f"contract-{count}",
        headers=auth(),
    )
    wear = result.as_numpy("wear")
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == "1"
    assert response["id"] == f"contract-{count}"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == (
        binary_out is not False
    )
    assert wear.dtype == np.float64 and wear.shape == (count,)
    np.testing.assert_array_equal(wear, v1_wear(server.url, columns, sent))
    if count > 1:  # real rows across whole lives: the answers are not one constant
        assert np.ptp(wear) > 0.1


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(server, client, columns, rows, algorithm):
    result = client.infer(
        MODEL,
        _inputs(rows, "FP64", True),
        headers=auth(),
        request_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("wear"), v1_wear(server.url, columns, rows))


def test_aiohttp_client_and_served_version(server, columns, rows):
    async def call() -> tuple[np.ndarray, InferenceServerException]:
        async with triton_aio.InferenceServerClient(server.url.removeprefix("http://")) as aio:
            result = await aio.infer(
                MODEL, _inputs(rows, "FP64", True), model_version="1", headers=auth()
            )
            try:
                await aio.infer(
                    MODEL, _inputs(rows, "FP64", True), model_version="2", headers=auth()
                )
            except InferenceServerException as exc:
                return result.as_numpy("wear"), exc
        raise AssertionError("version 2 is not served, yet it answered")

    wear, refused = asyncio.run(call())
    np.testing.assert_array_equal(wear, v1_wear(server.url, columns, rows))
    assert refused.status() == "404" and "serves version 1" in refused.message()


def _refusal(client, inputs, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(
            kwargs.pop("model", MODEL), inputs, headers=kwargs.pop("headers", auth()), **kwargs
        )
    return caught.value


def test_bad_requests_get_the_protocols_4xx_error(client, columns, rows):
    n = len(columns)
    narrow = _refusal(client, _inputs(rows[:2, :-1], "FP64", True))
    assert narrow.status() == "422" and f"expected [rows, {n}]" in narrow.message()
    bad = rows[:3].copy()
    bad[2, 5] = np.nan
    for binary in (True, False):
        refused = _refusal(client, _inputs(bad, "FP64", binary))
        assert refused.status() == "422"
        assert "row 2, column 5 is not a finite number" in refused.message()
    other = _refusal(
        client, _inputs(rows[:1], "FP64", True), outputs=[triton.InferRequestedOutput("rul")]
    )
    assert other.status() == "400" and "unknown output 'rul'" in other.message()
    unknown = _refusal(client, _inputs(rows[:1], "FP64", True), model="other")
    assert unknown.status() == "404" and "this server serves 'wearcast-wear'" in unknown.message()
    anonymous = _refusal(client, _inputs(rows[:1], "FP64", True), headers={})
    assert anonymous.status() == "401" and "X-API-Key" in anonymous.message()
    wrong_type = triton.InferInput("input-0", [1, n], "INT64")
    wrong_type.set_data_from_numpy(np.ones((1, n), dtype=np.int64))
    refused = _refusal(client, [wrong_type])
    assert refused.status() == "422" and "FP64 or FP32 expected" in refused.message()
