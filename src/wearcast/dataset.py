"""The training table: features of every recording of every run, with labels.

Layout of a table folder::

    parts/part-000001.parquet   feature rows of one batch of files
    parts/part-000001.json      what each file of that batch was (size, mtime, CRC-32) and its
                                outcome; written last, so a batch counts only once it is whole
    table.parquet               all rows, latest version of each file, with labels
    quarantine.json             every input file that could not be used, with the reason
    source.json                 the one data folder the table is built from

A table is built from one data folder: given another, it is refused (a second folder merged in
once relabelled the first one's runs as never failed). :func:`wearcast.config.table_folder`
names a table folder per data folder. Rows of runs and recordings no longer in the folder leave
the table, and every run is labelled from its own run.json.

A rerun reads the manifests and processes only files that are new or changed (size or mtime
differ, or their run's run.json now describes them otherwise), so a crash loses at most the
batch in flight, and rerunning gives the same table. A run.json edit also relabels.

Labels (:func:`label_table`), from each run's metadata:

* ``linear``: wear grows linearly from 0 at the start of the run to 1 at the failure;
* ``piecewise``: 0 until the degradation onset, then linear to 1. The onset is the run's own
  (``onsets`` in run.json: the simulator writes the true one) where known, else found on a
  health indicator (the bearing's level about its own first ``baseline_recordings``);
* bearings that did not fail are healthy so far: wear 0 throughout. Their remaining life is
  unknown (censored): ``rul_h`` is empty and ``rul_censored_h`` holds the lower bound, the time
  to the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wearcast.alarms import persistent_alarm
from wearcast.allocator import reuse_large_blocks
from wearcast.config import Settings
from wearcast.features import FeatureSpec, recording_features
from wearcast.formats import resolve_rig
from wearcast.ingest import (
    ClippedSignal,
    Quarantined,
    RecordingError,
    RunFiles,
    discover_runs,
    outside_run,
    read_samples,
)
from wearcast.rig import IMS_RUNS, Rig, RunInfo
from wearcast.storage import write_atomic

__all__ = [
    "KEY_COLUMNS",
    "LABEL_COLUMNS",
    "FeaturizeResult",
    "build_table",
    "featurize",
    "featurize_batch",
    "featurize_files",
    "pending_files",
    "process_files",
    "write_batches",
    "result_columns",
    "Task",
    "run_tasks",
    "label_table",
    "load_training_table",
    "read_table",
    "feature_columns",
    "model_columns",
    "table_digest",
    "degradation_onset",
]

KEY_COLUMNS = ["run", "bearing", "timestamp", "file"]
LABEL_COLUMNS = [
    "elapsed_h",
    "life_fraction",
    "failed",
    "onset",
    "wear_linear",
    "wear_piecewise",
    "wear",
    "rul_h",
    "rul_censored_h",
    "health_indicator",
]
_PART = re.compile(r"part-(\d+)\.(parquet|json)$")
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class FeaturizeResult:
    table: Path
    processed: int  # files read in this call
    ingested: int  # files with rows in the table
    quarantined: int
    rows: int


# --- worker side -------------------------------------------------------------------------


class Task(NamedTuple):
    """One input file to read. JSON-safe: Airflow passes tasks between processes as lists."""

    path: str
    key: str  # the file's path relative to the data folder
    run: str
    channels: int | None  # the run's channel count
    channel_map: dict[int, list[int]] | None
    rig: dict  # the run's own rig facts (RunInfo.rig_fields), its format's defaults for the rest
    timestamp: str | None  # ISO 8601; None for a file rejected before reading
    problem: str | None  # why the file is rejected before reading
    score_clipped: bool = False  # scoring, not training: a clipped signal is read (ClippedSignal)

    def digest(self) -> str:
        """What the file's rows depend on besides its bytes: a run.json edit changes it."""
        facts = [self.run, self.channels, self.channel_map, self.rig, self.timestamp, self.problem]
        return hashlib.blake2b(
            json.dumps(facts, sort_keys=True).encode(), digest_size=8
        ).hexdigest()


# Per worker process: the settings, and the rig and features of each run description seen.
_worker: tuple[Settings, dict[str, tuple[Rig, FeatureSpec]]] | None = None


