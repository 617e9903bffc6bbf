"""Scoring behind the API: features (or feature rows) to logged per-bearing predictions.

Each bearing is compared with its own baseline (:mod:`wearcast.baseline`: its first
``baseline_recordings`` recordings by time, kept in the prediction log); its health indicator,
alarm state (continued from the logged state) and remaining life with interval use its logged
history (:meth:`wearcast.prognostics.Prognostics.next_step`). The same feature code as
training computes raw recordings' features. A recording (machine, bearing, time) is answered
once: a retry with the same content gets the logged answer back, different content at the same
time a conflict.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from wearcast.alarms import ALARM, OK, bearing_status
from wearcast.api.model_store import LoadedModel, UnusableInput
from wearcast.api.schemas import BearingPrediction, PredictionResponse
from wearcast.baseline import baseline_median, sample_medians
from wearcast.config import Settings
from wearcast.features import Analysis, FeatureSpec, analyse, bearing_features, bearing_spectra
from wearcast.formats import FORMATS
from wearcast.prediction_log import (
    FeatureValues,
    LoggedAnswer,
    LoggedPoint,
    MachineLayout,
    OutboxEvent,
    PredictionLog,
    PredictionRecord,
    RecordingSpectra,
    ScoringHistory,
    earliest_times,
)
from wearcast.prognostics import Prognostics
from wearcast.rig import Rig, bearing_channels
from wearcast.rul import TREND_RECORDINGS, AlarmStart

__all__ = [
    "BearingInput",
    "ConflictingRecording",
    "Scorer",
    "UnknownFeatures",
    "alarm_event",
    "responses",
]


_BASELINE_CACHE = 100_000  # bearings
_RIGS_KEPT = 64  # feature specs, one per rig (speed, rate, geometry) a client names


class UnknownFeatures(ValueError):
    """Feature rows that lack what the model needs."""


class ConflictingRecording(ValueError):
    """A recording already answered, sent again with different content."""


@dataclass(frozen=True)
class BearingInput:
    machine: str
    bearing: int
    timestamp: datetime
    features: dict[str, float]
    baseline: dict[str, float] | None = None

    @property
    def key(self) -> tuple[str, int, datetime]:
        return (self.machine, self.bearing, self.timestamp)


@dataclass(frozen=True)
class Baseline:
    """A bearing's baseline as read: the times of its samples and their medians."""

    times: tuple[datetime, ...]
    medians: dict[str, float]  # NaN: no sample has the feature


@dataclass(frozen=True)
class BatchBaselines:
    """The baselines of a request's inputs (:meth:`Scorer._baselines_of`)."""

    rows: np.ndarray  # each input's baseline, in the model's feature order
    counts: list[int]  # how many recordings made each
    sampled: list[tuple[str, int, datetime]]  # the recordings stored as new samples
    # Each bearing's first baseline sample, as read with its samples: its earliest recording
    # known, so its age counts from the same view of the log as its baseline.
    first_sample: dict[tuple[str, int], datetime]


@dataclass(frozen=True)
class RawRecording:
    """A validated raw recording, with the features of its rig and its bearings' channels."""

    data: np.ndarray
    machine: str
    timestamp: datetime
    spec: FeatureSpec
    channels: dict[int, list[int]]
    format: str

    @property
    def layout(self) -> MachineLayout:
        return MachineLayout(self.machine, self.format, self.data.shape[1])

    @functools.cached_property
    def analysis(self) -> Analysis:
        """Its FFTs, computed once for its features and its kept spectra."""
        return analyse(self.data, self.spec)


