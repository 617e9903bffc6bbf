"""Featurize throughput on the real PRONOSTIA learning set (six bearings, 7,534 snapshots).

    python benchmarks/featurize_pronostia.py [--archives ../shared/data/femto]
                                             [--data /tmp/wearcast-femto] [--naive-files 300]

Measures in one run, on the same files and the same number of worker processes:
(a) parse only: read and parse every snapshot into numbers, nothing else (the floor);
(b) `wearcast featurize` into a fresh table (run discovery and dating, validation, features,
    Parquet, labels);
(c) a naive baseline as public notebooks do it: pandas.read_csv per file, numpy FFT, band
    sums, one DataFrame row appended per snapshot (single process, on a sample);
(d) `wearcast featurize` again with nothing new.
Prints files/s, MB/s, peak memory of the process tree and the ratios. The bearings are
unpacked, with their run.json, into --data (kept for the next run; never the repository).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.config import Settings
from wearcast.formats import FORMATS
from wearcast.ingest import discover_runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from featurize import run_measured  # noqa: E402
from femto_learning_set import prepare  # noqa: E402


def _parse(path: str) -> int:
    return FORMATS["pronostia"].parse(Path(path).read_bytes()).shape[0]


def naive(files: list[Path], fs: float) -> float:
    """Notebook-style featurization; returns seconds for the given files."""
    start = time.perf_counter()
    table = pd.DataFrame()
    for f in files:
        x = pd.read_csv(f, header=None).to_numpy()[:, 4:6]
        row = {"file": f.name}
        for ch in range(x.shape[1]):
            spectrum = np.abs(np.fft.rfft(x[:, ch] - x[:, ch].mean()))
            freqs = np.fft.rfftfreq(len(x), 1 / fs)
            for lo in range(0, int(fs / 2), 100):
                row[f"ch{ch}_{lo}"] = spectrum[(freqs >= lo) & (freqs < lo + 100)].sum()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("WEARCAST_FEMTO_DATA", REPO.parent / "shared" / "data" / "femto")
    parser.add_argument("--archives", type=Path, default=Path(default))
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "wearcast-femto")
    parser.add_argument("--naive-files", type=int, default=300)
    args = parser.parse_args()
    settings = Settings()
    workers = settings.workers
    prepare(args.archives, args.data)
    runs = discover_runs(args.data)
    files = [p for run in runs for _, p in run.recordings] + [
        p for run in runs for p, _ in run.rejected
    ]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"{args.data}: {len(runs)} bearings, {len(files)} snapshots, {megabytes:.0f} MB of text")
    print(f"{workers} worker processes, {os.cpu_count()} cores")

    start = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for _ in pool.imap_unordered(_parse, [str(p) for p in files], chunksize=16):
            pass
    parse_s = time.perf_counter() - start

    table = Path(tempfile.mkdtemp(prefix="wearcast-bench-table-"))
    cmd = [sys.executable, "-m", "wearcast", "featurize", str(args.data), "--out", str(table)]
    featurize_s, featurize_rss = run_measured(cmd)
    rerun_s, _ = run_measured(cmd)
    rows = len(pd.read_parquet(table / "table.parquet", columns=["run"]))
    shutil.rmtree(table)

    sample = files[:: max(1, len(files) // args.naive_files)][: args.naive_files]
    naive_rate = len(sample) / naive(sample, 25_600.0)

    print(f"table: {rows} rows")
    lines = [
        ("(a) parse only", len(files) / parse_s, megabytes / parse_s, None),
        (
            "(b) wearcast featurize",
            len(files) / featurize_s,
            megabytes / featurize_s,
            featurize_rss,
        ),
        (f"(c) naive baseline ({len(sample)} files, 1 process)", naive_rate, None, None),
    ]
    print("\n| step | files/s | MB/s | peak memory |\n|---|---:|---:|---:|")
    for name, rate, mbs, rss in lines:
        print(
            f"| {name} | {rate:.0f} | {'' if mbs is None else f'{mbs:.1f}'} | "
            f"{'' if rss is None else f'{rss / 1e9:.2f} GB'} |"
        )
    print(f"| (d) incremental rerun, nothing new | {rerun_s:.2f} s | | |")
    print(f"\nfeaturize / parse-only: {parse_s / featurize_s:.2f}")
    print(f"featurize / naive: {len(files) / featurize_s / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
