"""Evaluation the way a reliability engineer judges a wear model.

Held-out evaluation: every run (or every bearing, for tables of failing bearings only) in turn
is left out, the model is fitted on the rest and predicts it. On those predictions:

* wear MAE and RMSE against the labels;
* the persistent-alarm rule (:mod:`wearcast.alarms`) on predicted wear: for each failing
  bearing the lead time (hours from the first persistent alarm to the failure), and false
  alarms per 1,000 bearing-hours (alarms on bearings that did not fail, and alarms on failing
  bearings before their degradation onset; exposure is the hours each bearing was healthy);
* remaining life by trend (predicted wear extrapolated to 1) after the first alarm, against
  the true remaining life.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no process-wide backend chosen at import

from wearcast.alarms import alarm_states, first_alarm, rul_by_trend
from wearcast.config import Settings

__all__ = [
    "BearingOutcome",
    "Evaluation",
    "held_out_predictions",
    "evaluate_predictions",
    "alarm_outcomes",
    "write_report",
]


@dataclass(frozen=True)
class BearingOutcome:
    run: str
    bearing: int
    failed: bool
    hours: float
    alarm_at: str | None
    lead_time_h: float | None  # failure minus first persistent alarm (failing bearings)
    alarm_before_onset: bool  # a failing bearing alarmed while still healthy
    false_alarms: int  # alarm events while healthy
    healthy_hours: float
    wear_mae: float | None = None
    rul_mae_h: float | None = None


@dataclass
class Evaluation:
    wear_mae: float
    wear_rmse: float
    wear_mae_failed: float
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
        return out

    def as_dict(self) -> dict:
        return {
            **self.metrics(),
            "failures": self.failures,
            "bearings": [asdict(b) for b in self.bearings],
        }


def held_out_predictions(
    frame: pd.DataFrame,
    X: pd.DataFrame,
    y: np.ndarray,
    make_model: Callable[[], object],
    *,
    holdout: str = "run",
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Predict each held-out unit (``run`` or ``bearing``) with a model fitted on the others."""
    units = frame["run"] if holdout == "run" else frame["run"] + "/" + frame["bearing"].astype(str)
    names = sorted(units.unique())
    if len(names) < 2:
        raise ValueError(f"held-out evaluation needs at least two {holdout}s, found {len(names)}")
    pred = np.full(len(frame), np.nan)
    for name in names:
        test = (units == name).to_numpy()
        if progress:
            progress(name)
        model = make_model().fit(X[~test], y[~test])
        pred[test] = model.predict(X[test])
    out = frame[["run", "bearing", "timestamp", "elapsed_h", "failed", "onset", "rul_h"]].copy()
    out["wear_true"] = y
    out["wear_pred"] = pred
    return out


def alarm_outcomes(
    series: pd.DataFrame,
    end: pd.Timestamp | None,
    failed: bool,
    onset,
    settings: Settings,
    *,
    value: str = "wear_pred",
    threshold: float | None = None,
) -> BearingOutcome:
    """Alarm lead time and false alarms of one bearing's time-ordered series."""
    series = series.sort_values("timestamp")
    times = series["timestamp"].reset_index(drop=True)
    above = (
        series[value] > (settings.alarm_threshold if threshold is None else threshold)
    ).to_numpy()
    states = alarm_states(above, settings.alarm_k, settings.alarm_n)
    raised = np.flatnonzero(states & ~np.r_[False, states[:-1]])  # alarm events (rising edges)
    first = first_alarm(above, settings.alarm_k, settings.alarm_n)
    hours = (times.iloc[-1] - times.iloc[0]).total_seconds() / 3600
    healthy_until = onset if failed and pd.notna(onset) else (None if failed else times.iloc[-1])
    if healthy_until is None:
        healthy_until = end if end is not None else times.iloc[-1]
    healthy_hours = max(
        (min(healthy_until, times.iloc[-1]) - times.iloc[0]).total_seconds() / 3600, 0.0
    )
    false = int(sum(times.iloc[i] < healthy_until for i in raised)) if failed else len(raised)
    lead = None
    if failed and first is not None and end is not None:
        lead = (end - times.iloc[first]).total_seconds() / 3600
    return BearingOutcome(
        run=str(series["run"].iloc[0]),
        bearing=int(series["bearing"].iloc[0]),
        failed=failed,
        hours=hours,
        alarm_at=None if first is None else str(times.iloc[first]),
        lead_time_h=lead,
        alarm_before_onset=bool(failed and first is not None and times.iloc[first] < healthy_until),
        false_alarms=false,
        healthy_hours=healthy_hours,
    )


