"""Scoring behind the API: features (or feature rows) to logged per-bearing predictions.

Each bearing is compared with its own baseline (its first ``baseline_recordings`` recordings
seen by this API, kept in the prediction log); the alarm state and the remaining life by trend
use its logged history. The same feature code as training computes raw recordings' features.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from wearcast.alarms import bearing_status
from wearcast.api.model_store import LoadedModel
from wearcast.api.schemas import BearingPrediction, PredictionResponse
from wearcast.baseline import BASELINE_PREFIX, baseline_median
from wearcast.config import Settings
from wearcast.features import FeatureSpec, recording_features
from wearcast.prediction_log import PredictionLog, PredictionRecord
from wearcast.rig import bearing_channels

__all__ = ["BearingInput", "Scorer", "UnknownFeatures", "responses"]


_BASELINE_CACHE = 100_000  # bearings


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
        # Complete baselines never change again: keep them instead of re-reading the samples.
        self._baselines: OrderedDict[tuple[str, int], dict[str, float | None]] = OrderedDict()

    def _remember(self, key: tuple[str, int], baseline: dict[str, float | None]) -> None:
        self._baselines[key] = baseline
        if len(self._baselines) > _BASELINE_CACHE:
            self._baselines.popitem(last=False)

    def recording_inputs(
        self, data: np.ndarray, machine: str, timestamp: datetime
    ) -> list[BearingInput]:
        """Per-bearing features of one validated recording."""
        channel_map = bearing_channels(data.shape[1], self.settings.bearings_per_machine)
        columns, rows = recording_features(data, channel_map, self.spec)
        width = len(self.spec.names)  # the bearing-level features come first
        return [
            BearingInput(
                machine,
                bearing,
                timestamp,
                dict(zip(columns[:width], row[:width].tolist(), strict=True)),
            )
            for bearing, row in zip(channel_map, rows, strict=True)
        ]

    def score(
        self, inputs: list[BearingInput], model: LoadedModel
    ) -> tuple[str, list[BearingPrediction]]:
        needed = model.features
        missing = sorted({f for i in inputs for f in needed if f not in i.features})
        if missing:
            shown = ", ".join(missing[:10]) + (
                f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            )
            raise UnknownFeatures(f"the model needs features that are missing: {shown}")
        settings = self.settings
        k = settings.baseline_recordings
        window = max(settings.alarm_n, settings.rul_trend_recordings) - 1
        keys = sorted({(i.machine, i.bearing) for i in inputs})
        cached = {key: self._baselines[key] for key in keys if key in self._baselines}
        contexts = self.log.contexts(
            keys,
            k,
            window,
            before=min(i.timestamp for i in inputs),
            samples_for={key for key in keys if key not in cached},
        )
        values = np.array([[item.features[f] for f in needed] for item in inputs], dtype=np.float64)
        order = sorted(range(len(inputs)), key=lambda j: inputs[j].timestamp)
        baselines = np.full_like(values, np.nan)
        counts = [0] * len(inputs)
        new_samples = []
        matrices: dict[tuple[str, int], list[list[float]]] = {}
        for j in order:  # in time order, so a bearing's first recordings become its baseline
            item = inputs[j]
            if item.baseline is not None:
                baselines[j] = [_nan(item.baseline.get(f)) for f in needed]
                continue
            key = (item.machine, item.bearing)
            if key in cached:
                baselines[j] = [_nan(cached[key].get(f)) for f in needed]
                counts[j] = k
                continue
            ctx = contexts[key]
            if key not in matrices:  # the stored samples, as rows of a matrix
                matrices[key] = [[_nan(s.get(f)) for f in needed] for _, s in ctx.samples]
            if len(ctx.samples) < k and all(t != item.timestamp for t, _ in ctx.samples):
                sample = _clean(dict(zip(needed, values[j].tolist(), strict=True)))
                ctx.samples.append((item.timestamp, sample))
                matrices[key].append(values[j].tolist())
                new_samples.append((item.machine, item.bearing, item.timestamp, sample))
            baselines[j] = baseline_median(matrices[key])
            counts[j] = len(ctx.samples)
            if counts[j] == k:
                cached[key] = _clean(dict(zip(needed, baselines[j].tolist(), strict=True)))
        X = pd.DataFrame(
            np.hstack([values, baselines]), columns=needed + [BASELINE_PREFIX + f for f in needed]
        )
        wear = model.predict(X)
        request_id = uuid.uuid4().hex
        records: list[PredictionRecord | None] = [None] * len(inputs)
        answers: list[BearingPrediction | None] = [None] * len(inputs)
        for j in order:
            item = inputs[j]
            ctx = contexts[(item.machine, item.bearing)]
            ctx.recent.append((item.timestamp, float(wear[j])))
            recent = ctx.recent[-(window + 1) :]
            hours = np.array([(t - recent[0][0]).total_seconds() / 3600 for t, _ in recent])
            status = bearing_status(
                hours,
                np.array([w for _, w in recent]),
                threshold=settings.alarm_threshold,
                k=settings.alarm_k,
                n=settings.alarm_n,
                recent=settings.rul_trend_recordings,
            )
            digest = hashlib.blake2b(values[j].tobytes(), digest_size=16).hexdigest()
            records[j] = PredictionRecord(
                request_id,
                item.machine,
                item.bearing,
                item.timestamp,
                digest,
                float(wear[j]),
                status.rul_h,
                status.alarm,
                model.name,
                model.version,
            )
            answers[j] = BearingPrediction(
                bearing=item.bearing,
                bearing_id=f"{item.machine}:{item.bearing}",
                wear=float(wear[j]),
                alarm=status.alarm,
                alarm_state="alarm" if status.alarm else "ok",
                rul_h=status.rul_h,
                rul_method=status.rul_method,
                baseline_recordings=counts[j],
            )
        self.log.commit(new_samples, records)
        for key, baseline in cached.items():  # only once stored: a failed commit caches nothing
            self._remember(key, baseline)
        return request_id, answers


def responses(
    request_id: str,
    inputs: list[BearingInput],
    answers: list[BearingPrediction],
    model: LoadedModel,
) -> list[PredictionResponse]:
    """One response per (machine, time) of the inputs, in their order."""
    grouped: dict[tuple[str, datetime], list[BearingPrediction]] = {}
    for item, answer in zip(inputs, answers, strict=True):
        grouped.setdefault((item.machine, item.timestamp), []).append(answer)
    return [
        PredictionResponse(
            request_id=request_id,
            machine=machine,
            timestamp=stamp,
            model_name=model.name,
            model_version=model.version,
            bearings=bearings,
        )
        for (machine, stamp), bearings in grouped.items()
    ]


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
