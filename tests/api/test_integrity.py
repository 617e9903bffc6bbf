"""What the API logs and answers does not depend on arrival order, retries or the number of
workers (issue 12); a broken version is never promoted."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from wearcast import registry
from wearcast.api.main import create_app
from wearcast.baseline import add_baselines
from wearcast.config import Settings
from wearcast.model import build_pipeline
from wearcast.rig import parse_timestamp

from .conftest import ADMIN, READER, api_settings, bearing_rows_with_gain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(model_home) -> list[Path]:
    return sorted((model_home[1] / "sim_run_01").glob("2004.*"))


def _upload(client, path: Path, machine: str, content: bytes | None = None):
    return client.post(
        "/v1/recordings",
        params={"machine": machine, "filename": path.name},
        content=path.read_bytes() if content is None else content,
        headers={"content-type": "text/plain"},
    )


def test_two_workers_agree_on_the_first_recordings_by_time(model_home, tmp_path, recordings):
    """40 recordings of one machine, sent 16 at a time, latest first, to two apps sharing one
    log: each bearing keeps exactly its first 20 recordings by time as its baseline."""
    settings = api_settings(model_home, tmp_path)
    files = recordings[:40]
    with (
        TestClient(create_app(settings)) as one,
        TestClient(create_app(settings)) as two,
        ThreadPoolExecutor(16) as pool,
    ):
        for c in (one, two):
            c.headers["X-API-Key"] = READER
        jobs = [
            pool.submit(_upload, (one, two)[i % 2], path, "rig")
            for i, path in enumerate(reversed(files))
        ]
        assert all(job.result().status_code == 200 for job in jobs)
        engine = create_engine(settings.resolved_prediction_db_url)
        with engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT bearing, recorded_at FROM baseline_samples "
                    "WHERE machine = 'rig' ORDER BY bearing, recorded_at"
                )
            ).all()
        engine.dispose()
        first_20 = sorted(parse_timestamp(p.name) for p in files)[:20]
        for bearing in range(1, 5):
            times = [pd.Timestamp(t).to_pydatetime() for b, t in stored if b == bearing]
            assert times == first_20, bearing
        # Both workers now answer a later recording of the machine with the same baseline.
        later = [_upload(c, recordings[40 + i], "rig").json() for i, c in enumerate((one, two))]
        assert [b["baseline_recordings"] for b in later[0]["bearings"]] == [20] * 4
        assert [b["baseline_recordings"] for b in later[1]["bearings"]] == [20] * 4


def test_the_api_baseline_is_the_training_baseline(model_home, tmp_path, recordings):
    """Features sent as rows out of time order get the baseline training would compute."""
    settings = api_settings(model_home, tmp_path, baseline_recordings=3)
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READER
        columns = c.get("/v2/models/wearcast-wear").json()["parameters"]["columns"]
        features = [f for f in columns if not f.startswith("baseline_")]
        rng = np.random.default_rng(0)
        table = pd.DataFrame(rng.uniform(0.5, 2.0, (6, len(features))), columns=features)
        table["timestamp"] = pd.date_range("2004-01-01", periods=6, freq="10min")
        table["run"], table["bearing"] = "twin", 1
        expected = add_baselines(table, features, 3)
        order = [4, 1, 5, 0, 3, 2]
        rows = [
            {
                "machine": "twin",
                "bearing": 1,
                "timestamp": table["timestamp"][i].isoformat(),
                "features": table.loc[i, features].to_dict(),
            }
            for i in order
        ]
        for row in rows:
            assert c.post("/v1/predict", json={"rows": [row]}).status_code == 200
        probe = {**rows[0], "timestamp": "2004-02-01T00:00:00"}
        answer = c.post("/v1/predict", json={"rows": [probe]}).json()[0]["bearings"][0]
        assert answer["baseline_recordings"] == 3
        baseline = c.app.state.scorer._baselines[("twin", 1)]
        assert list(baseline.times) == list(table["timestamp"][:3])
        assert [baseline.medians[f] for f in features] == pytest.approx(
            expected.loc[0, ["baseline_" + f for f in features]].to_list()
        )


def test_a_retry_gets_the_same_answer_and_is_logged_once(model_home, tmp_path, recordings):
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        first = _upload(c, recordings[0], "retry")
        again = _upload(c, recordings[0], "retry")
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert len(c.get("/v1/bearings/retry:1").json()["predictions"]) == 1
        # Different content at the same machine and time is a conflict, not a second answer.
        other = _upload(c, recordings[0], "retry", content=recordings[1].read_bytes())
        assert other.status_code == 409, other.text
        assert "already answered" in other.json()["detail"]
        assert len(c.get("/v1/bearings/retry:1").json()["predictions"]) == 1
        # Rows already answered and new rows in one request: each gets its own answer.
        columns = c.get("/v2/models/wearcast-wear").json()["parameters"]["columns"]
        features = {f: 1.0 for f in columns if not f.startswith("baseline_")}
        rows = [
            {"machine": "mix", "bearing": 1, "timestamp": f"2004-01-0{d}T00:00:00", "features": f}
            for d, f in ((1, features), (2, {k: 2.0 for k in features}))
        ]
        old = c.post("/v1/predict", json={"rows": rows[:1]}).json()[0]
        both = c.post("/v1/predict", json={"rows": rows})
        assert both.status_code == 200, both.text
        assert both.json()[0]["bearings"] == old["bearings"]
        assert len(c.get("/v1/bearings/mix:1").json()["predictions"]) == 2


def test_a_retry_that_lost_the_race_answers_the_logged_request_id(
    model_home, tmp_path, recordings, monkeypatch
):
    """14 identical uploads at once: one answer carried a request id the log does not hold (a
    hostile-client trial). A retry that read the log before the first one was committed, and
    so scored afresh, answers the logged answers and the logged request id."""
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        first = _upload(c, recordings[0], "race").json()
        log = c.app.state.log
        read = log.scoring_history

        def before_the_first_commit(*args, **kwargs):
            return dataclasses.replace(read(*args, **kwargs), logged={})

        monkeypatch.setattr(log, "scoring_history", before_the_first_commit)
        late = _upload(c, recordings[0], "race")
        assert late.status_code == 200, late.text
        assert late.json()["request_id"] == first["request_id"]
        assert late.json()["bearings"] == first["bearings"]
        assert len(c.get("/v1/bearings/race:1").json()["predictions"]) == 1


def test_a_retry_after_a_promotion_says_which_version_answered(model_home, tmp_path, recordings):
    """Sent to version 1, retried once version 2 is served: the same answer, and the version
    that made it (the retry said version 2 over version 1's wear)."""
    with (
        TestClient(create_app(api_settings(model_home, tmp_path))) as before,
        TestClient(create_app(api_settings(model_home, tmp_path, serve_model_version=2))) as after,
    ):
        for c in (before, after):
            c.headers["X-API-Key"] = READER
        first = _upload(before, recordings[0], "promoted").json()
        again = _upload(after, recordings[0], "promoted").json()
        fresh = _upload(after, recordings[1], "promoted").json()
    assert first["model_version"] == 1 and again == first
    assert {b["model_version"] for b in again["bearings"]} == {1}
    assert fresh["model_version"] == 2 and {b["model_version"] for b in fresh["bearings"]} == {2}


def test_answers_agree_with_the_bearing_page(model_home, tmp_path, recordings):
    """Alarm state and remaining life of the last answer are those of GET /v1/bearings, with
    an alarm threshold low enough that some answers do alarm."""
    settings = api_settings(model_home, tmp_path, alarm_threshold=0.01, alarm_k=1, alarm_n=1)
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READER
        answers = [_upload(c, p, "agree").json()["bearings"] for p in recordings[-30:]]
        page = {b: c.get(f"/v1/bearings/agree:{b}").json() for b in range(1, 5)}
    assert any(b["alarm"] for bearings in answers for b in bearings)
    for b in answers[-1]:
        assert (b["alarm"], b["rul_h"]) == (
            page[b["bearing"]]["alarm"],
            page[b["bearing"]]["rul_h"],
        )


def test_answers_do_not_depend_on_how_rows_are_batched(model_home, tmp_path):
    """A bearing's rows sent one per request, and the same rows sent in one request with an
    older row of an unrelated bearing: the same states, health and remaining life. (The
    history was read from before the request's earliest row, and the age of a new bearing
    counted from each row's own time, so batches answered differently.)"""
    rows = bearing_rows_with_gain(model_home, 3.0)  # alarms once the gain sets in
    other = {**rows[0], "machine": "unrelated", "timestamp": "1999-01-01T00:00:00"}
    numbers = ("health", "rul_h", "rul_low_h", "rul_high_h")
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        alone = []
        for row in rows:
            response = c.post("/v1/predict", json={"rows": [{**row, "machine": "alone"}]})
            alone.append(response.json()[0]["bearings"][0])
        response = c.post(
            "/v1/predict", json={"rows": [other] + [{**r, "machine": "batched"} for r in rows]}
        )
        assert response.status_code == 200, response.text
        batched = [r["bearings"][0] for r in response.json()[1:]]
    assert any(a["alarm_state"] == "alarm" for a in alone)
    # Every row, the batch's first ones included: each uses the baseline samples up to its
    # own time (the batch's first rows used all its first 20 before: not causal).
    k = api_settings(model_home, tmp_path).baseline_recordings
    assert len(alone) == len(batched) > k + 20
    assert [b["baseline_recordings"] for b in batched[:k]] == list(range(1, k + 1))
    for a, b in zip(alone, batched, strict=True):
        assert b["baseline_recordings"] == a["baseline_recordings"]
        assert (b["alarm_state"], b["rul_method"]) == (a["alarm_state"], a["rul_method"])
        assert [b[f] for f in numbers] == pytest.approx([a[f] for f in numbers], rel=1e-9)


def test_a_concurrent_requests_samples_count_for_the_age_as_for_the_baseline(model_home, tmp_path):
    """Another request's earlier recording of the bearing stored between this request's read of
    the history and of the baseline: the answer counted that recording in its baseline but gave
    the bearing's age as 0 h (found by a trial of 6 concurrent batches for one new machine).
    Now it answers as if the two had come one after the other."""
    first, second = bearing_rows_with_gain(model_home, 1.0)[:2]
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        sequential = [
            c.post("/v1/predict", json={"rows": [{**row, "machine": "one-by-one"}]}).json()
            for row in (first, second)
        ][1][0]["bearings"][0]
        log = c.app.state.log
        read_history = log.scoring_history

        def history_then_a_concurrent_sample(*args, **kwargs):
            history = read_history(*args, **kwargs)
            when = datetime.fromisoformat(first["timestamp"])
            log.add_baseline_samples([("raced", 1, when, first["features"])])
            return history

        log.scoring_history = history_then_a_concurrent_sample
        response = c.post("/v1/predict", json={"rows": [{**second, "machine": "raced"}]})
        assert response.status_code == 200, response.text
        raced = response.json()[0]["bearings"][0]
    assert raced["baseline_recordings"] == sequential["baseline_recordings"] == 2
    assert raced["rul_method"] == sequential["rul_method"]
    assert "given survival to 0 h" not in raced["rul_method"]
    assert raced["rul_h"] == sequential["rul_h"]


def test_a_bearing_long_in_alarm_is_told_the_time_since_its_alarm_as_batch_scoring_says(
    model_home, tmp_path
):
    """A bearing in alarm for more than the predictions a request reads back (60) was told the
    same hours since its alarm forever (the first alarm in that window), and a remaining life
    hundreds of hours off `wearcast predict`'s (found by an operations trial). Sent one row a
    request and in batches of 7, every answer is batch scoring's on the same health series."""
    rows = bearing_rows_with_gain(model_home, 3.0)
    step = pd.Timestamp(rows[-1]["timestamp"]) - pd.Timestamp(rows[-2]["timestamp"])
    for i in range(100):  # the gained recordings again, later: a bearing left in alarm
        stamp = pd.Timestamp(rows[-1]["timestamp"]) + step
        rows.append({**rows[30 + i % 30], "timestamp": stamp.isoformat()})
    settings = api_settings(model_home, tmp_path)
    prognostics = registry.load_prognostics(registry.client(settings), settings, 1)
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READER
        alone = [
            c.post("/v1/predict", json={"rows": [{**r, "machine": "alone"}]}).json()[0]
            for r in rows
        ]
        batched = []
        for start in range(0, len(rows), 7):
            chunk = [{**r, "machine": "sevens"} for r in rows[start : start + 7]]
            batched += c.post("/v1/predict", json={"rows": chunk}).json()
    k = settings.baseline_recordings
    hours = [(pd.Timestamp(r["timestamp"]) - pd.Timestamp(rows[0]["timestamp"])) for r in rows]
    hours = np.array([h.total_seconds() / 3600 for h in hours])
    for served in (alone, batched):
        answers = [r["bearings"][0] for r in served]
        steps, _ = prognostics.follow(hours, np.array([a["health"] for a in answers]), warmup=k)
        in_alarm = [a["alarm_state"] == "alarm" for a in answers]
        assert sum(in_alarm[k:]) > 80 and all(in_alarm[-80:])  # long in alarm, to the end
        for answer, expected in list(zip(answers, steps, strict=True))[k:]:
            assert answer["alarm_state"] == expected.state
            assert answer["rul_method"] == expected.rul.method
            assert [answer["rul_h"], answer["rul_low_h"], answer["rul_high_h"]] == pytest.approx(
                [expected.rul.rul_h, expected.rul.low_h, expected.rul.high_h], rel=1e-6
            )


def test_a_recording_sent_twice_in_one_request_is_one_point_of_the_bearings_history(
    model_home, tmp_path
):
    """A row repeated later in the same request (identical) gets the first one's answer and
    changes nothing else: it was counted twice in the bearing's history, which moved the
    remaining life of every later row (found by a hostile-client trial)."""
    rows = bearing_rows_with_gain(model_home, 3.0)[:60]
    repeated = rows[:50] + [rows[45]] + rows[50:]
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        plain = c.post("/v1/predict", json={"rows": [{**r, "machine": "plain"} for r in rows]})
        twice = c.post("/v1/predict", json={"rows": [{**r, "machine": "twice"} for r in repeated]})
        assert plain.status_code == twice.status_code == 200, twice.text
        # Repeated with other features: refused, said as what it is (nothing was answered).
        changed = {**rows[1], "features": {**rows[1]["features"], "rms": 1.0}}
        clash = [{**r, "machine": "clash"} for r in (rows[0], rows[1], changed)]
        refused = c.post("/v1/predict", json={"rows": clash})
        assert refused.status_code == 409, refused.text
        assert "sent twice in this request with different features" in refused.json()["detail"]
        logged = c.get("/v1/bearings/twice:1", params={"limit": 1000}).json()
    # One answer per (machine, time): the repeated row's is listed beside the first's.
    assert [len(r["bearings"]) for r in twice.json()] == [1] * 45 + [2] + [1] * 14
    assert twice.json()[45]["bearings"][0] == twice.json()[45]["bearings"][1]
    answers = [r["bearings"][0] for r in twice.json()]
    expected = [r["bearings"][0] for r in plain.json()]
    for a, b in zip(answers, expected, strict=True):
        assert {**a, "bearing_id": "x"} == {**b, "bearing_id": "x"}
    assert len(logged["predictions"]) == 60
    # Later rows did move before the fix: the test reaches past the alarm, where the
    # remaining life follows the bearing's own history.
    assert any(a["alarm_state"] != "ok" for a in answers[46:])


def test_a_refused_request_leaves_no_baseline_samples(model_home, tmp_path):
    """Rows refused with 422 (their baseline overflows) took baseline samples with them: later
    valid rows of the bearing then counted them and answered otherwise than a fresh bearing's
    (found by a hostile-client trial)."""
    rows = bearing_rows_with_gain(model_home, 1.0)[:8]
    poisoned = [
        {**r, "machine": "poison", "features": {**r["features"], "rms": 1e308}} for r in rows[:2]
    ]
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        refused = c.post("/v1/predict", json={"rows": poisoned})
        assert refused.status_code == 422, refused.text
        with c.app.state.log.engine.connect() as conn:
            kept = conn.execute(text("SELECT COUNT(*) FROM baseline_samples")).scalar()
        answers = {
            machine: c.post(
                "/v1/predict", json={"rows": [{**r, "machine": machine} for r in rows[2:]]}
            ).json()
            for machine in ("poison", "fresh")
        }
    assert kept == 0
    poison, fresh = ([r["bearings"][0] for r in answers[m]] for m in ("poison", "fresh"))
    assert [b["baseline_recordings"] for b in poison] == [1, 2, 3, 4, 5, 6]  # each up to its time
    assert [{**b, "bearing_id": "x"} for b in poison] == [{**b, "bearing_id": "x"} for b in fresh]


def test_history_is_paged(model_home, tmp_path, recordings):
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        for p in recordings[:7]:
            assert _upload(c, p, "paged").status_code == 200
        whole = c.get("/v1/bearings/paged:2").json()
        assert len(whole["predictions"]) == 7 and whole["next_before"] is None
        page = c.get("/v1/bearings/paged:2", params={"limit": 3}).json()
        assert page["predictions"] == whole["predictions"][-3:]
        back = c.get(
            "/v1/bearings/paged:2", params={"limit": 3, "before": page["next_before"]}
        ).json()
        assert back["predictions"] == whole["predictions"][-6:-3]
        assert page["alarm"] == whole["alarm"] and page["rul_h"] == whole["rul_h"]
        assert c.get("/v1/bearings/paged:2", params={"limit": 0}).status_code == 422


@pytest.fixture
def tiny_registry(tmp_path) -> Settings:
    """A registry of its own: version 1 works, version 2 predicts NaN, version 3 lost its
    files."""
    settings = Settings(home=tmp_path / "home", reload_interval_s=0)
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.uniform(1, 2, (30, 2)), columns=["rms", "baseline_rms"])
    good = build_pipeline({"family": "ridge"}).fit(X, rng.uniform(0, 1, 30))
    broken = build_pipeline({"family": "ridge"}).fit(X, rng.uniform(0, 1, 30))
    broken.named_steps["model"].estimator_.intercept_ = float("nan")
    registry.connect(settings)
    for model in (good, broken, good):
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=settings.model_name,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
    client = registry.client(settings)
    lost = client.get_model_version_download_uri(settings.model_name, "3")
    shutil.rmtree(Path(lost.removeprefix("file://")))
    registry.promote(client, settings, 1, "works")
    return settings


