"""Drift detection (wearcast.monitoring): simulated machines replayed through the API's scoring
path, the statistics on their own, and the retraining trigger against a fake Airflow."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from sqlalchemy import inspect, text

from wearcast.api.model_store import ModelStore
from wearcast.api.service import Scorer
from wearcast.config import Settings
from wearcast.dataset import featurize
from wearcast.monitoring import (
    GROUPS,
    compare,
    evaluate_drift,
    feature_group,
    render_html,
    trigger_retraining,
)
from wearcast.prediction_log import FeatureValues, PredictionLog, PredictionRecord
from wearcast.retrain import train_challenger
from wearcast.simulate import change_speed, plan_simulation, quantise, render_recording, simulate

CONFIG = {
    "family": "random_forest",
    "params": {"n_estimators": 30},
    "pca_components": 0,
    "features": "both",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model trained on simulated runs, loaded as the API loads it (with its reference)."""
    root = tmp_path_factory.mktemp("drift")
    settings = Settings(home=root / "home", workers=2)
    simulate(plan_simulation(settings, runs=3, recordings=70, seed=6), root / "data", workers=2)
    featurize(root / "data", root / "table", settings)
    version = train_challenger(settings, root / "table", config=CONFIG)["version"]
    model = ModelStore(settings).load(version)
    assert model.reference is not None and len(model.reference) > 100
    return settings, model


def replay(settings, model, db, *, seed: int, recordings: int, change=None, change_at=0):
    """Score a held-out healthy machine's recordings in order (changed from ``change_at``
    on), as the API does; returns the drift report of its latest window."""
    plan = plan_simulation(
        settings,
        runs=1,
        recordings=recordings,
        failures={},
        seed=seed,
        start=datetime(2006, 1, 2),
        run_prefix=f"heldout{seed}",
    )
    run = plan.runs[0]
    log = PredictionLog(f"sqlite:///{db}")
    scorer = Scorer(settings, log)
    try:
        for i, stamp in enumerate(run.timestamps):
            data = render_recording(plan, run, i)
            if change is not None and i >= change_at:
                data = change(data)
            scorer.score(
                scorer.recording_inputs(scorer.raw(quantise(data), run.info.name, stamp)), model
            )
        report = evaluate_drift(
            log,
            model.pipeline,
            model.reference,
            settings,
            model_name=model.name,
            model_version=model.version,
        )
    finally:
        log.close()
    [machine] = report.machines
    return report, machine


@pytest.mark.slow
def test_held_out_healthy_machines_do_not_drift(served, tmp_path):
    settings, model = served
    k, m = settings.baseline_recordings, settings.drift_min_recordings
    for seed in (101, 102):
        _, machine = replay(settings, model, tmp_path / f"{seed}.db", seed=seed, recordings=k + m)
        assert machine.judged and machine.rows == 4 * m
        assert not machine.drifted, machine.top_features[:3]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "moved"),
    [
        (lambda x: 2.0 * x, {"time", "bands", "envelope"}),  # every level doubles
        (lambda x: change_speed(x, 0.85), {"bands"}),  # energy moves between bands
    ],
    ids=["gain x2", "speed -15%"],
)
def test_a_gain_or_speed_change_after_the_baseline_is_flagged(served, tmp_path, change, moved):
    settings, model = served
    k, m = settings.baseline_recordings, settings.drift_min_recordings
    # The machine is judged on its last m recordings; the change came 20 recordings ago.
    _, machine = replay(
        settings,
        model,
        tmp_path / "c.db",
        seed=103,
        recordings=k + m,
        change=change,
        change_at=k + m - 20,
    )
    assert machine.drifted
    assert machine.drifted_bearings == [1, 2, 3, 4]
    assert moved <= {g.group for g in machine.groups if g.drifted}


