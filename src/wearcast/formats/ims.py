"""NASA/IMS text recordings: one file per recording, named by its time
(``2004.02.12.10.32.39``), tab-separated, one column per accelerometer channel, in g.

Without a run.json a run is the IMS rig: four Rexnord ZA-2115 bearings, sampling rate, shaft
speed and samples per recording from the global settings.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from wearcast.config import Settings
from wearcast.formats.base import RecordingFormat, parse_table
from wearcast.rig import ZA_2115, Rig, RunInfo, parse_timestamp

__all__ = ["Ims", "parse_recording"]


def parse_recording(content: bytes) -> np.ndarray:
    """The samples of one IMS text recording, as a (samples, channels) float array."""
    return parse_table(content, "\t")


class Ims(RecordingFormat):
    name = "ims"
    expected = "files named by their time, YYYY.MM.DD.hh.mm.ss, tab-separated columns of g"
    bearings = 4
    named_by_time = True

    def is_recording(self, name: str) -> bool:
        try:
            parse_timestamp(name)
        except ValueError:
            return False
        return True

    def misnamed(self, name: str) -> str:
        return "file name is not a recording timestamp (YYYY.MM.DD.hh.mm.ss)"

    def defaults(self, settings: Settings) -> Rig:
        return Rig(
            format=self.name,
            sampling_rate_hz=settings.sampling_rate_hz,
            samples=settings.expected_rows,
            shaft_rpm=settings.shaft_rpm,
            geometry=ZA_2115,
            envelope_band_hz=settings.envelope_band_hz,
            load_n=6000 * 4.4482216,  # 6000 lbf
        )

    def channel_count(self, first_line: bytes) -> int | None:
        # A tab ending the line (some exports) ends no column.
        line = first_line.rstrip(b"\r\n ").removesuffix(b"\t")
        return line.count(b"\t") + 1 if line.strip() else None

    def times(
        self, names: list[str], first_lines: list[bytes], info: RunInfo
    ) -> list[datetime | str]:
        return [parse_timestamp(n) for n in names]

    def parse(self, content: bytes) -> np.ndarray:
        return parse_recording(content)