def _init_worker(settings: Settings) -> None:
    global _worker
    _worker = (settings, {})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reuse_large_blocks()


def _rig_and_spec(task: Task) -> tuple[Rig, FeatureSpec]:
    settings, known = _worker
    key = json.dumps(task.rig, sort_keys=True)
    if key not in known:
        described = {k: v for k, v in task.rig.items() if v is not None}
        rig = resolve_rig(RunInfo.from_dict({"name": task.run, **described}), settings)
        known[key] = (rig, FeatureSpec.from_settings(settings, rig))
    return known[key]


def _process(task: Task) -> dict:
    """Read, hash, validate and featurize one file. Never raises for a bad file."""
    assert _worker is not None
    settings = _worker[0]
    task = Task(*task)
    channel_map = task.channel_map
    if channel_map is not None:  # JSON (Airflow's XCom) turns the bearing numbers into strings
        channel_map = {int(b): list(chs) for b, chs in channel_map.items()}
    try:
        st = os.stat(task.path)
    except OSError:  # gone since it was listed: the read below says why
        st = None
    entry = {
        "file": task.key,
        "size": st.st_size if st else -1,
        "mtime_ns": st.st_mtime_ns if st else 0,
        "described": task.digest(),
        "run": task.run,
        "path": task.path,
    }
    try:
        try:
            content = Path(task.path).read_bytes()
        except OSError as exc:  # e.g. permission denied: this file is quarantined, not the job
            raise RecordingError(f"cannot read: {exc.strerror}") from None
        entry["crc32"] = zlib.crc32(content)
        rig, spec = _rig_and_spec(task)
        try:
            data = read_samples(
                Path(task.path),
                rig,
                settings,
                expected_channels=task.channels,
                content=content,
                problem=task.problem,
            )
        except ClippedSignal as exc:
            if not task.score_clipped:
                raise
            data, entry["warning"] = exc.data, exc.warning
        if channel_map is None:
            raise RecordingError("the run's channel count could not be determined")
        _, rows = recording_features(data, channel_map, spec)
    except RecordingError as exc:
        entry.update(status="quarantined", reason=str(exc), line=exc.line, column=exc.column)
        return entry
    entry.update(
        status="ingested",
        timestamp=datetime.fromisoformat(task.timestamp),
        bearings=list(channel_map),
        width=max(len(chs) for chs in channel_map.values()),
        rig=rig,
        rows=rows,
    )
    return entry


# --- parent side -------------------------------------------------------------------------


def run_tasks(run: RunFiles, data_dir: Path, *, to_label: bool = False) -> list[Task]:
    """One task per file of the run that is to be read (ignored files are not). ``to_label``:
    for the training table, where a recording outside the run's declared start and end cannot
    be labelled, nor a clipped one used (both are quarantined with the reason; `predict`
    scores them, a clipped one with a warning)."""

    def task(path: Path, when: datetime | None, problem: str | None) -> Task:
        return Task(
            str(path),
            str(path.relative_to(data_dir)),
            run.info.name,
            run.n_channels,
            run.channel_map,
            run.info.rig_fields(),
            when.isoformat() if when else None,
            problem,
            not to_label,
        )

    dated = [
        (p, when, outside_run(when, run.info) if to_label else None) for when, p in run.recordings
    ]
    return [task(p, None if why else when, why) for p, when, why in dated] + [
        task(p, None, why) for p, why in run.rejected
    ]


@contextmanager
def _pool_start_in_any_host() -> Iterator[None]:
    """Worker processes can be started in this block from any host process, and do not
    re-run its ``__main__``.

    - multiprocessing re-imports the parent's main script in every spawn or forkserver child.
      Inside an Airflow task that script is Airflow's command line, which dies there (its
      database is forbidden to tasks) and a pool would respawn it forever. The workers need
      only this module, so they start while ``__main__`` is an empty module.
    - A task under Celery inherits the prefork pool's daemonic mark, and multiprocessing
      refuses children to a daemonic process. The mark is lifted while the workers start;
      what it guards against (orphans) cannot happen: the pool is always shut down first.
      Its current process is billiard's, whose key multiprocessing cannot hand to a child:
      the same key is given multiprocessing's own type (for good).
    """
    main, current = sys.modules["__main__"], multiprocessing.current_process()
    daemonic = current.daemon
    sys.modules["__main__"] = types.ModuleType("__main__")
    current.daemon = False
    # Celery's current process is billiard's, whose setter would keep billiard's key type.
    current._config["authkey"] = multiprocessing.process.AuthenticationString(current.authkey)
    try:
        yield
    finally:
        current.daemon = daemonic
        sys.modules["__main__"] = main


