"""Fuzz the OpenAPI schema with schemathesis against a live server: no 5xx, ever."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from wearcast.api.main import create_app

from .conftest import ADMIN, LiveServer, api_settings

pytestmark = pytest.mark.slow


def test_no_operation_answers_a_server_error(model_home, tmp_path):
    # Fuzzed promotions must not move the champion other tests rely on: pin the served version.
    app_settings = api_settings(model_home, tmp_path).model_copy(update={"serve_model_version": 1})
    with LiveServer(create_app(app_settings)) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        fuzzed = []
        for operation in operations:
            if operation.path.startswith("/v1/admin/promote"):
                continue  # changes the shared registry; the admin tests cover it

            @given(case=operation.as_strategy())
            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def no_5xx(case) -> None:
                response = case.call(headers={"X-API-Key": ADMIN})
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

            no_5xx()
            fuzzed.append(f"{operation.method.upper()} {operation.path}")
        assert "POST /v1/recordings" in fuzzed and "POST /v1/predict" in fuzzed
