"""The API as a hostile client and a heavy user probe it: every request below once got a 500,
work before authentication, or a wrong answer (issue 12). Each is replayed and answered right."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from wearcast.api.main import create_app

from .conftest import READER, LiveServer, api_settings

pytestmark = pytest.mark.slow

ERROR_KEYS = {"error", "detail"}


@pytest.fixture(scope="module")
def recording(model_home) -> Path:
    return sorted((model_home[1] / "sim_run_01").glob("2004.*"))[0]


def _post_recording(client, content: bytes, **params):
    return client.post(
        "/v1/recordings",
        params={"machine": "m", "timestamp": "2004-01-01T00:00:00", **params},
        content=content,
        headers={"content-type": "text/plain"},
    )


def _chunks(total: int, piece: int = 1 << 16):
    sent = 0
    while sent < total:
        yield b"x" * piece
        sent += piece


def _shape(response) -> dict:
    body = response.json()
    # Every error written alike, those refused before the app (401, 413, 431) included.
    assert response.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if response.request.url.path.startswith("/v2/"):  # the Open Inference Protocol's shape
        assert set(body) == {"error"}, body
        body = {"error": body["error"], "detail": body["error"]}
    assert set(body) == ERROR_KEYS, body
    assert "/tmp" not in response.text and "Traceback" not in response.text
    return body


@pytest.mark.parametrize("path", ["/v2/models/wearcast-wear/infer", "/v1/predict"])
def test_no_key_is_refused_before_the_body_is_read(model_home, tmp_path, path):
    settings = api_settings(model_home, tmp_path)
    with LiveServer(create_app(settings)) as server, httpx.Client(timeout=60) as http:
        # A chunked body with no declared length, 4x over the limit: answered 401, not parsed.
        unread = http.post(
            server.url + path,
            content=_chunks(4 * settings.max_upload_bytes),
            headers={"content-type": "application/json"},
        )
        assert unread.status_code == 401, unread.text
        assert "missing or unknown API key" in _shape(unread)["detail"]
        declared = http.post(
            server.url + path, content=b"x" * 1000, headers={"content-type": "text/plain"}
        )
        assert declared.status_code == 401


def test_bodies_over_the_limit_are_413_declared_or_streamed(model_home, tmp_path, recording):
    settings = api_settings(model_home, tmp_path, max_upload_bytes=200_000)
    with LiveServer(create_app(settings)) as server, httpx.Client(timeout=60) as http:
        http.headers["X-API-Key"] = READER
        for path, kind in (
            ("/v2/models/wearcast-wear/infer", "application/json"),
            ("/v1/predict", "application/json"),
            ("/v1/recordings?machine=m&timestamp=2004-01-01", "text/plain"),
        ):
            streamed = http.post(
                server.url + path, content=_chunks(1_000_000), headers={"content-type": kind}
            )
            assert streamed.status_code == 413, (path, streamed.text)
            assert "over the limit of 200000" in _shape(streamed)["detail"]
        # A multipart upload without a declared length is cut off at the limit too.
        boundary = b"b0undary"
        head = (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="2004.01.01.00.00.00"\r\n\r\n'
        )

        def multipart():
            yield head
            yield from _chunks(1_000_000)
            yield b"\r\n--" + boundary + b"--\r\n"

        upload = http.post(
            server.url + "/v1/recordings?machine=m",
            content=multipart(),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
        assert upload.status_code == 413, upload.text
        _shape(upload)


def test_oversized_headers_are_431(client):
    response = client.get("/v1/models", headers={"X-Padding": "p" * 20_000})
    assert response.status_code == 431
    assert "over the limit" in _shape(response)["detail"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"0.1\t" * 975_000, "bytes long, over the limit"),  # one line of 975,000 values
        (b"0.1\t" * 100_000, "bytes long, over the limit"),
        (b"0.1\t" * 200 + b"0.1\n", "201 values, over the limit of 16"),
        (b"0.1\t0.2\t0.3\t0.4\n" * 50_000, "50000 rows, expected 20480"),
    ],
    ids=["975k-values", "100k-values", "wide-line", "too-many-rows"],
)
def test_shapes_no_recording_has_are_refused_before_parsing(client, content, words):
    response = _post_recording(client, content)
    assert response.status_code == 422, response.text
    assert words in _shape(response)["detail"]


def test_binary_content_is_named_as_such_before_its_line_lengths(client):
    noise = bytes(np.random.default_rng(5).integers(0, 256, 300_000, dtype=np.uint8))
    response = _post_recording(client, noise)
    assert response.status_code == 422, response.text
    assert "binary content" in _shape(response)["detail"]


def test_a_line_over_the_limit_is_named_once(client):
    response = _post_recording(client, b"0.1\t0.2\t0.3\t0.4\n" + b"1" * 5_000 + b"\n")
    detail = _shape(response)["detail"]
    assert detail.startswith("line 2: 5000 bytes long") and detail.count("line 2") == 1


@pytest.mark.parametrize("speed", ["nan", "inf", "-inf"])
def test_a_speed_that_is_not_a_number_says_so(client, recording, speed):
    response = _post_recording(client, recording.read_bytes(), shaft_rpm=speed)
    assert response.status_code == 422, response.text
    assert "finite number" in str(_shape(response)["detail"])


@pytest.mark.parametrize("speed", [8500, 100_000])
def test_a_speed_whose_defect_lines_no_spectrum_shows_is_a_422(client, recording, speed):
    """At 8500 rpm an IMS bearing's third BPFI harmonic lies beyond the envelope spectrum of
    its 2-9.5 kHz band (it reaches 3.75 kHz): no feature can be computed (it was a 500)."""
    response = _post_recording(client, recording.read_bytes(), shaft_rpm=speed)
    assert response.status_code == 422, response.text
    detail = _shape(response)["detail"]
    assert detail.startswith(f"shaft_rpm: at {speed} rpm the bearing's defect lines reach")
    assert "envelope_band_hz" in detail


@pytest.mark.parametrize("speed", ["1e-300", "50"])
def test_a_speed_too_slow_for_one_revolution_per_recording_is_a_422(client, recording, speed):
    """An IMS recording lasts 1.024 s: below 58.6 rpm the shaft does not turn once in it (1e-300
    rpm was accepted and scored)."""
    response = _post_recording(client, recording.read_bytes(), shaft_rpm=speed)
    assert response.status_code == 422, response.text
    assert "one shaft revolution takes" in _shape(response)["detail"]


def test_a_snapshot_of_another_format_sent_as_ims_gets_a_hint(client):
    snapshot = "".join(f"9,10,39,{1e5 + i:.4e},0.01,-0.02\n" for i in range(2560)).encode()
    response = _post_recording(client, snapshot, filename="acc_00001.csv")
    assert response.status_code == 422, response.text
    assert "is named as a pronostia recording: add format=pronostia" in _shape(response)["detail"]
    unnamed = _post_recording(client, snapshot)  # no file name: what it reads as
    assert unnamed.status_code == 422, unnamed.text
    assert "it reads as a pronostia recording: add format=pronostia" in _shape(unnamed)["detail"]
    garbage = _post_recording(client, b"9,10,x\n" * 10)
    assert garbage.status_code == 422 and "add format" not in _shape(garbage)["detail"]
    # Uploaded under its name with neither format nor time: said it was no timestamp.
    files = {"file": ("acc_00001.csv", snapshot, "text/csv")}
    upload = client.post("/v1/recordings", params={"machine": "m"}, files=files)
    assert upload.status_code == 422, upload.text
    assert _shape(upload)["detail"] == (
        "'acc_00001.csv' is named as a pronostia recording, whose name has no date: "
        "add format=pronostia and ?timestamp="
    )


def test_huge_finite_samples_are_a_422(client, recording):
    lines = recording.read_text().splitlines()
    lines[100] = "\t".join(["1e308"] * len(lines[100].split("\t")))
    response = _post_recording(client, "\n".join(lines).encode())
    assert response.status_code == 422, response.text
    assert (
        "line 101, column 1: channel 1: sample 1e+308 g is outside any physical range"
        in (_shape(response)["detail"])
    )


def _columns(client) -> list[str]:
    return client.get("/v2/models/wearcast-wear").json()["parameters"]["columns"]


@pytest.mark.parametrize("value", [1e308, -1e308])
def test_features_that_overflow_the_model_are_a_422(client, value):
    columns = _columns(client)
    features = [c for c in columns if not c.startswith("baseline_")]
    signed = {"mean", "skewness"}  # amplitudes are never negative: their overflow is upward
    row = {
        "machine": "big",
        "bearing": 1,
        "timestamp": "2004-01-01T00:00:00",
        "features": {c: value if c in signed else abs(value) for c in features},
        "baseline": {c: -value if c in signed else 1e-300 for c in features},
    }
    response = client.post("/v1/predict", json={"rows": [row]})
    assert response.status_code == 422, response.text
    assert "not finite" in _shape(response)["detail"]
    infer = client.post(
        "/v2/models/wearcast-wear/infer",
        json={
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, len(columns)],
                    "datatype": "FP64",
                    "data": [value] * (len(columns) // 2) + [-value] * (len(columns) // 2),
                }
            ]
        },
    )
    assert infer.status_code == 422, infer.text
    _shape(infer)


def test_a_negative_amplitude_is_a_422_saying_which(client):
    """A broken feature system's negative RMS was answered as a healthy bearing."""
    features = [c for c in _columns(client) if not c.startswith("baseline_")]
    row = {
        "machine": "neg",
        "bearing": 1,
        "timestamp": "2004-01-01T00:00:00",
        "features": {c: -0.5 if c == "mean" else 0.1 for c in features},
    }
    assert client.post("/v1/predict", json={"rows": [row]}).status_code == 200  # a DC offset
    row["features"]["rms"] = -1e30
    response = client.post("/v1/predict", json={"rows": [row]})
    assert response.status_code == 422, response.text
    (problem,) = _shape(response)["detail"]
    assert problem["msg"].endswith("rms is -1e+30: an amplitude cannot be negative")
    assert problem["loc"] == ["body", "rows", 0, "features"]  # where