class Scorer:
    def __init__(self, settings: Settings, log: PredictionLog):
        self.settings = settings
        self.log = log
        self.spec = FeatureSpec.from_settings(settings)
        # Per rig (a spec is a few arrays), the most recent ones: a client sending a new
        # shaft_rpm with every request grew it by 3.6 kB a request, for ever.
        self._specs: OrderedDict[Rig, FeatureSpec] = OrderedDict()
        # Medians of a bearing's samples, valid while the log holds the same sample times (a
        # recording's sample never changes), so reading them again is only needed on change.
        self._baselines: OrderedDict[tuple[str, int], Baseline] = OrderedDict()

    def raw(
        self,
        data: np.ndarray,
        machine: str,
        timestamp: datetime,
        *,
        rig: Rig | None = None,
        bearings: int | None = None,
    ) -> RawRecording:
        """One validated recording made on ``rig`` with ``bearings`` bearings (None: the
        settings' IMS rig and bearings per machine), with its feature spec and channels."""
        rig = rig or FORMATS["ims"].defaults(self.settings)  # FeatureSpec's default rig too
        spec = self.spec_of(rig)
        channels = bearing_channels(data.shape[1], bearings or self.settings.bearings_per_machine)
        return RawRecording(data, machine, timestamp, spec, channels, rig.format)

    def spec_of(self, rig: Rig) -> FeatureSpec:
        """The features of recordings made on ``rig``; :class:`RecordingError` if they cannot
        be computed for it."""
        if rig not in self._specs:
            self._specs[rig] = FeatureSpec.from_settings(self.settings, rig)
            if len(self._specs) > _RIGS_KEPT:
                self._specs.popitem(last=False)
        self._specs.move_to_end(rig)
        return self._specs[rig]

    def recording_inputs(self, recording: RawRecording) -> list[BearingInput]:
        """Per-bearing features of one raw recording."""
        spec, channel_map = recording.spec, recording.channels
        columns, rows = bearing_features(recording.analysis, channel_map)
        width = len(spec.names)  # the bearing-level features come first
        return [
            BearingInput(
                recording.machine,
                bearing,
                recording.timestamp,
                dict(zip(columns[:width], row[:width].tolist(), strict=True)),
            )
            for bearing, row in zip(channel_map, rows, strict=True)
        ]

    def score(
        self,
        inputs: list[BearingInput],
        model: LoadedModel,
        recording: RawRecording | None = None,
    ) -> tuple[str, list[BearingPrediction]]:
        """Answer every input; log the new ones, and the spectra of the raw ``recording`` they
        come from (if any) as its bearings' latest. Returns the request id and the answers."""
        values = self._feature_matrix(inputs, model.features)
        digests = [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in values]
        prognostics = model.prognostics
        history = self.log.scoring_history(
            [i.key for i in inputs],
            baseline_recordings=self.settings.baseline_recordings,
            window=self._window(prognostics, alarmed=False) - 1,
            alarm_window=self._window(prognostics) - 1,
        )
        logged = history.logged
        _check_conflicts(inputs, digests, logged)
        fresh = [j for j, item in enumerate(inputs) if item.key not in logged]
        if not fresh:  # a retry: the answers as they were first given
            return logged[inputs[0].key].request_id, [_replay(logged[i.key]) for i in inputs]
        baselines = self._baselines_of(inputs, model.features, history.baseline_times)
        try:
            X = np.hstack([values, baselines.rows])  # the model's input_columns, in order
            wear = model.predict(X)
            health = model.health(X)
            request_id = uuid.uuid4().hex
            answers, before = self._answers(
                inputs, wear, baselines, health, model.version, prognostics, history
            )
            records, events = {}, {}
            names = tuple(model.features)  # one tuple for every row's logged features
            for j in fresh:  # the first of duplicates within the request is logged
                item = inputs[j]
                records.setdefault(
                    item.key,
                    PredictionRecord(
                        request_id,
                        item.machine,
                        item.bearing,
                        item.timestamp,
                        digests[j],
                        float(wear[j]),
                        answers[j].rul_h,
                        answers[j].alarm,
                        model.name,
                        model.version,
                        answers[j].model_dump(mode="json"),
                        answers[j].health,
                        answers[j].alarm_state,
                        answers[j].rul_low_h,
                        answers[j].rul_high_h,
                        FeatureValues(names, values[j]),
                    ),
                )
                if self.settings.webhook_url and item.key not in events:
                    event = alarm_event(item, before[j], answers[j], model, request_id)
                    if event is not None:
                        events[item.key] = event
            spectra = None
            if recording is not None:
                spectra = RecordingSpectra(
                    recording.machine,
                    recording.timestamp,
                    bearing_spectra(recording.analysis, recording.channels),
                )
            stored = logged | self.log.commit(
                list(records.values()),
                list(events.values()),
                spectra,
                sampled=({key[:2] for key in baselines.sampled}, self.settings.baseline_recordings),
                layout=recording.layout if recording is not None else None,
            )
        except Exception:
            # A refused request (a model failure, another layout) leaves nothing in the
            # log, its baseline samples included.
            self.log.take_back_samples(baselines.sampled)
            raise
        # A concurrent request may have logged the same recording first: its answer stands,
        # and if it stands for every input, so does its request id (the one in the log).
        _check_conflicts(inputs, digests, stored)
        mine = [stored[i.key].request_id == request_id for i in inputs]
        answered = [
            answers[j] if ours else _replay(stored[i.key])
            for j, (i, ours) in enumerate(zip(inputs, mine, strict=True))
        ]
        return request_id if any(mine) else stored[inputs[0].key].request_id, answered

    def _feature_matrix(self, inputs: list[BearingInput], needed: list[str]) -> np.ndarray:
        missing = sorted({f for i in inputs for f in needed if f not in i.features})
        if missing:
            raise UnknownFeatures(f"the model needs features that are missing: {_few(missing)}")
        # A baseline given is the bearing's own for every feature: half of one is a mistake.
        partial = sorted(
            {f for i in inputs if i.baseline is not None for f in needed if f not in i.baseline}
        )
        if partial:
            raise UnknownFeatures(
                f"a baseline given must have every feature the model needs; missing: "
                f"{_few(partial)} (or give none: the API keeps the bearing's own)"
            )
        values = np.array([[item.features[f] for f in needed] for item in inputs], dtype=np.float64)
        if np.isinf(values).any():
            raise UnusableInput(
                "the features are not finite: a sample value is far outside any physical range"
            )
        return values

    def _baselines_of(
        self,
        inputs: list[BearingInput],
        needed: list[str],
        logged_times: dict[tuple[str, int], list[datetime]],
    ) -> BatchBaselines:
        """Each input's baseline, given each bearing's logged baseline sample times.

        The bearing's recordings in this request that are among its first by time become
        samples first; each row then uses the samples up to its own time, as `wearcast
        predict` and one-at-a-time uploads do: a batch's early rows never see later ones."""
        k = self.settings.baseline_recordings
        own = [j for j, item in enumerate(inputs) if item.baseline is None]
        keys = sorted({(inputs[j].machine, inputs[j].bearing) for j in own})
        times = {key: logged_times[key] for key in keys}
        sampled = self._sample_first_recordings([inputs[j] for j in own], times)
        # Rows before a bearing's last sample (its first recordings, or a late arrival) use a
        # prefix of the samples; the rest, the whole baseline, which is cached.
        partial = {
            (inputs[j].machine, inputs[j].bearing)
            for j in own
            if inputs[j].timestamp < times[(inputs[j].machine, inputs[j].bearing)][-1]
        }
        stale = {key for key in keys if self._cached(key, times[key]) is None}
        samples = self.log.baseline_samples(sorted(stale | partial), k) if stale | partial else {}
        for key in stale:
            found = samples[key]
            self._remember(
                key, Baseline(tuple(t for t, _ in found), sample_medians([s for _, s in found]))
            )
        # A partial bearing's sample times and features (rows by time, in needed order).
        prefixes = {
            key: (
                [t for t, _ in samples[key]],
                np.array(
                    [
                        [np.nan if s.get(f) is None else s[f] for f in needed]
                        for _, s in samples[key]
                    ]
                ),
            )
            for key in partial
        }
        baselines, counts = self._baseline_rows(inputs, needed, times, prefixes)
        first_sample = {key: times[key][0] for key in keys} | {
            key: prefixes[key][0][0] for key in partial
        }
        return BatchBaselines(baselines, counts, sampled, first_sample)

    def _sample_first_recordings(
        self, inputs: list[BearingInput], times: dict[tuple[str, int], list[datetime]]
    ) -> list[tuple[str, int, datetime]]:
        """Store as baseline samples the ``inputs`` among their bearing's first recordings by
        time, and update ``times`` (each bearing's sample times) from the log, which holds
        concurrent requests' samples too; returns the recordings stored."""
        k = self.settings.baseline_recordings
        candidates = {}
        for item in inputs:
            have = times[(item.machine, item.bearing)]
            if (len(have) < k or item.timestamp < have[-1]) and item.timestamp not in have:
                candidates[item.key] = (item.machine, item.bearing, item.timestamp, item.features)
        if candidates:
            self.log.add_baseline_samples(list(candidates.values()))
            times |= self.log.baseline_times(sorted({c[:2] for c in candidates.values()}), k)
        return list(candidates)

    def _baseline_rows(
        self,
        inputs: list[BearingInput],
        needed: list[str],
        times: dict[tuple[str, int], list[datetime]],
        prefixes: dict[tuple[str, int], tuple[list[datetime], np.ndarray]],
    ) -> tuple[np.ndarray, list[int]]:
        """Each input's baseline in ``needed`` order and how many samples made it: the one
        given, the median of a partial bearing's samples up to the input's time, or the
        bearing's whole (cached) baseline."""
        baselines = np.full((len(inputs), len(needed)), np.nan)
        counts = [0] * len(inputs)
        rows: dict[tuple[str, int, int], np.ndarray] = {}  # (bearing, samples): in needed order
        for j, item in enumerate(inputs):
            if item.baseline is not None:
                baselines[j] = [item.baseline[f] for f in needed]
                continue
            key = (item.machine, item.bearing)
            if key in prefixes:
                stamps, matrix = prefixes[key]
                n = bisect.bisect_right(stamps, item.timestamp)
                if (*key, n) not in rows:
                    rows[(*key, n)] = baseline_median(matrix[:n])
            else:
                n = len(times[key])
                if (*key, n) not in rows:
                    medians = self._baselines[key].medians
                    rows[(*key, n)] = np.array([medians.get(f, np.nan) for f in needed])
            baselines[j] = rows[(*key, n)]
            counts[j] = n
        return baselines, counts

    def _cached(self, key: tuple[str, int], times: list[datetime]) -> Baseline | None:
        cached = self._baselines.get(key)
        if cached is None or cached.times != tuple(times):
            return None
        self._baselines.move_to_end(key)
        return cached

    def _remember(self, key: tuple[str, int], baseline: Baseline) -> None:
        self._baselines[key] = baseline
        if len(self._baselines) > _BASELINE_CACHE:
            self._baselines.popitem(last=False)

    def _answers(
        self,
        inputs: list[BearingInput],
        wear: np.ndarray,
        baselines: BatchBaselines,
        health: np.ndarray | None,
        version: int,
        prognostics: Prognostics | None,
        history: ScoringHistory,
    ) -> tuple[list[BearingPrediction], list[str | None]]:
        """Health indicator, alarm state and remaining life of each input, from the bearing's
        logged history before it and the inputs of this request, in time order; and the
        bearing's state at its recording before each input (None: none, or not known)."""
        window = self._window(prognostics)
        recent = history.recent
        # A bearing's age counts from its first recording: logged, its first baseline sample
        # (read after the history: a concurrent request's may be there), or the earliest here.
        earliest = earliest_times(i.key for i in inputs)
        start = {
            key: min(t, history.first_times[key] or t, baselines.first_sample.get(key, t))
            for key, t in earliest.items()
        }
        # Each bearing's open alarm episode, in hours of its age, as its answers go on.
        alarms = {
            key: AlarmStart((raised - start[key]).total_seconds() / 3600, count)
            for key, (raised, count) in history.open_alarms.items()
        }
        k = self.settings.baseline_recordings
        answers: list[BearingPrediction | None] = [None] * len(inputs)
        before: list[str | None] = [None] * len(inputs)
        first: dict[tuple[str, int, datetime], int] = {}
        for j in sorted(range(len(inputs)), key=lambda j: inputs[j].timestamp):
            item = inputs[j]
            if item.key in first:  # the same recording twice (same content: checked before)
                answers[j], before[j] = answers[first[item.key]], before[first[item.key]]
                continue  # not a second point of the bearing's history
            first[item.key] = j
            key = (item.machine, item.bearing)
            before[j] = recent[key][-1].state if recent[key] else None
            tail = recent[key][-(window - 1) :] if window > 1 else []
            if prognostics is None:
                status = self._wear_status(tail, item.timestamp, float(wear[j]))
            else:
                step = prognostics.next_step(
                    [(p.recorded_at - start[key]).total_seconds() / 3600 for p in tail]
                    + [(item.timestamp - start[key]).total_seconds() / 3600],
                    [_nan(p.health) for p in tail] + [float(health[j])],
                    [p.state for p in tail],
                    alarm_before=alarms.get(key),
                    warming_up=baselines.counts[j] < k and item.baseline is None,
                )
                alarms[key] = step.alarm
                status = step.answer()
            recent[key].append(
                LoggedPoint(
                    item.timestamp, float(wear[j]), status.get("health"), status["alarm_state"]
                )
            )
            answers[j] = BearingPrediction(
                bearing=item.bearing,
                bearing_id=f"{item.machine}:{item.bearing}",
                wear=float(wear[j]),
                baseline_recordings=baselines.counts[j],
                model_version=version,
                **status,
            )
        return answers, before

    def _window(self, prognostics: Prognostics | None, *, alarmed: bool = True) -> int:
        """How many predictions of a bearing (the new one included) its next answer needs:
        the alarm rule's memory and, for a bearing in alarm (``alarmed``), the health trend
        since the alarm that its remaining life is fitted to."""
        window = max(self.settings.alarm_n, self.settings.rul_trend_recordings)
        if prognostics is not None:
            window = max(window, prognostics.rule.memory)
            if alarmed:
                window = max(window, TREND_RECORDINGS)
        return window

    def _wear_status(self, tail: list[LoggedPoint], timestamp: datetime, wear: float) -> dict:
        """A version trained without prognostics: the wear k-of-n rule and the wear trend."""
        settings = self.settings
        points = [(p.recorded_at, p.wear) for p in tail] + [(timestamp, wear)]
        hours = np.array([(t - points[0][0]).total_seconds() / 3600 for t, _ in points])
        status = bearing_status(
            hours,
            np.array([w for _, w in points]),
            threshold=settings.alarm_threshold,
            k=settings.alarm_k,
            n=settings.alarm_n,
            recent=settings.rul_trend_recordings,
        )
        return {
            "alarm": status.alarm,
            "alarm_state": ALARM if status.alarm else OK,
            "rul_h": status.rul_h,
            "rul_method": status.rul_method,
        }


