"""The persistent-alarm rule and remaining useful life by trend.

Both work on any per-recording series: predicted wear, or a raw health indicator such as RMS.
An alarm is raised at the recording where at least ``k`` of the last ``n`` recordings are above
the threshold, so one noisy recording does not page anyone, and a real rise does within ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Wear rising slower than this (a million hours from new to failed) is not rising.
_FLAT_PER_HOUR = 1e-6

__all__ = [
    "BearingStatus",
    "alarm_states",
    "bearing_status",
    "first_alarm",
    "persistent_alarm",
    "rul_by_trend",
]


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
