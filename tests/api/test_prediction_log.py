"""The prediction log, on SQLite and (where WEARCAST_TEST_POSTGRES_URL is set) PostgreSQL:
nothing lost under concurrent writers."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import create_engine, event, text

from wearcast.config import Settings
from wearcast.features import Spectra
from wearcast.prediction_log import (
    FeatureValues,
    PredictionLog,
    PredictionLogUnavailable,
    PredictionRecord,
    RecordingSpectra,
)


def _urls():
    yield pytest.param("sqlite", id="sqlite")
    yield pytest.param("postgres", id="postgresql", marks=pytest.mark.postgres)


@pytest.fixture(params=list(_urls()))
def log(request, tmp_path):
    if request.param == "sqlite":
        store = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    else:
        url = os.environ.get("WEARCAST_TEST_POSTGRES_URL")
        if not url:
            pytest.skip(
                "WEARCAST_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)"
            )
        store = PredictionLog(url)
        with store.engine.begin() as conn:
            conn.execute(text("TRUNCATE predictions, baseline_samples, latest_spectra"))
    yield store
    store.close()


def _record(machine: str, i: int) -> PredictionRecord:
    return PredictionRecord(
        f"r{i}",
        machine,
        1 + i % 4,
        datetime(2004, 1, 1) + timedelta(minutes=10 * i),
        "d" * 32,
        i / 100,
        None,
        False,
        "m",
        1,
    )


def test_concurrent_writers_lose_nothing(log):
    def writer(w: int) -> None:
        for i in range(25):
            log.commit([_record(f"machine-{w}", i)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 8 * 25
    history = log.history("machine-3", 2)
    assert [r.wear for r in history] == [i / 100 for i in range(25) if 1 + i % 4 == 2]


def test_a_recording_is_logged_once_and_the_first_answer_stands(log):
    first = _record("m", 0)
    stored = log.commit([first])
    retry = PredictionRecord(**{**vars(first), "request_id": "again", "wear": 0.99})
    again = log.commit([retry])
    assert log.count() == 1
    key = ("m", first.bearing, first.recorded_at)
    assert stored[key].request_id == again[key].request_id == first.request_id
    assert log.logged([key, ("m", 1, datetime(1999, 1, 1))]) == {key: stored[key]}


def test_the_baseline_is_the_first_recordings_by_time_whatever_the_arrival(log):
    start = datetime(2004, 1, 1)
    times = [start + timedelta(minutes=10 * i) for i in range(40)]
    arrival = times[20:] + times[:20]  # the later half first, as a reordering network might
    chunks = [arrival[i::4] for i in range(4)]

    def worker(chunk) -> None:
        for t in chunk:
            log.add_baseline_samples([("m", 1, t, {"rms": t.minute + 60.0 * t.hour})])

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = log.baseline_samples([("m", 1)], 20)[("m", 1)]
    assert [t for t, _ in samples] == times[:20]
    assert log.baseline_times([("m", 1)], 20)[("m", 1)] == times[:20]
    # A sample already stored keeps its first content.
    log.add_baseline_samples([("m", 1, times[0], {"rms": -1.0})])
    assert log.baseline_samples([("m", 1)], 1)[("m", 1)][0][1] == {"rms": 0.0}
    # A refused request's samples are taken back, those of answered recordings stay.
    log.commit([replace(_record("m", 0), bearing=1, recorded_at=times[1])])
    log.take_back_samples([("m", 1, times[0]), ("m", 1, times[1]), ("m", 1, times[2])])
    assert log.baseline_times([("m", 1)], 20)[("m", 1)] == [times[1]] + times[3:22]


def test_history_pages_and_recent_windows(log):
    log.commit([_record("p", i) for i in range(0, 40, 4)])  # bearing 1, every 40 minutes
    everything = log.history("p", 1)
    assert len(everything) == 10
    page = log.history("p", 1, limit=3)
    assert page == everything[-3:]
    older = log.history("p", 1, before=page[0].recorded_at, limit=3)
    assert older == everything[-6:-3]
    assert log.history("p", 1, since=everything[7].recorded_at) == everything[8:]
    # What scoring a recording at everything[5]'s time reads, for two bearings in one go.
    when = everything[5].recorded_at
    read = log.scoring_history([("p", 1, when), ("p", 2, when)], baseline_recordings=20, window=2)
    assert [p.wear for p in read.recent[("p", 1)]] == [0.12, 0.16]
    assert read.recent[("p", 2)] == []
    assert read.first_times == {("p", 1): everything[0].recorded_at, ("p", 2): None}
    assert set(read.logged) == {("p", 1, when)}


def test_each_bearing_keeps_its_latest_recordings_spectra_whatever_the_arrival_order(log):
    """Concurrent writers, recordings out of order: the latest by time stays, one per bearing."""
    times = [datetime(2004, 1, 1) + timedelta(minutes=10 * i) for i in range(40)]
    order = [int(i) for i in np.random.default_rng(3).permutation(len(times))]

    def spectra(i: int) -> Spectra:
        return Spectra(10.0, [float(i), 1.0], 1.0, [float(i)])

    def writer(w: int) -> None:
        for i in order[w::4]:
            kept = RecordingSpectra("m", times[i], {1: spectra(i), 2: spectra(i + 100)})
            log.commit([replace(_record("m", i), recorded_at=times[i])], spectra=kept)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.latest_spectra("m", 1) == (times[-1], spectra(39))
    assert log.latest_spectra("m", 2) == (times[-1], spectra(139))
    assert log.latest_spectra("m", 3) is None and log.latest_spectra("other", 1) is None


def test_the_rest_of_an_episode_on_either_side_of_a_time(log):
    states = ["ok", "watch", "alarm", "alarm", "ok", "ok", "watch", "alarm"]
    log.commit(
        [
            replace(_record("e", 4 * i), state=state, request_id=f"r{i}")
            for i, state in enumerate(states)
        ]
    )
    times = [r.recorded_at for r in log.history("e", 1)]
    # From inside the first episode: back to its start, on to the ok that ends it.
    earlier = log.beside_episode("e", 1, times[3], "ok", earlier=True)
    later = log.beside_episode("e", 1, times[2], "ok", earlier=False)
    assert [p.state for p in earlier] == ["watch", "alarm"]
    assert [p.recorded_at for p in later] == times[3:5]
    # The second episode is still open: everything after, and nothing before its start.
    assert [p.state for p in log.beside_episode("e", 1, times[6], "ok", earlier=False)] == ["alarm"]
    assert log.beside_episode("e", 1, times[5], "ok", earlier=True) == []


@pytest.mark.postgres
def test_replicas_opening_a_new_postgres_log_together_all_start():
    """Two API replicas started at once both created the tables; one died of a duplicate
    (found by the stack test)."""
    url = os.environ.get("WEARCAST_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("WEARCAST_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    barrier = threading.Barrier(6)
    errors: list[Exception] = []

    def open_log() -> None:
        barrier.wait()
        try:
            PredictionLog(url).close()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_scoring_reads_and_writes_search_the_index_never_scan_the_table(tmp_path):
    """A request's cost must not grow with the log: every statement scoring runs reaches its
    rows through an index. (Logged answers were once read with a row-value IN list, which
    SQLite answers by scanning every prediction ever logged.)"""
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}")
    log.commit(
        [
            replace(_record(f"m{k}", i), state="alarm" if i > 20 else "ok")
            for k in range(3)
            for i in range(40)
        ]
    )
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if not executemany:
            statements.append((statement, parameters))

    event.listen(log.engine, "before_cursor_execute", seen)
    when = datetime(2004, 1, 1, 5)
    keys = [("m1", b, when) for b in (1, 2, 3)] + [("m2", 1, when)]
    log.scoring_history(keys, baseline_recordings=20, window=59)
    log.add_baseline_samples([("m1", 1, when, {"rms": 1.0})])
    log.commit(
        [replace(_record("m1", 100), recorded_at=when + timedelta(days=1))],
        sampled=([("m1", 1)], 20),
    )
    log.compact(timedelta(days=-1))  # every prediction logged before tomorrow
    event.remove(log.engine, "before_cursor_execute", seen)
    kinds = ("SELECT", "DELETE", "UPDATE")
    reads = [(s, p) for s, p in statements if s.lstrip().upper().startswith(kinds)]
    assert len(reads) >= 8 and any("state" in s and "max" in s for s, _ in reads)
    with log.engine.connect() as conn:
        for statement, parameters in reads:
            plan = [
                row[3]
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            ]
            scans = [
                step
                for step in plan
                if step.startswith(("SCAN predictions", "SCAN baseline_samples"))
            ]
            assert not scans, f"{statement.split()[:12]}: {plan}"
    log.close()


def test_large_requests_are_read_in_chunks_without_losing_or_inventing_a_recording(log):
    """More recordings than one statement takes (128), and more bearings than one union
    (200): every logged one found, nothing for the rest, each bearing's own history."""
    records = [replace(_record(f"big{k}", i), bearing=1) for k in range(250) for i in (0, 4)]
    stored = log.commit(records)
    keys = [(r.machine, r.bearing, r.recorded_at) for r in records]
    assert set(stored) == set(keys) and len(stored) == 500
    absent = [(m, b, t + timedelta(seconds=1)) for m, b, t in keys[:130]]
    found = log.logged(keys[::-1] + absent)
    assert set(found) == set(keys)
    assert all(found[k].request_id == "r0" for k in keys[::2])
    later = datetime(2004, 1, 2)
    read = log.scoring_history(
        [(f"big{k}", 1, later) for k in range(250)], baseline_recordings=20, window=5
    )
    assert len(read.recent) == 250
    assert all([p.wear for p in points] == [0.0, 0.04] for points in read.recent.values())
    assert set(read.first_times.values()) == {datetime(2004, 1, 1)}


