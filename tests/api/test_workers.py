"""`wearcast serve --workers N`: one server of several processes, seen from outside as one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from wearcast.api.security import hash_key

from .conftest import ADMIN, free_port, wait_until_ready

pytestmark = pytest.mark.slow

REQUESTS = 40


@pytest.fixture
def two_workers(model_home, tmp_path):
    """A server of two worker processes on the test registry; its log in ``server.log``."""
    settings, _ = model_home
    port = free_port()
    env = {
        **os.environ,
        "WEARCAST_HOME": str(settings.home),
        "WEARCAST_PREDICTION_DB_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "WEARCAST_API_KEYS": json.dumps([f"admin:{hash_key(ADMIN)}"]),
        "WEARCAST_RELOAD_INTERVAL_S": "600",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "wearcast", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped whole at the end, workers included
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, url, log)
        yield url, log
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # what is left of the group
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_every_scrape_counts_the_requests_of_every_worker(two_workers):
    """Each worker kept its own counters, so a scrape showed the share of whichever worker
    answered it (found by an operations trial); every scrape now shows all of them, and each
    worker's served version. Model swaps are in the server's log (it had no INFO handler)."""
    url, log = two_workers
    for _ in range(REQUESTS):  # a connection each: the kernel spreads them over the workers
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    counted = re.compile(r'wearcast_requests_total\{[^}]*route="/healthz"[^}]*\} (\S+)')
    for _ in range(6):
        text = httpx.get(f"{url}/metrics", timeout=30).text
        seen = [float(v) for v in counted.findall(text)]
        # The readiness polls went to /readyz; only the test's own calls reach /healthz.
        assert sum(seen) == REQUESTS, text
    # One series per live worker (uvicorn may have replaced a slow starter: its series goes),
    # each at the champion once that worker has loaded it.
    for _ in range(600):
        text = httpx.get(f"{url}/metrics", timeout=30).text
        versions = dict(re.findall(r'wearcast_model_version\{pid="(\d+)"\} (\S+)', text))
        if len(versions) == 2 and set(versions.values()) == {"1.0"}:
            break
        time.sleep(0.1)
    assert len(versions) == 2 and set(versions.values()) == {"1.0"}, text
    assert len(re.findall(r"serving wearcast-wear version 1", log.read_text())) >= 2


def test_several_workers_need_the_registry_poll(model_home):
    """An admin reload reaches one worker: without the poll the others would serve their old
    model for ever, so the server refuses to start."""
    settings, _ = model_home
    env = {**os.environ, "WEARCAST_HOME": str(settings.home), "WEARCAST_RELOAD_INTERVAL_S": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "wearcast", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a server that does start is stopped whole, workers included
    )
    try:
        said, _ = server.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        pytest.fail("the server started with several workers and no registry poll")
    assert server.returncode != 0 and "registry poll" in said


def test_a_prediction_log_that_cannot_be_opened_stops_the_server_with_one_line(model_home):
    """A database that does not answer was a page of traceback from every worker."""
    settings, _ = model_home
    env = {
        **os.environ,
        "WEARCAST_HOME": str(settings.home),
        "WEARCAST_PREDICTION_DB_URL": f"sqlite:///{settings.home / 'missing' / 'log.db'}",
    }
    done = _serve_refused(env)
    assert "prediction log sqlite:///" in done.stderr and "cannot be opened" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # The checks before the port is bound log nothing of their own: the open-API warning came
    # once from them and again from each worker's app (a user trial).
    assert "no API keys configured" not in done.stderr


def test_serve_refuses_to_start_in_production_without_keys_in_one_line(model_home):
    settings, _ = model_home
    env = {**os.environ, "WEARCAST_HOME": str(settings.home), "WEARCAST_ENV": "production"}
    env.pop("WEARCAST_API_KEYS", None)
    done = _serve_refused(env)
    assert "refusing to start: no API keys configured outside development" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _serve_refused(env: dict) -> subprocess.CompletedProcess:
    """`wearcast serve` that must stop before binding its port, with the CLI's error code."""
    done = subprocess.run(
        [sys.executable, "-m", "wearcast", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    return done