def process_files(tasks: list[Task], settings: Settings) -> Iterator[dict]:
    """Validate and featurize files on ``settings.workers`` processes; results in task order.

    Safe in any host process (CLI, notebook, Airflow task under any executor): children
    fork from a clean forkserver that has imported only wearcast, never from the caller
    (whose threads could hold locks), and never re-run the caller's entry point. A worker
    that dies (killed, out of memory) fails the call with ``BrokenProcessPool``; it is not
    silently replaced.
    """
    if len(tasks) <= 2 or settings.workers == 1:
        _init_worker(settings)
        yield from map(_process, tasks)
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(
        min(settings.workers, len(tasks)), ctx, initializer=_init_worker, initargs=(settings,)
    )
    try:
        # All workers start inside map(): the executor adds processes only on submit.
        with _pool_start_in_any_host():
            results = pool.map(_process, tasks, chunksize=16)
        yield from results
    finally:
        pool.shutdown(cancel_futures=True)


def result_columns(result: dict, settings: Settings) -> list[str]:
    """Column names of an ingested result's feature rows (they follow the run's rig)."""
    return FeatureSpec.from_settings(settings, result["rig"]).columns(result["width"])


def _batch_id() -> str:
    """Sortable by time and unique across processes (parallel featurize tasks)."""
    return f"{time.time_ns():020d}{os.getpid():08d}"


def _load_manifests(parts_dir: Path, *, cleanup: bool = False) -> dict[str, dict]:
    """Latest entry per file over all whole batches.

    ``cleanup`` removes what interrupted batches left (a part without its manifest, temporary
    files); only a single writer may do that, never while parallel batches are being written.
    """
    latest: dict[str, dict] = {}
    for path in sorted(parts_dir.glob("part-*.json")):
        batch = _PART.search(path.name).group(1)
        for entry in json.loads(path.read_text()):
            latest[entry["file"]] = {**entry, "batch": batch}
    if cleanup:
        for path in parts_dir.glob("part-*.parquet"):
            if not path.with_suffix(".json").exists():
                path.unlink()
        for path in parts_dir.glob(".*.tmp"):
            path.unlink()
    return latest


def _write_batch(parts_dir: Path, results: list[dict], settings: Settings) -> None:
    batch = _batch_id()
    ingested = [r for r in results if r["status"] == "ingested"]
    if ingested:
        tables = []
        # One Arrow table per column layout (rig; 1 or 2 channels per bearing) in the batch.
        for layout in {(r["rig"], r["width"]) for r in ingested}:
            group = [r for r in ingested if (r["rig"], r["width"]) == layout]
            columns = result_columns(group[0], settings)
            counts = [len(r["bearings"]) for r in group]
            values = np.vstack([r["rows"] for r in group])
            cols = {
                "run": pa.array(np.repeat([r["run"] for r in group], counts), pa.string()),
                "bearing": pa.array(np.concatenate([r["bearings"] for r in group]), pa.int16()),
                "timestamp": pa.array(
                    np.repeat(np.array([r["timestamp"] for r in group], "datetime64[s]"), counts),
                    pa.timestamp("s"),
                ),
                "file": pa.array(np.repeat([r["file"] for r in group], counts), pa.string()),
            }
            for j, name in enumerate(columns):
                cols[name] = pa.array(values[:, j])
            tables.append(pa.table(cols))
        table = pa.concat_tables(tables, promote_options="default")
        tmp = parts_dir / f".part-{batch}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, parts_dir / f"part-{batch}.parquet")
    manifest = [
        {
            k: v
            for k, v in r.items()
            if k not in ("rows", "width", "bearings", "timestamp", "path", "rig")
        }
        for r in results
    ]
    # The manifest is the commit point: a batch counts only once it is there.
    write_atomic(parts_dir / f"part-{batch}.json", json.dumps(manifest))


