"""Early warning and remaining life, leave one run out, beside the RMS rule and trivial baselines.

    python scripts/detector_experiments.py TABLE [--runs-meta RUNS.json] [--plots DIR]
        [--title TITLE] [--out RESULTS.json]
    python scripts/detector_experiments.py --ims-test2 CSV [--spectral CSV --columns A,B]
        [--plots DIR]

TABLE is a labelled feature table: a `wearcast featurize` folder, or a CSV/Parquet table made
elsewhere with `--runs-meta` (as `wearcast train` takes it). `--ims-test2 CSV` builds a table
from the IMS test 2 reference statistics (`reference/test2_time_features.csv`) with each
bearing as a run of its own, so leaving one run out leaves one bearing out; `--spectral CSV
--columns A,B` adds those columns of the per-file spectral statistics of the same run
(`reference/test2_spectral_features.csv`, named there `BearingK_ch1_A`).

Prints the detector table (lead time of the persistent alarm, false alarms per 1000
bearing-hours, missed failures, alarms in the first half of life) and the remaining-life table
(PHM 2012 score, percent error per cut, interval coverage), and writes plots of the health
indicator, its threshold and the alarm states of every held-out bearing.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from wearcast.config import Settings  # noqa: E402
from wearcast.dataset import load_training_table  # noqa: E402
from wearcast.prognostics_eval import evaluate_prognostics  # noqa: E402


def ims_test2_table(
    path: Path,
    out: Path,
    settings: Settings,
    spectral: Path | None = None,
    columns: tuple[str, ...] = (),
) -> Path:
    """The IMS test 2 reference statistics as an external feature table, one run per bearing
    (so leaving one run out leaves one bearing out), with ``columns`` of the ``spectral``
    statistics beside them. Recordings with a dead channel are dropped as ingestion
    quarantines them: the rig's last two, stopped (RMS about 0.002 g)."""
    t = pd.read_csv(path, parse_dates=["timestamp"])
    if spectral is not None:
        t = t.merge(pd.read_csv(spectral), on="file_index", validate="one_to_one")
    dead = (t.filter(regex=r"_ch1_std$") < settings.dead_channel_std_g).any(axis=1)
    t = t[~dead]
    frames = []
    for b in range(1, 5):
        p = f"Bearing{b}_ch1_"
        frames.append(
            pd.DataFrame(
                {
                    "run": f"test2_b{b}",
                    "bearing": 1,
                    "timestamp": t["timestamp"],
                    "rms": t[p + "rms"],
                    "std": t[p + "std"],
                    "peak": t[p + "max"],
                    "kurtosis": t[p + "kurt"] + 3,  # the table's is excess kurtosis
                    "skewness": t[p + "skew"],
                    **{c: t[p + c] for c in columns},
                }
            )
        )
    pd.concat(frames).to_csv(out, index=False)
    start, end = "2004-02-12T10:32:39", "2004-02-19T06:22:39"
    meta = {f"test2_b{b}": {"n_bearings": 1, "start": start, "end": end} for b in range(1, 5)}
    meta["test2_b1"]["failures"] = {"1": "outer"}
    meta_path = out.with_suffix(".runs.json")
    meta_path.write_text(json.dumps(meta))
    return meta_path


def best_leads(series: pd.DataFrame, warmup: int) -> pd.DataFrame:
    """The longest lead any threshold allows on each failed bearing, for the health indicator
    and the RMS ratio, if the alarm may not fire in the first half of life and must hold to the
    failure: from just after the last recording at or below the first half's highest value
    (the recordings of the baseline's warm-up aside). A bound on the indicator, not a
    detector: it knows the failure time."""
    rows = []
    for (run, bearing), s in series.groupby(["run", "bearing"], sort=True):
        life = s["life_h"].iloc[0]
        if pd.isna(life):
            continue
        hours = s["hours"].to_numpy()
        first_half = (hours < life / 2) & (np.arange(len(hours)) >= warmup)
        row = {"run": run, "bearing": bearing, "life_h": life}
        for name, column in (("health", "health"), ("RMS ratio", "rms_ratio")):
            values = s[column].to_numpy()
            last_within = np.flatnonzero(values <= values[first_half].max())[-1]
            held = hours[last_within + 1] if last_within + 1 < len(hours) else life
            row[f"{name}: best lead h"] = life - held
        rows.append(row)
    return pd.DataFrame(rows)


