"""The prediction log: every prediction the API makes, each bearing's baseline recordings, and
each bearing's latest raw recording's spectra (for the dashboard).

SQLAlchemy, so the same code writes to SQLite (the default, under ``WEARCAST_HOME``) or to
PostgreSQL (``WEARCAST_PREDICTION_DB_URL=postgresql+psycopg2://...``). SQLite runs in WAL mode
with a busy timeout so concurrent requests queue instead of failing.

Two rules make the log the same whatever the number of API workers and the arrival order:

* a recording is identified by (machine, bearing, time): it is logged once, the first answer
  is kept (a unique index decides between concurrent requests), and a retry reads it back;
* a bearing's baseline is its first ``recordings`` recordings **by time**
  (:mod:`wearcast.baseline`). A recording is kept as a baseline sample while fewer than that
  many stored samples are older than it; samples pushed out by older recordings that arrived
  late are deleted. Both happen in one transaction, and whatever the interleaving of workers
  the first recordings by time are never pushed out, so every worker reads the same baseline
  once they have arrived.

Two more tables serve monitoring (:mod:`wearcast.monitoring`, :mod:`wearcast.api.notify`):
``outbox`` holds alarm notifications, written in the transaction that logs the prediction so
none is lost if the process dies before delivering it, and claimed by a worker with a lease
(a conditional update) so several workers do not send the same one at once; ``leases`` holds
named claims with an expiry (the drift-triggered retraining's cooldown), shared by workers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pydantic_core
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    make_url,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, defer, mapped_column, sessionmaker

from wearcast.alarms import ALARM
from wearcast.features import Spectra

__all__ = [
    "ClaimedEvent",
    "FeatureValues",
    "LayoutConflict",
    "LoggedAnswer",
    "LoggedPoint",
    "MachineLayout",
    "OutboxEvent",
    "PredictionLog",
    "PredictionLogUnavailable",
    "PredictionRecord",
    "ScoringHistory",
    "earliest_times",
    "utcnow",
]

log = logging.getLogger("wearcast.api")

Key = tuple[str, int]  # (machine, bearing)
RecordingKey = tuple[str, int, datetime]  # (machine, bearing, time)


class _Base(DeclarativeBase):
    pass


_DETAILED = "answer IS NOT NULL OR features IS NOT NULL"
# Predictions not in alarm (a state logged by an older version, NULL, counts as ok). The same
# text in the partial index and in the query that uses it: SQLite matches the two as written.
_CALM = f"(state IS NULL OR state != '{ALARM}')"
# What compacting leaves of a prediction's details (SQL NULL, not JSON null). A row with
# feature values always has its answer too, so the predicate above still finds it.
_UNDETAILED = {"answer": null(), "features": null(), "feature_set": None, "feature_values": None}


class _Prediction(_Base):
    __tablename__ = "predictions"
    # One prediction per recording; every request reads a bearing's latest predictions, an
    # index range scan on the same columns.
    __table_args__ = (
        Index("ux_predictions_recording", "machine", "bearing", "recorded_at", unique=True),
        # Partial: only predictions that still carry their details, so compacting reaches the
        # old ones among them without reading those compacted before (PredictionLog.compact).
        Index(
            "ix_predictions_detailed_created",
            "created_at",
            sqlite_where=text(_DETAILED),
            postgresql_where=text(_DETAILED),
        ),
        # Partial: where a bearing's open alarm began is found in one seek, not by reading
        # every prediction it has (a bearing months in alarm slowed each of its requests).
        Index(
            "ix_predictions_calm",
            "machine",
            "bearing",
            "recorded_at",
            sqlite_where=text(_CALM),
            postgresql_where=text(_CALM),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    machine: Mapped[str] = mapped_column(String(200))
    bearing: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    features_digest: Mapped[str] = mapped_column(String(64))
    wear: Mapped[float] = mapped_column(Float)
    rul_h: Mapped[float | None] = mapped_column(Float, nullable=True)
    alarm: Mapped[bool] = mapped_column(Boolean)
    health: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str | None] = mapped_column(String(8), nullable=True)
    rul_low_h: Mapped[float | None] = mapped_column(Float, nullable=True)
    rul_high_h: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    answer: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # what the client got
    # The model's features, for drift (wearcast.monitoring): their values as float64 bytes in
    # the order of the names of their ``feature_set``. As JSON with their names they were 5 kB
    # a prediction, most of the log and of the time it took to write; an older log's rows
    # still hold them so, in ``features`` (SQL NULL, not JSON null, where absent).
    feature_set: Mapped[int | None] = mapped_column(Integer, nullable=True)
    feature_values: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    features: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class _FeatureSet(_Base):
    """The names of a set of logged features (a model's inputs), stored once."""

    __tablename__ = "feature_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    names: Mapped[list] = mapped_column(JSON)


class _BaselineSample(_Base):
    __tablename__ = "baseline_samples"
    __table_args__ = (UniqueConstraint("machine", "bearing", "recorded_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine: Mapped[str] = mapped_column(String(200))
    bearing: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    features: Mapped[dict] = mapped_column(JSON)


class _Spectra(_Base):
    """Each bearing's latest raw recording's spectra (the dashboard plots them): one row per
    bearing, replaced by a later recording's, so the table stays as small as the fleet."""

    __tablename__ = "latest_spectra"
    __table_args__ = (UniqueConstraint("machine", "bearing"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine: Mapped[str] = mapped_column(String(200))
    bearing: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    spectra: Mapped[dict] = mapped_column(JSON)


class _Outbox(_Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "delivered_at", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)  # naive UTC, as every time here
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    leased_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class _MachineLayout(_Base):
    """The recording layout of a machine's first raw recording: a bearing's features from
    another channel count or format are not comparable with its baseline."""

    __tablename__ = "machine_layouts"
    machine: Mapped[str] = mapped_column(String(200), primary_key=True)
    format: Mapped[str] = mapped_column(String(40))
    channels: Mapped[int] = mapped_column(Integer)


class _Lease(_Base):
    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


@dataclass(frozen=True)
class OutboxEvent:
    """A notification to send if the prediction of ``key`` is logged by this request."""

    key: RecordingKey
    event_id: str
    kind: str
    payload: dict


@dataclass(frozen=True)
class ClaimedEvent:
    id: int
    event_id: str
    payload: dict
    attempts: int


def _pack(spectra: Spectra) -> dict:
    """A bearing's spectra as stored: the lines as base64 float32 (a plot needs no more, and
    encoding thousands of floats as JSON text cost more than computing them)."""
    out = vars(spectra).copy()
    for key in _LINES:
        out[key] = base64.b64encode(np.asarray(out[key], dtype="<f4").tobytes()).decode()
    return out


def _unpack(stored: dict) -> Spectra:
    lines = {k: np.frombuffer(base64.b64decode(stored[k]), dtype="<f4").tolist() for k in _LINES}
    return Spectra(**(stored | lines))


_LINES = ("spectrum", "envelope")


def _json_text(value) -> str:
    """JSON of a value; a missing (NaN) or non-finite number as null, which JSON allows."""
    return pydantic_core.to_json(value, inf_nan_mode="null").decode()


def utcnow() -> datetime:
    """Naive UTC: what the outbox and lease columns hold (SQLite keeps no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class RecordingSpectra:
    """A raw recording's spectra per bearing, to keep as each bearing's latest."""

    machine: str
    recorded_at: datetime
    spectra: dict[int, Spectra]


@dataclass(frozen=True)
class MachineLayout:
    """How a machine's raw recordings are laid out: its first accepted one's format and
    channel count. A bearing's features from another layout do not compare with its
    baseline."""

    machine: str
    format: str
    channels: int


class LayoutConflict(ValueError):
    """A raw recording whose layout differs from the one its machine keeps."""


@dataclass(frozen=True, eq=False)
class FeatureValues:
    """A prediction's features as the log keeps them: ``values`` (float64) in the order of
    ``names``, one tuple shared by every row of a model, so no per-row mapping is built."""

    names: tuple[str, ...]
    values: np.ndarray

    @classmethod
    def of(cls, features: dict[str, float]) -> FeatureValues:
        return cls(tuple(features), np.fromiter(features.values(), np.float64, len(features)))


@dataclass(frozen=True)
class PredictionRecord:
    request_id: str
    machine: str
    bearing: int
    recorded_at: datetime
    features_digest: str
    wear: float
    rul_h: float | None
    alarm: bool
    model_name: str
    model_version: int
    answer: dict | None = None
    health: float | None = None
    state: str | None = None
    rul_low_h: float | None = None
    rul_high_h: float | None = None
    features: FeatureValues | None = None


@dataclass(frozen=True)
class LoggedPoint:
    """What a new prediction needs of a bearing's earlier ones."""

    recorded_at: datetime
    wear: float
    health: float | None  # None: logged by a version without the health indicator
    state: str | None


@dataclass(frozen=True)
class LoggedAnswer:
    request_id: str
    features_digest: str
    answer: dict | None
    model_version: int


@dataclass(frozen=True)
class ScoringHistory:
    """What answering new recordings needs of the log (:meth:`PredictionLog.scoring_history`)."""

    logged: dict[RecordingKey, LoggedAnswer]
    baseline_times: dict[Key, list[datetime]]
    recent: dict[Key, list[LoggedPoint]]
    first_times: dict[Key, datetime | None]
    # Of each bearing whose last prediction is in alarm: when that episode was raised and how
    # many predictions it holds (more than ``recent`` may).
    open_alarms: dict[Key, tuple[datetime, int]]


def earliest_times(recordings: Iterable[RecordingKey]) -> dict[Key, datetime]:
    """Each bearing's earliest time among ``recordings``."""
    earliest: dict[Key, datetime] = {}
    for machine, bearing, at in recordings:
        key = (machine, bearing)
        earliest[key] = min(at, earliest.get(key, at))
    return earliest


class PredictionLogUnavailable(RuntimeError):
    """The prediction log cannot be opened: no driver for its URL, or its database does not
    answer."""


class PredictionLog:
    def __init__(self, url: str):
        sqlite = url.startswith("sqlite")
        shown = make_url(url).render_as_string(hide_password=True)
        try:
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
                pool_pre_ping=not sqlite,
                # Every prediction stores its answer and features as JSON, and scoring reads
                # baseline samples back: pydantic's encoder and parser (Rust) take a fraction
                # of the standard library's time for them.
                json_serializer=_json_text,
                json_deserializer=pydantic_core.from_json,
            )
        except ImportError as exc:
            raise PredictionLogUnavailable(
                f"prediction log {shown}: its database driver is not installed ({exc}); "
                "wearcast ships SQLite (sqlite:///PATH) and PostgreSQL (postgresql://...)"
            ) from None
        if sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record) -> None:
                cursor = conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    # Replicas starting together on one database would race to create the
                    # same tables (one of them then died at start-up): one at a time.
                    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('wearcast-schema'))"))
                _Base.metadata.create_all(conn)
                self._upgrade(conn)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise PredictionLogUnavailable(
                f"prediction log {shown} cannot be opened: {reason}"
            ) from None
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._layouts: dict[str, MachineLayout] = {}  # committed: stored once, never changed
        # Feature sets both ways (committed: stored once, never changed).
        self._set_ids: dict[tuple[str, ...], int] = {}
        self._set_names: dict[int, tuple[str, ...]] = {}
        self._insert = (
            postgresql if self.engine.dialect.name == "postgresql" else sqlite_dialect
        ).insert
        # Statements every scored recording runs, built once.
        self._insert_prediction = self._insert(_Prediction).on_conflict_do_nothing()
        spectra = self._insert(_Spectra)
        # One statement, so concurrent requests (or workers) cannot both insert a bearing.
        self._upsert_spectra = spectra.on_conflict_do_update(
            index_elements=["machine", "bearing"],
            set_={"recorded_at": spectra.excluded.recorded_at, "spectra": spectra.excluded.spectra},
            where=_Spectra.recorded_at < spectra.excluded.recorded_at,
        )

    @staticmethod
    def _upgrade(conn) -> None:
        """Bring a log written by an older wearcast up to this schema."""
        columns = {c["name"] for c in inspect(conn).get_columns("predictions")}
        for column in _Prediction.__table__.columns:  # nullable columns create_all skips
            if column.name not in columns and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE predictions ADD COLUMN {column.name} {kind}"))
        for index in _Prediction.__table_args__[1:]:  # the partial ones, on the columns above
            index.create(conn, checkfirst=True)
        try:
            with conn.begin_nested():  # a failure must not end the whole transaction
                _Prediction.__table_args__[0].create(conn, checkfirst=True)
        except (OperationalError, ProgrammingError) as exc:  # duplicates logged before
            log.warning("prediction log: no unique index on recordings (%s)", exc.orig)

    def close(self) -> None:
        self.engine.dispose()

    def history(
        self,
        machine: str,
        bearing: int,
        *,
        since: datetime | None = None,
        before: datetime | None = None,
        limit: int | None = None,
    ) -> list[PredictionRecord]:
        """Predictions of a bearing in recording order, recorded after ``since`` and before
        ``before`` (the latest ``limit`` of them if given), without their features (a page of
        history has no use for them: :meth:`recent_features` reads those)."""
        query = _without_features().where(
            _Prediction.machine == machine, _Prediction.bearing == bearing
        )
        if since is not None:
            query = query.where(_Prediction.recorded_at > since)
        if before is not None:
            query = query.where(_Prediction.recorded_at < before)
        query = query.order_by(_Prediction.recorded_at.desc(), _Prediction.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            rows = session.scalars(query).all()
        return [_record(r) for r in reversed(rows)]

    def latest(self) -> list[PredictionRecord]:
        """Every bearing's latest prediction (without features), by machine and bearing, in
        one query: the dashboard's fleet read each bearing's history, 21 s for 10,000."""
        newest = (
            select(
                _Prediction.machine,
                _Prediction.bearing,
                func.max(_Prediction.recorded_at).label("recorded_at"),
            )
            .group_by(_Prediction.machine, _Prediction.bearing)
            .subquery()
        )
        query = _without_features().join(
            newest,
            (_Prediction.machine == newest.c.machine)
            & (_Prediction.bearing == newest.c.bearing)
            & (_Prediction.recorded_at == newest.c.recorded_at),
        )
        with self._session() as session:
            rows = session.scalars(query.order_by(_Prediction.machine, _Prediction.bearing)).all()
        return [_record(r) for r in rows]

    def beside_episode(
        self, machine: str, bearing: int, at: datetime, calm: str, *, earlier: bool
    ) -> list[LoggedPoint]:
        """The bearing's predictions on one side of ``at``, as far as its nearest one there in
        state ``calm`` (or no state): ``earlier``, those after that one (the part of an episode
        that began before ``at``); else those up to and including it (the rest of an episode
        still open at ``at``)."""
        t = _Prediction.recorded_at
        side = t < at if earlier else t > at
        with self.engine.connect() as conn:
            edge = conn.execute(
                select(func.max(t) if earlier else func.min(t)).where(
                    _Prediction.machine == machine,
                    _Prediction.bearing == bearing,
                    _Prediction.state.is_(None) | (_Prediction.state == calm),
                    side,
                )
            ).scalar()
            within = true() if edge is None else (t > edge if earlier else t <= edge)
            rows = conn.execute(_points(machine, bearing).where(side, within).order_by(t)).all()
        return [LoggedPoint(*row) for row in rows]

    def count(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count(_Prediction.id))) or 0

    def logged(self, keys: list[RecordingKey]) -> dict[RecordingKey, LoggedAnswer]:
        """What was already answered for these recordings."""
        if not keys:
            return {}
        with self._session() as session:
            return self._logged(session, keys)

    @staticmethod
    def _logged(conn, keys: list[RecordingKey]) -> dict[RecordingKey, LoggedAnswer]:
        found = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), _LOGGED_CHUNK):
            chunk = unique[start : start + _LOGGED_CHUNK]
            size = 1 << (len(chunk) - 1).bit_length()  # few sizes: few statements to build
            padded = chunk + chunk[:1] * (size - len(chunk))  # a repeated key finds nothing new
            bound = {}
            for i, (machine, bearing, at) in enumerate(padded):
                bound |= {f"machine_{i}": machine, f"bearing_{i}": bearing, f"at_{i}": at}
            rows = conn.execute(_logged_query(size), bound).all()
            for m, b, t, request_id, digest, answer, version in rows:
                found.setdefault((m, b, t), LoggedAnswer(request_id, digest, answer, version))
        return found

    def baseline_times(self, keys: list[Key], recordings: int) -> dict[Key, list[datetime]]:
        """The times of each bearing's first ``recordings`` baseline samples (index only)."""
        with self.engine.connect() as conn:
            return _baseline_times(conn, keys, recordings)

    def baseline_samples(
        self, keys: list[Key], recordings: int
    ) -> dict[Key, list[tuple[datetime, dict]]]:
        """Each bearing's first ``recordings`` baseline samples by time: (time, features)."""
        with self.engine.connect() as conn:
            rows = _per_bearing(conn, _samples, keys, recordings=recordings)
        return {key: [(t, f) for t, f in found] for key, found in rows.items()}

    def scoring_history(
        self,
        recordings: list[RecordingKey],
        *,
        baseline_recordings: int,
        window: int,
        alarm_window: int = 0,
    ) -> ScoringHistory:
        """What answering these recordings needs of the log, read in one transaction: what is
        already answered, each bearing's baseline sample times, its last ``window``
        predictions before the earliest of its recordings here (``alarm_window`` if the last
        of them is in alarm: the trend since the alarm, and where that episode began), and its
        first logged one."""
        earliest = earliest_times(recordings)
        keys = sorted(earliest)
        with self.engine.connect() as conn:
            recent = _recent(conn, keys, window, earliest)
            # Most bearings are not in alarm: the long read only for those that are.
            alarmed = [k for k in keys if recent[k] and recent[k][-1].state == ALARM]
            if alarmed and alarm_window > window:
                recent |= _recent(conn, alarmed, alarm_window, earliest)
            return ScoringHistory(
                logged=self._logged(conn, recordings),
                baseline_times=_baseline_times(conn, keys, baseline_recordings),
                recent=recent,
                first_times=_first_times(conn, keys),
                open_alarms={key: _open_alarm(conn, key, earliest[key]) for key in alarmed},
            )

    def add_baseline_samples(self, samples: list[tuple[str, int, datetime, dict]]) -> None:
        """Store candidate baseline samples; a sample already stored for the same recording
        is kept as it was. Readers take each bearing's first N by time (one statement, so
        every worker agrees whatever the arrival order). None is deleted here: the request's
        :meth:`commit` keeps each bearing's first N, and a request that fails takes its own
        back exactly (:meth:`take_back_samples`)."""
        if not samples:
            return
        rows = [
            {"machine": m, "bearing": b, "recorded_at": t, "features": f} for m, b, t, f in samples
        ]
        with self.engine.begin() as conn:
            conn.execute(self._insert(_BaselineSample).on_conflict_do_nothing(), rows)

    def _keep_first_samples(self, conn, keys: Iterable[Key], recordings: int) -> None:
        if self.engine.dialect.name == "postgresql":  # SQLite's writer lock does this
            for machine, bearing in sorted(keys):  # sorted: no deadlock between two requests
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"wearcast-baseline {machine}:{bearing}"},
                )
        for machine, bearing in sorted(keys):
            of_bearing = (_BaselineSample.machine == machine) & (_BaselineSample.bearing == bearing)
            first = (
                select(_BaselineSample.id)
                .where(of_bearing)
                .order_by(_BaselineSample.recorded_at)
                .limit(recordings)
            )
            conn.execute(
                delete(_BaselineSample).where(of_bearing, _BaselineSample.id.not_in(first))
            )

    def _claim_layout(self, conn, layout: MachineLayout) -> None:
        """Store ``layout`` as its machine's if it has none; :class:`LayoutConflict` if it
        has another (an insert that keeps the first row: every worker agrees on the first)."""
        known = self._layouts.get(layout.machine)
        if known is None:
            conn.execute(self._insert(_MachineLayout).on_conflict_do_nothing(), [vars(layout)])
            row = conn.execute(
                select(_MachineLayout.format, _MachineLayout.channels).where(
                    _MachineLayout.machine == layout.machine
                )
            ).one()
            known = MachineLayout(layout.machine, row.format, row.channels)
        if known != layout:
            raise LayoutConflict(
                f"machine {known.machine!r} sends {known.channels}-channel {known.format} "
                "recordings"
            )

    def take_back_samples(self, recordings: list[RecordingKey]) -> None:
        """Remove the baseline samples of these recordings unless a prediction of the same
        recording is logged (a concurrent request answered it): what a refused request had
        stored."""
        if not recordings:
            return
        answered = select(_Prediction.id).where(
            _Prediction.machine == _BaselineSample.machine,
            _Prediction.bearing == _BaselineSample.bearing,
            _Prediction.recorded_at == _BaselineSample.recorded_at,
        )
        statement = delete(_BaselineSample).where(
            _BaselineSample.machine == bindparam("m"),
            _BaselineSample.bearing == bindparam("b"),
            _BaselineSample.recorded_at == bindparam("t", type_=DateTime),
            ~answered.exists(),
        )
        with self.engine.begin() as conn:
            conn.execute(statement, [{"m": m, "b": b, "t": t} for m, b, t in recordings])

    def commit(
        self,
        records: list[PredictionRecord],
        events: list[OutboxEvent] = (),
        spectra: RecordingSpectra | None = None,
        sampled: tuple[Iterable[Key], int] = ((), 0),
        layout: MachineLayout | None = None,
    ) -> dict[RecordingKey, LoggedAnswer]:
        """Log predictions, one per recording: a recording already logged (by a concurrent
        request) keeps its first answer. Returns what is logged for these recordings.

        ``events`` of the recordings this call logged go to the outbox in the same transaction
        (those of a recording another request logged first are that request's to write),
        ``spectra`` become their bearings' latest unless a later recording's are kept (the
        dashboard plots them), and the bearings of ``sampled`` (bearings, N) keep only their
        first N baseline samples by time. A raw recording's ``layout`` becomes its machine's
        if it has none, and one that differs raises :class:`LayoutConflict`, logging nothing."""
        if not records:
            return {}
        now = datetime.now(UTC)
        rows = [self._row(r, now) for r in records]
        keys = [(r.machine, r.bearing, r.recorded_at) for r in records]
        request_ids = {r.request_id for r in records}
        # Core executemany inserts: the ORM's per-object bookkeeping would dominate a batch.
        with self.engine.begin() as conn:
            if layout is not None:
                self._claim_layout(conn, layout)
            conn.execute(self._insert_prediction, rows)
            stored = self._logged(conn, keys)
            self._keep_first_samples(conn, *sampled)
            mine = [e for e in events if stored[e.key].request_id in request_ids]
            if mine:
                at = utcnow()
                conn.execute(
                    self._insert(_Outbox).on_conflict_do_nothing(),
                    [
                        {
                            "event_id": e.event_id,
                            "kind": e.kind,
                            "payload": e.payload,
                            "created_at": at,
                            "attempts": 0,
                            "next_attempt_at": at,
                        }
                        for e in mine
                    ],
                )
            if spectra is not None and spectra.spectra:
                conn.execute(
                    self._upsert_spectra,
                    [
                        {
                            "machine": spectra.machine,
                            "bearing": bearing,
                            "recorded_at": spectra.recorded_at,
                            "spectra": _pack(lines),
                        }
                        for bearing, lines in spectra.spectra.items()
                    ],
                )
        if layout is not None:  # committed: it is (or was already) the machine's
            self._layouts[layout.machine] = layout
        return stored

    def _row(self, record: PredictionRecord, now: datetime) -> dict:
        """The columns of a prediction: its features as their set and their values' bytes."""
        row = {"created_at": now, **vars(record)}
        features = row.pop("features")
        row["feature_set"] = row["feature_values"] = None
        if features is not None:
            row["feature_set"] = self._feature_set(features.names)
            row["feature_values"] = np.asarray(features.values, np.float64).tobytes()
        return row

    def _feature_set(self, names: tuple[str, ...]) -> int:
        """The id of a set of feature names, stored on first use in a transaction of its own
        (committed before any prediction refers to it; one left unused is harmless)."""
        if names not in self._set_ids:
            listed = _json_text(list(names)).encode()
            digest = hashlib.blake2b(listed, digest_size=16).hexdigest()
            with self.engine.begin() as conn:
                conn.execute(
                    self._insert(_FeatureSet).on_conflict_do_nothing(),
                    [{"digest": digest, "names": list(names)}],
                )
                found = conn.execute(select(_FeatureSet.id).where(_FeatureSet.digest == digest))
                self._set_ids[names] = found.scalar_one()
        return self._set_ids[names]

    def _features(self, stored: list[tuple[int | None, bytes | None, dict | None]]) -> list:
        """Logged features as name -> value, from (set, values, JSON of an older log) each."""
        missing = {s for s, v, _ in stored if v is not None and s not in self._set_names}
        if missing:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(_FeatureSet.id, _FeatureSet.names).where(_FeatureSet.id.in_(missing))
                )
                self._set_names |= {i: tuple(names) for i, names in found}
        return [
            old
            if values is None
            else dict(
                zip(self._set_names[s], np.frombuffer(values, np.float64).tolist(), strict=True)
            )
            for s, values, old in stored
        ]

    def recent_features(self, window: int) -> dict[str, list[tuple[int, datetime, dict]]]:
        """Each machine's logged features of its last ``window`` recording times:
        (bearing, time, features) rows, oldest first."""
        has = _Prediction.feature_values.is_not(None) | _Prediction.features.is_not(None)
        out = {}
        with self._session() as session:
            machines = session.scalars(select(_Prediction.machine).where(has).distinct()).all()
            for machine in sorted(machines):
                times = (
                    select(_Prediction.recorded_at)
                    .where(has, _Prediction.machine == machine)
                    .distinct()
                    .order_by(_Prediction.recorded_at.desc())
                    .limit(window)
                    .subquery()
                )
                rows = session.execute(
                    select(
                        _Prediction.bearing,
                        _Prediction.recorded_at,
                        _Prediction.feature_set,
                        _Prediction.feature_values,
                        _Prediction.features,
                    )
                    .where(
                        has,
                        _Prediction.machine == machine,
                        _Prediction.recorded_at
                        >= select(func.min(times.c.recorded_at)).scalar_subquery(),
                    )
                    .order_by(_Prediction.recorded_at, _Prediction.bearing)
                ).all()
                features = self._features([(s, v, f) for _, _, s, v, f in rows])
                out[machine] = [(b, t, f) for (b, t, *_), f in zip(rows, features, strict=True)]
        return out

    # The outbox: at-least-once delivery, one worker at a time per event.

    def claim_events(self, limit: int, lease_s: float) -> list[ClaimedEvent]:
        """Lease up to ``limit`` due, undelivered events for ``lease_s`` seconds. A row is
        claimed by a conditional update, so of several workers one gets it; a worker that dies
        holding a lease gives the row back when the lease runs out."""
        now = utcnow()
        free = _Outbox.leased_until.is_(None) | (_Outbox.leased_until < now)
        due = (_Outbox.delivered_at.is_(None), _Outbox.next_attempt_at <= now, free)
        claimed = []
        with self._session.begin() as session:
            candidates = session.execute(
                select(_Outbox.id, _Outbox.event_id, _Outbox.payload, _Outbox.attempts)
                .where(*due)
                .order_by(_Outbox.id)
                .limit(limit)
            ).all()
        for row in candidates:
            with self._session.begin() as session:  # one short transaction per claim
                won = session.execute(
                    update(_Outbox)
                    .where(_Outbox.id == row.id, *due)
                    .values(leased_until=now + timedelta(seconds=lease_s))
                ).rowcount
            if won:
                claimed.append(ClaimedEvent(row.id, row.event_id, row.payload, row.attempts))
        return claimed

    def event_delivered(self, event: ClaimedEvent) -> None:
        with self._session.begin() as session:
            session.execute(
                update(_Outbox)
                .where(_Outbox.id == event.id)
                .values(delivered_at=utcnow(), leased_until=None, attempts=event.attempts + 1)
            )

    def event_failed(self, event: ClaimedEvent, error: str, retry_in_s: float) -> None:
        now = utcnow()
        with self._session.begin() as session:
            session.execute(
                update(_Outbox)
                .where(_Outbox.id == event.id)
                .values(
                    attempts=event.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=retry_in_s),
                    leased_until=None,
                    last_error=error[:500],
                )
            )

    def purge_delivered(self, older_than: timedelta) -> int:
        """Delete events delivered longer ago than ``older_than`` (undelivered ones stay,
        however old); returns how many went."""
        cutoff = utcnow() - older_than
        with self._session.begin() as session:
            return session.execute(
                delete(_Outbox).where(
                    _Outbox.delivered_at.is_not(None), _Outbox.delivered_at < cutoff
                )
            ).rowcount

    def compact(self, older_than: timedelta, *, chunk: int = 5000) -> int:
        """Drop the stored answer and features of predictions logged longer ago than
        ``older_than`` (the numbers stay: history, episodes, ages and baselines are intact);
        returns how many. In chunks, so that writers wait for one short transaction at most."""
        cutoff = datetime.now(UTC) - older_than
        detailed = text(f"({_DETAILED})")  # the partial index's predicate: the planner uses it
        done = 0
        while True:
            ids = select(_Prediction.id).where(_Prediction.created_at < cutoff, detailed)
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(_Prediction)
                    .where(_Prediction.id.in_(ids.limit(chunk).scalar_subquery()))
                    .values(_UNDETAILED)
                ).rowcount
            done += changed
            if changed < chunk:
                return done

    def outbox_pending(self) -> int:
        with self._session() as session:
            return (
                session.scalar(select(func.count(_Outbox.id)).where(_Outbox.delivered_at.is_(None)))
                or 0
            )

    # Named leases shared by workers (e.g. a cooldown).

    def claim_lease(self, name: str, seconds: float) -> bool:
        """Take the lease ``name`` for ``seconds`` if nobody holds it: True for exactly one of
        several workers asking at once."""
        now = utcnow()
        with self._session.begin() as session:
            session.execute(
                self._insert(_Lease).on_conflict_do_nothing(), [{"name": name, "until": None}]
            )
        with self._session.begin() as session:
            return bool(
                session.execute(
                    update(_Lease)
                    .where(_Lease.name == name, _Lease.until.is_(None) | (_Lease.until <= now))
                    .values(until=now + timedelta(seconds=seconds))
                ).rowcount
            )

    def release_lease(self, name: str) -> None:
        with self._session.begin() as session:
            session.execute(update(_Lease).where(_Lease.name == name).values(until=None))

    def latest_spectra(self, machine: str, bearing: int) -> tuple[datetime, Spectra] | None:
        """The bearing's latest raw recording's spectra and its time (None: none kept)."""
        with self._session() as session:
            row = session.execute(
                select(_Spectra.recorded_at, _Spectra.spectra).where(
                    _Spectra.machine == machine, _Spectra.bearing == bearing
                )
            ).first()
        return None if row is None else (row[0], _unpack(row[1]))


