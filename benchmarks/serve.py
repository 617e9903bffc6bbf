"""Serving latency and throughput: wearcast's API against `mlflow models serve`, same model.

    python benchmarks/serve.py [--seconds 8] [--clients 8] [--family random_forest] [--port 18080]

In one run: trains and registers a model in a temporary WEARCAST_HOME, starts `wearcast serve`
(1 uvicorn worker) and `mlflow models serve` (its default, 1 worker) twice on loopback: the
registered model as wearcast logs it (with a 264-column signature, which mlflow checks column
by column on every request) and the same fitted Pipeline logged as most mlflow users log one,
without a signature. It drives all three with the same asyncio httpx client, one scenario at
a time:
(a) a raw 4-channel recording upload (wearcast only: mlflow cannot take raw signals), for four
    machines in turn, so after their first 20 recordings their baselines are complete,
(b) one feature row, (c) a batch of 100 feature rows, to wearcast's /v1/predict for bearings of
    a new machine each request (the worst case: their baselines are made in the request) and
    for new recordings of known bearings (baselines complete: the usual case);
each with 1 client (latency) and with --clients concurrent clients (throughput); then
(d) /healthz, 1 client, alone and while --abusers clients send abusive uploads (one line of
100,000 tab-separated values each, the probe of issue 12).
wearcast's /v1/predict also logs every prediction and computes alarms and remaining life from
the bearing's history; /v2 .../infer is the bare model, for a like-for-like comparison.
Prints p50/p95/p99 latency, requests/s and the ratios against the faster mlflow server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
import pydantic_core
from sqlalchemy import text

from wearcast import registry
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.prediction_log import PredictionLog
from wearcast.retrain import train_challenger
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import prepare

NO_SIGNATURE = "wearcast-wear-no-signature"


def train_model(settings: Settings, work: Path, family: str) -> tuple[list[str], np.ndarray, Path]:
    simulate(
        plan_simulation(settings, runs=2, recordings=80, seed=3),
        work / "data",
        workers=settings.workers,
    )
    featurize(work / "data", work / "table", settings)
    data = prepare(read_table(work / "table"), settings)
    config = {"family": family, "pca_components": 0, "features": "both"}
    version = train_challenger(settings, work / "table", config=config)["version"]
    client = registry.connect(settings)
    registry.promote(client, settings, version, "benchmark")
    # The same fitted Pipeline, logged as mlflow's own examples log one: no signature.
    with mlflow.start_run(run_name="no-signature"):
        mlflow.sklearn.log_model(
            registry.load_version(client, settings, version),
            name="model",
            registered_model_name=NO_SIGNATURE,
            # skops (mlflow's default) cannot store wearcast's classes; users pick cloudpickle.
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        )
    columns = list(data.X.columns)
    return (
        columns,
        data.X.to_numpy(dtype=float),
        sorted((work / "data" / "sim_run_01").glob("2004.*"))[-1],
    )


def start(cmd: list[str], env: dict, ready_url: str, timeout: float = 120) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited with {proc.returncode}")
        time.sleep(0.25)
    raise SystemExit(f"{' '.join(cmd)} did not become ready at {ready_url}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# Request numbers, never reused in a run: a request that repeated an earlier scenario's
# recording would be a retry, answered from the log without scoring.
_REQUESTS = itertools.count()


async def drive(make_request, clients: int, seconds: float) -> dict:
    """Send requests from ``clients`` concurrent loops for ``seconds``; latencies and rate."""
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as http:
        end = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                response = await make_request(http, next(_REQUESTS))
                latencies.append(time.perf_counter() - t0)
                errors += response.status_code != 200

        start_t = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - start_t
    ms = np.array(latencies) * 1000
    return {
        "p50": np.percentile(ms, 50),
        "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99),
        "rps": len(ms) / elapsed,
        "n": len(ms),
        "errors": errors,
    }


def abuse(url: str, clients: int, stop, answered) -> None:
    """Abusive uploads from ``clients`` concurrent loops until ``stop`` is set: one line of
    100,000 tab-separated values each. Runs in its own process, so the probe's client does
    not compete with it for an event loop."""
    body = b"0.1\t" * 100_000

    async def loop(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await http.post(
                    f"{url}/v1/recordings",
                    params={"machine": "abuse", "timestamp": "2004-01-01T00:00:00"},
                    content=body,
                    headers={"content-type": "text/plain"},
                )
                outcome = response.status_code
            except httpx.TransportError as exc:  # e.g. a keep-alive connection closed
                outcome = type(exc).__name__
            answered[outcome] = answered.get(outcome, 0) + 1

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await asyncio.gather(*(loop(http) for _ in range(clients)))

    asyncio.run(run())


def probe_under_abuse(url: str, abusers: int | None, seconds: float) -> tuple[dict, dict]:
    """/healthz latency from one client, alone or while ``abusers`` clients abuse the API."""

    async def healthz(http, _i):
        return await http.get(f"{url}/healthz")

    if not abusers:
        return asyncio.run(drive(healthz, 1, seconds)), {}
    with multiprocessing.Manager() as manager:
        stop, answered = manager.Event(), manager.dict()
        worker = multiprocessing.Process(target=abuse, args=(url, abusers, stop, answered))
        worker.start()
        time.sleep(2.0)  # let the abuse build up
        result = asyncio.run(drive(healthz, 1, seconds))
        stop.set()
        worker.join()
        return result, dict(answered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--family", default="random_forest")
    parser.add_argument("--port", type=int, default=18080, help="this and the next two")
    parser.add_argument("--abusers", type=int, default=45, help="abusive clients in (d)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wearcast-bench-serve-"))
    settings = Settings(home=work / "home", workers=2)
    print(f"training a {args.family} model in {work}")
    columns, X, recording = train_model(settings, work, args.family)
    features = [c for c in columns if not c.startswith("baseline_")]
    env = {
        **os.environ,
        "WEARCAST_HOME": str(settings.home),
        "WEARCAST_RELOAD_INTERVAL_S": "0",
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        # Both servers' own tools (uvicorn, mlflow) come from this environment.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    ports = [str(args.port + k) for k in range(3)]
    ours, theirs, theirs_bare = (f"http://127.0.0.1:{p}" for p in ports)

    def mlflow_cmd(uri: str, port: str) -> list[str]:
        return [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-p",
            port,
            "-h",
            "127.0.0.1",
        ]

    servers: list[subprocess.Popen] = []
    body = recording.read_bytes()
    row = dict(zip(features, X[0, : len(features)].tolist(), strict=True))

    def as_json(value: dict) -> dict:
        # Encoded by pydantic's encoder for every server alike: the standard library's, which
        # httpx's json= uses, took 18 ms of the client's time for 100 rows, not the server's.
        return {
            "content": pydantic_core.to_json(value),
            "headers": {"content-type": "application/json"},
        }

    def rows_json(n: int, i: int, *, known: bool = False) -> dict:
        """``n`` rows of request ``i``: four bearings of a machine never seen before (their
        baselines are made in the request), or (``known``) new recordings of the four bearings
        of one machine, whose baselines are complete after its first 20 recordings."""
        machine, first = (f"fleet-{n}", i * (n + 3) // 4) if known else (f"bench-{i}", 0)
        return {
            "rows": [
                {
                    "machine": machine,
                    "bearing": 1 + (i + k) % 4 if known else 1 + k % 4,
                    "timestamp": (
                        datetime(2004, 1, 1) + timedelta(minutes=10 * (first + k // 4))
                    ).isoformat(),
                    "features": row,
                }
                for k in range(n)
            ]
        }

    def infer_json(n: int) -> dict:
        tensor = {"name": "input-0", "shape": [n, len(columns)], "datatype": "FP64"}
        return {"inputs": [tensor | {"data": X[:n].tolist()}]}

    def split_json(n: int) -> dict:
        return {"dataframe_split": {"columns": columns, "data": X[:n].tolist()}}

    scenarios = {
        "(a) raw recording, wearcast /v1/recordings": lambda h, i: h.post(
            f"{ours}/v1/recordings",
            params={
                "machine": f"m{i % 4}",
                "timestamp": f"2004-01-{1 + i // 1440 % 28:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00",
            },
            content=body,
            headers={"content-type": "text/plain"},
        ),
        "(b) 1 feature row, wearcast /v1/predict": lambda h, i: h.post(
            f"{ours}/v1/predict", **as_json(rows_json(1, i))
        ),
        "(b) 1 feature row, wearcast /v1/predict, known bearings": lambda h, i: h.post(
            f"{ours}/v1/predict", **as_json(rows_json(1, i, known=True))
        ),
        "(b) 1 feature row, wearcast /v2 infer": lambda h, i: h.post(
            f"{ours}/v2/models/{settings.model_name}/infer",
            **as_json(infer_json(1)),
        ),
        "(b) 1 feature row, mlflow /invocations": lambda h, i: h.post(
            f"{theirs}/invocations", **as_json(split_json(1))
        ),
        "(b) 1 feature row, mlflow /invocations, no signature": lambda h, i: h.post(
            f"{theirs_bare}/invocations", **as_json(split_json(1))
        ),
        "(c) 100 feature rows, wearcast /v1/predict": lambda h, i: h.post(
            f"{ours}/v1/predict", **as_json(rows_json(100, i))
        ),
        "(c) 100 feature rows, wearcast /v1/predict, known bearings": lambda h, i: h.post(
            f"{ours}/v1/predict", **as_json(rows_json(100, i, known=True))
        ),
        "(c) 100 feature rows, wearcast /v2 infer": lambda h, i: h.post(
            f"{ours}/v2/models/{settings.model_name}/infer",
            **as_json(infer_json(100)),
        ),
        "(c) 100 feature rows, mlflow /invocations": lambda h, i: h.post(
            f"{theirs}/invocations", **as_json(split_json(100))
        ),
        "(c) 100 feature rows, mlflow /invocations, no signature": lambda h, i: h.post(
            f"{theirs_bare}/invocations", **as_json(split_json(100))
        ),
    }
    results = {}
    try:
        wearcast_cmd = [sys.executable, "-m", "wearcast", "serve", "--port", ports[0]]
        servers.append(start(wearcast_cmd, env, f"{ours}/readyz"))
        servers.append(
            start(
                mlflow_cmd(f"models:/{settings.model_name}@champion", ports[1]),
                env,
                f"{theirs}/ping",
            )
        )
        servers.append(
            start(mlflow_cmd(f"models:/{NO_SIGNATURE}/1", ports[2]), env, f"{theirs_bare}/ping")
        )
        for name, request in scenarios.items():
            for clients in (1, args.clients):
                results[(name, clients)] = asyncio.run(drive(request, clients, args.seconds))
                r = results[(name, clients)]
                print(
                    f"{name}, {clients} client(s): p50 {r['p50']:.1f} ms, "
                    f"{r['rps']:.0f} req/s, errors {r['errors']}",
                    flush=True,
                )
        probes = {
            "(d) /healthz, alone": None,
            f"(d) /healthz, while {args.abusers} clients send abusive uploads": args.abusers,
        }
        for name, abusers in probes.items():
            results[(name, 1)], answered = probe_under_abuse(ours, abusers, args.seconds)
            r = results[(name, 1)]
            print(
                f"{name}: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, errors {r['errors']}"
                + (f"; abusive uploads answered {answered}" if answered else ""),
                flush=True,
            )
    finally:
        for proc in servers:
            stop(proc)
    print(f"\nmodel: {args.family}; {os.cpu_count()} cores; {args.seconds:g} s per scenario\n")
    print(
        "| scenario | clients | p50 ms | p95 ms | p99 ms | requests/s | errors |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for (name, clients), r in results.items():
        print(
            f"| {name} | {clients} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['rps']:.0f} | {r['errors']} |"
        )
    # What the log holds after the run, the fleet-sizing figures: a prediction's stored
    # features and answer, and the file per prediction (baseline samples of the many new
    # machines included, 20 rows of features per bearing: far more than a real fleet has).
    log = PredictionLog(settings.resolved_prediction_db_url)
    with log.engine.connect() as conn:
        n, features, answer = conn.execute(
            text(
                "SELECT count(*), avg(coalesce(length(feature_values), length(features))), "
                "avg(length(answer)) FROM predictions"
            )
        ).one()
    log.close()
    size = sum(f.stat().st_size for f in settings.home.glob("predictions.db*"))
    print(
        f"\nprediction log: {n} predictions, features {features:.0f} and answer {answer:.0f} "
        f"bytes each; the file {size / 1e6:.1f} MB, {size / n:.0f} bytes a prediction\n"
    )
    for label in ("(b) 1 feature row", "(c) 100 feature rows"):
        for clients in (1, args.clients):
            mlflow_rps = max(
                results[(f"{label}, mlflow /invocations{variant}", clients)]["rps"]
                for variant in ("", ", no signature")
            )
            for route in ("/v1/predict", "/v1/predict, known bearings", "/v2 infer"):
                ours_rps = results[(f"{label}, wearcast {route}", clients)]["rps"]
                print(
                    f"{label}, {clients} client(s): "
                    f"wearcast {route} / faster mlflow = {ours_rps / mlflow_rps:.2f}x"
                )


if __name__ == "__main__":
    main()
