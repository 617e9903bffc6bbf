"""Batch scoring: recordings through the same validation and features as training.

A folder is scored run by run, each bearing against its own baseline (its first
``baseline_recordings`` recordings in the folder). With the version's prognostics (health
indicator, alarm states, remaining life: :mod:`wearcast.prognostics`) every recording gets its
health indicator, alarm state and remaining life with an interval, each from the recordings up
to it; a version trained without them falls back on the wear k-of-n rule and the wear trend.

A single file is scored as its folder's recordings up to it would be: from those before it by
time (its bearing's baseline and history, its age from the run's first recording); scored
alone, the last snapshot of a failed bearing read as a new bearing's first. One rule for a
recording without history, here and in the API: it is the first recording of its bearing, its
own baseline, and the first ``baseline_recordings - 1`` recordings of a bearing are never
judged above the health threshold (the baseline is still being made). No change can show in
such an answer, and it says so. (The training fleet's baseline, used before for a single file,
put healthy real IMS recordings at wear 0.29-0.30, a hair under the alarm threshold: issue 9.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.alarms import Episode, bearing_status
from wearcast.baseline import growing_baselines, model_inputs
from wearcast.config import Settings
from wearcast.dataset import model_columns, process_files, result_columns, run_tasks
from wearcast.ingest import Quarantined, discover_runs, run_up_to
from wearcast.model import ForeignRig, check_rig
from wearcast.prognostics import Prognostics

__all__ = ["answer_state", "score_path"]


def answer_state(answer: dict) -> str:
    """The state of one of :func:`score_path`'s answers; a version without alarm states
    answers only whether its wear rule alarms."""
    return answer.get("alarm_state", "alarm" if answer["alarm"] else "ok")


def score_path(
    path: Path, model, version: int, settings: Settings, prognostics: Prognostics | None = None
) -> tuple[list[dict], list[Quarantined]]:
    """Per recording and bearing: wear, alarm state and remaining life; and the bad files.
    For a file, its own answers (scored after the recordings before it in its folder)."""
    path = Path(path)
    bad: list[Quarantined] = []
    if path.is_dir():
        runs, root = discover_runs(path, unreadable=bad), path
    elif path.is_file():
        runs, root = [run_up_to(path)], path.parent
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    tasks = [t for run in runs for t in run_tasks(run, root)]
    if not tasks:  # e.g. a temperature log: known, not a recording
        ignored = [(p, why) for run in runs for p, why in run.ignored]
        said = f": {len(ignored)} file(s), none a recording ({ignored[0][0].name}: {ignored[0][1]})"
        raise ValueError(f"{path}: no recording to score{said if ignored else ''}")
    by_run: dict[str, list[pd.DataFrame]] = {}
    warnings: dict[str, str] = {}  # by file: scored, with something to say (clipped)
    for entry in process_files(tasks, settings):
        if entry["status"] != "ingested":
            bad.append(
                Quarantined(entry["file"], entry["reason"], entry.get("line"), entry.get("column"))
            )
            continue
        if "warning" in entry:
            warnings[entry["file"]] = entry["warning"]
        frame = pd.DataFrame(entry["rows"], columns=result_columns(entry, settings))
        frame.insert(0, "bearing", entry["bearings"])
        frame.insert(0, "timestamp", pd.Timestamp(entry["timestamp"]))
        frame.insert(0, "run", entry["run"])
        frame.insert(0, "file", entry["file"])
        by_run.setdefault(entry["run"], []).append(frame)
    scored, foreign = _of_the_models_rig(by_run, model.named_steps["relative"].features_)
    if not scored:
        if foreign:  # nothing this model can score: the first run's reason is the error
            raise foreign[0][1]
        return [], bad
    for frames, error in foreign:  # another rig beside runs of the model's: set aside, said why
        bad += [Quarantined(f, str(error)) for frame in frames for f in frame["file"].unique()]
    table = pd.concat(scored, ignore_index=True).sort_values(["run", "bearing", "timestamp"])
    table = table.reset_index(drop=True)
    columns = model_columns(table.drop(columns=["file"]))
    k = settings.baseline_recordings
    table = growing_baselines(table, columns, k)
    table["wear"] = model.predict(model_inputs(table, columns))
    if prognostics is not None:
        table["health"] = prognostics.health.score_samples(table)
    results = []
    for (run, bearing), group in table.groupby(["run", "bearing"], sort=True):
        hours = (
            (group["timestamp"] - group["timestamp"].iloc[0]).dt.total_seconds() / 3600
        ).to_numpy()
        common = {"run": run, "bearing": int(bearing), "model_version": version}
        if prognostics is None:
            statuses = _wear_statuses(hours, group["wear"].to_numpy(), settings)
        else:
            steps, episodes = prognostics.follow(hours, group["health"].to_numpy(), warmup=k - 1)
            statuses = [step.answer() for step in steps]
            stamps = group["timestamp"]
            common["episodes"] = [_episode_answer(e, stamps) for e in episodes]
        for i, status in enumerate(statuses):
            file = group["file"].iloc[i]
            results.append(
                {
                    "file": file,
                    "timestamp": group["timestamp"].iloc[i].isoformat(),
                    "wear": float(group["wear"].iloc[i]),
                    # its baseline: the bearing's recordings up to it, at most the first k
                    "baseline_recordings": min(i + 1, k),
                    **status,
                    **{k: v for k, v in common.items() if k != "episodes"},
                    **({"warning": warnings[file]} if file in warnings else {}),
                }
            )
        if "episodes" in common and results:
            results[-1]["episodes"] = common["episodes"]  # once per bearing, on its latest
    if path.is_file():
        results = [r for r in results if r["file"] == path.name]
    return results, bad


def _of_the_models_rig(
    by_run: dict[str, list[pd.DataFrame]], trained_on: list[str]
) -> tuple[list[pd.DataFrame], list[tuple[list[pd.DataFrame], ForeignRig]]]:
    """The runs' recordings the model can score, and each other run's with the reason: every
    run is checked on its own features (checked on the union of a folder's columns, another
    rig's run beside one of the model's got empty features, imputed, and answers)."""
    scored, foreign = [], []
    for run, frames in sorted(by_run.items()):
        try:
            check_rig(model_columns(frames[0].drop(columns=["file"])), trained_on)
        except ForeignRig as exc:
            foreign.append((frames, ForeignRig(f"run {run}: {exc}")))
            continue
        scored += frames
    return scored, foreign


def _wear_statuses(hours: np.ndarray, wear: np.ndarray, settings: Settings) -> list[dict]:
    """A version without prognostics: the wear k-of-n rule and the wear trend."""
    window = max(settings.alarm_n, settings.rul_trend_recordings)
    out = []
    for i in range(len(wear)):
        start = max(0, i + 1 - window)  # what the status needs, not the whole prefix
        status = bearing_status(
            hours[start : i + 1],
            wear[start : i + 1],
            threshold=settings.alarm_threshold,
            k=settings.alarm_k,
            n=settings.alarm_n,
            recent=settings.rul_trend_recordings,
        )
        out.append({"alarm": status.alarm, "rul_h": status.rul_h, "rul_method": status.rul_method})
    return out


def _episode_answer(episode: Episode, stamps: pd.Series) -> dict:
    def at(i: int | None) -> str | None:
        return None if i is None else stamps.iloc[i].isoformat()

    return {
        "level": episode.level,
        "start": at(episode.start),
        "raised": at(episode.raised),
        "end": at(episode.end),
        "peak": at(episode.peak),
        "peak_health": episode.peak_value,
    }
