"""The API: answers, auth rules, bad input, hot swap, metrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from wearcast import registry
from wearcast.api.main import create_app
from wearcast.api.model_store import ModelStore
from wearcast.cli import app
from wearcast.config import Settings
from wearcast.dataset import featurize
from wearcast.model import ForeignRig
from wearcast.predict import score_path
from wearcast.retrain import train_challenger

from .conftest import ADMIN, READER, LiveServer, api_settings, bearing_rows_with_gain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(model_home) -> list[Path]:
    return sorted((model_home[1] / "sim_run_01").glob("2004.*"))


@pytest.fixture(scope="module")
def batch(model_home) -> dict[tuple[int, str], dict]:
    """`wearcast predict` on sim_run_01 with version 1, by (bearing, timestamp)."""
    settings, data = model_home
    model, version = registry.load_model(settings, 1)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    results, bad = score_path(data / "sim_run_01", model, version, settings, prognostics)
    assert not bad
    return {(r["bearing"], r["timestamp"]): r for r in results}


def _upload(client, path: Path, machine: str = "press-1", **params):
    return client.post(
        "/v1/recordings",
        params={"machine": machine, "filename": path.name, **params},
        content=path.read_bytes(),
        headers={"content-type": "text/plain"},
    )


def test_a_raw_recording_gets_every_bearing_scored_and_logged(client, recordings, batch):
    for path in recordings[:5]:
        response = _upload(client, path)
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1 and body["model_name"] == "wearcast-wear"
    assert [b["bearing"] for b in body["bearings"]] == [1, 2, 3, 4]
    b1 = body["bearings"][0]
    expected = batch[(1, body["timestamp"])]
    # The fifth recording of a healthy start: as batch scoring answers it, and not alarmed.
    assert b1["wear"] == pytest.approx(expected["wear"], rel=1e-6)
    assert b1["alarm_state"] == expected["alarm_state"] == "ok"
    assert b1["baseline_recordings"] == 5
    assert b1["rul_method"]
    history = client.get("/v1/bearings/press-1:1").json()
    assert len(history["predictions"]) == 5
    assert history["rul_method"] == b1["rul_method"]  # the latest answer's own method
    assert [p["timestamp"] for p in history["predictions"]] == sorted(
        p["timestamp"] for p in history["predictions"]
    )


def test_multipart_upload_takes_the_timestamp_from_the_file_name(client, recordings):
    path = recordings[0]
    response = client.post(
        "/v1/recordings", params={"machine": "m2"}, files={"file": (path.name, path.read_bytes())}
    )
    assert response.status_code == 200, response.text
    assert response.json()["timestamp"] == "2004-01-05T09:00:00"


def test_feature_rows_and_open_inference_protocol(client, recordings):
    features = {f"f{i}": 0.0 for i in range(3)}
    response = client.post(
        "/v1/predict",
        json={
            "rows": [
                {
                    "machine": "x",
                    "bearing": 1,
                    "timestamp": "2004-01-01T00:00:00",
                    "features": features,
                }
            ]
        },
    )
    assert response.status_code == 422 and "missing" in response.json()["detail"]
    meta = client.get("/v2/models/wearcast-wear").json()
    columns = meta["parameters"]["columns"]
    n = len(columns)
    half = n // 2
    row = [1.0] * n
    rows = {
        "rows": [
            {
                "machine": "x",
                "bearing": 2,
                "timestamp": "2004-01-01T00:00:00",
                "features": dict(zip(columns[:half], row[:half], strict=True)),
                "baseline": dict(zip(columns[:half], row[:half], strict=True)),
            }
        ]
    }
    response = client.post("/v1/predict", json=rows)
    assert response.status_code == 200, response.text
    assert response.json()[0]["bearings"][0]["bearing_id"] == "x:2"
    # Half a baseline is a mistake, said, not filled in with the fleet's.
    rows["rows"][0] |= {"baseline": {"rms": 1.0}, "timestamp": "2004-01-01T00:10:00"}
    response = client.post("/v1/predict", json=rows)
    assert response.status_code == 422, response.text
    assert "a baseline given must have every feature" in response.json()["detail"]
    infer = client.post(
        "/v2/models/wearcast-wear/infer",
        json={
            "inputs": [{"name": "input-0", "shape": [2, n], "datatype": "FP64", "data": [row, row]}]
        },
    )
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["shape"] == [2]
    bare = client.post(  # no content type, flat data: as Triton's client sends it
        "/v2/models/wearcast-wear/infer",
        content=json.dumps(
            {"inputs": [{"name": "input-0", "shape": [2, n], "datatype": "FP64", "data": row * 2}]}
        ).encode(),
    )
    assert bare.status_code == 200 and "content-type" not in bare.request.headers
    assert bare.json()["outputs"] == infer.json()["outputs"]
    bad = client.post(
        "/v2/models/wearcast-wear/infer",
        json={
            "inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]
        },
    )
    assert bad.status_code == 422 and f"[rows, {n}]" in bad.json()["error"]
    assert client.get("/v2/models/other").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            lambda t: "\n".join("\t".join(line.split("\t")[:3]) for line in t.splitlines()),
            422,
            "3 channels cannot be split",
        ),
        (lambda t: "\n".join(t.splitlines()[:1000]), 422, "1000 rows, expected 20480"),
        (lambda t: t.replace("\n", "\nabc\t", 1), 422, "values, expected 4"),
        (lambda t: "0.1\tx\t0.2\t0.3\n" + t, 422, "line 1, column 2: 'x' is not a number"),
        (lambda t: t.replace("\n", "\nNaN\t0\t0\t0\n", 1), 422, "NaN is not a finite number"),
        (
            lambda t: "\n".join(
                "0.0\t" + "\t".join(line.split("\t")[1:]) for line in t.splitlines()
            ),
            422,
            "channel 1 is dead",
        ),
        (lambda t: t * 16, 413, "over the limit"),
        (lambda t: "", 422, "empty file"),
    ],
    ids=["channels", "rows", "columns", "text", "nan", "dead", "size", "empty"],
)
def test_bad_recordings_get_a_4xx_that_says_what(client, recordings, body, status, words):
    text = recordings[0].read_text()
    response = client.post(
        "/v1/recordings",
        params={"machine": "m", "filename": recordings[0].name},
        content=body(text).encode(),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == status, response.text
    assert words in str(response.json()["detail"])
    assert "Traceback" not in response.text
    if status == 422:  # which of the many files a plant sends
        assert response.json()["detail"].startswith(recordings[0].name)


def test_unknown_and_malformed_bearings(client):
    assert client.get("/v1/bearings/nowhere:9").status_code == 404
    response = client.get("/v1/bearings/no-colon")
    assert response.status_code == 422 and "MACHINE:BEARING" in response.json()["detail"]


def test_malformed_json_and_infinite_numbers_are_4xx(client):
    response = client.post(
        "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    row = (
        b'{"rows": [{"machine": "m", "bearing": 1, "timestamp": "2004-01-01T00:00:00", '
        b'"features": {"rms": 1e999}}]}'
    )
    response = client.post("/v1/predict", content=row, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in str(response.json()["detail"])


def test_json_the_fast_parser_refuses_is_read_as_before(client, model_home):
    """Feature rows are parsed by pydantic's JSON parser; what it refuses and the standard
    library reads (a byte-order mark, a lone surrogate) is answered as before, not a 400."""
    rows = bearing_rows_with_gain(model_home, 1.0)[:2]
    plain = json.dumps({"rows": rows[:1]}).encode()
    with_bom = b"\xef\xbb\xbf" + json.dumps({"rows": rows[1:]}).encode()
    for body in (plain, with_bom):
        response = client.post(
            "/v1/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text
    history = client.get(f"/v1/bearings/{rows[0]['machine']}:1").json()["predictions"]
    assert len(history) == 2  # both rows scored and logged
    rows[0]["machine"] = "m\ud800"  # json.dumps escapes it: the fast parser refuses that
    response = client.post(
        "/v1/predict",
        content=json.dumps({"rows": rows[:1]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "machine" in response.text
    rows[0]["machine"] = "m-ok"
    rows[0]["features"]["rms\ud800"] = 1.0  # a feature name no encoder can store: was a 500
    response = client.post(
        "/v1/predict",
        content=json.dumps({"rows": rows[:1]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "lone surrogate" in response.text


def test_a_machine_keeps_its_recording_layout(client, recordings, model_home, tmp_path):
    """A bearing's baseline is of its machine's first layout: a recording with another channel
    count is refused (409), by every worker on the log, and the machine's own still scored."""
    four = recordings[0].read_text()
    eight = "".join(line + "\t" + line + "\n" for line in four.splitlines())

    def post(c, text: str, name: str):
        return c.post(
            "/v1/recordings",
            params={"machine": "layout", "filename": name},
            content=text.encode(),
            headers={"content-type": "text/plain"},
        )

    assert post(client, four, recordings[0].name).status_code == 200
    refused = post(client, eight, recordings[1].name)
    assert refused.status_code == 409, refused.text
    assert "4-channel ims" in refused.json()["detail"]
    with TestClient(create_app(api_settings(model_home, tmp_path))) as other_worker:
        other_worker.headers["X-API-Key"] = READER
        assert post(other_worker, eight, recordings[2].name).status_code == 409
    assert post(client, recordings[1].read_text(), recordings[1].name).status_code == 200
    # A refused first recording claims nothing: the first one answered sets the layout.
    row = bearing_rows_with_gain(model_home, 1.0)[0]
    stamp = datetime.strptime(recordings[3].name, "%Y.%m.%d.%H.%M.%S").isoformat()
    answered = client.post(
        "/v1/predict", json={"rows": [row | {"machine": "pre", "timestamp": stamp}]}
    )
    assert answered.status_code == 200
    first = client.post(
        "/v1/recordings",
        params={"machine": "pre", "filename": recordings[3].name},
        content=eight.encode(),
        headers={"content-type": "text/plain"},
    )
    assert first.status_code == 409 and "different" in first.text  # not its answered content
    later = client.post(
        "/v1/recordings",
        params={"machine": "pre", "filename": recordings[4].name},
        content=recordings[4].read_bytes(),
        headers={"content-type": "text/plain"},
    )
    assert later.status_code == 200, later.text


