"""Alarm notifications: the outbox (written with the prediction, leased by one worker at a
time) and at-least-once delivery through a receiver outage and an API process kill."""

from __future__ import annotations

import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from wearcast.api.notify import EVENT_HEADER, SIGNATURE_HEADER, signature
from wearcast.api.security import hash_key
from wearcast.baseline import BASELINE_PREFIX
from wearcast.dataset import read_table
from wearcast.prediction_log import OutboxEvent, PredictionLog, PredictionRecord
from wearcast.train import prepare

from .conftest import READER, free_port, port_to_come_back_to, wait_until_ready

SECRET = "webhook-secret-for-tests"
GUARD_S = 180  # only against a hang: every wait below ends as soon as its condition holds


def _record(machine: str, i: int, request_id: str) -> PredictionRecord:
    return PredictionRecord(
        request_id,
        machine,
        1,
        datetime(2004, 1, 1) + timedelta(minutes=10 * i),
        "d" * 32,
        0.5,
        None,
        True,
        "m",
        1,
    )


def _event(record: PredictionRecord) -> OutboxEvent:
    key = (record.machine, record.bearing, record.recorded_at)
    return OutboxEvent(key, f"ev-{record.machine}-{record.recorded_at:%H%M}", "alarm.raised", {})


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def url(request, tmp_path) -> str:
    """An empty prediction log's URL (as in test_prediction_log.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    found = os.environ.get("WEARCAST_TEST_POSTGRES_URL")
    if not found:
        pytest.skip("WEARCAST_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server)")
    log = PredictionLog(found)
    with log.engine.begin() as conn:
        conn.execute(text("TRUNCATE predictions, baseline_samples, outbox, leases"))
    log.close()
    return found


def test_an_event_is_written_only_by_the_request_that_logged_its_prediction(url):
    log = PredictionLog(url)
    try:
        first = _record("m1", 0, "req-a")
        log.commit([first], [_event(first)])
        # A concurrent request that answered the same recording second: its event is not its own.
        again = _record("m1", 0, "req-b")
        log.commit([again], [OutboxEvent(_event(again).key, "ev-other", "alarm.raised", {})])
        assert log.outbox_pending() == 1
        [claimed] = log.claim_events(10, lease_s=60)
        assert claimed.event_id == _event(first).event_id
    finally:
        log.close()


def test_delivered_events_are_purged_after_the_keep_time_undelivered_ones_never(url):
    log = PredictionLog(url)
    try:
        records = [_record("m3", i, f"req-{i}") for i in range(3)]
        log.commit(records, [_event(r) for r in records])
        old, recent, failing = log.claim_events(10, lease_s=60)
        log.event_delivered(old)
        log.event_delivered(recent)
        log.event_failed(failing, "HTTP 503", retry_in_s=0)
        with log.engine.begin() as conn:  # delivered ten days ago; the failing one as old
            conn.execute(
                text("UPDATE outbox SET delivered_at = :t WHERE event_id = :e"),
                {"t": datetime(2020, 1, 1), "e": old.event_id},
            )
            conn.execute(
                text("UPDATE outbox SET created_at = :t WHERE event_id = :e"),
                {"t": datetime(2020, 1, 1), "e": failing.event_id},
            )
        assert log.purge_delivered(timedelta(days=7)) == 1
        assert log.purge_delivered(timedelta(days=7)) == 0
        assert log.outbox_pending() == 1  # the undelivered one stays, however old
        with log.engine.connect() as conn:
            left = set(conn.execute(text("SELECT event_id FROM outbox")).scalars())
        assert left == {recent.event_id, failing.event_id}
    finally:
        log.close()


def test_a_leased_event_goes_to_one_worker_until_its_lease_runs_out(url):
    workers = [PredictionLog(url) for _ in range(2)]
    try:
        records = [_record("m1", i, f"r{i}") for i in range(6)]
        workers[0].commit(records, [_event(r) for r in records])
        claimed = [[], []]

        def claim(w: int) -> None:
            claimed[w] = workers[w].claim_events(10, lease_s=60)

        threads = [threading.Thread(target=claim, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [e.event_id for found in claimed for e in found]
        assert sorted(ids) == sorted(_event(r).event_id for r in records)  # each once
        # Delivered events are done; failed ones come back after their retry delay; a worker
        # that died holding a lease gives its events back when the lease expires.
        for e in claimed[0]:
            workers[0].event_delivered(e)
        assert workers[1].claim_events(10, lease_s=60) == []
        for e in claimed[1]:
            workers[1].event_failed(e, "HTTP 500", retry_in_s=0)
        again = workers[0].claim_events(10, lease_s=0)
        assert sorted(e.event_id for e in again) == sorted(e.event_id for e in claimed[1])
        assert all(e.attempts == 1 for e in again)
        time.sleep(0.01)  # the zero-second lease is over
        assert len(workers[1].claim_events(10, lease_s=60)) == len(again)
        assert workers[0].outbox_pending() == len(again)
    finally:
        for w in workers:
            w.close()


class Receiver:
    """A webhook receiver on a fixed port that can be stopped and started again; it checks
    each signature and keeps every event it got (duplicates included)."""

    def __init__(self, port: int):
        self.port = port
        self.received: list[dict] = []
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = signature(SECRET, body)
                if not hmac.compare_digest(expected, self.headers.get(SIGNATURE_HEADER, "")):
                    outer.bad_signatures += 1
                    self.send_response(401)
                else:
                    payload = json.loads(body)
                    assert payload["event_id"] == self.headers[EVENT_HEADER]
                    outer.received.append(payload)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ApiProcess:
    """``uvicorn --factory wearcast.api.main:create_app`` in its own process."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "wearcast.api.main:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_ready(self.proc, self.url, self.log_path)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lifespan exit, leases held die with the process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _streams(model_home, machines: int) -> list[list[dict]]:
    """Per machine: feature rows (with their baselines) of a healthy stretch, a worn one, and
    a long healthy one again, as from one bearing."""
    settings, data = model_home
    prepared = prepare(read_table(data.parent / "table"), settings)
    X, y = prepared.X, prepared.y
    features = [c for c in X.columns if not c.startswith(BASELINE_PREFIX)]
    healthy = np.flatnonzero(y == 0)
    worn = np.flatnonzero(y > 0.5)
    assert len(worn) >= 8, "the fixture's runs have no late-life rows"
    rng = np.random.default_rng(0)
    out = []
    for m in range(machines):
        picks = [*rng.choice(healthy, 6), *rng.choice(worn, 8), *rng.choice(healthy, 10)]
        rows = []
        for i, j in enumerate(picks):
            row = X.iloc[j]
            rows.append(
                {
                    "machine": f"notify-{m}",
                    "bearing": 1,
                    "timestamp": (datetime(2010, 1, 1) + timedelta(minutes=10 * i)).isoformat(),
                    "features": {f: float(row[f]) for f in features},
                    "baseline": {f: float(row[BASELINE_PREFIX + f]) for f in features},
                }
            )
        out.append(rows)
    return out