def plot(series: pd.DataFrame, path: Path, title: str) -> None:
    groups = list(series.groupby(["run", "bearing"], sort=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.9 * len(groups)), squeeze=False)
    colours = {"watch": "gold", "alarm": "tab:red"}
    for ax, ((run, bearing), s) in zip(axes[:, 0], groups, strict=True):
        ax.semilogy(s["hours"], s["health"].clip(lower=1e-2), lw=0.7, color="tab:blue")
        ax.axhline(s["threshold"].iloc[0], color="black", ls="--", lw=0.8)
        ax.axhline(s["clear_level"].iloc[0], color="tab:green", ls="-.", lw=0.8)
        for state, colour in colours.items():
            marked = s[s["state"] == state]
            ax.scatter(marked["hours"], marked["health"].clip(lower=1e-2), s=4, c=colour)
        life = s["life_h"].iloc[0]
        if pd.notna(life):
            ax.axvline(life, color="grey", lw=0.8)
            ax.axvline(life / 2, color="grey", lw=0.5, ls=":")
        ax.set_title(
            f"{run} bearing {bearing}" + (" (failed)" if pd.notna(life) else ""), fontsize=8
        )
        ax.set_ylabel("health", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("hours since start (grey: failure and half-life)")
    fig.suptitle(
        f"{title}: health indicator (blue), threshold (dashed), clearing level (green),\n"
        "watch/alarm (dots): an episode ends only below the clearing level"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", type=Path, nargs="?")
    parser.add_argument("--runs-meta", type=Path)
    parser.add_argument("--ims-test2", type=Path, help="reference/test2_time_features.csv")
    parser.add_argument("--spectral", type=Path, help="reference/test2_spectral_features.csv")
    parser.add_argument("--columns", default="", help="of --spectral, comma-separated")
    parser.add_argument("--baseline-recordings", type=int, help="default: the setting")
    parser.add_argument("--plots", type=Path, help="folder for the health indicator plots")
    parser.add_argument("--title", help="of the plot; default: IMS test 2 or held out")
    parser.add_argument("--out", type=Path, help="write every row as JSON here")
    args = parser.parse_args()
    settings = Settings()
    if args.baseline_recordings:
        settings = settings.model_copy(update={"baseline_recordings": args.baseline_recordings})
    table, meta = args.table, args.runs_meta
    if args.ims_test2:
        table = settings.home / "ims_test2_reference.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        columns = tuple(c for c in args.columns.split(",") if c)
        meta = ims_test2_table(args.ims_test2, table, settings, args.spectral, columns)
    frame = load_training_table(table, settings, runs_meta=meta)
    result = evaluate_prognostics(frame, settings, progress=lambda r: print(f"held out: {r}"))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print("\nEarly warning (leave one run out)")
    print(result.detector_summary().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nPer bearing")
    cols = [
        "detector",
        "run",
        "bearing",
        "failed",
        "life_h",
        "lead_h",
        "first_alarm_h",
        "false_alarms",
        "alarm_in_first_half",
    ]
    print(result.alarms[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    bounds = best_leads(result.series, settings.baseline_recordings)
    if len(bounds):
        print("\nBest lead any threshold allows, no alarm in the first half (knows the failure)")
        print(bounds.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        medians = bounds.filter(like="best lead").median()
        print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    if len(result.rul):
        print("\nRemaining life at cuts of each failed bearing's life")
        print(result.rul_summary().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        title = args.title or ("IMS test 2" if args.ims_test2 else "held out")
        name = re.sub(r"[^a-z0-9]+", "_", title.lower())
        plot(result.series, args.plots / f"health_{name}.png", title)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "detectors": result.detector_summary().to_dict("records"),
                    "alarms": result.alarms.to_dict("records"),
                    "rul": result.rul.to_dict("records"),
                    "rul_summary": result.rul_summary().to_dict("records"),
                },
                default=str,
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