@pytest.mark.slow
def test_a_gain_present_from_the_first_recording_is_carried_by_the_baseline(served, tmp_path):
    settings, model = served
    k, m = settings.baseline_recordings, settings.drift_min_recordings
    _, machine = replay(
        settings, model, tmp_path / "g.db", seed=104, recordings=k + m, change=lambda x: 2 * x
    )
    assert machine.judged and not machine.drifted


def test_drift_needs_significance_distance_and_several_features_of_a_bearing():
    rng = np.random.default_rng(0)
    names = [f"band_{i:05d}_{i + 100:05d}" for i in range(0, 3000, 100)]
    reference = rng.normal(size=(2000, len(names)))
    window = rng.normal(size=(30, len(names)))
    window[:, [3, 7, 11]] += 3.0  # three features moved by 3 standard deviations
    healthy = rng.normal(size=(30, len(names)))
    found = compare(names, reference, {1: window, 2: healthy}, 0.01, 0.6, 3)
    assert len(found) == 2 * len(names)
    assert [(f.bearing, f.feature) for f in found if f.drifted] == [
        (1, names[3]),
        (1, names[7]),
        (1, names[11]),
    ]
    # One feature alone, however far, is a chance crossing unless min_features is 1.
    one = healthy.copy()
    one[:, 5] += 3.0
    [f] = [f for f in compare(names, reference, {1: one}, 0.01, 0.6, 3) if f.feature == names[5]]
    assert f.q_value < 1e-6 and f.statistic > 0.6 and not f.drifted
    assert [f.feature for f in compare(names, reference, {1: one}, 0.01, 0.6, 1) if f.drifted] == [
        names[5]
    ]
    # Significant but closer than the distance threshold: not drift.
    near = healthy.copy()
    near[:, [3, 7, 11]] += 1.2
    found = compare(names, reference, {1: near}, 0.01, 0.6, 1)
    assert any(f.q_value < 0.01 for f in found) and not any(f.drifted for f in found)


def test_every_feature_has_a_group(served):
    _, model = served
    groups = {feature_group(f) for f in model.features}
    assert groups == set(GROUPS)
    with pytest.raises(ValueError):
        feature_group("ch1_rms")


class FakeAirflow:
    """Airflow 3's token and DAG-run endpoints, recording what they were asked."""

    def __init__(self, fail: bool = False):
        self.runs: list[dict] = []
        self.fail = fail

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "wc", "password": "pw"}
            return httpx.Response(201, json={"access_token": "jwt-1"})
        assert request.url.path == "/api/v2/dags/wearcast_retrain/dagRuns"
        assert request.headers["Authorization"] == "Bearer jwt-1"
        if self.fail:
            return httpx.Response(503, json={"detail": "down"})
        self.runs.append(json.loads(request.content))
        return httpx.Response(200, json={"dag_run_id": self.runs[-1]["dag_run_id"]})


def test_drift_triggers_retraining_once_per_cooldown_across_workers(served, tmp_path):
    settings, model = served
    settings = settings.model_copy(
        update={
            "retrain_on_drift": True,
            "airflow_url": "http://airflow.test",
            "airflow_username": "wc",
            "airflow_password": SecretStr("pw"),
            "retrain_cooldown_s": 3600,
        }
    )
    k, m = settings.baseline_recordings, settings.drift_min_recordings
    report, machine = replay(
        settings,
        model,
        tmp_path / "t.db",
        seed=105,
        recordings=k + m,
        change=lambda x: 2 * x,
        change_at=k,
    )
    assert machine.drifted
    down = FakeAirflow(fail=True)
    workers = [PredictionLog(f"sqlite:///{tmp_path / 't.db'}") for _ in range(2)]
    try:
        # Airflow down: nothing triggered, and the cooldown is not spent.
        assert (
            trigger_retraining(settings, workers[0], report, transport=httpx.MockTransport(down))
            is None
        )
        airflow = FakeAirflow()
        transport = httpx.MockTransport(airflow)
        first = trigger_retraining(settings, workers[0], report, transport=transport)
        assert first is not None
        # Another worker, and the same worker again, within the cooldown: no second run.
        assert trigger_retraining(settings, workers[1], report, transport=transport) is None
        assert trigger_retraining(settings, workers[0], report, transport=transport) is None
        assert [r["dag_run_id"] for r in airflow.runs] == [first]
        assert airflow.runs[0]["conf"]["machines"] == [machine.machine]
        assert airflow.runs[0]["logical_date"] is None
        # No drift, no trigger (even with the cooldown over).
        workers[0].release_lease("retrain-on-drift")
        calm = report.__class__(**{**vars(report), "machines": []})
        assert trigger_retraining(settings, workers[1], calm, transport=transport) is None
        assert len(airflow.runs) == 1
    finally:
        for w in workers:
            w.close()


