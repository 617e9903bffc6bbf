"""Open Inference Protocol: 1,000 rows in one request, binary tensors against JSON.

    python benchmarks/oip_binary.py [--rows 1000] [--requests 40]

In one run: trains and registers a model in a temporary WEARCAST_HOME (as benchmarks/serve.py
does), starts `wearcast serve` (1 uvicorn worker) on loopback, then sends the same rows both
ways, alternating JSON and binary so both see the same machine load:
(a) the request answered: bodies encoded once beforehand, sent by httpx, timed from sending
    the request to the decoded answer: the server's share (reading, parsing, model, encoding);
(b) end to end with Triton's client (`tritonclient.http`), encoding and decoding included;
beside them, the floor: the same model predicting the same rows in this process, no HTTP.
JSON is FP64 tensors as JSON numbers; binary is the binary tensor data extension, FP64 in and
out. Prints each median and 90th percentile, the body sizes, and JSON / binary ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import tritonclient.http as triton
from serve import start, stop, train_model

from wearcast import registry
from wearcast.config import Settings

PORT = 15100  # issue 15's range on the shared development machines


def tensor(rows: np.ndarray, binary: bool) -> list[triton.InferInput]:
    inputs = triton.InferInput("input-0", list(rows.shape), "FP64")
    inputs.set_data_from_numpy(rows, binary_data=binary)
    return [inputs]


def bodies(rows: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The two request bodies, as tritonclient lays them out."""
    n, width = rows.shape
    meta = {"name": "input-0", "shape": [n, width], "datatype": "FP64"}
    as_json = json.dumps(
        {
            "inputs": [meta | {"data": rows.ravel().tolist()}],
            "outputs": [{"name": "wear", "parameters": {"binary_data": False}}],
        }
    ).encode()
    raw = rows.astype("<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [meta | {"parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "wear", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return {
        "JSON": (as_json, {}),
        "binary": (header + raw, {"Inference-Header-Content-Length": str(len(header))}),
    }


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=40, help="per encoding and scenario")
    parser.add_argument("--family", default="random_forest")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wearcast-bench-oip-"))
    settings = Settings(home=work / "home", workers=2)
    print(f"training a {args.family} model in {work}", flush=True)
    columns, X, _ = train_model(settings, work, args.family)
    rows = np.ascontiguousarray(np.resize(X, (args.rows, len(columns))), dtype=np.float64)
    encoded = bodies(rows)
    pipeline, _ = registry.load_model(settings)
    frame = pd.DataFrame(rows, columns=columns)
    largest = max(len(body) for body, _ in encoded.values())
    env = {
        **os.environ,
        "WEARCAST_HOME": str(settings.home),
        "WEARCAST_RELOAD_INTERVAL_S": "0",
        # The JSON body of 1,000 rows is over the default 4 MB limit; binary is not.
        "WEARCAST_MAX_UPLOAD_BYTES": str(2 * largest),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
    }
    url = f"http://127.0.0.1:{PORT}"
    route = f"{url}/v2/models/{settings.model_name}/infer"
    server = start(
        [sys.executable, "-m", "wearcast", "serve", "--port", str(PORT)], env, f"{url}/readyz"
    )
    times: dict[tuple[str, str], list[float]] = {}
    answers: dict[str, np.ndarray] = {}
    try:
        with httpx.Client(timeout=120) as http:

            def raw(kind: str) -> np.ndarray:
                body, headers = encoded[kind]
                response = http.post(route, content=body, headers=headers)
                response.raise_for_status()
                length = response.headers.get("Inference-Header-Content-Length")
                result = triton.InferResult.from_response_body(
                    response.content, header_length=length
                )
                return result.as_numpy("wear")

            def with_client(kind: str) -> np.ndarray:
                binary = kind == "binary"
                # A new client per request: the client takes about 5 s to encode 1,000 JSON
                # rows on a busy machine, and a pooled connection idle that long can be closed
                # by uvicorn's 5 s keep-alive as the request goes out ("connection closed").
                client = triton.InferenceServerClient(f"127.0.0.1:{PORT}", network_timeout=120)
                result = client.infer(
                    settings.model_name,
                    tensor(rows, binary),
                    outputs=[triton.InferRequestedOutput("wear", binary_data=binary)],
                )
                client.close()
                return result.as_numpy("wear")

            scenarios = {
                "(a) request answered (httpx)": raw,
                "(b) end to end (tritonclient)": with_client,
            }
            answers["model alone"] = pipeline.predict(frame)
            for _ in range(args.requests):
                t0 = time.perf_counter()
                pipeline.predict(frame)
                times.setdefault(("(0) model alone, in process", "-"), []).append(
                    time.perf_counter() - t0
                )
            for scenario, call in scenarios.items():
                for kind in ("JSON", "binary"):  # warm-up, and the answers to compare
                    answers[f"{scenario} {kind}"] = call(kind)
                for i in range(args.requests):
                    order = ("JSON", "binary") if i % 2 == 0 else ("binary", "JSON")
                    for kind in order:
                        t0 = time.perf_counter()
                        call(kind)
                        times.setdefault((scenario, kind), []).append(time.perf_counter() - t0)
    finally:
        stop(server)
    reference = next(iter(answers.values()))
    same = all(np.array_equal(reference, wear) for wear in answers.values())
    print(
        f"\n{args.rows} rows x {len(columns)} FP64 columns; {args.requests} requests per "
        f"encoding and scenario, alternating; {os.cpu_count()} cores; model: {args.family}"
    )
    print(
        f"request body: JSON {len(encoded['JSON'][0]) / 1e6:.2f} MB, "
        f"binary {len(encoded['binary'][0]) / 1e6:.2f} MB; answers identical: {same}\n"
    )
    print("| scenario | encoding | p50 ms | p90 ms | requests |\n|---|---|---:|---:|---:|")
    for (scenario, kind), seconds in times.items():
        s = summary(seconds)
        print(f"| {scenario} | {kind} | {s['p50']:.1f} | {s['p90']:.1f} | {s['n']} |")
    print()
    for scenario in scenarios:
        ratio = (
            summary(times[(scenario, "JSON")])["p50"] / summary(times[(scenario, "binary")])["p50"]
        )
        print(f"{scenario}: JSON p50 / binary p50 = {ratio:.2f}x")


if __name__ == "__main__":
    main()