def test_a_bearing_logged_last_in_alarm_gets_its_longer_history(log):
    """Scoring reads a bearing's last ``window`` predictions, and ``alarm_window`` for one
    whose last is in alarm (its remaining life follows the trend since the alarm): the same
    rows as one long read, oldest first, and nothing longer for the others."""
    records = [
        replace(_record("m", i), bearing=b, state="alarm" if b == 1 and i >= 20 else "ok")
        for i in range(30)
        for b in (1, 2)
    ]
    log.commit(records)
    later = datetime(2004, 1, 2)
    short = log.scoring_history(
        [("m", 1, later), ("m", 2, later)], baseline_recordings=20, window=5, alarm_window=25
    )
    long = log.scoring_history(
        [("m", 1, later), ("m", 2, later)], baseline_recordings=20, window=25
    )
    assert short.recent[("m", 1)] == long.recent[("m", 1)]
    assert [p.state for p in short.recent[("m", 1)]] == ["ok"] * 15 + ["alarm"] * 10
    assert short.recent[("m", 2)] == long.recent[("m", 2)][-5:]
    assert len(short.recent[("m", 2)]) == 5
    # Where the open episode began, however far back: the first of its 10 alarm predictions.
    assert short.open_alarms == {("m", 1): (records[40].recorded_at, 10)}


