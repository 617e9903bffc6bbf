"""Alarm states with hysteresis, the persistent-alarm rule, and remaining life by trend.

All work on any per-recording series: a health indicator, predicted wear, or raw RMS.

The alarm state machine (:func:`track_alarms`) has three states. A bearing in ``ok`` goes to
``watch`` at its first recording above the threshold; from ``watch`` it goes to ``alarm`` once
``k`` of the last ``n`` recordings are above (sustained evidence), so one noisy recording does
not page anyone and a real rise does within ``n``. It goes back to ``ok`` only after ``clear``
recordings in a row at or below a clearing level under the threshold (sustained recovery, with
a deadband), so an alarm does not flicker while a damaged bearing's vibration wanders around
the threshold. Each excursion from ``ok`` is an :class:`Episode` with its start, end and peak.

The k-of-n rule alone (:func:`alarm_states`, :func:`first_alarm`) is kept for the evaluation of
raw thresholds, which judges the rule without hysteresis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Wear rising slower than this (a million hours from new to failed) is not rising.
_FLAT_PER_HOUR = 1e-6

__all__ = [
    "ALARM",
    "OK",
    "WATCH",
    "AlarmRule",
    "AlarmTrack",
    "Episode",
    "alarm_evidence",
    "episodes_of",
    "next_state",
    "open_alarm",
    "track_alarms",
    "BearingStatus",
    "alarm_states",
    "bearing_status",
    "first_alarm",
    "persistent_alarm",
    "rul_by_trend",
]


OK, WATCH, ALARM = "ok", "watch", "alarm"
STATES = (OK, WATCH, ALARM)


@dataclass(frozen=True)
class AlarmRule:
    """When the state machine enters and leaves ``alarm``."""

    k: int = 3  # recordings above the threshold, of the last n, that raise the alarm
    n: int = 5
    clear: int = 6  # recordings in a row at or below the clearing level that end an episode

    @property
    def memory(self) -> int:
        """How many of the latest recordings decide the next state."""
        return max(self.n, self.clear)

    def __post_init__(self) -> None:
        if not 0 < self.k <= self.n or self.clear < 1:
            raise ValueError(f"alarm rule needs 0 < k <= n and clear >= 1, got {self}")


@dataclass(frozen=True)
class Episode:
    """One excursion from ``ok``: indices into the series it was found on."""

    start: int  # first recording above the threshold
    end: int | None  # first recording back in ok (None: still open)
    peak: int  # the recording with the largest value
    peak_value: float
    level: str  # the highest state reached: watch or alarm
    raised: int | None  # the recording where the alarm was raised (None: watch only)


@dataclass(frozen=True)
class AlarmTrack:
    states: list[str]  # one per recording
    episodes: list[Episode]

    @property
    def alarms(self) -> list[Episode]:
        return [e for e in self.episodes if e.level == ALARM]


def track_alarms(
    values: np.ndarray,
    threshold: float | np.ndarray,
    rule: AlarmRule,
    *,
    clear_level: float | np.ndarray | None = None,
    initial: str = OK,
) -> AlarmTrack:
    """The state at every recording of a time-ordered series, and its episodes.

    An episode ends only once the values are back at or below ``clear_level`` (default: the
    threshold itself) for ``rule.clear`` recordings in a row. ``initial`` is the state before
    the first value (a served bearing continues from its logged state); the series then starts
    without recent evidence either way. A missing value (NaN) is neither above nor unsettled.
    """
    values = np.asarray(values, dtype=float)
    above, settled = alarm_evidence(values, threshold, clear_level)
    if initial not in STATES:
        raise ValueError(f"unknown alarm state {initial!r}; known: {', '.join(STATES)}")
    state, states = initial, []
    for i in range(len(values)):
        window = slice(max(0, i + 1 - rule.memory), i + 1)
        state = next_state(state, above[window], settled[window], rule)
        states.append(state)
    return AlarmTrack(states, episodes_of(states, values))


def alarm_evidence(
    values: np.ndarray,
    threshold: float | np.ndarray,
    clear_level: float | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each value, whether it is above the threshold, and whether it is settled: at or
    below the clearing level (default: the threshold). A missing value (NaN) is neither above
    nor unsettled."""
    values = np.asarray(values, dtype=float)
    level = threshold if clear_level is None else clear_level
    with np.errstate(invalid="ignore"):
        return values > threshold, ~(values > level)


def open_alarm(episodes: list[Episode]) -> Episode | None:
    """The last alarm episode if it is still open at the end of its series: on a bearing that
    failed there, the one that caught the failure (an earlier one that ended was false)."""
    alarms = [e for e in episodes if e.level == ALARM]
    return alarms[-1] if alarms and alarms[-1].end is None else None


