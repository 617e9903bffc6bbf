"""The health indicator: how far a bearing has moved from its own healthy state.

Each recording's features are first made relative to the bearing's own baseline (its first
recordings: log-ratios for positive features, differences for the others, exactly as the wear
model sees them). A healthy bearing's deviations scatter around zero with a covariance that is
much the same across a fleet (sensor noise, load and temperature drift, the baseline's own
uncertainty), so that covariance is pooled over the training fleet's healthy recordings and
shrunk (Ledoit-Wolf). The indicator is the Mahalanobis distance of a recording's deviations,
divided by the square root of the number of features so a healthy recording sits near 1
whatever the feature set.

The alarm threshold is set for a stated false-alarm rate per recording on healthy data, not by
hand: it is the (1 - rate) quantile of healthy scores that the covariance did not see (each
training bearing scored by a covariance fitted without it), from the empirical quantile when
there are enough healthy recordings for it and from a generalised Pareto fit of the tail
(peaks over threshold) when there are not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import GroupKFold

from wearcast.baseline import BASELINE_PREFIX
from wearcast.model import BaselineRelative

__all__ = ["HealthIndicator", "calibrate_threshold"]

# The empirical quantile is trusted when at least this many healthy scores lie above it.
_MIN_EXCEEDANCES = 20
# Share of the healthy scores whose excesses the tail (generalised Pareto) fit is made of.
_TAIL_SHARE = 0.1


def calibrate_threshold(scores: np.ndarray, false_alarm_rate: float) -> float:
    """The level that healthy scores exceed with probability ``false_alarm_rate``."""
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must lie between 0 and 1, got {false_alarm_rate}")
    if len(scores) < 2 * _MIN_EXCEEDANCES:
        raise ValueError(
            f"{len(scores)} healthy scores are too few to calibrate a threshold "
            f"(at least {2 * _MIN_EXCEEDANCES} needed)"
        )
    if len(scores) * false_alarm_rate >= _MIN_EXCEEDANCES:
        return float(np.quantile(scores, 1 - false_alarm_rate))
    share = max(_TAIL_SHARE, _MIN_EXCEEDANCES / len(scores))
    if false_alarm_rate >= share:
        return float(np.quantile(scores, 1 - false_alarm_rate))
    base = float(np.quantile(scores, 1 - share))
    excess = scores[scores > base] - base
    shape, _, scale = stats.genpareto.fit(excess, floc=0)
    return float(base + stats.genpareto.ppf(1 - false_alarm_rate / share, shape, scale=scale))


class HealthIndicator(BaseEstimator):
    """Distance from the bearing's own healthy state, with a calibrated alarm threshold.

    ``fit`` takes healthy recordings only: the features and their ``baseline_`` columns (the
    wear model's input), and optionally ``groups`` (one label per bearing) so the threshold is
    calibrated on bearings the covariance did not see. ``features`` restricts the indicator to
    some of the features (default: every feature with a baseline). ``one_sided``: positive
    features (levels) count only when above their baseline. ``clear_rate``: an alarm episode
    ends only below the level healthy recordings exceed this often (``clear_level_``, at most
    the threshold): back among the healthy, not just under the alarm line.
    """

    def __init__(
        self,
        features: list[str] | None = None,
        false_alarm_rate: float = 0.002,
        one_sided: bool = True,
        clear_rate: float = 0.02,
    ):
        self.features = features
        self.false_alarm_rate = false_alarm_rate
        self.one_sided = one_sided
        self.clear_rate = clear_rate

    def _raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        # An array's columns are ``columns_``, in order (as served).
        d = self.relative_.transform(X[self.columns_] if isinstance(X, pd.DataFrame) else X)
        d = np.where(np.isfinite(d), d, 0.0)  # no baseline or no value: no evidence of change
        if self.one_sided:
            # Wear adds vibration: a level below the bearing's baseline (run-in, a lighter
            # load) is no evidence of damage.
            d[:, self.relative_.positive_] = np.maximum(d[:, self.relative_.positive_], 0.0)
        return d

    def _deviations(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self._raw(X) - self.center_) / self.scale_

    def _fit_covariance(self, z: np.ndarray) -> np.ndarray:
        return LedoitWolf(assume_centered=True).fit(z).precision_

    def _distance(self, z: np.ndarray, precision: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0) / z.shape[1])

    def fit(self, X: pd.DataFrame, y=None, groups=None) -> HealthIndicator:
        names = self.features or [
            c for c in X.columns if not c.startswith(BASELINE_PREFIX) and BASELINE_PREFIX + c in X
        ]
        missing = [c for c in names if c not in X or BASELINE_PREFIX + c not in X]
        if missing:
            raise ValueError(f"health indicator: no column or baseline for {missing[:5]}")
        self.features_ = list(names)
        self.columns_ = self.features_ + [BASELINE_PREFIX + c for c in self.features_]
        self.relative_ = BaselineRelative(mode="relative").fit(X[self.columns_])
        raw = self._raw(X)
        self.center_ = np.median(raw, axis=0)
        spread = np.std(raw, axis=0)
        self.scale_ = np.where(spread > 1e-12, spread, 1.0)
        z = (raw - self.center_) / self.scale_
        self.precision_ = self._fit_covariance(z)
        held_out = self._held_out_scores(z, groups)
        self.threshold_ = calibrate_threshold(held_out, self.false_alarm_rate)
        self.clear_level_ = min(self.threshold_, calibrate_threshold(held_out, self.clear_rate))
        self.n_features_in_ = X.shape[1]
        return self

    def _held_out_scores(self, z: np.ndarray, groups) -> np.ndarray:
        if groups is None or len(np.unique(groups)) < 2:
            return self._distance(z, self.precision_)
        groups = np.asarray(groups)
        scores = np.empty(len(z))
        folds = GroupKFold(n_splits=min(5, len(np.unique(groups))))
        for fit_rows, score_rows in folds.split(z, groups=groups):
            scores[score_rows] = self._distance(z[score_rows], self._fit_covariance(z[fit_rows]))
        return scores

    def score_samples(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The health indicator of each row (about 1 when healthy; larger is further away).
        ``X``: a frame with the ``columns_``, or an array of them in that order."""
        return self._distance(self._deviations(X), self.precision_)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Whether each row is above the alarm threshold."""
        return self.score_samples(X) > self.threshold_
