"""The training report (held-out figures of :mod:`wearcast.evaluate` as Markdown with plots),
and the plot of a scored run (`wearcast predict --plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no process-wide backend chosen at import
from matplotlib.patches import Patch

from wearcast.config import Settings
from wearcast.evaluate import Evaluation
from wearcast.predict import answer_state
from wearcast.prognostics_eval import PrognosticsEvaluation

__all__ = ["plot_scored_run", "write_report"]

_EPISODE_COLOURS = {"watch": "gold", "alarm": "tab:red"}


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
            ax.axvline(t, color="tab:red", lw=1, label="persistent alarm raised")
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


def _plot_indicator(ax, answers: list[dict], baseline_recordings: int) -> None:
    """A bearing's health indicator (or wear) against its threshold, its episodes shaded."""
    times = pd.to_datetime([r["timestamp"] for r in answers])
    if "health" in answers[-1]:
        # Log scale: a failing bearing's indicator runs from about 1 to tens. A bearing at
        # or below its baseline everywhere scores 0, drawn at the axis' floor.
        health = np.maximum([r["health"] for r in answers], 1e-2)
        ax.plot(times, health, color="black", lw=0.8, label="health indicator")
        ax.axhline(
            answers[-1]["health_threshold"],
            color="tab:orange",
            ls="--",
            lw=0.8,
            label="alarm threshold",
        )
        ax.set_yscale("log")
        ax.set_ylabel("health")
    else:  # a version trained without the health indicator alarms on its wear
        ax.plot(times, [r["wear"] for r in answers], color="black", lw=0.8, label="wear")
        ax.set_ylabel("wear")
    made = [r["baseline_recordings"] for r in answers]
    warming = [t for t, n in zip(times, made, strict=True) if n < baseline_recordings]
    if warming:  # never judged above the threshold: the bearing's baseline is not made
        ax.axvspan(times[0], warming[-1], color="grey", alpha=0.15, lw=0)
    for e in answers[-1].get("episodes", []):  # every episode, on the latest answer
        start, end = pd.Timestamp(e["start"]), pd.Timestamp(e["end"] or times[-1])
        colour = _EPISODE_COLOURS.get(e["level"], "gold")
        if end > start:
            ax.axvspan(start, end, color=colour, alpha=0.25, lw=0)
        else:  # begun at the latest recording: a span of no width would not show
            ax.axvline(start, color=colour, lw=2, alpha=0.6)


def _plot_life(life, answers: list[dict], top: float) -> None:
    """A bearing's remaining life with its interval, on the scale ``top`` shared by all."""
    times = pd.to_datetime([r["timestamp"] for r in answers])
    left = [np.nan if r["rul_h"] is None else r["rul_h"] for r in answers]
    life.plot(times, left, color="tab:blue", lw=0.8, label="remaining life")
    if answers[-1].get("rul_low_h") is not None:
        life.fill_between(
            times,
            [r["rul_low_h"] for r in answers],
            [r["rul_high_h"] for r in answers],
            color="tab:blue",
            alpha=0.08,
            lw=0,
            label="its interval",
        )
    life.set_ylabel("remaining life h", color="tab:blue")
    life.set_ylim(0, 1.05 * top)


def plot_scored_run(rows: list[dict], path: Path, baseline_recordings: int) -> None:
    """One run's answers (`wearcast predict`'s, in time order per bearing): per bearing, the
    health indicator against its threshold with the alarm episodes shaded, and the remaining
    life with its interval, on one scale for every bearing."""
    bearings = sorted({r["bearing"] for r in rows})
    fig = Figure(figsize=(10, 2.6 * len(bearings)))
    axes = fig.subplots(len(bearings), 1, sharex=True, squeeze=False)[:, 0]
    # A version without the health indicator may have no remaining life to give (None).
    known = [r.get("rul_high_h") or r["rul_h"] for r in rows if r["rul_h"] is not None]
    top = max(known, default=1.0)
    shading = [
        Patch(color=_EPISODE_COLOURS["watch"], alpha=0.25, label="watch episode"),
        Patch(color=_EPISODE_COLOURS["alarm"], alpha=0.25, label="alarm episode"),
        Patch(color="grey", alpha=0.15, label="baseline being made"),
    ]
    for ax, bearing in zip(axes, bearings, strict=True):
        answers = [r for r in rows if r["bearing"] == bearing]
        _plot_indicator(ax, answers, baseline_recordings)
        life = ax.twinx()
        _plot_life(life, answers, top)
        if ax is axes[0]:
            handles = [h for a in (ax, life) for h in a.get_legend_handles_labels()[0]]
            ax.legend(handles=handles + shading, fontsize=7, loc="upper left", ncol=2)
        last = answers[-1]
        left_now = "-" if last["rul_h"] is None else f"{last['rul_h']:.1f}"
        state = answer_state(last)
        ax.set_title(
            f"bearing {bearing}: {state}, {left_now} h left at {last['timestamp']}", fontsize=9
        )
    fig.suptitle(f"{rows[0]['run']}: health indicator, alarm episodes, remaining life")
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
    early_warning: PrognosticsEvaluation | str | None = None,
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
        f"of the last {settings.alarm_n} recordings. A failure is caught by an alarm still open "
        "at its last recording; every other alarm is false.",
        "",
        "## Wear MAE beside trivial predictors (compare within a row only)",
        "",
        "| labels | model | always 0 | age only |",
        "|---|---:|---:|---:|",
    ]
    for labels, by in evaluation.wear_mae_by_labels.items():
        lines.append(f"| {labels} | {by['model']:.4f} | {by['always0']:.4f} | {by['age']:.4f} |")
    lines += [
        "",
        "## Bearings",
        "",
        "| run | bearing | failed | wear MAE | persistent alarm | lead time h "
        "| alarm in first half | false alarms | RUL MAE h |",
        "|---|---:|---|---:|---|---:|---|---:|---:|",
    ]
    for o in evaluation.bearings:
        lines.append(
            f"| {o.run} | {o.bearing} | {_yes(o.failed)} | {o.wear_mae:.3f} | {o.alarm_at or '-'} "
            f"| {_num(o.lead_time_h)} | {_yes(o.alarm_in_first_half)} | {o.false_alarms} "
            f"| {_num(o.rul_mae_h)} |"
        )
    if early_warning is not None:
        lines += ["", "## Early warning beside the RMS rule (leave one run out)", ""]
        if isinstance(early_warning, str):
            lines.append(f"Not measured: {early_warning}.")
        else:
            lines += [
                "The health indicator, the RMS rule (the bearing's RMS over its own first "
                "recordings) and a ridge wear rule, each fitted on the other runs; judged as "
                "above.",
                "",
                early_warning.detector_summary().to_markdown(index=False, floatfmt=".2f"),
                "",
                "Remaining life at cuts of each failed bearing's life (PHM 2012 score):",
                "",
                early_warning.rul_summary().to_markdown(index=False, floatfmt=".3f"),
            ]
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
