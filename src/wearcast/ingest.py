"""Find runs, read and validate their recordings; quarantine the bad ones with the reason.

A data folder holds one or more runs. A run is a folder of recordings in one of the known
formats (:mod:`wearcast.formats`: IMS text files named by their time, PRONOSTIA
``acc_NNNNN.csv``...), optionally with a ``run.json`` describing it (:mod:`wearcast.rig`).
Every other regular file in a run folder is an input too: it is quarantined if it is not a
valid recording, or listed as ignored, with what becomes of it, if its format knows it as
something else (PRONOSTIA's temperature logs): nothing in a run folder is silently skipped.
Inputs are never moved or changed; "quarantined" means listed, with the reason, in the
quarantine report.
"""

from __future__ import annotations

import errno
import os
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from wearcast.config import Settings
from wearcast.formats import (
    RecordingError,
    RecordingFormat,
    detect_format,
    expected_formats,
    get_format,
    resolve_rig,
    without_bom,
)
from wearcast.formats.ims import parse_recording
from wearcast.rig import (
    RUN_METADATA_FILE,
    Rig,
    RunInfo,
    bearing_channels,
    check_failed_bearings,
    load_run_info,
)

__all__ = [
    "ClippedSignal",
    "Recording",
    "RecordingError",
    "Quarantined",
    "IngestReport",
    "RunFiles",
    "date_run",
    "discover_runs",
    "run_up_to",
    "single_file_run",
    "parse_recording",
    "validate_signal",
    "read_samples",
    "check_run",
]


@dataclass(frozen=True)
class Recording:
    path: Path
    run: str
    timestamp: datetime
    data: np.ndarray  # (samples, channels), in g


@dataclass(frozen=True)
class Quarantined:
    file: str
    reason: str
    line: int | None = None
    column: int | None = None

    @classmethod
    def from_error(cls, file: str, error: RecordingError) -> Quarantined:
        return cls(file=file, reason=str(error), line=error.line, column=error.column)


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    ignored: list[Quarantined] = field(default_factory=list)  # known files that are not read
    seen: int = 0

    @property
    def reconciled(self) -> bool:
        return self.seen == len(self.ingested) + len(self.quarantined) + len(self.ignored)

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "ingested": self.ingested,
            "quarantined": [asdict(q) for q in self.quarantined],
            "ignored": [{"file": q.file, "reason": q.reason} for q in self.ignored],
            "reconciled": self.reconciled,
        }


@dataclass(frozen=True)
class RunFiles:
    """One run folder: its description, its recordings in time order, and its other files."""

    directory: Path
    info: RunInfo  # with its format and bearing count filled in
    recordings: list[tuple[datetime, Path]]
    rejected: list[tuple[Path, str]]  # quarantined without reading, with the reason
    ignored: list[tuple[Path, str]]  # files the format knows but does not read, and why
    n_channels: int | None  # the channel count most of its recordings have

    @property
    def format(self) -> RecordingFormat:
        return get_format(self.info.format)

    @property
    def channel_map(self) -> dict[int, list[int]] | None:
        if self.n_channels is None:
            return None
        return bearing_channels(self.n_channels, self.info.n_bearings)

    @property
    def files(self) -> int:
        return len(self.recordings) + len(self.rejected) + len(self.ignored)


