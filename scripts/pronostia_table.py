"""A labelled wearcast feature table of the six PRONOSTIA learning bearings.

    python scripts/pronostia_table.py [--femto ../shared/data/femto] [--cache DIR] --out TABLE.csv

Unpacks each archive into the cache (never into the repository), computes wearcast's own
features of every acc_ snapshot (:func:`wearcast.features.channel_features`: 25.6 kHz, the
condition's shaft speed, the README's bearing geometry; mean of the horizontal and vertical
channels) and writes TABLE.csv (run, bearing, timestamp + features) and TABLE.runs.json (start,
end = the last snapshot, the failed bearing) for `scripts/detector_experiments.py` and
`wearcast train TABLE --runs-meta`. The recording time is the experiment's date plus the
clock columns. A stopgap until `wearcast featurize` reads PRONOSTIA folders itself.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from wearcast.config import Settings
from wearcast.features import FeatureSpec, channel_features
from wearcast.rig import BearingGeometry

# From the PRONOSTIA README: conditions, experiment dates and the tested bearing.
RPM = {"1": 1800.0, "2": 1650.0, "3": 1500.0}
DATES = {
    "Bearing1_1": "2010-12-01",
    "Bearing1_2": "2011-04-06",
    "Bearing2_1": "2011-05-06",
    "Bearing2_2": "2011-06-17",
    "Bearing3_1": "2011-04-07",
    "Bearing3_2": "2011-06-28",
}
GEOMETRY = BearingGeometry(
    rollers=13, pitch_diameter=25.6, roller_diameter=3.5, contact_angle_deg=0.0
)


def read_acc(path: Path) -> tuple[np.ndarray, float]:
    text = path.read_text()
    data = np.loadtxt(path, delimiter=";" if ";" in text[:200] else ",")
    h, m, s, us = data[0, :4]
    return data[:, 4:6], h * 3600 + m * 60 + s + us / 1e6


def bearing_rows(folder: Path) -> pd.DataFrame:
    name = folder.name
    rpm = RPM[name[7]]
    settings = Settings(sampling_rate_hz=25_600, shaft_rpm=rpm, expected_rows=2560)
    spec = FeatureSpec.from_settings(settings, geometry=GEOMETRY, shaft_rpm=rpm)
    day = datetime.fromisoformat(DATES[name])
    rows, previous, days = [], None, 0
    for path in track(sorted(folder.glob("acc_*.csv")), description=name):
        data, clock = read_acc(path)
        if previous is not None and clock < previous:  # past midnight
            days += 1
        previous = clock
        stamp = day + timedelta(days=days, seconds=clock)
        features = channel_features(data, spec).mean(axis=0)
        rows.append(
            {"run": name, "bearing": 1, "timestamp": stamp, "file": path.name}
            | dict(zip(spec.names, features, strict=True))
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--femto", type=Path, default=Path("../shared/data/femto"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "wearcast-femto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    frames, meta = [], {}
    for archive in sorted(args.femto.glob("Bearing*.tar.xz")):
        name = archive.name.split(".")[0]
        if not (args.cache / name).is_dir():
            with tarfile.open(archive, "r:xz") as tar:
                tar.extractall(args.cache, filter="data")
        frame = bearing_rows(args.cache / name)
        frames.append(frame)
        meta[name] = {
            "n_bearings": 1,
            "start": frame["timestamp"].min().isoformat(),
            "end": frame["timestamp"].max().isoformat(),
            "failures": {"1": "outer"},  # the defect is not documented; the label needs one
        }
    pd.concat(frames).to_csv(args.out, index=False)
    args.out.with_suffix(".runs.json").write_text(json.dumps(meta, indent=1))
    print(f"{args.out}: {sum(len(f) for f in frames)} recordings of {len(frames)} bearings")


if __name__ == "__main__":
    main()
