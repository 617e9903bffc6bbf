"""The prediction log, on SQLite and (where WEARCAST_TEST_POSTGRES_URL is set) PostgreSQL:
nothing lost under concurrent writers."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from wearcast.prediction_log import PredictionLog, PredictionRecord


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
            conn.execute(text("TRUNCATE predictions, baseline_samples"))
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
            log.commit([], [_record(f"machine-{w}", i)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 8 * 25
    history = log.history("machine-3", 2)
    assert [r.wear for r in history] == [i / 100 for i in range(25) if 1 + i % 4 == 2]


def test_contexts_give_first_samples_and_recent_history(log):
    start = datetime(2004, 1, 1)
    samples = [
        ("m", 1, start + timedelta(minutes=i), {"rms": v})
        for i, v in enumerate([1.0, 3.0, 2.0, 100.0])
    ]
    log.commit(samples, [_record("m", i) for i in range(12)])
    ctx = log.contexts([("m", 1), ("m", 9)], recordings=3, window=2, before=datetime(2004, 1, 2))
    assert [s["rms"] for _, s in ctx[("m", 1)].samples] == [1.0, 3.0, 2.0]  # the first three
    assert [w for _, w in ctx[("m", 1)].recent] == [
        0.04,
        0.08,
    ]  # bearing 1: i = 4 and 8, in time order
    assert ctx[("m", 9)].samples == [] and ctx[("m", 9)].recent == []
    # The same baseline recording stored twice (a concurrent request) is not an error.
    log.commit(samples[:1], [_record("m", 20)])
    assert log.count() == 13
