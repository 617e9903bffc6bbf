"""Scoring behind the API: features (or feature rows) to logged per-bearing predictions.

Each bearing is compared with its own baseline (its first ``baseline_recordings`` recordings
seen by this API, kept in the prediction log); the alarm state and the remaining life by trend
use its logged history. The same feature code as training computes raw recordings' features.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from wearcast.alarms import bearing_status
from wearcast.api.model_store import LoadedModel
from wearcast.api.schemas import BearingPrediction
from wearcast.config import Settings
from wearcast.features import FeatureSpec, recording_features
from wearcast.prediction_log import PredictionLog, PredictionRecord
from wearcast.rig import bearing_channels
from wearcast.train import BASELINE_PREFIX

__all__ = ["BearingInput", "Scorer", "UnknownFeatures"]


class UnknownFeatures(ValueError):
    """Feature rows that lack what the model needs."""


@dataclass(frozen=True)
class BearingInput:
    machine: str
    bearing: int
    timestamp: datetime
    features: dict[str, float]
    baseline: dict[str, float] | None = None


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in values.items()}


class Scorer:
    def __init__(self, settings: Settings, log: PredictionLog):
        self.settings = settings
        self.log = log
        self.spec = FeatureSpec.from_settings(settings)

    def recording_inputs(self, data: np.ndarray, machine: str, timestamp: datetime) -> list[BearingInput]:
        """Per-bearing features of one validated recording."""
        channel_map = bearing_channels(data.shape[1], self.settings.bearings_per_machine)
        columns, rows = recording_features(data, channel_map, self.spec)
        width = len(self.spec.names)  # the bearing-level features come first
        return [
            BearingInput(machine, bearing, timestamp, dict(zip(columns[:width], row[:width].tolist(), strict=True)))
            for bearing, row in zip(channel_map, rows, strict=True)
        ]

    def score(self, inputs: list[BearingInput], model: LoadedModel) -> tuple[str, list[BearingPrediction]]:
        needed = model.features
        missing = sorted({f for i in inputs for f in needed if f not in i.features})
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise UnknownFeatures(f"the model needs features that are missing: {shown}")
        settings = self.settings
        rows, counts = [], []
        for item in inputs:
            features = {f: item.features[f] for f in needed}
            if item.baseline is not None:
                baseline, count = item.baseline, 0
            else:
                baseline, count = self.log.baseline(
                    item.machine, item.bearing, settings.baseline_recordings,
                    current=(item.timestamp, _clean(features)),
                )  # fmt: skip
            base = baseline or {}
            rows.append(features | {BASELINE_PREFIX + f: _nan(base.get(f)) for f in needed})
            counts.append(count)
        wear = model.predict(pd.DataFrame(rows))
        request_id = uuid.uuid4().hex
        records, answers = [], []
        for item, w, count in zip(inputs, wear, counts, strict=True):
            past = self.log.history(
                item.machine, item.bearing, before=item.timestamp,
                limit=max(settings.alarm_n, settings.rul_trend_recordings) - 1,
            )  # fmt: skip
            times = [p.recorded_at for p in past] + [item.timestamp]
            hours = np.array([(t - times[0]).total_seconds() / 3600 for t in times])
            status = bearing_status(
                hours, np.array([p.wear for p in past] + [float(w)]),
                threshold=settings.alarm_threshold, k=settings.alarm_k, n=settings.alarm_n,
                recent=settings.rul_trend_recordings,
            )  # fmt: skip
            digest = hashlib.blake2b(
                np.asarray([item.features[f] for f in needed], dtype=np.float64).tobytes(), digest_size=16
            ).hexdigest()
            records.append(
                PredictionRecord(
                    request_id, item.machine, item.bearing, item.timestamp, digest, float(w),
                    status.rul_h, status.alarm, model.name, model.version,
                )  # fmt: skip
            )
            answers.append(
                BearingPrediction(
                    bearing=item.bearing,
                    bearing_id=f"{item.machine}:{item.bearing}",
                    wear=float(w),
                    alarm=status.alarm,
                    alarm_state="alarm" if status.alarm else "ok",
                    rul_h=status.rul_h,
                    rul_method=status.rul_method,
                    baseline_recordings=count,
                )
            )
        self.log.record(records)
        return request_id, answers


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