def test_auth_rules(model_home, tmp_path):
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"X-API-Key": READER}).status_code == 200
        denied = c.post("/v1/admin/reload", headers={"X-API-Key": READER})
        assert denied.status_code == 403 and "admin" in denied.json()["detail"]
        assert c.post("/v1/admin/reload", headers={"X-API-Key": ADMIN}).status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
            assert c.get(probe).status_code == 200, probe


def test_the_api_description_pages_need_no_key_and_no_internet(model_home, tmp_path):
    """/docs and /redoc load their scripts and styles from the API itself (they came from a
    CDN: a blank page on a plant network without internet), without a key as the pages."""
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        for page in ("/docs", "/redoc"):
            html = c.get(page)
            assert html.status_code == 200, page
            assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert any(a.endswith(".js") for a in assets), (page, assets)
            for asset in assets:
                assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
                served = c.get(asset)
                assert served.status_code == 200, (page, asset)
                assert len(served.content) > 1000, (page, asset)


def test_refuses_to_start_outside_development_without_keys(model_home, tmp_path):
    with pytest.raises(RuntimeError, match="no API keys"):
        create_app(api_settings(model_home, tmp_path, env="production", api_keys=[]))
    with pytest.raises(ValueError, match="ROLE:SHA256HEX"):
        create_app(api_settings(model_home, tmp_path, api_keys=["reader:plaintext"]))