def test_where_an_open_alarm_began_costs_the_same_however_long_the_history_before_it(tmp_path):
    """It was found by reading every prediction the bearing ever had, so a bearing long in
    service and then in alarm slowed each of its requests as the log grew (a replay of 3,000
    recordings: p50 11 -> 23 ms). Measured in SQLite's virtual-machine steps of everything
    scoring reads, not in seconds."""

    def open_alarm(healthy: int) -> tuple[tuple, int]:
        log = PredictionLog(f"sqlite:///{tmp_path / f'log{healthy}.db'}")
        log.commit(
            [
                replace(_record("m", i), bearing=1, state="alarm" if i >= healthy else "ok")
                for i in range(healthy + 30)
            ]
        )
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0  # go on

        with log.engine.connect() as conn:  # the pool's one connection, which scoring reuses
            conn.connection.driver_connection.set_progress_handler(step, 1)
        read = log.scoring_history(
            [("m", 1, datetime(2100, 1, 1))], baseline_recordings=20, window=5, alarm_window=25
        )
        log.close()
        return read.open_alarms[("m", 1)], steps

    short, short_steps = open_alarm(40)
    long, long_steps = open_alarm(4000)
    assert short == (datetime(2004, 1, 1) + timedelta(minutes=10 * 40), 30)
    assert long == (datetime(2004, 1, 1) + timedelta(minutes=10 * 4000), 30)
    assert long_steps < 1.5 * short_steps, (short_steps, long_steps)