def test_a_failing_bearing_s_drift_is_said_but_starts_no_retraining(served, tmp_path):
    """Every failing bearing was input drift and started the retraining DAG, spending its
    cooldown (an operations trial): drift on bearings in watch or alarm is reported as theirs
    and starts nothing, unless every bearing of the machine drifted (its rig or sensors)."""
    settings, model = served
    settings = settings.model_copy(
        update={"retrain_on_drift": True, "airflow_url": "http://airflow.test"}
    )
    k, m = settings.baseline_recordings, settings.drift_min_recordings

    def bearing_2_shaking(x: np.ndarray) -> np.ndarray:  # one channel a bearing here
        y = x.copy()
        y[:, 1] *= 3.0
        return y

    report, machine = replay(
        settings,
        model,
        tmp_path / "f.db",
        seed=106,
        recordings=k + m,
        change=bearing_2_shaking,
        change_at=k,
    )
    assert machine.drifted and machine.drifted_bearings == [2], machine
    assert machine.alarmed_bearings == [2] and machine.bearings == 4
    assert report.machines_to_retrain_for == []
    airflow = FakeAirflow()
    log = PredictionLog(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        assert (
            trigger_retraining(settings, log, report, transport=httpx.MockTransport(airflow))
            is None
        )
    finally:
        log.close()
    assert airflow.runs == []
    assert "bearing(s) 2 in watch or alarm" in " ".join(render_html(report).split())


def test_the_html_report_shows_the_verdicts(served, tmp_path):
    settings, model = served
    k, m = settings.baseline_recordings, settings.drift_min_recordings
    report, machine = replay(
        settings,
        model,
        tmp_path / "h.db",
        seed=106,
        recordings=k + m,
        change=lambda x: 2 * x,
        change_at=k,
    )
    html = render_html(report)
    assert machine.machine in html and "1 of 1 machines drifted" in html.replace(
        "<strong>", ""
    ).replace("</strong>", "")
    assert machine.top_features[0].feature in html


def test_an_old_log_gains_the_features_column_and_its_rows_are_left_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = PredictionLog(url)
    with old.engine.begin() as conn:  # the schema before drift monitoring (and retention)
        conn.execute(text("DROP INDEX ix_predictions_detailed_created"))
        conn.execute(text("ALTER TABLE predictions DROP COLUMN features"))
    old.close()
    log = PredictionLog(url)
    try:
        stamp = datetime(2004, 1, 1)
        record = PredictionRecord("r1", "m1", 1, stamp, "d" * 32, 0.1, None, False, "m", 1)
        rms = FeatureValues.of({"rms": 1.0})
        later = replace(record, recorded_at=stamp.replace(hour=1), features=rms)
        log.commit([record, later])
        assert log.recent_features(10) == {"m1": [(1, later.recorded_at, {"rms": 1.0})]}
        indexes = {i["name"] for i in inspect(log.engine).get_indexes("predictions")}
        assert "ix_predictions_detailed_created" in indexes  # retention's, on the new column
    finally:
        log.close()
