"""Read and validate IMS recordings; quarantine the bad ones with the reason.

A data folder holds one or more runs. A run is a folder holding timestamp-named recordings
(``2004.02.12.10.32.39``), optionally with a ``run.json`` describing it (:mod:`wearcast.rig`).
Every other regular file in a run folder is an input too, and is quarantined if it is not a
valid recording: nothing in a run folder is silently skipped. Inputs are never moved or
changed; "quarantined" means listed, with the reason, in the quarantine report.

Reading takes a fast path (pandas' C parser) and, only when that path finds something wrong,
a slow line-by-line pass that says exactly which line and column is at fault.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.config import Settings
from wearcast.rig import (
    RUN_METADATA_FILE,
    RunInfo,
    bearing_channels,
    load_run_info,
    parse_timestamp,
)

__all__ = [
    "Recording",
    "RecordingError",
    "Quarantined",
    "IngestReport",
    "RunFiles",
    "discover_runs",
    "single_file_run",
    "parse_recording",
    "validate_signal",
    "read_recording",
    "check_run",
]


class RecordingError(ValueError):
    """A recording that cannot be used, with where the fault is."""

    def __init__(self, reason: str, *, line: int | None = None, column: int | None = None):
        self.reason = reason
        self.line = line
        self.column = column
        where = ", ".join(
            f"{k} {v}" for k, v in (("line", line), ("column", column)) if v is not None
        )
        super().__init__(f"{where}: {reason}" if where else reason)


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
    seen: int = 0

    @property
    def reconciled(self) -> bool:
        return self.seen == len(self.ingested) + len(self.quarantined)

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "ingested": self.ingested,
            "quarantined": [asdict(q) for q in self.quarantined],
            "reconciled": self.reconciled,
        }


@dataclass(frozen=True)
class RunFiles:
    """One run folder: its metadata, its recordings in time order, and its other files."""

    directory: Path
    info: RunInfo
    recordings: list[tuple[datetime, Path]]
    misnamed: list[Path]
    n_channels: int | None  # the channel count most of its recordings have

    @property
    def channel_map(self) -> dict[int, list[int]] | None:
        if self.n_channels is None:
            return None
        return bearing_channels(self.n_channels, self.info.n_bearings)


def _first_line_columns(path: Path) -> int | None:
    try:
        with path.open("rb") as fh:
            line = fh.readline(1 << 16)
    except OSError:
        return None
    return line.count(b"\t") + 1 if line.strip() else None


def _run_files(directory: Path, names: Iterable[str]) -> RunFiles | None:
    recordings, misnamed = [], []
    for name in sorted(names):
        path = directory / name
        if name.startswith(".") or name == RUN_METADATA_FILE or not path.is_file():
            continue
        try:
            recordings.append((parse_timestamp(name), path))
        except ValueError:
            misnamed.append(path)
    if not recordings:
        return None
    recordings.sort()
    counts = [c for _, p in recordings if (c := _first_line_columns(p)) is not None]
    n_channels = statistics.mode(counts) if counts else None
    return RunFiles(directory, load_run_info(directory), recordings, misnamed, n_channels)


def single_file_run(path: Path) -> RunFiles:
    """One file as a run of its own (metadata from its folder, as for a whole run)."""
    path = Path(path)
    try:
        recordings, misnamed = [(parse_timestamp(path.name), path)], []
    except ValueError:
        recordings, misnamed = [], [path]
    return RunFiles(
        path.parent, load_run_info(path.parent), recordings, misnamed, _first_line_columns(path)
    )


def discover_runs(data_dir: Path) -> list[RunFiles]:
    """Every run below ``data_dir`` (the folder itself, if it holds recordings, is one)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder")
    runs = []
    for root, dirs, files in os.walk(data_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if run := _run_files(Path(root), files):
            runs.append(run)
    names = [r.info.name for r in runs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{data_dir}: several run folders share the run name(s) {dup}")
    return runs


def _diagnose(text: str) -> RecordingError:
    """The first fault in a text the fast parser rejected, with its line and column."""
    expected = None
    for number, line in enumerate(text.splitlines(), start=1):
        cells = line.split("\t")
        if expected is None:
            expected = len(cells)
        if len(cells) != expected:
            return RecordingError(
                f"{len(cells)} values, expected {expected} as on line 1", line=number
            )
        for col, cell in enumerate(cells, start=1):
            try:
                value = float(cell)
            except ValueError:
                return RecordingError(
                    f"{cell.strip()[:40]!r} is not a number", line=number, column=col
                )
            if not math.isfinite(value):
                return RecordingError(
                    f"{cell.strip()} is not a finite number", line=number, column=col
                )
    return RecordingError("unreadable table of numbers")


def parse_recording(content: bytes) -> np.ndarray:
    """The samples of one IMS text recording, as a (samples, channels) float array."""
    if not content or content.isspace():
        raise RecordingError("empty file")
    if (nul := content.find(b"\x00")) >= 0:
        raise RecordingError(f"binary content (NUL byte at offset {nul}), not a text recording")
    if not content.isascii():  # checked without decoding: this runs for every recording
        offset = next(i for i, byte in enumerate(content) if byte > 127)
        raise RecordingError(
            f"binary content (byte 0x{content[offset]:02x} at offset {offset}), "
            "not a text recording"
        )
    try:
        frame = pd.read_csv(
            io.BytesIO(content), sep="\t", header=None, dtype=np.float64, engine="c"
        )
    except (ValueError, pd.errors.ParserError):
        raise _diagnose(content.decode("ascii")) from None
    data = frame.to_numpy()
    if not np.isfinite(data).all():
        raise _diagnose(content.decode("ascii"))
    return data


def validate_signal(
    data: np.ndarray, settings: Settings, *, expected_channels: int | None = None
) -> None:
    """Raise :class:`RecordingError` unless the samples look like a working accelerometer."""
    rows, channels = data.shape
    if rows != settings.expected_rows:
        hint = " (truncated?)" if rows < settings.expected_rows else ""
        raise RecordingError(f"{rows} rows, expected {settings.expected_rows}{hint}")
    if expected_channels is not None and channels != expected_channels:
        raise RecordingError(
            f"{channels} channels, but this run's recordings have {expected_channels}"
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
        for extreme in (x.max(), x.min()):
            pinned = np.flatnonzero(x == extreme)
            # `run` consecutive samples at the extreme: the signal is flat-topped.
            if len(pinned) >= run and np.any(pinned[run - 1 :] - pinned[: 1 - run] == run - 1):
                first = int(pinned[0]) + 1
                raise RecordingError(
                    f"channel {ch + 1} is clipped: {run}+ consecutive samples pinned at "
                    f"{extreme:g} g (first at line {first})",
                    line=first,
                    column=ch + 1,
                )


def read_recording(
    path: Path,
    settings: Settings,
    *,
    run: str | None = None,
    expected_channels: int | None = None,
    content: bytes | None = None,
) -> Recording:
    """Read, parse and validate one file; raise :class:`RecordingError` if it is unusable."""
    path = Path(path)
    try:
        timestamp = parse_timestamp(path.name)
    except ValueError:
        raise RecordingError(
            "file name is not a recording timestamp (YYYY.MM.DD.hh.mm.ss)"
        ) from None
    if content is None:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise RecordingError(f"cannot read: {exc.strerror}") from None
    data = parse_recording(content)
    validate_signal(data, settings, expected_channels=expected_channels)
    return Recording(path, run or path.parent.name, timestamp, data)


def check_run(
    run: RunFiles, settings: Settings, report: IngestReport, *, relative_to: Path
) -> Iterator[Recording]:
    """Yield the run's valid recordings in time order; record every file in ``report``."""
    for path in run.misnamed:
        report.seen += 1
        report.quarantined.append(
            Quarantined(
                str(path.relative_to(relative_to)),
                "file name is not a recording timestamp (YYYY.MM.DD.hh.mm.ss)",
            )
        )
    for _, path in run.recordings:
        report.seen += 1
        name = str(path.relative_to(relative_to))
        try:
            recording = read_recording(
                path, settings, run=run.info.name, expected_channels=run.n_channels
            )
        except RecordingError as exc:
            report.quarantined.append(Quarantined.from_error(name, exc))
            continue
        report.ingested.append(name)
        yield recording
