"""Early warning and remaining life, fitted beside the wear model and served with it.

:class:`Prognostics` bundles the health indicator (:mod:`wearcast.health`), the alarm rule with
hysteresis (:mod:`wearcast.alarms`) and the remaining-life estimator (:mod:`wearcast.rul`).
:func:`fit_prognostics` fits all three on a labelled training table; :meth:`Prognostics.follow`
scores one bearing's time-ordered recordings, each from only the recordings up to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from wearcast.alarms import (
    ALARM,
    OK,
    AlarmRule,
    Episode,
    alarm_evidence,
    next_state,
    open_alarm,
    track_alarms,
)
from wearcast.baseline import BASELINE_PREFIX
from wearcast.config import Settings
from wearcast.dataset import degradation_onset
from wearcast.health import HealthIndicator
from wearcast.rul import AlarmStart, Estimate, RemainingLife, Trajectory

__all__ = ["BearingStep", "Prognostics", "fit_prognostics", "healthy_rows", "health_features"]

# Not in the default health indicator: the sensor's DC offset says nothing about the bearing, and
# the shape statistics (kurtosis, skewness, crest and the other factors, envelope kurtosis and
# line-to-background ratios) rise at a defect's birth and fall again as it spreads, and are
# noisy: a one-sided distance wants the levels, which only grow with damage. Measured on IMS
# test 2 (docs/model.md): with them, bearing 1's persistent alarm came 13 h ahead; without, 62 h.
_NOT_HEALTH = ("mean", "kurtosis", "skewness", "crest", "shape", "impulse", "clearance")
# Levels measured from zero carry the sensor's DC offset too, which wanders with a failing cable
# or bias supply while the vibration does not change (IMS test 1, bearing 4's first channel in
# its first two hours: RMS 0.06 to 0.24 g, std steady at 0.06): left out where the table has
# the level about the mean (std), and the spectrum and envelope exclude DC already.
_FROM_ZERO = ("rms", "peak")


def _is_level(name: str) -> bool:
    return name not in _NOT_HEALTH and name != "env_kurtosis" and not name.endswith("_snr")


@dataclass(frozen=True)
class BearingStep:
    """Everything said about one recording of a bearing."""

    health: float
    threshold: float
    state: str
    rul: Estimate
    alarm: AlarmStart | None  # the alarm episode it is in, if in alarm

    def answer(self) -> dict:
        """The fields the API and `wearcast predict` report for this recording."""
        return {
            "alarm": self.state == ALARM,
            "alarm_state": self.state,
            "health": self.health,
            "health_threshold": self.threshold,
            "rul_h": self.rul.rul_h,
            "rul_low_h": self.rul.low_h,
            "rul_high_h": self.rul.high_h,
            "rul_method": self.rul.method,
        }


@dataclass
class Prognostics:
    health: HealthIndicator
    rule: AlarmRule
    life: RemainingLife

    @property
    def threshold(self) -> float:
        return float(self.health.threshold_)

    @property
    def clear_level(self) -> float:
        # An indicator fitted before the deadband existed clears at its threshold.
        return float(getattr(self.health, "clear_level_", self.health.threshold_))

    def track(self, health: np.ndarray):
        return track_alarms(health, self.threshold, self.rule, clear_level=self.clear_level)

    def follow(
        self, hours: np.ndarray, health: np.ndarray, *, warmup: int = 0
    ) -> tuple[list[BearingStep], list[Episode]]:
        """State and remaining life at every recording of one bearing (hours since its start).

        The first ``warmup`` recordings (while the bearing's own baseline is being made) are
        never above the threshold: a baseline of a few recordings is too noisy to judge by."""
        hours, health = np.asarray(hours, float), np.asarray(health, float)
        judged = health.copy()
        judged[:warmup] = np.nan
        track = self.track(judged)
        steps, raised = [], None
        for i, state in enumerate(track.states):
            if state == OK:
                raised = None
            elif state == ALARM and raised is None:
                raised = i
            alarm = AlarmStart.at(hours[: i + 1], raised)
            rul = self.life.estimate(hours[: i + 1], health[: i + 1], alarm)
            steps.append(BearingStep(float(health[i]), self.threshold, state, rul, alarm))
        episodes = [replace(e, peak_value=float(health[e.peak])) for e in track.episodes]
        return steps, episodes

    def smoke_test(self, pipeline) -> None:
        """The training fleet's healthy baseline must score finite and below the threshold."""
        fleet = pipeline.named_steps["relative"].fleet_baseline_
        row = {c[len(BASELINE_PREFIX) :]: v for c, v in fleet.items()} | dict(fleet.items())
        health = self.health.score_samples(pd.DataFrame([row]))
        if not (np.isfinite(health).all() and health[0] < self.threshold):
            raise ValueError(
                f"smoke test failed: health indicator {health.tolist()} on a healthy bearing "
                f"(threshold {self.threshold:.3g})"
            )

    def next_step(
        self,
        hours: np.ndarray,
        health: np.ndarray,
        states_before: list[str | None],
        *,
        alarm_before: AlarmStart | None = None,
        warming_up: bool = False,
    ) -> BearingStep:
        """The step at the last of a bearing's latest recordings, given the states logged for
        the ones before it (what the API knows) and, if the last of them was in alarm, where
        that episode began (``alarm_before``; the log may hold more of it than ``hours``).
        ``hours`` count from the bearing's first recording; a state or health logged by an
        older version (None, NaN) counts as ok. ``warming_up``: the bearing's baseline is not
        complete yet (see :meth:`follow`)."""
        hours, health = np.asarray(hours, float), np.asarray(health, float)
        previous = [s or OK for s in states_before]
        above, settled = alarm_evidence(health, self.threshold, self.clear_level)
        if warming_up:
            above[-1], settled[-1] = False, True
        last = previous[-1] if previous else OK
        memory = self.rule.memory
        state = next_state(last, above[-memory:], settled[-memory:], self.rule)
        alarm = None
        if state == ALARM and last == ALARM and alarm_before is not None:
            alarm = AlarmStart(alarm_before.hours, alarm_before.recordings + 1)
        elif state == ALARM:
            alarm = AlarmStart(float(hours[-1]), 1)
        rul = self.life.estimate(hours, health, alarm)
        return BearingStep(float(health[-1]), self.threshold, state, rul, alarm)


def health_features(columns: list[str], chosen: list[str] | None = None) -> list[str]:
    """The health indicator's features among the model's: ``chosen`` (the setting), else the
    vibration levels (every feature but the DC offset, the shape statistics and, where ``std``
    is there, the levels that include the DC offset)."""
    if chosen:
        missing = sorted(set(chosen) - set(columns))
        if missing:
            raise ValueError(f"health_features not in the table: {', '.join(missing)}")
        return list(chosen)
    dc_free = "std" in columns
    return [c for c in columns if _is_level(c) and not (dc_free and c in _FROM_ZERO)]


def healthy_rows(frame: pd.DataFrame, settings: Settings) -> np.ndarray:
    """Recordings known to be healthy: a failed bearing's before its labelled degradation onset,
    and a bearing that did not fail before the same onset rule finds a lasting rise on it (a
    bearing beside a failing one shakes with it at the end of a run)."""
    healthy = np.zeros(len(frame), dtype=bool)
    for _, rows in frame.groupby(["run", "bearing"], sort=False):
        rows = rows.sort_values("timestamp")
        onset = rows["onset"].iloc[0]
        if not bool(rows["failed"].iloc[0]):
            onset = degradation_onset(
                rows["timestamp"], rows["health_indicator"].to_numpy(dtype=float), settings
            )
        keep = np.ones(len(rows), dtype=bool) if pd.isna(onset) else rows["timestamp"] < onset
        healthy[frame.index.get_indexer(rows.index)] = np.asarray(keep)
    return healthy


def fit_prognostics(frame: pd.DataFrame, columns: list[str], settings: Settings) -> Prognostics:
    """Fit the health indicator on the healthy recordings of a labelled table with baselines
    (``train.prepare``), then the remaining-life estimator on every bearing's trajectory."""
    healthy = frame[healthy_rows(frame, settings)]
    groups = healthy["run"].astype(str) + "/" + healthy["bearing"].astype(str)
    detector = HealthIndicator(
        features=health_features(columns, settings.health_features),
        false_alarm_rate=settings.health_false_alarm_rate,
        clear_rate=settings.health_clear_rate,
    ).fit(healthy, groups=groups.to_numpy())
    rule = AlarmRule(k=settings.alarm_k, n=settings.alarm_n, clear=settings.alarm_clear)
    prognostics = Prognostics(detector, rule, RemainingLife(settings.rul_interval_coverage))
    runs = []
    for _, rows in frame.groupby(["run", "bearing"], sort=True):
        rows = rows.sort_values("timestamp")
        health = detector.score_samples(rows)
        caught = open_alarm(prognostics.track(health).episodes)
        failed = bool(rows["failed"].iloc[0])
        hours = rows["elapsed_h"].to_numpy(dtype=float)
        runs.append(
            Trajectory(
                hours=hours,
                health=health,
                raised=None if caught is None else caught.raised,
                life_h=float(hours[-1] + rows["rul_h"].iloc[-1]) if failed else None,
            )
        )
    prognostics.life.fit(runs)
    return prognostics