def episodes_of(states: list[str | None], values: np.ndarray) -> list[Episode]:
    """The excursions from ``ok`` of a state sequence (None counts as ok), with their peaks."""
    episodes: list[Episode] = []
    current: dict | None = None
    for i, state in enumerate(states):
        value = float(values[i])
        if state in (None, OK):
            if current is not None:
                episodes.append(Episode(**current, end=i))
                current = None
            continue
        if current is None:
            current = {"start": i, "peak": i, "peak_value": value, "level": WATCH, "raised": None}
        if state == ALARM and current["raised"] is None:
            current.update(level=ALARM, raised=i)
        if value > current["peak_value"]:
            current.update(peak=i, peak_value=value)
    if current is not None:
        episodes.append(Episode(**current, end=None))
    return episodes


def next_state(state: str, above: np.ndarray, settled: np.ndarray, rule: AlarmRule) -> str:
    """The state after the latest recording, from the state before it and, for the latest
    ``rule.memory`` recordings (the latest last), whether each was above the threshold and
    whether it was back at or below the clearing level (a deadband under the threshold, so a
    value hovering about the threshold does not end and start an episode again and again)."""
    above = np.asarray(above, dtype=bool)
    unsettled = np.flatnonzero(~np.asarray(settled, dtype=bool))
    calm = len(above) - 1 - int(unsettled[-1]) if len(unsettled) else len(above)
    if state == OK and above[-1]:
        state = WATCH
    elif state != OK and calm >= rule.clear:
        state = OK
    if state == WATCH and int(above[-rule.n :].sum()) >= rule.k:
        state = ALARM
    return state


def alarm_states(above: np.ndarray, k: int, n: int) -> np.ndarray:
    """For each recording, whether k of the last n (itself included) are above."""
    above = np.asarray(above, dtype=bool)
    counts = np.convolve(above.astype(int), np.ones(n, dtype=int))[: len(above)]
    return counts >= k


def first_alarm(above: np.ndarray, k: int, n: int) -> int | None:
    """Index of the recording at which the first persistent alarm is raised."""
    states = alarm_states(above, k, n)
    hits = np.flatnonzero(states)
    return int(hits[0]) if len(hits) else None


def persistent_alarm(above: np.ndarray, k: int, n: int) -> int | None:
    """Index where the first persistent rise began (its first recording above threshold)."""
    raised = first_alarm(above, k, n)
    if raised is None:
        return None
    window = np.asarray(above[max(0, raised - n + 1) : raised + 1], dtype=bool)
    return max(0, raised - n + 1) + int(np.argmax(window))


def rul_by_trend(hours: np.ndarray, wear: np.ndarray) -> tuple[float | None, float]:
    """Hours until a straight line fitted to (hours, wear) reaches 1, and its slope per hour.

    ``None`` when wear is not rising: no finite estimate, which is different from "fails now".
    """
    hours, wear = np.asarray(hours, float), np.asarray(wear, float)
    if len(hours) < 2 or np.ptp(hours) <= 0:
        return None, 0.0
    slope, intercept = np.polyfit(hours, wear, 1)
    if slope <= _FLAT_PER_HOUR:
        return None, float(slope)
    now_level = intercept + slope * hours[-1]
    return float(max((1.0 - now_level) / slope, 0.0)), float(slope)


@dataclass(frozen=True)
class BearingStatus:
    alarm: bool  # the persistent-alarm rule holds at the latest recording
    rul_h: float | None  # hours until predicted wear reaches 1, by trend
    wear_slope_per_h: float
    rul_method: str


def bearing_status(
    hours: np.ndarray, wear: np.ndarray, *, threshold: float, k: int, n: int, recent: int
) -> BearingStatus:
    """Alarm state and remaining life at the latest of a bearing's time-ordered predictions."""
    wear = np.asarray(wear, float)
    # Only the last n recordings decide the alarm, only the last `recent` the trend.
    alarm = bool(alarm_states(wear[-n:] > threshold, k, n)[-1]) if len(wear) else False
    rul, slope = rul_by_trend(np.asarray(hours, float)[-recent:], wear[-recent:])
    if len(wear) < 3:
        method = f"none: {len(wear)} recording(s) of history, at least 3 needed for a trend"
        rul = None
    elif wear[-1] < threshold / 2:
        # Extrapolating the noise of a healthy bearing would invent a remaining life.
        method = (
            f"none: wear {wear[-1]:.2f} is below half the alarm threshold, "
            "no degradation to extrapolate"
        )
        rul = None
    elif rul is None:
        method = f"trend of the last {min(recent, len(wear))} predictions: wear not rising"
    else:
        method = (
            f"linear trend of the last {min(recent, len(wear))} predictions extrapolated to wear 1"
        )
    return BearingStatus(alarm=alarm, rul_h=rul, wear_slope_per_h=slope, rul_method=method)
