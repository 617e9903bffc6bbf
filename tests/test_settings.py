"""Bad settings are said as a user sets them: one line per problem, naming the WEARCAST_
variable, never its value (a database URL holds a password)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wearcast.cli import app


@pytest.mark.parametrize(
    "url", ["postgresql://u:s3cretpw@127.0.0.1:abc/x", "garbage", "", "mysql://u:s3cretpw@db:x/y"]
)
def test_bad_settings_are_said_in_one_line_each_without_their_values(url, tmp_path):
    """A URL with a port that is not a number printed pydantic's four-line dump with the
    password in it, and said only "invalid literal for int()" (found by a user trial)."""
    env = {
        "WEARCAST_HOME": str(tmp_path),
        "WEARCAST_PREDICTION_DB_URL": url,
        "WEARCAST_ALARM_N": "five",
    }
    result = CliRunner().invoke(app, ["api-key"], env=env)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [  # in the order the settings are defined
        "error: invalid settings: WEARCAST_ALARM_N: Input should be a valid integer, unable to "
        "parse string as an integer",
        "invalid settings: WEARCAST_PREDICTION_DB_URL: not a database URL: expected "
        "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB",
    ]
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"WEARCAST_API_KEYS": '["admin:s3cretpw"'}, "WEARCAST_API_KEYS: not valid JSON"),
        ({"WEARCAST_ENVELOPE_BAND_HZ": "x"}, "WEARCAST_ENVELOPE_BAND_HZ: not valid JSON"),
        ({"WEARCAST_ALARM_K": "9"}, "WEARCAST_ALARM_K (9) cannot exceed WEARCAST_ALARM_N (5)"),
        ({"WEARCAST_HOME": " "}, "WEARCAST_HOME: empty"),
        # Accepted before, and failed only when the server started (or, for MySQL, at the
        # first write: the log's upserts are SQLite's and PostgreSQL's).
        (
            {"WEARCAST_PREDICTION_DB_URL": "mysql://u:s3cretpw@db/x"},
            "WEARCAST_PREDICTION_DB_URL: mysql is not supported",
        ),
        (
            {"WEARCAST_PREDICTION_DB_URL": "postgresql://u:s3cretpw@db:99999/x"},
            "WEARCAST_PREDICTION_DB_URL: not a database URL: port 99999 is out of range",
        ),
    ],
)
def test_list_and_cross_field_settings_are_said_by_their_variables(env, said, tmp_path):
    """A list setting that is not JSON was a 141-line traceback; checks across settings named
    their fields, not the variables a user sets; an empty home was the working folder."""
    result = CliRunner().invoke(app, ["api-key"], env={"WEARCAST_HOME": str(tmp_path)} | env)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: invalid settings: {said}")
    assert "s3cret" not in result.output