def test_models_and_metrics(client, recordings):
    models = client.get("/v1/models").json()
    assert models["loaded"]["version"] == 1 and "champion" in models["loaded"]["aliases"]
    assert [v["version"] for v in models["versions"]] == [1, 2]
    # The served version's gate decision, as its entry among the versions says (it was null).
    assert models["loaded"]["gate_decision"] == models["versions"][0]["gate_decision"]
    assert models["loaded"]["gate_decision"] == "promoted"
    # The features a /v1/predict row must carry: exactly these (no baseline: the log keeps it).
    features = models["loaded"]["features"]
    assert features and not any(f.startswith("baseline") for f in features)
    row = {"machine": "by-name", "bearing": 1, "timestamp": "2004-02-12T10:32:39"}
    answered = client.post(
        "/v1/predict", json={"rows": [{**row, "features": dict.fromkeys(features, 0.1)}]}
    )
    assert answered.status_code == 200, answered.text
    short = dict.fromkeys(features[1:], 0.1)
    refused = client.post("/v1/predict", json={"rows": [{**row, "features": short}]})
    assert refused.status_code == 422 and features[0] in refused.text
    _upload(client, recordings[0], machine="metrics")
    text = client.get("/metrics").text
    assert 'wearcast_requests_total{method="POST",route="/v1/recordings",status="200"}' in text
    assert "wearcast_request_seconds_bucket" in text and "wearcast_model_version 1.0" in text
    assert 'wearcast_predictions_total{alarm_state="ok"}' in text
    # Every swap counts, the start-up load and the poll's too: only admin reloads did, so the
    # dashboard's "reloads by outcome" missed what a two-worker server's polls did.
    assert 'wearcast_model_reloads_total{outcome="swapped"} 1.0' in text
    client.app.state.store.sync()  # one registry poll: the champion is served already
    assert 'wearcast_model_reloads_total{outcome="swapped"} 1.0' in client.get("/metrics").text