_LOGGED_CHUNK = 128  # recordings per statement: 384 bound values, a 128-term OR


@functools.lru_cache(maxsize=16)
def _logged_query(n: int):
    """What is logged for ``n`` recordings (bound as ``machine_i``, ``bearing_i``, ``at_i``): an
    OR of each recording's key, which SQLite and PostgreSQL answer from the unique index (a
    row-value IN list is a scan of the whole table in SQLite)."""
    return select(
        _Prediction.machine,
        _Prediction.bearing,
        _Prediction.recorded_at,
        _Prediction.request_id,
        _Prediction.features_digest,
        _Prediction.answer,
        _Prediction.model_version,
    ).where(
        or_(
            *(
                _of_bearing(_Prediction, i)
                & (_Prediction.recorded_at == bindparam(f"at_{i}", type_=DateTime))
                for i in range(n)
            )
        )
    )


# Reads of many bearings in one statement: each bearing's own query (a range scan of its index
# with its own LIMIT) joined by UNION ALL and tagged with the bearing's position, so a request
# costs one round trip per kind of read, not one per bearing. The statements are built once per
# kind and number of bearings, with bound parameters: building them is what costs, not running.

_UNION_PARTS = 200  # under SQLite's limit of 500 terms in a compound SELECT


def _of_bearing(table, i: int):
    return (table.machine == bindparam(f"machine_{i}")) & (
        table.bearing == bindparam(f"bearing_{i}")
    )


