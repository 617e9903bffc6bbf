"""The IMS test rig: bearing geometry, defect frequencies, channel maps and the known runs.

Four Rexnord ZA-2115 double-row bearings on one shaft at 2000 rpm (Qiu et al. 2006). Defect
frequencies follow from the geometry and the shaft speed; nothing here hard-codes them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

__all__ = [
    "BearingGeometry",
    "DefectFrequencies",
    "Defect",
    "RunInfo",
    "ZA_2115",
    "IMS_RUNS",
    "RUN_METADATA_FILE",
    "TIMESTAMP_FORMAT",
    "bearing_channels",
    "load_run_info",
    "parse_timestamp",
]

TIMESTAMP_FORMAT = "%Y.%m.%d.%H.%M.%S"
RUN_METADATA_FILE = "run.json"


def parse_timestamp(name: str) -> datetime:
    """The recording time from an IMS file name such as ``2004.02.12.10.32.39``."""
    return datetime.strptime(name, TIMESTAMP_FORMAT)


@dataclass(frozen=True)
class DefectFrequencies:
    """Characteristic defect frequencies in Hz."""

    bpfo: float  # ball pass, outer race
    bpfi: float  # ball pass, inner race
    bsf: float  # ball (roller) spin
    ftf: float  # fundamental train (cage)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class BearingGeometry:
    rollers: int
    pitch_diameter: float
    roller_diameter: float
    contact_angle_deg: float

    def defect_frequencies(self, shaft_hz: float) -> DefectFrequencies:
        ratio = (
            self.roller_diameter
            / self.pitch_diameter
            * math.cos(math.radians(self.contact_angle_deg))
        )
        return DefectFrequencies(
            bpfo=self.rollers * shaft_hz / 2 * (1 - ratio),
            bpfi=self.rollers * shaft_hz / 2 * (1 + ratio),
            bsf=self.pitch_diameter / (2 * self.roller_diameter) * shaft_hz * (1 - ratio**2),
            ftf=shaft_hz / 2 * (1 - ratio),
        )


# Rexnord ZA-2115: 16 rollers per row, inches.
ZA_2115 = BearingGeometry(
    rollers=16, pitch_diameter=2.815, roller_diameter=0.331, contact_angle_deg=15.17
)


class Defect(StrEnum):
    OUTER_RACE = "outer"
    INNER_RACE = "inner"
    ROLLING_ELEMENT = "rolling"


def bearing_channels(n_channels: int, n_bearings: int) -> dict[int, list[int]]:
    """Channel indices (0-based columns) of each bearing (1-based), channels grouped in order.

    IMS test 1 has two channels (x, y) per bearing, tests 2 and 3 one.
    """
    if n_bearings <= 0 or n_channels % n_bearings:
        raise ValueError(f"{n_channels} channels cannot be split evenly over {n_bearings} bearings")
    per = n_channels // n_bearings
    return {b + 1: list(range(b * per, (b + 1) * per)) for b in range(n_bearings)}


@dataclass(frozen=True)
class RunInfo:
    """What is known about one run to failure; enough to label its recordings.

    ``failures`` maps a failed bearing to its defect. ``end`` is the failure time; a run with
    ``end`` unknown (still running, or never failed) labels every bearing healthy-so-far.
    """

    name: str
    n_bearings: int = 4
    failures: dict[int, Defect] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    shaft_rpm: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "n_bearings": self.n_bearings,
                "failures": {str(b): d.value for b, d in self.failures.items()},
                "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None,
                "shaft_rpm": self.shaft_rpm,
            },
            indent=2,
        )

    @classmethod
    def from_dict(cls, raw: dict, *, where: str = "run metadata") -> RunInfo:
        try:
            return cls(
                name=str(raw["name"]),
                n_bearings=int(raw.get("n_bearings", 4)),
                failures={int(b): Defect(d) for b, d in (raw.get("failures") or {}).items()},
                start=datetime.fromisoformat(raw["start"]) if raw.get("start") else None,
                end=datetime.fromisoformat(raw["end"]) if raw.get("end") else None,
                shaft_rpm=float(raw["shaft_rpm"]) if raw.get("shaft_rpm") else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from exc


# The three IMS experiments, from the NASA/IMS documentation. Test 3's files sit in a folder
# called 4th_test in the original archive, so both names map to it.
_TEST3 = RunInfo(
    name="3rd_test",
    failures={3: Defect.OUTER_RACE},
    start=datetime(2004, 3, 4, 9, 27, 46),
    end=datetime(2004, 4, 4, 19, 1, 57),
)
IMS_RUNS: dict[str, RunInfo] = {
    "1st_test": RunInfo(
        name="1st_test",
        failures={3: Defect.INNER_RACE, 4: Defect.ROLLING_ELEMENT},
        start=datetime(2003, 10, 22, 12, 6, 24),
        end=datetime(2003, 11, 25, 23, 39, 56),
    ),
    "2nd_test": RunInfo(
        name="2nd_test",
        failures={1: Defect.OUTER_RACE},
        start=datetime(2004, 2, 12, 10, 32, 39),
        end=datetime(2004, 2, 19, 6, 22, 39),
    ),
    "3rd_test": _TEST3,
    "4th_test": _TEST3,
}


def load_run_info(run_dir: Path) -> RunInfo:
    """A run's metadata: its ``run.json`` if present, else a known IMS run by folder name,
    else an unlabelled run (every bearing healthy so far)."""
    meta = run_dir / RUN_METADATA_FILE
    if meta.is_file():
        try:
            raw = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta}: not valid JSON ({exc})") from exc
        return RunInfo.from_dict(raw, where=str(meta))
    for part in (run_dir.name, run_dir.parent.name):
        if part in IMS_RUNS:
            return IMS_RUNS[part]
    return RunInfo(name=run_dir.name)
