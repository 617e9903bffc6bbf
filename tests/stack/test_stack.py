"""The deployed stack, as processes on loopback: what docker/compose.yaml runs, started by the
same script (docker/entrypoint.sh) with the same settings (docker/stack.env).

PostgreSQL (MLflow's registry, Airflow's metadata, the prediction log), `mlflow server`, two
`wearcast serve` replicas, Redis, and Airflow with the CeleryExecutor (api-server, scheduler,
dag-processor, two Celery workers). Two DAG runs:

1. First recordings: mapped featurize batches on both workers, a first champion, and both
   replicas serving it (told by the DAG: their own registry polling is off here).
2. New recordings arrive; while a featurize batch runs, its Celery worker is killed (SIGKILL,
   the whole process group). The run still completes, no file is featurized twice, the table
   has no duplicate row, and the champion does not move before the gate.

Run by .ci/stack-test.sh (it installs PostgreSQL and Redis from Debian); skipped elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
PORTS = {  # issue 13's range, 13100-13199
    "api-1": 13101,
    "api-2": 13102,
    "postgres": 13132,
    "mlflow": 13150,
    "redis": 13179,
    "airflow-api-server": 13180,
    "worker-1": 13193,
    "worker-2": 13194,
}
DAG = "wearcast_retrain"
POLL_S = 1.0
MAX_POLLS = 1200  # a bound on every wait (20 min at POLL_S), never an assertion on speed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("WEARCAST_STACK_TEST") != "1",
        reason="starts the whole stack (PostgreSQL, Redis, MLflow, Airflow, 2 APIs, about "
        "3 GB of memory): .ci/stack-test.sh runs it with WEARCAST_STACK_TEST=1",
    ),
]


def _get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)  # a busy CI machine answers slowly


def wait_for(what: str, check: Callable[[], object]) -> object:
    for _ in range(MAX_POLLS):
        try:
            if result := check():
                return result
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(POLL_S)
    raise AssertionError(f"gave up waiting for {what}")


def stack_env_file() -> dict[str, str]:
    pairs = {}
    for line in (REPO / "docker" / "stack.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


@dataclass
class Stack:
    work: Path
    env: dict[str, str]
    main_bin: Path
    airflow_bin: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str, airflow: bool = False, **extra: str):
        env = {**self.env, **extra}
        env["PATH"] = f"{self.airflow_bin if airflow else self.main_bin}:{env['PATH']}"
        log = (self.work / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(ENTRYPOINT), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped (or killed) as a whole
        )

    def run(self, *args: str, airflow: bool = False) -> str:
        env = {
            **self.env,
            "PATH": f"{self.airflow_bin if airflow else self.main_bin}:{self.env['PATH']}",
        }
        done = subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done.stdout

    def alive(self, name: str) -> bool:
        if self.procs[name].poll() is None:
            return True
        raise AssertionError(f"{name} exited: see {self.work / 'logs' / (name + '.log')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _postgres(password: str) -> Callable[[], None]:
    """A fresh PostgreSQL server for the stack, with the three databases compose creates."""
    data = Path(f"/tmp/wearcast-stack-postgres-{PORTS['postgres']}")  # the postgres user's

    def stop() -> None:
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if pg_ctl and data.exists():
            subprocess.run(
                [*run_as, str(pg_ctl[-1]), "-D", str(data), "stop", "-m", "fast"],
                check=False,
                capture_output=True,
            )

    stop()  # a server an interrupted run left behind
    env = {
        **os.environ,
        "WEARCAST_TEST_POSTGRES_PORT": str(PORTS["postgres"]),
        "WEARCAST_TEST_POSTGRES_DIR": str(data),
    }
    subprocess.run(
        [str(REPO / "scripts" / "start-test-postgres.sh")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=PORTS["postgres"], user="postgres", dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE wearcast LOGIN SUPERUSER PASSWORD '{password}'")
        sql = (REPO / "docker" / "postgres-init.sql").read_text()
        lines = [line for line in sql.splitlines() if not line.startswith("--")]
        for statement in [*"\n".join(lines).split(";"), "CREATE DATABASE wearcast"]:
            if statement.strip():
                cur.execute(statement)  # one by one: CREATE DATABASE is not transactional
    conn.close()
    return stop


@pytest.fixture(scope="module")
def stack():
    # Not pytest's tmp_path: pytest prunes old base folders, other sessions' runs included.
    work = Path(tempfile.mkdtemp(prefix="wearcast-stack-"))
    (work / "logs").mkdir()
    for tool in ("redis-server", "runuser"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: .ci/stack-test.sh installs it")
    airflow_bin = Path(os.environ.get("WEARCAST_AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin"
    secret = {k: secrets.token_hex(16) for k in ("postgres", "jwt", "airflow", "admin")}
    api_urls = [f"http://127.0.0.1:{PORTS[n]}" for n in ("api-1", "api-2")]
    env = {
        **os.environ,
        **stack_env_file(),
        # Where the services are (compose: service names) and this deployment's folders.
        "BIND_HOST": "127.0.0.1",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(PORTS["postgres"]),
        "POSTGRES_PASSWORD": secret["postgres"],
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(PORTS["mlflow"]),
        "MLFLOW_ARTIFACTS": str(work / "mlflow-artifacts"),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(PORTS["redis"]),
        "AIRFLOW_API_HOST": "127.0.0.1",
        "AIRFLOW_API_PORT": str(PORTS["airflow-api-server"]),
        "AIRFLOW_JWT_SECRET": secret["jwt"],
        "AIRFLOW_ADMIN_PASSWORD": secret["airflow"],
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "API_URLS": ",".join(api_urls),
        "WEARCAST_ADMIN_KEY": secret["admin"],
        "WEARCAST_API_KEYS": json.dumps(
            [f"admin:{hashlib.sha256(secret['admin'].encode()).hexdigest()}"]
        ),
        "WEARCAST_HOME": str(work / "home"),
        "WEARCAST_WORKERS": "2",  # a process pool inside every Celery task
        "PYTHONPATH": str(REPO / "src"),
        # Sizes for a CI run, and only the DAG's reload may move the replicas' model.
        "WEARCAST_FEATURIZE_BATCH_FILES": "40",
        "WEARCAST_SEARCH_BUDGET_S": "4",
        "WEARCAST_RELOAD_INTERVAL_S": "0",
        "WEARCAST_RETRAIN_SCHEDULE": "",  # runs when triggered only
    }
    s = Stack(work, env, Path(sys.executable).parent, airflow_bin)
    stop_postgres = _postgres(secret["postgres"])
    try:
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(PORTS["redis"]),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=(work / "logs" / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        s.procs["redis"] = redis
        s.start("mlflow", "mlflow")
        mlflow = f"http://127.0.0.1:{PORTS['mlflow']}"
        wait_for("MLflow", lambda: s.alive("mlflow") and _get(f"{mlflow}/health").is_success)
        # The name compose uses is accepted too (MLflow 3's host check, stack.env).
        assert _get(f"{mlflow}/health", headers={"Host": "mlflow:5000"}).is_success
        for name in ("api-1", "api-2"):
            s.start(name, "api", API_PORT=str(PORTS[name]))
        s.run("airflow-init", airflow=True)
        s.start(
            "airflow-api-server",
            "airflow-api-server",
            airflow=True,
            AIRFLOW_LOG_SERVER_PORT="13195",
        )
        s.start(
            "airflow-scheduler", "airflow-scheduler", airflow=True, AIRFLOW_LOG_SERVER_PORT="13196"
        )
        s.start(
            "airflow-dag-processor",
            "airflow-dag-processor",
            airflow=True,
            AIRFLOW_LOG_SERVER_PORT="13197",
        )
        for n in (1, 2):
            s.start(
                f"worker-{n}",
                "airflow-worker",
                "--celery-hostname",
                f"w{n}@%h",
                airflow=True,
                AIRFLOW_LOG_SERVER_PORT=str(PORTS[f"worker-{n}"]),
            )
        for url in api_urls:
            wait_for(f"{url}/healthz", lambda url=url: _get(f"{url}/healthz").is_success)
        airflow_api = f"http://127.0.0.1:{PORTS['airflow-api-server']}"
        wait_for(
            "Airflow's API server",
            lambda: (
                s.alive("airflow-api-server")
                and _get(f"{airflow_api}/api/v2/monitor/health").is_success
            ),
        )
        yield s
    finally:
        s.stop()
        stop_postgres()
        print(f"\nstack logs: {work / 'logs'}")  # kept for a look after a failure


def _db(stack: Stack):
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=PORTS["postgres"], user="postgres", dbname="airflow"
    )
    conn.autocommit = True
    return conn


def _query(stack: Stack, sql: str, *params) -> list[tuple]:
    conn = _db(stack)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _task_instances(stack: Stack, run_id: str) -> list[dict]:
    rows = _query(
        stack,
        "SELECT task_id, map_index, state, try_number, pid, start_date, end_date "
        "FROM task_instance WHERE dag_id = %s AND run_id = %s",
        DAG,
        run_id,
    )
    keys = ("task_id", "map_index", "state", "try_number", "pid", "start", "end")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _run_state(stack: Stack, run_id: str) -> str | None:
    rows = _query(stack, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG, run_id)
    return rows[0][0] if rows else None


def _xcom(stack: Stack, run_id: str, task_id: str):
    rows = _query(
        stack,
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s "
        "AND key = 'return_value'",
        DAG,
        run_id,
        task_id,
    )
    value = rows[0][0]
    return json.loads(value) if isinstance(value, str) else value


def _trigger(stack: Stack, run_id: str) -> None:
    wait_for(
        "the DAG to be parsed",
        lambda: (
            stack.alive("airflow-dag-processor")
            and _query(stack, "SELECT 1 FROM dag WHERE dag_id = %s AND NOT is_paused", DAG)
        ),
    )
    stack.run("airflow", "dags", "trigger", DAG, "--run-id", run_id, airflow=True)


def _wait_done(stack: Stack, run_id: str, during: Callable[[], None] = lambda: None) -> str:
    def done():
        for name in ("airflow-scheduler", "airflow-api-server"):
            stack.alive(name)
        during()
        state = _run_state(stack, run_id)
        return state if state in ("success", "failed") else None

    return wait_for(f"DAG run {run_id}", done)


def _served_versions(urls: list[str]) -> list[int | None]:
    return [_get(f"{u}/readyz").json().get("version") for u in urls]


def _champion(stack: Stack) -> int | None:
    from wearcast import registry
    from wearcast.config import Settings

    settings = Settings(
        home=stack.env["WEARCAST_HOME"], tracking_uri=f"http://127.0.0.1:{PORTS['mlflow']}"
    )
    return registry.champion_version(registry.connect(settings), settings)


def _worker_of(stack: Stack, pid: int) -> str:
    """The stack's process (a Celery worker) that ``pid`` descends from."""
    ours = {p.pid: name for name, p in stack.procs.items()}
    while pid > 1:
        if pid in ours:
            return ours[pid]
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid
    raise ProcessLookupError("not a process of the stack")


