"""Evaluation the way a reliability engineer judges a wear model: the one definition of every
figure the reports, the docs and the promotion gate use.

Held-out evaluation: every run (or every bearing, for tables of failing bearings only) in turn
is left out, the model is fitted on the rest and predicts it; beyond ``holdout_folds`` runs,
they are left out a fold of several runs at a time. On those predictions, first the
figures that do not depend on any labeller's degradation onset (:func:`judge_alarms`):

* a failure is caught by its **persistent alarm**, the alarm episode still open at the last
  recording before the failure; its **lead time** is the failure minus the time that episode
  was raised. A failing bearing without one is a **missed failure**;
* every other alarm episode (closed again, or on a bearing that did not fail) is a **false
  alarm**, counted per 1,000 bearing-hours of exposure: the hours each bearing was watched
  before its persistent alarm was raised. An alarm in the first half of a failing bearing's
  life is flagged apart (far from the failure, whether it closed or not);
* **remaining life** by trend (predicted wear extrapolated to 1) from the persistent alarm on,
  against the true remaining life.

Then wear MAE against the linear labels and against the piecewise labels, each beside two
trivial predictors on the same rows: always 0, and age only (the fraction of the run elapsed).
A figure is compared only with figures on the same labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from wearcast.alarms import (
    ALARM,
    OK,
    Episode,
    alarm_states,
    episodes_of,
    open_alarm,
    rul_by_trend,
)
from wearcast.config import Settings

__all__ = [
    "AlarmJudgement",
    "BearingOutcome",
    "check_holdout",
    "holdout_folds",
    "holdout_units",
    "Evaluation",
    "LABELS",
    "TooFewUnits",
    "held_out_predictions",
    "evaluate_predictions",
    "judge_alarms",
    "k_of_n_episodes",
    "wear_baselines",
]

LABELS = ("linear", "piecewise")


@dataclass(frozen=True)
class AlarmJudgement:
    """Onset-free outcome of one bearing's alarm episodes."""

    lead_h: float | None  # failure minus the persistent alarm (None: missed, or did not fail)
    raised: int | None  # index of the recording where the persistent alarm was raised
    false_alarms: int  # alarm episodes other than the persistent one
    exposure_h: float  # hours watched before the persistent alarm (all, if none)
    alarm_in_first_half: bool  # a failing bearing alarmed in the first half of its life
    first_alarm_h: float | None  # hours at which the first alarm of any kind was raised


def judge_alarms(
    hours: np.ndarray, episodes: list[Episode], failed: bool, life_h: float | None
) -> AlarmJudgement:
    """Judge a bearing's alarm episodes (indices into ``hours``, hours since the run started)
    against its failure at ``life_h`` hours (None: did not fail)."""
    alarms = [e for e in episodes if e.level == ALARM]
    persistent = open_alarm(episodes) if failed else None
    raised = None if persistent is None else persistent.raised
    watched_until = hours[raised] if raised is not None else hours[-1]
    return AlarmJudgement(
        lead_h=None if raised is None else float(life_h - hours[raised]),
        raised=raised,
        false_alarms=sum(e is not persistent for e in alarms),
        exposure_h=float(watched_until - hours[0]),
        alarm_in_first_half=bool(failed and any(hours[e.raised] < life_h / 2 for e in alarms)),
        first_alarm_h=float(hours[alarms[0].raised]) if alarms else None,
    )


def k_of_n_episodes(values: np.ndarray, threshold: float, k: int, n: int) -> list[Episode]:
    """Alarm episodes of the plain k-of-n rule (no hysteresis) on a time-ordered series."""
    values = np.asarray(values, dtype=float)
    flags = alarm_states(values > threshold, k, n)
    return episodes_of([ALARM if f else OK for f in flags], values)


