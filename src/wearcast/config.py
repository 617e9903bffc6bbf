"""The one settings class.

Read from the environment (prefix ``WEARCAST_``) and from a ``.env`` file in the working folder.
Nothing happens at import: folders are made by the code that writes into them.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = ["InvalidSettings", "Settings", "env_name", "load_settings", "table_folder"]


def table_folder(tables_dir: Path, data_dir: Path) -> Path:
    """The table folder of a data folder under ``tables_dir``: one table per folder."""
    source = Path(data_dir).resolve()
    tag = hashlib.blake2b(str(source).encode(), digest_size=4).hexdigest()
    return Path(tables_dir) / f"{source.name or 'data'}-{tag}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WEARCAST_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = Field(
        "development", description="production refuses to start the API without API keys"
    )
    home: Path = Field(
        Path.home() / ".wearcast",
        description="every file wearcast writes (data, tables, model store, logs) lives here",
    )

    # Acquisition and rig.
    sampling_rate_hz: float = Field(20_000.0, gt=0, description="IMS documents 20 kHz")
    shaft_rpm: float = Field(2000.0, gt=0)
    expected_rows: int = Field(20_480, gt=0, description="samples per recording")

    # Validation.
    dead_channel_std_g: float = Field(
        0.005, ge=0, description="a channel whose standard deviation is below this is dead"
    )
    clip_run_samples: int = Field(
        3, ge=2, description="this many consecutive samples pinned at the extreme mean clipping"
    )
    max_abs_sample_g: float = Field(
        1000.0,
        gt=0,
        le=1e6,  # features of samples up to this stay finite, also stored as float32
        description="a sample beyond this many g either way is outside any accelerometer's "
        "range: a corrupt file or another unit",
    )

    # Features.
    band_width_hz: float = Field(100.0, gt=0, description="width of the linear spectrum bands")
    band_scale: Literal["linear", "log"] = "linear"
    log_bands: int = Field(32, gt=1, description="number of bands when band_scale is log")
    log_band_low_hz: float = Field(20.0, gt=0)
    envelope_band_hz: tuple[float, float] = Field(
        (2000.0, 9500.0), description="band-pass around the structural resonance"
    )
    defect_tolerance: float = Field(
        0.02, gt=0, description="relative half-width of the window around a defect frequency"
    )

    # Labels, training and promotion.
    label_strategy: Literal["piecewise", "linear"] = "piecewise"
    baseline_recordings: int = Field(
        20, gt=0, description="first recordings of a bearing that define its healthy baseline"
    )
    search_budget_s: float = Field(60.0, gt=0, description="time budget of the model search")
    holdout_folds: int = Field(
        6,
        ge=2,
        description="most folds of the held-out evaluation: up to this many runs (or bearings) "
        "each is held out in turn; more are dealt into this many folds, so the search inside "
        "each fold keeps a share of the budget worth having",
    )
    search_max_trials: int | None = Field(
        None,
        ge=1,
        description="trials of each model search: set, the search is reproducible on any "
        "machine (the budget only caps it); None: as many as the budget allows",
    )
    random_state: int = 0
    model_name: str = "wearcast-wear"
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite store under home"
    )
    promotion_margin: float = Field(
        0.0, ge=0, description="a challenger must beat the champion's wear MAE by this much"
    )

    # Alarms.
    alarm_threshold: float = Field(0.3, gt=0, lt=1, description="wear above this counts")
    alarm_k: int = Field(3, gt=0, description="alarm when k of the last n recordings are above")
    alarm_n: int = Field(5, gt=0)
    rul_trend_recordings: int = Field(
        12, ge=3, description="recent predictions used to extrapolate wear to 1"
    )
    alarm_clear: int = Field(
        6,
        gt=0,
        description="recordings in a row back to health (below the clearing level of "
        "health_clear_rate) that end an alarm episode",
    )
    health_features: list[str] | None = Field(
        None,
        description="features of the health indicator; default: the vibration levels about the "
        "mean (not the DC offset, nor rms and peak, which include it, nor the shape statistics "
        "such as kurtosis)",
    )
    health_false_alarm_rate: float = Field(
        0.002,
        gt=0,
        lt=0.5,
        description="share of healthy recordings above the health indicator's alarm threshold",
    )
    health_clear_rate: float = Field(
        0.02,
        gt=0,
        lt=0.5,
        description="an alarm episode ends only after the health indicator is back below the "
        "level this share of healthy recordings exceeds (at most the alarm threshold), for "
        "alarm_clear recordings in a row",
    )
    rul_interval_coverage: float = Field(
        0.8, gt=0, lt=1, description="nominal coverage of the remaining-life interval"
    )

    # Serving.
    api_keys: list[str] = Field(
        default_factory=list,
        description='hashed API keys, "ROLE:SHA256HEX" (ROLE reader or admin); make one with '
        "`wearcast api-key ROLE`",
    )
    serve_model_version: int | None = Field(
        None, description="serve this registered version instead of the champion"
    )
    reload_interval_s: float = Field(
        30.0, ge=0, description="how often the API checks the registry for a new champion; 0: never"
    )
    startup_load_wait_s: float = Field(
        10.0,  # within the image HEALTHCHECK's start period (20 s)
        ge=0,
        description="how long the API's start waits for the registry before it serves its "
        "probes anyway (the model then loads in the background)",
    )
    max_upload_bytes: int = Field(
        # 1,000 feature rows (the default max_request_rows) are about 5.1 MB of JSON.
        8_000_000,
        gt=0,
        description="a request body larger than this gets 413, unread",
    )
    max_header_bytes: int = Field(16_384, gt=0, description="larger request headers get 431")
    request_head_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request's head (request line and headers) not whole this long after "
        "its connection opened, or its first byte came, gets 408 (`wearcast serve`)",
    )
    max_line_bytes: int = Field(
        1_024, gt=0, description="a recording line longer than this is refused before parsing"
    )
    max_values_per_line: int = Field(
        16, gt=0, description="a recording line with more values (channels) is refused"
    )
    max_request_rows: int = Field(
        1_000, gt=0, description="feature rows (or inference rows) per request"
    )
    max_concurrent_scoring: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        gt=0,
        description="requests parsed and scored at once; others wait without holding a thread",
    )
    bearings_per_machine: int = Field(4, gt=0, description="bearings of an uploaded recording")
    prediction_db_url: str | None = Field(
        None, description="SQLAlchemy URL of the prediction log; default: SQLite under home"
    )

    # Orchestration (dags/wearcast_retrain.py).
    retrain_schedule: str = Field("0 */6 * * *", description="cron schedule of the retraining DAG")
    retrain_data_dir: Path | None = Field(
        None, description="recordings the DAG watches; default: HOME/data"
    )
    featurize_batch_files: int = Field(
        500, gt=0, description="files per mapped featurize task (the unit spread over workers)"
    )
    api_urls: list[str] = Field(
        default_factory=list,
        description="the API replicas the DAG tells to reload, as a JSON list (the admin key "
        "comes from the Airflow connection wearcast_api)",
    )

    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("home", mode="before")
    @classmethod
    def _home_given(cls, value):
        # An empty WEARCAST_HOME would be the working folder: files would land wherever run.
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty: give the folder wearcast keeps its files in")
        return value

    @field_validator("prediction_db_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ValueError(
                "not a database URL: expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB"
            ) from None
        # SQLAlchemy reads a bare postgresql:// as psycopg 3; wearcast ships psycopg2.
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg2")
        # The log's statements are written for these two (their own upserts).
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                f"{url.get_backend_name()} is not supported: the prediction log is SQLite "
                "(sqlite:///PATH) or PostgreSQL (postgresql://USER:PASSWORD@HOST/DB)"
            )
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(f"not a database URL: port {url.port} is out of range")
        return url.render_as_string(hide_password=False)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        low, high = self.envelope_band_hz
        # Named as set: these come from the environment or a .env file.
        if not 0 < low < high <= self.sampling_rate_hz / 2:
            raise ValueError(
                f"{env_name('envelope_band_hz')} {list(self.envelope_band_hz)} must lie between "
                f"0 and Nyquist ({self.sampling_rate_hz / 2:g} Hz, half "
                f"{env_name('sampling_rate_hz')})"
            )
        if self.alarm_k > self.alarm_n:
            raise ValueError(
                f"{env_name('alarm_k')} ({self.alarm_k}) cannot exceed {env_name('alarm_n')} "
                f"({self.alarm_n})"
            )
        if self.drift_min_recordings > self.drift_window:
            raise ValueError(
                f"{env_name('drift_min_recordings')} cannot exceed {env_name('drift_window')} "
                "(never judged)"
            )
        if self.webhook_url and not self.webhook_secret and self.env != "development":
            raise ValueError(
                f"{env_name('webhook_url')} needs {env_name('webhook_secret')} outside "
                "development (its notifications would be unsigned)"
            )
        return self

    # Where things live under home.
    @cached_property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def watched_data_dir(self) -> Path:
        return self.retrain_data_dir or self.data_dir

    @cached_property
    def tables_dir(self) -> Path:
        return self.home / "tables"

    @property
    def watched_table_dir(self) -> Path:
        """The watched folder's table: the retraining DAG's, and `wearcast pipeline`'s on it."""
        return table_folder(self.tables_dir, self.watched_data_dir)

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def resolved_prediction_db_url(self) -> str:
        return self.prediction_db_url or f"sqlite:///{self.home / 'predictions.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    # Monitoring: drift (wearcast.monitoring) and alarm notifications (wearcast.api.notify).
    drift_window: int = Field(
        30, ge=5, description="latest recordings of a bearing compared with the reference"
    )
    drift_min_recordings: int = Field(
        30, ge=5, description="a bearing with fewer recordings after its baseline is not judged"
    )
    drift_fdr: float = Field(
        0.01, gt=0, lt=1, description="false discovery rate of the per-feature tests (BH)"
    )
    drift_min_distance: float = Field(
        0.6,
        gt=0,
        le=1,
        description="a significant feature drifts only if its KS distance is at least this",
    )
    drift_min_features: int = Field(
        3, ge=1, description="a bearing drifts only if at least this many of its features do"
    )
    drift_reference_rows: int = Field(
        4000, gt=100, description="healthy training rows kept with a model version as reference"
    )
    drift_interval_s: float = Field(
        300.0, ge=0, description="how often the API checks drift (gauges, retraining); 0: never"
    )
    retrain_on_drift: bool = Field(
        False, description="trigger the retraining DAG through Airflow's REST API on drift"
    )
    airflow_url: str | None = Field(None, description="Airflow 3 API server, e.g. http://af:8080")
    airflow_username: str | None = None
    airflow_password: SecretStr | None = None
    retrain_dag_id: str = "wearcast_retrain"
    retrain_cooldown_s: float = Field(
        86_400.0, ge=0, description="at most one drift-triggered retraining per this period"
    )
    webhook_url: str | None = Field(
        None, description="called (POST, JSON) when a bearing enters or leaves alarm"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the X-Wearcast-Signature header"
    )
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_poll_s: float = Field(1.0, gt=0, description="how often the outbox is read")
    webhook_backoff_s: float = Field(
        2.0, gt=0, description="first retry delay; doubles per failed attempt"
    )
    webhook_max_backoff_s: float = Field(300.0, gt=0)
    webhook_lease_s: float = Field(
        60.0, gt=0, description="a claimed notification is another worker's to send after this"
    )
    outbox_keep_days: float = Field(
        7.0, gt=0, description="delivered notifications are deleted from the outbox after this"
    )
    prediction_detail_keep_days: float = Field(
        90.0,
        ge=0,
        description="after this many days a logged prediction keeps its numbers (wear, health, "
        "state, remaining life) and drops its stored answer and features, most of its size; a "
        "retry of such a recording is then a 409. 0: keep everything",
    )


def env_name(field: str) -> str:
    """The environment variable that sets the setting ``field``."""
    return Settings.model_config["env_prefix"] + field.upper()


class InvalidSettings(ValueError):
    """Settings that cannot be used: one line per problem, naming the variable, never its value
    (a database URL holds a password)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(**given) -> Settings:
    """:class:`Settings` from the environment and ``given``; :class:`InvalidSettings` if any is
    wrong."""
    try:
        return Settings(**given)
    except SettingsError as exc:
        # pydantic-settings names the field only in its message; its cause holds the value.
        unparsed = re.match(r'error parsing value for field "(\w+)"', str(exc))
        if unparsed is None:
            raise InvalidSettings([str(exc)]) from None
        raise InvalidSettings(
            [
                f"{env_name(unparsed.group(1))}: not valid JSON: a list is written "
                '["a", "b"], a pair [2000, 8000]'
            ]
        ) from None
    except ValidationError as exc:
        problems = [
            (f"{env_name(str(error['loc'][0]))}: " if error["loc"] else "")
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidSettings(problems) from None
