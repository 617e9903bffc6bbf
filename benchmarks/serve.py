"""Serving latency and throughput: wearcast's API against `mlflow models serve`, same model.

    python benchmarks/serve.py [--seconds 10] [--clients 8] [--family random_forest]

In one run: trains and registers a model in a temporary WEARCAST_HOME, starts `wearcast serve`
(1 uvicorn worker) and `mlflow models serve` (its default, 1 worker) on loopback, then drives
both with the same asyncio httpx client, one scenario at a time:
(a) a raw 4-channel recording upload (wearcast only: mlflow cannot take raw signals), for four
    machines in turn, so after their first 20 recordings their baselines are complete,
(b) one feature row, (c) a batch of 100 feature rows;
each with 1 client (latency) and with --clients concurrent clients (throughput).
wearcast's /v1/predict also logs every prediction and computes alarms and remaining life from
the bearing's history; /v2 .../infer is the bare model, for a like-for-like comparison.
Prints p50/p95/p99 latency, requests/s and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from wearcast import registry
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.retrain import train_challenger
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import prepare


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


async def drive(make_request, clients: int, seconds: float) -> dict:
    """Send requests from ``clients`` concurrent loops for ``seconds``; latencies and rate."""
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as http:
        end = time.perf_counter() + seconds
        counter = iter(range(10**9))

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                response = await make_request(http, next(counter))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--family", default="random_forest")
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
    ours = "http://127.0.0.1:18080"
    theirs = "http://127.0.0.1:18081"
    mlflow_cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{settings.model_name}@champion",
        "--env-manager",
        "local",
        "-p",
        "18081",
        "-h",
        "127.0.0.1",
    ]
    servers: list[subprocess.Popen] = []
    body = recording.read_bytes()
    row = dict(zip(features, X[0, : len(features)].tolist(), strict=True))

    def rows_json(n: int, i: int) -> dict:
        return {
            "rows": [
                {
                    "machine": f"bench-{i}",
                    "bearing": 1 + k % 4,
                    "timestamp": f"2004-01-01T{k // 240 % 24:02d}:{k // 4 % 60:02d}:00",
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
            f"{ours}/v1/predict", json=rows_json(1, i)
        ),
        "(b) 1 feature row, wearcast /v2 infer": lambda h, i: h.post(
            f"{ours}/v2/models/{settings.model_name}/infer",
            json=infer_json(1),
        ),
        "(b) 1 feature row, mlflow /invocations": lambda h, i: h.post(
            f"{theirs}/invocations", json=split_json(1)
        ),
        "(c) 100 feature rows, wearcast /v1/predict": lambda h, i: h.post(
            f"{ours}/v1/predict", json=rows_json(100, i)
        ),
        "(c) 100 feature rows, wearcast /v2 infer": lambda h, i: h.post(
            f"{ours}/v2/models/{settings.model_name}/infer",
            json=infer_json(100),
        ),
        "(c) 100 feature rows, mlflow /invocations": lambda h, i: h.post(
            f"{theirs}/invocations", json=split_json(100)
        ),
    }
    results = {}
    try:
        wearcast_cmd = [sys.executable, "-m", "wearcast", "serve", "--port", "18080"]
        servers.append(start(wearcast_cmd, env, f"{ours}/readyz"))
        servers.append(start(mlflow_cmd, env, f"{theirs}/ping"))
        for name, request in scenarios.items():
            for clients in (1, args.clients):
                results[(name, clients)] = asyncio.run(drive(request, clients, args.seconds))
                r = results[(name, clients)]
                print(
                    f"{name}, {clients} client(s): p50 {r['p50']:.1f} ms, "
                    f"{r['rps']:.0f} req/s, errors {r['errors']}",
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
    for label in ("(b) 1 feature row", "(c) 100 feature rows"):
        for clients in (1, args.clients):
            mlflow_rps = results[(f"{label}, mlflow /invocations", clients)]["rps"]
            for route in ("/v1/predict", "/v2 infer"):
                ours_rps = results[(f"{label}, wearcast {route}", clients)]["rps"]
                print(
                    f"{label}, {clients} client(s): "
                    f"wearcast {route} / mlflow = {ours_rps / mlflow_rps:.2f}x"
                )


if __name__ == "__main__":
    main()