def _first_line(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return without_bom(fh.readline(1 << 16))
    except OSError:
        return b""


def _index(directory: Path, names: list[str], info: RunInfo, fmt: RecordingFormat) -> RunFiles:
    """Sort a run's files into recordings (dated), rejected and ignored ones."""
    info = replace(info, format=fmt.name, n_bearings=info.n_bearings or fmt.bearings)
    try:
        check_failed_bearings(info.failures, info.n_bearings)
    except ValueError as exc:
        raise ValueError(
            f"{directory / RUN_METADATA_FILE}: {exc} (n_bearings, or {fmt.name}'s default)"
        ) from None
    candidates, rejected, ignored = [], [], []
    for name in names:
        if fmt.is_recording(name):
            candidates.append(name)
        elif (use := fmt.companion_use(name)) is not None:
            ignored.append((directory / name, use))
        else:
            rejected.append((directory / name, fmt.misnamed(name)))
    candidates.sort(key=fmt.order)
    first_lines = [_first_line(directory / name) for name in candidates]
    recordings = []
    for name, when in zip(candidates, fmt.times(candidates, first_lines, info), strict=True):
        if isinstance(when, str):
            rejected.append((directory / name, when))
        else:
            recordings.append((when, directory / name))
    recordings.sort(key=lambda r: r[0])
    counts = [c for line in first_lines if (c := fmt.channel_count(line)) is not None]
    n_channels = statistics.mode(counts) if counts else None
    return RunFiles(directory, info, recordings, rejected, ignored, n_channels)


# run.json's start and end may be written to the minute by hand; the recordings' own clock
# is to the second.
_RUN_TIME_SLACK = timedelta(minutes=1)


def outside_run(when: datetime, info: RunInfo) -> str | None:
    """Why a recording dated ``when`` cannot be labelled as part of the run ``info`` describes,
    if so: its age or remaining life would be negative."""
    if info.start is not None and when < info.start - _RUN_TIME_SLACK:
        return f"dated before the run's start {info.start.isoformat()} in {RUN_METADATA_FILE}"
    if info.end is not None and when > info.end + _RUN_TIME_SLACK:
        return f"dated after the run's end {info.end.isoformat()} in {RUN_METADATA_FILE}"
    return None


def _run_info(directory: Path) -> RunInfo:
    info = load_run_info(directory)
    if info.format is not None:
        try:
            get_format(info.format)
        except ValueError as exc:
            raise ValueError(f"{directory / RUN_METADATA_FILE}: {exc}") from None
    return info


def _run_files(directory: Path, names: list[str]) -> RunFiles | None:
    """The run in a folder; None if the folder holds no recordings of a known format."""
    info = _run_info(directory)
    fmt = get_format(info.format) if info.format else detect_format(names)
    if fmt is None:
        return None
    return _index(directory, names, info, fmt)


def single_file_run(path: Path) -> RunFiles:
    """One file as a run of its own (described by its folder's run.json, as a whole run)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    info = _run_info(path.parent)
    fmt = get_format(info.format) if info.format else detect_format([path.name])
    if fmt is None:
        raise ValueError(
            f"{path}: matches no known recording format (expected {expected_formats()})"
        )
    return _index(path.parent, [path.name], info, fmt)


def run_up_to(path: Path) -> RunFiles:
    """The run of a recording's folder as it stood when the recording was made: the folder's
    recordings up to this one by time, for it to be scored from those before it (its bearing's
    baseline and history, its age from the run's first recording). A file that is not a dated
    recording of that run is the file alone, with its reason."""
    alone = single_file_run(path)
    if not alone.recordings:
        return alone
    directory = Path(path).parent
    run = _index(directory, _visible_files(directory), alone.info, alone.format)
    # Its time in the run, not alone: a time-of-day clock rolls over midnight by the run.
    when = next((w for w, p in run.recordings if p == directory / Path(path).name), None)
    if when is None:  # dated alone but not beside the others: its own answer says why
        return alone
    before = [(w, p) for w, p in run.recordings if w <= when]
    return replace(run, recordings=before, rejected=[], ignored=[])


def date_run(directory: Path, info: RunInfo) -> RunInfo:
    """``info`` completed from the run's recordings: its format, bearing count, ``start`` (the
    first recording) and, if it names failures, ``end`` (the last recording: the run ended in
    that failure). For a format whose files hold only the time of day, ``info.start`` gives
    the date."""
    directory = Path(directory)
    names = _visible_files(directory)
    fmt = get_format(info.format) if info.format else detect_format(names)
    if fmt is None:
        raise ValueError(
            f"{directory}: no file matches a known recording format (expected {expected_formats()})"
        )
    run = _index(directory, names, info, fmt)
    if not run.recordings:
        why = f": {run.rejected[0][1]}" if run.rejected else ""
        raise ValueError(f"{directory}: no {fmt.name} recording could be dated{why}")
    first, last = run.recordings[0][0], run.recordings[-1][0]
    return replace(run.info, start=first, end=last if info.failures else None)


def _visible_files(directory: Path) -> list[str]:
    return sorted(
        n.name
        for n in directory.iterdir()
        if not n.name.startswith(".") and n.name != RUN_METADATA_FILE and n.is_file()
    )


def _check_channels(run: RunFiles) -> None:
    """ValueError naming the run folder if its channels cannot be split over its bearings
    (a single file is not checked here: its own faults are reported first)."""
    if run.n_channels is None:
        return
    try:
        bearing_channels(run.n_channels, run.info.n_bearings)
    except ValueError as exc:  # say which run, and where its bearing count comes from
        raise ValueError(
            f"{run.directory}: {exc} (n_bearings in {RUN_METADATA_FILE}, or the format's default)"
        ) from None


def discover_runs(data_dir: Path, *, unreadable: list[Quarantined] | None = None) -> list[RunFiles]:
    """Every run below ``data_dir`` (the folder itself, if it holds recordings, is one).

    Raises ValueError naming a file when there are files but none of them is a recording of
    a known format, and naming the folder when there are no files at all (a landing folder
    before its first recording included: nothing to train on is an error, not an empty
    table). Nothing is skipped silently: the files of a folder that matches no known format
    beside other runs (e.g. a run whose files are named otherwise), and folders that cannot
    be listed, are appended to ``unreadable`` with the reason if that list is given, else
    they raise ``ValueError`` and ``OSError``. Linked folders are followed, each once.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder")
    errors: list[OSError] = []
    runs, unknown, visited = [], [], set()
    for root, dirs, _ in os.walk(data_dir, onerror=errors.append, followlinks=True):
        if (real := os.path.realpath(root)) in visited:  # a link back up the tree
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        directory = Path(root)
        names = _visible_files(directory)
        if not names:
            continue
        if run := _run_files(directory, names):
            _check_channels(run)
            runs.append(run)
        else:
            unknown.extend(directory / name for name in names)
    if not runs and unknown:
        raise ValueError(
            f"{unknown[0]}: matches no known recording format, and no other file under "
            f"{data_dir} does (expected {expected_formats()})"
        )
    if not runs and not errors:  # a mistyped or empty folder is not an empty success
        raise ValueError(
            f"{data_dir}: no recordings in it or below (expected {expected_formats()})"
        )
    names = [r.info.name for r in runs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{data_dir}: several run folders share the run name(s) {dup}")
    found = [  # a folder is marked by its slash
        Quarantined(
            f"{Path(e.filename).relative_to(data_dir)}/", f"cannot read folder: {e.strerror}"
        )
        for e in errors
    ]
    foreign = [
        Quarantined(
            str(path.relative_to(data_dir)),
            f"matches no known recording format (expected {expected_formats()}), nor does any "
            f"file beside it: its folder {path.parent.name}/ is not read as a run",
        )
        for path in unknown
    ]
    if unreadable is not None:
        unreadable.extend(found + foreign)
    elif found:
        raise OSError(
            f"{data_dir}: cannot read " + "; ".join(f"{q.file} ({q.reason})" for q in found)
        )
    elif foreign:
        raise ValueError(f"{data_dir / foreign[0].file}: {foreign[0].reason}")
    return runs


class ClippedSignal(RecordingError):
    """A recording whose signal is flat-topped at the sensor's range. Training cannot use it
    (clipping bends the spectrum); scoring can, since a bearing that saturates its sensor is
    at least as bad as the levels say, near its failure most often (PRONOSTIA Bearing1_1, two
    minutes before its end). It carries the samples for that."""

    def __init__(self, reason: str, data: np.ndarray, **where):
        super().__init__(reason, **where)
        self.data = data

    @property
    def warning(self) -> str:
        """What the answer says beside it when scoring reads it anyway."""
        return f"{self} (scored: its levels are at least those reported)"


def validate_signal(
    data: np.ndarray,
    settings: Settings,
    *,
    expected_rows: int | None = None,
    expected_channels: int | None = None,
) -> None:
    """Raise :class:`RecordingError` unless the samples look like a working accelerometer.

    ``expected_rows`` is the run's samples per recording (default: the setting, IMS's).
    """
    rows, channels = data.shape
    expected_rows = expected_rows or settings.expected_rows
    if rows != expected_rows:
        hint = " (truncated?)" if rows < expected_rows else ""
        raise RecordingError(f"{rows} rows, expected {expected_rows}{hint}")
    if expected_channels is not None and channels != expected_channels:
        raise RecordingError(
            f"{channels} channels, but this run's recordings have {expected_channels}"
        )
    # Each channel's extremes, for the physical range here and for clipping below.
    highs, lows = data.max(axis=0), data.min(axis=0)
    for ch in np.flatnonzero(np.maximum(highs, -lows) > settings.max_abs_sample_g):
        ch = int(ch)
        line = int(np.argmax(np.abs(data[:, ch]) > settings.max_abs_sample_g))
        raise RecordingError(
            f"channel {ch + 1}: sample {data[line, ch]:g} g is outside any physical range "
            f"(beyond {settings.max_abs_sample_g:g} g either way, WEARCAST_MAX_ABS_SAMPLE_G: "
            "a corrupt file, or samples in another unit)",
            line=line + 1,
            column=ch + 1,
        )
    std = data.std(axis=0)
    for ch in np.flatnonzero(std < settings.dead_channel_std_g):
        raise RecordingError(
            f"channel {ch + 1} is dead: standard deviation {std[ch]:.2g} g is below "
            f"{settings.dead_channel_std_g:g} g (sensor off or rig stopped)",
            column=int(ch) + 1,
        )
    run = settings.clip_run_samples
    for ch in range(channels):
        x = data[:, ch]
        for extreme in (highs[ch], lows[ch]):
            pinned = np.flatnonzero(x == extreme)
            # `run` consecutive samples at the extreme: the signal is flat-topped.
            if len(pinned) >= run and np.any(pinned[run - 1 :] - pinned[: 1 - run] == run - 1):
                first = int(pinned[0]) + 1
                raise ClippedSignal(
                    f"channel {ch + 1} is clipped: {run}+ consecutive samples pinned at "
                    f"{extreme:g} g (first at line {first})",
                    data,
                    line=first,
                    column=ch + 1,
                )


def read_samples(
    path: Path,
    rig: Rig,
    settings: Settings,
    *,
    expected_channels: int | None = None,
    content: bytes | None = None,
    problem: str | None = None,
) -> np.ndarray:
    """Read, parse and validate one file of a run recorded on ``rig``: its samples, or
    :class:`RecordingError` with the first fault.

    ``problem`` is why discovery already rejected the file; a file named as a recording is
    still read first, since what is wrong inside it says more (a damaged first line, say).
    """
    path = Path(path)
    fmt = get_format(rig.format)
    if problem is not None and not fmt.is_recording(path.name):
        raise RecordingError(problem)
    if content is None:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise RecordingError(f"cannot read: {exc.strerror}") from None
    data = fmt.parse(content)
    try:
        validate_signal(
            data, settings, expected_rows=rig.samples, expected_channels=expected_channels
        )
    except ClippedSignal:
        if problem is not None:  # what discovery found is the reason, not what scoring forgives
            raise RecordingError(problem) from None
        raise
    if problem is not None:
        raise RecordingError(problem)
    return data


def check_run(
    run: RunFiles, settings: Settings, report: IngestReport, *, relative_to: Path
) -> Iterator[Recording]:
    """Yield the run's valid recordings in time order; record every file in ``report``."""
    rig = resolve_rig(run.info, settings)
    for path, use in run.ignored:
        report.seen += 1
        report.ignored.append(Quarantined(str(path.relative_to(relative_to)), use))
    files = [(path, when, None) for when, path in run.recordings]
    files += [(path, None, why) for path, why in run.rejected]
    for path, when, problem in files:
        report.seen += 1
        name = str(path.relative_to(relative_to))
        try:
            data = read_samples(
                path, rig, settings, expected_channels=run.n_channels, problem=problem
            )
        except RecordingError as exc:
            report.quarantined.append(Quarantined.from_error(name, exc))
            continue
        report.ingested.append(name)
        yield Recording(path, run.info.name, when, data)