@pytest.mark.parametrize("version", [2, 3])
def test_a_version_that_fails_to_load_or_its_smoke_test_is_not_promoted(tiny_registry, version):
    settings = tiny_registry
    client = registry.client(settings)
    with pytest.raises(registry.PromotionRefused, match=f"version {version} was not promoted"):
        registry.promote(client, settings, version, "should not happen")
    assert registry.champion_version(client, settings) == 1
    with TestClient(create_app(settings)) as c:
        refused = c.post(f"/v1/admin/promote/{version}")
        assert refused.status_code == 409, refused.text
        assert str(settings.home) not in refused.text and "unchanged" in refused.json()["detail"]
        assert c.get("/readyz").json()["version"] == 1
        models = c.get("/v1/models").json()
        assert [v["aliases"] for v in models["versions"]] == [["champion"], [], []]
    assert registry.champion_version(client, settings) == 1


def test_a_registry_failure_during_a_promotion_is_not_called_a_missing_version(
    tiny_registry, monkeypatch, caplog
):
    """Every registry error was answered 404 "no version" (an operations trial found a
    database failure so reported); only a missing version is a 404, the rest a 503, and the
    admin action is in the server log."""
    from mlflow.exceptions import MlflowException

    settings = tiny_registry
    with TestClient(create_app(settings)) as c:
        missing = c.post("/v1/admin/promote/99")
        assert missing.status_code == 404 and "has no version 99" in missing.json()["detail"]
        # A version beyond the registry's integers is the client's mistake, not its failure
        # (was 503: OverflowError in SQLite; a hostile-client trial).
        huge = c.post("/v1/admin/promote/99999999999999999999")
        assert huge.status_code == 422 and "less than or equal to" in huge.text, huge.text

        def failing(*args, **kwargs):
            raise MlflowException("database is locked", error_code="INTERNAL_ERROR")

        monkeypatch.setattr(registry, "promote", failing)
        with caplog.at_level("INFO", logger="wearcast.api"):
            failed = c.post("/v1/admin/promote/1")
        assert failed.status_code == 503, failed.text
        assert "INTERNAL_ERROR" in failed.json()["detail"] and "no version" not in failed.text
    assert "admin: promoting wearcast-wear version 1" in caplog.text


def test_registry_metadata_is_cached_between_polls(model_home, tmp_path):
    settings = api_settings(model_home, tmp_path)
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = ADMIN
        store = c.app.state.store
        calls = []
        original = store.refresh_versions

        def counted():
            calls.append(threading.get_ident())
            return original()

        store.refresh_versions = counted
        for _ in range(5):
            assert c.get("/v1/models").status_code == 200
        assert calls == []  # read at start-up, not per request
        assert c.post("/v1/admin/reload").status_code == 200
        assert len(calls) == 1
