"""Rigs and runs: bearing geometry, defect frequencies, channel maps, each run's description.

A run says what it is in its ``run.json`` (:class:`RunInfo`): its recording format, sampling
rate, shaft speed, load, bearing geometry, dates and failures. What a run leaves out comes from
its format's defaults (:mod:`wearcast.formats`), which for IMS are the global settings and the
Rexnord ZA-2115 of the IMS rig (Qiu et al. 2006). Defect frequencies follow from the geometry
and the shaft speed; nothing here hard-codes them.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

__all__ = [
    "BearingGeometry",
    "DefectFrequencies",
    "Defect",
    "Rig",
    "RunInfo",
    "ZA_2115",
    "IMS_RUNS",
    "RUN_METADATA_FILE",
    "TIMESTAMP_FORMAT",
    "bearing_channels",
    "check_failed_bearings",
    "load_run_info",
    "parse_timestamp",
]

TIMESTAMP_FORMAT = "%Y.%m.%d.%H.%M.%S"
RUN_METADATA_FILE = "run.json"


def parse_timestamp(name: str) -> datetime:
    """The recording time from an IMS file name such as ``2004.02.12.10.32.39`` (some copies
    of the data add ``.txt``)."""
    stem = name[:-4] if name.lower().endswith(".txt") else name
    return datetime.strptime(stem, TIMESTAMP_FORMAT)


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
    UNKNOWN = "unknown"  # failed, part not said (PRONOSTIA: all parts degrade at once)

    @classmethod
    def located(cls) -> list[Defect]:
        """The defects that have a place, hence a characteristic frequency."""
        return [d for d in cls if d is not cls.UNKNOWN]


def bearing_channels(n_channels: int, n_bearings: int) -> dict[int, list[int]]:
    """Channel indices (0-based columns) of each bearing (1-based), channels grouped in order.

    IMS test 1 has two channels (x, y) per bearing, tests 2 and 3 one.
    """
    if n_bearings <= 0 or n_channels % n_bearings:
        raise ValueError(f"{n_channels} channels cannot be split evenly over {n_bearings} bearings")
    per = n_channels // n_bearings
    return {b + 1: list(range(b * per, (b + 1) * per)) for b in range(n_bearings)}


@dataclass(frozen=True)
class Rig:
    """How one run was recorded: everything validation and features depend on."""

    format: str
    sampling_rate_hz: float
    samples: int  # per recording and channel
    shaft_rpm: float
    geometry: BearingGeometry
    envelope_band_hz: tuple[float, float]
    load_n: float | None = None  # radial load: an operating condition, not used by features

    @property
    def nyquist_hz(self) -> float:
        return self.sampling_rate_hz / 2


def _rig_clock(value: datetime) -> datetime:
    # Recordings are dated by the rig's own clock (IMS file names, PRONOSTIA clock columns),
    # which has no zone: an offset could only disagree with them.
    if value.utcoffset() is not None:
        raise ValueError(
            f"{value.isoformat()} has a UTC offset: give the time on the rig's own clock, "
            "as its recordings are dated, without one (e.g. 2010-12-01T09:39:39)"
        )
    return value


RigClockTime = Annotated[datetime, AfterValidator(_rig_clock)]


def check_failed_bearings(failures: Iterable[int], n_bearings: int) -> None:
    """ValueError if ``failures`` name a bearing the run does not have."""
    if beyond := sorted(b for b in failures if b > n_bearings):
        raise ValueError(f"failures name bearing {beyond[0]}, but the run has {n_bearings}")


class _RunDescription(BaseModel):
    """The run.json contract; other fields are allowed and ignored, unless they look like a
    misspelt one of these (``shaft_rmp`` would leave the speed at its default)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1)
    format: str | None = None
    n_bearings: PositiveInt | None = None
    failures: dict[PositiveInt, Defect] = Field(default_factory=dict)
    onsets: dict[PositiveInt, RigClockTime] = Field(default_factory=dict)
    start: RigClockTime | None = None
    end: RigClockTime | None = None
    sampling_rate_hz: PositiveFloat | None = None
    samples: PositiveInt | None = None
    shaft_rpm: PositiveFloat | None = None
    load_n: PositiveFloat | None = None
    n_balls: PositiveInt | None = None
    ball_diameter_mm: PositiveFloat | None = None
    pitch_diameter_mm: PositiveFloat | None = None
    contact_angle_deg: float | None = Field(None, ge=0, lt=90)
    envelope_band_hz: tuple[PositiveFloat, PositiveFloat] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _RunDescription:
        geometry = (self.n_balls, self.ball_diameter_mm, self.pitch_diameter_mm)
        if any(v is not None for v in geometry) and any(v is None for v in geometry):
            raise ValueError(
                "bearing geometry needs n_balls, ball_diameter_mm and pitch_diameter_mm together"
            )
        if self.ball_diameter_mm and self.ball_diameter_mm >= self.pitch_diameter_mm:
            raise ValueError("ball_diameter_mm must be smaller than pitch_diameter_mm")
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.n_bearings:  # else the format's count, known once the run is found
            check_failed_bearings(self.failures, self.n_bearings)
        if set(self.onsets) - set(self.failures):
            raise ValueError("onsets are given only for bearings that failed (see failures)")
        if self.envelope_band_hz and self.envelope_band_hz[0] >= self.envelope_band_hz[1]:
            raise ValueError("envelope_band_hz must be [low, high] with low < high")
        return self


