"""What the retraining DAG's tasks rely on, outside Airflow: a worker pool that is safe in a
foreign host process, batch manifests, unreadable folders reported, shareable file modes, and
the reload of every API replica."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wearcast.config import Settings
from wearcast.dataset import (
    build_table,
    featurize,
    featurize_batch,
    pending_files,
    read_table,
    write_batches,
)
from wearcast.ingest import discover_runs
from wearcast.retrain import reload_replicas
from wearcast.simulate import plan_simulation, simulate
from wearcast.storage import write_atomic


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    plan = plan_simulation(Settings(home=root), runs=2, recordings=20, faults_per_run=1, seed=5)
    simulate(plan, root / "data", workers=1)
    return root / "data"


def test_pool_workers_never_rerun_the_callers_entry_point(sim_data, tmp_path):
    """Inside an Airflow task the main script is Airflow's command line: a worker that
    re-imports it dies, and a pool that respawns it never ends. Here the main script refuses
    to be imported again, as Airflow's does, and the pool starts in a daemonic process, as a
    task under Celery's prefork pool is."""
    script = tmp_path / "entry_point.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing
            import sys
            if __name__ != "__main__":
                raise SystemExit("the entry point ran again in a worker process")
            from wearcast.config import Settings
            from wearcast.dataset import featurize

            def task(answer):
                result = featurize(sys.argv[1], sys.argv[2], Settings(workers=2))
                answer.put((result.processed, result.ingested))

            # As under Celery: the task runs in a daemonic child of a prefork pool.
            ctx = multiprocessing.get_context("fork")
            answer = ctx.Queue()
            child = ctx.Process(target=task, args=(answer,), daemon=True)
            child.start()
            child.join()  # the answer is a few bytes: it does not hold the child up
            print(*answer.get(timeout=5))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), str(sim_data), str(tmp_path / "table")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,  # the old pool respawned its dying workers forever
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["40", "38"]
    assert "ran again" not in done.stderr


def test_batches_travel_as_manifests_and_a_retry_skips_committed_files(sim_data, tmp_path):
    settings = Settings(home=tmp_path / "home", workers=1)
    table = tmp_path / "table"
    tasks = pending_files(sim_data, table)
    paths = write_batches(tasks, tmp_path / "batches", 15)
    assert [Path(p).name for p in paths] == [f"batch-{i:06d}.json" for i in (1, 2, 3)]
    assert featurize_batch(paths[0], table, settings) == 15
    # The same batch again (a retried task whose first try had committed): nothing read twice.
    assert featurize_batch(paths[0], table, settings) == 0
    assert featurize_batch(paths[1], table, settings) == 15
    assert featurize_batch(paths[2], table, settings) == 10
    entries = [
        e["file"] for p in (table / "parts").glob("part-*.json") for e in json.loads(p.read_text())
    ]
    assert sorted(entries) == sorted(t[1] for t in tasks)  # each file in exactly one batch
    result = build_table(sim_data, table, settings)
    assert result.ingested == 38 and result.quarantined == 2
    assert not read_table(table).duplicated(["run", "bearing", "timestamp"]).any()


@pytest.fixture
def unlistable(monkeypatch):
    """Make one folder unlistable (as root, file modes cannot: CI runs as root)."""
    real = os.scandir
    blocked: list[str] = []

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return blocked


def test_an_unreadable_folder_is_reported_not_skipped(sim_data, tmp_path, unlistable):
    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    run = sorted(p for p in data.iterdir() if p.is_dir())[0]
    unlistable.append(str(run))
    with pytest.raises(OSError, match=f"{run.name}/ \\(cannot read folder: Permission denied\\)"):
        discover_runs(data)
    settings = Settings(home=tmp_path / "home", workers=1)
    unreadable = []
    assert len(pending_files(data, tmp_path / "t", unreadable=unreadable)) == 20
    assert [q.file for q in unreadable] == [f"{run.name}/"]  # a folder, by its slash
    result = featurize(data, tmp_path / "t", settings)
    quarantine = json.loads((tmp_path / "t" / "quarantine.json").read_text())
    assert {"file": f"{run.name}/", "reason": "cannot read folder: Permission denied"}.items() <= (
        next(q for q in quarantine if q["file"] == f"{run.name}/").items()
    )
    assert result.quarantined == 1 + 1  # the folder and the other run's faulty file


def test_an_unreadable_recording_is_quarantined_and_the_rest_goes_on(
    sim_data, tmp_path, monkeypatch
):
    """A recording the job may not read stopped featurize ("Permission denied", exit 2): it is
    quarantined with the reason like any bad file (as root chmod cannot show it: the read is
    refused here)."""
    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    locked = sorted(sorted(p for p in data.iterdir() if p.is_dir())[0].glob("2004.*"))[3]
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = featurize(data, tmp_path / "t", Settings(home=tmp_path / "home", workers=1))
    quarantine = json.loads((tmp_path / "t" / "quarantine.json").read_text())
    reasons = {q["file"]: q["reason"] for q in quarantine}
    assert reasons[str(locked.relative_to(data))] == "cannot read: Permission denied"
    assert result.rows > 0 and result.quarantined == 1 + 2  # and the two faulty files


def test_atomic_writes_are_readable_by_the_group(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "state.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


class _Replica(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.dumps({"version": 3, "key": self.headers.get("X-API-Key")}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def replicas():
    servers = []
    for status in (200, 200):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
        server.status = status
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()


def test_every_replica_is_told_to_reload(replicas):
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in replicas]
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
        answers = reload_replicas([*urls, dead], "k", timeout=5)
    assert [answers[u] for u in urls] == [{"version": 3, "key": "k"}] * 2
    assert "unreachable" in answers[dead]  # down: it loads the champion when it starts
    replicas[1].status = 401
    with pytest.raises(RuntimeError, match=f"{urls[1]} answered 401"):
        reload_replicas(urls, "wrong", timeout=5)
