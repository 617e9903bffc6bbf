"""GET /v1/monitoring/drift and drift.html, and the drift gauges, on a live app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wearcast.api.main import create_app
from wearcast.baseline import BASELINE_PREFIX
from wearcast.dataset import read_table
from wearcast.train import prepare

from .conftest import READER, api_settings

pytestmark = pytest.mark.slow


def _bearing_rows(model_home, gain: float) -> list[dict]:
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


def test_drift_report_json_html_and_gauges(model_home, tmp_path):
    auth = {"X-API-Key": READER}
    with TestClient(create_app(api_settings(model_home, tmp_path))) as client:
        assert client.get("/v1/monitoring/drift").status_code == 401
        for gain in (1.0, 2.0):
            for row in _bearing_rows(model_home, gain):
                response = client.post("/v1/predict", json={"rows": [row]}, headers=auth)
                assert response.status_code == 200, response.text
        response = client.get("/v1/monitoring/drift", headers=auth)
        assert response.status_code == 200, response.text
        report = response.json()
        verdicts = {m["machine"]: m for m in report["machines"]}
        assert verdicts["m-gain-1"]["judged"] and not verdicts["m-gain-1"]["drifted"]
        assert verdicts["m-gain-2"]["drifted"]
        assert {g["group"] for g in verdicts["m-gain-2"]["groups"] if g["drifted"]} >= {
            "time",
            "bands",
        }
        html = client.get("/v1/monitoring/drift.html", headers=auth)
        assert html.status_code == 200 and "m-gain-2" in html.text
        metrics = client.get("/metrics").text
        assert 'wearcast_drift{machine="m-gain-2"} 1.0' in metrics
        assert 'wearcast_drift{machine="m-gain-1"} 0.0' in metrics