def _sample_times(i: int):
    return (
        select(_BaselineSample.recorded_at)
        .where(_of_bearing(_BaselineSample, i))
        .order_by(_BaselineSample.recorded_at)
        .limit(bindparam("recordings"))
    )


def _samples(i: int):
    return _sample_times(i).add_columns(_BaselineSample.features)


# What a new prediction needs of an earlier one: the columns of LoggedPoint, in its order.
_POINT = (_Prediction.recorded_at, _Prediction.wear, _Prediction.health, _Prediction.state)


def _without_features():
    """Predictions as records, their features left unread (raising if touched)."""
    unread = (_Prediction.features, _Prediction.feature_set, _Prediction.feature_values)
    return select(_Prediction).options(*(defer(c, raiseload=True) for c in unread))


def _record(r: _Prediction) -> PredictionRecord:
    return PredictionRecord(
        r.request_id,
        r.machine,
        r.bearing,
        r.recorded_at,
        r.features_digest,
        r.wear,
        r.rul_h,
        r.alarm,
        r.model_name,
        r.model_version,
        r.answer,
        r.health,
        r.state,
        r.rul_low_h,
        r.rul_high_h,
    )


def _points(machine: str, bearing: int):
    return select(*_POINT).where(_Prediction.machine == machine, _Prediction.bearing == bearing)


