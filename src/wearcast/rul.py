"""Remaining useful life at every recording, with an interval.

Two sources of evidence, blended:

* **the training fleet's lives.** Before a bearing's alarm, all that is known is that it has
  survived so far: its remaining life is the fleet's life distribution (log-normal, fitted to the
  failed training bearings) conditioned on surviving to its age. After the alarm, the same is
  done with the fleet's times from alarm to failure, conditioned on the time since the alarm.
* **the bearing's own trajectory.** After the alarm, an exponential degradation model (log health
  indicator linear in time) is fitted to the latest recordings since the episode began and
  extrapolated to the level at which the fleet's bearings failed. It is blended with the fleet's
  estimate in log-time, its weight growing with the recordings since the alarm (a
  Bayesian-style update with the fleet as prior).

The interval is the fleet distribution's central ``coverage`` interval around the blended
estimate, widened by a factor calibrated on held-out runs (split-conformal on log-ratio
errors), so its coverage is measured rather than assumed. Only recordings up to the one scored
are ever used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = [
    "TREND_RECORDINGS",
    "AlarmStart",
    "Estimate",
    "RemainingLife",
    "Trajectory",
    "phm2012_point",
    "phm2012_score",
]

# Rolling bearings' own scatter of lives: Weibull with a shape near 1.5 (the dispersion ISO
# 281's life adjustment rests on), a log-life standard deviation of pi / (1.5 sqrt 6) = 0.85;
# the time a defect takes to grow is taken to vary as much. One failed training bearing says
# nothing of the spread, and a few understate it (two equal simulated lives would say none).
_BEARING_LIFE_SIGMA = math.pi / (1.5 * math.sqrt(6))
_TREND_PRIOR_RECORDINGS = 20  # since the alarm, when the trajectory and the fleet weigh the same
_MIN_TREND_RECORDINGS = 5
_TREND_HALF_WEIGHT_T = 2.0  # the health trend's slope, in standard errors, that weighs half
# The trend is fitted to at most the latest this many recordings since the alarm: a defect's
# growth speeds up, so its recent rate is what extrapolates, and a bearing left in alarm for
# weeks costs the API a bounded read.
TREND_RECORDINGS = 60


@dataclass(frozen=True)
class Trajectory:
    """One bearing's health indicator over time, as the estimator needs it."""

    hours: np.ndarray  # since the start of the bearing's life
    health: np.ndarray
    raised: int | None  # index of the first alarm, None if never alarmed
    life_h: float | None  # hours from start to failure (None: did not fail)


@dataclass(frozen=True)
class AlarmStart:
    """Where a bearing's current alarm episode began."""

    hours: float  # the bearing's age when the alarm was raised
    recordings: int  # recordings since, the latest included

    @classmethod
    def at(cls, hours: np.ndarray, raised: int | None) -> AlarmStart | None:
        """The episode raised at index ``raised`` of ``hours`` (None: not raised by the last)."""
        if raised is None or raised >= len(hours):
            return None
        return cls(float(hours[raised]), len(hours) - raised)


@dataclass(frozen=True)
class Estimate:
    rul_h: float
    low_h: float
    high_h: float
    method: str


def _lognormal(durations: np.ndarray) -> tuple[float, float]:
    """Log-mean and log-spread of ``durations``; the spread is the sample's pooled with rolling
    bearings' own as one more degree of freedom (a conjugate prior of weight one), so it is
    that alone for one duration and the sample's for many."""
    logs = np.log(np.maximum(durations, 1e-6))
    dof = len(logs) - 1
    sample = float(np.var(logs, ddof=1)) if dof else 0.0
    return float(np.mean(logs)), math.sqrt((_BEARING_LIFE_SIGMA**2 + dof * sample) / (1 + dof))


