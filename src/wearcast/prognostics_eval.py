"""Leave-one-run-out evaluation of early warning and remaining life, onset-free.

Each run in turn is held out; the health indicator, alarm rule and remaining-life estimator
(:func:`wearcast.prognostics.fit_prognostics`), the raw RMS rule's threshold and the wear
model are fitted on the other runs (beside them, a detector that never alarms: always 0); the
held-out run is then scored recording by recording, each recording from only the ones before
it (baselines grow as the API's do).

Alarms are judged without a degradation onset, by the one definition the wear evaluation
uses too (:func:`wearcast.evaluate.judge_alarms`): lead time of the persistent alarm, false
alarms per 1000 bearing-hours of exposure, missed failures, alarms in the first half of life.

Remaining life is judged at cuts of each failed bearing's life (30, 50, 70, 90 %) with the IEEE
PHM 2012 score, the percent error and the interval coverage, beside two trivial estimators
fitted on the same folds: the training fleet's mean life minus the age, and the wear model's
trend extrapolated to wear 1 (:func:`wearcast.alarms.rul_by_trend`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from wearcast.alarms import rul_by_trend
from wearcast.baseline import BASELINE_PREFIX, add_baselines, growing_baselines, model_inputs
from wearcast.config import Settings
from wearcast.dataset import model_columns
from wearcast.evaluate import judge_alarms, k_of_n_episodes
from wearcast.health import calibrate_threshold
from wearcast.model import build_pipeline
from wearcast.prognostics import fit_prognostics, healthy_rows
from wearcast.rul import phm2012_point, phm2012_score

__all__ = ["CUTS", "DETECTORS", "PrognosticsEvaluation", "evaluate_prognostics"]

CUTS = (0.3, 0.5, 0.7, 0.9)
DETECTORS = ("wearcast health", "RMS rule", "ridge wear rule", "always 0 (never alarms)")
ESTIMATORS = (
    "wearcast (median)",
    "wearcast (PHM-optimal point)",
    "fleet mean life - age",
    "wear trend",
    "always 0",
)


@dataclass
class PrognosticsEvaluation:
    alarms: pd.DataFrame  # one row per (detector, bearing)
    rul: pd.DataFrame  # one row per (estimator, failed bearing, cut)
    series: pd.DataFrame  # health, threshold and state of every held-out recording

    def detector_summary(self) -> pd.DataFrame:
        rows = []
        for name, d in self.alarms.groupby("detector", sort=False):
            failed = d[d["failed"]]
            leads = failed["lead_h"].dropna()
            rows.append(
                {
                    "detector": name,
                    "failures": len(failed),
                    "missed": int(failed["lead_h"].isna().sum()),
                    "median_lead_h": float(leads.median()) if len(leads) else float("nan"),
                    "min_lead_h": float(leads.min()) if len(leads) else float("nan"),
                    "alarmed_in_first_half": int(failed["alarm_in_first_half"].sum()),
                    "false_alarms": int(d["false_alarms"].sum()),
                    "false_alarms_per_1000h": 1000
                    * d["false_alarms"].sum()
                    / max(d["exposure_h"].sum(), 1e-9),
                }
            )
        return pd.DataFrame(rows)

    def summaries(self) -> dict[str, list[dict]]:
        """Both summaries as JSON-safe records (a missing figure is None, not NaN)."""
        return {
            name: json.loads(frame.to_json(orient="records"))
            for name, frame in (
                ("early_warning", self.detector_summary()),
                ("remaining_life", self.rul_summary()),
            )
        }

    def metrics(self) -> dict[str, float]:
        """Registry metrics: the held-out figures of the alarm the API raises (the health
        indicator's, ``health_*``) and of the RMS rule beside it (``rms_rule_*``), and the
        remaining life's PHM 2012 score, mean absolute error and interval coverage at the cuts
        (``rul_*``)."""
        detectors = self.detector_summary().set_index("detector")
        out = {}
        for prefix, name in (("health", DETECTORS[0]), ("rms_rule", DETECTORS[1])):
            row = detectors.loc[name]
            out[f"{prefix}_missed_failures"] = float(row["missed"])
            out[f"{prefix}_false_alarms_per_1000h"] = float(row["false_alarms_per_1000h"])
            if np.isfinite(row["median_lead_h"]):
                out[f"{prefix}_median_lead_time_h"] = float(row["median_lead_h"])
        if len(self.rul):
            ours = self.rul_summary().set_index("estimator").loc[ESTIMATORS[0]]
            out["rul_phm2012_score"] = float(ours["phm2012_score"])
            out["rul_abs_error_h"] = float(ours["abs_error_h"])
            if np.isfinite(ours["coverage"]):
                out["rul_interval_coverage"] = float(ours["coverage"])
        return out

    def rul_summary(self) -> pd.DataFrame:
        rows = []
        for name, r in self.rul.groupby("estimator", sort=False):
            row = {"estimator": name, "phm2012_score": float(r["score"].mean())}
            for cut, c in r.groupby("cut"):
                row[f"error_pct_{cut:.0%}"] = float(c["error_pct"].mean())
            row["abs_error_h"] = float((r["estimate_h"] - r["true_h"]).abs().mean())
            covered = r["covered"].dropna()
            row["coverage"] = float(covered.mean()) if len(covered) else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def _judge(name, run, bearing, hours, episodes, failed, life_h) -> dict:
    judged = judge_alarms(hours, episodes, failed, life_h)
    return {
        "detector": name,
        "run": run,
        "bearing": bearing,
        "failed": failed,
        "life_h": life_h,
        **asdict(judged),
    }


def evaluate_prognostics(
    frame: pd.DataFrame,
    settings: Settings,
    *,
    wear_config: dict | None = None,
    label_strategy: str | None = None,
    cuts: tuple[float, ...] = CUTS,
    progress: Callable[[str], None] | None = None,
) -> PrognosticsEvaluation:
    """Leave one run out over a labelled table (``dataset.load_training_table``)."""
    runs = sorted(frame["run"].unique())
    if len(runs) < 2:
        raise ValueError(f"leave one run out needs at least two runs, found {len(runs)}")
    if "rms" not in frame:
        raise ValueError("the table has no rms column for the RMS rule, the published detector")
    strategy = label_strategy or settings.label_strategy
    config = wear_config or {"family": "ridge", "params": {"alpha": 1.0}, "features": "both"}
    frame = frame.drop(columns=[c for c in frame if c.startswith(BASELINE_PREFIX)])
    frame = frame.sort_values(["run", "bearing", "timestamp"], kind="stable").reset_index(drop=True)
    columns = model_columns(frame)
    k = settings.baseline_recordings
    fitted = add_baselines(frame, columns, k)  # as training sees its runs
    alarms, lives, series = [], [], []
    for held in runs:
        if progress:
            progress(held)
        train = fitted[fitted["run"] != held]
        prognostics = fit_prognostics(train, columns, settings)
        healthy = train[healthy_rows(train, settings)]
        rms_threshold = calibrate_threshold(
            (healthy["rms"] / healthy["baseline_rms"]).to_numpy(), settings.health_false_alarm_rate
        )
        labelled = train[train[f"wear_{strategy}"].notna()]
        wear_model = build_pipeline(config, settings.random_state).fit(
            model_inputs(labelled, columns), labelled[f"wear_{strategy}"]
        )
        failed_lives = [
            float(rows["elapsed_h"].iloc[-1] + rows["rul_h"].iloc[-1])
            for _, rows in train.groupby(["run", "bearing"])
            if rows["failed"].iloc[0]
        ]
        fleet_mean = float(np.mean(failed_lives)) if failed_lives else float("nan")
        test = growing_baselines(frame[frame["run"] == held].copy(), columns, k)
        test["health"] = prognostics.health.score_samples(test)
        test["wear_pred"] = wear_model.predict(model_inputs(test, columns))
        for bearing, rows in test.groupby("bearing", sort=True):
            hours = rows["elapsed_h"].to_numpy(dtype=float)
            failed = bool(rows["failed"].iloc[0])
            life = float(hours[-1] + rows["rul_h"].iloc[-1]) if failed else None
            health = rows["health"].to_numpy()
            steps, episodes = prognostics.follow(hours, health, warmup=k - 1)
            alarms.append(_judge(DETECTORS[0], held, bearing, hours, episodes, failed, life))
            ratio = (rows["rms"] / rows["baseline_rms"]).to_numpy()
            rms_eps = k_of_n_episodes(ratio, rms_threshold, settings.alarm_k, settings.alarm_n)
            alarms.append(_judge(DETECTORS[1], held, bearing, hours, rms_eps, failed, life))
            wear = rows["wear_pred"].to_numpy()
            wear_eps = k_of_n_episodes(
                wear, settings.alarm_threshold, settings.alarm_k, settings.alarm_n
            )
            alarms.append(_judge(DETECTORS[2], held, bearing, hours, wear_eps, failed, life))
            alarms.append(_judge(DETECTORS[3], held, bearing, hours, [], failed, life))
            series.append(
                pd.DataFrame(
                    {
                        "run": held,
                        "bearing": bearing,
                        "hours": hours,
                        "health": health,
                        "threshold": prognostics.threshold,
                        "clear_level": prognostics.clear_level,
                        "state": [s.state for s in steps],
                        "rms_ratio": ratio,
                        "rms_threshold": rms_threshold,
                        "life_h": life,
                    }
                )
            )
            if not failed:
                continue
            m = settings.rul_trend_recordings
            coverage = settings.rul_interval_coverage
            for cut in cuts:
                i = max(int(np.ceil(cut * len(hours))) - 1, 0)
                true = life - hours[i]
                est = steps[i].rul
                trend, _ = rul_by_trend(
                    hours[max(0, i - m + 1) : i + 1], wear[max(0, i - m + 1) : i + 1]
                )
                fleet = max(fleet_mean - hours[i], 0.0)
                for name, value, low, high in (
                    (ESTIMATORS[0], est.rul_h, est.low_h, est.high_h),
                    (ESTIMATORS[1], phm2012_point(est, coverage), est.low_h, est.high_h),
                    (ESTIMATORS[2], fleet, None, None),
                    (ESTIMATORS[3], fleet if trend is None else trend, None, None),
                    (ESTIMATORS[4], 0.0, None, None),
                ):
                    lives.append(
                        {
                            "estimator": name,
                            "run": held,
                            "bearing": bearing,
                            "cut": cut,
                            "age_h": hours[i],
                            "true_h": true,
                            "estimate_h": value,
                            "low_h": low,
                            "high_h": high,
                            "score": phm2012_score(true, value),
                            "error_pct": 100 * (true - value) / true,
                            "covered": None if low is None else bool(low <= true <= high),
                            "state": steps[i].state,
                        }
                    )
    return PrognosticsEvaluation(pd.DataFrame(alarms), pd.DataFrame(lives), pd.concat(series))