@dataclass(frozen=True)
class RunInfo:
    """What is known about one run to failure (its ``run.json``); enough to label and read it.

    ``failures`` maps a failed bearing to its defect (``unknown`` when the part is not known).
    ``onsets`` is the true start of a failed bearing's degradation where it is known (the
    simulator knows it); labels use it instead of finding an onset in the recordings.
    ``end`` is the failure time; a run without ``end`` (still running, or never failed) labels
    every bearing healthy so far. Rig fields left as None take the format's defaults.
    """

    name: str
    n_bearings: int | None = None
    failures: dict[int, Defect] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    format: str | None = None
    sampling_rate_hz: float | None = None
    samples: int | None = None
    shaft_rpm: float | None = None
    load_n: float | None = None
    geometry: BearingGeometry | None = None
    envelope_band_hz: tuple[float, float] | None = None
    onsets: dict[int, datetime] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The run.json document (fields that are not known are left out)."""
        raw = {
            "name": self.name,
            "n_bearings": self.n_bearings,
            "failures": {str(b): d.value for b, d in self.failures.items()},
            "onsets": {str(b): t.isoformat() for b, t in self.onsets.items()} or None,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            **self.rig_fields(),
        }
        return {k: v for k, v in raw.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def rig_fields(self) -> dict:
        """The run's own rig facts, JSON-safe (None where the format's default applies)."""
        g = self.geometry
        return {
            "format": self.format,
            "sampling_rate_hz": self.sampling_rate_hz,
            "samples": self.samples,
            "shaft_rpm": self.shaft_rpm,
            "load_n": self.load_n,
            "n_balls": g.rollers if g else None,
            "ball_diameter_mm": g.roller_diameter if g else None,
            "pitch_diameter_mm": g.pitch_diameter if g else None,
            "contact_angle_deg": g.contact_angle_deg if g else None,
            "envelope_band_hz": list(self.envelope_band_hz) if self.envelope_band_hz else None,
        }

    @classmethod
    def from_dict(cls, raw: dict, *, where: str = "run metadata") -> RunInfo:
        if not isinstance(raw, dict):
            raise ValueError(
                f"{where}: expected a JSON object of the run's fields, not {raw!r:.40}"
            )
        known = _RunDescription.model_fields
        for key in sorted(set(raw) - set(known)):  # other fields are notes, but not a typo
            if close := difflib.get_close_matches(key, known, n=1, cutoff=0.75):
                raise ValueError(f"{where}: unknown field {key!r}: did you mean {close[0]!r}?")
        try:
            d = _RunDescription.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'run'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ValueError(f"{where}: {problems}") from None
        geometry = None
        if d.n_balls is not None:
            geometry = BearingGeometry(
                rollers=d.n_balls,
                pitch_diameter=d.pitch_diameter_mm,
                roller_diameter=d.ball_diameter_mm,
                contact_angle_deg=d.contact_angle_deg or 0.0,
            )
        return cls(
            name=d.name,
            n_bearings=d.n_bearings,
            failures=dict(d.failures),
            onsets=dict(d.onsets),
            start=d.start,
            end=d.end,
            format=d.format,
            sampling_rate_hz=d.sampling_rate_hz,
            samples=d.samples,
            shaft_rpm=d.shaft_rpm,
            load_n=d.load_n,
            geometry=geometry,
            envelope_band_hz=d.envelope_band_hz,
        )


# The three IMS experiments: start and end are the first and last recordings as distributed
# (the failure at the end). Test 3's files sit in a folder called 4th_test in the original
# archive, so both names map to it; the NASA documentation gives 2004-04-04 19:01:57 as its
# end, but its 6,324 recordings run on to 2004-04-18 02:42:55.
_TEST3 = RunInfo(
    name="3rd_test",
    failures={3: Defect.OUTER_RACE},
    start=datetime(2004, 3, 4, 9, 27, 46),
    end=datetime(2004, 4, 18, 2, 42, 55),
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
    """A run's metadata: its ``run.json`` if present (named after the folder unless it says
    ``name``), else a known IMS run by folder name, else an unlabelled run (every bearing
    healthy so far)."""
    meta = run_dir / RUN_METADATA_FILE
    if meta.is_file():
        try:
            raw = json.loads(meta.read_text(encoding="utf-8-sig"))  # a Windows editor's BOM
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{meta}: not valid JSON ({exc})") from exc
        if isinstance(raw, dict):  # else refused, saying what run.json must be
            raw = {"name": run_dir.name, **raw}
        return RunInfo.from_dict(raw, where=str(meta))
    for part in (run_dir.name, run_dir.parent.name):
        if part in IMS_RUNS:
            return IMS_RUNS[part]
    return RunInfo(name=run_dir.name)
