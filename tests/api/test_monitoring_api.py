"""GET /v1/monitoring/drift and drift.html, and the drift gauges, on a live app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wearcast.api.main import create_app

from .conftest import READER, api_settings, bearing_rows_with_gain

pytestmark = pytest.mark.slow


def test_drift_report_json_html_and_gauges(model_home, tmp_path):
    auth = {"X-API-Key": READER}
    with TestClient(create_app(api_settings(model_home, tmp_path))) as client:
        assert client.get("/v1/monitoring/drift").status_code == 401
        for gain in (1.0, 2.0):
            for row in bearing_rows_with_gain(model_home, gain):
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
