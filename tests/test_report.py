"""The plot of a scored run (`wearcast predict --plots`)."""

from __future__ import annotations

import struct
from pathlib import Path

from wearcast.report import plot_scored_run


def _answers(n: int, *, with_health: bool) -> list[dict]:
    rows = []
    for bearing in (1, 2):
        for i in range(n):
            row = {
                "run": "r",
                "bearing": bearing,
                "file": f"r/{i:04d}",
                "timestamp": f"2004-01-01T{i // 6:02d}:{i % 6 * 10:02d}:00",
                "wear": i / n,
                "alarm": False,
                "baseline_recordings": min(i + 1, 3),
                "rul_h": None,
            }
            if with_health:
                row |= {"health": 0.0 if i == 0 else 1.0 + i, "health_threshold": 3.0}
                row |= {"rul_h": 10.0 - i / 6, "rul_low_h": 5.0, "rul_high_h": 20.0}
                row["alarm_state"] = "alarm" if i >= 4 else "ok"
            rows.append(row)
    rows[-1]["episodes"] = [
        {
            "level": "alarm",
            "start": rows[-2]["timestamp"],
            "raised": rows[-1]["timestamp"],
            "end": None,
            "peak": rows[-1]["timestamp"],
            "peak_health": 9.0,
        }
    ]
    return rows


def test_a_run_is_plotted_a_panel_per_bearing_with_or_without_a_health_indicator(tmp_path: Path):
    """A version trained before the health indicator gives wear and no remaining life (None):
    its run is plotted too, not a TypeError."""
    for with_health in (True, False):
        path = tmp_path / f"{with_health}.png"
        plot_scored_run(_answers(8, with_health=with_health), path, baseline_recordings=3)
        png = path.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (1000, 2 * 260)