def test_champion_swap_under_load_loses_no_request(model_home, tmp_path, recordings):
    settings = api_settings(model_home, tmp_path)
    client = registry.connect(settings)
    payload = recordings[3].read_bytes()
    seen: list[list[int]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop = threading.Event()

    def hammer(i: int, url: str) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": READER}, timeout=30) as http:
            k = 0
            while not stop.is_set():
                k += 1
                r = http.post(
                    "/v1/recordings",
                    params={
                        "machine": f"load{i}",
                        "timestamp": f"2004-01-01T00:{k // 60 % 60:02d}:{k % 60:02d}",
                    },
                    content=payload,
                    headers={"content-type": "text/plain"},
                )
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                else:
                    seen[i].append(r.json()["model_version"])

    try:
        with LiveServer(create_app(settings)) as server:
            threads = [threading.Thread(target=hammer, args=(i, server.url)) for i in range(4)]
            for t in threads:
                t.start()
            while min(len(s) for s in seen) < 5:
                threading.Event().wait(0.05)
            registry.promote(client, settings, 2, "swap test")
            swap = httpx.post(
                f"{server.url}/v1/admin/reload", headers={"X-API-Key": ADMIN}, timeout=60
            )
            assert swap.status_code == 200 and swap.json()["version"] == 2
            count = [len(s) for s in seen]
            while any(len(s) < c + 5 for s, c in zip(seen, count, strict=True)):
                threading.Event().wait(0.05)
            stop.set()
            for t in threads:
                t.join()
    finally:
        stop.set()
        registry.promote(client, settings, 1, "restore the fixture's champion")
    assert failures == []
    for versions in seen:
        assert versions[0] == 1 and versions[-1] == 2
        assert np.all(np.diff(versions) >= 0), "an answer went back to the old version"


def test_poller_swaps_in_a_new_champion_by_itself(model_home, tmp_path):
    settings = api_settings(model_home, tmp_path, reload_interval_s=0.2)
    client = registry.connect(settings)
    try:
        with TestClient(create_app(settings)) as c:
            assert c.get("/readyz").json()["version"] == 1
            registry.promote(client, settings, 2, "poller test")
            for _ in range(100):
                if c.get("/readyz").json()["version"] == 2:
                    break
                threading.Event().wait(0.1)
            assert c.get("/readyz").json()["version"] == 2
    finally:
        registry.promote(client, settings, 1, "restore the fixture's champion")


def test_probes_answer_while_the_registry_does_not(model_home, tmp_path, monkeypatch):
    """A registry that hangs (MLflow down, its client retrying) holds the start for
    startup_load_wait_s only: then the probes answer, and the model loads when it answers."""
    answers = threading.Event()
    real_sync = ModelStore.sync

    def hanging_sync(store):
        answers.wait()
        real_sync(store)

    monkeypatch.setattr(ModelStore, "sync", hanging_sync)
    settings = api_settings(model_home, tmp_path, startup_load_wait_s=0.1)
    started: list[TestClient] = []
    client = TestClient(create_app(settings), headers={"X-API-Key": READER})
    opener = threading.Thread(target=lambda: started.append(client.__enter__()))
    opener.start()
    opener.join(timeout=120)  # only against a hang; the start itself takes about 0.1 s
    try:
        assert started, "the API did not start while the registry hung"
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        models = client.get("/v1/models")  # answers at once, without waiting on the registry
        assert models.status_code == 503 and "first read is under way" in models.json()["detail"]
        answers.set()
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.1)
        assert client.get("/readyz").json()["version"] == 1
    finally:
        answers.set()
        opener.join()
        if started:
            client.__exit__(None, None, None)


