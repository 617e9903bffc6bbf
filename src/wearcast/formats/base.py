"""What every recording format provides, and the parsing they share.

A format knows its files by name, reads a recording's samples, says how many channels a file
has from its first line, dates its recordings, and gives the rig a run of its kind has unless
the run's ``run.json`` says otherwise.
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from datetime import datetime
from typing import ClassVar

import numpy as np
import pandas as pd

from wearcast.config import Settings
from wearcast.rig import Rig, RunInfo

__all__ = ["RecordingError", "RecordingFormat", "parse_table", "refuse_binary", "without_bom"]


class RecordingError(ValueError):
    """A recording that cannot be used, with where the fault is."""

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
        file: str | None = None,
    ):
        self.reason = reason
        self.line = line
        self.column = column
        where = ", ".join(
            ([file] if file else [])
            + [f"{k} {v}" for k, v in (("line", line), ("column", column)) if v is not None]
        )
        super().__init__(f"{where}: {reason}" if where else reason)


class RecordingFormat(ABC):
    """One recording format. Subclasses are stateless; :data:`wearcast.formats.FORMATS` holds
    one instance of each."""

    name: ClassVar[str]  # as written in run.json's "format"
    expected: ClassVar[str]  # what its recordings look like, for messages
    bearings: ClassVar[int]  # bearings per run unless run.json says
    named_by_time: ClassVar[bool] = False  # whether a recording's file name is its time

    @abstractmethod
    def is_recording(self, name: str) -> bool:
        """Whether a file name is one of this format's recordings."""

    def companion_use(self, name: str) -> str | None:
        """For a file this format knows but does not read as a recording, what becomes of it
        (e.g. "ignored: ..."); None for a file it does not know."""
        return None

    def order(self, name: str) -> object:
        """Sort key of a recording's file name: recordings in time order."""
        return name

    @abstractmethod
    def defaults(self, settings: Settings) -> Rig:
        """The rig of a run in this format that says nothing about its own."""

    @abstractmethod
    def channel_count(self, first_line: bytes) -> int | None:
        """Accelerometer channels in a recording, from its first line (None if unreadable)."""

    @abstractmethod
    def times(
        self, names: list[str], first_lines: list[bytes], info: RunInfo
    ) -> list[datetime | str]:
        """Each recording's time, recordings in :meth:`order`; where a time cannot be known,
        the reason instead."""

    @abstractmethod
    def parse(self, content: bytes) -> np.ndarray:
        """The accelerations of one recording, (samples, channels) in g; raise
        :class:`RecordingError` saying what and where."""

    def misnamed(self, name: str) -> str:
        """Why a file in a run of this format is not one of its recordings."""
        return f"not a {self.name} recording: expected {self.expected}"


def _diagnose(text: str, sep: str) -> RecordingError:
    """The first fault in a text the fast parser rejected, with its line and column."""
    expected = None
    for number, line in enumerate(text.splitlines(), start=1):
        cells = line.split(sep)
        if expected is None:
            expected = len(cells)
        if len(cells) != expected:
            return RecordingError(
                f"{len(cells)} values, expected {expected} as on line 1", line=number
            )
        for col, cell in enumerate(cells, start=1):
            try:
                if "_" in cell:  # Python's float reads 1_0 as 10; the table parser does not
                    raise ValueError(cell)
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


def refuse_binary(content: bytes) -> None:
    """:class:`RecordingError` for content that is not ASCII text (a leading UTF-8 byte-order
    mark aside), saying where."""
    text = without_bom(content)
    skip = len(content) - len(text)
    if (nul := content.find(b"\x00")) >= 0:
        raise RecordingError(f"binary content (NUL byte at offset {nul}), not a text recording")
    if not text.isascii():  # checked without decoding: this runs for every recording
        offset = next(i for i, byte in enumerate(content) if byte > 127 and i >= skip)
        raise RecordingError(
            f"binary content (byte 0x{content[offset]:02x} at offset {offset}), "
            "not a text recording"
        )


_UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(content: bytes) -> bytes:
    """``content`` without the UTF-8 byte-order mark some Windows editors put first."""
    return content[len(_UTF8_BOM) :] if content.startswith(_UTF8_BOM) else content


def parse_table(content: bytes, sep: str) -> np.ndarray:
    """A text table of numbers without header, as a float array (rows, columns).

    A fast path (pandas' C parser) and, only when it finds something wrong, a slow line-by-line
    pass that says exactly which line and column is at fault.
    """
    refuse_binary(content)
    content = without_bom(content)
    if not content or content.isspace():
        raise RecordingError("empty file")
    try:
        frame = pd.read_csv(io.BytesIO(content), sep=sep, header=None, dtype=np.float64, engine="c")
    except (ValueError, pd.errors.ParserError):
        raise _diagnose(content.decode("ascii"), sep) from None
    data = frame.to_numpy()
    first = content.split(b"\n", 1)[0].rstrip(b"\r ")
    if data.shape[1] > 1 and first.endswith(sep.encode()) and np.isnan(data[:, -1]).all():
        data = data[:, :-1]  # a separator ending every line (some exports) ends no column
    if not np.isfinite(data).all():
        raise _diagnose(content.decode("ascii"), sep)
    return data
