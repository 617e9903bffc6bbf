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
            pytest.skip("WEARCAST_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
        store = PredictionLog(url)
        with store.engine.begin() as conn:
            conn.execute(text("TRUNCATE predictions, baseline_samples"))
    yield store
    store.close()


def _record(machine: str, i: int) -> PredictionRecord:
    return PredictionRecord(f"r{i}", machine, 1 + i % 4, datetime(2004, 1, 1) + timedelta(minutes=10 * i),
                            "d" * 32, i / 100, None, False, "m", 1)  # fmt: skip


def test_concurrent_writers_lose_nothing(log):
    def writer(w: int) -> None:
        for i in range(25):
            log.record([_record(f"machine-{w}", i)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.count() == 8 * 25
    history = log.history("machine-3", 2)
    assert [r.wear for r in history] == [i / 100 for i in range(25) if 1 + i % 4 == 2]


def test_baseline_is_the_median_of_the_first_recordings(log):
    start = datetime(2004, 1, 1)
    for i, value in enumerate([1.0, 3.0, 2.0, 100.0]):
        baseline, count = log.baseline("m", 1, 3, current=(start + timedelta(minutes=i), {"rms": value}))
    assert count == 3 and baseline == {"rms": 2.0}  # the 4th recording is past the baseline
    assert log.baseline("m", 2, 3) == (None, 0)
