"""PRONOSTIA (FEMTO-ST, IEEE PHM 2012 challenge) snapshots: ``acc_NNNNN.csv``, numbered in time
order, 2560 rows at 25.6 kHz, six columns without header: hour, minute, second, microsecond
(sometimes in exponent notation), horizontal and vertical acceleration in g; separated by ``,``
or, in some copies, ``;``.

The files hold only the time of day: a recording's time is the run's ``start`` date plus its
first row's clock (to the second), a day later each time the clock passes midnight; a
recording whose clock is not after the previous one's (the numbering and the clock disagree)
is quarantined.
``temp_NNNNN.csv`` (outer-race temperature, one file a minute) are recognised and ignored: not
every run has them, so a feature made from them would be missing for the others.

Without a run.json a run is the documented platform: one bearing of 13 balls of 3.5 mm on a
25.6 mm pitch diameter, at operating condition 1 (1800 rpm, 4000 N).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

import numpy as np

from wearcast.config import Settings
from wearcast.formats.base import RecordingError, RecordingFormat, parse_table
from wearcast.rig import BearingGeometry, Rig, RunInfo

__all__ = ["PRONOSTIA_BEARING", "Pronostia"]

PRONOSTIA_BEARING = BearingGeometry(
    rollers=13, pitch_diameter=25.6, roller_diameter=3.5, contact_angle_deg=0.0
)
# Copied through other file systems the names may come upper-case.
_RECORDING = re.compile(r"acc_(\d+)\.csv", re.IGNORECASE)
_TEMPERATURE = re.compile(r"temp_\d+\.csv", re.IGNORECASE)
_COLUMNS = ("hour", "minute", "second", "microsecond", "horizontal g", "vertical g")
# Inclusive upper limits: exponent notation with 5 digits writes 999,995 us and up as 1e+06.
_CLOCK_LIMITS = ((0, 23), (0, 59), (0, 59), (0, 1_000_000))
# A clock more than this before the previous recording's has passed midnight.
_ROLLOVER = timedelta(hours=12)


def _separator(line: bytes) -> str:
    return ";" if b";" in line else ","


def _clock(first_line: bytes) -> time | None:
    """The time of day of a snapshot's first sample, to the second (as the table keeps it)."""
    cells = first_line.split(_separator(first_line).encode())
    try:
        h, m, s, _ = (float(c) for c in cells[:4])
        return time(int(h), int(m), int(s))
    except ValueError:  # also a short line, or a value out of range
        return None


class Pronostia(RecordingFormat):
    name = "pronostia"
    expected = (
        "acc_NNNNN.csv, six columns (hour, minute, second, microsecond, horizontal g, "
        "vertical g) separated by ',' or ';'"
    )
    bearings = 1

    def is_recording(self, name: str) -> bool:
        return _RECORDING.fullmatch(name) is not None

    def companion_use(self, name: str) -> str | None:
        if _TEMPERATURE.fullmatch(name):
            return "ignored: temperature log (not every run has one, so it is not a feature)"
        return None

    def order(self, name: str) -> object:
        return int(_RECORDING.fullmatch(name).group(1))

    def defaults(self, settings: Settings) -> Rig:
        return Rig(
            format=self.name,
            sampling_rate_hz=25_600.0,
            samples=2560,
            shaft_rpm=1800.0,
            load_n=4000.0,
            geometry=PRONOSTIA_BEARING,
            envelope_band_hz=settings.envelope_band_hz,
        )

    def channel_count(self, first_line: bytes) -> int | None:
        sep = _separator(first_line).encode()
        cells = first_line.strip().removesuffix(sep).split(sep)  # a trailing one ends no column
        return len(cells) - 4 if len(cells) > 4 else None

    def times(
        self, names: list[str], first_lines: list[bytes], info: RunInfo
    ) -> list[datetime | str]:
        if info.start is None:
            why = (
                "PRONOSTIA files hold only the time of day: the run's run.json needs "
                '"start" (the date and time of the first recording)'
            )
            return [why] * len(names)
        previous, out = None, []
        for line in first_lines:
            clock = _clock(line)
            if clock is None:
                out.append("no clock (hour, minute, second, microsecond) on its first line")
                continue
            after = previous or info.start
            when = datetime.combine(after.date(), clock)
            while when < after - _ROLLOVER:
                when += timedelta(days=1)
            if previous is not None and when <= previous:
                out.append(
                    f"its first line's clock {clock:%H:%M:%S} is not after the previous "
                    f"recording's ({previous:%Y-%m-%d %H:%M:%S}): the file numbering and the "
                    "clock disagree"
                )
                continue
            out.append(when)
            previous = when
        return out

    def parse(self, content: bytes) -> np.ndarray:
        first = content[: content.find(b"\n")]
        table = parse_table(content, _separator(first))
        if table.shape[1] != len(_COLUMNS):
            raise RecordingError(
                f"{table.shape[1]} columns, expected {len(_COLUMNS)} ({', '.join(_COLUMNS)})",
                line=1,  # every line has them: the table parsed
            )
        for col, (low, high) in enumerate(_CLOCK_LIMITS):
            values = table[:, col]
            bad = np.flatnonzero((values < low) | (values > high))
            if len(bad):
                raise RecordingError(
                    f"{_COLUMNS[col]} {values[bad[0]]:g} is out of range [{low}, {high}]",
                    line=int(bad[0]) + 1,
                    column=col + 1,
                )
        return table[:, 4:]