def _merge_parts(parts_dir: Path, latest: dict[str, dict]) -> pd.DataFrame:
    frames = []
    for path in sorted(parts_dir.glob("part-*.parquet")):
        batch = _PART.search(path.name).group(1)
        frame = pd.read_parquet(path)
        current = [latest.get(f, {}).get("batch") == batch for f in frame["file"]]
        frames.append(frame[np.asarray(current, dtype=bool)])
    if not frames:
        return pd.DataFrame(columns=KEY_COLUMNS)
    merged = pd.concat(frames, ignore_index=True)
    return merged.sort_values(["run", "bearing", "timestamp"], kind="stable").reset_index(drop=True)


def _unseen(tasks: Iterable[Task], table_dir: Path) -> list[Task]:
    """The tasks whose file is new or changed (size or mtime, or its run's description)
    since the table last saw it."""
    parts_dir = Path(table_dir) / "parts"
    latest = _load_manifests(parts_dir) if parts_dir.exists() else {}
    unseen = []
    for task in tasks:
        st = os.stat(task.path)
        known = latest.get(task.key)
        if (
            known
            and known["size"] == st.st_size
            and known["mtime_ns"] == st.st_mtime_ns
            and known.get("described") == task.digest()
        ):
            continue
        unseen.append(task)
    return unseen


def _check_source(data_dir: Path, table_dir: Path, *, bind: bool = False) -> None:
    """Refuse to build ``table_dir`` from another folder than its own; ``bind`` records
    ``data_dir`` as its folder if it has none yet."""
    source = str(Path(data_dir).resolve())
    path = Path(table_dir) / SOURCE_FILE
    if path.exists():
        known = json.loads(path.read_text())["data_dir"]
        if known != source:
            raise ValueError(
                f"{table_dir} is the table of {known}, not of {source}: a table is built from "
                "one folder (give another table folder, e.g. wearcast featurize --out)"
            )
    elif bind:
        write_atomic(path, json.dumps({"data_dir": source}))


def pending_files(
    data_dir: Path,
    table_dir: Path,
    *,
    unreadable: list[Quarantined] | None = None,
    runs: list[RunFiles] | None = None,
) -> list[Task]:
    """The input files that are new or changed since the table last saw them, among ``runs``
    (default: discovered under ``data_dir``).

    Folders that cannot be listed, and the files of a folder of no known format, go to
    ``unreadable`` if given, else raise (see :func:`~wearcast.ingest.discover_runs`).
    """
    data_dir = Path(data_dir)
    _check_source(data_dir, table_dir)
    if runs is None:
        runs = discover_runs(data_dir, unreadable=unreadable)
    return _unseen((t for run in runs for t in run_tasks(run, data_dir, to_label=True)), table_dir)


def _check_one_feature_set(runs: list[RunFiles], settings: Settings) -> None:
    """ValueError naming two runs whose rigs give different features (another sampling rate
    gives other spectrum bands): one table holds one feature set, or a model would be trained
    on columns that are empty for half its rows. Other speeds and bearings are fine."""
    seen: dict[tuple[str, ...], tuple[str, Rig]] = {}
    for run in runs:
        try:
            rig = resolve_rig(run.info, settings)
            names = tuple(FeatureSpec.from_settings(settings, rig).names)
        except (ValueError, RecordingError):  # its files are quarantined with the reason
            continue
        seen.setdefault(names, (run.info.name, rig))
    if len(seen) > 1:
        (a, rig_a), (b, rig_b) = list(seen.values())[:2]
        raise ValueError(
            f"runs {a} ({rig_a.sampling_rate_hz:g} Hz) and {b} ({rig_b.sampling_rate_hz:g} Hz) "
            "have different features (their spectrum bands differ): featurize each rig into a "
            "table of its own (--out)"
        )