def alarm_event(
    item: BearingInput,
    before: str | None,
    answer: BearingPrediction,
    model: LoadedModel,
    request_id: str,
) -> OutboxEvent | None:
    """The notification of a bearing entering or leaving alarm at this recording, if it does.
    Its id depends only on the bearing, the recording time and the change, so every retry or
    redelivery of the same change carries the same id."""
    entered = answer.alarm_state == ALARM
    if entered == (before == ALARM):
        return None
    kind = "alarm.raised" if entered else "alarm.cleared"
    event_id = uuid.uuid5(
        uuid.NAMESPACE_URL,
        f"wearcast:{item.machine}:{item.bearing}:{item.timestamp.isoformat()}:{kind}",
    ).hex
    payload = {
        "event_id": event_id,
        "type": kind,
        "machine": item.machine,
        "bearing": item.bearing,
        "bearing_id": answer.bearing_id,
        "recorded_at": item.timestamp.isoformat(),
        "alarm_state": answer.alarm_state,
        "previous_state": before,
        "health": answer.health,
        "wear": answer.wear,
        "rul_h": answer.rul_h,
        "model_name": model.name,
        "model_version": model.version,
        "request_id": request_id,
    }
    return OutboxEvent(item.key, event_id, kind, payload)


def _check_conflicts(
    inputs: list[BearingInput], digests: list[str], logged: dict[tuple, LoggedAnswer]
) -> None:
    first: dict[tuple, str] = {}
    for item, digest in zip(inputs, digests, strict=True):
        answered = logged[item.key].features_digest if item.key in logged else None
        known = answered or first.setdefault(item.key, digest)
        if known != digest:
            where = "already answered" if answered else "sent twice in this request"
            raise ConflictingRecording(
                f"bearing {item.machine}:{item.bearing} at {item.timestamp.isoformat()} is "
                f"{where} with different features: a recording is identified by machine, "
                "bearing and time (a retry must send the same content)"
            )


def _replay(logged: LoggedAnswer) -> BearingPrediction:
    if logged.answer is None:  # past prediction_detail_keep_days, or an old wearcast's
        raise ConflictingRecording(
            "this recording was answered long ago and its full answer is no longer kept "
            "(WEARCAST_PREDICTION_DETAIL_KEEP_DAYS); GET /v1/bearings/{id} has its numbers"
        )
    # Answers logged before they carried their version take it from the log's column.
    return BearingPrediction.model_validate({"model_version": logged.model_version} | logged.answer)


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
    out = []
    for (machine, stamp), bearings in grouped.items():
        versions = {b.model_version for b in bearings}
        out.append(
            PredictionResponse(
                request_id=request_id,
                machine=machine,
                timestamp=stamp,
                model_name=model.name,
                model_version=versions.pop() if len(versions) == 1 else model.version,
                bearings=bearings,
            )
        )
    return out


def _few(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