def test_compacting_drops_old_answers_and_features_and_keeps_the_numbers(log):
    """The log grew by its stored answer and features (about 6 KB a row) with no bound (found by
    an operations trial): past the retention they go, in chunks, and what history, episodes and
    scoring read stays as it was."""
    records = [
        replace(
            _record("c", i),
            bearing=1,
            state="alarm" if i >= 5 else "ok",
            health=float(i),
            answer={"rul_method": "x", "wear": i / 100},
            features=FeatureValues.of({"std": float(i)}),
        )
        for i in range(12)
    ]
    log.commit(records)
    with log.engine.begin() as conn:  # the first 7 logged long ago
        conn.execute(
            text("UPDATE predictions SET created_at = :at WHERE recorded_at < :kept"),
            {"at": datetime(2000, 1, 1), "kept": records[7].recorded_at},
        )
    before = log.history("c", 1)
    later = datetime(2004, 1, 2)
    reads = log.scoring_history([("c", 1, later)], baseline_recordings=5, window=20)
    assert log.compact(timedelta(days=90), chunk=3) == 7
    assert log.compact(timedelta(days=90), chunk=3) == 0  # done once
    after = log.history("c", 1)
    strip = lambda r: replace(r, answer=None, features=None)  # noqa: E731
    assert [strip(r) for r in after] == [strip(r) for r in before]
    assert [r.answer is None for r in after] == [True] * 7 + [False] * 5
    assert [t for _, t, _ in log.recent_features(20)["c"]] == [r.recorded_at for r in after[7:]]
    again = log.scoring_history([("c", 1, later)], baseline_recordings=5, window=20)
    assert (again.recent, again.open_alarms, again.first_times) == (
        reads.recent,
        reads.open_alarms,
        reads.first_times,
    )


def test_features_are_logged_as_values_of_a_named_set_and_an_older_logs_json_still_reads(
    tmp_path,
):
    """Each prediction stored its 132 features as JSON with their names, about 5 kB of its
    6.4 kB (found sizing a fleet's log): the values are stored as 8-byte floats of a set of
    names kept once. A log written before keeps its rows' JSON, read as before."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    PredictionLog(url).close()
    with create_engine(url).begin() as conn:  # the schema of a log written before
        conn.execute(text("DROP TABLE feature_sets"))
        conn.execute(text("ALTER TABLE predictions DROP COLUMN feature_set"))
        conn.execute(text("ALTER TABLE predictions DROP COLUMN feature_values"))
        conn.execute(
            text(
                "INSERT INTO predictions (request_id, created_at, machine, bearing, recorded_at, "
                "features_digest, wear, alarm, model_name, model_version, answer, features) "
                "VALUES ('old', '2004-01-01 00:00:00', 'm', 1, '2004-01-01 00:00:00', 'd', 0.1, "
                "0, 'm', 1, '{}', '{\"std\": 1.5, \"band_1\": null}')"
            )
        )
    log = PredictionLog(url)  # upgraded in place
    names = [f"band_{i}" for i in range(132)]
    features = dict(zip(names, np.linspace(0.0, 1.0, 132).tolist(), strict=True))
    logged = FeatureValues.of(features)
    first = replace(_record("m", 6), bearing=1, answer={}, features=logged)
    log.commit([first, replace(_record("n", 6), answer={}, features=logged)])
    assert log.recent_features(10)["m"] == [
        (1, datetime(2004, 1, 1), {"std": 1.5, "band_1": None}),
        (1, first.recorded_at, features),
    ]
    assert log.history("m", 1)[-1] == replace(first, features=None)  # a history has none
    with log.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT feature_set, length(feature_values), features FROM predictions")
        ).all()
        sets = conn.execute(text("SELECT count(*) FROM feature_sets")).scalar()
    assert sorted(stored, key=str) == sorted(
        [(None, None, '{"std": 1.5, "band_1": null}'), (1, 132 * 8, None), (1, 132 * 8, None)],
        key=str,
    )
    assert sets == 1
    log.close()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/log", "postgresql+psycopg2://u:p@db:5432/log"),
        ("postgres://u:p@db/log", "postgresql+psycopg2://u:p@db/log"),
        ("postgresql+psycopg2://u:p@db/log", "postgresql+psycopg2://u:p@db/log"),
        ("sqlite:////var/wearcast/log.db", "sqlite:////var/wearcast/log.db"),
    ],
)
def test_a_bare_postgresql_url_uses_the_shipped_driver(given, used):
    """SQLAlchemy reads postgresql:// as psycopg 3, which wearcast does not ship: the server
    died at start-up with "No module named 'psycopg'"."""
    assert Settings(prediction_db_url=given).resolved_prediction_db_url == used


def test_a_log_that_cannot_be_opened_is_said_in_one_line_without_its_password(tmp_path):
    with pytest.raises(PredictionLogUnavailable, match=r"driver is not installed") as missing:
        PredictionLog("mysql://reader:s3cret@db/log")
    with pytest.raises(PredictionLogUnavailable, match=r"cannot be opened: unable to open"):
        PredictionLog(f"sqlite:///{tmp_path / 'no such folder' / 'log.db'}")
    assert "s3cret" not in str(missing.value) and "reader:***@db" in str(missing.value)
    with pytest.raises(ValueError, match="not a database URL"):
        Settings(prediction_db_url="predictions.db")