def _conditional_quantiles(mu: float, sigma: float, age: float, probs) -> np.ndarray:
    """Quantiles of (T - age) given T > age, T log-normal.

    Worked in log survival probabilities, so a bearing that has outlived the whole fleet still
    gets a positive remaining life and interval (the far tail), not zero."""
    # scipy.special rather than a frozen scipy.stats distribution: this runs on every request.
    survived = special.log_ndtr(-(math.log(age) - mu) / sigma) if age > 0 else 0.0
    left = survived + np.log1p(-np.asarray(probs, dtype=float))  # log P(T > age + r)
    quantiles = np.exp(mu - sigma * special.ndtri_exp(left)) - age
    return np.maximum(quantiles, 0.0)


class RemainingLife:
    """Fitted from the training fleet's trajectories; estimates at any prefix of a bearing."""

    def __init__(self, coverage: float = 0.8):
        self.coverage = coverage

    def fit(self, runs: list[Trajectory]) -> RemainingLife:
        self._fit_fleet(runs)
        failed = [r for r in runs if r.life_h is not None]
        self.widen_ = self._calibrate(failed) if len(failed) >= 3 else 1.0
        return self

    def _fit_fleet(self, runs: list[Trajectory]) -> None:
        failed = [r for r in runs if r.life_h is not None]
        if failed:
            lives = np.array([r.life_h for r in failed])
            self.life_ = _lognormal(lives)
            # The range says whose lives these are (a simulated fleet's 50 h beside a real
            # bearing's months shows at once).
            self.prior_ = (
                f"{len(failed)} failed training bearing(s), lives {lives.min():.3g} to "
                f"{lives.max():.3g} h"
            )
        else:  # only survivors: each lived at least its run; nothing says how much longer
            longest = max(float(r.hours[-1]) for r in runs)
            self.life_ = (math.log(2 * longest), 1.0)
            self.prior_ = "no failure in training: lives assumed about twice the longest run"
        alarmed = [r for r in failed if r.raised is not None]
        after = np.array([r.life_h - r.hours[r.raised] for r in alarmed])
        # With no alarmed failure, the time after an alarm is a fleet share of the whole life.
        self.after_alarm_ = _lognormal(after) if len(after) else (self.life_[0] - 1.0, 1.0)
        ends = [np.log(np.maximum(r.health[-3:].mean(), 1e-6)) for r in alarmed]
        self.failure_log_health_ = float(np.median(ends)) if ends else None
        self.widen_ = 1.0

    def _calibrate(self, failed: list[Trajectory]) -> float:
        """Scale of the log interval that makes held-out runs' coverage nominal."""
        ratios = []
        for i, run in enumerate(failed):
            others = RemainingLife(self.coverage)
            others._fit_fleet(failed[:i] + failed[i + 1 :])
            for j in _cut_points(len(run.hours)):
                hours = run.hours[: j + 1]
                est = others.estimate(hours, run.health[: j + 1], AlarmStart.at(hours, run.raised))
                ratios.append(_interval_ratio(est, run.life_h - run.hours[j]))
        return float(max(np.quantile(ratios, self.coverage), 1.0)) if ratios else 1.0

    def estimate(self, hours: np.ndarray, health: np.ndarray, alarm: AlarmStart | None) -> Estimate:
        """Remaining life at the last of ``hours`` (a bearing's recordings so far, or its
        latest ones, as long as they hold the last :data:`TREND_RECORDINGS` since ``alarm``)."""
        hours = np.asarray(hours, float)
        health = np.asarray(health, float)
        age = float(hours[-1])
        tail = (1 - self.coverage) / 2
        probs = (0.5, tail, 1 - tail)
        if alarm is None:
            median, low, high = _conditional_quantiles(*self.life_, age, probs)
            method = f"fleet lives ({self.prior_}) given survival to {age:.3g} h, no alarm"
        else:
            since = age - alarm.hours
            median, low, high = _conditional_quantiles(*self.after_alarm_, since, probs)
            method = f"fleet times from alarm to failure given {since:.3g} h since the alarm"
            recent = np.flatnonzero(hours >= alarm.hours)[-TREND_RECORDINGS:]
            fitted = self._trend(hours[recent], health[recent])
            if fitted is not None:
                trend, clarity = fitted
                weight = clarity * alarm.recordings / (alarm.recordings + _TREND_PRIOR_RECORDINGS)
                blended = math.exp(
                    (1 - weight) * math.log(max(median, 1e-6)) + weight * math.log(trend)
                )
                low, high = low * blended / max(median, 1e-9), high * blended / max(median, 1e-9)
                median = blended
                method += f", blended ({weight:.0%}) with the exponential trend of its health"
        spread = self.widen_
        low = median * (low / max(median, 1e-9)) ** spread
        high = median * (high / max(median, 1e-9)) ** spread
        return Estimate(float(median), float(low), float(high), method)

    def _trend(self, hours: np.ndarray, health: np.ndarray) -> tuple[float, float] | None:
        """Hours until the exponential fitted to the health indicator reaches failure level,
        and how clearly it rises, 0 to 1 (None: no rise to extrapolate)."""
        known = np.isfinite(health)
        hours, health = hours[known], health[known]
        if self.failure_log_health_ is None or len(hours) < _MIN_TREND_RECORDINGS:
            return None
        logs = np.log(np.maximum(health, 1e-6))
        if np.ptp(hours) <= 0:
            return None
        fit = stats.linregress(hours, logs)
        slope, intercept = fit.slope, fit.intercept
        if slope <= 0:
            return None
        now = intercept + slope * hours[-1]
        # The slope in standard errors t weighs t^2 / (t^2 + 4): half at two, none at zero, so
        # the answer moves smoothly as the fit firms up rather than switching at a cut.
        clarity = 1.0  # an exact fit (no residual error)
        if fit.stderr > 0:
            t2 = (slope / fit.stderr) ** 2
            clarity = t2 / (t2 + _TREND_HALF_WEIGHT_T**2)
        return float(max((self.failure_log_health_ - now) / slope, 1e-3)), clarity