def wear_baselines(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Trivial wear predictors for the rows of a labelled table.

    Age only is the fraction of the run elapsed: it knows each run's length, which no live
    model does, so it is a bar to clear, not a fair rival. Runs without a known end get 0.
    """
    return {
        "always0": np.zeros(len(frame)),
        "age": frame["life_fraction"].fillna(0.0).to_numpy(dtype=float),
    }


@dataclass(frozen=True)
class BearingOutcome:
    run: str
    bearing: int
    failed: bool
    hours: float
    alarm_at: str | None  # when the persistent alarm was raised (a caught failure)
    lead_time_h: float | None
    alarm_in_first_half: bool
    false_alarms: int
    exposure_h: float
    wear_mae: float | None = None
    rul_mae_h: float | None = None


@dataclass
class Evaluation:
    wear_mae: float  # against the labels the model was trained on
    wear_rmse: float
    wear_mae_failed: float
    wear_mae_by_labels: dict[str, dict[str, float]]  # labels -> predictor (model, baselines)
    false_alarms_per_1000h: float
    missed_failures: int
    failures: int
    median_lead_time_h: float | None
    rul_mae_h: float | None
    bearings: list[BearingOutcome]

    def metrics(self) -> dict[str, float]:
        out = {
            "wear_mae": self.wear_mae,
            "wear_rmse": self.wear_rmse,
            "wear_mae_failed": self.wear_mae_failed,
            "false_alarms_per_1000h": self.false_alarms_per_1000h,
            "missed_failures": float(self.missed_failures),
        }
        if self.median_lead_time_h is not None:
            out["median_lead_time_h"] = self.median_lead_time_h
        if self.rul_mae_h is not None:
            out["rul_mae_h"] = self.rul_mae_h
        for labels, by in self.wear_mae_by_labels.items():
            out |= {f"wear_mae_{labels}_{name}": value for name, value in by.items()}
        return out

    def as_dict(self) -> dict:
        return {
            **self.metrics(),
            "failures": self.failures,
            "bearings": [asdict(b) for b in self.bearings],
        }


def holdout_units(frame: pd.DataFrame, holdout: str) -> pd.Series:
    """Each row's held-out unit: its run, or its run/bearing."""
    return frame["run"] if holdout == "run" else frame["run"] + "/" + frame["bearing"].astype(str)


def holdout_folds(frame: pd.DataFrame, holdout: str, max_folds: int | None) -> pd.Series:
    """Each row's held-out fold: its unit while there are at most ``max_folds`` (None: no
    limit); beyond, the units dealt into ``max_folds`` folds of about as many rows each."""
    units = holdout_units(frame, holdout)
    if max_folds is None or units.nunique() <= max_folds:
        return units
    folds = pd.Series("", index=frame.index, dtype=object)
    for i, (_, rows) in enumerate(GroupKFold(n_splits=max_folds).split(frame, groups=units)):
        members = sorted(units.iloc[rows].unique())
        folds.iloc[rows] = f"fold {i + 1} of {max_folds} ({', '.join(members)})"
    return folds


class TooFewUnits(ValueError):
    """A table that cannot be evaluated holding out its ``holdout`` units: ``reason``, and
    ``alternative``, the unit that would do (None: none) with ``advice`` on it."""

    def __init__(self, reason: str, alternative: str | None, advice: str):
        super().__init__(f"{reason}: {advice}")
        self.reason, self.alternative = reason, alternative


def check_holdout(frame: pd.DataFrame, holdout: str, *, searched: bool = False) -> None:
    """Refuse a table that cannot be evaluated holding out ``holdout`` units, saying what can
    (called before the search, which would otherwise run for nothing). ``searched``: a search
    runs inside each fold, and cross-validates on at least two bearings of the other units."""
    units = holdout_units(frame, holdout)
    bearings = holdout_units(frame, "bearing")
    found = units.nunique()
    # What the search of the fold that holds out the unit with the most bearings is left with.
    left = bearings.nunique() - int(bearings.groupby(units).nunique().max()) if found else 0
    if found >= 2 and (left >= 2 or not searched):
        return
    if found < 2:
        message = f"held-out evaluation needs at least two {holdout}s, found {found}"
    else:
        message = (
            f"held-out evaluation holds out one {holdout} and searches for a model on the "
            f"others, which then hold {left} bearing; the search cross-validates on at least "
            f"two (one {holdout} held out, two bearings left: {found} {holdout}s are not enough)"
        )
    if holdout == "run" and bearings.nunique() >= 3:
        advice = f"hold out bearings instead (--holdout bearing, {bearings.nunique()} bearings)"
        raise TooFewUnits(message, "bearing", advice)
    raise TooFewUnits(message, None, "add recordings of other bearings to the table")


def held_out_predictions(
    frame: pd.DataFrame,
    X: pd.DataFrame,
    y: np.ndarray,
    fit: Callable[[str, np.ndarray], object],
    *,
    holdout: str = "run",
    max_folds: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Predict each held-out fold (:func:`holdout_folds` of ``run`` or ``bearing``) with a
    model fitted on the others: ``fit(fold, train)`` returns a model fitted on the rows where
    ``train`` is True, so any choice it makes (a search) sees only them."""
    check_holdout(frame, holdout)
    folds = holdout_folds(frame, holdout, max_folds)
    names = sorted(folds.unique())
    pred = np.full(len(frame), np.nan)
    for name in names:
        test = (folds == name).to_numpy()
        if progress:
            progress(name)
        pred[test] = fit(name, ~test).predict(X[test])
    keep = ["run", "bearing", "timestamp", "elapsed_h", "life_fraction", "failed", "onset"]
    keep += ["rul_h"] + [f"wear_{labels}" for labels in LABELS]
    out = frame[keep].copy()
    out["wear_true"] = y
    out["wear_pred"] = pred
    return out


def evaluate_predictions(preds: pd.DataFrame, settings: Settings) -> Evaluation:
    """Every held-out figure of :func:`held_out_predictions`' output (see the module doc)."""
    err = preds["wear_pred"] - preds["wear_true"]
    failed_rows = preds["failed"].to_numpy(dtype=bool)
    outcomes, rul_errors = [], []
    m = settings.rul_trend_recordings
    for (run, bearing), rows in preds.groupby(["run", "bearing"], sort=True):
        rows = rows.sort_values("timestamp")
        hours, wear, true_rul = (
            rows[c].to_numpy(dtype=float) for c in ("elapsed_h", "wear_pred", "rul_h")
        )
        failed = bool(rows["failed"].iloc[0])
        life = float(hours[-1] + true_rul[-1]) if failed else None
        episodes = k_of_n_episodes(
            wear, settings.alarm_threshold, settings.alarm_k, settings.alarm_n
        )
        judged = judge_alarms(hours, episodes, failed, life)
        errors = []
        if judged.raised is not None:
            for i in range(max(judged.raised, m - 1), len(rows)):
                estimate, _ = rul_by_trend(hours[i - m + 1 : i + 1], wear[i - m + 1 : i + 1])
                if estimate is not None:
                    errors.append(abs(estimate - true_rul[i]))
        rul_errors += errors
        outcomes.append(
            BearingOutcome(
                run=str(run),
                bearing=int(bearing),
                failed=failed,
                hours=float(hours[-1] - hours[0]),
                alarm_at=None
                if judged.raised is None
                else str(rows["timestamp"].iloc[judged.raised]),
                lead_time_h=judged.lead_h,
                alarm_in_first_half=judged.alarm_in_first_half,
                false_alarms=judged.false_alarms,
                exposure_h=judged.exposure_h,
                wear_mae=float((rows["wear_pred"] - rows["wear_true"]).abs().mean()),
                rul_mae_h=float(np.mean(errors)) if errors else None,
            )
        )
    failures = [o for o in outcomes if o.failed]
    leads = [o.lead_time_h for o in failures if o.lead_time_h is not None]
    predictors = {"model": preds["wear_pred"].to_numpy(dtype=float), **wear_baselines(preds)}
    by_labels = {
        labels: {
            name: float(np.abs(p - preds[f"wear_{labels}"].to_numpy(dtype=float)).mean())
            for name, p in predictors.items()
        }
        for labels in LABELS
    }
    return Evaluation(
        wear_mae=float(err.abs().mean()),
        wear_rmse=float(np.sqrt((err**2).mean())),
        wear_mae_failed=float(err[failed_rows].abs().mean()) if failed_rows.any() else float("nan"),
        wear_mae_by_labels=by_labels,
        false_alarms_per_1000h=1000
        * sum(o.false_alarms for o in outcomes)
        / max(sum(o.exposure_h for o in outcomes), 1e-9),
        missed_failures=sum(o.lead_time_h is None for o in failures),
        failures=len(failures),
        median_lead_time_h=float(np.median(leads)) if leads else None,
        rul_mae_h=float(np.mean(rul_errors)) if rul_errors else None,
        bearings=outcomes,
    )
