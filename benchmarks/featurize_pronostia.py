"""Featurize throughput on the real PRONOSTIA learning set (six bearings, 7,534 snapshots).

    python benchmarks/featurize_pronostia.py [--archives ../shared/data/femto]
                                             [--data /tmp/wearcast-femto] [--naive-files 300]

Measures in one run, on the same files and the same number of worker processes:
(a) parse only: read and parse every snapshot into numbers, nothing else (the floor);
(b) `wearcast featurize` into a fresh table (run discovery and dating, validation, features,
    Parquet, labels);
(c) a naive baseline as public notebooks do it: pandas.read_csv per file, numpy FFT, band
    sums, one DataFrame row appended per snapshot, on a sample, with the same processes;
(d) `wearcast featurize` again with nothing new.
Prints files/s, MB/s, peak memory of the process tree and the ratios. The bearings are
unpacked, with their run.json, into --data (kept for the next run; never the repository).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.config import Settings
from wearcast.formats import FORMATS
from wearcast.ingest import discover_runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from featurize import compare  # noqa: E402
from femto_learning_set import prepare  # noqa: E402


def _parse(path: str) -> int:
    return FORMATS["pronostia"].parse(Path(path).read_bytes()).shape[0]


def read_pronostia(path: Path) -> np.ndarray:
    """How public notebooks read a PRONOSTIA snapshot: the two acceleration columns."""
    return pd.read_csv(path, header=None).to_numpy()[:, 4:6]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("WEARCAST_FEMTO_DATA", REPO.parent / "shared" / "data" / "femto")
    parser.add_argument("--archives", type=Path, default=Path(default))
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "wearcast-femto")
    parser.add_argument("--naive-files", type=int, default=300)
    args = parser.parse_args()
    settings = Settings()
    prepare(args.archives, args.data)
    runs = discover_runs(args.data)
    files = [p for run in runs for _, p in run.recordings] + [
        p for run in runs for p, _ in run.rejected
    ]
    print(f"{args.data}: {len(runs)} bearings, {os.cpu_count()} cores")
    compare(args.data, files, _parse, read_pronostia, 25_600.0, args.naive_files, settings.workers)


if __name__ == "__main__":
    main()