def evaluate_predictions(
    preds: pd.DataFrame, settings: Settings, ends: dict[str, pd.Timestamp | None]
) -> Evaluation:
    err = preds["wear_pred"] - preds["wear_true"]
    failed_rows = preds["failed"].to_numpy(dtype=bool)
    outcomes, rul_errors = [], []
    for (run, _bearing), rows in preds.groupby(["run", "bearing"], sort=True):
        rows = rows.sort_values("timestamp")
        failed = bool(rows["failed"].iloc[0])
        outcome = alarm_outcomes(rows, ends.get(run), failed, rows["onset"].iloc[0], settings)
        errors = []
        if failed and outcome.alarm_at is not None:
            start = int(
                np.searchsorted(
                    rows["timestamp"].to_numpy(), np.datetime64(pd.Timestamp(outcome.alarm_at))
                )
            )
            hours, wear, true_rul = (
                rows[c].to_numpy(dtype=float) for c in ("elapsed_h", "wear_pred", "rul_h")
            )
            m = settings.rul_trend_recordings
            for i in range(max(start, m - 1), len(rows)):
                estimate, _ = rul_by_trend(hours[i - m + 1 : i + 1], wear[i - m + 1 : i + 1])
                if estimate is not None:
                    errors.append(abs(estimate - true_rul[i]))
        rul_errors += errors
        outcomes.append(
            BearingOutcome(
                **{
                    **asdict(outcome),
                    "wear_mae": float((rows["wear_pred"] - rows["wear_true"]).abs().mean()),
                    "rul_mae_h": float(np.mean(errors)) if errors else None,
                }
            )
        )
    failures = [o for o in outcomes if o.failed]
    healthy_hours = sum(o.healthy_hours for o in outcomes)
    leads = [
        o.lead_time_h for o in failures if o.lead_time_h is not None and not o.alarm_before_onset
    ]
    return Evaluation(
        wear_mae=float(err.abs().mean()),
        wear_rmse=float(np.sqrt((err**2).mean())),
        wear_mae_failed=float(err[failed_rows].abs().mean()) if failed_rows.any() else float("nan"),
        false_alarms_per_1000h=1000
        * sum(o.false_alarms for o in outcomes)
        / max(healthy_hours, 1e-9),
        missed_failures=sum(o.lead_time_h is None for o in failures),
        failures=len(failures),
        median_lead_time_h=float(np.median(leads)) if leads else None,
        rul_mae_h=float(np.mean(rul_errors)) if rul_errors else None,
        bearings=outcomes,
    )


def _plot_run(
    preds: pd.DataFrame, run: str, evaluation: Evaluation, settings: Settings, path: Path
) -> None:
    rows = preds[preds["run"] == run]
    bearings = sorted(rows["bearing"].unique())
    fig = Figure(figsize=(10, 2.2 * len(bearings)))
    axes = fig.subplots(len(bearings), 1, sharex=True, squeeze=False)
    outcome = {(o.run, o.bearing): o for o in evaluation.bearings}
    for ax, bearing in zip(axes[:, 0], bearings, strict=True):
        b = rows[rows["bearing"] == bearing].sort_values("timestamp")
        ax.plot(b["elapsed_h"], b["wear_true"], color="black", lw=1, label="label")
        ax.plot(b["elapsed_h"], b["wear_pred"], color="tab:blue", lw=0.8, label="predicted")
        ax.axhline(
            settings.alarm_threshold, color="tab:orange", ls=":", lw=0.8, label="alarm threshold"
        )
        o = outcome[(run, bearing)]
        if o.alarm_at is not None:
            t = (pd.Timestamp(o.alarm_at) - b["timestamp"].iloc[0]).total_seconds() / 3600 + b[
                "elapsed_h"
            ].iloc[0]
            ax.axvline(t, color="tab:red", lw=1, label="first persistent alarm")
        title = f"bearing {bearing}" + (" (failed)" if o.failed else " (did not fail)")
        if o.lead_time_h is not None:
            title += f": alarm {o.lead_time_h:.1f} h before failure"
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("wear")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("hours since start of run")
    fig.suptitle(f"run {run}, held out")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_importances(importances: pd.Series, path: Path) -> None:
    top = importances.sort_values().tail(20)
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    ax.barh(top.index, top.values)
    ax.set_xlabel("importance")
    ax.set_title("feature importances (top 20)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_report(
    out_dir: Path,
    *,
    title: str,
    evaluation: Evaluation,
    preds: pd.DataFrame,
    settings: Settings,
    leaderboard: pd.DataFrame | None = None,
    importances: pd.Series | None = None,
    context: dict | None = None,
) -> Path:
    """A Markdown report with PNG plots; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Held-out metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in evaluation.metrics().items()]
    lines += [
        "",
        f"Alarm rule: predicted wear above {settings.alarm_threshold} for {settings.alarm_k} "
        f"of the last {settings.alarm_n} recordings.",
        "",
        "## Bearings",
        "",
        "| run | bearing | failed | wear MAE | first alarm | lead time h | alarm before onset "
        "| false alarms | RUL MAE h |",
        "|---|---:|---|---:|---|---:|---|---:|---:|",
    ]
    for o in evaluation.bearings:
        lines.append(
            f"| {o.run} | {o.bearing} | {_yes(o.failed)} | {o.wear_mae:.3f} | {o.alarm_at or '-'} "
            f"| {_num(o.lead_time_h)} | {_yes(o.alarm_before_onset)} | {o.false_alarms} "
            f"| {_num(o.rul_mae_h)} |"
        )
    lines += ["", "## Predicted against true wear", ""]
    for run in sorted(preds["run"].unique()):
        name = f"wear_{run}.png".replace("/", "_")
        _plot_run(preds, run, evaluation, settings, out_dir / name)
        lines.append(f"![{run}]({name})")
    if importances is not None and len(importances):
        _plot_importances(importances, out_dir / "importances.png")
        lines += ["", "## Feature importances", "", "![importances](importances.png)"]
    if leaderboard is not None:
        lines += [
            "",
            "## Search leaderboard",
            "",
            "| rank | family | CV wear MAE | configuration |",
            "|---:|---|---:|---|",
        ]
        for i, row in leaderboard.head(15).iterrows():
            lines.append(
                f"| {i + 1} | {row['family']} | {row['cv_wear_mae']:.4f} | `{row['config']}` |"
            )
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
