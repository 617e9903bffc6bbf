"""A registry with two trained versions, and a live API server on loopback."""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from wearcast import registry
from wearcast.api.main import create_app
from wearcast.api.security import hash_key
from wearcast.baseline import BASELINE_PREFIX
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.retrain import train_challenger
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import prepare

READER, ADMIN = "reader-key-for-tests", "admin-key-for-tests"
CONFIG_V1 = {
    "family": "random_forest",
    "params": {"n_estimators": 40},
    "pca_components": 0,
    "features": "both",
}
CONFIG_V2 = {
    "family": "extra_trees",
    "params": {"n_estimators": 40},
    "pca_components": 0,
    "features": "both",
}


@pytest.fixture(scope="session")
def model_home(tmp_path_factory) -> tuple[Settings, Path]:
    """Version 1 (champion) and version 2 (registered, not champion) of the wear model."""
    root = tmp_path_factory.mktemp("api")
    settings = Settings(home=root / "home", workers=2)
    simulate(plan_simulation(settings, runs=2, recordings=60, seed=6), root / "data", workers=2)
    featurize(root / "data", root / "table", settings)
    for config in (CONFIG_V1, CONFIG_V2):
        train_challenger(settings, root / "table", config=config)
    client = registry.connect(settings)
    registry.promote(client, settings, 1, "test fixture")
    return settings, root / "data"


@pytest.fixture
def client(model_home, tmp_path):
    """An in-process client of an API on its own prediction log, with the reader key."""
    with TestClient(create_app(api_settings(model_home, tmp_path))) as c:
        c.headers["X-API-Key"] = READER
        yield c


def api_settings(model_home, tmp_path: Path, **overrides) -> Settings:
    settings, _ = model_home
    values = {
        "home": settings.home,
        "prediction_db_url": f"sqlite:///{tmp_path / 'predictions.db'}",
        "api_keys": [f"reader:{hash_key(READER)}", f"admin:{hash_key(ADMIN)}"],
        "reload_interval_s": 0,
        "workers": 1,
    }
    return Settings(**(values | overrides))


def bearing_rows_with_gain(model_home, gain: float) -> list[dict]:
    """A healthy training bearing's feature rows in time order (no baseline: the log keeps
    it), its level features times ``gain`` from the 30th recording on."""
    settings, data = model_home
    prepared = prepare(read_table(data.parent / "table"), settings)
    frame = prepared.frame
    features = [c for c in prepared.X.columns if not c.startswith(BASELINE_PREFIX)]
    healthy = frame.groupby(["run", "bearing"])["wear_piecewise"].max() == 0
    run, bearing = healthy[healthy].index[0]
    rows = frame[(frame.run == run) & (frame.bearing == bearing)].sort_values("timestamp")
    scale_free = {"kurtosis", "crest", "shape", "impulse", "clearance", "skewness", "env_kurtosis"}
    out = []
    for i, (_, row) in enumerate(rows.iterrows()):
        factor = gain if i >= 30 else 1.0
        values = {
            f: float(row[f]) * (1.0 if f in scale_free or f.endswith("_snr") else factor)
            for f in features
        }
        out.append(
            {
                "machine": f"m-gain-{gain:g}",
                "bearing": 1,
                "timestamp": row["timestamp"].isoformat(),
                "features": values,
            }
        )
    return out


def wait_until_ready(process: subprocess.Popen, url: str, log: Path, tries: int = 1200) -> None:
    """Until the server at ``url`` answers /readyz with 200: bounded by tries, not seconds (a
    busy machine starts servers slowly); fails with its log if it stops or never gets there."""
    for _ in range(tries):
        if process.poll() is not None:
            pytest.fail(f"the server stopped: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server never became ready: {log.read_text()[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_to_come_back_to() -> int:
    """A free loopback port below the kernel's ephemeral range, for a server stopped and
    started again on it: a port from that range, once free, can be taken meanwhile as the
    source port of any outgoing connection (one to that very port connects to itself), and
    the restart fails with "Address already in use"."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.Random().sample(range(max(1024, low - 10_000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range ({low})")


class LiveServer:
    """uvicorn serving an app in a thread, on a free loopback port.

    Start-up is retried on a new port a bounded number of times: a port found free can be
    taken by another process before uvicorn binds it.
    """

    attempts = 3
    startup_guard_s = 120  # only against a hang; start-up normally takes well under a second

    def __init__(self, app):
        self.app = app
        self.port = 0
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        for _ in range(self.attempts):
            self.port = free_port()
            self.server = uvicorn.Server(
                uvicorn.Config(
                    self.app,
                    host="127.0.0.1",
                    port=self.port,
                    log_level="warning",
                    http="wearcast.api.protocol:BoundedHeadProtocol",  # as `wearcast serve`
                )
            )
            self.thread = threading.Thread(target=self.server.run, daemon=True)
            self.thread.start()
            deadline = time.monotonic() + self.startup_guard_s
            # A failed bind or lifespan ends the thread (uvicorn exits it): try again.
            while self.thread.is_alive() and not self.server.started:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
            if self.server.started:
                return self
            self.thread.join()
        raise RuntimeError(f"uvicorn did not start in {self.attempts} attempts")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