def _cut_points(n: int) -> list[int]:
    return sorted({int(n * f) - 1 for f in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)} - {-1})


def _interval_ratio(est: Estimate, true: float) -> float:
    """The power the log interval must be raised to so it holds ``true`` (<= 1: inside)."""
    true = max(true, 1e-6)
    centre = math.log(max(est.rul_h, 1e-6))
    if true >= est.rul_h:
        half = math.log(max(est.high_h, 1e-6)) - centre
    else:
        half = centre - math.log(max(est.low_h, 1e-6))
    return abs(math.log(true) - centre) / max(half, 1e-6)


def phm2012_point(estimate: Estimate, coverage: float) -> float:
    """The point that maximises the expected PHM 2012 score under the estimate's own
    distribution (log-normal on each side of the median, spread from the interval): late
    estimates cost more than early ones, so it lies below the median."""
    z = special.ndtri(1 - (1 - coverage) / 2)
    median = max(estimate.rul_h, 1e-9)
    low_sigma = math.log(median / max(estimate.low_h, 1e-9)) / z
    high_sigma = math.log(max(estimate.high_h, 1e-9) / median) / z
    normal = special.ndtri(np.linspace(0.01, 0.99, 99))
    outcomes = median * np.exp(np.where(normal < 0, low_sigma, high_sigma) * normal)
    scores = [np.mean([phm2012_score(t, e) for t in outcomes]) for e in outcomes]
    return float(outcomes[int(np.argmax(scores))])


def phm2012_score(actual_h: float, estimate_h: float) -> float:
    """The IEEE PHM 2012 challenge score of one estimate (1 is perfect; late costs more)."""
    error = 100 * (actual_h - estimate_h) / actual_h
    if error <= 0:
        return math.exp(-math.log(0.5) * error / 5)
    return math.exp(math.log(0.5) * error / 20)