@pytest.mark.parametrize(
    "bearing_id", ["m:²", "m:99999999999999999999", "m:0", "m:65", "a/b:1", "m%00:1", ":1"]
)
def test_bad_bearing_ids_are_a_422(client, bearing_id):
    response = client.get(f"/v1/bearings/{bearing_id}")
    assert response.status_code in (404, 422), response.text
    _shape(response)


@pytest.mark.parametrize("machine", ["a/b", "m\x00", "m:1", "x" * 65, ""])
def test_machine_ids_outside_the_charset_are_refused(client, recording, machine):
    response = _post_recording(client, recording.read_bytes(), machine=machine)
    assert response.status_code == 422, response.text
    _shape(response)
    row = {
        "machine": machine,
        "bearing": 1,
        "timestamp": "2004-01-01T00:00:00",
        "features": {"a": 1.0},
    }
    response = client.post("/v1/predict", json={"rows": [row]})
    assert response.status_code == 422, response.text


def test_unknown_routes_wrong_methods_and_malformed_json_have_the_error_shape(client):
    assert client.get("/nowhere").status_code == 404
    assert _shape(client.get("/nowhere"))["error"] == "not found"
    wrong = client.delete("/v1/predict")
    assert wrong.status_code == 405 and _shape(wrong)["error"] == "method not allowed"
    malformed = client.post(
        "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and _shape(malformed)["error"] == "invalid request"


def test_timestamps_with_offsets_are_converted_to_utc(client, recording):
    response = _post_recording(
        client, recording.read_bytes(), machine="tz", timestamp="2004-01-01T02:30:00+02:00"
    )
    assert response.status_code == 200, response.text
    assert response.json()["timestamp"] == "2004-01-01T00:30:00"
    history = client.get("/v1/bearings/tz:1").json()
    assert history["predictions"][0]["timestamp"] == "2004-01-01T00:30:00"


@pytest.mark.parametrize(
    "timestamp",
    [
        "1" * 10_000,
        "1111-11-11T00:00:00",
        "9999-01-01T00:00:00",
        "11111111",
        "0001-01-01T00:00:00+01:00",  # no UTC time in datetime's range (was a 500)
    ],
)
def test_absurd_timestamps_are_refused(client, recording, timestamp):
    response = _post_recording(client, recording.read_bytes(), timestamp=timestamp)
    assert response.status_code == 422, response.text[:300]
    assert len(response.text) < 1000  # the input is not echoed back
    row = {"machine": "m", "bearing": 1, "timestamp": timestamp, "features": {"a": 1.0}}
    assert client.post("/v1/predict", json={"rows": [row]}).status_code == 422


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"filename": "2300.01.01.00.00.00"}, "is outside 1970-2199"),  # was the generic message
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "has no UTC time"),
        ({"timestamp": "yesterday"}, "is neither ISO 8601 nor YYYY.MM.DD.hh.mm.ss"),
    ],
)
def test_a_refused_timestamp_says_why(client, recording, given, said):
    response = client.post(
        "/v1/recordings",
        params={"machine": "m", **given},
        content=recording.read_bytes(),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 422, response.text[:300]
    assert said in _shape(response)["detail"]


def test_a_timestamp_that_contradicts_the_file_name_is_refused_not_preferred(client, recording):
    """A file named 12:00:00 sent with timestamp=12:05:00 was logged at 12:05, silently."""
    body = recording.read_bytes()
    params = {"machine": "clash", "filename": "2004.01.01.12.00.00"}
    clash = client.post(
        "/v1/recordings",
        params={**params, "timestamp": "2004-01-01T12:05:00"},
        content=body,
        headers={"content-type": "text/plain"},
    )
    assert clash.status_code == 422, clash.text
    assert "name different times" in _shape(clash)["detail"]
    assert client.get("/v1/bearings/clash:1").status_code == 404  # nothing logged
    agreeing = client.post(  # the same instant with an offset agrees
        "/v1/recordings",
        params={**params, "timestamp": "2004-01-01T13:00:00+01:00"},
        content=body,
        headers={"content-type": "text/plain"},
    )
    assert agreeing.status_code == 200, agreeing.text
    assert agreeing.json()["timestamp"] == "2004-01-01T12:00:00"


def test_a_pronostia_snapshot_without_a_timestamp_is_told_to_give_one(client):
    """A PRONOSTIA file's name is its number, not its time (it got "timestamp 'acc_00001.csv'
    is neither ISO 8601 nor YYYY.MM.DD.hh.mm.ss")."""
    response = client.post(
        "/v1/recordings",
        params={"machine": "bench", "format": "pronostia", "filename": "acc_00001.csv"},
        content=b"9,10,39,65623,0.552,-0.146\n",
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 422, response.text
    assert "give ?timestamp=" in _shape(response)["detail"]


def test_the_largest_request_of_feature_rows_fits_the_default_body_limit(model_home, tmp_path):
    """max_request_rows rows of every feature at full precision were 5.1 MB of JSON, over the
    body limit: the documented row limit could not be reached (found by a hostile-client
    trial)."""
    settings = api_settings(model_home, tmp_path)
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READER
        features = c.app.state.store.current.features
        rng = np.random.default_rng(0)
        rows = [
            {
                "machine": f"big{k % 50}",
                "bearing": 1 + k % 4,
                "timestamp": f"2004-01-01T{k // 200:02d}:{k % 200 // 4:02d}:00",
                "features": dict(
                    zip(features, (1 + rng.random(len(features))).tolist(), strict=True)
                ),
            }
            for k in range(settings.max_request_rows)
        ]
        body = json.dumps({"rows": rows}).encode()
        assert len(body) > 4_000_000  # the old limit
        response = c.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text[:300]
        assert sum(len(r["bearings"]) for r in response.json()) == settings.max_request_rows


def test_feature_values_and_bearings_are_json_numbers_not_look_alikes(client):
    """`true`, "1.5" and a bearing "1" were read as numbers (a hostile-client trial): refused
    as what they are; integers stay numbers."""
    columns = client.get("/v2/models/wearcast-wear").json()["parameters"]["columns"]
    features = {f: 1 for f in columns if not f.startswith("baseline_")}  # integers: numbers
    row = {"machine": "strict", "bearing": 1, "timestamp": "2004-01-01T00:00:00"}
    assert client.post("/v1/predict", json={"rows": [row | {"features": features}]}).is_success
    name = next(iter(features))
    for change, where in (
        ({"features": features | {name: True}}, ["body", "rows", 0, "features", name]),
        ({"features": features | {name: "1.5"}}, ["body", "rows", 0, "features", name]),
        ({"features": features, "bearing": "1"}, ["body", "rows", 0, "bearing"]),
    ):
        response = client.post("/v1/predict", json={"rows": [row | change]})
        assert response.status_code == 422, response.text
        assert [f["loc"] for f in response.json()["detail"]] == [where]


def test_rows_per_request_are_bounded(model_home, tmp_path):
    with TestClient(create_app(api_settings(model_home, tmp_path, max_request_rows=3))) as c:
        c.headers["X-API-Key"] = READER
        row = {
            "machine": "m",
            "bearing": 1,
            "timestamp": "2004-01-01T00:00:00",
            "features": {"a": 1.0},
        }
        response = c.post("/v1/predict", json={"rows": [row] * 4})
        assert response.status_code == 413 and "over the limit of 3" in _shape(response)["detail"]
        n = len(_columns(c))
        infer = c.post(
            "/v2/models/wearcast-wear/infer",
            json={
                "inputs": [
                    {"name": "input-0", "shape": [4, n], "datatype": "FP64", "data": [0] * n}
                ]
            },
        )
        assert infer.status_code == 413, infer.text


def test_a_request_head_over_the_limit_is_refused_as_it_arrives(model_home, tmp_path):
    """A header of 160 MB, no key needed, was read whole before the app's 431: 28 s of CPU,
    quadratic in its size (a hostile-client trial). A head that never ends is refused once
    past the limit, the connection closed; the server answers on."""
    settings = api_settings(model_home, tmp_path, max_header_bytes=1024)
    with LiveServer(create_app(settings)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20_000)
            try:  # the 431, or a reset if the server closed with bytes of ours unread
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
        # Read whole first, the server would have waited for the head's end: a timeout here.
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
        if answer:
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["error"] == "request headers too large" and "1024" in body["detail"]
        assert httpx.get(f"{server.url}/healthz", timeout=60).status_code == 200
        # Bodies far larger than the limit, one after another on one connection (a message
        # ended within a read once counted that read as the next head's), served as before.
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(3):
                big = client.post(
                    "/v1/predict",
                    content=b'{"rows": [' + b" " * 500_000 + b"]}",
                    headers={"content-type": "application/json", "X-API-Key": READER},
                )
                assert big.status_code == 422, big.text
                assert big.json()["error"] == "invalid request"
            assert client.get("/healthz").status_code == 200


def test_a_request_head_not_whole_in_time_is_refused(model_home, tmp_path):
    """A connection that sent nothing, or a header line every 9.5 s, was held open for ever
    (a hostile-client trial): each gets 408 once its head is late, or is closed."""
    settings = api_settings(model_home, tmp_path, request_head_timeout_s=0.5)
    with LiveServer(create_app(settings)) as server:
        for first in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
                s.sendall(first)
                answer = s.recv(65536)  # held open, this times out: the test fails
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request timeout"
        assert httpx.get(f"{server.url}/healthz", timeout=60).status_code == 200


def test_probes_answer_head_and_a_mixed_case_multipart_type_is_multipart(client, recording):
    """A hostile-client trial: HEAD /healthz (load balancers' probe) was 405, a key with
    spaces about it 401, and an upload typed `Multipart/Form-Data` (media types are
    case-insensitive) was read as raw text."""
    assert client.head("/healthz").status_code == 200
    # Spaces about a header value are not part of it (the key with them was 401).
    assert client.get("/v1/models", headers={"X-API-Key": f" {READER}  "}).status_code == 200
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{recording.name}"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        + recording.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/v1/recordings",
        params={"machine": "mixed-case"},
        content=body,
        headers={"content-type": f"Multipart/Form-Data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text


def test_rows_are_counted_before_they_are_validated_and_faults_listed_in_part(model_home, tmp_path):
    """400,000 empty rows (1.2 MB, under the body limit) were validated before the row limit
    was checked: 28 s of the server's time and a 130 MB list of faults (a hostile client).
    Now 413 before validation; a body under the limit lists its first 20 faults and a count;
    /v2's inputs are bounded likewise."""
    with TestClient(create_app(api_settings(model_home, tmp_path, max_request_rows=3))) as c:
        c.headers["X-API-Key"] = READER
        many = b'{"rows":[' + b",".join([b"{}"] * 5000) + b"]}"
        json_body = {"content-type": "application/json"}
        response = c.post("/v1/predict", content=many, headers=json_body)
        assert response.status_code == 413, response.text[:300]
        assert _shape(response)["detail"] == "5000 rows, over the limit of 3"
        inputs = b'{"inputs":[' + b",".join([b"{}"] * 5000) + b"]}"
        infer = c.post("/v2/models/wearcast-wear/infer", content=inputs, headers=json_body)
        assert infer.status_code == 400 and len(infer.text) < 500, infer.text[:300]
        assert "inputs: List should have at most 16 items" in infer.json()["error"]
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        ten = b'{"rows":[' + b",".join([b"{}"] * 10) + b"]}"
        few = c.post("/v1/predict", content=ten, headers={"content-type": "application/json"})
        faults = _shape(few)["detail"]
        assert few.status_code == 422 and len(faults) == 21, faults  # 4 missing fields a row
        assert faults[-1] == {"msg": "and 20 more faults"}
        assert all(f["msg"] == "Field required" for f in faults[:-1])


def test_probes_keep_answering_while_45_abusive_uploads_run(model_home, tmp_path):
    """Liveness only, with a bound no busy machine reaches (benchmarks/abuse.py measures p99)."""
    settings = api_settings(model_home, tmp_path)
    abusive = b"0.1\t" * 100_000
    stop = threading.Event()
    statuses: list[int] = []

    def abuse(url: str) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": READER}, timeout=120) as http:
            while not stop.is_set():
                r = http.post(
                    "/v1/recordings",
                    params={"machine": "abuse", "timestamp": "2004-01-01"},
                    content=abusive,
                    headers={"content-type": "text/plain"},
                )
                statuses.append(r.status_code)

    with LiveServer(create_app(settings)) as server:
        threads = [threading.Thread(target=abuse, args=(server.url,)) for _ in range(45)]
        for t in threads:
            t.start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as probe:
                while len(statuses) < 45:  # every abuser has been answered at least once
                    assert probe.get("/healthz").status_code == 200
                for _ in range(20):
                    assert probe.get("/healthz").status_code == 200
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert set(statuses) == {422}


def test_the_serving_process_imports_neither_the_search_nor_plotting():
    code = (
        "import sys, wearcast.api.main; "
        "print(sorted(m for m in ('optuna', 'matplotlib', 'wearcast.train') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_prediction_log_that_cannot_be_written_is_a_503_and_not_ready(
    model_home, tmp_path, recording, monkeypatch
):
    """A read-only (or locked) prediction log was a 500 while /readyz said ready (found by an
    operations trial): now a 503 that says to retry, with Retry-After, no driver text (it may
    name paths and hosts), and /readyz not ready meanwhile."""
    settings = api_settings(model_home, tmp_path)
    with TestClient(create_app(settings)) as c:  # makes the log's tables
        c.headers["X-API-Key"] = READER
        assert _post_recording(c, recording.read_bytes()).status_code == 200
    db = tmp_path / "predictions.db"
    read_only = api_settings(
        model_home,
        tmp_path,
        prediction_db_url=f"sqlite:///file:{db}?mode=ro&uri=true",
        prediction_detail_keep_days=0,  # no compaction at start: a request meets the failure
    )
    # As `wearcast serve --workers 2` runs its workers: a folder of their own.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with TestClient(create_app(read_only)) as c:
        c.headers["X-API-Key"] = READER
        assert c.get("/readyz").status_code == 200
        refused = _post_recording(c, recording.read_bytes(), timestamp="2004-01-02T00:00:00")
        assert refused.status_code == 503, refused.text
        body = _shape(refused)
        assert "read-only" in body["detail"] and "retry" in body["detail"]
        assert str(tmp_path) not in refused.text and refused.headers["Retry-After"] == "30"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "prediction log" in ready.json()["detail"]
        # Another worker process of the same server, which met no failure itself, says so too
        # (each kept its own: /readyz flipped between ready and not with --workers 2).
        with TestClient(create_app(read_only)) as other:
            ready = other.get("/readyz")
            assert ready.status_code == 503 and "read-only" in ready.json()["detail"]
    # Alone, with retention on: its first compaction at start meets the failure and says so
    # (it logged a traceback while /readyz said ready).
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    compacting = read_only.model_copy(update={"prediction_detail_keep_days": 90.0})
    with TestClient(create_app(compacting)) as c:
        for _ in range(400):  # the compaction runs beside start-up: until it has met it
            if (ready := c.get("/readyz")).status_code == 503:
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and "read-only" in ready.json()["detail"]