def _recent_points(i: int):
    return (
        select(*_POINT)
        .where(
            _of_bearing(_Prediction, i),
            _Prediction.recorded_at < bindparam(f"before_{i}", type_=DateTime),
        )
        .order_by(_Prediction.recorded_at.desc(), _Prediction.id.desc())
        .limit(bindparam("window"))
    )


def _first_time(i: int):
    return select(func.min(_Prediction.recorded_at)).where(_of_bearing(_Prediction, i))


@functools.lru_cache(maxsize=256)
def _union(query_of, n: int):
    parts = [
        query_of(i).add_columns(literal(i).label("bearing_index")).subquery().select()
        for i in range(n)
    ]
    return parts[0] if n == 1 else union_all(*parts)


def _per_bearing(
    conn, query_of, keys: list[Key], each: dict[str, dict[Key, object]] | None = None, **params
) -> dict[Key, list[tuple]]:
    """Rows of ``query_of(i)`` (the query of the bearing bound as ``machine_i``,
    ``bearing_i``, and ``name_i`` for each of ``each``'s per-bearing values) for each bearing,
    in the query's order; ``params`` are bound for all."""
    out: dict[Key, list[tuple]] = {key: [] for key in keys}
    for start in range(0, len(keys), _UNION_PARTS):
        chunk = keys[start : start + _UNION_PARTS]
        bound = dict(params)
        for i, key in enumerate(chunk):
            bound[f"machine_{i}"], bound[f"bearing_{i}"] = key
            for name, values in (each or {}).items():
                bound[f"{name}_{i}"] = values[key]
        for *values, index in conn.execute(_union(query_of, len(chunk)), bound).all():
            out[chunk[index]].append(tuple(values))
    return out