@pytest.mark.slow
def test_no_notification_is_lost_when_the_receiver_and_the_api_go_down(model_home, tmp_path):
    settings, _ = model_home
    receiver = Receiver(port_to_come_back_to())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path]),
        "WEARCAST_HOME": str(settings.home),
        "WEARCAST_PREDICTION_DB_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "WEARCAST_API_KEYS": json.dumps([f"reader:{hash_key(READER)}"]),
        "WEARCAST_SERVE_MODEL_VERSION": "1",
        "WEARCAST_RELOAD_INTERVAL_S": "0",
        "WEARCAST_DRIFT_INTERVAL_S": "0",
        "WEARCAST_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/hook",
        "WEARCAST_WEBHOOK_SECRET": SECRET,
        "WEARCAST_WEBHOOK_POLL_S": "0.2",
        "WEARCAST_WEBHOOK_BACKOFF_S": "0.2",
        "WEARCAST_WEBHOOK_MAX_BACKOFF_S": "1",
        "WEARCAST_WEBHOOK_LEASE_S": "2",
    }
    api = ApiProcess(env, tmp_path / "api.log")
    streams = _streams(model_home, machines=3)
    states: dict[tuple[str, int], str | None] = {}
    expected: set[tuple[str, int, str, str]] = set()  # machine, bearing, time, type
    pending_at_kill = 0
    receiver.start()
    api.start()
    try:
        for i in range(len(streams[0])):
            if i == 4:
                receiver.stop()  # down through the alarms being raised
            if i == 12:
                db = PredictionLog(env["WEARCAST_PREDICTION_DB_URL"])
                pending_at_kill = db.outbox_pending()
                db.close()
                api.kill()
                api.start()  # same database: the outbox survived the process
            if i == 16:
                receiver.start()
            for stream in streams:
                row = stream[i]
                response = httpx.post(
                    f"{api.url}/v1/predict",
                    json={"rows": [row]},
                    headers={"X-API-Key": READER},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                [answer] = response.json()[0]["bearings"]
                key = (row["machine"], row["bearing"])
                before, now = states.get(key), answer["alarm_state"]
                if (now == "alarm") != (before == "alarm"):
                    kind = "alarm.raised" if now == "alarm" else "alarm.cleared"
                    expected.add((*key, row["timestamp"], kind))
                states[key] = now
        # Every machine went into alarm and out of it: both kinds of event are covered.
        kinds = sorted((e[0], e[3]) for e in expected)
        assert kinds == sorted(
            (f"notify-{m}", kind) for m in range(3) for kind in ("alarm.raised", "alarm.cleared")
        ), expected
        assert pending_at_kill > 0, "nothing was waiting in the outbox when the API was killed"

        def got() -> set[tuple[str, int, str, str]]:
            return {
                (p["machine"], p["bearing"], p["recorded_at"], p["type"]) for p in receiver.received
            }

        deadline = time.monotonic() + GUARD_S
        while not expected <= got():
            assert time.monotonic() < deadline, f"never delivered: {expected - got()}"
            time.sleep(0.2)
        assert got() == expected  # and nothing that did not happen
        assert receiver.bad_signatures == 0
        ids: dict[tuple, set[str]] = {}
        for p in receiver.received:  # a duplicate carries the same id
            key = (p["machine"], p["bearing"], p["recorded_at"], p["type"])
            ids.setdefault(key, set()).add(p["event_id"])
        assert all(len(v) == 1 for v in ids.values())
    finally:
        api.stop()
        receiver.stop()