def test_an_unreachable_registry_is_named_in_every_503(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = Settings(
        home=tmp_path / "home",
        tracking_uri=f"http://127.0.0.1:{closed}",
        reload_interval_s=0,
        startup_load_wait_s=300,  # the bounded retries end well before: a guard only
    )
    with TestClient(create_app(settings)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"].startswith("the model registry did not answer")
        for response in (c.get("/v1/models"), c.post("/v1/predict", json={"rows": []})):
            assert response.status_code == 503, response.text
            assert "the model registry did not answer" in response.json()["detail"]


def test_not_ready_without_a_model(tmp_path):
    settings = Settings(home=tmp_path / "empty", reload_interval_s=0)
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        response = c.post(
            "/v1/predict",
            json={
                "rows": [
                    {
                        "machine": "a",
                        "bearing": 1,
                        "timestamp": "2004-01-01T00:00:00",
                        "features": {},
                    }
                ]
            },
        )
        assert response.status_code == 503 and "no model" in response.json()["detail"]


def test_a_clipped_recording_is_scored_with_a_warning_and_kept_out_of_training(
    client, model_home, tmp_path
):
    """A sensor saturated by a failing bearing (PRONOSTIA Bearing1_1's, two minutes before
    its end) was quarantined by `wearcast predict` and refused by the API: no answer when it
    mattered most (found by a real-data trial). Both score it and say it is clipped; training
    still leaves it out (clipping bends the spectrum)."""
    settings, data = model_home
    run = tmp_path / "data" / "sim_run_01"
    shutil.copytree(data / "sim_run_01", run)
    last = sorted(run.glob("2004.*"))[-1]
    samples = np.loadtxt(last)
    limit = 0.3 * np.abs(samples[:, 0]).max()
    samples[:, 0] = np.clip(samples[:, 0], -limit, limit)
    last.write_text("\n".join("\t".join(f"{v:.3f}" for v in row) for row in samples) + "\n")
    model, version = registry.load_model(settings, 1)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    results, bad = score_path(run, model, version, settings, prognostics)
    assert not bad
    flagged = [r for r in results if "warning" in r]
    assert sorted(r["bearing"] for r in flagged) == [1, 2, 3, 4]
    assert {r["file"] for r in flagged} == {last.name}
    assert all("channel 1 is clipped" in r["warning"] for r in flagged)
    home = {"WEARCAST_HOME": str(settings.home)}
    shown = CliRunner().invoke(app, ["predict", str(run)], env=home)
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.stderr.split())
    assert f"warning: {last.name}: line" in said and "channel 1 is clipped" in said
    response = _upload(client, last, machine="saturated")
    assert response.status_code == 200, response.text
    assert len(response.json()["bearings"]) == 4
    assert ["channel 1 is clipped" in w for w in response.json()["warnings"]] == [True]
    featurize(tmp_path / "data", tmp_path / "table", settings)
    quarantined = json.loads((tmp_path / "table" / "quarantine.json").read_text())
    assert [q["file"] for q in quarantined] == [f"sim_run_01/{last.name}"]
    assert "clipped" in quarantined[0]["reason"]


def test_served_answers_match_batch_scoring(client, batch, recordings):
    """Served one recording at a time, every bearing gets the same wear, health indicator,
    alarm states, remaining life and episodes as `wearcast predict` on the folder."""
    served = []
    for path in recordings:
        response = _upload(client, path, machine="rig-9")
        assert response.status_code == 200, response.text
        served += response.json()["bearings"]
    stamps = sorted({t for _, t in batch})
    assert len(served) == len(batch) == 4 * len(stamps)
    for i, answer in enumerate(served):
        expected = batch[(answer["bearing"], stamps[i // 4])]
        # The features are computed and rounded by one definition on both paths; what remains
        # is the model's arithmetic on one row or many (float32 features once gave 4.5e-7).
        for field in ("wear", "health", "rul_h", "rul_low_h", "rul_high_h"):
            assert answer[field] == pytest.approx(expected[field], rel=1e-9), (field, i)
        assert answer["rul_method"] == expected["rul_method"]
        assert answer["baseline_recordings"] == expected["baseline_recordings"]
        assert answer["alarm_state"] == expected["alarm_state"]
        assert answer["rul_low_h"] <= answer["rul_h"] <= answer["rul_high_h"]
    alarmed = {a["bearing"] for a in served if a["alarm_state"] == "alarm"}
    assert alarmed, "the simulated failure was never alarmed"
    bearing = min(alarmed)
    history = client.get(f"/v1/bearings/rig-9:{bearing}").json()
    # Batch scoring puts a bearing's episodes on its latest answer.
    expected = batch[(bearing, stamps[-1])]["episodes"]
    fields = ("level", "start", "raised", "end", "peak")
    assert [{f: e[f] for f in fields} for e in history["episodes"]] == [
        {f: e[f] for f in fields} for e in expected
    ]
    assert history["health_threshold"] == pytest.approx(served[0]["health_threshold"])
    assert [p["alarm_state"] for p in history["predictions"]] == [
        a["alarm_state"] for a in served if a["bearing"] == bearing
    ]
    # Paged back 1 and 3 at a time: each page reports the episodes it touches, whole.
    whole = [{f: e[f] for f in fields} for e in expected]
    for limit in (1, 3):
        seen, before = [], None
        while True:
            params = {"limit": limit} | ({"before": before} if before else {})
            page = client.get(f"/v1/bearings/rig-9:{bearing}", params=params).json()
            times = [p["timestamp"] for p in page["predictions"]]
            touched = [
                e
                for e in whole
                if e["start"] <= times[-1] and (e["end"] is None or e["end"] >= times[0])
            ]
            assert [{f: e[f] for f in fields} for e in page["episodes"]] == touched
            seen += touched
            if (before := page["next_before"]) is None:
                break
        assert all(e in seen for e in whole)
    # A page with nothing in it (after the last prediction) is empty, not an error.
    empty = client.get(f"/v1/bearings/rig-9:{bearing}", params={"since": "2199-01-01T00:00:00"})
    assert empty.status_code == 200, empty.text
    assert empty.json()["predictions"] == [] and empty.json()["episodes"] == []


def test_a_file_of_a_run_is_scored_from_the_recordings_before_it(model_home, batch):
    """`wearcast predict FILE` on a run's last recording answers as the run scored whole does
    (a user trial: scored alone, a failed bearing's last snapshot read as a new bearing's
    first recording, wear 0 and `ok`); its answers only, its bearing's baseline made."""
    settings, data = model_home
    path = sorted((data / "sim_run_01").glob("2004.*"))[-1]
    model, version = registry.load_model(settings, 1)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    answers, bad = score_path(path, model, version, settings, prognostics)
    assert not bad and [(r["file"], r["bearing"]) for r in answers] == [
        (path.name, b) for b in (1, 2, 3, 4)
    ]
    for answer in answers:
        whole = batch[(answer["bearing"], answer["timestamp"])]
        assert answer["baseline_recordings"] == settings.baseline_recordings
        for field in ("wear", "health", "rul_h", "rul_low_h", "rul_high_h"):
            assert answer[field] == pytest.approx(whole[field], rel=1e-9), field
        assert answer["alarm_state"] == whole["alarm_state"]
    assert any(r["alarm_state"] == "alarm" for r in answers)  # the run's failing bearing


@pytest.mark.real_data
def test_a_lone_recording_is_scored_by_one_rule_and_a_healthy_real_one_is_far_from_alarm(
    client, model_home, real_test1_dir
):
    """A recording without history gets the same answer from `wearcast predict FILE` and from
    the API (a machine it never saw); the first recording of IMS test 1, healthy, stays far
    under the alarm threshold (the fleet baseline once put it at 0.29-0.30 against 0.3)."""
    settings, _ = model_home
    path = sorted(real_test1_dir.glob("2003.*"))[0]
    model, version = registry.load_model(settings, 1)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    alone, bad = score_path(path, model, version, settings, prognostics)
    assert not bad and [r["bearing"] for r in alone] == [1, 2, 3, 4]
    response = _upload(client, path, machine="ims-lone")
    assert response.status_code == 200, response.text
    served = response.json()["bearings"]
    for answer, expected in zip(served, alone, strict=True):
        for field in ("wear", "health", "rul_h", "rul_low_h", "rul_high_h"):
            assert answer[field] == pytest.approx(expected[field], rel=1e-9), field
        assert answer["alarm_state"] == expected["alarm_state"] == "ok"
    worst = max(r["wear"] for r in alone)
    assert worst < settings.alarm_threshold / 2, alone


PRONOSTIA_START = datetime(2011, 4, 7, 9, 10, 39)  # Bearing3_1, snapshots 10 s apart


def _pronostia_run(source: Path, run: Path, names: list[str], first: int, **meta) -> Path:
    """Bearing3_1's snapshots ``names`` (from number ``first`` on) as a run of their own."""
    run.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / name, run / name)
    start = PRONOSTIA_START + timedelta(seconds=10 * first)
    info = {"name": run.name, "format": "pronostia", "n_bearings": 1, "shaft_rpm": 1500}
    (run / "run.json").write_text(json.dumps(info | {"start": start.isoformat()} | meta))
    return run


@pytest.fixture(scope="module")
def pronostia_home(bearing3_1, tmp_path_factory) -> tuple[Settings, Path]:
    """A champion trained on real PRONOSTIA recordings: Bearing3_1's life split in two runs
    that each end in a failure (a fixed configuration, no search)."""
    root = tmp_path_factory.mktemp("femto-api")
    settings = Settings(home=root / "home", workers=2)
    names = sorted(p.name for p in bearing3_1.glob("acc_*.csv"))
    half = len(names) // 2
    for i, (first, part) in enumerate(((0, names[:half]), (half, names[half:]))):
        end = PRONOSTIA_START + timedelta(seconds=10 * (first + len(part) - 1))
        _pronostia_run(
            bearing3_1,
            root / "data" / f"half{i}",
            part,
            first,
            end=end.isoformat(),
            failures={"1": "unknown"},
        )
    featurize(root / "data", root / "table", settings)
    train_challenger(settings, root / "table", config={"family": "ridge", "features": "both"})
    registry.promote(registry.connect(settings), settings, 1, "test fixture")
    return settings, root


@pytest.mark.real_data
def test_pronostia_snapshots_are_served_as_batch_scoring_answers_them(
    pronostia_home, bearing3_1, real_test1_dir, tmp_path
):
    """Real PRONOSTIA snapshots uploaded one at a time with format=pronostia and the bench's
    speed get the answers `wearcast predict` gives the same folder with its run.json: the same
    rig (25.6 kHz, 2560 samples, the bearing's geometry, 1500 rpm), one bearing."""
    settings, _ = pronostia_home
    names = [f"acc_{i:05d}.csv" for i in range(1, 26)]
    run = _pronostia_run(bearing3_1, tmp_path / "Bearing3_1", names, 0)
    model, version = registry.load_model(settings, 1)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    batch, bad = score_path(run, model, version, settings, prognostics)
    assert not bad and len(batch) == len(names)
    app = create_app(api_settings(pronostia_home, tmp_path, serve_model_version=1))
    with TestClient(app, headers={"X-API-Key": READER}) as client:
        for i, name in enumerate(names):
            when = PRONOSTIA_START + timedelta(seconds=10 * i)
            response = _upload(
                client,
                run / name,
                machine="femto-3-1",
                format="pronostia",
                shaft_rpm=1500,
                timestamp=when.isoformat(),
            )
            assert response.status_code == 200, response.text
            (answer,) = response.json()["bearings"]
            assert answer["bearing"] == 1
            assert response.json()["timestamp"] == batch[i]["timestamp"]
            for field in ("wear", "health", "rul_h", "rul_low_h", "rul_high_h"):
                assert answer[field] == pytest.approx(batch[i][field], rel=1e-9), (field, i)
        # A real IMS recording (20 kHz: no bands above 10 kHz) lacks what this model needs:
        # said as the other direction says it (it was "invalid feature rows").
        ims = _upload(client, sorted(real_test1_dir.glob("2003.*"))[0], machine="ims-1")
        assert ims.status_code == 422
        assert all(w in ims.json()["detail"] for w in ("lacks", "another rig", "band_1"))


@pytest.mark.real_data
def test_recordings_of_another_rig_are_refused_not_scored(client, model_home, bearing3_1, tmp_path):
    """The IMS-trained model and PRONOSTIA snapshots (other sampling rate, other bands):
    refused with the reason by the API and by batch scoring, never answered."""
    settings, _ = model_home
    run = _pronostia_run(bearing3_1, tmp_path / "Bearing3_1", ["acc_00001.csv"], 0)
    # Another rig's recording, and a format wearcast does not know: 422 that say which.
    for fmt, words in (("pronostia", ("another rig", "band_10000")), ("cwru", ("pronostia",))):
        response = _upload(
            client,
            run / "acc_00001.csv",
            machine=f"femto-{fmt}",
            format=fmt,
            timestamp=PRONOSTIA_START.isoformat(),
        )
        assert response.status_code == 422
        assert all(w in response.json()["detail"] for w in words), response.text
    model, version = registry.load_model(settings, 1)
    with pytest.raises(ForeignRig, match="another rig"):
        score_path(run, model, version, settings)