def write_batches(tasks: list[Task], folder: Path, size: int) -> list[str]:
    """Split ``tasks`` into manifests of ``size`` files under ``folder``; their paths.

    Orchestrators pass these paths between tasks, not the file lists themselves.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, len(tasks), size), start=1):
        path = folder / f"batch-{number:06d}.json"
        write_atomic(path, json.dumps(tasks[start : start + size]))
        paths.append(str(path))
    return paths


def featurize_batch(manifest: Path, table_dir: Path, settings: Settings) -> int:
    """Featurize the files of one batch manifest (:func:`write_batches`) into ``table_dir``.

    A retried batch skips the files an earlier attempt already committed, so no file is
    featurized twice.
    """
    tasks = [Task(*t) for t in json.loads(Path(manifest).read_text())]
    return featurize_files(_unseen(tasks, table_dir), table_dir, settings)


def featurize_files(
    tasks: list[Task],
    table_dir: Path,
    settings: Settings,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Validate and featurize ``tasks`` into committed batches; several may run at once."""
    parts_dir = Path(table_dir) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    pending: list[dict] = []
    done = 0
    for result in process_files(tasks, settings):
        pending.append(result)
        done += 1
        if progress:
            progress(done, len(tasks))
        if len(pending) >= batch_size:
            _write_batch(parts_dir, pending, settings)
            pending = []
    if pending:
        _write_batch(parts_dir, pending, settings)
    return done


def build_table(
    data_dir: Path,
    table_dir: Path,
    settings: Settings,
    *,
    runs: list[RunFiles] | None = None,
    unreadable: Sequence[Quarantined] = (),
) -> FeaturizeResult:
    """Merge the committed batches into ``table.parquet`` with labels (only if they changed).

    ``runs`` and ``unreadable``: what discovering ``data_dir`` found, if already known."""
    data_dir, table_dir = Path(data_dir), Path(table_dir)
    parts_dir = table_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    _check_source(data_dir, table_dir, bind=True)
    latest = _load_manifests(parts_dir, cleanup=True)
    manifests = sorted(p.name for p in parts_dir.glob("part-*.json"))
    table_path = table_dir / "table.parquet"
    state_path = table_dir / "state.json"
    if runs is None:
        unreadable = []
        runs = discover_runs(data_dir, unreadable=unreadable)
    _check_one_feature_set(runs, settings)
    # Only files still there: a deleted recording's rows and quarantine entry leave too.
    present = sorted(
        str(path.relative_to(data_dir))
        for run in runs
        for path in [p for _, p in run.recordings] + [p for p, _ in run.rejected]
    )
    still_there = set(present)
    latest = {key: entry for key, entry in latest.items() if key in still_there}
    infos = {run.info.name: run.info for run in runs}
    described = json.dumps([infos[n].as_dict() for n in sorted(infos)], sort_keys=True)
    state = {
        "manifests": hashlib.blake2b("\n".join(manifests).encode(), digest_size=16).hexdigest(),
        "files": hashlib.blake2b("\n".join(present).encode(), digest_size=16).hexdigest(),
        "runs": hashlib.blake2b(described.encode(), digest_size=16).hexdigest(),
        "label_strategy": settings.label_strategy,
        "unreadable": sorted(q.file for q in unreadable),
    }
    up_to_date = (
        table_path.exists() and state_path.exists() and json.loads(state_path.read_text()) == state
    )
    # Folders that could not be listed and the files of a folder of no known format are
    # reported with the files that could not be used.
    quarantined = sorted(
        [e for e in latest.values() if e["status"] == "quarantined"]
        + [vars(q) for q in unreadable],
        key=lambda e: e["file"],
    )
    if not up_to_date:
        frame = _merge_parts(parts_dir, latest)
        frame = frame[frame["run"].isin(infos)].reset_index(drop=True)  # runs still there
        if frame.empty:  # every file quarantined: an empty table, and the reasons
            frame = frame.reindex(columns=[*KEY_COLUMNS, *LABEL_COLUMNS])
        else:
            frame = label_table(frame, infos, settings)
        tmp = table_dir / ".table.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, table_path)
        write_atomic(
            table_dir / "quarantine.json",
            json.dumps(
                [{k: e.get(k) for k in ("file", "reason", "line", "column")} for e in quarantined],
                indent=1,
            ),
        )
        write_atomic(state_path, json.dumps(state))
        rows = len(frame)
    else:
        rows = pq.ParquetFile(table_path).metadata.num_rows
    return FeaturizeResult(
        table=table_path,
        processed=0,
        ingested=sum(e["status"] == "ingested" for e in latest.values()),
        quarantined=len(quarantined),
        rows=rows,
    )