def _baseline_times(conn, keys: list[Key], recordings: int) -> dict[Key, list[datetime]]:
    rows = _per_bearing(conn, _sample_times, keys, recordings=recordings)
    return {key: [t for (t,) in found] for key, found in rows.items()}


def _recent(
    conn, keys: list[Key], window: int, before: dict[Key, datetime]
) -> dict[Key, list[LoggedPoint]]:
    """Each bearing's last ``window`` predictions before its own ``before`` time."""
    if window <= 0:
        return {key: [] for key in keys}
    rows = _per_bearing(conn, _recent_points, keys, {"before": before}, window=window)
    return {key: [LoggedPoint(*row) for row in reversed(found)] for key, found in rows.items()}


def _open_alarm(conn, key: Key, before: datetime) -> tuple[datetime, int]:
    """When the alarm episode of a bearing's last prediction before ``before`` was raised, and
    how many predictions it holds: those after its latest one not in alarm (found in the
    partial index of those, then counted in the recordings' index alone)."""
    t = _Prediction.recorded_at
    machine, bearing = key
    earlier = (_Prediction.machine == machine, _Prediction.bearing == bearing, t < before)
    calm = conn.execute(select(func.max(t)).where(*earlier, text(_CALM))).scalar()
    since = earlier if calm is None else (*earlier, t > calm)
    raised, count = conn.execute(select(func.min(t), func.count()).where(*since)).one()
    return raised, count


def _first_times(conn, keys: list[Key]) -> dict[Key, datetime | None]:
    rows = _per_bearing(conn, _first_time, keys)
    return {key: found[0][0] if found else None for key, found in rows.items()}
