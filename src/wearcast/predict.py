"""Batch scoring: recordings through the same validation and features as training.

A folder is scored run by run, each bearing against its own baseline (its first
``baseline_recordings`` recordings in the folder), with the alarm rule and the remaining life by
trend over its predictions. A single file has no history: it is compared with the training
fleet's baseline, which is less reliable, and the answer says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.alarms import bearing_status
from wearcast.baseline import BASELINE_PREFIX, add_baselines, model_inputs
from wearcast.config import Settings
from wearcast.dataset import model_columns, process_files, result_columns, run_tasks
from wearcast.ingest import Quarantined, discover_runs, single_file_run

__all__ = ["score_path"]


def score_path(
    path: Path, model, version: int, settings: Settings
) -> tuple[list[dict], list[Quarantined]]:
    """Per recording and bearing: wear, alarm state and remaining life; and the bad files."""
    path = Path(path)
    if path.is_dir():
        runs, root = discover_runs(path), path
    elif path.is_file():
        runs, root = [single_file_run(path)], path.parent
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    tasks = [t for run in runs for t in run_tasks(run, root)]
    rows, bad = [], []
    for entry in process_files(tasks, settings):
        if entry["status"] != "ingested":
            bad.append(
                Quarantined(entry["file"], entry["reason"], entry.get("line"), entry.get("column"))
            )
            continue
        frame = pd.DataFrame(entry["rows"], columns=result_columns(entry, settings))
        frame.insert(0, "bearing", entry["bearings"])
        frame.insert(0, "timestamp", pd.Timestamp(entry["timestamp"]))
        frame.insert(0, "run", entry["run"])
        frame.insert(0, "file", entry["file"])
        rows.append(frame)
    if not rows:
        return [], bad
    table = pd.concat(rows, ignore_index=True).sort_values(["run", "bearing", "timestamp"])
    table = table.reset_index(drop=True)
    columns = model_columns(table.drop(columns=["file"]))
    single = path.is_file()
    if single:
        missing = pd.DataFrame(
            np.nan, index=table.index, columns=[BASELINE_PREFIX + c for c in columns]
        )
        table = pd.concat([table, missing], axis=1)
    else:
        table = add_baselines(table, columns, settings.baseline_recordings)
    table["wear"] = model.predict(model_inputs(table, columns))
    results = []
    for (run, bearing), group in table.groupby(["run", "bearing"], sort=True):
        hours = (
            (group["timestamp"] - group["timestamp"].iloc[0]).dt.total_seconds() / 3600
        ).to_numpy()
        wear = group["wear"].to_numpy()
        history = min(len(group), settings.baseline_recordings)
        window = max(settings.alarm_n, settings.rul_trend_recordings)
        for i in range(len(group)):
            start = max(0, i + 1 - window)  # what the status needs, not the whole prefix
            status = bearing_status(
                hours[start : i + 1],
                wear[start : i + 1],
                threshold=settings.alarm_threshold,
                k=settings.alarm_k,
                n=settings.alarm_n,
                recent=settings.rul_trend_recordings,
            )
            results.append(
                {
                    "file": group["file"].iloc[i],
                    "run": run,
                    "bearing": int(bearing),
                    "timestamp": group["timestamp"].iloc[i].isoformat(),
                    "wear": float(group["wear"].iloc[i]),
                    "alarm": status.alarm,
                    "rul_h": status.rul_h,
                    "rul_method": status.rul_method,
                    "baseline": "training fleet (no history)"
                    if single
                    else f"this bearing's first {history} recordings",
                    "model_version": version,
                }
            )
    return results, bad
