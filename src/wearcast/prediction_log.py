"""The prediction log: every prediction the API makes, and each bearing's baseline recordings.

SQLAlchemy, so the same code writes to SQLite (the default, under ``WEARCAST_HOME``) or to
PostgreSQL (``WEARCAST_PREDICTION_DB_URL=postgresql+psycopg2://...``). Each request writes in
one transaction; SQLite runs in WAL mode with a busy timeout so concurrent requests queue
instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = ["BearingContext", "PredictionLog", "PredictionRecord"]


class _Base(DeclarativeBase):
    pass


class _Prediction(_Base):
    __tablename__ = "predictions"
    # Every request reads a bearing's latest predictions: keep that an index range scan.
    __table_args__ = (Index("ix_predictions_bearing_time", "machine", "bearing", "recorded_at"),)
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
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)


class _BaselineSample(_Base):
    __tablename__ = "baseline_samples"
    __table_args__ = (UniqueConstraint("machine", "bearing", "recorded_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine: Mapped[str] = mapped_column(String(200))
    bearing: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)
    features: Mapped[dict] = mapped_column(JSON)


@dataclass(frozen=True)
class BearingContext:
    samples: list[tuple[datetime, dict]]  # the bearing's first baseline recordings' features
    recent: list[tuple[datetime, float]]  # its latest logged (time, wear)


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


class PredictionLog:
    def __init__(self, url: str):
        sqlite = url.startswith("sqlite")
        self.engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
            pool_pre_ping=not sqlite,
        )
        if sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record) -> None:
                cursor = conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def history(
        self,
        machine: str,
        bearing: int,
        *,
        before: datetime | None = None,
        limit: int | None = None,
    ) -> list[PredictionRecord]:
        """Predictions of a bearing in recording order (the latest ``limit`` if given)."""
        query = select(_Prediction).where(
            _Prediction.machine == machine, _Prediction.bearing == bearing
        )
        if before is not None:
            query = query.where(_Prediction.recorded_at < before)
        query = query.order_by(_Prediction.recorded_at.desc(), _Prediction.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            rows = session.scalars(query).all()
        return [
            PredictionRecord(
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
            )
            for r in reversed(rows)
        ]

    def count(self) -> int:
        with self._session() as session:
            return session.scalar(select(func.count(_Prediction.id))) or 0

    def known_bearing(self, machine: str, bearing: int) -> bool:
        with self._session() as session:
            query = select(_Prediction.id).where(
                _Prediction.machine == machine, _Prediction.bearing == bearing
            )
            return session.scalar(query.limit(1)) is not None

    def contexts(
        self,
        keys: list[tuple[str, int]],
        recordings: int,
        window: int,
        before: datetime,
        *,
        samples_for: set[tuple[str, int]] | None = None,
    ) -> dict[tuple[str, int], BearingContext]:
        """For each (machine, bearing): its first ``recordings`` baseline samples (only for the
        keys in ``samples_for``, default all) and its last ``window`` predictions before
        ``before``, read in one session."""
        out = {}
        with self._session() as session:
            for machine, bearing in keys:
                samples = []
                if samples_for is None or (machine, bearing) in samples_for:
                    samples = session.execute(
                        select(_BaselineSample.recorded_at, _BaselineSample.features)
                        .where(
                            _BaselineSample.machine == machine, _BaselineSample.bearing == bearing
                        )
                        .order_by(_BaselineSample.recorded_at)
                        .limit(recordings)
                    ).all()
                recent = session.execute(
                    select(_Prediction.recorded_at, _Prediction.wear)
                    .where(
                        _Prediction.machine == machine,
                        _Prediction.bearing == bearing,
                        _Prediction.recorded_at < before,
                    )
                    .order_by(_Prediction.recorded_at.desc(), _Prediction.id.desc())
                    .limit(window)
                ).all()
                out[(machine, bearing)] = BearingContext(
                    samples=[(t, f) for t, f in samples],
                    recent=[(t, w) for t, w in reversed(recent)],
                )
        return out

    def commit(
        self,
        samples: list[tuple[str, int, datetime, dict[str, float | None]]],
        records: list[PredictionRecord],
    ) -> None:
        """Store new baseline samples and predictions in one transaction."""
        now = datetime.now(UTC)
        predictions = [{"created_at": now, **vars(r)} for r in records]
        sample_rows = [
            {"machine": m, "bearing": b, "recorded_at": t, "features": f} for m, b, t, f in samples
        ]
        # Core executemany inserts: the ORM's per-object bookkeeping would dominate a batch.
        try:
            with self._session.begin() as session:
                if sample_rows:
                    session.execute(insert(_BaselineSample), sample_rows)
                if predictions:
                    session.execute(insert(_Prediction), predictions)
        except IntegrityError:
            # A concurrent request stored the same baseline recording first: keep its sample.
            with self._session.begin() as session:
                if predictions:
                    session.execute(insert(_Prediction), predictions)
