"""Featurize throughput on a simulated dataset the size of the whole IMS data.

    python benchmarks/featurize.py [--scale 1.0] [--data DIR] [--naive-files 200]

Measures in one run, on the same files and the same number of worker processes:
(a) parse only: read and parse every file into numbers, nothing else (the floor; with the
    allocator tuning featurize workers have);
(b) `wearcast featurize` into a fresh table (validation, features, Parquet, labels);
(c) a naive baseline as public notebooks do it: pandas.read_csv per file, numpy FFT,
    band sums, one DataFrame row appended per recording, on a sample, given the same number of
    worker processes as wearcast (the sample split into one chunk per process);
(d) `wearcast featurize` again with nothing new.
Prints files/s, MB/s, peak memory of the process tree and the ratios, overall and per
process, so a ratio never compares several processes with one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from wearcast.allocator import reuse_large_blocks
from wearcast.config import Settings
from wearcast.ingest import discover_runs, parse_recording
from wearcast.simulate import plan_simulation, simulate

IMS_SIZE = [(2156, 2), (984, 1), (6324, 1)]  # recordings, channels per bearing, per test


def make_dataset(root: Path, scale: float, settings: Settings) -> list[Path]:
    runs = []
    for k, (count, per_bearing) in enumerate(IMS_SIZE):
        target = root / f"test{k + 1}"
        n = max(int(count * scale), 10)
        if not target.exists() or len(list(target.glob("*/2*"))) != n:
            shutil.rmtree(target, ignore_errors=True)
            plan = plan_simulation(
                settings,
                runs=1,
                recordings=n,
                channels_per_bearing=per_bearing,
                seed=k,
                run_prefix=f"test{k + 1}",
            )
            simulate(plan, target, workers=settings.workers)
        runs.append(target)
    return runs


def _parse(path: str) -> int:
    return parse_recording(Path(path).read_bytes()).shape[0]


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += (
                    next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) * 1024
                )
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack += [int(c) for c in fh.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall time and peak resident memory (whole process tree) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
    return time.perf_counter() - start, peak


def read_ims(path: Path) -> np.ndarray:
    """How public notebooks read an IMS recording."""
    return pd.read_csv(path, sep="\t", header=None).to_numpy()


def naive(files: list[Path], fs: float, read: Callable[[Path], np.ndarray]) -> pd.DataFrame:
    """Notebook-style featurization of the given files."""
    table = pd.DataFrame()
    for f in files:
        x = read(f)
        row = {"file": f.name}
        for ch in range(x.shape[1]):
            spectrum = np.abs(np.fft.rfft(x[:, ch] - x[:, ch].mean()))
            freqs = np.fft.rfftfreq(len(x), 1 / fs)
            for lo in range(0, int(fs / 2), 100):
                row[f"ch{ch}_{lo}"] = spectrum[(freqs >= lo) & (freqs < lo + 100)].sum()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return table


def naive_parallel(
    files: list[Path], fs: float, workers: int, read: Callable[[Path], np.ndarray]
) -> float:
    """Seconds for the naive featurization with ``workers`` processes, one chunk each."""
    chunks = [files[i::workers] for i in range(workers)]
    start = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.starmap(naive, [(chunk, fs, read) for chunk in chunks])
    return time.perf_counter() - start


def compare(
    data: Path,
    files: list[Path],
    parse: Callable[[str], int],
    read: Callable[[Path], np.ndarray],
    fs: float,
    naive_files: int,
    workers: int,
) -> None:
    """Steps (a) to (d) on the same files with the same processes, printed as one table."""
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(files)} recordings, {megabytes:.0f} MB of text; {workers} worker processes")

    start = time.perf_counter()
    # The floor gets the allocator tuning featurize workers get (the naive baseline does not:
    # notebooks do not tune it).
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers, initializer=reuse_large_blocks) as pool:
        for _ in pool.imap_unordered(parse, [str(p) for p in files], chunksize=8):
            pass
    parse_s = time.perf_counter() - start

    table = Path(tempfile.mkdtemp(prefix="wearcast-bench-table-"))
    cmd = [sys.executable, "-m", "wearcast", "featurize", str(data), "--out", str(table)]
    featurize_s, rss = run_measured(cmd)
    rerun_s, _ = run_measured(cmd)
    rows = len(pd.read_parquet(table / "table.parquet", columns=["run"]))
    shutil.rmtree(table)

    sample = files[:: max(1, len(files) // naive_files)][:naive_files]
    naive_rate = len(sample) / naive_parallel(sample, fs, workers, read)

    print(f"table: {rows} rows")
    lines = [
        ("(a) parse only", len(files) / parse_s, megabytes / parse_s, None),
        ("(b) wearcast featurize", len(files) / featurize_s, megabytes / featurize_s, rss),
        (f"(c) naive baseline ({len(sample)} files, {workers} processes)", naive_rate, None, None),
    ]
    print("\n| step | files/s | MB/s | peak memory |\n|---|---:|---:|---:|")
    for name, rate, mbs, rss in lines:
        print(
            f"| {name} | {rate:.0f} | {'' if mbs is None else f'{mbs:.1f}'} | "
            f"{'' if rss is None else f'{rss / 1e9:.2f} GB'} |"
        )
    print(f"| (d) incremental rerun, nothing new | {rerun_s:.2f} s | | |")
    print(f"\nfeaturize / parse-only: {parse_s / featurize_s:.2f}")
    print(
        f"featurize / naive, both with {workers} processes: "
        f"{len(files) / featurize_s / naive_rate:.1f}x"
    )
    print(
        f"per process: featurize {len(files) / featurize_s / workers:.0f} files/s, "
        f"naive {naive_rate / workers:.0f} files/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the IMS size")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "wearcast-bench")
    parser.add_argument("--naive-files", type=int, default=200)
    args = parser.parse_args()
    settings = Settings()
    print(f"dataset: {args.data} (scale {args.scale})")
    make_dataset(args.data, args.scale, settings)
    files = [p for run in discover_runs(args.data) for _, p in run.recordings]
    fs = settings.sampling_rate_hz
    compare(args.data, files, _parse, read_ims, fs, args.naive_files, settings.workers)


if __name__ == "__main__":
    main()
