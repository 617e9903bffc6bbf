"""Unpack the six PRONOSTIA learning bearings and describe each run in its run.json.

    python scripts/femto_learning_set.py OUT [--archives ../shared/data/femto]

The dates and operating conditions are those of the data set's README (the date of each
experiment; condition 1 = 1800 rpm, 4000 N; 2 = 1650 rpm, 4200 N; 3 = 1500 rpm, 5000 N); each
bearing ran until its vibration passed 20 g, a failure of no stated part ("unknown"). Start
and end times come from the recordings themselves (`wearcast describe-run` does the same for
one run). A bearing already unpacked is kept as it is.
"""

from __future__ import annotations

import argparse
import os
import tarfile
from datetime import datetime
from pathlib import Path

from wearcast.ingest import date_run
from wearcast.rig import RUN_METADATA_FILE, Defect, RunInfo
from wearcast.storage import write_atomic

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = {1: (1800.0, 4000.0), 2: (1650.0, 4200.0), 3: (1500.0, 5000.0)}
EXPERIMENT_DATES = {
    "Bearing1_1": "2010-12-01",
    "Bearing1_2": "2011-04-06",
    "Bearing2_1": "2011-05-06",
    "Bearing2_2": "2011-06-17",
    "Bearing3_1": "2011-04-07",
    "Bearing3_2": "2011-06-28",
}


def prepare(archives: Path, out: Path) -> list[Path]:
    """The six bearings unpacked under ``out``, each with its run.json."""
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, date in EXPERIMENT_DATES.items():
        run = out / name
        if not run.is_dir():
            with tarfile.open(archives / f"{name}.tar.xz", "r:xz") as archive:
                archive.extractall(out, filter="data")
        rpm, load = CONDITIONS[int(name[7])]
        described = RunInfo(
            name=name,
            format="pronostia",
            n_bearings=1,
            shaft_rpm=rpm,
            load_n=load,
            start=datetime.fromisoformat(date),
            failures={1: Defect.UNKNOWN},
        )
        write_atomic(run / RUN_METADATA_FILE, date_run(run, described).to_json() + "\n")
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to unpack into (not the repository)")
    default = os.environ.get("WEARCAST_FEMTO_DATA", REPO.parent / "shared" / "data" / "femto")
    parser.add_argument("--archives", type=Path, default=Path(default))
    args = parser.parse_args()
    missing = [n for n in EXPERIMENT_DATES if not (args.archives / f"{n}.tar.xz").is_file()]
    if missing and not all((args.out / n).is_dir() for n in missing):
        parser.error(
            f"no {missing[0]}.tar.xz in {args.archives}: give the folder of the PRONOSTIA "
            "archives with --archives (or WEARCAST_FEMTO_DATA)"
        )
    for run in prepare(args.archives, args.out):
        print(f"{run}: {(run / RUN_METADATA_FILE).read_text().strip()}")


if __name__ == "__main__":
    main()