def _usage_by_service(stack: Stack) -> dict[str, tuple[float, float]]:
    """(resident memory in MB, CPU seconds so far) of each service's whole process group."""
    groups = {p.pid: name for name, p in stack.procs.items()}
    usage: dict[str, list[float]] = {}
    page_mb, ticks = os.sysconf("SC_PAGE_SIZE") / 2**20, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (name := groups.get(int(fields[2]))) is not None:  # fields[2]: process group
            total = usage.setdefault(name, [0.0, 0.0])
            total[0] += int(fields[21]) * page_mb  # rss
            total[1] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return {name: (mb, cpu) for name, (mb, cpu) in sorted(usage.items())}


def _manifest_files(table_dir: Path) -> list[str]:
    parts = table_dir / "parts"
    return [e["file"] for p in sorted(parts.glob("part-*.json")) for e in json.loads(p.read_text())]


def test_stack_retrains_serves_and_survives_a_lost_worker(stack: Stack):
    from wearcast.config import Settings
    from wearcast.dataset import read_table
    from wearcast.simulate import plan_simulation, simulate

    home = Path(stack.env["WEARCAST_HOME"])
    urls = stack.env["API_URLS"].split(",")
    settings = Settings(home=home)
    table_dir = settings.watched_table_dir  # the DAG's
    assert [_get(f"{u}/readyz").status_code for u in urls] == [503, 503]  # no model yet

    # --- run 1: the first recordings, a first champion on both replicas ----------------
    simulate(
        plan_simulation(settings, runs=2, recordings=40, faults_per_run=1, seed=21), home / "data"
    )
    _trigger(stack, "first")
    assert _wait_done(stack, "first") == "success"
    tis = _task_instances(stack, "first")
    batches = [t for t in tis if t["task_id"] == "featurize_batch"]
    assert len(batches) == 2 and all(t["state"] == "success" for t in batches)
    assert _champion(stack) == 1
    assert _served_versions(urls) == [1, 1]
    reloads = _xcom(stack, "first", "reload_api")
    assert sorted(reloads) == sorted(urls)
    for t in sorted(batches, key=lambda t: t["map_index"]):
        print(
            f"first run, featurize_batch[{t['map_index']}] (40 files, 2 processes): "
            f"{(t['end'] - t['start']).total_seconds():.1f} s"
        )

    # --- run 2: new recordings; the worker running a batch is killed mid-batch ---------
    simulate(
        plan_simulation(settings, runs=1, recordings=120, seed=22, run_prefix="late"), home / "data"
    )
    _trigger(stack, "second")
    killed: dict = {}

    def kill_a_busy_worker() -> None:
        if killed:
            return
        for t in _task_instances(stack, "second"):
            if t["task_id"] != "featurize_batch" or t["state"] != "running" or not t["pid"]:
                continue
            try:
                children = Path(f"/proc/{t['pid']}/task/{t['pid']}/children").read_text()
                worker = _worker_of(stack, t["pid"])
                task_group = os.getpgid(t["pid"])
            except (ProcessLookupError, FileNotFoundError):
                continue
            if not children.split():  # its process pool has not started yet: not mid-batch
                continue
            # The whole worker: Celery, the task supervisor, the task and its pool.
            for group in {stack.procs[worker].pid, task_group}:
                os.killpg(group, signal.SIGKILL)
            killed.update(worker=worker, map_index=t["map_index"], pool=len(children.split()))
            return

    champion_before_gate: set = set()

    def watch() -> None:
        kill_a_busy_worker()
        gate = [t for t in _task_instances(stack, "second") if t["task_id"] == "gate"]
        if not gate or gate[0]["state"] not in ("success", "running"):
            champion_before_gate.add(_champion(stack))

    assert _wait_done(stack, "second", during=watch) == "success"
    assert killed, "no featurize batch was caught running"
    assert killed["worker"] in ("worker-1", "worker-2")
    print(f"killed {killed['worker']} while it ran featurize_batch[{killed['map_index']}]")
    tis = _task_instances(stack, "second")
    batches = {t["map_index"]: t for t in tis if t["task_id"] == "featurize_batch"}
    assert len(batches) == 3 and all(t["state"] == "success" for t in batches.values())
    assert batches[killed["map_index"]]["try_number"] >= 2  # retried on the other worker
    assert champion_before_gate == {1}
    files = _manifest_files(table_dir)
    assert len(files) == len(set(files)) == 80 + 120  # each file featurized exactly once
    table = read_table(table_dir)
    assert not table.duplicated(["run", "bearing", "timestamp"]).any()
    assert len(table) == (80 - 2 + 120) * 4
    champion = _champion(stack)
    decision = _xcom(stack, "second", "gate")
    assert champion == (2 if decision["promoted"] else 1)
    assert _served_versions(urls) == [champion, champion]
    for name, (mb, cpu) in _usage_by_service(stack).items():
        print(f"{name:22s} {mb:7.0f} MB resident, {cpu:7.1f} CPU s over the whole test")
    print(
        f"second run: gate {'promoted' if decision['promoted'] else 'did not promote'} version 2 "
        f"({decision['reason']}); both replicas serve version {champion}"
    )
