"""Recording formats: one module per format, each a :class:`RecordingFormat`.

A run folder's format is its run.json's ``format``, else the format most of its files' names
belong to. A new format is one new module with a :class:`RecordingFormat` subclass, listed in
:data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Iterable

from wearcast.config import Settings
from wearcast.formats.base import (
    RecordingError,
    RecordingFormat,
    parse_table,
    refuse_binary,
    without_bom,
)
from wearcast.formats.ims import Ims
from wearcast.formats.pronostia import Pronostia
from wearcast.rig import Rig, RunInfo

__all__ = [
    "FORMATS",
    "RecordingError",
    "RecordingFormat",
    "detect_format",
    "expected_formats",
    "get_format",
    "parse_table",
    "refuse_binary",
    "resolve_rig",
    "without_bom",
]

FORMATS: dict[str, RecordingFormat] = {f.name: f for f in (Ims(), Pronostia())}
# Without a format given, the envelope band's top stays this far below Nyquist.
_ENVELOPE_TOP_OF_NYQUIST = 0.95


def get_format(name: str) -> RecordingFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown recording format {name!r} (known: {', '.join(FORMATS)})"
        ) from None


def detect_format(names: Iterable[str]) -> RecordingFormat | None:
    """The format most of these file names are recordings of; None if none."""
    names = list(names)
    counts = {f: sum(f.is_recording(n) for n in names) for f in FORMATS.values()}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def expected_formats() -> str:
    """Every known format and what its recordings look like, for messages."""
    return "; ".join(f"{f.name}: {f.expected}" for f in FORMATS.values())


def resolve_rig(info: RunInfo, settings: Settings) -> Rig:
    """The run's rig: what its run.json says, the rest from its format's defaults.

    The default envelope band is the setting's, its top lowered below the run's Nyquist
    frequency if the run samples more slowly than the band needs.
    """
    defaults = get_format(info.format or Ims.name).defaults(settings)
    rate = info.sampling_rate_hz or defaults.sampling_rate_hz
    nyquist = rate / 2
    low, high = info.envelope_band_hz or (
        defaults.envelope_band_hz[0],
        min(defaults.envelope_band_hz[1], _ENVELOPE_TOP_OF_NYQUIST * nyquist),
    )
    if not 0 < low < high <= nyquist:
        raise ValueError(
            f"run {info.name}: envelope band {low:g}-{high:g} Hz must lie between 0 and the "
            f"Nyquist frequency ({nyquist:g} Hz); set envelope_band_hz in its run.json"
        )
    return Rig(
        format=defaults.format,
        sampling_rate_hz=rate,
        samples=info.samples or defaults.samples,
        shaft_rpm=info.shaft_rpm or defaults.shaft_rpm,
        geometry=info.geometry or defaults.geometry,
        envelope_band_hz=(low, high),
        load_n=info.load_n or defaults.load_n,
    )