def featurize(
    data_dir: Path,
    table_dir: Path,
    settings: Settings,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> FeaturizeResult:
    """Bring ``table_dir`` up to date with the recordings under ``data_dir``.

    ``progress(done, total)`` is called as files are processed.
    """
    # Discovered once for both steps (listing and dating every file is a sixth of a rerun with
    # nothing new); unreadable folders are reported by build_table, with the unusable files.
    unreadable: list[Quarantined] = []
    runs = discover_runs(Path(data_dir), unreadable=unreadable)
    _check_one_feature_set(runs, settings)  # before the work, not only when the table is made
    tasks = pending_files(data_dir, table_dir, runs=runs)
    processed = featurize_files(
        tasks, table_dir, settings, batch_size=batch_size, progress=progress
    )
    result = build_table(data_dir, table_dir, settings, runs=runs, unreadable=unreadable)
    return replace(result, processed=processed)


# --- labels ------------------------------------------------------------------------------


def degradation_onset(
    times: pd.Series, indicator: np.ndarray, settings: Settings
) -> datetime | None:
    """Where the first persistent rise of the health indicator above its baseline began.

    The rise is confirmed where it stays well clear of the baseline's noise, which a slow rise
    reaches hours after it began (IMS test 2 bearing 1: 8 h). It began after the indicator last
    stood at its baseline level: a median of three recordings, so one low recording within the
    rise does not end the search there. Recordings between the two are not healthy: left in,
    they set the healthy tail that the alarm threshold is calibrated on (docs/model.md)."""
    base_n = min(settings.baseline_recordings, max(len(indicator) // 4, 1))
    baseline = indicator[:base_n]
    median = np.median(baseline)
    spread = 1.4826 * np.median(np.abs(baseline - median))
    threshold = median * 1.08 + 5 * spread
    confirmed = persistent_alarm(indicator > threshold, settings.alarm_k, settings.alarm_n)
    if confirmed is None:
        return None
    level = pd.Series(indicator[:confirmed]).rolling(3, center=True, min_periods=1).median()
    at_baseline = np.flatnonzero(level.to_numpy() <= median)
    began = at_baseline[-1] + 1 if len(at_baseline) else base_n
    return times.iloc[min(began, confirmed)]


def label_table(
    frame: pd.DataFrame,
    runs: dict[str, RunInfo],
    settings: Settings,
    *,
    indicator: str = "std",
) -> pd.DataFrame:
    """Add the label columns (:data:`LABEL_COLUMNS`) to a table of rows keyed by
    run, bearing and timestamp. ``indicator`` is the health indicator column for onsets."""
    frame = frame.copy()
    health = frame[indicator].to_numpy(dtype=float)
    for col in LABEL_COLUMNS:
        frame[col] = np.nan
    frame["health_indicator"] = health
    frame["failed"] = False
    frame["onset"] = pd.NaT
    last = frame.groupby("run")["timestamp"].max()
    for (run, bearing), rows in frame.groupby(["run", "bearing"], sort=False):
        info = runs.get(run, RunInfo(name=run))
        times = rows["timestamp"]
        start = info.start or times.min()
        # A run that names failures without an end ended in them at its last recording.
        end = info.end or (last[run] if info.failures else None)
        elapsed = (times - start).dt.total_seconds() / 3600.0
        frame.loc[rows.index, "elapsed_h"] = elapsed
        if end is None:
            frame.loc[rows.index, ["wear_linear", "wear_piecewise"]] = 0.0
            continue
        total = (end - start).total_seconds() / 3600.0
        to_end = (end - times).dt.total_seconds() / 3600.0
        frame.loc[rows.index, "life_fraction"] = elapsed / total
        if bearing not in info.failures:
            frame.loc[rows.index, ["wear_linear", "wear_piecewise"]] = 0.0
            frame.loc[rows.index, "rul_censored_h"] = to_end
            continue
        frame.loc[rows.index, "failed"] = True
        frame.loc[rows.index, "rul_h"] = to_end
        linear = (elapsed / total).clip(0.0, 1.0)
        frame.loc[rows.index, "wear_linear"] = linear
        # The true onset where the run knows it (simulated runs), else one found on the
        # health indicator: a labeller's guess that a model of the same features can copy.
        onset = info.onsets.get(bearing) or degradation_onset(
            times, frame.loc[rows.index, "health_indicator"].to_numpy(), settings
        )
        if onset is None:  # never rose: the failure came without warning on this indicator
            onset = end
        frame.loc[rows.index, "onset"] = onset
        span = max((end - onset).total_seconds() / 3600.0, 1e-9)
        since = (times - onset).dt.total_seconds() / 3600.0
        frame.loc[rows.index, "wear_piecewise"] = (since / span).clip(0.0, 1.0)
    frame["wear"] = frame[f"wear_{settings.label_strategy}"]
    frame["failed"] = frame["failed"].astype(bool)
    frame.attrs["label_strategy"] = settings.label_strategy
    return frame


# --- reading -----------------------------------------------------------------------------


def _runs_metadata(path: Path | None, names: list[str]) -> dict[str, RunInfo]:
    """Run metadata from a JSON file ``{run: {failures: {bearing: defect}, start, end}}``,
    else the known IMS runs by name, else unknown (healthy so far)."""
    given = {}
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read run metadata ({exc})") from None
        given = {
            name: RunInfo.from_dict({"name": name, **meta}, where=f"{path}: run {name}")
            for name, meta in raw.items()
        }
    return {n: given.get(n) or IMS_RUNS.get(n) or RunInfo(name=n) for n in names}


def load_training_table(
    path: Path, settings: Settings, *, runs_meta: Path | None = None, indicator: str | None = None
) -> pd.DataFrame:
    """A labelled table: wearcast's own (a table folder or its table.parquet), or one made
    elsewhere (CSV or Parquet with ``run``, ``bearing``, ``timestamp`` and numeric features),
    labelled here from ``runs_meta`` or the known IMS runs.

    The health indicator for the degradation onset is ``indicator``, else ``std``, else the
    root-sum-square of all feature columns (a broadband level).
    """
    path = Path(path)
    if path.is_dir() or path.name == "table.parquet":
        return read_table(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet feature table")
    missing = [c for c in ("run", "bearing", "timestamp") if c not in frame]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}")
    frame["run"] = frame["run"].astype(str)
    try:
        frame["bearing"] = frame["bearing"].astype(int)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: bad bearing or timestamp values ({exc})") from None
    features = feature_columns(frame)
    if not features:
        raise ValueError(f"{path}: no numeric feature columns besides run, bearing, timestamp")
    keep = ["run", "bearing", "timestamp"] + (["file"] if "file" in frame else []) + features
    frame = frame[keep]
    if indicator is None:
        indicator = "std" if "std" in features else "_rss"
        if indicator == "_rss":
            frame = frame.assign(_rss=np.sqrt((frame[features].astype(float) ** 2).sum(axis=1)))
    elif indicator not in frame:
        raise ValueError(f"{path}: no indicator column {indicator!r}")
    infos = _runs_metadata(runs_meta, sorted(frame["run"].unique()))
    labelled = label_table(frame, infos, settings, indicator=indicator)
    return labelled.drop(columns=["_rss"], errors="ignore")


def read_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "table.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no feature table (run `wearcast featurize` first)")
    return pd.read_parquet(path)


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Every feature column (bearing-level and per-channel)."""
    skip = set(KEY_COLUMNS) | set(LABEL_COLUMNS)
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]


def model_columns(frame: pd.DataFrame) -> list[str]:
    """The bearing-level features models use: the same whatever the channels per bearing."""
    return [c for c in feature_columns(frame) if not re.match(r"ch\d+_", c)]


def table_digest(path: Path) -> str:
    """Content hash of a table file, logged with every model trained on it."""
    digest = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
