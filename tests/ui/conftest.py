"""The API tests' registry (a trained champion and a challenger) and live server, shared."""

from api.conftest import (
    ADMIN,
    READER,
    LiveServer,
    api_settings,
    bearing_rows_with_gain,
    model_home,
)

__all__ = [
    "ADMIN",
    "READER",
    "LiveServer",
    "api_settings",
    "bearing_rows_with_gain",
    "model_home",
]
